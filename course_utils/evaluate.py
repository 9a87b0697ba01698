"""Evaluation: logits in batches, accuracy, per-class accuracy, the confusion matrix, and summaries over seeds."""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from . import config, validate


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameters (a tied weight counts once), all or only those with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``model(images)`` in eval mode, batch by batch, returned on the CPU as ``(N, classes)``."""
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be (N, C, H, W) (or 1-D signals (N, C, L)), got shape {tuple(images.shape)}.")
    validate.non_empty(images, "images", hint="Pass at least one example (an empty subset?).")
    validate.all_finite(images, "images")
    batch_size = validate.integer(batch_size, "batch_size", minimum=1)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device if any(True for _ in model.parameters()) else config.device()
    outputs = [model(images[i:i + batch_size].to(device)).cpu() for i in range(0, len(images), batch_size)]
    model.train(was_training)
    return torch.cat(outputs)


def _check_pair(predictions: torch.Tensor, labels: torch.Tensor) -> None:
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {tuple(predictions.shape)} and labels {tuple(labels.shape)} differ in shape.")


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Fraction of ``images`` whose arg-max prediction equals ``labels``."""
    validate.same_length(images, labels, ("images", "labels"))
    predictions = predict_logits(model, images, batch_size).argmax(1)
    _check_pair(predictions, labels.cpu())
    return (predictions == labels.cpu()).float().mean().item()


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """``(num_classes, num_classes)`` counts: row = true class, column = predicted class.

    Predictions and labels must be class indices in ``[0, num_classes - 1]``: anything else would be counted in
    the wrong cell, so it is refused.
    """
    num_classes = validate.integer(num_classes, "num_classes", minimum=1)
    _check_pair(predictions, labels)
    validate.non_empty(predictions, "predictions", hint="Pass at least one prediction to count.")
    hint = "Predictions are class indices (logits.argmax(1)), and num_classes counts every class."
    predictions = validate.integer_labels(predictions, "predictions", num_classes, hint=hint)
    labels = validate.integer_labels(labels, "labels", num_classes, hint=hint)
    index = labels * num_classes + predictions
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Accuracy of each true class: the confusion matrix's diagonal over its row sums.

    A class with no example in ``labels`` has no accuracy: its entry is NaN, with a warning naming it.
    """
    matrix = confusion_matrix(predictions, labels, num_classes).double()
    counts = matrix.sum(1)
    absent = (counts == 0).nonzero().flatten().tolist()
    if absent:
        warnings.warn(f"classes {absent} have no example in labels: their accuracy is undefined (NaN). Evaluate on "
                      "a set that holds every class (e.g. a stratified subset).", stacklevel=2)
    return matrix.diag() / counts.where(counts > 0, torch.tensor(float("nan"), dtype=counts.dtype))




def seed_summary(values: Sequence[float]) -> dict[str, object]:
    """Mean, sample standard deviation (0 for one value) and the per-seed values themselves."""
    values = [float(validate.finite(v, "each seed's value")) for v in values]
    if not values:
        raise ValueError("seed_summary needs at least one value (one per seed), got none.")
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``n - 1`` in the denominator; 0 for one value) of per-seed values."""
    summary = seed_summary(values)
    return summary["mean"], summary["std"]


def summarise(results: Mapping[str, Sequence[float]], teacher_accuracy: float,
              baseline: str = "scratch") -> dict[str, dict[str, object]]:
    """Per method: :func:`seed_summary` of its per-seed accuracies plus the gap it closes against ``baseline``'s mean,
    ``gap_closed = (mean - mean_baseline) / (teacher - mean_baseline)`` (Hinton et al. 2015's students are judged
    by how much of the teacher-student gap they recover; see :func:`gap_closed`)."""
    if baseline not in results:
        raise KeyError(f"the baseline {baseline!r} has no results; the methods are {sorted(results)}.")
    base = seed_summary(results[baseline])["mean"]
    return {name: {**(summary := seed_summary(values)), "gap_closed": gap_closed(summary["mean"], base, teacher_accuracy)}
            for name, values in results.items()}


def gap_closed(student_accuracy: float, scratch_accuracy: float, teacher_accuracy: float) -> float:
    """Fraction of the teacher-student gap a method closes: ``(acc - scratch) / (teacher - scratch)``.

    0 means no better than the scratch student, 1 means as good as the teacher; negative means worse
    than scratch (never clipped).
    """
    for value, name in ((student_accuracy, "student_accuracy"), (scratch_accuracy, "scratch_accuracy"),
                        (teacher_accuracy, "teacher_accuracy")):
        validate.finite(value, name)
    if teacher_accuracy <= scratch_accuracy:
        raise ValueError(f"the teacher ({teacher_accuracy:.4f}) must beat the scratch student "
                         f"({scratch_accuracy:.4f}) for a gap to exist.")
    return (student_accuracy - scratch_accuracy) / (teacher_accuracy - scratch_accuracy)


@dataclass(frozen=True)
class Comparison:
    """A method against its baseline over seeds: the difference of means and its standard error.

    ``standard_error = sqrt(s_b^2 / n_b + s_m^2 / n_m)`` (Welch). The method ``won`` when the
    difference, in the better direction, exceeds twice that standard error; ``lost`` when it is
    below minus twice; otherwise the seeds cannot tell the two apart.
    """

    baseline_mean: float
    method_mean: float
    difference: float  # method - baseline, in the metric's units (signed so that > 0 is better)
    standard_error: float
    won: bool
    lost: bool

    @property
    def verdict(self) -> str:
        return "win" if self.won else "loss" if self.lost else "within noise"

    def describe(self, method: str, baseline: str, scale: float = 100.0, unit: str = "points") -> str:
        """One line for a notebook: ``"KD vs scratch: +1.13 points (2 standard errors 0.80) -> win"``; ``scale``
        turns fractions into the printed unit (100: accuracy in [0, 1] -> percentage points)."""
        return (f"{method} vs {baseline}: {scale * self.difference:+.2f} {unit} "
                f"(2 standard errors {2 * scale * self.standard_error:.2f}) -> {self.verdict}")


def compare(baseline: Sequence[float], method: Sequence[float], higher_is_better: bool = True) -> Comparison:
    """Compare per-seed values of a method with its baseline (at least 2 values each)."""
    baseline = [float(validate.finite(v, "each baseline value")) for v in baseline]
    method = [float(validate.finite(v, "each method value")) for v in method]
    if len(baseline) < 2 or len(method) < 2:
        raise ValueError(f"compare needs at least 2 seeds on each side to estimate the noise, got "
                         f"{len(baseline)} baseline and {len(method)} method values.")
    sign = 1.0 if higher_is_better else -1.0
    difference = sign * (statistics.fmean(method) - statistics.fmean(baseline))
    se = math.sqrt(statistics.variance(baseline) / len(baseline) + statistics.variance(method) / len(method))
    return Comparison(statistics.fmean(baseline), statistics.fmean(method), difference, se,
                      won=difference > 2 * se, lost=difference < -2 * se)
