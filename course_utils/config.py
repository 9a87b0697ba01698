"""Course-wide settings: the one quick-mode flag, paths, seeds and the compute device.

``COURSE_QUICK=1`` is read here and nowhere else. Notebooks derive their epochs, subset
sizes and repeat counts from :func:`pick`, so CI can execute every notebook quickly
without anything patching the notebooks' source.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import torch

from . import validate

T = TypeVar("T")

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
DATASETS_DIR = REPO_DIR / "datasets"  # shipped data, when running from a checkout
WEIGHTS_DIR = PACKAGE_DIR / "weights"  # shipped checkpoints and their model cards

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def quick_mode() -> bool:
    """True when the environment variable ``COURSE_QUICK`` is 1 (or true/yes/on); False when 0 (false/no/off) or unset.

    Any other value is refused: a typo must not silently run the long default mode (or the short one).
    """
    value = os.environ.get("COURSE_QUICK", "0").strip().lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(f"COURSE_QUICK={os.environ['COURSE_QUICK']!r} is not understood: set it to 1 for quick mode "
                         "or 0 for the default mode (true/false, yes/no, on/off also work), or unset it.")
    return value in _TRUE


def pick(default: T, quick: T) -> T:
    """Return ``quick`` in quick mode and ``default`` otherwise.

    Example: ``epochs = cu.config.pick(default=8, quick=1)``.
    """
    return quick if quick_mode() else default


def seeds(n_default: int = 3, n_quick: int = 2) -> list[int]:
    """The seeds a comparison runs over: ``0 .. n-1`` (fewer in quick mode)."""
    n_default = validate.integer(n_default, "n_default", minimum=1, hint="A comparison needs at least one seed.")
    n_quick = validate.integer(n_quick, "n_quick", minimum=1, hint="A comparison needs at least one seed.")
    return list(range(pick(n_default, n_quick)))


def device(prefer: str | None = None) -> torch.device:
    """The compute device: ``prefer`` if given, else CUDA, then Apple's MPS, then the CPU."""
    if prefer is not None:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe() -> dict[str, object]:
    """A small report of the environment: versions, device, threads and mode."""
    import platform

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device()),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "quick_mode": quick_mode(),
    }
