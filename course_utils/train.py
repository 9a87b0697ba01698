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
from torch.optim.lr_scheduler import LRScheduler
from tqdm.auto import tqdm

from . import config, validate

LossFn = Callable[[nn.Module, tuple], torch.Tensor]
OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]  # trainable parameters -> optimizer
SchedulerFactory = Callable[[torch.optim.Optimizer, int], LRScheduler]  # (optimizer, times it is stepped) -> scheduler
DEFAULT_LR, DEFAULT_WEIGHT_DECAY = 3e-3, 5e-4  # fit's AdamW when no optimizer is given


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
    lr: list[float] = field(default_factory=list)  # the learning rate of each epoch's last step
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


def _optimizer(optimizer: torch.optim.Optimizer | OptimizerFactory | None, modules: list[nn.Module],
               lr: float | None, weight_decay: float | None) -> torch.optim.Optimizer:
    """fit's optimizer: AdamW (``lr``, ``weight_decay``) by default, else the one given or the factory's."""
    params = [p for module in modules for p in module.parameters() if p.requires_grad]
    if optimizer is not None and (lr is not None or weight_decay is not None):
        raise ValueError("lr and weight_decay configure fit's default AdamW; with optimizer= set them on the optimizer "
                         "you pass (e.g. torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=5e-4)).")
    if isinstance(optimizer, torch.optim.Optimizer):
        known = {id(p) for module in modules for p in module.parameters()}
        if any(id(p) not in known for group in optimizer.param_groups for p in group["params"]):
            raise ValueError("optimizer= updates parameters that are not the model's (nor extra_modules'): build it "
                             "on this model's parameters (a copy of the model has parameters of its own).")
        return optimizer
    if optimizer is not None and not callable(optimizer):
        raise TypeError("optimizer must be a torch.optim.Optimizer, a factory params -> optimizer "
                        f"(e.g. functools.partial(torch.optim.SGD, lr=0.1)) or None, got {type(optimizer).__name__}.")
    if not params:
        raise ValueError(f"{type(modules[0]).__name__} (and extra_modules) have no trainable parameter: every one has "
                         "requires_grad=False. Unfreeze what should learn (p.requires_grad_(True)).")
    if optimizer is None:
        return torch.optim.AdamW(params, lr=DEFAULT_LR if lr is None else lr,
                                 weight_decay=DEFAULT_WEIGHT_DECAY if weight_decay is None else weight_decay)
    built = optimizer(params)
    if not isinstance(built, torch.optim.Optimizer):
        raise TypeError(f"the optimizer factory must return a torch.optim.Optimizer, got {type(built).__name__}.")
    return built


def _scheduler(scheduler: LRScheduler | SchedulerFactory, optimizer: torch.optim.Optimizer, count: int) -> LRScheduler:
    """fit's LR scheduler: the one given (checked to drive ``optimizer``) or the factory's, built for ``count`` steps."""
    if not isinstance(scheduler, LRScheduler):
        if not callable(scheduler):
            raise TypeError("scheduler must be a torch LR scheduler, a factory (optimizer, count) -> scheduler, or "
                            f"None, got {type(scheduler).__name__}.")
        scheduler = scheduler(optimizer, count)
        if not isinstance(scheduler, LRScheduler):
            raise TypeError("the scheduler factory must return a torch.optim.lr_scheduler.LRScheduler, got "
                            f"{type(scheduler).__name__}.")
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ValueError("ReduceLROnPlateau steps on a metric, which fit does not measure per step: use a schedule "
                         "of the step or epoch count (OneCycleLR, CosineAnnealingLR, LambdaLR, ...).")
    if scheduler.optimizer is not optimizer:
        raise ValueError("the scheduler drives another optimizer than the one fit steps: build it on the optimizer you "
                         "pass as optimizer= (or pass a factory (optimizer, count) -> scheduler).")
    return scheduler


def fit(model: nn.Module, train_loader: Iterable, *, epochs: int, loss_fn: LossFn = cross_entropy_step,
        lr: float | None = None, weight_decay: float | None = None,
        lr_schedule: str | Callable[[int, int], float] | None = None,
        optimizer: torch.optim.Optimizer | OptimizerFactory | None = None,
        scheduler: LRScheduler | SchedulerFactory | None = None, scheduler_interval: str = "step",
        grad_clip: float | None = None, val_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        extra_modules: Sequence[nn.Module] = (), seed: int | None = None, device: str | torch.device | None = None,
        progress: bool = True, max_steps: int | None = None) -> History:
    """Train ``model`` on ``loss_fn(model, batch)`` and return a :class:`History`; the course's one training loop.

    Each step: move the batch to ``device``, compute the loss, ``zero_grad``, ``backward``, clip the gradients'
    norm to ``grad_clip`` (``None``: no clipping), ``optimizer.step()``, then ``scheduler.step()`` when it runs
    per step.

    - ``optimizer``: ``None`` (default) builds AdamW with ``lr`` (default 3e-3) and ``weight_decay`` (default
      5e-4) over the trainable parameters of ``model`` and ``extra_modules``; or pass an optimizer built on them,
      or a factory ``params -> optimizer`` (then leave ``lr`` and ``weight_decay`` unset).
    - ``lr_schedule`` (default ``"cosine"``; ``"constant"`` or a callable ``(step, total) -> factor``) sets each
      parameter group's learning rate to its starting value times the factor before every step.
    - ``scheduler`` replaces ``lr_schedule`` with a torch LR scheduler: one built on ``optimizer``, or a factory
      ``(optimizer, count) -> scheduler``, where ``count`` is how often it will be stepped. It is stepped after
      every optimizer step (``scheduler_interval="step"``, count = the total number of steps) or after every
      epoch (``"epoch"``, count = the number of epochs run).
    - ``extra_modules`` (e.g. a FitNets regressor) are trained alongside the model. ``val_data = (images,
      labels)`` adds the validation accuracy after every epoch. ``max_steps`` stops early (quick experiments).
      ``seed`` seeds every generator first (:func:`set_seed`); ``None`` leaves them as they are.
    """
    from .evaluate import accuracy

    epochs = validate.integer(epochs, "epochs", minimum=1)
    if max_steps is not None:
        max_steps = validate.integer(max_steps, "max_steps", minimum=1,
                                     hint="A run needs at least one optimiser step; None trains every epoch in full.")
    if lr is not None:
        lr = validate.in_range(lr, "lr", 0.0, None, low_open=True)
    if weight_decay is not None:
        weight_decay = validate.in_range(weight_decay, "weight_decay", 0.0)
    if grad_clip is not None:
        grad_clip = validate.in_range(grad_clip, "grad_clip", 0.0, None, low_open=True,
                                      hint="It is the largest gradient norm allowed; None turns clipping off.")
    if scheduler_interval not in ("step", "epoch"):
        raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}.")
    if scheduler is not None and lr_schedule is not None:
        raise ValueError("pass either lr_schedule (a factor on the learning rate) or scheduler (a torch LR "
                         "scheduler), not both.")
    if scheduler is None:
        lr_schedule = "cosine" if lr_schedule is None else lr_schedule
        if not callable(lr_schedule) and lr_schedule not in ("cosine", "constant"):
            _lr_factor(lr_schedule, 0, 1)  # raises the error that names the choices
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
    optimizer = _optimizer(optimizer, modules, lr, weight_decay)
    total = steps_per_epoch * epochs if max_steps is None else min(max_steps, steps_per_epoch * epochs)
    if scheduler is not None:
        scheduler = _scheduler(scheduler, optimizer, total if scheduler_interval == "step"
                               else math.ceil(total / steps_per_epoch))
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    clipped = [p for group in optimizer.param_groups for p in group["params"]] if grad_clip is not None else []
    history, step, step_lr = History(), 0, base_lrs[0]
    bar = tqdm(total=total, desc=f"training {type(model).__name__}", disable=not progress, leave=False)
    for epoch in range(1, epochs + 1):
        start, running, count = time.perf_counter(), 0.0, 0
        for module in modules:
            module.train()
        for batch in train_loader:
            if step >= total:
                break
            batch = tuple(t.to(device) for t in batch)
            if scheduler is None:
                factor = _lr_factor(lr_schedule, step, total)  # type: ignore[arg-type]
                for group, base_lr in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base_lr * factor
            loss = loss_fn(model, batch)
            if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
                raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__} of shape "
                                f"{tuple(getattr(loss, 'shape', ()))}: reduce it with .mean() (or .sum()).")
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} at step {step}: lower the learning "
                                         "rate or check the loss function's inputs.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(clipped, grad_clip)
            step_lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            if scheduler is not None and scheduler_interval == "step":
                scheduler.step()
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
        history.lr.append(step_lr)
        history.seconds.append(time.perf_counter() - start)
        if val_data is not None:
            history.val_accuracy.append(accuracy(model, *val_data))
        if scheduler is not None and scheduler_interval == "epoch":
            scheduler.step()
        if step >= total:
            break
    bar.close()
    model.eval()
    return history


def over_seeds(run: Callable[[int], float], seeds: Sequence[int], desc: str = "seeds") -> list[float]:
    """``[run(seed) for seed in seeds]`` with a progress bar: one training run per seed, its result kept per seed."""
    if not len(seeds):
        raise ValueError("over_seeds needs at least one seed, e.g. cu.config.seeds().")
    return [run(seed) for seed in tqdm(list(seeds), desc=desc)]  # the finished bar stays: its time per seed
