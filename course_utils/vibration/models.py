"""1-D models for vibration windows: a fixed envelope-spectrum front end, then a small CNN (notebook 07).

The front end is the classic bearing diagnostic (Randall and Antoni 2011) written with plain tensor ops, so it
trains, exports to ONNX and quantises with the rest of the model. Every learned stage is a hookable module path
(``frontend``, ``stem``, ``block1``...; ``head`` last), so the feature and attention losses of notebooks 03-04
apply unchanged: 1-D features ``(B, C, L)`` become ``(B, C, 1, L)`` with :func:`as_2d`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..checkpoints import UnknownModelError


class SpectralFrontEnd(nn.Module):
    """Raw window ``(B, 1, L)`` -> ``(B, 2, F)`` log spectra, no learned parameters:

        h = g * x                                   g: a fixed FIR band-pass (windowed sinc) around the resonances
        e = avgpool_d(h^2),  s = avgpool_d(x)        squared envelope and the low band, decimated by d
        E(f) = log(|DFT(w (e - mean e))|(f) + eps),  S(f) likewise     w a Hann window

    Channel 0 is the squared-envelope spectrum (impact rates: BPFO, BPFI, 2 BSF and harmonics), channel 1 the
    low-frequency spectrum (the shaft lines 1x-3x, which tell the speed). The DFT is a fixed matrix product
    (``cos`` and ``sin`` bases in one buffer), so ONNX export and INT8 quantisation see an ordinary MatMul.
    """

    def __init__(self, window: int = 2048, decimation: int = 16, band: tuple[float, float] = (0.15, 0.42),
                 taps: int = 31, eps: float = 1e-3):
        super().__init__()
        if window < 2 * decimation:
            raise ValueError(f"window ({window}) must hold at least two decimated samples (decimation {decimation}).")
        if not 0 < band[0] < band[1] < 0.5:
            raise ValueError(f"band is (low, high) as fractions of the sample rate in (0, 0.5), got {band}.")
        self.window, self.decimation, self.eps = window, decimation, eps
        k = torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2           # windowed-sinc band-pass (Hamming)
        ideal = 2 * band[1] * torch.sinc(2 * band[1] * k) - 2 * band[0] * torch.sinc(2 * band[0] * k)
        self.register_buffer("bandpass", (ideal * torch.hamming_window(taps, periodic=False, dtype=torch.float64))
                             .float().view(1, 1, taps))                          # 0.15-0.42 fs = 1.8-5 kHz at 12 kHz
        n = (window - 1) // decimation                       # decimated length
        self.n_bins = n // 2 + 1
        t = torch.arange(n, dtype=torch.float64)[:, None]
        f = torch.arange(self.n_bins, dtype=torch.float64)[None, :]
        hann = torch.hann_window(n, periodic=False, dtype=torch.float64)[:, None]
        basis = torch.cat([torch.cos(2 * math.pi * t * f / n), -torch.sin(2 * math.pi * t * f / n)], 1) * hann
        self.register_buffer("basis", basis.float())            # (n, 2 F): windowed DFT, real and imaginary parts

    def bin_hz(self, sample_rate: float) -> float:
        """Frequency step between two output bins, in Hz."""
        return sample_rate / self.decimation / ((self.window - 1) // self.decimation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, L)
        if x.ndim != 3 or x.shape[1] != 1 or x.shape[2] != self.window:
            raise ValueError(f"expected windows of shape (B, 1, {self.window}), got {tuple(x.shape)}: cut the "
                             f"recording with cu.vibration.to_windows(signal, {self.window}).")
        n = self.basis.shape[0]
        high = F.conv1d(x, self.bandpass, padding=self.bandpass.shape[-1] // 2)[..., 1:]  # (B, 1, L - 1)
        envelope = F.avg_pool1d(high * high, self.decimation)[..., :n]               # (B, 1, n)
        low = F.avg_pool1d(x[..., 1:], self.decimation)[..., :n]                     # (B, 1, n)
        bands = torch.cat([envelope, low], 1)                                        # (B, 2, n)
        bands = bands - bands.mean(-1, keepdim=True)
        spectrum = bands @ self.basis                                                # (B, 2, 2 F)
        real, imag = spectrum[..., :self.n_bins], spectrum[..., self.n_bins:]
        return torch.log(torch.sqrt(real * real + imag * imag) + self.eps)           # (B, 2, F)


@dataclass(frozen=True)
class CNN1dConfig:
    """Stage ``i`` is ``Conv1d(kernels[i], stride=strides[i]) -> BatchNorm -> ReLU`` with ``widths[i]`` channels.

    The stages run over the front end's frequency bins; the head sees them flattened (a line's position is
    what identifies a fault: the ratio of an impact rate to the shaft speed), through ``hidden`` units if > 0.
    """

    widths: tuple[int, ...] = (8, 16, 16)
    kernels: tuple[int, ...] = (5, 5, 5)
    strides: tuple[int, ...] = (1, 2, 2)    # 63 frequency bins -> 63 -> 32 -> 16 positions
    hidden: int = 0                         # units of an extra hidden layer in the head (0: linear head)
    window: int = 2048                      # samples per window (171 ms at 12 kHz)
    num_classes: int = 7


class ConvStage(nn.Sequential):
    """``Conv1d -> BatchNorm1d -> ReLU``; "same" padding, so the length shrinks by the stride (rounded up)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__(nn.Conv1d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
                         nn.BatchNorm1d(out_channels), nn.ReLU())


class CNN1d(nn.Module):
    """``frontend`` (fixed), ``norm`` (BatchNorm of the 2 spectra), ``stem``, ``block1``..., flatten, ``head``."""

    def __init__(self, cfg: CNN1dConfig = CNN1dConfig()):
        super().__init__()
        if not len(cfg.widths) == len(cfg.kernels) == len(cfg.strides) >= 2:
            raise ValueError(f"widths, kernels and strides need the same length (>= 2), got {cfg}.")
        self.cfg = cfg
        self.frontend = SpectralFrontEnd(cfg.window)
        self.norm = nn.BatchNorm1d(2)
        in_channels, length = 2, self.frontend.n_bins
        for index, (width, kernel, stride) in enumerate(zip(cfg.widths, cfg.kernels, cfg.strides)):
            self.add_module("stem" if index == 0 else f"block{index}", ConvStage(in_channels, width, kernel, stride))
            in_channels, length = width, (length + 2 * (kernel // 2) - kernel) // stride + 1
        features = in_channels * length
        self.head = (nn.Linear(features, cfg.num_classes) if cfg.hidden == 0 else
                     nn.Sequential(nn.Linear(features, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.num_classes)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, L)
        if x.ndim != 3 or x.shape[1] != 1:
            raise ValueError(f"expected windows of shape (B, 1, L), got {tuple(x.shape)}.")
        x = self.norm(self.frontend(x))  # (B, 2, F) log spectra
        for index in range(len(self.cfg.widths)):
            x = getattr(self, "stem" if index == 0 else f"block{index}")(x)  # (B, C_i, F / prod(strides[:i+1]))
        return self.head(x.flatten(1))  # (B, num_classes)


CONFIGS = {
    "vib-teacher": CNN1dConfig(widths=(32, 64, 64), kernels=(7, 5, 5), strides=(1, 2, 2), hidden=128),  # ~170k
    "vib-student": CNN1dConfig(widths=(8, 16, 16), kernels=(5, 5, 5), strides=(1, 2, 2)),               # ~3k
    "vib-student-xs": CNN1dConfig(widths=(2, 2, 2), kernels=(5, 5, 5), strides=(1, 2, 2)),              # too small
}


def create(name: str, seed: int | None = None) -> CNN1d:
    """A fresh 1-D model by name (``vib-teacher``, ``vib-student``, ``vib-student-xs``); ``seed`` fixes the init.

    An unknown name raises ``cu.checkpoints.UnknownModelError`` (a ``KeyError``) listing the known ones.
    """
    if name not in CONFIGS:
        raise UnknownModelError(f"unknown vibration model {name!r}; choose one of {sorted(CONFIGS)}.")
    if seed is not None:
        torch.manual_seed(seed)
    return CNN1d(CONFIGS[name])


def as_2d(features: torch.Tensor) -> torch.Tensor:
    """``(B, C, L)`` -> ``(B, C, 1, L)``: ``cu.losses.at_loss`` and ``hint_loss`` then see a 1-pixel-high image."""
    if features.ndim != 3:
        raise ValueError(f"expected 1-D features (B, C, L), got shape {tuple(features.shape)}.")
    return features.unsqueeze(2)


def multiply_accumulates(model: CNN1d) -> int:
    """Multiply-accumulates of one forward pass on one window: the front end's DFT, the convolutions, the head.

    The DFT counts ``n * 2F`` per band (a plain matrix product; an FFT would need ``~n log2 n``); the
    squaring, pooling and logarithms are not counted.
    """
    n, bins = model.frontend.basis.shape
    total, in_channels, length = 2 * n * bins, 2, model.frontend.n_bins
    for width, kernel, stride in zip(model.cfg.widths, model.cfg.kernels, model.cfg.strides):
        length = (length + 2 * (kernel // 2) - kernel) // stride + 1
        total += width * in_channels * kernel * length
        in_channels = width
    return total + sum(layer.weight.numel() for layer in model.head.modules() if isinstance(layer, nn.Linear))
