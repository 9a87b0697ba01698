"""Every notebook in JupyterLab and a real browser: Run All without an error, every widget rendered, every slider live.

nbmake executes the notebooks without a browser, so it cannot see a widget that does not render,
a figure shown twice or a slider that changes nothing. Run with ``make browser-test``; it needs
Debian's ``chromium`` and ``chromium-driver``. Screenshots and a summary go to ``build/browser/``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import lab_driver
import pytest
from lab_driver import BUILD, REPO

NOTEBOOKS = sorted(path.name for path in (REPO / "notebooks").glob("*.ipynb"))
RUN_ALL_TIMEOUT = 1800  # seconds per notebook in quick mode: minutes on a 2-core CPU, far more when it is shared
SUMMARY = {}


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield SUMMARY
    BUILD.mkdir(parents=True, exist_ok=True)
    (BUILD / "results.json").write_text(json.dumps(SUMMARY, indent=1))


def check_widgets_rendered(page: lab_driver.NotebookPage) -> dict[str, int]:
    """Each widget output is rendered, and the page shows as many widgets of each kind as the kernel created."""
    for cell in page.widget_outputs():
        assert cell["rendered"] == cell["views"] and not cell["loading"], \
            f"{page.name}: cell {cell['cell']} displays {cell['views']} widget(s) but {cell['rendered']} rendered"
    created = page.kernel_widgets()
    unknown = set(created) - set(lab_driver.VIEW_CLASSES)
    assert not unknown, f"{page.name}: no DOM check for widget views {unknown}; add their CSS classes to VIEW_CLASSES"
    expected = Counter()
    for view, count in created.items():
        expected[lab_driver.VIEW_CLASSES[view]] += count
    shown = page.page_widgets(sorted(expected))
    assert shown == dict(expected), f"{page.name}: the kernel created {dict(expected)} but the page shows {shown}"
    return created


def check_controls_change_their_output(page: lab_driver.NotebookPage) -> list[dict]:
    """Drag each slider and pick another option in each dropdown of each ``cu.widgets.explore``: its output must change."""
    from selenium.webdriver.common.by import By

    moves, outputs = [], page.state()["outputs"]  # outputs per code cell
    for index, interact in enumerate(page.interacts()):
        for control in interact.find_elements(By.CSS_SELECTOR, ".widget-slider, .widget-dropdown"):
            label = control.find_element(By.CSS_SELECTOR, ".widget-label").text
            before = page.wait_for_output(index)
            if "widget-slider" in control.get_attribute("class"):
                handle = control.find_element(By.CSS_SELECTOR, ".noUi-handle").rect["x"]
                track = control.find_element(By.CSS_SELECTOR, ".noUi-target").rect
                fraction = 0.25 if handle > track["x"] + track["width"] / 2 else 0.75  # to the other half of the track
                value_before, value_after = page.move_slider(control, fraction)
            else:
                value_before, value_after = page.choose_another(control)
            assert value_after != value_before, f"{page.name}: {label!r} did not move ({value_before})"
            after = page.wait_for_output(index)
            assert not after["failed"], f"{page.name}: changing {label!r} raised: {after['failed'][0][-500:]}"
            assert after["images"] or after["chars"], f"{page.name}: changing {label!r} left its output empty"
            assert after["hash"] != before["hash"], \
                f"{page.name}: changing {label!r} from {value_before} to {value_after} did not change its output"
            state = page.state()
            assert not state["errors"], f"{page.name}: changing {label!r} put an error in a cell: {state['errors'][0]}"
            assert state["outputs"] == outputs, f"{page.name}: changing {label!r} wrote outside its widget"
            moves.append({"widget": index, "control": label, "from": value_before, "to": value_after})
    return moves


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_and_its_widgets_work(name, lab, browser, summary):
    started = time.monotonic()
    try:
        page = lab_driver.NotebookPage(browser, lab, name)
        state = page.run_all(RUN_ALL_TIMEOUT)
        ran = time.monotonic() - started
        assert not state["errors"], f"{name}: Run All stopped at an error: {state['errors'][0]}"
        assert not state["pending"], f"{name}: cells {state['pending']} never ran"
        duplicates = page.figures_beside_widgets()
        assert not duplicates, f"{name}: cells {duplicates} show a static figure next to a live widget"
        created = check_widgets_rendered(page)
        moves = check_controls_change_their_output(page)
        page.screenshot(BUILD / f"{Path(name).stem}.png")
        summary[name] = {"run_all_s": round(ran, 1), "total_s": round(time.monotonic() - started, 1),
                         "widgets": created, "moves": moves}
    except Exception:
        browser.save_screenshot(str(BUILD / f"{Path(name).stem}.failed.png"))
        summary[name] = {"failed_after_s": round(time.monotonic() - started, 1)}
        raise
    finally:
        lab.shutdown_kernels()
