"""Bearing vibration from physics: a seeded generator of labelled windows, its envelope spectrum, a recording loader.

A rotating machine's accelerometer sees (McFadden and Smith 1984; Randall and Antoni 2011, "Rolling element
bearing diagnostics - a tutorial", MSSP 25):

    x(t) = sum_k A_k cos(2 pi k f_r t + phi_k)                       shaft harmonics (unbalance, misalignment)
         + sum_j a_j q(t_j) h(t - t_j)                               bearing defect impacts
         + n(t)                                                      sensor noise

with impacts at ``t_j = t_0 + sum_{i<j} T (1 + eps_i)`` (period ``T = 1 / f_d``, a 1-2 % random slip), each
ringing at a structural resonance ``h(t) = exp(-zeta 2 pi f_n t) sin(2 pi f_n sqrt(1 - zeta^2) t)`` and
weighted by ``q``: constant for an outer-race defect (it sits in the load zone), ``(1 + m cos 2 pi f_r t)``
for an inner-race defect (it turns with the shaft through the load zone), ``(1 + m cos 2 pi f_c t)`` and a
random strength for a ball defect (it turns with the cage and only sometimes hits). The defect rates follow
from the shaft frequency ``f_r`` and the bearing geometry (``n`` balls of diameter ``d`` on pitch diameter
``D``, contact angle ``phi``):

    BPFO = n f_r / 2 (1 - d/D cos phi)        BPFI = n f_r / 2 (1 + d/D cos phi)
    BSF  = D f_r / (2 d) (1 - (d/D cos phi)^2)    FTF = f_r / 2 (1 - d/D cos phi)

A ball defect strikes both races once per spin, so its impacts repeat at ``2 BSF``.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import validate
from ..data import make_loader

FAULTS = ("healthy", "outer", "inner", "ball")
SEVERITIES = ("mild", "severe")
CLASS_NAMES = ("healthy",) + tuple(f"{fault}-{severity}" for fault in FAULTS[1:] for severity in SEVERITIES)


@dataclass(frozen=True)
class BearingGeometry:
    """A deep-groove ball bearing; the defaults are the SKF 6205 of the CWRU bearing data set (inches -> mm)."""

    n_balls: int = 9
    ball_diameter_mm: float = 7.94
    pitch_diameter_mm: float = 39.04
    contact_angle_deg: float = 0.0


def defect_frequencies(shaft_hz: float | np.ndarray, geometry: BearingGeometry = BearingGeometry()) -> dict:
    """The characteristic defect frequencies (Hz) for shaft frequency ``f_r`` (see the module docstring).

    Returns ``{"shaft", "ftf", "bpfo", "bpfi", "bsf"}``; e.g. the 6205 at 30 Hz: BPFO = 107.5 Hz, BPFI = 162.5 Hz.
    """
    shaft_hz = np.asarray(shaft_hz, dtype=np.float64)
    validate.all_finite(shaft_hz, "shaft_hz")
    if np.any(shaft_hz <= 0):
        raise ValueError(f"shaft_hz must be positive (revolutions per second = rpm / 60), got {shaft_hz}.")
    ratio = geometry.ball_diameter_mm / geometry.pitch_diameter_mm * math.cos(math.radians(geometry.contact_angle_deg))
    n = geometry.n_balls
    return {"shaft": shaft_hz, "ftf": shaft_hz / 2 * (1 - ratio), "bpfo": n * shaft_hz / 2 * (1 - ratio),
            "bpfi": n * shaft_hz / 2 * (1 + ratio),
            "bsf": geometry.pitch_diameter_mm / (2 * geometry.ball_diameter_mm) * shaft_hz * (1 - ratio**2)}


def impact_rate(fault: str, shaft_hz: float | np.ndarray, geometry: BearingGeometry = BearingGeometry()) -> np.ndarray:
    """How often a ``fault`` ("outer", "inner", "ball") strikes, in Hz: BPFO, BPFI or 2 BSF."""
    freqs = defect_frequencies(shaft_hz, geometry)
    rates = {"outer": freqs["bpfo"], "inner": freqs["bpfi"], "ball": 2 * freqs["bsf"]}
    if fault not in rates:
        raise ValueError(f"fault must be one of {tuple(rates)}, got {fault!r}.")
    return rates[fault]


@dataclass(frozen=True)
class MachineConfig:
    """The operating envelope and the physics constants of the simulated machine."""

    sample_rate: int = 12_000            # Hz, as the CWRU drive-end recordings
    window: int = 2048                   # samples per example (~171 ms: 2.5 to 7 shaft turns)
    speed_hz: tuple[float, float] = (15.0, 40.0)      # shaft speed range (900 to 2400 rpm)
    load: tuple[float, float] = (0.0, 1.0)            # fraction of the rated load
    resonance_hz: tuple[float, float] = (2500.0, 4000.0)  # structural resonance the impacts excite
    damping: tuple[float, float] = (0.04, 0.08)       # damping ratio zeta of that resonance
    # impact amplitude (g) before the load factor 0.85-1.15: mild stays below 1.9 g, severe above 2 g
    impact: dict = field(default_factory=lambda: {"mild": (1.0, 1.6), "severe": (2.4, 4.0)})
    noise_std: tuple[float, float] = (0.1, 0.25)     # white sensor noise (g): a stud-mounted accelerometer
    slip: float = 0.015                  # random jitter of the impact period (rolling elements slip)
    geometry: BearingGeometry = BearingGeometry()


@dataclass
class VibrationSet:
    """Windows of vibration with their labels and operating conditions.

    ``signals`` is ``(N, 1, window)`` float32 (acceleration in g), ``labels`` ``(N,)`` indexes
    :data:`CLASS_NAMES`; ``speed_hz``, ``load``, ``fault_hz`` (impact rate, 0 when healthy) and
    ``resonance_hz`` are ``(N,)`` float tensors.
    """

    signals: torch.Tensor
    labels: torch.Tensor
    speed_hz: torch.Tensor
    load: torch.Tensor
    fault_hz: torch.Tensor
    resonance_hz: torch.Tensor
    sample_rate: int
    class_names: tuple[str, ...] = CLASS_NAMES

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | np.ndarray) -> VibrationSet:
        """The examples at ``index`` (a boolean mask or integer positions)."""
        index = torch.as_tensor(index)
        return VibrationSet(self.signals[index], self.labels[index], self.speed_hz[index], self.load[index],
                            self.fault_hz[index], self.resonance_hz[index], self.sample_rate, self.class_names)

    def loader(self, batch_size: int = 128, shuffle: bool = True, seed: int = 0,
               extra: Sequence[torch.Tensor] = ()) -> DataLoader:
        """A DataLoader of ``(signals, labels, *extra)`` batches (``extra``: per-window tensors such as a teacher's
        logits); see ``cu.data.make_loader``: the same seed gives the same batch order."""
        return make_loader(self.signals, self.labels, *extra, batch_size=batch_size, shuffle=shuffle, seed=seed)


def _impact_train(rate_hz: np.ndarray, speed_hz: np.ndarray, cage_hz: np.ndarray, fault: np.ndarray,
                  amplitude: np.ndarray, length: int, sample_rate: int, slip: float,
                  rng: np.random.Generator) -> np.ndarray:
    """``(B, length)`` impulses: ``a_j q(t_j)`` placed at ``round(t_j * fs)`` (zero rows for healthy)."""
    batch = len(rate_hz)
    train = np.zeros((batch, length))
    active = rate_hz > 0
    if not active.any():
        return train
    period = 1.0 / np.where(active, rate_hz, 1.0)                       # (B,) seconds; healthy rows are masked below
    duration = length / sample_rate
    count = int(np.ceil(duration / period[active].min() * (1 + 4 * slip))) + 2
    jitter = 1.0 + slip * rng.standard_normal((batch, count))
    start = -rng.uniform(0, 1, (batch, 1)) * period[:, None]           # first impact before the window
    times = start + np.cumsum(period[:, None] * jitter, axis=1) - period[:, None] * jitter[:, :1]  # (B, count)
    shaft_phase = rng.uniform(0, 2 * np.pi, (batch, 1))
    depth = 0.8  # modulation depth m of the load zone
    weight = np.ones_like(times)
    inner, ball = fault[:, None] == 2, fault[:, None] == 3
    weight = np.where(inner, (1 + depth * np.cos(2 * np.pi * speed_hz[:, None] * times + shaft_phase)) / (1 + depth),
                      weight)
    weight = np.where(ball, (1 + depth * np.cos(2 * np.pi * cage_hz[:, None] * times + shaft_phase)) / (1 + depth)
                      * rng.uniform(0.6, 1.0, times.shape), weight)
    position = np.round(times * sample_rate).astype(np.int64)
    keep = active[:, None] & (position >= 0) & (position < length)
    rows = np.broadcast_to(np.arange(batch)[:, None], position.shape)
    np.add.at(train, (rows[keep], position[keep]), (amplitude[:, None] * weight)[keep])
    return train


def generate(labels: np.ndarray | list[int], config: MachineConfig = MachineConfig(), seed: int = 0,
             speed_hz: np.ndarray | None = None, load: np.ndarray | None = None) -> VibrationSet:
    """Simulate one window per entry of ``labels`` (indices into :data:`CLASS_NAMES`), deterministic by ``seed``.

    Speed and load are drawn uniformly from ``config`` unless given (one value per window, or a scalar).
    The impacts are an impulse train (:func:`impact_rate`, slip, load-zone modulation) convolved,
    via the FFT, with each window's damped resonance; the shaft adds harmonics 1x-3x growing with load.
    """
    labels = validate.integer_labels(np.asarray(labels), "labels", len(CLASS_NAMES),
                                     hint=f"Use the positions in cu.vibration.CLASS_NAMES {CLASS_NAMES}.")
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class indices, got shape {labels.shape}.")
    for given, name in ((speed_hz, "speed_hz"), (load, "load")):
        if given is not None:
            validate.all_finite(np.asarray(given, dtype=np.float64), name)
    if load is not None and np.any(np.asarray(load) < 0):
        raise ValueError(f"load must be >= 0 (a fraction of the rated load), got {load}.")
    rng = np.random.default_rng(seed)
    batch, length, fs = len(labels), config.window, config.sample_rate
    speed = rng.uniform(*config.speed_hz, batch) if speed_hz is None else np.broadcast_to(speed_hz, (batch,)).astype(float)
    load_ = rng.uniform(*config.load, batch) if load is None else np.broadcast_to(load, (batch,)).astype(float)
    fault = (labels + 1) // 2                    # 0 healthy, 1 outer, 2 inner, 3 ball
    severe = (labels > 0) & (labels % 2 == 0)    # classes 2, 4, 6 are the severe ones
    t = (np.arange(length) / fs).astype(np.float32)  # (L,)

    # shaft harmonics: 1x (unbalance), 2x and 3x (misalignment), all growing with load
    harmonics = np.arange(1, 4)
    amp = (rng.uniform(0.1, 0.3, (batch, 3)) / harmonics * (0.5 + load_[:, None])).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, (batch, 3)).astype(np.float32)
    omega_shaft = (2 * np.pi * harmonics[None, :, None] * speed[:, None, None]).astype(np.float32)  # (B, 3, 1)
    shaft = np.einsum("bk,bkl->bl", amp, np.cos(omega_shaft * t + phase[..., None]))

    # defect impacts: rate from the geometry, strength from the severity and the load
    freqs = defect_frequencies(speed, config.geometry)
    rate = np.select([fault == 1, fault == 2, fault == 3], [freqs["bpfo"], freqs["bpfi"], 2 * freqs["bsf"]], 0.0)
    lo = np.where(severe, config.impact["severe"][0], config.impact["mild"][0])
    hi = np.where(severe, config.impact["severe"][1], config.impact["mild"][1])
    strength = rng.uniform(lo, hi) * (0.85 + 0.3 * load_)  # a loaded bearing strikes harder
    impulses = _impact_train(rate, speed, freqs["ftf"], fault, strength, length, fs, config.slip, rng)

    # each impact rings at the structure's resonance: convolve with h(t) (zero-padded FFT, no wrap-around)
    resonance = rng.uniform(*config.resonance_hz, batch)
    zeta = rng.uniform(*config.damping, batch)
    omega = (2 * np.pi * resonance[:, None]).astype(np.float32)
    tk = t[:256]  # the ringing has decayed below 1e-3 after 256 samples (> 6 time constants 1 / (zeta omega))
    kernel = np.exp(-zeta[:, None] * omega * tk) * np.sin(omega * np.sqrt(1 - zeta[:, None] ** 2) * tk)  # (B, 256)
    n_fft = 2 * length
    ringing = np.fft.irfft(np.fft.rfft(impulses, n_fft) * np.fft.rfft(kernel, n_fft), n_fft)[:, :length]

    noise = rng.uniform(*config.noise_std, (batch, 1)).astype(np.float32) * rng.standard_normal((batch, length), np.float32)
    signals = (shaft + ringing + noise).astype(np.float32)
    as_float = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32))
    return VibrationSet(torch.from_numpy(signals)[:, None, :], torch.from_numpy(labels), as_float(speed),
                        as_float(load_), as_float(rate), as_float(resonance), fs)


def make_dataset(n_per_class: int, config: MachineConfig = MachineConfig(), seed: int = 0) -> VibrationSet:
    """A balanced, shuffled set: ``n_per_class`` windows of each of the 7 classes (deterministic by ``seed``)."""
    n_per_class = validate.integer(n_per_class, "n_per_class", minimum=1)
    labels = np.repeat(np.arange(len(CLASS_NAMES)), n_per_class)
    labels = np.random.default_rng(seed + 10_000).permutation(labels)
    return generate(labels, config, seed)


def envelope_spectrum(signal: np.ndarray | torch.Tensor, sample_rate: float,
                      band: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Squared-envelope spectrum, the classic bearing diagnostic (Randall and Antoni 2011, section 3):

        x_b = bandpass(x, band);  e(t) = |x_b(t) + i H[x_b](t)|^2;  S(f) = |FFT(e - mean e)| / N

    ``H`` is the Hilbert transform (the analytic signal is built in the frequency domain). Returns
    ``(frequencies_hz, magnitude)`` over the last axis; impacts at rate ``f_d`` give peaks at ``k f_d``.
    """
    x = np.asarray(signal, dtype=np.float64)
    validate.non_empty(x, "signal", hint="Pass at least one sample.")
    validate.all_finite(x, "signal", hint="Fix or cut the gaps before the spectrum.")
    sample_rate = validate.in_range(sample_rate, "sample_rate", 0.0, None, low_open=True)
    n = x.shape[-1]
    spectrum = np.fft.fft(x, axis=-1)
    freqs = np.fft.fftfreq(n, 1.0 / sample_rate)
    analytic_gain = np.zeros(n)
    analytic_gain[freqs > 0] = 2.0            # keep positive frequencies (doubled), drop negative ones
    analytic_gain[0] = 1.0
    if band is not None:
        lo, hi = band
        if not 0 <= lo < hi <= sample_rate / 2:
            raise ValueError(f"band must satisfy 0 <= low < high <= sample_rate / 2 = {sample_rate / 2}, got {band}.")
        analytic_gain[(freqs < lo) | (freqs > hi)] = 0.0
    envelope = np.abs(np.fft.ifft(spectrum * analytic_gain, axis=-1)) ** 2
    envelope = envelope - envelope.mean(axis=-1, keepdims=True)
    return np.fft.rfftfreq(n, 1.0 / sample_rate), np.abs(np.fft.rfft(envelope, axis=-1)) / n


# --- a learner's own recording -------------------------------------------------------------------------------


def save_recording(path: str | Path, signal: np.ndarray, sample_rate: float) -> Path:
    """Write a 1-D recording as ``.npz`` (arrays ``signal`` and ``sample_rate``) or ``.csv`` (see :func:`load_recording`)."""
    path = Path(path)
    signal = np.asarray(signal, dtype=np.float64)
    if signal.ndim != 1:
        raise ValueError(f"signal must be one channel, shape (T,), got {signal.shape}: save one channel per file.")
    validate.non_empty(signal, "signal", hint="There is nothing to save.")
    validate.all_finite(signal, "signal", hint="load_recording would refuse the file: fix or cut the gaps first.")
    sample_rate = validate.in_range(sample_rate, "sample_rate", 0.0, None, low_open=True)
    if path.suffix == ".npz":
        np.savez(path, signal=signal, sample_rate=np.float64(sample_rate))
    elif path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            handle.write(f"# sample_rate={sample_rate}\n")
            csv.writer(handle).writerows([[f"{v:.8g}"] for v in signal])
    else:
        raise ValueError(f"use a .npz or .csv file name, got {path.name!r}.")
    return path


def load_recording(path: str | Path, sample_rate: float | None = None) -> tuple[np.ndarray, float]:
    """Read one accelerometer channel; return ``(signal (T,) float64, sample_rate)``.

    Formats: ``.npz`` with arrays ``signal`` (shape (T,) or (T, 1)) and ``sample_rate`` (a scalar, Hz);
    or ``.csv`` with one value per line and a first line ``# sample_rate=12000``. Pass ``sample_rate``
    to insist on the rate your model was trained at: a different rate raises (resample the recording
    first: the defect frequencies are in Hz, a model sees samples).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no recording at {path}: check the path (it is resolved from {Path.cwd()}).")
    if path.suffix == ".npz":
        with np.load(path) as archive:
            missing = {"signal", "sample_rate"} - set(archive.files)
            if missing:
                raise ValueError(f"{path.name} lacks the array(s) {sorted(missing)}: save it with "
                                 "np.savez(path, signal=x, sample_rate=fs) or cu.vibration.save_recording.")
            signal, rate = np.asarray(archive["signal"], dtype=np.float64), float(archive["sample_rate"])
    elif path.suffix == ".csv":
        with path.open() as handle:
            header = handle.readline().strip()
            if not header.startswith("# sample_rate="):
                raise ValueError(f"{path.name}: the first line must be '# sample_rate=<Hz>', got {header[:40]!r}.")
            rate = _csv_number(header.split("=", 1)[1], path, 1, "the sample rate")
            rows = [(line, row) for line, row in enumerate(csv.reader(handle), start=2) if row]
        wide = [(line, row) for line, row in rows if len(row) != 1]
        if wide:
            raise ValueError(f"{path.name}, line {wide[0][0]}: expected one value per line (one channel), found "
                             f"{len(wide[0][1])} columns: save one channel per file.")
        signal = np.array([_csv_number(row[0], path, line, "a sample") for line, row in rows])
    else:
        raise ValueError(f"unsupported file type {path.suffix!r}: use .npz or .csv (see cu.vibration.load_recording).")
    if signal.ndim == 2 and signal.shape[1] == 1:
        signal = signal[:, 0]
    if signal.ndim != 1:
        raise ValueError(f"{path.name}: signal must be one channel, shape (T,) or (T, 1), got {signal.shape}: "
                         "select the channel you want (e.g. signal[:, 0]) and save it again.")
    if signal.size == 0:
        raise ValueError(f"{path.name} holds no samples: record (or export) the signal again.")
    if not rate > 0:
        raise ValueError(f"{path.name}: sample_rate must be positive, got {rate}.")
    if sample_rate is not None and not math.isclose(rate, sample_rate, rel_tol=1e-6):
        raise ValueError(f"{path.name} is sampled at {rate:g} Hz but {sample_rate:g} Hz was expected: resample it "
                         f"(e.g. by {sample_rate / rate:.4g}x) before windowing, a model trained at one rate "
                         "misreads another.")
    if not np.isfinite(signal).all():
        raise ValueError(f"{path.name}: the signal holds {np.count_nonzero(~np.isfinite(signal))} NaN/inf values: "
                         "fix or cut the gaps before windowing.")
    return signal, rate


def _csv_number(text: str, path: Path, line: int, what: str) -> float:
    """``float(text)``, with an error that names the file and the line."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{path.name}, line {line}: {text.strip()[:40]!r} is not a number ({what} was expected): "
                         "fix or delete that line.") from None


def to_windows(signal: np.ndarray, window: int, hop: int | None = None) -> torch.Tensor:
    """Cut a 1-D recording into ``(N, 1, window)`` float32 windows every ``hop`` samples (default: no overlap)."""
    signal = np.asarray(signal)
    window = validate.integer(window, "window", minimum=1)
    hop = window if hop is None else validate.integer(hop, "hop", minimum=1)
    if signal.ndim != 1:
        raise ValueError(f"signal must be 1-D (T,), got shape {signal.shape}.")
    if window < 1 or hop < 1:
        raise ValueError(f"window and hop must be positive, got window={window}, hop={hop}.")
    if len(signal) < window:
        raise ValueError(f"the recording has {len(signal)} samples, fewer than one window of {window}: record longer.")
    starts = np.arange(0, len(signal) - window + 1, hop)
    windows = np.stack([signal[s:s + window] for s in starts]).astype(np.float32)
    return torch.from_numpy(windows)[:, None, :]


# --- figures ------------------------------------------------------------------------------------------------


def plot_window(signal: np.ndarray | torch.Tensor, sample_rate: float, fault_hz: float | None = None,
                band: tuple[float, float] | None = (2000.0, 5000.0), title: str = "", max_hz: float = 600.0):
    """Two panels: the waveform (first 200 ms) and its squared-envelope spectrum, dashed lines at ``k * fault_hz``."""
    import matplotlib.pyplot as plt

    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    freqs, magnitude = envelope_spectrum(x, sample_rate, band)
    fig, (ax_time, ax_env) = plt.subplots(1, 2, figsize=(11, 2.8))
    shown = x[:int(sample_rate * 0.2)]  # at most the first 200 ms: impacts stay visible
    ax_time.plot(np.arange(len(shown)) / sample_rate * 1000, shown, lw=0.6)
    ax_time.set(xlabel="time (ms)", ylabel="acceleration (g)", title=title or "waveform")
    keep = freqs <= max_hz
    ax_env.plot(freqs[keep], magnitude[keep], lw=0.9)
    if fault_hz:
        for k in range(1, int(max_hz // fault_hz) + 1):
            ax_env.axvline(k * fault_hz, color="tab:red", ls="--", lw=0.8, label="k x impact rate" if k == 1 else None)
        ax_env.legend(loc="upper right")
    ax_env.set(xlabel="frequency (Hz)", ylabel="|FFT of envelope^2|", title="envelope spectrum")
    fig.tight_layout()
    return fig
