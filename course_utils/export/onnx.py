"""ONNX export and its checks: one self-contained file with a card, onnxruntime sessions, parity with PyTorch.

    path = cu.export.export_onnx(student, "artifacts/student.onnx", images[:2])
    report = cu.export.parity(student, path, test.images, test.labels)       # max |diff|, agreement

Every file written here or by :mod:`.quantize` gets a card (``<name>.onnx.json``: its sha256, size and how it was
made), checked on every load. Also the wrappers that let a domain's code run an exported file: :class:`OnnxLM`
(a session that looks like a language model) and :func:`front_end_nodes` (the fixed front end of a vibration
model's graph). Errors are explicit: a missing or corrupt file (:class:`OnnxFileError`), a model the exporter
cannot trace (:class:`ExportError`), an input whose shape or dtype the session does not take (:class:`InputError`).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import validate

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


# --- model cards ----------------------------------------------------------------------------------------------------


def card_path(path: PathLike) -> Path:
    """Where the card of the ONNX file at ``path`` lives: ``<name>.onnx.json`` next to it."""
    path = Path(path)
    return path.with_name(path.name + CARD_SUFFIX)


def write_card(path: PathLike, **details: Any) -> Path:
    """Write the ONNX file's card: its sha256 and size (checked on every load) and ``details`` (how it was made)."""
    import json

    import onnx
    import onnxruntime

    from ..checkpoints import sha256

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

    from ..checkpoints import sha256

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


# --- export ---------------------------------------------------------------------------------------------------------


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


# --- sessions -------------------------------------------------------------------------------------------------------


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


# --- wrappers for the domains' exported models ----------------------------------------------------------------------


class OnnxLM(nn.Module):
    """An onnxruntime session that looks like a language model (``cu.language.GPT``: ``.cfg``,
    ``forward(idx) -> logits``), so that ``cu.language.generate``, ``cu.language.bits_per_char`` and
    ``cu.language.addition_accuracy`` measure the exported file unchanged. ``cfg`` is the exported model's
    configuration (its ``vocab_size`` and ``block_size`` are read)."""

    def __init__(self, session: Any, cfg: Any):
        super().__init__()
        self.session, self.cfg = session, cfg
        self.input_name = session.get_inputs()[0].name

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        from ..language.models import check_ids  # the language model's own check of token ids

        check_ids(idx, self.cfg.vocab_size)
        return torch.from_numpy(self.session.run(None, {self.input_name: idx.numpy().astype("int64")})[0])


def front_end_nodes(graph: Any) -> list[str]:
    """Names of the ONNX nodes of a vibration model's spectral front end (``cu.vibration.CNN1d``): every node up to
    the BatchNorm of ``norm``."""
    excluded = []
    for node in graph.node:  # topological order: the front end comes first, up to the BatchNorm of "norm"
        excluded.append(node.name)
        if node.op_type == "BatchNormalization" and any(name.startswith("norm.") for name in node.input):
            return excluded
    raise ValueError("the graph has no BatchNormalization reading 'norm.*': export a cu.vibration.CNN1d.")
