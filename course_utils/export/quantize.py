"""Quantization with onnxruntime: dynamic INT8 (no calibration) and static INT8 or 4-bit weights (calibrated).

    int8 = cu.export.quantize_static(path, "artifacts/student_int8.onnx", calibration_images, per_channel=True)
    int8 = cu.export.quantize_dynamic(path, "artifacts/student_int8.onnx")    # weights only; activations at run time

Static quantization measures activation ranges on a calibration set (``minmax``, ``entropy`` or ``percentile``);
an empty calibration set is a ``ValueError``. Each quantized file gets a card naming its FP32 source.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import validate
from .onnx import (
    REEXPORT,
    ArrayLike,
    OnnxFileError,
    PathLike,
    _to_numpy,
    card_path,
    check_input,
    front_end_nodes,
    load_session,
    write_card,
)


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
    from ..checkpoints import sha256

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


def quantize_after_front_end(fp32_path: PathLike, int8_path: PathLike, calibration_inputs: torch.Tensor,
                             per_channel: bool = True) -> Path:
    """Static INT8 (QDQ, min-max calibration) of the learned layers only; the spectral front end stays FP32.

    :func:`quantize_static` with the front end's nodes (:func:`front_end_nodes`) excluded: 8 bits over
    the squared envelope's range (a severe fault is 1000 times louder than a healthy machine) would erase the
    quiet windows. On a controller the front end is a float or fixed-point DSP routine (e.g. CMSIS-DSP), the
    CNN the INT8 part.
    """
    return quantize_static(fp32_path, int8_path, calibration_inputs, method="minmax", per_channel=per_channel,
                           nodes_to_exclude=front_end_nodes)
