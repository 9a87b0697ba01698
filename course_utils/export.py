"""Edge export: a PyTorch model to one self-contained ONNX file, INT8 with onnxruntime, measured on the CPU.

    path = cu.export.export_onnx(student, "artifacts/student.onnx", images[:2])
    report = cu.export.parity(student, path, test.images, test.labels)       # max |diff|, agreement
    int8 = cu.export.quantize_static(path, "artifacts/student_int8.onnx", calibration_images, per_channel=True)
    result = cu.export.benchmark(int8, (1, 28, 28))                           # median / p95 latency in ms

Errors are explicit: a missing or corrupt file (:class:`OnnxFileError`), a model the exporter cannot
trace (:class:`ExportError`), an input whose shape or dtype the session does not take (:class:`InputError`),
an empty calibration set (``ValueError``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import validate

PathLike = str | os.PathLike
ArrayLike = np.ndarray | torch.Tensor

_ORT_DTYPES = {  # onnxruntime's input type string -> numpy dtype
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}
REEXPORT = "Re-export it with cu.export.export_onnx(model, path, example_input)."
CARD_SUFFIX = ".json"  # the card of "student.onnx" is "student.onnx.json"


class ExportError(RuntimeError):
    """The model could not be exported to a valid ONNX file."""


class OnnxFileError(ValueError):
    """An ONNX file is missing, empty, corrupt or not a valid model."""


class InputError(ValueError):
    """An input does not match what the ONNX session expects (shape or dtype)."""


# --- model cards --------------------------------------------------------------------------------------------------


def card_path(path: PathLike) -> Path:
    """Where the card of the ONNX file at ``path`` lives: ``<name>.onnx.json`` next to it."""
    path = Path(path)
    return path.with_name(path.name + CARD_SUFFIX)


def write_card(path: PathLike, **details: Any) -> Path:
    """Write the ONNX file's card: its sha256 and size (checked on every load) and ``details`` (how it was made)."""
    import json

    import onnx
    import onnxruntime

    from .checkpoints import sha256

    path = Path(path)
    card = {"file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size, **details,
            "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    card_path(path).write_text(json.dumps(card, indent=2) + "\n")
    return card_path(path)


def read_card(path: PathLike) -> dict[str, Any] | None:
    """The card of the ONNX file at ``path`` after checking the file against it; ``None`` when it has no card.

    Raises :class:`OnnxFileError` when the file's sha256 differs from the card's: the file was changed after it
    was exported or quantized (edited weights, a half-written copy), so its numbers are not the ones measured.
    """
    import json

    from .checkpoints import sha256

    path, card_file = Path(path), card_path(path)
    if not card_file.is_file():
        return None
    try:
        card = json.loads(card_file.read_text())
        expected = card["sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise OnnxFileError(f"the card {card_file} is not a valid ONNX model card ({error}). {REEXPORT}") from error
    actual = sha256(path)
    if actual != expected:
        raise OnnxFileError(f"the ONNX file {path} does not match its card {card_file.name}: sha256 {actual[:16]}..., "
                            f"the card says {expected[:16]}... The file was changed after it was written (edited "
                            f"weights, an interrupted copy). {REEXPORT}")
    return card


# --- export -------------------------------------------------------------------------------------------------------


def _strip_debug_metadata(graph: Any) -> None:
    """Drop per-node doc strings and metadata (stack traces, module names): they can outweigh a tiny model's weights."""
    for node in graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
        for attribute in node.attribute:
            if attribute.HasField("g"):
                _strip_debug_metadata(attribute.g)
            for subgraph in attribute.graphs:
                _strip_debug_metadata(subgraph)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        del value.metadata_props[:]
    graph.doc_string = ""
    del graph.metadata_props[:]


def export_onnx(model: nn.Module, path: PathLike, example_input: torch.Tensor, *, dynamic_batch: bool = True,
                dynamic_axes: dict[int, str] | None = None, opset: int | None = None, input_name: str = "input",
                output_name: str = "logits", strip_metadata: bool = True, quiet: bool = True) -> Path:
    """Export ``model`` (in eval mode) with ``torch.onnx.export`` (the ``torch.export``-based exporter) to ONE file.

    * ``dynamic_batch``: axis 0 is symbolic ("batch"), so the file runs any batch size;
      ``dynamic_axes={1: "sequence"}`` makes further axes symbolic (e.g. a token model's length).
    * The exporter writes weights as external data (``path.data``) by default; here they are kept
      inside the ``.onnx`` file, so one file is the whole model.
    * ``strip_metadata`` drops per-node debug metadata (stack traces, module names), which is
      larger than the weights of a 2k-parameter student; the graph and names are kept.
    * The result passes ``onnx.checker.check_model(full_check=True)``.

    The model's train/eval mode is restored afterwards. Raises :class:`ExportError` when tracing,
    translation or checking fails. ONNX: https://onnx.ai; exporter: PyTorch's ``torch.onnx`` (dynamo).
    """
    import onnx

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor (one example batch), got {type(example_input).__name__}.")
    if example_input.ndim < 1 or example_input.shape[0] < 1:
        raise ValueError(f"example_input needs a batch axis with at least one example, got shape "
                         f"{tuple(example_input.shape)}.")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"path should end in .onnx, got {str(path)!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {0: "batch"} if dynamic_batch else {}
    axes.update(dynamic_axes or {})
    if any(not 0 <= axis < example_input.ndim for axis in axes):
        raise ValueError(f"dynamic axes {sorted(axes)} do not exist in an input of shape {tuple(example_input.shape)}.")
    if 0 in axes and example_input.shape[0] == 1:  # torch.export specialises size-1 axes: trace with a batch of 2
        example_input = example_input.repeat(2, *[1] * (example_input.ndim - 1))
    for axis, name in axes.items():
        if axis != 0 and example_input.shape[axis] == 1:
            raise ValueError(f"axis {axis} ({name}) has size 1 in example_input: torch.export treats size 1 as a "
                             "constant, so give an example of size >= 2 along a dynamic axis.")
    dynamic_shapes = ({axis: torch.export.Dim(name) for axis, name in axes.items()},) if axes else None
    was_training = model.training
    model.eval()
    for stale in (path, path.with_name(path.name + ".data"), card_path(path)):
        stale.unlink(missing_ok=True)
    try:
        output = io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(output) if quiet else contextlib.nullcontext():
            if quiet:
                warnings.simplefilter("ignore")
            with torch.no_grad():
                torch.onnx.export(model, (example_input,), str(path), input_names=[input_name],
                                  output_names=[output_name], opset_version=opset, dynamo=True,
                                  external_data=False, dynamic_shapes=dynamic_shapes, verbose=False)
    except Exception as error:
        raise ExportError(f"torch.onnx.export could not export {type(model).__name__} with an input of shape "
                          f"{tuple(example_input.shape)} and dtype {example_input.dtype}: {type(error).__name__}: "
                          f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}. Check that forward() "
                          "runs on this input and uses only tensor operations (no .item(), .numpy(), or Python "
                          "control flow on tensor values).") from error
    finally:
        model.train(was_training)
    try:
        proto = onnx.load(str(path))  # also reads external data, if the exporter wrote any
        if strip_metadata:
            _strip_debug_metadata(proto.graph)
        onnx.checker.check_model(proto, full_check=True)
    except Exception as error:
        raise ExportError(f"the exported file {path} is not a valid ONNX model: {error}") from error
    onnx.save_model(proto, str(path), save_as_external_data=False)  # one self-contained file
    path.with_name(path.name + ".data").unlink(missing_ok=True)
    write_card(path, made_by="cu.export.export_onnx", model=type(model).__name__,
               example_input_shape=list(example_input.shape), dynamic_axes={str(k): v for k, v in axes.items()},
               opset=opset)
    return path


# --- sessions -----------------------------------------------------------------------------------------------------


def load_session(path: PathLike, threads: int | None = None, verify: bool = True) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU for the ONNX file at ``path``.

    ``threads`` sets the intra-op thread count (``None``: onnxruntime's default, one per core).
    With ``verify`` (the default) a file that has a card (``<name>.onnx.json``, written by :func:`export_onnx` and
    the quantizers) must still have the card's sha256; a file made elsewhere, without a card, loads unchecked.
    Raises :class:`OnnxFileError` for a missing, empty, corrupt or changed file.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise OnnxFileError(f"the ONNX file {path} does not exist. {REEXPORT}")
    if path.stat().st_size == 0:
        raise OnnxFileError(f"the ONNX file {path} is empty (an interrupted export?). {REEXPORT}")
    if threads is not None:
        threads = validate.integer(threads, "threads", minimum=1, hint="None uses all cores.")
    if verify:
        read_card(path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise OnnxFileError(f"onnxruntime cannot load {path}: it is corrupt, truncated or not an ONNX model "
                            f"({type(error).__name__}: {str(error).strip()[:300]}). {REEXPORT}") from error


def _as_session(session_or_path: Any, threads: int | None = None) -> Any:
    return load_session(session_or_path, threads) if isinstance(session_or_path, (str, os.PathLike)) else session_or_path


def _to_numpy(inputs: ArrayLike) -> np.ndarray:
    if isinstance(inputs, torch.Tensor):
        return inputs.detach().cpu().numpy()
    if isinstance(inputs, np.ndarray):
        return inputs
    raise TypeError(f"inputs must be a numpy array or a torch tensor, got {type(inputs).__name__}.")


def _describe_shape(shape: Sequence[Any]) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + ")"


def check_input(session: Any, inputs: np.ndarray) -> None:
    """Raise :class:`InputError` unless ``inputs`` has the session input's rank, fixed sizes and dtype."""
    expected = session.get_inputs()[0]
    expected_dtype = _ORT_DTYPES.get(expected.type)
    shape = _describe_shape(expected.shape)
    if expected_dtype is not None and inputs.dtype != expected_dtype:
        raise InputError(f"the session's input {expected.name!r} expects dtype {np.dtype(expected_dtype).name} "
                         f"with shape {shape}, got dtype {inputs.dtype}. Convert it explicitly, e.g. "
                         f"x.astype(np.{np.dtype(expected_dtype).name}) or tensor.{_torch_cast(expected_dtype)}().")
    if inputs.ndim != len(expected.shape) or any(
            isinstance(want, int) and want != got for want, got in zip(expected.shape, inputs.shape)):
        raise InputError(f"the session's input {expected.name!r} expects shape {shape} (named axes are free), got "
                         f"{tuple(inputs.shape)}. Add or remove axes (e.g. a batch axis with x[None]) to match.")


def _torch_cast(dtype: Any) -> str:
    return {np.float32: "float", np.int64: "long", np.float64: "double"}.get(dtype, "to")


def run_session(session: Any, inputs: ArrayLike, batch_size: int | None = 256) -> np.ndarray:
    """The session's first output for ``inputs`` (checked against the session's input shape and dtype).

    Inputs are run in chunks of ``batch_size`` along axis 0 when that axis is dynamic (bounded memory: the
    session keeps its largest intermediate buffers);
    ``None`` runs them in one call.
    """
    array = _to_numpy(inputs)
    validate.non_empty(array, "inputs", hint="Pass at least one example (with a batch axis).")
    validate.all_finite(array, "inputs")
    if batch_size is not None:
        batch_size = validate.integer(batch_size, "batch_size", minimum=1, hint="None runs everything in one call.")
    check_input(session, array)
    expected = session.get_inputs()[0]
    dynamic_batch = not isinstance(expected.shape[0], int)
    if batch_size is None or not dynamic_batch or len(array) <= batch_size:
        return session.run(None, {expected.name: array})[0]
    chunks = [session.run(None, {expected.name: array[i:i + batch_size]})[0] for i in range(0, len(array), batch_size)]
    return np.concatenate(chunks)


# --- parity and accuracy --------------------------------------------------------------------------------------------


@dataclass
class ParityReport:
    """PyTorch against onnxruntime on the same inputs: max |difference| of the outputs and arg-max agreement."""

    max_abs_diff: float
    agreement: float  # fraction of predictions (arg-max over the last axis) that are the same
    count: int  # predictions compared
    torch_accuracy: float | None = None
    onnx_accuracy: float | None = None

    def within(self, atol: float = 1e-4) -> bool:
        """True when every output is within ``atol`` of PyTorch's."""
        return self.max_abs_diff <= atol

    def __str__(self) -> str:
        text = f"max |torch - onnx| = {self.max_abs_diff:.2e}, agreement {self.agreement:.2%} of {self.count}"
        if self.torch_accuracy is not None:
            text += f", accuracy torch {self.torch_accuracy:.2%} / onnx {self.onnx_accuracy:.2%}"
        return text


@torch.no_grad()
def torch_outputs(model: nn.Module, inputs: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``model(inputs)`` in eval mode on the CPU, in chunks (restores the model's mode)."""
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        outputs = [model(inputs[i:i + batch_size].to(device)).cpu() for i in range(0, len(inputs), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outputs)


def _accuracy(predictions: np.ndarray, labels: ArrayLike) -> float:
    labels = _to_numpy(labels)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {tuple(labels.shape)} must have the shape of the predictions {tuple(predictions.shape)}.")
    return float((predictions == labels).mean())


def parity(model: nn.Module, path_or_session: Any, inputs: torch.Tensor, labels: ArrayLike | None = None,
           batch_size: int = 256) -> ParityReport:
    """Compare ``model(inputs)`` in PyTorch with the ONNX file or session: ``max |y_torch - y_onnx|`` and agreement.

    A faithful FP32 export differs only by floating-point reordering (about 1e-6 to 1e-5);
    predictions are compared by arg-max over the last axis. With ``labels`` both accuracies are added.
    """
    session = _as_session(path_or_session)
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}.")
    if len(inputs) == 0:
        raise ValueError("inputs is empty: pass at least one example to compare.")
    expected = torch_outputs(model, inputs, batch_size).numpy()
    got = run_session(session, inputs, batch_size)
    if got.shape != expected.shape:
        raise ValueError(f"the ONNX output has shape {got.shape}, PyTorch's {expected.shape}: is it the same model?")
    torch_pred, onnx_pred = expected.argmax(-1), got.argmax(-1)
    report = ParityReport(float(np.abs(expected - got).max()), float((torch_pred == onnx_pred).mean()), torch_pred.size)
    if labels is not None:
        report.torch_accuracy = _accuracy(torch_pred, labels)
        report.onnx_accuracy = _accuracy(onnx_pred, labels)
    return report


def onnx_accuracy(session_or_path: Any, images: ArrayLike, labels: ArrayLike, batch_size: int = 256) -> float:
    """Fraction of ``images`` whose arg-max ONNX output equals ``labels``."""
    logits = run_session(_as_session(session_or_path), images, batch_size)
    return _accuracy(logits.argmax(-1), labels)


def model_size(path: PathLike) -> int:
    """Bytes on disk of the ONNX file (with the external-data file next to it, if one exists)."""
    path = Path(path)
    if not path.is_file():
        raise OnnxFileError(f"the ONNX file {path} does not exist. {REEXPORT}")
    external = path.with_name(path.name + ".data")
    return path.stat().st_size + (external.stat().st_size if external.is_file() else 0)


# --- quantization ---------------------------------------------------------------------------------------------------


def _quant_type(name: str) -> Any:
    from onnxruntime.quantization import QuantType

    types = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8, "qint4": QuantType.QInt4}  # qint4: weights only
    if name not in types:
        raise ValueError(f"type must be one of {sorted(types)}, got {name!r}.")
    return types[name]


def _pre_process(fp32_path: Path, folder: Path) -> Path:
    """``quant_pre_process``: symbolic shape inference and graph optimisation, as onnxruntime recommends.

    Symbolic shape inference does not complete on some graphs (a transformer's dynamic sequence axis);
    then the pre-processing runs again without it, keeping ONNX's own shape inference and the optimiser.
    It runs inside ``folder`` so that its temporary files never land in the caller's working directory.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, prepared = str(fp32_path.resolve()), str((folder / "prepared.onnx").resolve())  # before chdir
    with contextlib.chdir(folder):
        try:
            quant_pre_process(source, prepared)
        except Exception:  # onnxruntime raises a bare Exception for "Incomplete symbolic shape inference"
            quant_pre_process(source, prepared, skip_symbolic_shape=True)
    return Path(prepared)


def _sha256(path: Path) -> str:
    from .checkpoints import sha256

    return sha256(path)


def _check_fp32(fp32_path: PathLike, int8_path: PathLike) -> tuple[Path, Path]:
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    if not fp32_path.is_file():
        raise OnnxFileError(f"the FP32 ONNX file {fp32_path} does not exist. {REEXPORT}")
    load_session(fp32_path)  # a clear error for a corrupt file, before onnxruntime's quantizer meets it
    if fp32_path.resolve() == int8_path.resolve():
        raise ValueError("int8_path must differ from fp32_path (the FP32 file would be overwritten).")
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    card_path(int8_path).unlink(missing_ok=True)  # a failed quantization must not leave the previous file's card
    return fp32_path, int8_path


def quantize_dynamic(fp32_path: PathLike, int8_path: PathLike, per_channel: bool = False,
                     weight_type: str = "qint8") -> Path:
    """Dynamic INT8: weights stored as 8-bit integers, activations quantized on the fly at run time.

    ``q = clamp(round(w / s) + z, -128, 127)`` with ``s = max|w| / 127`` per tensor (or per output channel);
    each activation's scale is computed from its own range at inference, so no calibration set is needed.
    Jacob et al. (2018), "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-Only
    Inference"; onnxruntime's ``quantize_dynamic``.
    """
    from onnxruntime.quantization import quantize_dynamic as ort_quantize_dynamic

    fp32_path, int8_path = _check_fp32(fp32_path, int8_path)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = _pre_process(fp32_path, Path(folder))
        ort_quantize_dynamic(str(prepared), str(int8_path), per_channel=per_channel, weight_type=_quant_type(weight_type))
    write_card(int8_path, made_by="cu.export.quantize_dynamic", source=fp32_path.name,
               source_sha256=_sha256(fp32_path), per_channel=per_channel, weight_type=weight_type)
    return int8_path


class ArrayCalibrationReader:
    """Feeds a calibration set to onnxruntime's calibrator in batches (an ``onnxruntime`` ``CalibrationDataReader``)."""

    def __init__(self, input_name: str, calibration_inputs: np.ndarray, batch_size: int = 64):
        self.input_name = input_name
        self.batches = [calibration_inputs[i:i + batch_size] for i in range(0, len(calibration_inputs), batch_size)]
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {self.input_name: self.batches[self.position - 1]}

    def rewind(self) -> None:
        self.position = 0


CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def _load_graph(path: Path) -> Any:
    import onnx

    return onnx.load(str(path)).graph


def quantize_static(fp32_path: PathLike, int8_path: PathLike, calibration_inputs: ArrayLike, method: str = "minmax",
                    per_channel: bool = False, quant_format: str = "qdq", activation_type: str = "quint8",
                    weight_type: str = "qint8", percentile: float = 99.999, batch_size: int = 64,
                    nodes_to_exclude: Callable[[Any], list[str]] | None = None) -> Path:
    """Static INT8: activation ranges measured once on a calibration set, stored as scales and zero points.

    ``x_q = clamp(round(x / s) + z, q_min, q_max)``, ``x ~ s (x_q - z)``, with ``(s, z)`` from the range
    ``[a, b]`` each ``method`` picks from the calibration activations: "minmax" (the observed min and max),
    "percentile" (the ``percentile``-th percentile of |x|, clipping outliers) or "entropy" (the threshold
    minimising the KL divergence between the FP32 and quantized histograms, as in TensorRT: Migacz 2017).
    ``quant_format="qdq"`` writes QuantizeLinear/DequantizeLinear pairs around FP32 ops that onnxruntime fuses
    into integer kernels; ``"qoperator"`` writes QLinearConv etc. directly. ``quant_pre_process`` runs first.
    ``nodes_to_exclude(graph)`` may name nodes of the pre-processed graph to keep in FP32 (e.g. a signal-processing
    front end whose dynamic range 8 bits cannot hold).
    ``weight_type="qint4"`` stores 4-bit weights on a symmetric ``[-7, 7]`` grid (:func:`int4_weight_overrides`);
    export the FP32 file with ``opset=21`` so that the 4-bit QuantizeLinear is a standard ONNX operator.
    """
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    methods = dict(zip(CALIBRATION_METHODS, (CalibrationMethod.MinMax, CalibrationMethod.Entropy,
                                              CalibrationMethod.Percentile)))
    if method not in methods:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}.")
    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    if quant_format not in formats:
        raise ValueError(f"quant_format must be 'qdq' or 'qoperator', got {quant_format!r}.")
    calibration = _to_numpy(calibration_inputs)
    if calibration.ndim == 0 or len(calibration) == 0:
        raise ValueError("the calibration set is empty: static quantization measures activation ranges on real "
                         "inputs, so pass a few hundred training examples (e.g. train.images[:512]).")
    validate.all_finite(calibration, "the calibration set",
                        hint="A NaN or inf would set an activation range of NaN or inf; calibrate on clean inputs.")
    percentile = validate.in_range(percentile, "percentile", 0.0, 100.0, low_open=True)
    batch_size = validate.integer(batch_size, "batch_size", minimum=1)
    fp32_path, int8_path = _check_fp32(fp32_path, int8_path)
    session = load_session(fp32_path)
    check_input(session, calibration[:1])
    if method != "minmax":  # onnxruntime's histogram collector needs equal batches: use a divisor of the set size
        batch_size = max(d for d in range(1, min(batch_size, len(calibration)) + 1) if len(calibration) % d == 0)
    reader = type("Reader", (ArrayCalibrationReader, CalibrationDataReader), {})(
        session.get_inputs()[0].name, calibration, batch_size)
    extra = {"CalibPercentile": percentile} if method == "percentile" else {}
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # and the calibrators' progress prints
        prepared = _pre_process(fp32_path, Path(folder))
        excluded = [] if nodes_to_exclude is None else nodes_to_exclude(_load_graph(prepared))
        if weight_type == "qint4":  # onnxruntime's own 4-bit grid maps +max|w| to 7.5 and clips it: use [-7, 7]
            extra = {**extra, "TensorQuantOverrides": int4_weight_overrides(_load_graph(prepared), per_channel)}
        ort_quantize_static(str(prepared), str(int8_path), reader, quant_format=formats[quant_format],
                            per_channel=per_channel, activation_type=_quant_type(activation_type),
                            weight_type=_quant_type(weight_type), calibrate_method=methods[method],
                            extra_options=extra, nodes_to_exclude=excluded)
    write_card(int8_path, made_by="cu.export.quantize_static", source=fp32_path.name, source_sha256=_sha256(fp32_path),
               method=method, per_channel=per_channel, weight_type=weight_type, activation_type=activation_type,
               quant_format=quant_format, calibration_examples=len(calibration),
               excluded_nodes=len(excluded))
    return int8_path


# --- the machine -----------------------------------------------------------------------------------------------------

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


# --- quantization-aware training ------------------------------------------------------------------------------------


def _check_grid(q_min: int, q_max: int) -> None:
    q_min, q_max = validate.integer(q_min, "q_min"), validate.integer(q_max, "q_max")
    if q_min >= q_max:
        raise ValueError(f"q_min ({q_min}) must be below q_max ({q_max}): e.g. 0 and 255 (uint8) or -127 and 127 (int8).")


def fake_quantize(x: torch.Tensor, scale: torch.Tensor | float, zero_point: torch.Tensor | float, q_min: int,
                  q_max: int) -> torch.Tensor:
    """Quantize and dequantize in float, ``x_hat = s * (clamp(round(x / s) + z, q_min, q_max) - z)``, with the
    straight-through estimator: the forward pass gives ``x_hat``, the backward pass treats rounding as identity
    (``d x_hat / d x = 1``), so the network learns weights that survive rounding.

    Bengio, Leonard and Courville (2013) for the estimator; Jacob et al. (2018) for quantization-aware training.
    """
    _check_grid(q_min, q_max)
    if not bool((torch.as_tensor(scale) > 0).all()):
        raise ValueError("scale must be > 0 everywhere (it is the step between two quantized values); compute it "
                         "with cu.export.affine_parameters(low, high).")
    quantized = torch.clamp(torch.round(x / scale) + zero_point, q_min, q_max)  # integers, stored as float
    x_hat = (quantized - zero_point) * scale
    return x + (x_hat - x).detach()  # value of x_hat, gradient of x


def affine_parameters(low: torch.Tensor, high: torch.Tensor, q_min: int = 0, q_max: int = 255
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map the range ``[low, high]`` (widened to contain 0) onto ``[q_min, q_max]``:

        s = (high - low) / (q_max - q_min),    z = q_min - round(low / s)

    so ``x = low`` maps to ``q_min``, ``x = high`` to ``q_max`` and ``x = 0`` exactly to the integer ``z``.
    Jacob et al. (2018), eq. (1)-(2).
    """
    _check_grid(q_min, q_max)
    low = torch.as_tensor(low, dtype=torch.float32).clamp(max=0.0)
    high = torch.as_tensor(high, dtype=torch.float32).clamp(min=0.0)
    scale = ((high - low) / (q_max - q_min)).clamp(min=1e-12)
    return scale, q_min - torch.round(low / scale)


WEIGHT_RANGES = {8: (-127, 127), 4: (-7, 7)}  # bits -> symmetric weight integers (QInt8; QInt4 as int4_weight_overrides)


class WeightFakeQuant(nn.Module):
    """A parametrization: symmetric INT8 weights, ``s = max|w| / 127`` per output channel (or per tensor), ``z = 0``.

    ``bits=4``: ``s = max|w| / 7``, integers in ``[-7, 7]``, the grid :func:`quantize_static` gives ``QInt4``
    weights (:func:`int4_weight_overrides`). These are the grids the files use, so the trained weights land on them.
    Per-channel scales also survive folding batch norm into the convolution (each output channel is
    multiplied by one constant, which scales its grid with it).
    """

    def __init__(self, per_channel: bool = True, bits: int = 8):
        super().__init__()
        if bits not in WEIGHT_RANGES:
            raise ValueError(f"bits must be one of {sorted(WEIGHT_RANGES)} (the weight types onnxruntime stores), "
                             f"got {bits!r}.")
        self.per_channel = per_channel
        self.bits = bits

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.per_channel:
            max_abs = weight.detach().abs().amax(dim=tuple(range(1, weight.ndim)), keepdim=True)  # (C_out, 1, ...)
        else:
            max_abs = weight.detach().abs().max()
        q_min, q_max = WEIGHT_RANGES[self.bits]
        return fake_quantize(weight, (max_abs / ((q_max - q_min) / 2)).clamp(min=1e-12), 0.0, q_min, q_max)


class ActivationFakeQuant(nn.Module):
    """Asymmetric UINT8 activations: a running min/max (exponential moving average while training) gives
    ``s = (max - min) / 255`` and ``z = round(-min / s)``; the range always contains 0, as in onnxruntime."""

    def __init__(self, momentum: float = 0.01):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("low", torch.tensor(0.0))
        self.register_buffer("high", torch.tensor(0.0))
        self.register_buffer("observed", torch.tensor(False))

    def forward(self, x: torch.Tensor, update: bool = True) -> torch.Tensor:
        if update:
            low, high = x.detach().min().clamp(max=0.0), x.detach().max().clamp(min=0.0)
            if not self.observed:
                self.low.copy_(low)
                self.high.copy_(high)
                self.observed.fill_(True)
            else:
                self.low.lerp_(low, self.momentum)
                self.high.lerp_(high, self.momentum)
        scale, zero_point = affine_parameters(self.low, self.high, 0, 255)
        return fake_quantize(x, scale, zero_point, 0, 255)


@contextlib.contextmanager
def fake_quantization(model: nn.Module, per_channel: bool = True, momentum: float = 0.01, weight_bits: int = 8):
    """Quantization-aware training: inside the block every Conv/Linear weight is fake-quantized (INT8, via
    ``torch.nn.utils.parametrize``) and every Conv/Linear input is fake-quantized (UINT8, via forward pre-hooks).

        with cu.export.fake_quantization(student):
            cu.train.fit(student, loader, loss_fn=kd_step, epochs=1, lr=1e-3)
        # here: hooks removed, weights left on their INT8 grid; export, then quantize_static as usual

    Activation ranges update only while the model is in training mode. On exit the activation
    quantizers are dropped (onnxruntime's calibration measures the ranges again) and the weights are
    left fake-quantized, so ``quantize_static(..., per_channel=True)`` reproduces them exactly.
    ``weight_bits=4`` trains for ``quantize_static(..., weight_type="qint4")``; with ``per_channel=False`` fold
    batch norm first (:func:`fold_batch_norm`), since folding rescales each channel and breaks a per-tensor grid.
    Jacob et al. (2018); Krishnamoorthi (2018), "Quantizing deep convolutional networks for efficient inference".
    """
    from torch.nn.utils import parametrize

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv1d, Conv2d or Linear layer to fake-quantize.")
    if any(parametrize.is_parametrized(m, "weight") for m in layers):
        raise ValueError("the model's weights are already parametrized: nested fake_quantization blocks are not supported.")
    device = next(model.parameters()).device
    handles = []
    for layer in layers:
        parametrize.register_parametrization(layer, "weight", WeightFakeQuant(per_channel, weight_bits))
        observer = ActivationFakeQuant(momentum).to(device)
        handles.append(layer.register_forward_pre_hook(
            lambda module, args, observer=observer: (observer(args[0], update=module.training), *args[1:])))
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
        for layer in layers:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)



# --- batch-norm folding, pruning and the latency decomposition -------------------------------------------------------


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode where each Conv followed by a BatchNorm (inside an ``nn.Sequential``) is one Conv:

        w' = w * gamma / sqrt(var + eps),    b' = (b - mean) * gamma / sqrt(var + eps) + beta    (per output channel)

    and the BatchNorm is ``nn.Identity``. The ONNX exporter and onnxruntime fold the same way, so after this the
    weights PyTorch trains are the weights the file stores: what per-tensor quantization-aware training needs
    (folding multiplies each output channel by its own factor, which keeps a per-channel grid but breaks a
    per-tensor one). Jacob et al. (2018), section 3.2. Raises ``ValueError`` if a BatchNorm is left unfolded
    (one not right after a Conv in the same ``nn.Sequential``): the copy would then not hold the file's weights.
    """
    import copy

    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for container in folded.modules():
        if not isinstance(container, nn.Sequential):
            continue
        names = list(container._modules)
        for conv_name, norm_name in zip(names, names[1:]):
            conv, norm = container._modules[conv_name], container._modules[norm_name]
            if isinstance(conv, (nn.Conv1d, nn.Conv2d)) and isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d)):
                container._modules[conv_name] = fuse_conv_bn_eval(conv, norm)
                container._modules[norm_name] = nn.Identity()
    left = [name for name, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"fold_batch_norm folds a BatchNorm only right after a Conv in an nn.Sequential; {left} "
                         "were left. Fold them by hand with torch.nn.utils.fusion.fuse_conv_bn_eval.")
    return folded


def _weight_layers(model: nn.Module) -> list[nn.Module]:
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv1d, Conv2d or Linear layer.")
    return layers


@contextlib.contextmanager
def magnitude_pruning(model: nn.Module, sparsity: float, keep_first: bool = True):
    """Unstructured magnitude pruning with ``torch.nn.utils.prune``: inside the block, the fraction ``sparsity`` of
    each Conv/Linear layer's weights with the smallest ``|w|`` is zero, through a fixed 0/1 mask:

        w = w_orig * m,   m_i = 0 for the k = round(sparsity * n) smallest |w_orig,i| of the layer, else 1

    Training inside the block (a KD fine-tune: pruning during distillation) updates ``w_orig`` but the masked
    weights stay exactly zero. On exit the masks are made permanent (``prune.remove``): plain weights with zeros.

        with cu.export.magnitude_pruning(student, sparsity=0.8):
            cu.train.fit(student, loader, loss_fn=kd_step, epochs=1)

    Every layer is pruned to the same sparsity (Han et al. 2015, "Learning both Weights and Connections for
    Efficient Neural Networks"), except the first with ``keep_first``: its few weights each read the raw image,
    and pruning them costs the most accuracy per weight (a cnn-29k pruned to 90 % recovered 77 % with it pruned,
    83 % without, after 100 KD steps). The zeros are still stored: a dense ONNX file keeps its size (see
    :func:`gzip_size`).
    """
    from torch.nn.utils import prune

    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1) (the fraction of each layer's weights set to zero), got {sparsity!r}.")
    layers = _weight_layers(model)[1 if keep_first else 0:]
    if not layers:
        raise ValueError(f"{type(model).__name__} has a single Conv/Linear layer: nothing to prune with keep_first=True.")
    if any(prune.is_pruned(layer) for layer in layers):
        raise ValueError("the model is already pruned: nested magnitude_pruning blocks are not supported.")
    for layer in layers:
        prune.l1_unstructured(layer, "weight", amount=float(sparsity))
    try:
        yield model
    finally:
        for layer in layers:
            prune.remove(layer, "weight")


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of the Conv/Linear weights (not biases, not batch norm) that are exactly zero."""
    weights = [layer.weight.detach() for layer in _weight_layers(model)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


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


SWEEP_FILE = Path(__file__).resolve().parent.parent / "results" / "export_sweep.json"
SWEEP_COMMAND = "python -m course_utils.cli.export_sweep"


def load_sweep(path: PathLike | None = None) -> dict[str, Any]:
    """Notebook 06's precomputed sweeps (``results/export_sweep.json``); a clear error says how to make them."""
    from . import report

    return report.load_precomputed(path or SWEEP_FILE, SWEEP_COMMAND,
                                   "a few hours on one CPU core; its docstring runs the sections one after another")


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


def int4_weight_overrides(graph: Any, per_channel: bool) -> dict[str, list[dict[str, Any]]]:
    """onnxruntime ``TensorQuantOverrides`` that give every Conv/Gemm weight of ``graph`` a symmetric 4-bit grid:

        s = max|w| / 7,   q = clamp(round(w / s), -7, 7),   z = 0        (per tensor, or per output channel)

    the 4-bit twin of onnxruntime's INT8 weights (``[-127, 127]``). onnxruntime's default for ``QInt4`` maps
    ``max|w|`` to 7.5 steps and clips the positive side at 7, which moves every grid a little each time a
    model is quantized: weights trained on a 4-bit grid (:class:`WeightFakeQuant`) would not land on it again.
    """
    from onnx import numpy_helper

    initializers = {tensor.name: tensor for tensor in graph.initializer}
    overrides: dict[str, list[dict[str, Any]]] = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
        transposed = any(a.name == "transB" and a.i == 1 for a in node.attribute)
        axis = 0 if node.op_type == "Conv" or transposed else 1  # the output-channel axis
        if per_channel:
            max_abs = np.abs(np.moveaxis(weight, axis, 0)).reshape(weight.shape[axis], -1).max(axis=1)
        else:
            max_abs = np.abs(weight).reshape(1, -1).max(axis=1)
        scales = [float(m / 7) if m > 0 else 1.0 for m in max_abs]
        overrides[node.input[1]] = [{"scale": np.float32(scale), "zero_point": 0} for scale in scales]
        if per_channel:
            overrides[node.input[1]][0]["axis"] = axis
    return overrides


def symmetric_scales(weight: torch.Tensor, per_channel: bool = True, q_max: int = 127) -> torch.Tensor:
    """Symmetric quantization scales ``s = max|w| / q_max`` (zero point 0), as :class:`WeightFakeQuant` uses:
    one per output channel (axis 0; shape ``(C_out,)``) when ``per_channel``, else one for the tensor (shape ``()``).

    Krishnamoorthi (2018), section 2: per-channel scales keep a channel of small weights from being
    rounded to a few levels by another channel's large ones.
    """
    if weight.ndim < 1 or weight.numel() == 0:
        raise ValueError(f"weight must be a non-empty tensor with an output-channel axis, got shape {tuple(weight.shape)}.")
    if per_channel:
        return weight.abs().amax(dim=tuple(range(1, weight.ndim))) / q_max if weight.ndim > 1 else weight.abs() / q_max
    return weight.abs().max() / q_max
