"""The package's layering (issue 19), read from the source with ``ast``, not from a list kept by hand.

- the domain-free core (the modules at the top of ``course_utils``, bar the course layer) imports no domain
  subpackage, no ``export/`` and no ``cli/``, not even inside a function;
- a domain imports no other domain and no ``cli/``; ``export/`` imports no ``cli/``;
- nothing outside ``cli/`` has a ``__main__`` block, and no module or notebook imports a program from ``cli/``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "course_utils"
NOTEBOOKS = PACKAGE.parent / "notebooks"
DOMAINS = ("images", "vibration", "language")
COURSE_LAYER = ("exercises", "solutions", "colab")  # built on top of everything; may import domains and export


def existing(module: str) -> bool:
    relative = Path(*module.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").is_file() or (PACKAGE.parent / relative / "__init__.py").is_file()


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, source: str | None = None) -> set[str]:
    """Every ``course_utils...`` module a file imports (anywhere in it), relative imports resolved."""
    tree = ast.parse(source if source is not None else path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            for alias in node.names:  # `from . import images` imports a module; `from .data import x` a name
                found.add(f"{stem}.{alias.name}" if existing(f"{stem}.{alias.name}") else stem)
    return {name for name in found if name.startswith("course_utils.") and existing(name)}


def area(module: str) -> str:
    """``core``, ``course``, ``cli``, ``export`` or a domain's name, for a ``course_utils`` module name."""
    parts = module.split(".")
    if len(parts) == 1:
        return "package"  # course_utils/__init__.py, which imports everything but cli/
    if parts[1] in DOMAINS or parts[1] in ("cli", "export"):
        return parts[1]
    return "course" if parts[1] in COURSE_LAYER else "core"


SOURCES = sorted(PACKAGE.rglob("*.py"))
EDGES = [(module_name(path), target) for path in SOURCES for target in imported_modules(path)]


def violations(allowed, edges=EDGES) -> list[str]:
    return [f"{source} imports {target}" for source, target in edges if not allowed(area(source), area(target))]


def test_the_layout_exists():
    for name in (*DOMAINS, "export", "cli"):
        assert (PACKAGE / name / "__init__.py").is_file(), f"course_utils/{name}/ is not a subpackage"
    assert EDGES, "no imports found: the scan is broken"


def test_core_imports_no_domain_no_export_and_no_cli():
    assert violations(CORE_RULE) == []


def test_domains_import_no_other_domain_and_no_cli():
    assert violations(lambda source, target: source not in DOMAINS or target in ("core", "export", source)) == []


def test_export_imports_no_cli_and_no_course_layer():
    assert violations(lambda source, target: source != "export" or target in ("core", "export", *DOMAINS)) == []


def test_nothing_outside_cli_imports_cli_or_runs_as_a_program():
    assert violations(lambda source, target: target != "cli" or source == "cli") == []
    mains = [module_name(path) for path in SOURCES if area(module_name(path)) != "cli" and "__main__" in path.read_text()]
    assert mains == [], "only course_utils/cli/ holds programs"


def test_notebooks_import_no_program():
    for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            lines = "".join(cell["source"]).splitlines()
            source = "\n".join(line for line in lines if not line.lstrip().startswith(("!", "%")))
            cli = [name for name in imported_modules(NOTEBOOKS / "cell.py", source) if area(name) == "cli"]
            assert cli == [], f"{notebook.name} imports {cli}: notebooks import library modules only"


CORE_RULE = lambda source, target: source != "core" or target in ("core", "package")  # noqa: E731


@pytest.mark.parametrize("bad", [
    "from .images import models\n",                      # a core module reaching into a domain
    "def f():\n    from .cli import results\n",          # even inside a function
    "import course_utils.export\n",                       # or absolutely
])
def test_the_scan_sees_a_violation(bad):
    edges = [("course_utils.losses", target) for target in imported_modules(PACKAGE / "losses.py", bad)]
    assert violations(CORE_RULE, edges), f"{bad!r} in a core module was not flagged"


def test_readme_table_of_paths_matches_the_tree():
    readme = (PACKAGE.parent / "README.md").read_text()
    table = readme[readme.index("## What is where"):].split("\n## ")[0]
    paths = [cell.strip("`") for line in table.splitlines() if line.startswith("| `")
             for cell in [line.split("|")[1].strip()]]
    missing = [path for path in paths if not (PACKAGE.parent / path).exists()]
    assert missing == [], f"README's 'What is where' names paths that do not exist: {missing}"
    expected = {f"course_utils/{name}/" for name in (*DOMAINS, "export", "cli")}
    expected |= {f"course_utils/cli/{path.name}" for path in (PACKAGE / "cli").glob("*.py") if not path.stem.startswith("_")}
    assert sorted(expected - set(paths)) == [], "README's 'What is where' misses a subpackage or a program"


@pytest.mark.parametrize("domain, data_set", [("images", "ImageSet"), ("vibration", "VibrationSet"),
                                              ("language", "WindowSet")])
def test_every_domain_has_the_same_small_api(domain, data_set):
    import inspect

    import course_utils as cu

    module = getattr(cu, domain)
    assert isinstance(module.CONFIGS, dict) and module.CONFIGS, f"cu.{domain}.CONFIGS is empty"
    assert "seed" in inspect.signature(module.create).parameters and callable(module.load_teacher)
    assert callable(getattr(getattr(module, data_set), "loader", None)), f"cu.{domain}.{data_set} has no .loader"
    with pytest.raises(cu.checkpoints.UnknownModelError, match="choose one of|known"):
        module.create("no-such-model")


def test_model_names_are_unique_across_the_course():
    import course_utils as cu

    names = [name for domain in DOMAINS for name in getattr(cu, domain).CONFIGS]
    assert len(names) == len(set(names)), f"a model name is used by two domains: {sorted(names)}"


def test_window_set_loads_like_make_loader_and_refuses_bad_windows():
    import torch

    import course_utils as cu

    inputs, targets = cu.language.random_windows(cu.language.encode("def f(x):\n    return x\n" * 4), 10, 8,
                                                 torch.Generator().manual_seed(0))
    teacher = torch.randn(10, 8, 96)
    windows = cu.language.WindowSet(inputs, targets)
    ours = list(windows.loader(batch_size=4, seed=3, extra=(teacher,)))
    by_hand = list(cu.data.make_loader(inputs, targets, teacher, batch_size=4, seed=3))
    assert len(windows) == 10 and all(torch.equal(a, b) for x, y in zip(ours, by_hand) for a, b in zip(x, y))
    with pytest.raises(ValueError, match="same shape"):
        cu.language.WindowSet(inputs, targets[:, :-1])
    with pytest.raises(ValueError, match="int64 tensor"):
        cu.language.WindowSet(inputs.float(), targets)
    with pytest.raises(ValueError, match="at least one window"):
        cu.language.WindowSet(inputs[:0], targets[:0])
