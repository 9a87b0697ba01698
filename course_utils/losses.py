"""Distillation losses, one small function each, with the formula and the paper in the docstring.

Convention (as in Hinton et al. 2015 and RepDistiller): ``alpha`` weights the soft
(teacher) term and ``1 - alpha`` the hard-label cross-entropy.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import validate


def _check_temperature(temperature: float) -> float:
    return validate.in_range(temperature, "temperature", 0.0, None, low_open=True,
                             hint="T = 1 is the plain softmax, larger T softens it (typical values 2 to 8).")


def _check_logits(logits: torch.Tensor, name: str) -> int:
    """Refuse empty, non-finite or single-class logits; return the number of classes."""
    classes = validate.class_axis(logits, name)
    validate.non_empty(logits, name, hint="Pass a batch with at least one example.")
    validate.all_finite(logits, name)
    return classes


def _warn_if_probabilities(teacher_logits: torch.Tensor) -> None:
    """Warn when every row is non-negative and sums to 1: softmax outputs passed where logits belong."""
    if bool(teacher_logits.min() >= 0) and bool((teacher_logits.sum(-1) - 1).abs().max() < 1e-3):
        warnings.warn("teacher_logits look like probabilities (every row is >= 0 and sums to 1): kd_loss applies "
                      "softmax(t / T) itself, so softened probabilities give a different, flatter target. Pass the "
                      "teacher's raw logits (its output before softmax).", stacklevel=3)


def soft_targets(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax with temperature over the last axis: ``p_i = exp(z_i / T) / sum_j exp(z_j / T)``.

    Hinton, Vinyals and Dean (2015), "Distilling the Knowledge in a Neural Network", eq. (1).
    T = 1 is the ordinary softmax; T -> infinity tends to the uniform distribution.
    """
    temperature = _check_temperature(temperature)
    validate.class_axis(logits, "logits")
    validate.all_finite(logits, "logits")
    return F.softmax(logits / temperature, dim=-1)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor | None,
            temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """Knowledge-distillation loss (Hinton et al. 2015), averaged over the batch:

        (1 - alpha) * CE(targets, softmax(s))  +  alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

    ``alpha`` weights the soft term (the teacher); ``1 - alpha`` weights the hard labels.
    The T^2 factor keeps the soft term's gradients, which scale as 1/T^2, comparable across
    temperatures. Logits are ``(..., C)``: any leading axes (e.g. sequence positions) are
    averaged over like the batch. ``targets`` may be ``None`` only when ``alpha == 1``
    (a transfer set without labels).
    """
    temperature = _check_temperature(temperature)
    alpha = validate.in_range(alpha, "alpha", 0.0, 1.0, hint="alpha is the weight of the soft (teacher) term.")
    validate.matching_shapes(student_logits, teacher_logits, ("student_logits", "teacher_logits"),
                             hint="Same batch, same classes.")
    classes = _check_logits(student_logits, "student_logits")
    _check_logits(teacher_logits, "teacher_logits")
    _warn_if_probabilities(teacher_logits)
    student_flat = student_logits.reshape(-1, classes)
    teacher_flat = teacher_logits.reshape(-1, classes).detach()
    soft = F.kl_div(F.log_softmax(student_flat / temperature, dim=-1),
                    F.log_softmax(teacher_flat / temperature, dim=-1),
                    reduction="batchmean", log_target=True) * temperature**2
    if alpha == 1.0 and targets is None:
        return soft
    if targets is None:
        raise ValueError(f"targets are None but alpha = {alpha} < 1 gives the hard labels weight "
                         f"{1 - alpha:.2f}: pass the labels, or alpha = 1.0 for a transfer set without labels.")
    if targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer class indices (torch.long), got dtype {targets.dtype}; "
                        "soft (probability) targets belong in teacher_logits.")
    if targets.shape != student_logits.shape[:-1]:
        raise ValueError(f"targets must have shape {tuple(student_logits.shape[:-1])} (logits without the "
                         f"class axis), got {tuple(targets.shape)}.")
    if targets.numel() and (targets.min() < 0 or targets.max() >= classes):
        raise ValueError(f"targets must be class indices in [0, {classes - 1}], got values from "
                         f"{targets.min().item()} to {targets.max().item()}.")
    hard = F.cross_entropy(student_flat, targets.reshape(-1))
    return (1.0 - alpha) * hard + alpha * soft


class HintAdapter(nn.Sequential):
    """FitNets' regressor: maps the student's guided layer to the teacher's hint width.

    A ``kernel_size`` x ``kernel_size`` convolution followed by batch norm (Romero et al. 2015
    use a convolutional regressor; 1x1 is the common choice when resolutions match).
    """

    def __init__(self, student_channels: int, teacher_channels: int, kernel_size: int = 1):
        student_channels = validate.integer(student_channels, "student_channels", minimum=1)
        teacher_channels = validate.integer(teacher_channels, "teacher_channels", minimum=1)
        kernel_size = validate.integer(kernel_size, "kernel_size", minimum=1)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (1, 3, 5 ...) to keep the resolution, got {kernel_size}.")
        super().__init__(nn.Conv2d(student_channels, teacher_channels, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(teacher_channels))


def align_spatial(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(B, C, H, W)`` features to ``size``: average pooling to shrink, bilinear to grow."""
    size = tuple(validate.integer(side, "size (height, width)", minimum=1) for side in size)
    if tuple(features.shape[-2:]) == tuple(size):
        return features
    if features.shape[-2] >= size[0] and features.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(features, size)
    return F.interpolate(features, size=size, mode="bilinear", align_corners=False)


def _check_features(student_features: torch.Tensor, teacher_features: torch.Tensor) -> None:
    if student_features.ndim != 4 or teacher_features.ndim != 4:
        raise ValueError(f"features must be (B, C, H, W), got student {tuple(student_features.shape)} "
                         f"and teacher {tuple(teacher_features.shape)}.")
    if student_features.shape[0] != teacher_features.shape[0]:
        raise ValueError(f"batch sizes differ: student {student_features.shape[0]}, teacher {teacher_features.shape[0]}.")
    for features, name in ((student_features, "student_features"), (teacher_features, "teacher_features")):
        validate.non_empty(features, name, hint="Pass a batch with at least one example.")
        validate.all_finite(features, name)


def hint_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
              adapter: nn.Module | None = None, align: bool = False) -> torch.Tensor:
    """FitNets' hint loss (Romero et al. 2015): ``mean((r(v_guided) - u_hint)^2)``.

    The paper writes ``1/2 ||u_h - r(v_g)||^2``; like most implementations we average over
    every element (batch, channels, positions), so the scale does not depend on the layer size.
    ``adapter`` is the regressor ``r`` (e.g. :class:`HintAdapter`) for a width mismatch;
    ``align=True`` resizes the student's maps to the teacher's resolution.
    """
    _check_features(student_features, teacher_features)
    student_channels, teacher_channels = student_features.shape[1], teacher_features.shape[1]
    fix = (f"Use adapter=cu.losses.HintAdapter({student_channels}, {teacher_channels}) (student channels, teacher "
           "channels) and train it with the student.")
    if adapter is not None:
        conv = next((m for m in adapter.modules() if isinstance(m, nn.Conv2d)), None)
        if conv is not None and conv.in_channels != student_channels:
            raise ValueError(f"the adapter takes {conv.in_channels} input channels but the student's features have "
                             f"{student_channels}. {fix}")
        student_features = adapter(student_features)
    if student_features.shape[1] != teacher_channels:
        what = "the adapter's output" if adapter is not None else "student"
        raise ValueError(f"channel mismatch: {what} {student_features.shape[1]}, teacher {teacher_channels}. {fix}")
    if student_features.shape[-2:] != teacher_features.shape[-2:]:
        if not align:
            raise ValueError(f"resolution mismatch: student {tuple(student_features.shape[-2:])}, teacher "
                             f"{tuple(teacher_features.shape[-2:])}. Pass align=True to resize the student's maps, "
                             "or pair layers of the same resolution.")
        student_features = align_spatial(student_features, tuple(teacher_features.shape[-2:]))
    return F.mse_loss(student_features, teacher_features.detach())


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Activation-based attention map (Zagoruyko and Komodakis 2017), ``(B, H*W)``:

        Q = vec(mean_c |A_c|^p) / || vec(mean_c |A_c|^p) ||_2

    i.e. the channel mean of ``|A|^p``, flattened and L2-normalised per example.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (B, C, H, W), got shape {tuple(features.shape)}.")
    p = validate.in_range(p, "p", 0.0, None, low_open=True, hint="The paper uses p = 2.")
    attention = F.normalize(features.abs().pow(p).mean(dim=1).flatten(1), dim=1)  # (B, H*W)
    validate.all_finite(attention, f"the attention map (p = {p:g})",
                        hint="|A|^p overflowed or the features hold NaN: use a smaller p (the paper uses 2).")
    return attention


def at_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, p: float = 2.0,
            align: bool = False) -> torch.Tensor:
    """Attention-transfer loss (Zagoruyko and Komodakis 2017): ``mean((Q_s - Q_t)^2)``.

    The mean runs over batch and positions, as in the authors' code, which then weights the
    sum over layers by ``beta / 2`` with ``beta = 1000``. Channel counts may differ (the map
    averages them away); resolutions must match unless ``align=True``.
    """
    _check_features(student_features, teacher_features)
    if student_features.shape[-2:] != teacher_features.shape[-2:]:
        if not align:
            raise ValueError(f"resolution mismatch: student {tuple(student_features.shape[-2:])}, teacher "
                             f"{tuple(teacher_features.shape[-2:])}. Pass align=True or pair layers of the same resolution.")
        student_features = align_spatial(student_features, tuple(teacher_features.shape[-2:]))
    return (attention_map(student_features, p) - attention_map(teacher_features.detach(), p)).pow(2).mean()


class Resize(nn.Module):
    """Resize ``(B, C, H, W)`` maps to a fixed ``size`` with :func:`align_spatial` (pool to shrink, bilinear to grow)."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be (height, width) with both >= 1, got {tuple(size)}.")
        self.size = (int(size[0]), int(size[1]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return align_spatial(features, self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}"


def progressive_widths(student_channels: int, teacher_channels: int, steps: int) -> list[int]:
    """The widths a regressor passes through from ``student_channels`` to ``teacher_channels`` in ``steps`` convs,
    spaced geometrically: ``c_k = round(c_s * (c_t / c_s)^(k / steps))``, e.g. 16 -> 32 -> 64 for 2 steps."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (1 is a single conv straight to the teacher's width), got {steps}.")
    if student_channels < 1 or teacher_channels < 1:
        raise ValueError(f"channel counts must be >= 1, got student {student_channels}, teacher {teacher_channels}.")
    ratio = teacher_channels / student_channels
    middle = [round(student_channels * ratio ** (k / steps)) for k in range(1, steps)]
    return [student_channels, *middle, teacher_channels]


class HintRegressor(nn.Sequential):
    """FitNets' convolutional regressor ``r`` (Romero et al. 2015), for a student and a teacher map that differ
    in width and, possibly, in height and width:

        r(v) = conv_n(relu(... relu(conv_1(resize(v)))))      (B, C_s, H_s, W_s) -> (B, C_t, H_t, W_t)

    ``teacher_size`` adds a :class:`Resize` first when the maps differ in H x W (average pooling to shrink,
    bilinear interpolation to grow). ``steps > 1`` widens progressively through :func:`progressive_widths`
    (16 -> 32 -> 64) instead of in one jump. The convolutions carry a bias and no batch norm: a batch norm
    after the regressor lets it fit the teacher's per-channel mean without the student, and on a student
    without normalisation it collapsed the student's early layers (measured in ``python -m course_utils.cli.feature_sweep``).
    Like every adapter it is trained with the student and thrown away afterwards.
    """

    def __init__(self, student_channels: int, teacher_channels: int, teacher_size: tuple[int, int] | None = None,
                 kernel_size: int = 3, steps: int = 1):
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (1, 3, 5 ...) to keep the resolution, got {kernel_size}.")
        widths = progressive_widths(student_channels, teacher_channels, steps)
        layers: dict[str, nn.Module] = {}
        if teacher_size is not None:
            layers["resize"] = Resize(teacher_size)
        for k, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
            if k > 1:
                layers[f"relu{k - 1}"] = nn.ReLU()
            layers[f"conv{k}"] = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2)
        super().__init__(OrderedDict(layers))


def multi_scale_hint_loss(student_features: Sequence[torch.Tensor], teacher_features: Sequence[torch.Tensor],
                          regressors: Sequence[nn.Module | None], weights: Sequence[float] | None = None) -> torch.Tensor:
    """FitNets' hint loss over several depths (Romero et al. 2015 hint one middle layer; hinting two or three
    stages at once is the usual multi-scale extension):

        L = sum_j w_j * mean((r_j(v_j) - u_j)^2),      w_j = 1 / J by default (so L stays on one hint's scale)

    ``student_features[j]`` (guided), ``teacher_features[j]`` (hint) and ``regressors[j]`` (or ``None``) form pair j.
    """
    count = len(student_features)
    if count == 0 or len(teacher_features) != count or len(regressors) != count:
        raise ValueError(f"need one teacher map and one regressor per student map and at least one pair, got "
                         f"{count} student, {len(teacher_features)} teacher maps and {len(regressors)} regressors.")
    weights = [1.0 / count] * count if weights is None else list(weights)
    if len(weights) != count or any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be {count} finite numbers >= 0, one per pair, got {weights}.")
    return sum(w * hint_loss(s, t, adapter=r) for w, s, t, r in zip(weights, student_features, teacher_features, regressors))


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Entropy in nats over the last axis, ``H(p) = -sum_i p_i log p_i``, with ``0 log 0 = 0``; shape ``(...)``.

    0 for a one-hot distribution, ``log C`` for the uniform one over ``C`` classes (Shannon 1948).
    """
    if probabilities.ndim < 1:
        raise ValueError("probabilities need a class axis (the last one), got a 0-d tensor.")
    if not torch.isfinite(probabilities).all() or (probabilities < 0).any():
        raise ValueError("probabilities must be finite and >= 0 (e.g. cu.losses.soft_targets(logits, T)); "
                         "pass probabilities, not logits or log-probabilities.")
    return -torch.special.xlogy(probabilities, probabilities).sum(dim=-1)


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``KL(p || q)`` per position, ``(...)``: ``p = softmax(t / T)`` (teacher), ``q = softmax(s / T)`` (student),

        KL(p || q) = sum_v p_v (log p_v - log q_v),  summed over the last (class or vocabulary) axis only.

    No ``T^2`` factor and no mean: :func:`kd_loss`'s soft term is ``T^2`` times its average over positions
    (Hinton et al. 2015; per token in Kim and Rush 2016's word-level distillation).
    """
    _check_temperature(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits {tuple(student_logits.shape)} and teacher_logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape.")
    log_p = F.log_softmax(teacher_logits / temperature, dim=-1)
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)
