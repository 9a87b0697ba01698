"""Edge export: a PyTorch model to one self-contained ONNX file, INT8 with onnxruntime, measured on the CPU.

    path = cu.export.export_onnx(student, "artifacts/student.onnx", images[:2])
    report = cu.export.parity(student, path, test.images, test.labels)       # max |diff|, agreement
    int8 = cu.export.quantize_static(path, "artifacts/student_int8.onnx", calibration_images, per_channel=True)
    result = cu.export.benchmark(int8, (1, 28, 28))                           # median / p95 latency in ms

One module per concern; every public name is re-exported here, so call them as ``cu.export.<name>``:

* :mod:`.onnx`: ONNX export with a card per file (sha256, checked on load), onnxruntime sessions, parity and
  accuracy against PyTorch, and the wrappers for the domains' exported models (``OnnxLM``, ``front_end_nodes``).
* :mod:`.quantize`: dynamic and static INT8 (calibration methods, 4-bit weights, a front end kept in FP32).
* :mod:`.qat`: fake-quant modules for quantization-aware training, batch-norm folding, magnitude pruning.
* :mod:`.measure`: sizes (file, gzip, where the bytes go), the CPU, latency (benchmarks, per token, the speed-up's
  decomposition), peak RAM of a session, and notebook 06's precomputed sweeps.

Errors are explicit: a missing or corrupt file (:class:`OnnxFileError`), a model the exporter cannot
trace (:class:`ExportError`), an input whose shape or dtype the session does not take (:class:`InputError`),
an empty calibration set (``ValueError``). The export code takes the model and its configuration as arguments;
it never imports ``cli/``.
"""

from . import measure, onnx, qat, quantize
from .measure import (
    CPU_FLAGS,
    SWEEP_COMMAND,
    SWEEP_FILE,
    BenchmarkResult,
    LatencyRow,
    available_threads,
    benchmark,
    benchmark_interleaved,
    cpu_info,
    format_table,
    gzip_size,
    latency_decomposition,
    latency_per_token,
    load_sweep,
    model_size,
    onnx_size_breakdown,
    session_peak_ram_mb,
    size_breakdown,
)
from .onnx import (
    CARD_SUFFIX,
    REEXPORT,
    ArrayLike,
    ExportError,
    InputError,
    OnnxFileError,
    OnnxLM,
    ParityReport,
    PathLike,
    card_path,
    check_input,
    export_onnx,
    front_end_nodes,
    load_session,
    onnx_accuracy,
    parity,
    read_card,
    run_session,
    torch_outputs,
    write_card,
)
from .qat import (
    WEIGHT_RANGES,
    ActivationFakeQuant,
    WeightFakeQuant,
    affine_parameters,
    fake_quantization,
    fake_quantize,
    fold_batch_norm,
    magnitude_pruning,
    symmetric_scales,
    weight_sparsity,
)
from .quantize import (
    CALIBRATION_METHODS,
    ArrayCalibrationReader,
    int4_weight_overrides,
    quantize_after_front_end,
    quantize_dynamic,
    quantize_static,
)

__all__ = [
    "measure", "onnx", "qat", "quantize",
    # onnx
    "CARD_SUFFIX", "REEXPORT", "ArrayLike", "ExportError", "InputError", "OnnxFileError", "OnnxLM", "ParityReport",
    "PathLike", "card_path", "check_input", "export_onnx", "front_end_nodes", "load_session", "onnx_accuracy",
    "parity", "read_card", "run_session", "torch_outputs", "write_card",
    # quantize
    "CALIBRATION_METHODS", "ArrayCalibrationReader", "int4_weight_overrides", "quantize_after_front_end",
    "quantize_dynamic", "quantize_static",
    # qat
    "WEIGHT_RANGES", "ActivationFakeQuant", "WeightFakeQuant", "affine_parameters", "fake_quantization",
    "fake_quantize", "fold_batch_norm", "magnitude_pruning", "symmetric_scales", "weight_sparsity",
    # measure
    "CPU_FLAGS", "SWEEP_COMMAND", "SWEEP_FILE", "BenchmarkResult", "LatencyRow", "available_threads", "benchmark",
    "benchmark_interleaved", "cpu_info", "format_table", "gzip_size", "latency_decomposition", "latency_per_token",
    "load_sweep", "model_size", "onnx_size_breakdown", "session_peak_ram_mb", "size_breakdown",
]
