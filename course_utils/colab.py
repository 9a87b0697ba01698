"""Where the course lives online, and what every notebook derives from it: its Colab badge and its setup cell.

The repository address is held here and nowhere else (a fork changes :data:`REPOSITORY`). A
notebook cannot import the package before it is installed, so each notebook carries a generated
copy of the badge and of the setup cell: ``tests/test_binder_colab.py`` fails when a copy differs
from what this module generates, and ``make notebook-setup`` (:func:`sync_notebooks`) rewrites them.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from .config import REPO_DIR

REPOSITORY = "https://github.com/distilling-for-the-edge/course"  # the one place; then run `make notebook-setup`
BRANCH = "main"
FIRST_NOTEBOOK = "notebooks/00_welcome.ipynb"
# Packages every Colab runtime already has (its PyTorch is built for its GPU and must stay), or does not
# need (Colab is its own frontend). The setup cell installs the course's other dependencies.
COLAB_PROVIDES = ("torch", "torchvision", "numpy", "matplotlib", "tqdm", "jupyterlab")

_COLAB_BADGE = re.compile(r"^\[!\[Open in Colab\]\(.*$", re.MULTILINE)


def github_path() -> str:
    """``owner/name`` of :data:`REPOSITORY`, which must be on GitHub (Colab and Binder open notebooks from there)."""
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?/?", REPOSITORY)
    if match is None:
        raise ValueError(f"REPOSITORY must look like https://github.com/owner/name, got {REPOSITORY!r}.")
    return match.group(1)


def colab_badge(notebook: str) -> str:
    """The markdown "Open in Colab" badge of ``notebook`` (a file name in ``notebooks/``)."""
    url = f"https://colab.research.google.com/github/{github_path()}/blob/{BRANCH}/notebooks/{notebook}"
    return f"[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def binder_badge() -> str:
    """The markdown Binder badge: JupyterLab on the first notebook, in the image that ``binder/`` describes."""
    url = f"https://mybinder.org/v2/gh/{github_path()}/{BRANCH}?urlpath=lab/tree/{FIRST_NOTEBOOK}"
    return f"[![Launch on Binder](https://mybinder.org/badge_logo.svg)]({url})"


def _requirement_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.\-]+", requirement).group(0).lower()


def colab_requirements() -> list[str]:
    """The course's dependencies (``pyproject.toml``) that Colab lacks, with the course's version ranges."""
    dependencies = tomllib.loads((REPO_DIR / "pyproject.toml").read_text())["project"]["dependencies"]
    return [d for d in dependencies if _requirement_name(d) not in COLAB_PROVIDES]


def setup_cell() -> str:
    """The source of every notebook's first code cell: installs the course on Colab, only imports it elsewhere."""
    missing = ", ".join(f'"{r}"' for r in colab_requirements())
    return f"""\
# Setup. On Colab: fetch the course with its data, install what Colab lacks (Colab's own PyTorch stays)
# and turn on Colab's widget manager. Anywhere else this cell only imports the course.
import sys

if "google.colab" in sys.modules:
    import importlib.util
    import subprocess

    from google.colab import output

    if importlib.util.find_spec("course_utils") is None:  # the course's one opt-in download
        repository = "{REPOSITORY}"
        subprocess.run(["git", "clone", "--depth", "1", "--branch", "{BRANCH}", repository, "course"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", "course"], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", {missing}], check=True)
        sys.path.insert(0, "course")
    output.enable_custom_widget_manager()

import course_utils as cu"""


def _first(cells: list[dict], cell_type: str) -> dict:
    return next(cell for cell in cells if cell["cell_type"] == cell_type)


def _with_badge(markdown: str, badge: str) -> str:
    if _COLAB_BADGE.search(markdown):
        return _COLAB_BADGE.sub(lambda _: badge, markdown, count=1)
    title, _, rest = markdown.partition("\n")  # a new badge goes under the title
    return f"{title}\n\n{badge}\n{rest}" if rest.strip() else f"{title}\n\n{badge}"


def _setup_cell_of(cells: list[dict]) -> dict:
    """The notebook's setup cell: its first code cell when that starts with "# Setup", else a new one put before it."""
    code = _first(cells, "code")
    if "".join(code["source"]).startswith("# Setup"):
        return code
    setup = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": []}
    if "id" in code:  # nbformat >= 4.5 gives every cell an id
        setup["id"] = "setup-" + code["id"][:20]
    cells.insert(cells.index(code), setup)
    return setup


def sync_notebooks(paths: list[Path] | None = None, write: bool = False) -> list[str]:
    """Compare each notebook's badge and setup cell with the generated ones; with ``write``, rewrite them.

    Returns one line per notebook that differed (empty when all agree). The badge is the first
    "Open in Colab" line of the first markdown cell; the setup cell is the first code cell when it
    starts with "# Setup" (a notebook without one gets one before its first code cell).
    """
    paths = sorted((REPO_DIR / "notebooks").glob("*.ipynb")) if paths is None else paths
    differences = []
    for path in paths:
        notebook = json.loads(path.read_text())
        markdown, code = _first(notebook["cells"], "markdown"), _setup_cell_of(notebook["cells"])
        wanted_markdown = _with_badge("".join(markdown["source"]), colab_badge(path.name))
        wanted = {"Colab badge": (markdown, wanted_markdown), "setup cell": (code, setup_cell())}
        stale = [name for name, (cell, source) in wanted.items() if "".join(cell["source"]) != source]
        if not stale:
            continue
        differences.append(f"{path.name}: out of step with course_utils.colab: {', '.join(stale)}")
        if write:
            markdown["source"] = wanted_markdown.splitlines(keepends=True)
            code["source"] = setup_cell().splitlines(keepends=True)
            path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return differences
