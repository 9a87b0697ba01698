"""Record the figures a notebook measured, so ``make results`` can gather them.

    cu.report.record("02_distillation_loss", {"scratch_mean": 0.861, "kd_mean": 0.873})

Each call merges the values into ``results/runs/<mode>/<section>.json`` (mode is "quick" or
"default"), a folder git ignores. ``make results`` executes the notebooks and builds
``results/summary.json`` and ``results/summary.md`` from these files.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import config


def cpu_name() -> str:
    """The CPU's model name as the OS reports it (``/proc/cpuinfo``), else Python's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sweep_machine() -> str:
    """The CPU and the torch threads a sweep ran on, for its JSON (e.g. ``"Intel Xeon ..., 1 threads"``)."""
    import torch

    return f"{cpu_name()}, {torch.get_num_threads()} threads"


def hardware_name(device: str | Any) -> str:
    """The accelerator's name for a CUDA ``device``, else the CPU's (for model cards)."""
    import torch

    return torch.cuda.get_device_name() if torch.device(device).type == "cuda" else cpu_name()


def load_precomputed(path: str | Path, command: str, duration: str) -> dict[str, Any]:
    """A results file a script precomputed (e.g. ``results/kd_sweep.json``); a clear error says how to make it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `{command}` from the repository root to make it ({duration}).")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}): an interrupted write? Restore it with `git checkout -- "
                         f"{path.name}` or run `{command}` again ({duration}).") from error


def write_precomputed(path: str | Path, result: dict[str, Any]) -> Path:
    """Write a sweep program's ``result`` as indented JSON at ``path`` (folders created), the counterpart of
    :func:`load_precomputed`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path


def merge_precomputed(parts: Sequence[str | Path], out: str | Path, command: str, sections: Sequence[str],
                      same: Sequence[str] = ("teacher_card",)) -> dict[str, Any]:
    """Merge the JSON of a sweep's parts run side by side (each with its own ``--sections``) into one file at ``out``.

    The parts must agree on every key of ``same`` (the teacher, and the settings where a sweep has them) and hold
    different ``sections``. Their commands are joined; ``wall_seconds`` is the slowest part's (they ran in parallel),
    each part's kept under ``part_wall_seconds``.
    """
    loaded = [load_precomputed(part, command + " --sections ...", "see the program's docstring") for part in parts]
    for key in same:
        if len({json.dumps(part.get(key), sort_keys=True) for part in loaded}) != 1:
            what = ("teachers", "teacher") if key == "teacher_card" else (key, "options")
            raise ValueError(f"the parts were computed with different {what[0]}; rerun them with the same {what[1]}.")
    result: dict[str, Any] = {}
    for part in loaded:
        repeated = [section for section in sections if section in part and section in result]
        if repeated:
            raise ValueError(f"two parts both hold the section(s) {repeated}; merge parts with different --sections.")
        result.update({k: v for k, v in part.items() if k not in ("command", "wall_seconds")})
    result["command"] = " ; ".join(part["command"] for part in loaded) + f" ; {command} --merge ..."
    result["part_wall_seconds"] = [part["wall_seconds"] for part in loaded]
    result["wall_seconds"] = max(result["part_wall_seconds"])
    write_precomputed(out, result)
    print(f"merged {len(loaded)} parts into {out}")
    return result


def runs_dir(mode: str | None = None) -> Path:
    """The folder that holds the recorded figures of one mode (default: the current mode)."""
    mode = mode or ("quick" if config.quick_mode() else "default")
    return config.REPO_DIR / "results" / "runs" / mode


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _non_finite(value: Any, where: str) -> str | None:
    """The key path of the first NaN or infinite number in ``value``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where} = {value}"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return next((found for key, item in items if (found := _non_finite(item, f"{where}[{key!r}]"))), None)


_STARTED: set[Path] = set()  # the section files this process (a notebook's kernel) has written


def _this_run(path: Path) -> dict[str, Any]:
    """What this process has recorded in ``path`` so far: a section's first write in a process starts it afresh, so a
    renamed or removed figure or experiment of an earlier run (another kernel) does not linger in the summary."""
    if path not in _STARTED:
        _STARTED.add(path)
        return {}
    return json.loads(path.read_text()) if path.is_file() else {}


def record(section: str, values: dict[str, Any]) -> Path:
    """Merge ``values`` (numbers, lists, dicts; tensors are converted) into the section's JSON file.

    Within one process (a notebook's kernel) every call merges into what the earlier calls wrote; the first call
    of a process replaces what an earlier run left, so each "Restart & Run All" records afresh.

    NaN and infinities are refused (JSON has no such numbers, and a summary must not show one silently).
    """
    if not section or "/" in section:
        raise ValueError(f"section must be a plain name such as '02_distillation_loss', got {section!r}.")
    plain = _plain(values)
    found = _non_finite(plain, "values")
    if found:
        raise ValueError(f"cannot record {found} for {section!r}: a figure must be a finite number. Find where it became "
                         "NaN (an empty subset, a diverged run, no validation data), or record None where nothing was "
                         "measured.")
    folder = runs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{section}.json"
    merged = _this_run(path)
    merged.update(plain)
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    return path


def record_experiment(section: str, name: str, *, metric: str, baseline: tuple[str, Sequence[float]],
                      method: tuple[str, Sequence[float]], higher_is_better: bool = True,
                      source: str = "live") -> dict[str, Any]:
    """Record one headline comparison with its per-seed values under the section's ``experiments`` list.

        cu.report.record_experiment("02_distillation_loss", "few labels: KD vs scratch", metric="test accuracy",
                                    baseline=("scratch", [0.843, 0.846, 0.841]), method=("KD", [0.866, 0.865, 0.868]))

    ``make results`` gathers every section's list into ``results/summary.json``'s ``experiments``:
    one entry per comparison, with ``notebook``, ``name``, ``metric``, ``higher_is_better``, ``baseline``
    and ``method`` (each ``{"label": ..., "values": [one number per seed]}``) and ``source`` (``"live"``,
    or the command that precomputed it), so anyone can recompute a mean, a spread or a test.
    A second call with the same ``name`` replaces the first.
    """
    for side, (label, values) in (("baseline", baseline), ("method", method)):
        if not label or not len(values):
            raise ValueError(f"the {side} needs a label and at least one value (one per seed), got {label!r} with "
                             f"{len(values)} values.")
    entry = {"notebook": section, "name": name, "metric": metric, "higher_is_better": bool(higher_is_better),
             "baseline": {"label": baseline[0], "values": [float(v) for v in _plain(list(baseline[1]))]},
             "method": {"label": method[0], "values": [float(v) for v in _plain(list(method[1]))]},
             "source": source}
    recorded = load(section) if runs_dir() / f"{section}.json" in _STARTED else {}  # this run's, not an earlier run's
    experiments = [e for e in recorded.get("experiments", []) if e.get("name") != name] + [entry]
    record(section, {"experiments": experiments})
    return entry


def load(section: str, mode: str | None = None) -> dict[str, Any]:
    """The values recorded for ``section`` (an empty dict if none were)."""
    path = runs_dir(mode) / f"{section}.json"
    return json.loads(path.read_text()) if path.is_file() else {}
