"""Evaluation: logits in batches, accuracy, per-class accuracy and the confusion matrix."""

from __future__ import annotations

import torch
from torch import nn

from . import config


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``model(images)`` in eval mode, batch by batch, returned on the CPU as ``(N, classes)``."""
    if images.ndim not in (3, 4):
        raise ValueError(f"images must be (N, C, H, W) (or 1-D signals (N, C, L)), got shape {tuple(images.shape)}.")
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
    predictions = predict_logits(model, images, batch_size).argmax(1)
    _check_pair(predictions, labels.cpu())
    return (predictions == labels.cpu()).float().mean().item()


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """``(num_classes, num_classes)`` counts: row = true class, column = predicted class."""
    _check_pair(predictions, labels)
    index = labels.long() * num_classes + predictions.long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Accuracy of each true class: the confusion matrix's diagonal over its row sums."""
    matrix = confusion_matrix(predictions, labels, num_classes).double()
    return matrix.diag() / matrix.sum(1).clamp(min=1)
