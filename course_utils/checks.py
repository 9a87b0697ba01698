"""Self-checks for the exercises: compare a learner's function with the reference.

A check says what is wrong without printing the answer. Starter code that has not been
touched (it raises ``NotImplementedError`` or returns ``None``) gets "not attempted yet",
which is not a failure, so notebooks still run from top to bottom in CI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class CheckResult:
    """The outcome of a check: ``status`` is "correct", "wrong" or "not attempted"."""

    name: str
    status: str
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "correct"

    def __repr__(self) -> str:
        icon = {"correct": "✅", "wrong": "❌", "not attempted": "⏳"}[self.status]
        return f"{icon} {self.name}: {self.message}"


def _report(result: CheckResult) -> CheckResult:
    print(repr(result))
    return result


def _as_tensor(value: Any) -> torch.Tensor:
    return value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=torch.float64)


def check_function(name: str, learner_fn: Callable, reference_fn: Callable, cases: Sequence[tuple],
                   hint: str = "", atol: float = 1e-5, rtol: float = 1e-4) -> CheckResult:
    """Call both functions on every case (a tuple of positional arguments) and compare results.

    Prints and returns a :class:`CheckResult`. ``hint`` is added to a wrong answer's message.
    """
    for number, args in enumerate(cases, start=1):
        try:
            got = learner_fn(*args)
        except NotImplementedError:
            return _report(CheckResult(name, "not attempted", "not attempted yet: replace the "
                                       "`raise NotImplementedError` with your code and run the check again."))
        except Exception as error:  # a learner's bug: say what happened, do not fail the notebook
            return _report(CheckResult(name, "wrong", f"case {number} raised {type(error).__name__}: {error}. {hint}"))
        if got is None:
            return _report(CheckResult(name, "not attempted", "not attempted yet: your function returns None."))
        expected = _as_tensor(reference_fn(*args))
        got = _as_tensor(got)
        if got.shape != expected.shape:
            return _report(CheckResult(name, "wrong", f"case {number}: the result has shape {tuple(got.shape)}, "
                                       f"expected {tuple(expected.shape)}. {hint}"))
        if not torch.allclose(got.double(), expected.double(), atol=atol, rtol=rtol):
            diff = (got.double() - expected.double()).abs().max().item()
            return _report(CheckResult(name, "wrong", f"case {number}: values are off (largest difference "
                                       f"{diff:.3g}). {hint}"))
    return _report(CheckResult(name, "correct", f"correct on all {len(cases)} cases."))


def check_value(name: str, answer: Any, is_correct: Callable[[Any], bool], hint: str = "") -> CheckResult:
    """Check a learner's value (a number, a choice) with a predicate; ``None`` is "not attempted"."""
    if answer is None or answer is ...:
        return _report(CheckResult(name, "not attempted", "not attempted yet: set your answer and run the check again."))
    try:
        ok = bool(is_correct(answer))
    except Exception as error:
        return _report(CheckResult(name, "wrong", f"could not check {answer!r}: {error}. {hint}"))
    return _report(CheckResult(name, "correct", "correct.") if ok else CheckResult(name, "wrong", f"not quite. {hint}"))


# --- notebook 05: training schedule ---
def _reference_boundaries(fractions: Sequence[float], total_steps: int) -> torch.Tensor:
    from .schedule import Schedule

    phases = [{"name": f"phase{i}", "fraction": f} for i, f in enumerate(fractions)]
    return torch.tensor(Schedule(phases, total_steps).boundaries)


def check_phase_boundaries(learner_fn: Callable) -> CheckResult:
    """Exercise (05): ``learner_fn(fractions, total_steps)`` -> ``[(start, end), ...]`` like ``Schedule``."""
    cases = [((0.2, 0.7, 0.1), 100), ((0.2, 0.7, 0.1), 1500), ((1 / 3, 1 / 3, 1 / 3), 10), ((0.25, 0.75), 7), ((1.0,), 5)]
    return check_function("phase boundaries", lambda f, n: None if (got := learner_fn(f, n)) is None else torch.tensor(got),
                          _reference_boundaries, cases,
                          hint="end_i = floor(N * (f_1 + ... + f_i) + 0.5), the last end is N, and start_i = end_(i-1).")


def _reference_margin(teacher_logits: torch.Tensor) -> torch.Tensor:
    top2 = torch.softmax(teacher_logits.double(), dim=1).topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def check_margin(learner_fn: Callable) -> CheckResult:
    """Exercise (05): ``learner_fn(teacher_logits)`` -> the margin ``p_(1) - p_(2)`` per example."""
    generator = torch.Generator().manual_seed(5)
    cases = [(torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0]]),), (torch.randn(16, 10, generator=generator) * 3,)]
    return check_function("teacher margin", learner_fn, _reference_margin, cases,
                          hint="take the softmax over classes, then the largest minus the second-largest probability.")


# --- notebooks 03-04: feature distillation and attention transfer ---


def check_layer_mapping(learner_fn: Callable[[int, int], Sequence[int]]) -> CheckResult:
    """Progressive depth mapping: student stage ``i`` (of ``n_student``) -> teacher stage near
    ``(i + 1) * n_teacher / n_student - 1``.

    Either rounding (floor or ceiling) is accepted; the last student stage must map to the last teacher stage.
    """
    name = "progressive layer mapping"
    cases = [(3, 3), (2, 4), (3, 4), (3, 5), (1, 3), (4, 8), (2, 3)]
    for n_student, n_teacher in cases:
        try:
            got = learner_fn(n_student, n_teacher)
        except NotImplementedError:
            return _report(CheckResult(name, "not attempted", "not attempted yet: replace the "
                                       "`raise NotImplementedError` with your code and run the check again."))
        except Exception as error:
            return _report(CheckResult(name, "wrong", f"({n_student}, {n_teacher}) raised {type(error).__name__}: {error}."))
        if got is None:
            return _report(CheckResult(name, "not attempted", "not attempted yet: your function returns None."))
        got = [int(g) for g in got]
        if len(got) != n_student:
            return _report(CheckResult(name, "wrong", f"({n_student}, {n_teacher}): return one teacher stage per "
                                       f"student stage ({n_student}), got {len(got)}."))
        if got[-1] != n_teacher - 1:
            return _report(CheckResult(name, "wrong", f"({n_student}, {n_teacher}): the last student stage should "
                                       "map to the last teacher stage (index n_teacher - 1): both feed the classifier."))
        for i, g in enumerate(got):
            ideal = (i + 1) * n_teacher / n_student - 1
            if not (int(ideal // 1) <= g <= -int(-ideal // 1)):
                return _report(CheckResult(name, "wrong", f"({n_student}, {n_teacher}): student stage {i} maps to "
                                           f"{g}; spread the student's stages evenly over the teacher's depth "
                                           "(stage i covers the fraction (i + 1) / n_student of it)."))
    return _report(CheckResult(name, "correct", f"correct on all {len(cases)} cases."))


def check_adapter_parameters(answer: int | None, student_channels: int, teacher_channels: int) -> CheckResult:
    """The parameter count of ``HintAdapter(student_channels, teacher_channels)`` (1x1 conv, no bias, then batch norm)."""
    expected = student_channels * teacher_channels + 2 * teacher_channels
    return check_value("adapter parameters", answer, lambda a: int(a) == expected,
                       hint="count the 1x1 convolution's weights (no bias) and batch norm's scale and shift "
                            "per output channel.")


def _multi_at_reference(student_features: dict, teacher_features: dict, pairs: Sequence[tuple[str, str]],
                        beta: float) -> torch.Tensor:
    from .losses import at_loss

    return beta / 2 * sum(at_loss(student_features[s], teacher_features[t]) for s, t in pairs)


def check_multi_at_loss(learner_fn: Callable) -> CheckResult:
    """``learner_fn(student_features, teacher_features, pairs, beta)`` = ``beta / 2 * sum over pairs of at_loss``."""
    generator = torch.Generator().manual_seed(0)

    def features(widths: Sequence[int]) -> dict:
        return {f"s{k}": torch.randn(2, w, side, side, generator=generator)
                for k, (w, side) in enumerate(zip(widths, (28, 14, 7)))}

    student, teacher = features((4, 8, 16)), features((32, 64, 128))
    teacher = {key.replace("s", "t"): value for key, value in teacher.items()}
    cases = [(student, teacher, [("s1", "t1")], 1000.0),
             (student, teacher, [("s0", "t0"), ("s1", "t1"), ("s2", "t2")], 1000.0),
             (student, teacher, [("s2", "t2"), ("s1", "t1")], 2.0)]
    return check_function("multi-layer attention-transfer loss", learner_fn, _multi_at_reference, cases,
                          hint="sum at_loss over the (student_path, teacher_path) pairs, then multiply by beta / 2.")


# --- notebooks 01-02: soft targets and the distillation loss ---
def _entropy_reference(probabilities: torch.Tensor) -> torch.Tensor:
    return -torch.special.xlogy(probabilities, probabilities).sum(-1)


def check_entropy(learner_fn: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """Entropy in nats over the last axis, ``H(p) = -sum_i p_i log p_i`` (with ``0 log 0 = 0``)."""
    generator = torch.Generator().manual_seed(1)
    cases = [(torch.full((10,), 0.1),),
             (torch.softmax(torch.randn(4, 10, generator=generator) * 3, dim=-1),),
             (torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]),)]
    return check_function("entropy", learner_fn, _entropy_reference, cases,
                          hint="use the natural log, sum over the last axis only, and make sure a probability of "
                               "exactly 0 contributes 0 (not nan): torch.special.xlogy(p, p) computes p log p safely.")


def _soft_gradient_reference(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                             temperature: float) -> torch.Tensor:
    student = student_logits.detach().clone().requires_grad_(True)
    log_q = torch.log_softmax(student / temperature, dim=-1)
    p = torch.softmax(teacher_logits / temperature, dim=-1)
    (p * (p.log() - log_q)).sum().backward()
    return student.grad


def check_soft_gradient(learner_fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]) -> CheckResult:
    """The gradient of ``KL(p_T || q_T)`` (no T^2 factor) w.r.t. one example's student logits ``(C,)``."""
    generator = torch.Generator().manual_seed(2)
    cases = [(torch.randn(10, generator=generator), torch.randn(10, generator=generator) * 3, temperature)
             for temperature in (1.0, 2.0, 4.0, 10.0)]
    return check_function("soft-target gradient", learner_fn, _soft_gradient_reference, cases,
                          hint="differentiate KL(p || q) with q = softmax(z / T): the chain rule brings out a factor "
                               "1/T, and the log-softmax's derivative gives (q - p). Check the sign and the factor.")


def check_kd_loss(learner_fn: Callable) -> CheckResult:
    """A learner's ``kd_loss(student_logits, teacher_logits, targets, temperature, alpha)`` against the course's."""
    from .losses import kd_loss

    generator = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(8, 10, generator=generator), torch.randn(8, 10, generator=generator) * 4
    targets = torch.randint(0, 10, (8,), generator=generator)
    cases = [(student, teacher, targets, temperature, alpha)
             for temperature, alpha in ((1.0, 0.0), (1.0, 1.0), (4.0, 0.9), (2.0, 0.25), (10.0, 0.5))]
    return check_function("kd_loss", learner_fn, kd_loss, cases,
                          hint="alpha weights the soft term, 1 - alpha the cross-entropy; both student and teacher "
                               "are divided by T; the KL term is multiplied by T^2 and averaged over the batch "
                               "(reduction='batchmean').")


def _gap_closed_reference(student_accuracy: float, scratch_accuracy: float, teacher_accuracy: float) -> float:
    return (student_accuracy - scratch_accuracy) / (teacher_accuracy - scratch_accuracy)


def check_gap_closed(learner_fn: Callable[[float, float, float], float]) -> CheckResult:
    """``gap_closed(student_accuracy, scratch_accuracy, teacher_accuracy)``: 0 at scratch, 1 at the teacher."""
    cases = [(0.85, 0.80, 0.90), (0.80, 0.80, 0.92), (0.93, 0.81, 0.93), (0.78, 0.80, 0.90), (0.8875, 0.852, 0.921)]
    return check_function("gap closed", learner_fn, _gap_closed_reference, cases,
                          hint="the gap is teacher - scratch; the part a method closes is student - scratch. "
                               "A student worse than scratch closes a negative fraction; do not clip it.")


def check_high_temperature_limit(answer: str | None) -> CheckResult:
    """Multiple choice: what does the soft term ask of the student as T grows large (with the T^2 factor)?"""
    return check_value("high-temperature limit", None if answer is None else str(answer).strip().lower(),
                       lambda a: a == "b",
                       hint="look at the gradient T^2 (1/T)(q - p) as T grows: expand softmax(z / T) for large T "
                            "(exp(x) ~ 1 + x) and see what q - p becomes.")


# --- notebook 06: edge export ---


def check_affine_parameters(learner_fn: Callable) -> CheckResult:
    """Exercise: scale and zero point mapping ``[low, high]`` (widened to contain 0) onto ``[q_min, q_max]``."""
    from .export import affine_parameters

    def as_pair(result: Any) -> torch.Tensor | None:
        if result is None:
            return None
        scale, zero_point = result
        return torch.stack([torch.as_tensor(scale, dtype=torch.float64), torch.as_tensor(zero_point, dtype=torch.float64)])

    cases = [(-1.0, 3.0, 0, 255), (0.0, 6.0, 0, 255), (-2.5, 0.5, -128, 127), (0.5, 4.0, 0, 255)]
    return check_function("affine_parameters", lambda *args: as_pair(learner_fn(*args)),
                          lambda *args: as_pair(affine_parameters(*args)), cases,
                          hint="s = (high - low) / (q_max - q_min) and z = q_min - round(low / s); widen the range "
                               "to contain 0 first (low = min(low, 0), high = max(high, 0)).")


def check_per_channel_scales(learner_fn: Callable) -> CheckResult:
    """Exercise: symmetric INT8 scales, one per output channel: ``max |w| / 127`` over every axis but the first."""
    generator = torch.Generator().manual_seed(6)
    cases = [(torch.randn(8, 4, 3, 3, generator=generator),), (torch.randn(10, 64, generator=generator),),
             (torch.randn(3, 2, 5, generator=generator) * 0.01,)]
    reference = lambda weight: weight.abs().amax(dim=tuple(range(1, weight.ndim))) / 127
    return check_function("per_channel_scales", learner_fn, reference, cases, atol=1e-7, rtol=1e-5,
                          hint="reduce |w| with amax over all axes except axis 0 (the output channels): the result has "
                               "one scale per output channel, shape (C_out,).")


def check_budget_choice(answer: Any, expected: str) -> CheckResult:
    """Exercise: the model a budget selects (the notebook computes ``expected`` from its own measurements)."""
    return check_value("edge budget", answer, lambda a: str(a) == expected,
                       hint="keep the models that pass all three limits, then take the most accurate of them "
                            "(use the `entries` list, not the plot, and mind the units: KB and ms).")


# --- notebook 02b: transfer sets ---
def check_rebalancing_weights(learner_fn: Callable[[torch.Tensor], torch.Tensor]) -> CheckResult:
    """Exercise (02b): ``learner_fn(teacher_logits)`` -> per-image weights giving every predicted class the same total."""
    from .transfer import rebalancing_weights

    generator = torch.Generator().manual_seed(21)
    one_hot = torch.nn.functional.one_hot(torch.tensor([0, 0, 0, 1, 2, 2]), 4).float() * 5  # class 3 never predicted
    skewed = torch.randn(200, 10, generator=generator)
    skewed[:150, 0] += 4.0  # the teacher files most images under class 0
    cases = [(one_hot,), (torch.randn(50, 10, generator=generator),), (skewed,)]
    return check_function("rebalancing weights", learner_fn, rebalancing_weights, cases, atol=1e-6,
                          hint="take each image's predicted class (argmax), count the images per class, give each "
                               "image 1 / (its class's count) and normalise so the weights sum to 1; a class the "
                               "teacher never predicts has no images and gets no share.")
