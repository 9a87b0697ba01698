"""Extract the course's text corpus once: the docstrings of Python's standard library (PSF licence).

    python -m course_utils.cli.build_corpus            # writes datasets/python-docstrings/python_docstrings.txt

The result depends on the Python version that runs it, so the extracted file is committed
with its sha256 (``cu.language.CORPUS_SHA256``) and the notebooks never run this script.
What is kept: module, class and function docstrings (``ast.get_docstring``, which dedents and
expands tabs) from every ``.py`` file of the standard library, in sorted path order, skipping
test packages, ``site-packages`` and docstrings with characters outside printable ASCII
(the model's vocabulary, ``cu.language.VOCAB``). Each docstring is written as ``## qualified.name``
on one line, the docstring, and a blank line. Extraction stops at ``--max-bytes``.
"""

from __future__ import annotations

import argparse
import ast
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from .. import checkpoints, config, language, validate

SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "lib2to3", "turtledemo"}


def module_name(path: Path, root: Path) -> str:
    """``json/decoder.py`` -> ``json.decoder``; ``json/__init__.py`` -> ``json``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def docstrings(source: str, module: str) -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) for the module and each class and function in it, in source order."""
    tree = ast.parse(source)

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}.{child.name}"
                doc = ast.get_docstring(child)
                if doc:
                    yield name, doc
                yield from visit(child, name)

    doc = ast.get_docstring(tree)
    if doc:
        yield module, doc
    yield from visit(tree, module)


def build(stdlib: Path, max_bytes: int) -> tuple[str, dict[str, int]]:
    """The corpus text and counts of what was kept and skipped."""
    allowed = set(language.VOCAB)
    pieces, size = [], 0
    counts = {"files": 0, "kept": 0, "skipped_non_ascii": 0, "skipped_unparsable": 0}
    for path in sorted(stdlib.rglob("*.py")):
        if SKIP_PARTS & set(path.relative_to(stdlib).parts):
            continue
        try:
            source = path.read_text(encoding="utf-8")
            found = list(docstrings(source, module_name(path, stdlib)))
        except (SyntaxError, UnicodeDecodeError):
            counts["skipped_unparsable"] += 1
            continue
        counts["files"] += 1
        for name, doc in found:
            entry = f"## {name}\n{doc.strip()}\n\n"
            if not set(entry) <= allowed:
                counts["skipped_non_ascii"] += 1
                continue
            if size + len(entry) > max_bytes:
                return "".join(pieces), counts
            pieces.append(entry)
            size += len(entry)
            counts["kept"] += 1
    return "".join(pieces), counts


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stdlib", type=validate.existing_directory, default=Path(sysconfig.get_paths()["stdlib"]))
    parser.add_argument("--max-bytes", type=validate.positive_int, default=3_000_000)
    parser.add_argument("--out", type=Path, default=config.DATASETS_DIR / "python-docstrings" / language.CORPUS_FILE)
    args = parser.parse_args(argv)
    corpus, counts = build(args.stdlib, args.max_bytes)
    if not corpus:
        raise SystemExit(f"no docstring was extracted from {args.stdlib} ({counts}): is it Python's standard library "
                         "folder? Nothing was written.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(corpus, encoding="ascii", newline="\n")
    print(f"wrote {args.out} ({len(corpus):,} characters) from {args.stdlib}: {counts}")
    print(f"sha256 {checkpoints.sha256(args.out)}  (record it as CORPUS_SHA256 in course_utils/language/text.py)")
    return args.out


if __name__ == "__main__":
    main()
