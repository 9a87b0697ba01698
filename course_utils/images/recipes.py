"""The image students' training and distillation recipes, and the one-call runs notebook 02 and its sweep share.

    student = cu.images.create(cu.images.models.DEFAULT_STUDENT, seed=0)
    accuracy = cu.images.recipes.train_student(student, train_set, test_set, loss_fn=cu.images.recipes.kd_step(),
                                               epochs=4, seed=0)

Two constants hold the recipes the course uses from notebook 02 on:

- :data:`TRAINING`: AdamW with a cosine schedule, batch 64, learning rate 5e-3 (chosen by measurement in
  ``python -m course_utils.cli.kd_sweep``'s capacity section: every student of at least 5k parameters beats
  logistic regression trained the same way).
- :data:`KD`: the temperature and alpha picked by notebook 02's temperature x alpha sweep (its best cell over
  three seeds; a test checks that the constant and ``results/kd_sweep.json`` agree).

A notebook that deviates from either says why, with its numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

from .. import config, data, evaluate, losses, report, schedule, train
from .data import ImageSet

SWEEP_FILE = config.REPO_DIR / "results" / "kd_sweep.json"
SWEEP_COMMAND = "python -m course_utils.cli.kd_sweep"
TRAINING = MappingProxyType({"batch_size": 64, "lr": 5e-3})
KD = MappingProxyType({"temperature": 8.0, "alpha": 0.75})


def load_sweep(path: str | Path | None = None) -> dict:
    """Notebook 02's precomputed sweeps (``results/kd_sweep.json``); a clear error says how to make them."""
    return report.load_precomputed(path or SWEEP_FILE, SWEEP_COMMAND,
                                   "about 1.5 hours on one CPU core; see its docstring for running the parts in parallel")


def kd_step(temperature: float = KD["temperature"], alpha: float = KD["alpha"]) -> train.LossFn:
    """A ``loss_fn`` for :func:`cu.train.fit` on ``(images, labels, teacher_logits)`` batches: Hinton's KD loss.

    ``alpha = 0`` is plain cross-entropy. See :func:`cu.losses.kd_loss` for the formula.
    """

    def step(model: nn.Module, batch: tuple) -> torch.Tensor:
        images, labels, teacher_logits = batch[:3]
        return losses.kd_loss(model(images), teacher_logits, labels, temperature=temperature, alpha=alpha)

    return step


def soft_only_step(temperature: float = KD["temperature"]) -> train.LossFn:
    """A ``loss_fn`` on ``(images, labels, teacher_logits)`` batches that never reads the labels:
    ``T^2 KL(softmax(t / T) || softmax(s / T))`` alone (Hinton et al. 2015, the transfer-set loss)."""

    def step(model: nn.Module, batch: tuple) -> torch.Tensor:
        images, teacher_logits = batch[0], batch[2]
        return losses.kd_loss(model(images), teacher_logits, None, temperature=temperature, alpha=1.0)

    return step


def low_label_step(temperature: float = KD["temperature"]) -> train.LossFn:
    """A ``loss_fn`` on ``(images, labels, teacher_logits, is_labelled)`` batches of a transfer set.

    ``T^2 KL`` on every image (the teacher needs no labels) plus cross-entropy on the labelled
    images only; the labels of the unlabelled images are never read.
    """

    def step(model: nn.Module, batch: tuple) -> torch.Tensor:
        images, labels, teacher_logits, is_labelled = batch
        student_logits = model(images)
        soft = losses.kd_loss(student_logits, teacher_logits, None, temperature=temperature, alpha=1.0)
        if not is_labelled.any():  # a batch without labels: the soft term alone
            return soft
        return soft + F.cross_entropy(student_logits[is_labelled], labels[is_labelled])

    return step


def train_student(model: nn.Module, train_set: ImageSet, test_set: ImageSet, *, epochs: int, seed: int,
                  loss_fn: train.LossFn = train.cross_entropy_step, teacher_logits: torch.Tensor | None = None,
                  max_steps: int | None = None, **fit_kwargs) -> float:
    """Train ``model`` with the course's :data:`TRAINING` recipe and return its test accuracy (last epoch).

    ``teacher_logits`` (aligned with ``train_set``) are appended to every batch as a third tensor, for
    ``loss_fn = kd_step(...)``. ``fit_kwargs`` override the recipe (``lr=...``) or pass ``extra_modules``.
    """
    batches = (teacher_logits,) if teacher_logits is not None else ()
    loader = train_set.loader(batch_size=TRAINING["batch_size"], seed=seed, extra=batches)
    options = {"lr": TRAINING["lr"], "progress": False, **fit_kwargs}
    train.fit(model, loader, epochs=epochs, loss_fn=loss_fn, seed=seed, max_steps=max_steps, **options)
    return evaluate.accuracy(model, test_set.images, test_set.labels)


def low_label_loader(labelled: ImageSet, transfer: ImageSet | None, train_logits: torch.Tensor,
                     seed: int) -> torch.utils.data.DataLoader:
    """Batches ``(images, labels, teacher_logits, is_labelled)`` over the labelled images plus a transfer set.

    The transfer set's labels are replaced by 0 and masked by ``is_labelled``, so no loss can read them.
    ``train_logits`` are the teacher's logits on the full training split (sliced by each set's ``index``).
    """
    pool = labelled if transfer is None else ImageSet(
        torch.cat([labelled.images, transfer.images]), torch.cat([labelled.labels, transfer.labels]),
        index=torch.cat([labelled.index, transfer.index]))
    is_labelled = torch.zeros(len(pool), dtype=torch.bool)
    is_labelled[: len(labelled)] = True
    labels = torch.where(is_labelled, pool.labels, torch.zeros_like(pool.labels))  # hide the transfer set's labels
    return data.make_loader(pool.images, labels, train_logits[pool.index], is_labelled,
                            batch_size=TRAINING["batch_size"], shuffle=True, seed=seed)


def train_low_label(model: nn.Module, labelled: ImageSet, transfer: ImageSet | None,
                    train_logits: torch.Tensor, test_set: ImageSet, *, steps: int, seed: int,
                    loss_fn: train.LossFn | None = None) -> float:
    """Train for exactly ``steps`` optimizer steps on the labelled images plus ``transfer``; return test accuracy.

    ``loss_fn`` defaults to :func:`low_label_step` with the course's temperature; pass
    ``cu.train.cross_entropy_step`` with ``transfer=None`` for the scratch baseline (labels only).
    """
    loader = low_label_loader(labelled, transfer, train_logits, seed)
    epochs = -(-steps // len(loader))
    train.fit(model, loader, epochs=epochs, max_steps=steps, loss_fn=loss_fn or low_label_step(), seed=seed,
              lr=TRAINING["lr"], progress=False)
    return evaluate.accuracy(model, test_set.images, test_set.labels)


def bias_shift(logits: torch.Tensor, class_index: int, shift: float) -> torch.Tensor:
    """``logits`` with ``shift`` added to one class's logit: Hinton et al.'s (2015, section 3) bias correction."""
    shifted = logits.clone()
    shifted[..., class_index] += shift
    return shifted


def best_bias_shift(logits: torch.Tensor, labels: torch.Tensor, class_index: int,
                    shifts: Sequence[float] = tuple(s / 4 for s in range(0, 41))) -> float:
    """The shift of ``class_index``'s logit that maximises overall accuracy on ``(logits, labels)``.

    Choose it on a validation split of the training data, never on the test set: the test set
    then measures what the chosen shift does to unseen images. Ties go to the smallest shift.
    """
    if not len(shifts):
        raise ValueError("shifts must hold at least one candidate value (e.g. 0, 0.25, ..., 10).")

    def accuracy(shift: float) -> float:
        return (bias_shift(logits, class_index, shift).argmax(-1) == labels).float().mean().item()

    return max(sorted(shifts), key=accuracy)


def omitted_class_splits(full_train: ImageSet, transfer_images: int,
                         validation_images: int = 5_000) -> tuple[ImageSet, ImageSet]:
    """The omitted-class experiment's data: a validation split (stratified, seed 1) for choosing the bias
    shift, and a transfer set of ``transfer_images`` (seed 0) from the rest of the training split."""
    held_out = data.stratified_indices(full_train.labels, validation_images, seed=1)
    is_rest = torch.ones(len(full_train), dtype=torch.bool)
    is_rest[held_out] = False
    rest = is_rest.nonzero().flatten()  # indices only: copying the rest's images would cost ~170 MB for nothing
    order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(0))
    return full_train.subset(held_out), full_train.subset(rest[order[:transfer_images]])


def omitted_class(model: nn.Module, transfer: ImageSet, validation: ImageSet, test_set: ImageSet,
                  train_logits: torch.Tensor, class_index: int, *, epochs: int, seed: int,
                  soft: bool = True) -> dict[str, float]:
    """Hinton et al.'s (2015, section 3) omitted-class experiment on one class.

    Train ``model`` on ``transfer`` with every image of ``class_index`` removed: on the teacher's soft
    targets alone (``soft=True``, :func:`soft_only_step`) or on the hard labels (``soft=False``). Then
    measure the test accuracy on that class and overall, before and after raising the class's logit by
    the shift that :func:`best_bias_shift` picks on ``validation`` (a split of the training data).
    """
    without = transfer.subset((transfer.labels != class_index).nonzero().flatten())
    loss_fn = soft_only_step() if soft else train.cross_entropy_step
    train_student(model, without, test_set, epochs=epochs, seed=seed, loss_fn=loss_fn,
                  teacher_logits=train_logits[without.index])
    shift = best_bias_shift(evaluate.predict_logits(model, validation.images), validation.labels, class_index)
    test_logits = evaluate.predict_logits(model, test_set.images)
    in_class = test_set.labels == class_index
    result: dict[str, float] = {"bias_shift": shift, "transfer_images": len(without)}
    for tag, logits in (("before", test_logits), ("after", bias_shift(test_logits, class_index, shift))):
        predictions = logits.argmax(1)
        result[f"class_accuracy_{tag}"] = (predictions[in_class] == class_index).float().mean().item()
        result[f"overall_accuracy_{tag}"] = (predictions == test_set.labels).float().mean().item()
    return result


# --- notebook 05: the course recipe as schedules (cu.schedule.Schedule) ---


def flat_kd(total_steps: int, alpha: float | None = None, temperature: float | None = None,
            lr: float | None = None) -> schedule.Schedule:
    """One phase: the course's recipes (:data:`KD`, and :data:`TRAINING`'s lr, cosine to 0) for every step.

    ``alpha = 0`` is the scratch student (cross-entropy on the labels only), on the same batches.
    """
    return schedule.Schedule([{"name": "kd" if alpha != 0 else "scratch", "fraction": 1.0, "lr": lr or TRAINING["lr"],
                               "lr_end": 0.0, "alpha": KD["alpha"] if alpha is None else alpha,
                               "temperature": temperature or KD["temperature"]}], total_steps)


def warmup_distill_finetune(total_steps: int, warmup: float = 0.2, finetune: float = 0.1, curriculum: bool = True,
                            pool_start: float = 0.3, lr: float | None = None) -> schedule.Schedule:
    """Three phases over ``total_steps``: a warmup on the labels (``alpha = 0``) while the learning rate ramps up
    from a tenth of ``lr``, drawn easiest-first (``curriculum=True``, pacing from ``pool_start``) or at random;
    distillation with the course recipe (:data:`KD`) as the rate decays to a fifth; a finetune on the labels
    from there to 0. ``lr`` defaults to the course's (:data:`TRAINING`). A fraction of 0 drops its phase.
    """
    lr = lr or TRAINING["lr"]
    phases: list[dict[str, object]] = []
    if warmup > 0:
        phases.append({"name": "warmup", "fraction": warmup, "lr": lr / 10, "lr_end": lr, "alpha": 0.0,
                       "order": "curriculum" if curriculum else "random", "pool_start": pool_start})
    phases.append({"name": "distill", "fraction": 1.0 - warmup - finetune, "lr": lr,
                   "lr_end": lr / 5 if finetune > 0 else 0.0, **dict(KD)})
    if finetune > 0:
        phases.append({"name": "finetune", "fraction": finetune, "lr": lr / 5, "lr_end": 0.0, "alpha": 0.0})
    return schedule.Schedule(phases, total_steps)
