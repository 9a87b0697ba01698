"""course_utils: the plumbing behind the "Distilling for the Edge" notebooks.

Import it as ``import course_utils as cu`` and call with the prefix (``cu.losses.kd_loss``).
Importing has no side effects: nothing is loaded, trained or downloaded until asked.

The layers (``tests/test_layout.py`` checks them from the source):

- the domain-free core, flat at the top: ``config``, ``validate``, ``data``, ``checkpoints``, ``losses``, ``hooks``,
  ``train`` (the one training loop), ``schedule``, ``evaluate``, ``report``, ``plotting``, ``widgets``, ``checks``;
- one subpackage per domain, each with ``CONFIGS``, ``create(name, seed=)``, ``load_teacher()`` and a data set with
  ``.loader(...)``: ``images`` (Fashion-MNIST, notebooks 00-06), ``vibration`` (07), ``language`` (08);
- ``export``: ONNX, quantization, QAT and measurement, for every domain;
- the course layer: ``exercises`` and ``solutions`` (the learner's exercises), ``colab``;
- ``cli``: the programs that regenerate shipped artefacts (``python -m course_utils.cli.<name>``), never imported here.
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
