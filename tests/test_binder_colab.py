"""Where learners run the course: Binder's pins, the CPU-only laptop install, Colab's badges and setup cell, widgets."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import tomllib
import types
from functools import partial
from http.server import HTTPServer, SimpleHTTPRequestHandler
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from course_utils import colab

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def binder_requirements() -> tuple[list[str], dict[str, Requirement]]:
    """(pip options, requirements by name) of binder/requirements.txt."""
    lines = [line.split("#")[0].strip() for line in (REPO / "binder" / "requirements.txt").read_text().splitlines()]
    options = [line for line in lines if line.startswith("-")]
    requirements = [Requirement(line) for line in lines if line and not line.startswith("-")]
    return options, {r.name.lower(): r for r in requirements}


def pinned(requirement: Requirement) -> Version:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", f"binder pins {requirement.name} exactly, not {requirement}"
    return Version(specifier.version)


# ---- Binder -------------------------------------------------------------------------------------------------

def test_binder_installs_the_cpu_build_of_pytorch_pinned_within_the_course_ranges():
    options, requirements = binder_requirements()
    assert options == [f"--extra-index-url {CPU_INDEX}"], "Binder takes PyTorch from its CPU wheel index"
    course = {r.name.lower(): r for r in map(Requirement, PROJECT["dependencies"])}
    torch, torchvision = pinned(requirements["torch"]), pinned(requirements["torchvision"])
    for name, version in (("torch", torch), ("torchvision", torchvision)):
        assert version.local == "cpu", f"{name} {version}: the CPU build carries the local version +cpu"
        assert course[name].specifier.contains(version.public), f"{name} {version} is outside pyproject's {course[name]}"
    # PyTorch releases torchvision 0.(m + 15) with torch 2.m: a mismatched pair fails to import.
    assert (torchvision.major, torchvision.minor) == (0, torch.minor + 15), f"torch {torch} with torchvision {torchvision}"


def test_binder_pins_the_pytorch_that_the_results_were_measured_with():
    summary = REPO / "results" / "summary.json"
    if not summary.is_file():
        pytest.skip("no results/summary.json yet (make results)")
    measured = Version(json.loads(summary.read_text())["machine"]["torch"]).public
    assert pinned(binder_requirements()[1]["torch"]).public == measured, "bump binder/requirements.txt's pins"


def test_binder_lists_every_other_dependency_with_pyprojects_range():
    _, requirements = binder_requirements()
    course = {r.name.lower(): str(r.specifier) for r in map(Requirement, PROJECT["dependencies"])}
    binder = {name: str(r.specifier) for name, r in requirements.items() if name not in ("torch", "torchvision")}
    assert binder == {name: spec for name, spec in course.items() if name not in ("torch", "torchvision")}


def test_binder_runs_the_python_the_course_needs_and_installs_the_course_without_dependencies():
    runtime = (REPO / "binder" / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.\d+", runtime)
    required = PROJECT["requires-python"]
    assert Requirement(f"python{required}").specifier.contains(runtime.removeprefix("python-") + ".0")
    post_build = REPO / "binder" / "postBuild"
    assert post_build.stat().st_mode & 0o111, "repo2docker runs postBuild only when it is executable"
    assert "pip install --no-cache-dir --no-deps -e ." in post_build.read_text()


def test_jupyterlab_sends_widget_messages_to_the_kernels_main_thread():
    """matplotlib is not thread-safe: a widget callback must not draw while a subshell thread flushes figures."""
    overrides = json.loads((REPO / "binder" / "overrides.json").read_text())
    assert overrides == {"@jupyterlab/apputils-extension:kernels-settings": {"commsOverSubshells": "disabled"}}
    lab = Path(sys.prefix) / "share" / "jupyter" / "lab"
    schema = lab / "schemas" / "@jupyterlab" / "apputils-extension" / "kernels-settings.json"
    if schema.is_file():  # the installed JupyterLab still knows the setting and that value
        choices = json.loads(schema.read_text())["properties"]["commsOverSubshells"]["oneOf"]
        assert {"const": "disabled", "title": "Disabled"} in choices
    assert "cp binder/overrides.json $(LAB_SETTINGS)/overrides.json" in (REPO / "Makefile").read_text()
    assert 'cp binder/overrides.json "${NB_PYTHON_PREFIX}/share/jupyter/lab/settings/overrides.json"' in \
        (REPO / "binder" / "postBuild").read_text()
    if Path(sys.prefix) == REPO / ".venv":  # make install put it there
        assert json.loads((lab / "settings" / "overrides.json").read_text()) == overrides


def test_readme_quotes_the_measured_install_sizes():
    sizes = json.loads((REPO / "results" / "install_size.json").read_text())
    readme = (REPO / "README.md").read_text()
    for torch_version, mib in sizes.items():
        assert f"**{mib / 1024:.1f} GiB**" in readme and f"torch {torch_version}" in readme, torch_version


def test_readme_has_the_binder_and_colab_badges_and_names_the_browser_packages():
    readme = (REPO / "README.md").read_text()
    assert colab.binder_badge() in readme
    assert colab.colab_badge("00_welcome.ipynb") in readme
    assert "chromium chromium-driver" in readme


# ---- CPU-only laptop install --------------------------------------------------------------------------------

def make_torch_cpu(cpu_index: str) -> subprocess.CompletedProcess:
    """`make torch-cpu` against ``cpu_index``, with pip replaced by echo (what it would install is printed)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    return subprocess.run(["make", "-s", "--no-print-directory", "torch-cpu", f"CPU_INDEX={cpu_index}",
                           f"BIN={Path(sys.executable).parent}", "PIP_INSTALL=echo pip install"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_make_torch_cpu_installs_binders_pins_from_the_cpu_index(tmp_path):
    if sys.platform != "linux":
        pytest.skip("TORCH=cpu changes the install on Linux only")
    server = HTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    index = f"http://127.0.0.1:{server.server_port}"
    try:
        result = make_torch_cpu(index)
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    _, requirements = binder_requirements()
    pins = f"{requirements['torch']} {requirements['torchvision']}"
    assert f"pip install --extra-index-url {index} {pins}" in result.stdout


def test_make_torch_cpu_falls_back_with_a_message_when_the_index_is_unreachable():
    if sys.platform != "linux":
        pytest.skip("TORCH=cpu changes the install on Linux only")
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = make_torch_cpu(f"http://127.0.0.1:{port}/whl/cpu")
    assert result.returncode == 0, "the install goes on with PyPI's default build"
    assert "cannot be reached" in result.stdout and "falling back to PyPI's default PyTorch build" in result.stdout
    assert "pip install" not in result.stdout


# ---- Colab --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_badge_and_setup_cell_come_from_course_utils_colab(path):
    assert colab.sync_notebooks([path]) == [], "run `make notebook-setup` after changing course_utils/colab.py"


def test_a_stale_badge_or_setup_cell_is_caught_and_rewritten(tmp_path):
    notebook = json.loads(NOTEBOOKS[1].read_text())
    for cell in notebook["cells"][:2]:
        cell["source"] = [line.replace("distilling-for-the-edge/course", "someone/else") for line in cell["source"]]
    stale = tmp_path / NOTEBOOKS[1].name
    stale.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    assert colab.sync_notebooks([stale]) == [f"{stale.name}: out of step with course_utils.colab: Colab badge, setup cell"]
    colab.sync_notebooks([stale], write=True)
    assert colab.sync_notebooks([stale]) == []
    assert stale.read_text() == NOTEBOOKS[1].read_text()


def test_a_notebook_without_a_badge_gets_one_under_its_title(tmp_path):
    notebook = json.loads(NOTEBOOKS[0].read_text())
    notebook["cells"][0]["source"] = ["# 00 · A title\n", "\n", "Some text."]
    path = tmp_path / "00_welcome.ipynb"
    path.write_text(json.dumps(notebook))
    colab.sync_notebooks([path], write=True)
    markdown = "".join(json.loads(path.read_text())["cells"][0]["source"])
    assert markdown == f"# 00 · A title\n\n{colab.colab_badge('00_welcome.ipynb')}\n\nSome text."


def test_a_notebook_without_a_setup_cell_gets_one_and_keeps_its_first_code_cell(tmp_path):
    notebook = json.loads(NOTEBOOKS[1].read_text())
    first_code = next(i for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code")
    notebook["cells"][first_code]["source"] = ["import course_utils as cu\n", "x = 1"]
    path = tmp_path / NOTEBOOKS[1].name
    path.write_text(json.dumps(notebook))
    assert colab.sync_notebooks([path], write=True) == [f"{path.name}: out of step with course_utils.colab: setup cell"]
    cells = json.loads(path.read_text())["cells"]
    assert "".join(cells[first_code]["source"]) == colab.setup_cell()
    assert "".join(cells[first_code + 1]["source"]) == "import course_utils as cu\nx = 1"
    assert colab.sync_notebooks([path]) == []


def test_colab_installs_exactly_the_course_dependencies_it_lacks():
    names = [Requirement(r).name.lower() for r in PROJECT["dependencies"]]
    assert set(colab.COLAB_PROVIDES) <= set(names), "COLAB_PROVIDES names a package the course does not use"
    assert colab.colab_requirements() == [r for r, n in zip(PROJECT["dependencies"], names) if n not in colab.COLAB_PROVIDES]
    assert not {"torch", "torchvision"} & {Requirement(r).name for r in colab.colab_requirements()}


def test_repository_must_be_on_github(monkeypatch):
    monkeypatch.setattr(colab, "REPOSITORY", "https://gitlab.com/a/b")
    with pytest.raises(ValueError, match="github.com/owner/name"):
        colab.colab_badge("00_welcome.ipynb")


def run_setup_cell(monkeypatch, on_colab: bool) -> dict:
    """Execute the setup cell with subprocess.run recorded (nothing runs) and, on Colab, a stand-in google.colab."""
    calls = {"run": [], "widget_manager": 0}
    monkeypatch.setattr(subprocess, "run", lambda args, **kwargs: calls["run"].append(list(args)))
    monkeypatch.setattr(sys, "path", list(sys.path))
    if on_colab:
        output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.__setitem__(
            "widget_manager", calls["widget_manager"] + 1))
        google = types.ModuleType("google")
        google.colab = types.ModuleType("google.colab")
        google.colab.output = output
        monkeypatch.setitem(sys.modules, "google", google)
        monkeypatch.setitem(sys.modules, "google.colab", google.colab)
        monkeypatch.setitem(sys.modules, "google.colab.output", output)
        import importlib.util

        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",  # a fresh runtime: the course is not installed yet
                            lambda name, *a: None if name == "course_utils" else real_find_spec(name, *a))
    namespace = {}
    exec(compile(colab.setup_cell(), "setup cell", "exec"), namespace)
    calls["namespace"] = namespace
    return calls


def test_setup_cell_does_nothing_but_import_the_course_outside_colab(monkeypatch):
    calls = run_setup_cell(monkeypatch, on_colab=False)
    assert calls["run"] == [] and calls["widget_manager"] == 0
    assert calls["namespace"]["cu"].__name__ == "course_utils"
    assert "course" not in sys.path


def test_setup_cell_on_colab_clones_installs_without_touching_torch_and_enables_widgets(monkeypatch):
    calls = run_setup_cell(monkeypatch, on_colab=True)
    clone, course, missing = calls["run"]
    assert clone[:2] == ["git", "clone"] and colab.REPOSITORY in clone and clone[-1] == "course"
    assert clone[clone.index("--branch") + 1] == colab.BRANCH
    assert course == [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", "course"]
    assert missing == [sys.executable, "-m", "pip", "install", "-q", *colab.colab_requirements()]
    assert calls["widget_manager"] == 1
    assert sys.path[0] == "course" and calls["namespace"]["cu"].__name__ == "course_utils"


# ---- widgets: one figure, live or static --------------------------------------------------------------------

def test_explore_shows_one_output_live_in_a_widget_and_static_everywhere_else(tmp_path):
    """Executed by a real kernel (nbclient): the cell holds one output, the widget view with a static fallback."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(
        "import sys, types\n"
        "colab_output = types.ModuleType('google.colab.output')  # as Colab has it once its widget manager is on\n"
        "colab_output._widgets = types.SimpleNamespace(_installed_url='https://example.org/manager.min.js')\n"
        "sys.modules['google.colab.output'] = colab_output\n"
        "import matplotlib.pyplot as plt\n"
        "import course_utils as cu\n"
        "def show(scale=1.0, name='a'):\n"
        "    print(f'scale {scale}, {name}')\n"
        "    plt.figure(figsize=(2, 2)); plt.plot([0, scale])\n"
        "cu.widgets.explore(show, scale=(0.5, 2.0, 0.5), name=['a', 'b']);")]
    NotebookClient(notebook, kernel_name="python3", timeout=120).execute()
    (output,) = notebook.cells[0].outputs  # one output: no static figure beside the widget
    assert output["output_type"] == "display_data"
    assert set(output["data"]) == {"application/vnd.jupyter.widget-view+json", "text/html", "text/plain"}
    assert output["data"]["text/html"].count("<img") == 1 and "scale 0.5, a" in output["data"]["text/html"]
    assert output["metadata"]["application/vnd.jupyter.widget-view+json"]["colab"]["custom_widget_manager"]["url"]
    state = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    (live,) = [s["state"]["outputs"] for s in state.values() if s["model_name"] == "OutputModel"]
    assert [o["output_type"] for o in live] == ["stream", "display_data"] and "image/png" in live[1]["data"]
    del notebook.metadata["widgets"]  # a static export without widget state keeps the one static figure
    html, _ = HTMLExporter().from_notebook_node(notebook)
    assert html.count("<img") == 1
