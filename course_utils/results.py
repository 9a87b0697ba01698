"""``make results`` and ``make book``: execute every notebook headless, measure, and summarise.

    python -m course_utils.results                 # quick and default mode, then the summary
    python -m course_utils.results --modes default --notebooks 01 02
    python -m course_utils.results --summary-only  # rebuild the summary from recorded figures
    python -m course_utils.results --book          # HTML of the executed notebooks in build/book

Each notebook runs in a fresh kernel through nbclient, in a child process, so its wall time and
the kernel's peak resident memory are measured. The notebooks record their headline figures with
``cu.report.record``; this script gathers them into ``results/summary.json`` and
``results/summary.md`` and rewrites the README's results block between its markers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import config, report

NOTEBOOKS_DIR = config.REPO_DIR / "notebooks"
RESULTS_DIR = config.REPO_DIR / "results"
BUILD_DIR = config.REPO_DIR / "build"
README = config.REPO_DIR / "README.md"
GUIDE = config.REPO_DIR / "docs" / "instructor-guide.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
TIMINGS_START, TIMINGS_END = "<!-- timings:start -->", "<!-- timings:end -->"


def notebooks(selection: list[str] | None = None) -> list[Path]:
    """The course's notebooks in order, optionally only those whose names start with ``selection``."""
    paths = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if selection:
        paths = [p for p in paths if any(p.name.startswith(s) for s in selection)]
    if not paths:
        raise FileNotFoundError(f"no notebooks match {selection} in {NOTEBOOKS_DIR}")
    return paths


def _execute_child(path: Path, out_path: Path, timeout: int) -> None:
    """Runs in a child process: execute one notebook, save it with outputs, print the kernel's peak RSS."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, out_path)
    # The kernel was this process's child and has been waited for: its peak RSS is here (KiB on Linux).
    print(json.dumps({"kernel_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def execute(path: Path, mode: str, timeout: int = 1800) -> dict[str, float]:
    """Execute ``path`` in ``mode`` ("quick" or "default"); return wall minutes and peak memory (MB)."""
    env = dict(os.environ, COURSE_QUICK="1" if mode == "quick" else "0")
    out_path = BUILD_DIR / "executed" / mode / path.name
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "course_utils.results", "--child", str(path), str(out_path),
                           str(timeout)], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{path.name} failed in {mode} mode:\n{done.stderr[-3000:]}")
    peak = json.loads(done.stdout.strip().splitlines()[-1])["kernel_peak_mb"]
    return {"minutes": round(seconds / 60, 2), "peak_mb": round(peak)}


def machine() -> dict[str, object]:
    """The CPU and software the figures were measured on."""
    import torch

    return {"cpu": report.cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "date": datetime.date.today().isoformat()}


TOPICS = {  # notebook -> what it teaches (the syllabus column of the README)
    "00_welcome": "environment check, the data, the shipped teacher and its card",
    "01_soft_targets": "soft targets, temperature, dark knowledge, the T² scaling",
    "02_distillation_loss": "the KD loss; alpha and T; when distillation helps; low labels",
    "03_feature_distillation": "FitNets hints, adapters, layer mapping, forward hooks",
    "04_attention_transfer": "attention maps, multi-layer transfer, when feature methods fail",
    "05_training_schedule": "warmup → distill → finetune, a curriculum, incremental distillation",
    "06_edge_export": "ONNX, onnxruntime INT8, size, latency, accuracy, an edge budget",
    "07_capstone_predictive_maintenance": "capstone: vibration data to a tiny INT8 student",
    "08_language_model_distillation": "token- and sequence-level distillation of a small language model",
}

def _pm(cell: dict | None) -> str:
    return f"{cell['mean']:.2%} ± {cell['std']:.2%}" if cell else "not measured"


def _dig(sections: dict, section: str, *keys: str) -> object:
    """``sections[section][key1][key2]...``, or None where a run did not record it."""
    value: object = sections.get(section)
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _fmt(value: object, fmt: str) -> str:
    return "not measured" if value is None else fmt.format(value)


def _best_feature_method(sections: dict) -> str:
    rows = {f"{name} ({nb[:2]})": row for nb in ("03_feature_distillation", "04_attention_transfer")
            for name, row in (_dig(sections, nb, "methods") or {}).items() if name != "scratch"}
    if not rows:
        return "not measured"
    name, row = max(rows.items(), key=lambda item: item[1]["mean"])
    scratch = _dig(sections, "04_attention_transfer", "methods", "scratch")
    versus = f" (scratch {scratch['mean']:.2%})" if scratch else ""
    return f"{name}: {_pm(row)}{versus}"


def _latency(sections: dict, name: str) -> float | None:
    for row in _dig(sections, "06_edge_export", "table") or []:
        if row["name"] == name:
            return row["latency"]["b1_t1"]["median_ms"]
    return None


def _int8_vs_fp32_self(sections: dict) -> str:
    student = _dig(sections, "06_edge_export", "best_student")
    fp32 = _latency(sections, f"{student} FP32 (onnxruntime)")
    int8 = _latency(sections, f"{student} INT8 static per-channel")
    return "not measured" if fp32 is None or int8 is None else f"{fp32 / int8:.2f}× ({fp32:.3f} → {int8:.3f} ms)"


def _low_label(sections: dict, key: str, method: str, with_std: bool = True) -> str:
    run = _dig(sections, "02_distillation_loss", key)
    if not isinstance(run, dict) or run.get(f"{method}_mean") is None:
        return "not measured"
    text = f"{run[f'{method}_mean']:.2%}" + (f" ± {run[f'{method}_std']:.2%}" if with_std else "")
    return text + f" ({run['student']}, {run['steps']} steps)" if with_std else text


# The headline claims the README makes: (label, how to read it from the recorded sections). A figure
# that no run recorded reads "not measured"; nothing is typed in by hand.
CLAIMS: list[tuple[str, Callable[[dict], str]]] = [
    ("Teacher test accuracy (re-measured in 00)", lambda s: _fmt(_dig(s, "00_welcome", "teacher_accuracy"), "{:.2%}")),
    ("Full labels: scratch student (mean ± std)", lambda s: _pm(_dig(s, "02_distillation_loss", "full_labels", "scratch"))),
    ("Full labels: KD, course recipe (mean ± std)",
     lambda s: _pm(_dig(s, "02_distillation_loss", "full_labels", "distilled (course recipe)"))),
    ("Full labels: gap to the teacher closed by KD",
     lambda s: _fmt(_dig(s, "02_distillation_loss", "full_labels", "distilled (course recipe)", "gap_closed"), "{:.0%}")),
    ("Low labels, patient budget (precomputed by kd_sweep): scratch (mean ± std)",
     lambda s: _low_label(s, "low_label_patient", "scratch")),
    ("Low labels, patient budget: KD with the unlabelled transfer set (mean ± std)",
     lambda s: _low_label(s, "low_label_patient", "kd")),
    ("Low labels, patient budget: gap to the teacher closed by KD",
     lambda s: _fmt(_dig(s, "02_distillation_loss", "low_label_patient", "gap_closed"), "{:.0%}")),
    ("Low labels, live short budget in 02: scratch → KD (gap closed)",
     lambda s: _low_label(s, "low_label", "scratch", with_std=False) + " → "
     + _low_label(s, "low_label", "kd", with_std=False)
     + _fmt(_dig(s, "02_distillation_loss", "low_label", "gap_closed"), " ({:.0%})")),
    ("Best distillation method in 03-04 (scratch alongside)", _best_feature_method),
    ("INT8 student: size ratio, FP32 ONNX / INT8 ONNX",
     lambda s: _fmt(_dig(s, "06_edge_export", "int8_size_ratio"), "{:.2f}×")),
    ("INT8 student: accuracy lost (points)",
     lambda s: _fmt(_dig(s, "06_edge_export", "int8_accuracy_loss_points"), "{:+.2f}")),
    ("INT8 student vs its FP32 ONNX self (batch 1, 1 thread)", _int8_vs_fp32_self),
    ("INT8 student (onnxruntime) vs FP32 teacher (PyTorch eager), batch 1, 1 thread",
     lambda s: _fmt(_dig(s, "06_edge_export", "speedup_int8_ort_vs_teacher_eager_b1", "1_threads"), "{:.0f}× faster")),
    ("Capstone INT8 student: size", lambda s: _fmt(_dig(s, "07_capstone", "size_kb"), "{:.1f} KB")),
    ("Capstone INT8 student: latency, 1 thread", lambda s: _fmt(_dig(s, "07_capstone", "latency_ms_1thread"), "{:.3f} ms")),
    ("Capstone: accuracy retained vs the teacher", lambda s: _fmt(_dig(s, "07_capstone", "retention"), "{:.1%}")),
    ("Capstone: peak RAM of the inference session", lambda s: _fmt(_dig(s, "07_capstone", "peak_ram_mb"), "{:.0f} MB")),
]


def summarise(timings: dict[str, dict[str, dict[str, float]]]) -> dict[str, object]:
    """Build the summary from the default-mode recorded figures and the measured timings."""
    sections = {p.stem: json.loads(p.read_text()) for p in sorted(report.runs_dir("default").glob("*.json"))}
    claims = [{"claim": label, "text": read(sections)} for label, read in CLAIMS]
    return {"machine": machine(), "claims": claims, "notebooks": timings, "sections": sections}


def render_markdown(summary: dict) -> str:
    """The tables the README shows (and summary.md holds), rendered from ``summary``."""
    m = summary["machine"]
    lines = [f"Measured by `make results` on {m['cpu']} ({m['cores']} cores), Python {m['python']}, "
             f"torch {m['torch']}, {m['date']}. Default mode unless stated.", "",
             "| Claim | Measured |", "|---|---|"]
    lines += [f"| {c['claim']} | {c['text']} |" for c in summary["claims"]]
    return "\n".join(lines) + "\n\n" + render_timings(summary)


def render_timings(summary: dict) -> str:
    """The syllabus table: each notebook's topic, wall minutes and kernel peak memory per mode."""
    lines = ["| Notebook | Topic | Minutes (default) | Peak MB (default) | Minutes (quick) | Peak MB (quick) |",
             "|---|---|---|---|---|---|"]
    for name, row in sorted(summary["notebooks"].items()):
        d, q = row.get("default", {}), row.get("quick", {})
        lines.append(f"| `{name}` | {TOPICS.get(name, '')} | {d.get('minutes', '–')} | {d.get('peak_mb', '–')} | "
                     f"{q.get('minutes', '–')} | {q.get('peak_mb', '–')} |")
    total = sum(m for row in summary["notebooks"].values()
                if isinstance(m := row.get("default", {}).get("minutes", 0), (int, float)))
    lines.append(f"\nAll notebooks in default mode: {total:.1f} minutes on this machine.")
    return "\n".join(lines) + "\n"


def readme_block(text: str, start: str = START, end: str = END) -> str:
    """The part of a markdown text between two markers (the README's results block by default)."""
    if start not in text or end not in text:
        raise ValueError(f"the text lacks the markers {start} and {end}.")
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n") + "\n"


def _replace_block(path: Path, start: str, end: str, block: str) -> None:
    text = path.read_text()
    readme_block(text, start, end)  # raises when the markers are missing
    head, rest = text.split(start, 1)
    path.write_text(head + start + "\n" + block + end + rest.split(end, 1)[1])


def write_summary(summary: dict) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = render_markdown(summary)
    (RESULTS_DIR / "summary.md").write_text("# Course results\n\n" + table)
    _replace_block(README, START, END, table)
    _replace_block(GUIDE, TIMINGS_START, TIMINGS_END, render_timings(summary))


def book() -> Path:
    """Render the executed default-mode notebooks (executing any that are missing) to build/book/*.html."""
    import nbformat
    from nbconvert import HTMLExporter

    out = BUILD_DIR / "book"
    out.mkdir(parents=True, exist_ok=True)
    links = []
    for path in notebooks():
        executed = BUILD_DIR / "executed" / "default" / path.name
        if not executed.is_file():
            print(f"executing {path.name} (default mode) ...", flush=True)
            execute(path, "default")
        notebook = nbformat.read(executed, as_version=4)
        # The book is read offline and without a kernel: drop the saved widget state so that each
        # cu.widgets.explore output shows its static figure (the widget view needs a script from a CDN).
        notebook.metadata.pop("widgets", None)
        html, _ = HTMLExporter().from_notebook_node(notebook)
        (out / f"{path.stem}.html").write_text(html)
        links.append(f'<li><a href="{path.stem}.html">{path.stem}</a></li>')
    (out / "index.html").write_text("<h1>Distilling for the Edge</h1><ul>" + "".join(links) + "</ul>")
    return out / "index.html"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        _execute_child(Path(argv[1]), Path(argv[2]), int(argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["quick", "default"], choices=["quick", "default"])
    parser.add_argument("--notebooks", nargs="*", help="name prefixes, e.g. 01 02 (default: all)")
    parser.add_argument("--summary-only", action="store_true", help="do not execute; reuse recorded timings")
    parser.add_argument("--book", action="store_true", help="render build/book/*.html and stop")
    args = parser.parse_args(argv)
    if args.book:
        print(f"wrote {book()}")
        return
    previous = RESULTS_DIR / "summary.json"
    timings = json.loads(previous.read_text()).get("notebooks", {}) if previous.is_file() else {}
    start = time.perf_counter()
    failed = []
    if not args.summary_only:
        for mode in args.modes:
            for path in notebooks(args.notebooks):
                print(f"{mode:>7}  {path.name} ...", end=" ", flush=True)
                try:
                    timings.setdefault(path.stem, {})[mode] = measured = execute(path, mode)
                except RuntimeError as error:  # keep measuring the others; report the failure at the end
                    failed.append(f"{path.name} ({mode})")
                    timings.setdefault(path.stem, {})[mode] = {"minutes": "failed", "peak_mb": "failed"}
                    print(f"FAILED\n{error}", flush=True)
                    continue
                print(f"{measured['minutes']} min, {measured['peak_mb']} MB", flush=True)
                write_summary(summarise(timings))  # a partial run still leaves a consistent summary
    summary = summarise(timings)
    summary["make_results_minutes"] = round((time.perf_counter() - start) / 60, 1)
    write_summary(summary)
    print(render_markdown(summary))
    if failed:
        raise SystemExit(f"these notebooks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
