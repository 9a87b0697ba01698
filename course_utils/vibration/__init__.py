"""The vibration domain of notebook 07: simulated bearing vibration, its envelope spectrum, and the 1-D models.

``cu.vibration.make_dataset(...)`` gives a :class:`VibrationSet` (with ``.loader(...)``), ``cu.vibration.create(name)``
a model of :data:`CONFIGS`; ``data`` holds the physics (the generator, the envelope spectrum, a learner's own
recordings), ``models`` the fixed spectral front end and the small CNNs. No vibration teacher is shipped: notebook
07 trains its own in about a minute (:func:`load_teacher` says how).
"""

from __future__ import annotations

from typing import NoReturn

from ..checkpoints import CheckpointError
from . import data, models
from .data import (
    CLASS_NAMES,
    FAULTS,
    SEVERITIES,
    BearingGeometry,
    MachineConfig,
    VibrationSet,
    defect_frequencies,
    envelope_spectrum,
    generate,
    impact_rate,
    load_recording,
    make_dataset,
    plot_window,
    save_recording,
    to_windows,
)
from .models import CONFIGS, CNN1d, CNN1dConfig, SpectralFrontEnd, as_2d, create, multiply_accumulates


def load_teacher() -> NoReturn:
    """There is no shipped vibration teacher: this always raises :class:`cu.checkpoints.CheckpointError` saying how
    to get one (the same API as ``cu.images.load_teacher`` and ``cu.language.load_teacher``, honestly empty).

    The simulated data cost nothing to regenerate and ``vib-teacher`` trains in about a minute on one CPU core,
    so notebook 07 trains it in front of the learner instead of loading a checkpoint.
    """
    raise CheckpointError(
        "No vibration teacher checkpoint is shipped: notebook 07 trains its own (about a minute on one CPU core). "
        "Train one the same way: train_set = cu.vibration.make_dataset(150, seed=0); "
        "teacher = cu.vibration.create('vib-teacher', seed=0); "
        "cu.train.fit(teacher, train_set.loader(batch_size=64, seed=0), epochs=8, lr=3e-3, seed=0).")


__all__ = ["CLASS_NAMES", "CNN1d", "CNN1dConfig", "CONFIGS", "FAULTS", "SEVERITIES", "BearingGeometry", "MachineConfig",
           "SpectralFrontEnd", "VibrationSet", "as_2d", "create", "data", "defect_frequencies", "envelope_spectrum",
           "generate", "impact_rate", "load_recording", "load_teacher", "make_dataset", "models",
           "multiply_accumulates", "plot_window", "save_recording", "to_windows"]
