"""Repository rules: notebooks without outputs, one quick-mode flag, matching dependency lists."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_committed_without_outputs(path):
    notebook = json.loads(path.read_text())
    dirty = [i for i, cell in enumerate(notebook["cells"])
             if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them (Restart Kernel and Clear Outputs) first"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_imports_the_package_with_its_prefix(path):
    source = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    assert "import course_utils as cu" in source
    assert not re.search(r"from course_utils[.\w]* import \*", source), "no star imports"
    assert "COURSE_QUICK" not in source, "notebooks derive quick mode from cu.config, never read the variable"


def test_quick_flag_is_read_in_one_place():
    reading = re.compile(r"""environ(\.get\(|\[)\s*["']COURSE_QUICK|getenv\(\s*["']COURSE_QUICK""")
    package = REPO / "course_utils"
    readers = [p.relative_to(package).as_posix() for p in package.rglob("*.py") if reading.search(p.read_text())]
    assert readers == ["config.py"]


def _names(requirements: list[str]) -> dict[str, str]:
    parsed = {}
    for line in requirements:
        match = re.match(r"^([A-Za-z0-9_.\-]+)(.*)$", line.strip())
        if match:
            parsed[match.group(1).lower()] = match.group(2).replace(" ", "")
    return parsed


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"] + project["optional-dependencies"]["dev"])
    text = (REPO / "environment.yml").read_text()
    pip_section = text.split("- pip:", 1)[1]  # the packages pip installs, as in pyproject.toml
    lines = [line.strip()[2:] for line in pip_section.splitlines()
             if line.strip().startswith("- ") and not line.strip().startswith("- -e")]
    assert _names(lines) == wanted
    assert "- -e ." in pip_section, "environment.yml installs the course itself too"


def test_datasets_readme_lists_the_checksums_the_loader_verifies():
    import course_utils as cu

    text = (REPO / "datasets" / "README.md").read_text()
    for name, digest in cu.images.data.SHA256.items():
        assert f"`{name}` | {(REPO / 'datasets' / 'fashion-mnist' / name).stat().st_size} | `{digest}`" in text


def test_readme_results_block_is_rendered_from_summary_json():
    from course_utils.cli import results

    summary_path = REPO / "results" / "summary.json"
    block = results.readme_block((REPO / "README.md").read_text())
    if not summary_path.is_file():
        assert "make results" in block and "|" not in block, "the README quotes figures that no summary produced"
        return
    summary = json.loads(summary_path.read_text())
    assert block == results.render_markdown(summary), "README and results/summary.json differ: run make results"
    assert (REPO / "results" / "summary.md").read_text().endswith(block)
