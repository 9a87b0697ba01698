"""What the sweep programs share: their seeds and the few-label data of notebooks 03-05 (not a program)."""

from __future__ import annotations

import argparse

import torch

from ..images import ImageSet, data, models


def sweep_seeds(parser: argparse.ArgumentParser, count: int) -> list[int]:
    """The precomputed sweeps' seeds, ``100, 101, ...`` (never the notebooks' live 0, 1, 2); at least two, for a spread."""
    if count < 2:
        parser.error("--seeds must be at least 2 (a spread needs two values)")
    return [100 + i for i in range(count)]


def few_label_data(train_subset: int) -> tuple[ImageSet, ImageSet, torch.Tensor]:
    """``train_subset`` stratified training images (seed 0, as in the notebooks), the full test split, and the
    shipped teacher's cached logits for those training images (exact: no augmentation)."""
    train_set = data.load_fashion_mnist("train", subset=train_subset, seed=0)
    return train_set, data.load_fashion_mnist("test"), models.load_teacher_logits("train")[train_set.index]
