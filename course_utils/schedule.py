"""A phased training schedule (warmup, distill, finetune) and the curriculum that feeds it.

    schedule = cu.schedule.Schedule([
        {"name": "warmup", "fraction": 0.2, "lr": 3e-4, "lr_end": 3e-3, "alpha": 0.0, "order": "curriculum"},
        {"name": "distill", "fraction": 0.7, "lr": 3e-3, "lr_end": 1e-3, "alpha": 0.9, "temperature": 4.0,
         "at_weight": 1000.0},
        {"name": "finetune", "fraction": 0.1, "lr": 1e-3, "lr_end": 0.0, "alpha": 0.0},
    ], total_steps=1500)
    batches = cu.schedule.ScheduledBatches(schedule, (images, labels, teacher_logits), ranking, rounds=10)
    history = cu.train.fit(student, batches, epochs=batches.rounds, loss_fn=my_loss,
                           lr=1.0, lr_schedule=schedule.lr_factor(1.0))

Every batch ends with its step number, so ``my_loss`` reads the phase's weights with
``schedule.phase_at(step)``; ``cu.train.fit`` runs the loop unchanged (its "epochs" are
evaluation rounds of ``total_steps / rounds`` steps each).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from . import config, hooks, losses, train, validate

ORDERS = ("random", "curriculum")


@dataclass(frozen=True)
class Phase:
    """One phase: its share of the steps, its data order, loss weights and learning rate.

    The loss of a step is ``kd_loss(s, t, y, temperature, alpha) + at_weight / 2 * sum_layers at_loss``
    (Hinton et al. 2015; Zagoruyko and Komodakis 2017). ``alpha = 0`` and ``at_weight = 0`` is plain
    cross-entropy on the labels (a finetune phase).
    """

    name: str
    fraction: float  # share of the total steps, in (0, 1]; a schedule's fractions sum to 1
    lr: float = 3e-3  # learning rate at the phase's first step
    lr_end: float | None = None  # learning rate the phase decays (or grows) to along a half cosine; None: constant lr
    alpha: float = 0.9  # weight of the soft KD term; 1 - alpha weights the hard labels
    temperature: float = 4.0
    at_weight: float = 0.0  # beta of attention transfer (the paper uses 1000); 0 switches it off
    order: str = "random"  # "random": shuffled epochs over all data; "curriculum": easiest examples first
    pool_start: float = 0.3  # curriculum only: share of the easiest examples sampled from at the phase's start

    def __post_init__(self) -> None:
        where = f"phase {self.name!r}"
        for key in ("fraction", "lr", "lr_end", "alpha", "temperature", "at_weight", "pool_start"):
            value = getattr(self, key)
            if value is not None or key != "lr_end":  # plain finite floats from here on (NumPy and 0-d tensors too)
                object.__setattr__(self, key, float(validate.finite(value, f"{where}: {key}")))
        if self.fraction < 0:
            raise ValueError(f"{where}: fraction {self.fraction} is negative; a phase's share of the steps is in (0, 1].")
        if self.fraction == 0:
            raise ValueError(f"{where} is empty (fraction 0): remove the phase, or give it a positive share.")
        if self.fraction > 1:
            raise ValueError(f"{where}: fraction {self.fraction} is above 1; fractions are shares of the total steps.")
        if self.lr < 0 or (self.lr_end is not None and self.lr_end < 0):
            raise ValueError(f"{where}: learning rates must be >= 0, got lr={self.lr}, lr_end={self.lr_end}.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"{where}: alpha must be in [0, 1] (the weight of the soft term), got {self.alpha}.")
        if not self.temperature > 0:
            raise ValueError(f"{where}: temperature must be > 0, got {self.temperature}.")
        if self.at_weight < 0:
            raise ValueError(f"{where}: at_weight must be >= 0 (0 switches attention transfer off), got {self.at_weight}.")
        if self.order not in ORDERS:
            raise ValueError(f"{where}: order must be one of {ORDERS}, got {self.order!r}.")
        if not 0.0 < self.pool_start <= 1.0:
            raise ValueError(f"{where}: pool_start must be in (0, 1] (a share of the training set), got {self.pool_start}.")

    @classmethod
    def from_mapping(cls, spec: Mapping[str, object]) -> Phase:
        """Build a phase from a dict, refusing unknown keys (a typo would otherwise be ignored)."""
        if isinstance(spec, Phase):
            return spec
        valid = [f.name for f in fields(cls)]
        for key in spec:
            if key not in valid:
                close = difflib.get_close_matches(str(key), valid, n=1)
                guess = f" Did you mean {close[0]!r}?" if close else ""
                raise KeyError(f"unknown key {key!r} in phase {spec.get('name', '?')!r}.{guess} Valid keys: {valid}.")
        missing = [key for key in ("name", "fraction") if key not in spec]
        if missing:
            raise KeyError(f"phase {dict(spec)!r} lacks {missing}: every phase needs a name and a fraction.")
        return cls(**spec)  # type: ignore[arg-type]


class Schedule:
    """Phases laid end to end over ``total_steps`` optimizer steps.

    Phase ``i`` covers steps ``[round(N * c_{i-1}), round(N * c_i))`` with ``c_i`` the running sum
    of the fractions, so the phases tile ``0 .. N - 1`` exactly. Within a phase the learning rate
    follows a half cosine from ``lr`` to ``lr_end`` (Loshchilov and Hutter 2017's SGDR shape):

        lr(k) = lr_end + (lr - lr_end) * (1 + cos(pi * k / n)) / 2,   k = step - start, n = phase length
    """

    def __init__(self, phases: Sequence[Mapping[str, object] | Phase], total_steps: int):
        total_steps = validate.integer(total_steps, "total_steps", minimum=1)
        if not phases:
            raise ValueError("a schedule needs at least one phase, e.g. [{'name': 'distill', 'fraction': 1.0}].")
        self.phases = [Phase.from_mapping(spec) for spec in phases]
        names = [phase.name for phase in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique, got {names}.")
        total_fraction = math.fsum(phase.fraction for phase in self.phases)
        if abs(total_fraction - 1.0) > 1e-6:
            shares = " + ".join(f"{phase.fraction:g}" for phase in self.phases)
            raise ValueError(f"the phases' fractions sum to {shares} = {total_fraction:g}, not 1: "
                             "make them shares of the total steps that add up to 1.")
        self.total_steps = total_steps
        ends, running = [], 0.0
        for phase in self.phases:
            running += phase.fraction
            ends.append(math.floor(total_steps * running + 0.5))
        ends[-1] = total_steps
        starts = [0, *ends[:-1]]
        for phase, start, end in zip(self.phases, starts, ends):
            if end <= start:
                raise ValueError(f"phase {phase.name!r} (fraction {phase.fraction:g}) gets no step out of "
                                 f"{total_steps}: raise total_steps or the phase's fraction.")
        self.boundaries: list[tuple[int, int]] = list(zip(starts, ends))

    def __repr__(self) -> str:
        parts = ", ".join(f"{p.name} {s}-{e}" for p, (s, e) in zip(self.phases, self.boundaries))
        return f"Schedule({parts}; {self.total_steps} steps)"

    def steps(self, name: str) -> int:
        """How many steps the phase called ``name`` lasts."""
        start, end = self.boundaries[self._index(name)]
        return end - start

    def _index(self, name: str) -> int:
        for i, phase in enumerate(self.phases):
            if phase.name == name:
                return i
        raise KeyError(f"no phase called {name!r}; the phases are {[p.name for p in self.phases]}.")

    def phase_index(self, step: int) -> int:
        """Index of the phase that holds ``step`` (0-based, ``0 <= step < total_steps``)."""
        if not 0 <= int(step) < self.total_steps:
            raise IndexError(f"step {step} is outside the schedule's 0 .. {self.total_steps - 1}.")
        for i, (_, end) in enumerate(self.boundaries):
            if step < end:
                return i
        raise AssertionError("unreachable: the boundaries tile the steps")

    def phase_at(self, step: int) -> Phase:
        """The :class:`Phase` in force at ``step``."""
        return self.phases[self.phase_index(step)]

    def progress(self, step: int) -> float:
        """How far ``step`` is into its phase, ``k / n`` in ``[0, 1)``."""
        start, end = self.boundaries[self.phase_index(step)]
        return (step - start) / (end - start)

    def lr(self, step: int) -> float:
        """The learning rate at ``step``: a half cosine from the phase's ``lr`` to its ``lr_end``."""
        phase = self.phase_at(step)
        if phase.lr_end is None:
            return phase.lr
        return phase.lr_end + (phase.lr - phase.lr_end) * 0.5 * (1.0 + math.cos(math.pi * self.progress(step)))

    def pool(self, step: int) -> float:
        """Share of the (difficulty-ranked) training set the batch at ``step`` is drawn from.

        ``1`` for a random phase; for a curriculum phase it grows linearly from ``pool_start``
        to 1 over the phase (a linear pacing function, Hacohen and Weinshall 2019).
        """
        phase = self.phase_at(step)
        if phase.order == "random":
            return 1.0
        return phase.pool_start + (1.0 - phase.pool_start) * self.progress(step)

    def value(self, key: str, step: int) -> float:
        """``key`` ("lr", "pool", or a numeric field such as "alpha") at ``step``."""
        if key == "lr":
            return self.lr(step)
        if key == "pool":
            return self.pool(step)
        numeric = [f.name for f in fields(Phase) if f.name not in ("name", "fraction", "order", "lr_end")]
        if key not in numeric:
            raise KeyError(f"unknown schedule value {key!r}; choose one of {['lr', 'pool', *numeric]}.")
        return float(getattr(self.phase_at(step), key))

    def values(self, key: str) -> torch.Tensor:
        """``key`` at every step, ``(total_steps,)`` (what the timeline plot draws)."""
        return torch.tensor([self.value(key, step) for step in range(self.total_steps)], dtype=torch.float64)

    def lr_factor(self, base_lr: float) -> Callable[[int, int], float]:
        """A ``(step, total) -> factor`` callable for ``cu.train.fit(..., lr=base_lr, lr_schedule=...)``."""
        if not base_lr > 0:
            raise ValueError(f"base_lr must be > 0, got {base_lr}.")

        def factor(step: int, total: int) -> float:
            if total != self.total_steps:
                raise ValueError(f"fit runs {total} steps but the schedule has {self.total_steps}: build the "
                                 "ScheduledBatches from this schedule and pass epochs=batches.rounds.")
            return self.lr(step) / base_lr

        return factor


def difficulty_order(teacher_logits: torch.Tensor, score: str = "confidence") -> torch.Tensor:
    """Indices of the examples from easiest to hardest by the teacher's ``(N, C)`` logits.

    ``"confidence"``: the teacher's top softmax probability ``max_c p_c``; ``"margin"``: the gap
    ``p_(1) - p_(2)`` between its two most probable classes. Higher is easier (Hacohen and
    Weinshall 2019 score examples with a pretrained network's confidence). Ties keep index order.
    """
    if teacher_logits.ndim != 2 or teacher_logits.shape[1] < 2:
        raise ValueError(f"teacher_logits must be (N, classes >= 2), got shape {tuple(teacher_logits.shape)}.")
    validate.non_empty(teacher_logits, "teacher_logits")
    validate.all_finite(teacher_logits, "teacher_logits", hint="A NaN would be sorted to an arbitrary place.")
    probabilities = torch.softmax(teacher_logits.double(), dim=1)
    if score == "confidence":
        easiness = probabilities.max(dim=1).values
    elif score == "margin":
        top2 = probabilities.topk(2, dim=1).values
        easiness = top2[:, 0] - top2[:, 1]
    else:
        raise ValueError(f"score must be 'confidence' or 'margin', got {score!r}.")
    return torch.sort(easiness, descending=True, stable=True).indices


class ScheduledBatches:
    """The batches of a schedule, each ``(*tensors[idx], step)``, in ``rounds`` chunks.

    Random phases walk through seeded permutations of all examples; curriculum phases draw
    each batch (without replacement) from the ``ceil(pool * N)`` easiest examples of ``ranking``,
    ``pool`` growing to 1 over the phase. Iterating yields the next ``total_steps / rounds``
    batches, so ``cu.train.fit(..., epochs=rounds)`` validates after every round.
    """

    def __init__(self, schedule: Schedule, tensors: Sequence[torch.Tensor], ranking: torch.Tensor | None = None,
                 batch_size: int = 128, rounds: int = 1, seed: int = 0):
        if not tensors:
            raise ValueError("ScheduledBatches needs at least one tensor (e.g. images, labels, teacher_logits).")
        sizes = {len(t) for t in tensors}
        if len(sizes) != 1:
            raise ValueError(f"all tensors must have the same length, got lengths {[len(t) for t in tensors]}.")
        self.count = sizes.pop()
        if batch_size < 1 or batch_size > self.count:
            raise ValueError(f"batch_size must be between 1 and the {self.count} examples, got {batch_size}.")
        if ranking is None and any(p.order == "curriculum" for p in schedule.phases):
            raise ValueError("a curriculum phase needs ranking=cu.schedule.difficulty_order(teacher_logits).")
        if ranking is not None and sorted(ranking.tolist()) != list(range(self.count)):
            raise ValueError(f"ranking must be a permutation of 0 .. {self.count - 1} (easiest first).")
        if not 1 <= rounds <= schedule.total_steps or schedule.total_steps % rounds:
            raise ValueError(f"rounds must divide total_steps = {schedule.total_steps} (got {rounds}), so that "
                             "every evaluation round has the same number of steps.")
        self.schedule, self.tensors, self.ranking = schedule, tuple(tensors), ranking
        self.batch_size, self.rounds = batch_size, rounds
        self.generator = torch.Generator().manual_seed(seed)
        self._step, self._permutation = 0, torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return self.schedule.total_steps // self.rounds

    def indices(self, step: int) -> torch.Tensor:
        """The example indices of the batch at ``step`` (call in step order: random phases consume a stream)."""
        if self.schedule.phase_at(step).order == "curriculum":
            pool = min(self.count, max(self.batch_size, math.ceil(self.schedule.pool(step) * self.count)))
            return self.ranking[torch.randperm(pool, generator=self.generator)[: self.batch_size]]
        if len(self._permutation) < self.batch_size:
            fresh = torch.randperm(self.count, generator=self.generator)
            self._permutation = torch.cat([self._permutation, fresh])
        batch, self._permutation = self._permutation[: self.batch_size], self._permutation[self.batch_size:]
        return batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        for _ in range(len(self)):
            if self._step >= self.schedule.total_steps:
                return
            index = self.indices(self._step)
            yield (*(t[index] for t in self.tensors), torch.tensor(self._step))
            self._step += 1


@torch.no_grad()
def cache_attention_maps(teacher: nn.Module, images: torch.Tensor, paths: Sequence[str], p: float = 2.0,
                         batch_size: int = 250) -> list[torch.Tensor]:
    """The teacher's attention maps ``Q = vec(mean_c |A_c|^p) / ||.||_2`` at ``paths``, one ``(N, H*W)`` each.

    Computed once, so attention transfer (Zagoruyko and Komodakis 2017) then costs no teacher
    forward pass per step: ``at_loss = mean((attention_map(student_features) - Q_teacher)^2)``.
    Valid only without data augmentation (the maps belong to these exact images).
    """
    validate.non_empty(images, "images", hint="Pass the images whose maps to cache.")
    batch_size = validate.integer(batch_size, "batch_size", minimum=1)
    return hooks.capture_over(teacher, images, paths, lambda features: losses.attention_map(features, p), batch_size)


def train_with_schedule(model: nn.Module, schedule: Schedule, tensors: Sequence[torch.Tensor],
                        loss_fn: train.LossFn, *, ranking: torch.Tensor | None = None,
                        val_data: tuple[torch.Tensor, torch.Tensor] | None = None, rounds: int = 1,
                        batch_size: int = 128, weight_decay: float = 5e-4, seed: int = 0,
                        progress: bool = False) -> train.History:
    """Train ``model`` through ``schedule`` with ``cu.train.fit``; validation after each of ``rounds`` rounds.

    ``loss_fn(model, batch)`` receives ``(*tensors[idx], step)`` and reads the phase's weights
    with ``schedule.phase_at(step)``. The learning rate is ``schedule.lr(step)`` (fit's ``lr=1``
    times the factor). ``History.epoch`` counts rounds: round ``r`` ends at step ``r * total / rounds``.
    """
    batches = ScheduledBatches(schedule, tensors, ranking, batch_size=batch_size, rounds=rounds, seed=seed)
    return train.fit(model, batches, epochs=rounds, loss_fn=loss_fn, lr=1.0, weight_decay=weight_decay,
                     lr_schedule=schedule.lr_factor(1.0), val_data=val_data, seed=seed, progress=progress)


def steps_to_reach(history: train.History, target: float, steps_per_round: int) -> int | None:
    """The first step count at which ``history``'s validation accuracy is ``>= target`` (None: never)."""
    for round_number, accuracy in zip(history.epoch, history.val_accuracy):
        if accuracy >= target:
            return round_number * steps_per_round
    return None


# --- notebook 05: the precomputed sweep, teachers v1 / v2, ensembles ---

SWEEP_FILE = config.REPO_DIR / "results" / "schedule_sweep.json"
SWEEP_COMMAND = "python -m course_utils.cli.schedule_sweep"


def load_sweep(path: str | Path | None = None) -> dict:
    """Notebook 05's precomputed budget sweep (``results/schedule_sweep.json``); a clear error says how to make it."""
    from . import report

    return report.load_precomputed(path or SWEEP_FILE, SWEEP_COMMAND, "about 20 minutes on one CPU core")


def phase_kd_step(schedule: Schedule) -> train.LossFn:
    """A ``loss_fn`` on ``(images, labels, teacher_logits, step)`` batches: KD with the phase's temperature and alpha
    at that step (``alpha = 0``: cross-entropy alone). See :func:`cu.losses.kd_loss` for the formula."""

    def step(model: nn.Module, batch: tuple) -> torch.Tensor:
        images, labels, teacher_logits, step_number = batch[0], batch[1], batch[2], batch[-1]
        phase = schedule.phase_at(int(step_number))
        return losses.kd_loss(model(images), teacher_logits, labels, phase.temperature, phase.alpha)

    return step


UNSEEN = -1e4  # a logit whose softmax is exactly 0 in float32 at any temperature up to 100


def without_classes(logits: torch.Tensor, classes: Sequence[int]) -> torch.Tensor:
    """A teacher that never learned ``classes``: their logits set to :data:`UNSEEN`, so ``softmax(z / T)`` is
    renormalised over the other classes and gives the unseen ones exactly 0.

    A cheap stand-in for a teacher trained without those classes (notebook 05's teacher v1): it keeps the shipped
    teacher's knowledge of how the seen classes resemble each other, which a real v1 would have learned slightly
    differently, and it cannot name an unseen class. Finite rather than ``-inf``, so the KL term stays finite.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, classes), got shape {tuple(logits.shape)}.")
    classes = list(classes)
    if any(not 0 <= c < logits.shape[1] for c in classes) or len(set(classes)) >= logits.shape[1]:
        raise ValueError(f"classes must be distinct indices in [0, {logits.shape[1] - 1}] that leave at least one "
                         f"class seen, got {classes}.")
    masked = logits.clone()
    masked[:, classes] = UNSEEN
    return masked


def ensemble_logits(*teacher_logits: torch.Tensor) -> torch.Tensor:
    """The mean of several teachers' logits, ``z = (1/K) sum_k z_k``: an ensemble teacher whose softmax is the
    renormalised geometric mean of the members' softmax outputs (averaging probabilities is the other common
    choice; Hinton et al. 2015 distil an ensemble into one network)."""
    if len(teacher_logits) < 2:
        raise ValueError(f"an ensemble needs at least two teachers' logits, got {len(teacher_logits)}.")
    shapes = {tuple(t.shape) for t in teacher_logits}
    if len(shapes) != 1:
        raise ValueError(f"every teacher's logits must have the same shape, got {sorted(shapes)}.")
    return torch.stack(teacher_logits).mean(0)
