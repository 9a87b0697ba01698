"""Feature distillation runs on images: a cache of the teacher's features, FitNets' two stages, attention transfer.

    hints = cu.images.feature_kd.cache_features(teacher, train_set.images, ["layer2"])       # once, no augmentation
    regressors = [cu.losses.HintRegressor(16, 64)]
    accuracy = cu.images.feature_kd.train_fitnets(student, train_set, test_set, teacher_logits, hints, ["block2"],
                                                  regressors, hint_steps=60, total_steps=252, seed=0)

Notebooks 03 and 04 write the losses themselves and check them against :func:`hint_step` and :func:`at_step`;
``python -m course_utils.cli.feature_sweep`` runs the same functions over more seeds and settings.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import config, hooks, losses, report, train
from . import recipes
from .data import ImageSet

SWEEP_FILE = config.REPO_DIR / "results" / "feature_sweep.json"
SWEEP_COMMAND = "python -m course_utils.cli.feature_sweep"


def load_sweep(path: str | Path | None = None) -> dict:
    """Notebooks 03-04's precomputed comparisons (``results/feature_sweep.json``); a clear error says how to make it."""
    return report.load_precomputed(path or SWEEP_FILE, SWEEP_COMMAND,
                                   "about 35 minutes on one CPU core (its two parts in parallel, one core each: about 18)")


@dataclass(frozen=True)
class LayerMapping:
    """Which student layers (guided) learn from which teacher layers (hints), and how the regressors widen."""

    pairs: tuple[tuple[str, str], ...]  # (student path, teacher path), e.g. (("block2", "layer2"),)
    steps: int = 1  # convolutions per regressor: 1 jumps to the teacher's width, 2 widens progressively
    description: str = ""


# The layer-mapping strategies notebook 03 trains on the deep-thin student (paths of cu.images.models.Student and of
# the teacher).
MAPPINGS: dict[str, LayerMapping] = {
    "direct": LayerMapping((("block2", "layer2"),), description="block2 -> layer2: same depth, same 14 px (FitNets)"),
    "progressive width": LayerMapping((("block2", "layer2"),), steps=2,
                                      description="block2 -> layer2 through a regressor that widens 16 -> 32 -> 64"),
    "depth: 3 student layers per teacher layer": LayerMapping(
        (("block2.relu1", "layer2"), ("block2.relu2", "layer2"), ("block2.relu3", "layer2")),
        description="each of block2's three convs -> layer2"),
    "depth: skip to a deeper hint": LayerMapping(
        (("block2", "layer3"),), description="block2 (14 px) -> layer3 (7 px), layer2 skipped; the regressor pools"),
    "multi-scale (3 depths)": LayerMapping((("block1", "layer1"), ("block2", "layer2"), ("block3", "layer3")),
                                           description="block k -> layer k at 28, 14 and 7 px"),
}


def regressors_for(mapping: LayerMapping, student: nn.Module, teacher_hints: Sequence[torch.Tensor],
                   kernel_size: int = 3) -> list[losses.HintRegressor]:
    """One :class:`cu.losses.HintRegressor` per pair of ``mapping``, sized from the student's maps (one probe
    forward pass) and the cached ``teacher_hints`` (one ``(N, C, H, W)`` per pair); it resizes where H x W differ."""
    if len(teacher_hints) != len(mapping.pairs):
        raise ValueError(f"need one cached teacher map per pair: {len(mapping.pairs)} pairs, {len(teacher_hints)} maps.")
    paths = [s for s, _ in mapping.pairs]
    was_training = student.training
    student.eval()
    with torch.no_grad(), hooks.capture(student, paths) as features:
        run_until(student, torch.zeros(1, 1, 28, 28, device=next(student.parameters()).device), _deepest(student, paths))
    student.train(was_training)
    regressors = []
    for path, hint in zip(paths, teacher_hints):
        shape, size = features[path].shape, tuple(hint.shape[-2:])
        regressors.append(losses.HintRegressor(shape[1], hint.shape[1], None if tuple(shape[-2:]) == size else size,
                                               kernel_size=kernel_size, steps=mapping.steps))
    return regressors


def cache_features(model: nn.Module, images: torch.Tensor, paths: Sequence[str], dtype: torch.dtype = torch.float16,
                   batch_size: int = 500) -> list[torch.Tensor]:
    """``model``'s outputs at ``paths`` for every image, one ``(N, C, H, W)`` tensor per path, stored as ``dtype``.

    Computed once so that a hint costs no teacher forward pass per step. Exact only without data
    augmentation: an augmented image needs the teacher's features of *that* image, so with augmentation
    run the teacher under ``torch.no_grad()`` inside the loss instead. float16 halves the memory; the
    rounding (about 3 significant digits) is far below the hint loss's scale.
    """
    if len(images) == 0:
        raise ValueError("images is empty: pass the (N, 1, 28, 28) training images whose features to cache.")
    return hooks.capture_over(model, images, paths, lambda features: features.to(dtype), batch_size)


class _StopForward(Exception):
    """Raised by :func:`stop_after`'s hook to end a forward pass early."""


@contextmanager
def stop_after(model: nn.Module, path: str) -> Iterator[None]:
    """End every forward pass of ``model`` right after the module at ``path`` (FitNets' stage 1 trains the
    layers up to the guided layer only, so computing the rest would be wasted). Use with :func:`run_until`."""

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        raise _StopForward

    handle = hooks.resolve(model, path).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def run_until(model: nn.Module, images: torch.Tensor, path: str) -> None:
    """Run ``model(images)`` only as far as the module at ``path`` (capture its output with ``cu.hooks.capture``)."""
    with stop_after(model, path):
        try:
            model(images)
        except _StopForward:
            pass


def hint_step(guided_paths: Sequence[str], regressors: Sequence[nn.Module],
              weights: Sequence[float] | None = None) -> train.LossFn:
    """FitNets' stage-1 loss on ``(images, labels, teacher_logits, *teacher_hints)`` batches:
    :func:`cu.losses.multi_scale_hint_loss` between the student's ``guided_paths`` and the cached hints, one
    ``regressor`` per pair. The forward pass stops after the deepest guided layer; labels are never read.
    """
    if len(guided_paths) != len(regressors) or not guided_paths:
        raise ValueError(f"need one regressor per guided path, got {len(guided_paths)} paths and {len(regressors)}.")

    def step(model: nn.Module, batch: tuple) -> torch.Tensor:
        images, teacher_hints = batch[0], batch[3:3 + len(guided_paths)]
        with hooks.capture(model, guided_paths) as student_features:
            run_until(model, images, _deepest(model, guided_paths))
        return losses.multi_scale_hint_loss([student_features[p] for p in guided_paths],
                                            [h.float() for h in teacher_hints], regressors, weights)

    return step


def _deepest(model: nn.Module, paths: Sequence[str]) -> str:
    """The path among ``paths`` whose module comes last in ``model.named_modules()`` (registration order)."""
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    missing = [p for p in paths if p not in order]
    if missing:
        hooks.resolve(model, missing[0])  # raises the error that lists the valid paths
    return max(paths, key=order.__getitem__)


def train_fitnets(student: nn.Module, train_set: ImageSet, test_set: ImageSet, teacher_logits: torch.Tensor,
                  teacher_hints: Sequence[torch.Tensor], guided_paths: Sequence[str], regressors: Sequence[nn.Module],
                  *, hint_steps: int, total_steps: int, seed: int, lr: float | None = None,
                  second_stage: train.LossFn | None = None) -> float:
    """FitNets' two stages (Romero et al. 2015) in ``total_steps`` optimizer steps; returns the test accuracy.

    Stage 1 (``hint_steps``): the layers up to the deepest guided layer and the ``regressors`` learn to
    predict the teacher's hints (:func:`hint_step`). Stage 2 (the remaining steps): the whole student, KD with
    the course recipe (``cu.images.recipes.kd_step()``; FitNets' own stage 2 is KD too), or ``second_stage``.
    Both stages use the course's training recipe (AdamW, batch 64, a cosine per stage); ``lr`` overrides its rate.
    """
    if not 0 < hint_steps < total_steps:
        raise ValueError(f"hint_steps must be between 1 and total_steps - 1 = {total_steps - 1}, got {hint_steps}.")
    loader = train_set.loader(batch_size=recipes.TRAINING["batch_size"], seed=seed, extra=(teacher_logits, *teacher_hints))
    train.fit(student, loader, epochs=-(-hint_steps // len(loader)), max_steps=hint_steps,
              loss_fn=hint_step(guided_paths, regressors), lr=lr or recipes.TRAINING["lr"],
              extra_modules=list(regressors), seed=seed, progress=False)
    rest = total_steps - hint_steps
    steps_per_epoch = -(-len(train_set) // recipes.TRAINING["batch_size"])
    return recipes.train_student(student, train_set, test_set, epochs=-(-rest // steps_per_epoch), max_steps=rest,
                                 seed=seed, loss_fn=second_stage or recipes.kd_step(), teacher_logits=teacher_logits,
                                 lr=lr or recipes.TRAINING["lr"])


def at_step(student_paths: Sequence[str], beta: float = 1000.0, kd: bool = True, p: float = 2.0) -> train.LossFn:
    """Attention transfer (Zagoruyko and Komodakis 2017) on ``(images, labels, teacher_logits, *teacher_maps)``
    batches, with the teacher's maps cached (``cu.schedule.cache_attention_maps``), one per student path:

        L = L_KD (course recipe; or cross-entropy with ``kd=False``) + beta / 2 * sum_j mean((Q_s^j - Q_t^j)^2)
    """

    def step(model: nn.Module, batch: tuple) -> torch.Tensor:
        images, labels, teacher_logits, *teacher_maps = batch
        with hooks.capture(model, student_paths) as student_features:
            student_logits = model(images)
        if kd:
            loss = losses.kd_loss(student_logits, teacher_logits, labels, **recipes.KD)
        else:
            loss = nn.functional.cross_entropy(student_logits, labels)
        for path, teacher_map in zip(student_paths, teacher_maps):
            loss = loss + beta / 2 * (losses.attention_map(student_features[path], p) - teacher_map).pow(2).mean()
        return loss

    return step


def activation_scales(model: nn.Module, images: torch.Tensor, paths: Sequence[str]) -> dict[str, float]:
    """The standard deviation of ``model``'s output at each path on ``images`` (eval mode, no gradients):
    how far a signal survives the depth of an untrained or trained network."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), hooks.capture(model, paths, detach=True) as features:
        model(images)
    model.train(was_training)
    return {path: features[path].float().std().item() for path in paths}
