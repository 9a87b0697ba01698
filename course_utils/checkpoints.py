"""Checkpoints and their model cards, for every domain: file digests, the card, the sha256 check, and the errors.

A shipped checkpoint is trusted only after its sha256 matches the one its model card records (the card is written
by the program that trained it, under ``course_utils/cli/``). Domain-free: the image, vibration and language
subpackages all load their teachers through :func:`read_card` and :func:`verified`.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import torch
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint or its model card is missing, corrupt or does not match."""


class UnknownModelError(KeyError):
    """A model name that the domain's ``CONFIGS`` does not hold (every domain's ``create`` raises it)."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


def sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(path: str | Path, fix: str) -> dict:
    """A model card (JSON) as a dict; a missing or unreadable card raises :class:`CheckpointError` ending in ``fix``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"The model card {path} does not exist. {fix}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"The model card {path} is not valid JSON ({error}). {fix}") from error


def verified(path: str | Path, expected_sha256: str, what: str, fix: str) -> Path:
    """``path`` once its sha256 equals ``expected_sha256`` (from the model card); otherwise :class:`CheckpointError`
    naming ``what`` (e.g. "teacher checkpoint") and ending in ``fix`` (how to restore or retrain it)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"The {what} {path} does not exist. {fix}")
    actual = sha256(path)
    if actual != expected_sha256:
        raise CheckpointError(f"The {what} {path} does not match its model card: sha256 {actual[:16]}..., "
                              f"card says {expected_sha256[:16]}... (a tampered or half-written file). {fix}")
    return path


def serialized_size(model: nn.Module) -> int:
    """Bytes of the model's ``state_dict`` saved with ``torch.save`` (what a checkpoint weighs)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
