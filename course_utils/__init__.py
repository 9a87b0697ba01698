"""course_utils: the plumbing behind the "Distilling for the Edge" notebooks.

Import it as ``import course_utils as cu`` and call with the prefix (``cu.losses.kd_loss``).
Importing has no side effects: nothing is loaded, trained or downloaded until asked.
"""

from . import (
    checkpoints,
    checks,
    config,
    data,
    evaluate,
    exercises,
    export,
    hooks,
    images,
    language,
    losses,
    plotting,
    report,
    schedule,
    train,
    validate,
    vibration,
    widgets,
)

__all__ = ["checkpoints", "checks", "config", "data", "evaluate", "exercises", "export", "hooks", "images", "language",
           "losses", "plotting", "report", "schedule", "train", "validate", "vibration", "widgets"]
__version__ = "0.1.0"
