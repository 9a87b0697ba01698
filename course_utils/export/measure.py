"""Measurement: file sizes, CPU latency (benchmarks, per token, the speed-up's decomposition) and peak RAM.

    result = cu.export.benchmark(int8, (1, 28, 28))                           # median / p95 latency in ms
    sizes = cu.export.size_breakdown(int8)                                    # weights vs graph bytes

Timings on a shared machine vary from run to run: compare numbers measured together (:func:`benchmark_interleaved`).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import validate
from .onnx import (
    REEXPORT,
    ArrayLike,
    OnnxFileError,
    PathLike,
    _to_numpy,
    check_input,
    front_end_nodes,
    load_session,
    read_card,
)

# --- sizes ----------------------------------------------------------------------------------------------------------


def model_size(path: PathLike) -> int:
    """Bytes on disk of the ONNX file (with the external-data file next to it, if one exists)."""
    path = Path(path)
    if not path.is_file():
        raise OnnxFileError(f"the ONNX file {path} does not exist. {REEXPORT}")
    external = path.with_name(path.name + ".data")
    return path.stat().st_size + (external.stat().st_size if external.is_file() else 0)



def size_breakdown(path: PathLike) -> dict[str, int]:
    """Where an ONNX file's bytes go: ``weights`` (the raw data of its initializers: weights, biases, scales,
    zero points) and ``graph`` (everything else: operators, tensor names, shapes, metadata), summing to ``total``.

    Quantization shrinks only the first part; a tiny model's file is mostly the second.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise OnnxFileError(f"the ONNX file {path} does not exist. {REEXPORT}")
    proto = onnx.load(str(path))
    weights = sum(tensor.ByteSize() for tensor in proto.graph.initializer)
    total = model_size(path)
    return {"weights": weights, "graph": total - weights, "total": total}


def gzip_size(path: PathLike, level: int = 9) -> int:
    """Bytes of the file at ``path`` after gzip compression: what a download or compressed flash image would hold.

    A dense ONNX file stores a pruned weight as a 4-byte zero (1 byte in INT8); a compressor codes runs and
    repeats of those zeros in a few bits each, so sparsity shows up here and not in :func:`model_size`.
    """
    import gzip

    path = Path(path)
    if not path.is_file():
        raise OnnxFileError(f"the file {path} does not exist. {REEXPORT}")
    return len(gzip.compress(path.read_bytes(), compresslevel=level))


def onnx_size_breakdown(onnx_path: PathLike) -> dict[str, object]:
    """Where the bytes of an exported vibration model (``cu.vibration.CNN1d``, FP32 or INT8) go, read from the ONNX
    file's initializers:

        file = front_end + learned + graph

    ``front_end_bytes``: the constants of the fixed spectral front end (the windowed DFT basis, ``n x 2F`` floats,
    and the band-pass taps), read by the nodes before the BatchNorm of ``norm`` (:func:`front_end_nodes`);
    ``learned_bytes``: every other initializer (convolution and head weights, INT8 or FP32, biases, BatchNorm
    statistics, quantisation scales and zero points); ``graph_bytes``: the rest of the file (node and tensor
    descriptions). ``front_end_tensors`` maps each front-end constant to its bytes. Constants stored as
    ``Constant`` nodes count like initializers.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}: export the model first (cu.export.export_onnx).")
    graph = onnx.load(str(path)).graph
    tensors = {t.name: numpy_helper.to_array(t).nbytes for t in graph.initializer}
    for node in graph.node:  # constants the exporter wrote as nodes
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.TENSOR:
                    tensors[node.output[0]] = numpy_helper.to_array(attribute.t).nbytes
    front_names = set(front_end_nodes(graph)[:-1])  # the last one is norm's BatchNorm: learned
    front_end = {}
    for node in graph.node:
        if node.name in front_names and node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            front_end.update({name: tensors[name] for name in node.input if name in tensors})
    front_bytes = sum(front_end.values())
    learned_bytes = sum(tensors.values()) - front_bytes
    file_bytes = path.stat().st_size
    return {"file_bytes": file_bytes, "front_end_bytes": front_bytes, "learned_bytes": learned_bytes,
            "graph_bytes": file_bytes - front_bytes - learned_bytes, "front_end_tensors": front_end}


# --- the machine ----------------------------------------------------------------------------------------------------

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp")  # asimddp: ARM's int8 dot


def cpu_info() -> dict[str, Any]:
    """The CPU's model name, usable cores and the instruction-set flags that decide INT8 speed.

    ``avx512_vnni`` / ``avx_vnni`` (x86) and ``asimddp`` (ARM) are 8-bit dot-product instructions: without
    them onnxruntime's INT8 kernels widen to 16 bits and can be slower than FP32. Linux only (``/proc/cpuinfo``);
    elsewhere the flags are ``None`` (unknown).
    """
    import platform

    model, flags = platform.processor() or platform.machine(), None
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        if key.strip() in ("flags", "Features") and flags is None:
            flags = set(value.split())
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"model": model, "cores": os.cpu_count(), "threads": available_threads(), "affinity": affinity,
            "flags": {flag: (None if flags is None else flag in flags) for flag in CPU_FLAGS},
            "int8_dot_product": None if flags is None else bool(flags & {"avx512_vnni", "avx_vnni", "asimddp"})}


def format_table(rows: Sequence[dict[str, Any]], floats: str = ".3f") -> str:
    """A plain-text table of dicts (same keys), numbers formatted with ``floats``."""
    if not rows:
        return "(no rows)"
    columns = list(rows[0])
    cells = [[f"{row[c]:{floats}}" if isinstance(row[c], float) else str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in cells]
    return "\n".join(lines)


# --- latency --------------------------------------------------------------------------------------------------------


@dataclass
class LatencyRow:
    """Latency of one batch size and thread setting, in milliseconds per batch."""

    backend: str  # "torch" or "onnxruntime"
    batch_size: int
    threads: int
    median_ms: float
    p95_ms: float
    runs: int


@dataclass
class BenchmarkResult:
    """Median and 95th-percentile latency per (batch size, threads), measured after a warm-up."""

    rows: list[LatencyRow] = field(default_factory=list)

    def row(self, batch_size: int, threads: int | None = None) -> LatencyRow:
        """The row for ``batch_size`` and ``threads`` (``None``: the most threads measured)."""
        matches = [r for r in self.rows if r.batch_size == batch_size]
        if threads is None and matches:
            threads = max(r.threads for r in matches)
        for r in matches:
            if r.threads == threads:
                return r
        raise KeyError(f"no measurement for batch size {batch_size} with {threads} threads; measured "
                       f"{[(r.batch_size, r.threads) for r in self.rows]}.")

    def median_ms(self, batch_size: int = 1, threads: int | None = None) -> float:
        return self.row(batch_size, threads).median_ms

    def p95_ms(self, batch_size: int = 1, threads: int | None = None) -> float:
        return self.row(batch_size, threads).p95_ms

    def as_dict(self) -> dict[str, dict[str, float]]:
        """``{"b1_t1": {"median_ms": ..., "p95_ms": ...}, ...}``, for ``cu.report.record``."""
        return {f"b{r.batch_size}_t{r.threads}": {"median_ms": r.median_ms, "p95_ms": r.p95_ms} for r in self.rows}

    def __str__(self) -> str:
        lines = [f"{'backend':<12} {'batch':>5} {'threads':>7} {'median ms':>10} {'p95 ms':>9}"]
        lines += [f"{r.backend:<12} {r.batch_size:>5} {r.threads:>7} {r.median_ms:>10.3f} {r.p95_ms:>9.3f}"
                  for r in self.rows]
        return "\n".join(lines)


def available_threads() -> int:
    """"All threads": the number of logical CPUs, ``os.cpu_count()``.

    Not the affinity mask nor ``torch.get_num_threads()``: a process pinned to fewer CPUs (``taskset``, a
    container's CPU set) passes the mask on to the threads it starts, such as onnxruntime's pool.
    ``cpu_info()["affinity"]`` shows the mask, so a notebook can say when "all threads" share a core.
    """
    return os.cpu_count() or 1


def _batch_of(example: np.ndarray, batch_size: int) -> np.ndarray:
    repeats = -(-batch_size // len(example))
    return np.concatenate([example] * repeats)[:batch_size]


def _time(call: Any, warmup: int, runs: int) -> tuple[float, float]:
    for _ in range(warmup):
        call()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        call()
        times[i] = (time.perf_counter() - start) * 1e3
    return float(np.median(times)), float(np.percentile(times, 95))


def benchmark(target: Any, example_input_or_shape: ArrayLike | Sequence[int], *, batch_sizes: Sequence[int] = (1, 64),
              threads: Sequence[int | None] = (1, None), warmup: int = 10, runs: int = 50) -> BenchmarkResult:
    """Latency of one forward pass per batch: the median and the 95th percentile over ``runs`` after ``warmup``.

    ``target`` is a ``torch.nn.Module`` (eager, eval mode, ``torch.no_grad``; ``torch.set_num_threads`` is
    restored afterwards), an ONNX file path (one onnxruntime session per thread setting) or an
    ``InferenceSession`` (measured with its own thread setting; pass a path to vary threads).
    ``example_input_or_shape`` is an example tensor/array (tiled to each batch size, so token ids stay valid)
    or the shape of ONE example, e.g. ``(1, 28, 28)`` (random float32). ``threads``: ``None`` = all cores.
    Timings on a shared machine vary from run to run: compare numbers measured together.
    """
    runs, warmup = validate.integer(runs, "runs", minimum=1), validate.integer(warmup, "warmup", minimum=0)
    if not batch_sizes:
        raise ValueError("batch_sizes is empty: pass the batch sizes to time, e.g. (1, 64).")
    batch_sizes = [validate.integer(b, "each of batch_sizes", minimum=1) for b in batch_sizes]
    if not threads:
        raise ValueError("threads is empty: pass the thread counts to time, e.g. (1, None) (None: all cores).")
    thread_counts = [available_threads() if t is None else
                     validate.integer(t, "each of threads", minimum=1, hint="None uses all cores.") for t in threads]
    if isinstance(example_input_or_shape, (torch.Tensor, np.ndarray)):
        example = _to_numpy(example_input_or_shape)
        if example.ndim == 0 or len(example) == 0:
            raise ValueError("the example input is empty: pass at least one example (with a batch axis).")
        validate.all_finite(example, "the example input")
    else:
        shape = tuple(validate.integer(d, "each axis of the example shape", minimum=1,
                                       hint="Give the shape of ONE example, e.g. (1, 28, 28).")
                      for d in example_input_or_shape)
        example = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    result = BenchmarkResult()
    if isinstance(target, nn.Module):
        was_training, before = target.training, torch.get_num_threads()
        target.eval()
        try:
            for count in thread_counts:
                torch.set_num_threads(count)
                for batch_size in batch_sizes:
                    batch = torch.from_numpy(_batch_of(example, batch_size))
                    with torch.no_grad():
                        median, p95 = _time(functools.partial(target, batch), warmup, runs)
                    result.rows.append(LatencyRow("torch", batch_size, count, median, p95, runs))
        finally:
            torch.set_num_threads(before)
            target.train(was_training)
        return result
    if isinstance(target, (str, os.PathLike)):
        sessions = [(count, load_session(target, count)) for count in thread_counts]
    elif hasattr(target, "run") and hasattr(target, "get_inputs"):
        configured = target.get_session_options().intra_op_num_threads
        sessions = [(configured or available_threads(), target)]
    else:
        raise TypeError(f"target must be a torch.nn.Module, an ONNX file path or an onnxruntime InferenceSession, "
                        f"got {type(target).__name__}.")
    for count, session in sessions:
        name = session.get_inputs()[0].name
        for batch_size in batch_sizes:
            batch = _batch_of(example, batch_size)
            check_input(session, batch)
            median, p95 = _time(functools.partial(session.run, None, {name: batch}), warmup, runs)
            result.rows.append(LatencyRow("onnxruntime", batch_size, count, median, p95, runs))
    return result



def benchmark_interleaved(targets: dict[str, Any], example_input_or_shape: ArrayLike | Sequence[int], *, rounds: int = 5,
                          runs: int = 20, warmup: int = 10, threads: int = 1) -> dict[str, LatencyRow]:
    """Batch-1 latency of several targets measured in one run, interleaved: ``rounds`` rounds, each timing every
    target ``runs`` times in turn; median and 95th percentile over all ``rounds * runs`` timings per target.

    ``targets`` maps a name to a ``torch.nn.Module`` (eager, ``torch.no_grad``) or an ONNX file path (an
    onnxruntime session with ``threads`` intra-op threads). On a shared machine, load that comes and goes
    then falls on every target alike, so the ratios between them are fair. ``torch.set_num_threads`` and the
    modules' train/eval modes are restored afterwards.
    """
    if rounds < 1 or runs < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1, runs >= 1 and warmup >= 0, got {rounds}, {runs}, {warmup}.")
    if not targets:
        raise ValueError("targets is empty: pass {name: model or ONNX path}.")
    if isinstance(example_input_or_shape, (torch.Tensor, np.ndarray)):
        example = _to_numpy(example_input_or_shape)[:1]
    else:
        example = np.random.default_rng(0).standard_normal((1, *example_input_or_shape)).astype(np.float32)
    calls: dict[str, Callable[[], Any]] = {}
    modules = [t for t in targets.values() if isinstance(t, nn.Module)]
    modes, before = [m.training for m in modules], torch.get_num_threads()
    for name, target in targets.items():
        if isinstance(target, nn.Module):
            calls[name] = functools.partial(target.eval(), torch.from_numpy(example))
        elif isinstance(target, (str, os.PathLike)):
            session = load_session(target, threads)
            check_input(session, example)
            calls[name] = functools.partial(session.run, None, {session.get_inputs()[0].name: example})
        else:
            raise TypeError(f"targets[{name!r}] must be a torch.nn.Module or an ONNX file path, "
                            f"got {type(target).__name__}.")
    times: dict[str, list[float]] = {name: [] for name in targets}
    try:
        torch.set_num_threads(threads)
        with torch.no_grad():
            for call in calls.values():
                for _ in range(warmup):
                    call()
            for _ in range(rounds):
                for name, call in calls.items():
                    for _ in range(runs):
                        start = time.perf_counter()
                        call()
                        times[name].append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(before)
        for module, mode in zip(modules, modes):
            module.train(mode)
    return {name: LatencyRow("torch" if isinstance(targets[name], nn.Module) else "onnxruntime", 1, threads,
                             float(np.median(values)), float(np.percentile(values, 95)), len(values))
            for name, values in times.items()}


def latency_decomposition(eager_teacher_ms: float, ort_teacher_ms: float, ort_student_fp32_ms: float,
                          ort_student_int8_ms: float) -> dict[str, float]:
    """Split the end-to-end speed-up (FP32 teacher in PyTorch eager -> INT8 student in onnxruntime) into three steps:

        end_to_end = eager_teacher / ort_student_int8
                   = (eager_teacher / ort_teacher)            runtime: PyTorch eager -> onnxruntime, same model
                   * (ort_teacher / ort_student_fp32)          model size: teacher -> student, same runtime
                   * (ort_student_fp32 / ort_student_int8)     quantization: FP32 -> INT8, same model and runtime

    The product telescopes, so the three named ratios multiply to the end-to-end one exactly; all four latencies
    must come from one measurement run (same machine, batch and threads) for the ratios to mean anything.
    """
    latencies = {"eager_teacher_ms": eager_teacher_ms, "ort_teacher_ms": ort_teacher_ms,
                 "ort_student_fp32_ms": ort_student_fp32_ms, "ort_student_int8_ms": ort_student_int8_ms}
    for name, value in latencies.items():
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive, finite number of milliseconds, got {value!r}.")
    return {**{k: float(v) for k, v in latencies.items()},
            "runtime_ratio": eager_teacher_ms / ort_teacher_ms, "size_ratio": ort_teacher_ms / ort_student_fp32_ms,
            "quantization_ratio": ort_student_fp32_ms / ort_student_int8_ms,
            "end_to_end_ratio": eager_teacher_ms / ort_student_int8_ms}


def latency_per_token(model: nn.Module, prompt: str = "## ", n_tokens: int = 32, repeats: int = 3) -> float:
    """Median milliseconds per generated token of a language model (``cu.language.GPT`` or an :class:`OnnxLM`): batch 1,
    greedy ``cu.language.generate``, no key/value cache (each token reruns the context)."""
    from .. import language  # the language model's own tokenizer and generation loop

    if not prompt:
        raise ValueError("prompt is empty: generation needs at least one character to start from, e.g. '## '.")
    n_tokens = validate.integer(n_tokens, "n_tokens", minimum=1)
    repeats = validate.integer(repeats, "repeats", minimum=1)
    prompt_ids = language.encode(prompt)[None, :]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        language.generate(model, prompt_ids, n_tokens, temperature=0)
        times.append((time.perf_counter() - start) / n_tokens * 1000)
    return sorted(times)[len(times) // 2]


# --- memory ---------------------------------------------------------------------------------------------------------

_RAM_PROBE = """
import json, sys
import numpy as np
import onnxruntime as ort
def status_mb(field):  # Linux: this process's own memory map, in MB (VmRSS now, VmHWM its peak since the last reset)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024
path, shape, threads, runs = sys.argv[1], tuple(json.loads(sys.argv[2])), int(sys.argv[3]), int(sys.argv[4])
x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # reset VmHWM to the current RSS, so the peak below is the session's alone
before = status_mb("VmRSS")
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
for _ in range(runs):
    session.run(None, {name: x})
print(json.dumps({"baseline_mb": before, "process_peak_mb": status_mb("VmHWM")}))
"""


def session_peak_ram_mb(onnx_path: PathLike, input_shape: tuple[int, ...], threads: int = 1, runs: int = 20) -> dict:
    """Peak resident memory of an onnxruntime inference session, measured in a fresh subprocess (Linux).

    The child imports numpy and onnxruntime, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``),
    reads its resident set size (``VmRSS``), creates the session, runs ``runs`` inferences on an
    ``input_shape`` batch and reads the peak (``VmHWM``). Linux only (``getrusage``'s ``ru_maxrss`` is no
    substitute: it survives ``exec`` and would report the parent notebook's peak). Returns
    ``{"baseline_mb", "process_peak_mb", "session_mb"}``; ``session_mb = process_peak_mb - baseline_mb``
    is what the session itself (weights, arena, threads) added on top of the Python interpreter and the
    onnxruntime library. A C++ runtime on a controller pays only the library, not the interpreter.
    """
    import json
    import subprocess
    import sys

    if not Path(onnx_path).is_file():
        raise OnnxFileError(f"the ONNX file {onnx_path} does not exist. {REEXPORT}")
    read_card(onnx_path)  # a file changed since export is refused here too
    input_shape = tuple(validate.integer(d, "each axis of input_shape", minimum=1) for d in input_shape)
    threads = validate.integer(threads, "threads", minimum=1)
    runs = validate.integer(runs, "runs", minimum=1)
    completed = subprocess.run([sys.executable, "-c", _RAM_PROBE, str(onnx_path), json.dumps(list(input_shape)),
                                str(threads), str(runs)], capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"the memory probe failed on {onnx_path}: {completed.stderr.strip()[-500:]}")
    values = json.loads(completed.stdout.strip().splitlines()[-1])
    values["session_mb"] = values["process_peak_mb"] - values["baseline_mb"]
    return values


# --- notebook 06's precomputed sweeps -------------------------------------------------------------------------------

SWEEP_FILE = Path(__file__).resolve().parents[2] / "results" / "export_sweep.json"
SWEEP_COMMAND = "python -m course_utils.cli.export_sweep"


def load_sweep(path: PathLike | None = None) -> dict[str, Any]:
    """Notebook 06's precomputed sweeps (``results/export_sweep.json``); a clear error says how to make them."""
    from .. import report

    return report.load_precomputed(path or SWEEP_FILE, SWEEP_COMMAND,
                                   "a few hours on one CPU core; its docstring runs the sections one after another")
