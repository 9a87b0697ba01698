"""Quantization-aware training and pruning: fake-quant modules, batch-norm folding, magnitude pruning.

    with cu.export.fake_quantization(student):                      # weights on their INT8 grid while training
        cu.train.fit(student, loader, loss_fn=kd_step, epochs=1)
    with cu.export.magnitude_pruning(student, sparsity=0.8):        # 80 % of each layer's weights held at zero
        cu.train.fit(student, loader, loss_fn=kd_step, epochs=1)

The grids are the ones :mod:`.quantize` writes (symmetric INT8 or 4-bit weights, UINT8 activations), so what is
trained here lands on the file's integers.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .. import validate

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



# --- batch-norm folding and pruning -----------------------------------------------------------------------------------


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
