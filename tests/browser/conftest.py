"""Fixtures of the browser test: one JupyterLab server (quick mode) and one headless chromium per session."""

from __future__ import annotations

import shutil

import lab_driver
import pytest
from lab_driver import BUILD, REPO


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """JupyterLab serving fresh copies of the notebooks (so outputs never reach the committed files)."""
    if lab_driver.browser_paths() is None:
        pytest.skip(f"needs Debian's chromium and chromedriver: apt-get install {lab_driver.DEBIAN_PACKAGES}")
    root = BUILD / "notebooks"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for path in (REPO / "notebooks").glob("*.ipynb"):
        shutil.copy(path, root)
    server = lab_driver.LabServer(root, tmp_path_factory.mktemp("lab"), env={"COURSE_QUICK": "1"})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser(lab, tmp_path_factory):
    driver = lab_driver.start_chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()
