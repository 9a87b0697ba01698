"""One training loop for everything: from scratch, distillation, hints, attention transfer.

The idea being taught lives in the loss callable, which the notebook writes:

    def kd_step(model, batch):
        images, labels, teacher_logits = batch
        return cu.losses.kd_loss(model(images), teacher_logits, labels, temperature=4.0, alpha=0.9)

    history = cu.train.fit(student, train_loader, loss_fn=kd_step, epochs=5)
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from . import config, validate

LossFn = Callable[[nn.Module, tuple], torch.Tensor]


def set_seed(seed: int) -> None:
    """Seed Python's, PyTorch's (and NumPy's, if present) random generators."""
    seed = validate.integer(seed, "seed", minimum=0, maximum=2**32 - 1, hint="NumPy takes seeds 0 .. 2**32 - 1.")
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass


def cross_entropy_step(model: nn.Module, batch: tuple) -> torch.Tensor:
    """The plain supervised loss: cross-entropy of ``model(images)`` against ``labels``."""
    images, labels = batch[0], batch[1]
    return nn.functional.cross_entropy(model(images), labels)


@dataclass
class History:
    """What :func:`fit` measured: one entry per epoch (and the loss of every step)."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list, repr=False)

    @property
    def final_accuracy(self) -> float:
        """Validation accuracy after the last epoch (NaN without validation data)."""
        return self.val_accuracy[-1] if self.val_accuracy else float("nan")


def _lr_factor(schedule: str | Callable[[int, int], float], step: int, total: int) -> float:
    if callable(schedule):
        return validate.in_range(schedule(step, total), f"lr_schedule({step}, {total})", 0.0,
                                 hint="The schedule returns the factor that multiplies lr at each step.")
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))
    raise ValueError(f"lr_schedule must be 'cosine', 'constant' or a callable (step, total) -> factor, got {schedule!r}.")


def fit(model: nn.Module, train_loader: Iterable, *, epochs: int, loss_fn: LossFn = cross_entropy_step,
        lr: float = 3e-3, weight_decay: float = 5e-4, lr_schedule: str | Callable[[int, int], float] = "cosine",
        val_data: tuple[torch.Tensor, torch.Tensor] | None = None, extra_modules: Sequence[nn.Module] = (),
        seed: int | None = None, device: str | torch.device | None = None, progress: bool = True,
        max_steps: int | None = None) -> History:
    """Train ``model`` with AdamW on ``loss_fn(model, batch)`` and return a :class:`History`.

    ``extra_modules`` (e.g. a FitNets regressor) are trained alongside the model. The learning
    rate is ``lr * lr_schedule(step, total_steps)``. ``val_data = (images, labels)`` adds the
    validation accuracy after every epoch. ``max_steps`` stops early (quick experiments).
    """
    from .evaluate import accuracy

    epochs = validate.integer(epochs, "epochs", minimum=1)
    if max_steps is not None:
        max_steps = validate.integer(max_steps, "max_steps", minimum=1,
                                     hint="A run needs at least one optimiser step; None trains every epoch in full.")
    lr = validate.in_range(lr, "lr", 0.0, None, low_open=True)
    weight_decay = validate.in_range(weight_decay, "weight_decay", 0.0)
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    if steps_per_epoch == 0:
        raise ValueError("train_loader yields no batch (an empty data set or subset?): fit would run no optimiser "
                         "step. Check the data you built the loader from.")
    if val_data is not None:
        validate.non_empty(val_data[0], "val_data images")
        validate.same_length(val_data[0], val_data[1], ("val_data images", "val_data labels"))
    if seed is not None:
        set_seed(seed)
    device = config.device(None if device is None else str(device))
    modules = [model, *extra_modules]
    for module in modules:
        module.to(device)
    params = [p for module in modules for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} (and extra_modules) have no trainable parameter: every one has "
                         "requires_grad=False. Unfreeze what should learn (p.requires_grad_(True)).")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    history, step = History(), 0
    bar = tqdm(total=total, desc=f"training {type(model).__name__}", disable=not progress, leave=False)
    for epoch in range(1, epochs + 1):
        start, running, count = time.perf_counter(), 0.0, 0
        for module in modules:
            module.train()
        for batch in train_loader:
            if step >= total:
                break
            batch = tuple(t.to(device) for t in batch)
            for group in optimizer.param_groups:
                group["lr"] = lr * _lr_factor(lr_schedule, step, total)
            loss = loss_fn(model, batch)
            if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
                raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__} of shape "
                                f"{tuple(getattr(loss, 'shape', ()))}: reduce it with .mean() (or .sum()).")
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} at step {step}: lower the learning "
                                         "rate or check the loss function's inputs.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            running, count = running + loss.item(), count + 1
            history.step_loss.append(loss.item())
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
        if count == 0:
            raise RuntimeError(f"epoch {epoch} ran no optimiser step: train_loader yielded no batch although its "
                               f"len() is {steps_per_epoch} (an exhausted iterator, or ScheduledBatches used twice? "
                               "build a fresh one).")
        history.epoch.append(epoch)
        history.train_loss.append(running / count)
        history.lr.append(optimizer.param_groups[0]["lr"])
        history.seconds.append(time.perf_counter() - start)
        if val_data is not None:
            history.val_accuracy.append(accuracy(model, *val_data))
        if step >= total:
            break
    bar.close()
    model.eval()
    return history


def over_seeds(run: Callable[[int], float], seeds: Sequence[int], desc: str = "seeds") -> list[float]:
    """``[run(seed) for seed in seeds]`` with a progress bar: one training run per seed, its result kept per seed."""
    if not len(seeds):
        raise ValueError("over_seeds needs at least one seed, e.g. cu.config.seeds().")
    return [run(seed) for seed in tqdm(list(seeds), desc=desc, leave=False)]
