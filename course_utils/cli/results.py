"""``make results`` and ``make book``: execute every notebook headless, measure, and summarise.

    python -m course_utils.cli.results                 # quick and default mode, then the summary
    python -m course_utils.cli.results --modes default --notebooks 01 02
    python -m course_utils.cli.results --summary-only  # rebuild the summary from recorded figures
    python -m course_utils.cli.results --book          # HTML of the executed notebooks in build/book

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
import queue
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .. import config, report

NOTEBOOKS_DIR = config.REPO_DIR / "notebooks"
RESULTS_DIR = config.REPO_DIR / "results"
BUILD_DIR = config.REPO_DIR / "build"
README = config.REPO_DIR / "README.md"
GUIDE = config.REPO_DIR / "docs" / "instructor-guide.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
TIMINGS_START, TIMINGS_END = "<!-- timings:start -->", "<!-- timings:end -->"
EXPECTED_START, EXPECTED_END = "<!-- expected:start -->", "<!-- expected:end -->"


def notebooks(selection: list[str] | None = None) -> list[Path]:
    """The course's notebooks in order, optionally only those whose names start with ``selection``."""
    paths = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]*_*.ipynb"))  # 00_welcome ... 02b_transfer_sets ... 08_...
    if selection:
        paths = [p for p in paths if any(p.name.startswith(s) for s in selection)]
    if not paths:
        raise FileNotFoundError(f"no notebooks match {selection} in {NOTEBOOKS_DIR}")
    return paths


def _poll_in_slices(channel: object, slice_seconds: float = 1.0) -> None:
    """Make ``channel.get_msg(timeout)`` poll in short slices until ``timeout`` (None: for ever).

    nbclient waits for a cell's reply with one poll as long as the cell's timeout; now and then (after a
    cell that opens widgets, jupyter/nbclient#312) the socket's wake-up is missed and a finished cell
    waits out the whole timeout while kernel and client both sit idle. A fresh poll sees the queued
    message at once, so polling in slices turns that hang into a delay of at most ``slice_seconds``.
    """
    get_msg = channel.get_msg

    async def get_msg_in_slices(timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            try:
                return await get_msg(timeout=slice_seconds if left is None else max(0.0, min(slice_seconds, left)))
            except queue.Empty:
                if left is not None and left <= slice_seconds:
                    raise

    channel.get_msg = get_msg_in_slices


def patch_nbclient() -> None:
    """Every ``nbclient.NotebookClient`` polls its shell and IOPub channels in slices (see :func:`_poll_in_slices`).

    Used by ``make results`` and, through the repository's ``conftest.py``, by the notebooks' nbmake run.
    """
    from nbclient import NotebookClient

    if getattr(NotebookClient, "_polls_in_slices", False):
        return
    start = NotebookClient.async_start_new_kernel_client

    async def start_new_kernel_client(self):  # noqa: ANN001, ANN202 (nbclient's signature)
        client = await start(self)
        for channel in (client.shell_channel, client.iopub_channel):
            _poll_in_slices(channel)
        return client

    NotebookClient.async_start_new_kernel_client = start_new_kernel_client
    NotebookClient._polls_in_slices = True


def _execute_child(path: Path, out_path: Path, timeout: int) -> None:
    """Runs in a child process: execute one notebook, save it with outputs, print the kernel's peak RSS."""
    import nbformat
    from nbclient import NotebookClient

    patch_nbclient()
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
    done = subprocess.run([sys.executable, "-m", "course_utils.cli.results", "--child", str(path), str(out_path),
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
    "02_distillation_loss": "the KD loss; the floor; few labels; the T × alpha sweep; Hinton's omitted class",
    "02b_transfer_sets": "transfer sets: quality, size, augmentation, the patient and consistent teacher",
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


def _latency_decomposition(sections: dict) -> str:
    d = _dig(sections, "06_edge_export", "latency_decomposition")
    if not isinstance(d, dict):
        return "not measured"
    return (f"{d['end_to_end_ratio']:.1f}× = runtime {d['runtime_ratio']:.2f}× (PyTorch eager → onnxruntime) "
            f"× model size {d['size_ratio']:.2f}× (teacher → student) × quantization {d['quantization_ratio']:.2f}× "
            f"(FP32 → INT8); {d['eager_teacher_ms']:.3f} → {d['ort_student_int8_ms']:.3f} ms")


def _floor(sections: dict) -> str:
    floor = _dig(sections, "02_distillation_loss", "floor")
    if not isinstance(floor, dict):
        return "not measured"
    student = _dig(sections, "02_distillation_loss", "student")
    return f"{_pm(floor['logreg'])} → {_pm(floor['scratch'])} ({student})"


def _seed_mean(values: object) -> float | None:
    return sum(values) / len(values) if isinstance(values, list) and values else None


def _omitted(sections: dict) -> str:
    run = _dig(sections, "02_distillation_loss", "omitted_class")
    if not isinstance(run, dict):
        return "not measured"
    return (f"{run['class_name']}: hard labels {_seed_mean(run['hard']['class_accuracy_after']):.0%}; soft targets "
            f"{_seed_mean(run['soft']['class_accuracy_before']):.0%} as trained, "
            f"{_seed_mean(run['soft']['class_accuracy_after']):.0%} after the bias shift")


def _capstone(sections: dict, key: str, fmt: str) -> str:
    value = _fmt(_dig(sections, "07_capstone", key), fmt)
    deployed = _dig(sections, "07_capstone", "deployed_model")
    return value + (f" (deployed: the {deployed} student)" if deployed and value != "not measured" else "")


# The headline claims the README makes: (label, how to read it from the recorded sections). A figure
# that no run recorded reads "not measured"; nothing is typed in by hand. The per-seed comparisons of
# every notebook follow in the experiments table.
CLAIMS: list[tuple[str, Callable[[dict], str]]] = [
    ("Teacher test accuracy (re-measured in 00)", lambda s: _fmt(_dig(s, "00_welcome", "teacher_accuracy"), "{:.2%}")),
    ("The floor: logistic regression → the default student, same budget (02)", _floor),
    ("Course KD recipe (best cell of 02's temperature × alpha sweep)",
     lambda s: "not measured" if _dig(s, "02_distillation_loss", "course_recipe") is None else
     "T = {temperature:g}, alpha = {alpha:g}".format(**_dig(s, "02_distillation_loss", "course_recipe"))),
    ("Omitted class (02): the student never sees one class", _omitted),
    ("INT8 student: size ratio, FP32 ONNX / INT8 ONNX (06)",
     lambda s: _fmt(_dig(s, "06_edge_export", "int8_size_ratio"), "{:.2f}×")),
    ("INT8 student: accuracy lost (points) (06)",
     lambda s: _fmt(_dig(s, "06_edge_export", "int8_accuracy_loss_points"), "{:+.2f}")),
    ("FP32 teacher in PyTorch eager → INT8 student in onnxruntime, batch 1, 1 thread (06)", _latency_decomposition),
    ("Capstone INT8 model: size (07)", lambda s: _capstone(s, "size_kb", "{:.1f} KB")),
    ("Capstone INT8 model: learned weights / fixed front end (07)",
     lambda s: "not measured" if _dig(s, "07_capstone", "learned_weights_kb") is None else
     f"{_dig(s, '07_capstone', 'learned_weights_kb'):.1f} KB / {_dig(s, '07_capstone', 'front_end_kb'):.1f} KB"),
    ("Capstone INT8 model: latency, 1 thread (07)", lambda s: _capstone(s, "latency_ms_1thread", "{:.3f} ms")),
    ("Capstone: accuracy retained by the deployed INT8 model vs the teacher (07)",
     lambda s: _capstone(s, "retention", "{:.1%}")),
    ("Capstone: peak RAM of the inference session (07)", lambda s: _fmt(_dig(s, "07_capstone", "peak_ram_mb"), "{:.0f} MB")),
]


def experiments(sections: dict) -> list[dict]:
    """Every recorded per-seed comparison, in notebook order (see ``cu.report.record_experiment``)."""
    return [entry for _, section in sorted(sections.items()) for entry in section.get("experiments", [])]


def _value(metric: str, value: float) -> str:
    return f"{value:.2%}" if "accuracy" in metric else f"{value:.4g}"


def render_experiments(entries: list[dict]) -> str:
    """The table of comparisons: each arm's mean ± std over its seeds, the difference, twice its SE, the verdict."""
    from ..evaluate import compare, seed_summary

    lines = ["| Notebook | Comparison | Baseline | Method | Difference | 2 SE | Verdict |", "|---|---|---|---|---|---|---|"]
    for e in entries:
        base, method = seed_summary(e["baseline"]["values"]), seed_summary(e["method"]["values"])
        arms = [f"{side['label']}: {_value(e['metric'], arm['mean'])} ± {_value(e['metric'], arm['std'])} "
                f"(n = {len(arm['values'])})" for side, arm in ((e["baseline"], base), (e["method"], method))]
        if min(len(base["values"]), len(method["values"])) < 2:
            difference, two_se, verdict = "–", "–", "fewer than 2 seeds"
        else:
            result = compare(base["values"], method["values"], e.get("higher_is_better", True))
            scale = 100 if "accuracy" in e["metric"] else 1
            unit = " points" if scale == 100 else ""
            difference, two_se = f"{scale * result.difference:+.3g}{unit}", f"{2 * scale * result.standard_error:.3g}"
            verdict = result.verdict + ("" if len(base["values"]) >= 3 and len(method["values"]) >= 3 else " (< 3 seeds)")
        live = e.get("source", "live") == "live" or "(precomputed)" in e["name"]  # a name may say so itself
        source = "" if live else " (precomputed)"
        lines.append(f"| `{e['notebook']}` | {e['name']}{source} | {arms[0]} | {arms[1]} | {difference} | {two_se} "
                     f"| {verdict} |")
    return "\n".join(lines) + "\n"


def summarise(timings: dict[str, dict[str, dict[str, float]]]) -> dict[str, object]:
    """Build the summary from the default-mode recorded figures and the measured timings."""
    sections = {p.stem: json.loads(p.read_text()) for p in sorted(report.runs_dir("default").glob("*.json"))}
    claims = [{"claim": label, "text": read(sections)} for label, read in CLAIMS]
    return {"machine": machine(), "claims": claims, "experiments": experiments(sections), "notebooks": timings,
            "sections": sections}


def render_markdown(summary: dict) -> str:
    """The tables the README shows (and summary.md holds), rendered from ``summary``."""
    m = summary["machine"]
    lines = [f"Measured by `make results` on {m['cpu']} ({m['cores']} cores), Python {m['python']}, "
             f"torch {m['torch']}, {m['date']}. Default mode unless stated.", "",
             "| Claim | Measured |", "|---|---|"]
    lines += [f"| {c['claim']} | {c['text']} |" for c in summary["claims"]]
    lines += ["", "Every comparison the notebooks record, over seeds (difference = method − baseline; a win needs a "
              "difference above twice its standard error; per-seed values in `results/summary.json`'s `experiments`):",
              "", render_experiments(summary.get("experiments", [])).rstrip("\n")]
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


def render_expected(summary: dict) -> str:
    """For the instructor guide: per notebook, what the room should see in default mode (mean, spread over seeds)."""
    by_notebook: dict[str, list[dict]] = {}
    for entry in summary.get("experiments", []):
        by_notebook.setdefault(entry["notebook"], []).append(entry)
    if not by_notebook:
        return "No comparison has been recorded yet: run `make results`.\n"
    lines = []
    for notebook, entries in sorted(by_notebook.items()):
        lines.append(f"**`{notebook}`**")
        for e in entries:
            arms = []
            for side in ("baseline", "method"):
                values = e[side]["values"]
                low, high, mean = min(values), max(values), sum(values) / len(values)
                arms.append(f"{e[side]['label']} {_value(e['metric'], mean)} (seeds from {_value(e['metric'], low)} "
                            f"to {_value(e['metric'], high)}, n = {len(values)})")
            source = "" if e.get("source", "live") == "live" else " — precomputed, read from a file"
            lines.append(f"- {e['name']} ({e['metric']}){source}: {arms[0]}; {arms[1]}.")
        lines.append("")
    return "\n".join(lines)


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
    _replace_block(GUIDE, EXPECTED_START, EXPECTED_END, render_expected(summary))


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
