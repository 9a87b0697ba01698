"""The course's exercises, learntools-style: check an answer, ask for a hint, reveal the solution.

    exercise = cu.exercises.get("02.kd_loss")
    exercise.check(kd_loss)   # correct / wrong (naming the typical mistake it recognises) / not attempted
    exercise.hint()           # tier 1; exercise.hint(2) gives the next one. Printed only when asked
    exercise.solution()       # prints the answer key from course_utils/solutions.py. Only when asked

Each check compares the learner's function with the package's own implementation (the hidden
reference, e.g. ``cu.losses.kd_loss``) on fixed cases, and after a wrong answer runs every registered
:class:`cu.checks.Mistake` on the same cases to name the one the learner made. Checks are deterministic
and take well under a second. :func:`compare_prediction` is the "predict, then run" helper.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import checks, evaluate, export, language, losses, schedule, vibration
from .checks import CheckResult, Mistake
from .images import recipes, transfer


@dataclass(frozen=True)
class Exercise:
    """One exercise: its hidden reference, fixed cases, typical mistakes, tiered hints and answer key.

    A *function* exercise has ``cases`` (a function returning tuples of positional arguments); the
    learner's function is called on each and compared with ``reference``. A *value* exercise has no
    cases: ``reference(**context)`` is the right answer and each mistake's ``variant(**context)`` a
    typical wrong one. ``wrap`` turns a function's result into one comparable tensor (applied to the
    learner's, the reference's and the mistakes' functions alike).
    """

    id: str  # "<notebook>.<name>", e.g. "02.kd_loss"
    title: str
    hints: tuple[str, ...]
    solution_name: str  # the function in course_utils/solutions.py
    reference: Callable[..., Any]
    cases: Callable[[], list[tuple]] | None = None
    mistakes: tuple[Mistake, ...] = ()
    also_correct: tuple[Callable[..., Any], ...] = ()  # other accepted answers (e.g. rounding down or up)
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None
    context: Mapping[str, Any] = field(default_factory=dict)  # value exercises: the default context
    atol: float = 1e-5
    rtol: float = 1e-4

    @property
    def notebook(self) -> str:
        return self.id.split(".", 1)[0]

    def _footer(self) -> str:
        return f'For a hint: cu.exercises.get("{self.id}").hint()'

    def check(self, answer: Any, **context: Any) -> CheckResult:
        """Check the learner's function (or value); prints and returns a :class:`cu.checks.CheckResult`.

        Never prints a hint or the solution. ``context`` overrides a value exercise's data (e.g. the
        notebook's own measurements, from which the right answer is computed).
        """
        if self.cases is None:
            values = {**self.context, **context}
            expected = self.reference(**values)
            wrong = [Mistake(m.name, m.advice, functools.partial(_makes, value=m.variant(**values)))
                     for m in self.mistakes]
            return checks.check_value(self.title, answer, functools.partial(_makes, value=expected),
                                      mistakes=wrong, footer=self._footer())
        if context:
            raise TypeError(f"{self.id} checks a function on fixed cases and takes no context, got {sorted(context)}.")
        wrap = self.wrap or (lambda fn: fn)
        return checks.check_function(self.title, wrap(answer), wrap(self.reference), self.cases(),
                                     atol=self.atol, rtol=self.rtol, footer=self._footer(),
                                     mistakes=[Mistake(m.name, m.advice, wrap(m.variant)) for m in self.mistakes],
                                     also_correct=[wrap(fn) for fn in self.also_correct])

    def hint(self, level: int = 1) -> None:
        """Print hint number ``level`` (1 is the gentlest; the last one nearly gives the answer)."""
        if isinstance(level, bool) or not isinstance(level, int) or level < 1:
            raise ValueError(f"level must be 1, 2, ... (up to {len(self.hints)}), got {level!r}.")
        shown = min(level, len(self.hints))
        more = (f' (a stronger one: cu.exercises.get("{self.id}").hint({shown + 1}))' if shown < len(self.hints)
                else f' (that was the last hint; the answer: cu.exercises.get("{self.id}").solution())')
        print(f"💡 Hint {shown} of {len(self.hints)} for {self.title}: {self.hints[shown - 1]}{more}")

    def solution_function(self) -> Callable[..., Any]:
        """The answer key's function (for tests and instructors)."""
        from . import solutions

        return getattr(solutions, self.solution_name)

    def solution(self) -> None:
        """Print the answer key's source (``course_utils/solutions.py``)."""
        print(f"Solution to {self.id} ({self.title}), from course_utils/solutions.py:\n")
        print(inspect.getsource(self.solution_function()))

    def solution_answer(self) -> Any:
        """What the answer key submits to :meth:`check`: its function, or for a value exercise its value."""
        function = self.solution_function()
        if self.cases is not None:
            return function
        parameters = inspect.signature(function).parameters
        return function(**{k: v for k, v in self.context.items() if k in parameters})


def _makes(answer: Any, value: Any) -> bool:
    """Whether a value exercise's ``answer`` equals ``value`` (numbers to 1e-6, text ignoring case and spaces)."""
    if isinstance(value, str):
        return str(answer).strip().lower() == value.strip().lower()
    if isinstance(value, (int, float)) and not isinstance(answer, (str, bool)):
        return math.isclose(float(answer), float(value), rel_tol=1e-6, abs_tol=1e-9)
    return answer == value


_REGISTRY: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    """Add ``exercise`` to the registry (ids are unique; every exercise needs a hint, a solution and two mistakes)."""
    if exercise.id in _REGISTRY:
        raise ValueError(f"an exercise {exercise.id!r} is already registered.")
    if not exercise.hints or len(exercise.mistakes) < 2:
        raise ValueError(f"{exercise.id}: give at least one hint and two typical mistakes.")
    _REGISTRY[exercise.id] = exercise
    return exercise


def get(exercise_id: str) -> Exercise:
    """The exercise called ``exercise_id`` ("02.kd_loss"); an unknown id says which ones exist."""
    if exercise_id not in _REGISTRY:
        close = difflib.get_close_matches(str(exercise_id), list(_REGISTRY), n=1)
        guess = f" Did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"no exercise {exercise_id!r}.{guess} The exercises are: {', '.join(_REGISTRY)}.")
    return _REGISTRY[exercise_id]


def all_exercises(notebook: str | None = None) -> list[Exercise]:
    """Every registered exercise, or those of one notebook ("02"), in course order."""
    return [e for e in _REGISTRY.values() if notebook is None or e.notebook == notebook]


def answer_key(notebook: str | None = None) -> str:
    """A Markdown table of the exercises (for the instructor guide): each one's id and title, the typical
    mistakes its check names, and where its answer key lives."""
    rows = ["| exercise | the learner writes | mistakes the check names | answer key |", "|---|---|---|---|"]
    for exercise in all_exercises(notebook):
        kind = "a function" if exercise.cases is not None else "a value"
        mistakes = "; ".join(dict.fromkeys(mistake.name for mistake in exercise.mistakes))  # each name once
        rows.append(f"| `{exercise.id}` | {exercise.title} ({kind}) | {mistakes} | "
                    f"`course_utils/solutions.py::{exercise.solution_name}` |")
    return "\n".join(rows)


# --- predict, then run ---------------------------------------------------------------------------------------------


@dataclass
class PredictionResult:
    """A prediction set against a measurement: ``status`` is "no prediction", "close", "off" or "not comparable"."""

    name: str
    status: str
    message: str

    def __repr__(self) -> str:
        icon = {"no prediction": "📝", "close": "🎯", "off": "🔍", "not comparable": "📝"}[self.status]
        return f"{icon} {self.name}: {self.message}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(float(value))


def compare_prediction(prediction: Any, measured: Any, *, name: str = "your prediction", unit: str = "",
                       tolerance: float | None = None, digits: int = 3) -> PredictionResult:
    """Set the learner's ``prediction`` (recorded before the experiment ran) against the ``measured`` result.

    ``prediction`` may be a number (close when within ``tolerance``, if given), a ``(low, high)`` range
    (close when ``measured`` falls inside), or a word or choice such as "win" (compared ignoring case).
    ``None`` gives a gentle "no prediction recorded" line, never an error. Prints and returns a
    :class:`PredictionResult`.
    """
    if isinstance(measured, (torch.Tensor, np.ndarray)):
        measured = measured.item()
    if measured is None or (isinstance(measured, float) and not math.isfinite(measured)):
        raise ValueError(f"measured must be the experiment's result (a finite number or a word), got {measured!r}.")
    suffix = f" {unit}" if unit else ""

    def show(value: Any) -> str:
        return f"{value:.{digits}g}{suffix}" if _is_number(value) else repr(value)

    if prediction is None or prediction is ...:
        result = PredictionResult(name, "no prediction", f"no prediction recorded; the run measured {show(measured)}. "
                                  "Next time write your guess in the variable before running: a guess you can check "
                                  "shows what surprised you.")
    elif isinstance(measured, (str, bool)):
        right = (str(prediction).strip().lower() == str(measured).strip().lower() if isinstance(measured, str)
                 else prediction is measured)
        result = PredictionResult(name, "close" if right else "off", f"you predicted {prediction!r}; the run gave "
                                  f"{measured!r}." + ("" if right else " What did you expect to happen, and why didn't it?"))
    elif not _is_number(measured):
        raise TypeError(f"measured must be a number, a word or a bool, got {type(measured).__name__}.")
    elif isinstance(prediction, (tuple, list)) and len(prediction) == 2 and all(map(_is_number, prediction)):
        low, high = sorted(float(v) for v in prediction)
        inside = low <= measured <= high
        result = PredictionResult(name, "close" if inside else "off", f"you predicted {show(low)} to {show(high)}; "
                                  f"the run measured {show(measured)}, {'inside' if inside else 'outside'} your range.")
    elif _is_number(prediction):
        error = float(measured) - float(prediction)
        close = tolerance is not None and abs(error) <= tolerance
        judged = ("" if tolerance is None else
                  f", {'within' if close else 'outside'} your tolerance of {show(tolerance)}")
        direction = "higher" if error > 0 else "lower" if error < 0 else "exactly"
        message = (f"you predicted {show(prediction)}; the run measured {show(measured)}, "
                   f"{show(abs(error)) + ' ' if error else ''}{direction} than your guess{judged}."
                   if error else f"you predicted {show(prediction)}; the run measured exactly that.")
        if float(prediction) * float(measured) < 0:
            message += " Note the sign: the run went the other way from your guess."
        result = PredictionResult(name, "close" if close or error == 0 else "off", message)
    else:
        result = PredictionResult(name, "not comparable", f"cannot compare {prediction!r} with the measured "
                                  f"{show(measured)}: record a number (or a (low, high) range) next time.")
    print(repr(result))
    return result


# --- shared helpers for the cases -----------------------------------------------------------------------------------


def _randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def _stack(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a function returning several numbers or tensors so that it returns one flat tensor."""

    def call(*args: Any) -> torch.Tensor | None:
        result = fn(*args)
        if result is None:
            return None
        parts = result if isinstance(result, (tuple, list)) else (result,)
        return torch.cat([torch.as_tensor(np.asarray(part, dtype=np.float64) if not isinstance(part, torch.Tensor)
                                          else part.detach().double()).reshape(-1) for part in parts])

    return call


# === 01 · soft targets and temperature ==============================================================================


@functools.cache
def _softmax_cases() -> list[tuple]:
    large = _randn(64, 10, seed=0, scale=20.0)  # (64, 10): gaps of 50+ overflow exp() without the max trick
    return [(large, t) for t in (0.5, 1.0, 4.0, 10.0)] + [(torch.tensor([6.0, 3.0, 2.0, -2.0]), 2.0)]


def _naive_softmax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return z.exp() / z.exp().sum(dim=dim, keepdim=True)


register(Exercise(
    "01.softmax_temperature", "softmax with temperature",
    hints=("Divide the logits by T, then take an ordinary softmax over the last axis (dim=-1).",
           "exp() of a logit of 100 overflows to inf, and inf / inf is nan. Subtracting each row's largest value "
           "before exp() changes no probability (it cancels in the ratio) and keeps every exponent <= 0.",
           "scaled = logits / T; scaled = scaled - scaled.max(dim=-1, keepdim=True).values; "
           "then exp() and divide by the sum over dim=-1 (keepdim=True)."),
    solution_name="softmax_with_temperature",
    reference=lambda logits, temperature: losses.soft_targets(logits, temperature),
    cases=_softmax_cases,
    mistakes=(
        Mistake("the temperature multiplied instead of divided",
                "softmax(z / T) divides every logit by T, so a larger T flattens the distribution.",
                lambda z, t: torch.softmax(z * t, dim=-1)),
        Mistake("exp() overflowing on large logits (no max subtracted)",
                "subtract each row's largest scaled logit before exp(); it cancels in the ratio.",
                lambda z, t: _naive_softmax(z / t)),
        Mistake("the softmax taken over the wrong axis",
                "the classes are the last axis: normalise with dim=-1, so that each row sums to 1.",
                lambda z, t: torch.softmax(z / t, dim=0)),
        Mistake("the exponentials not normalised",
                "divide by their sum over the classes so that each row sums to 1.",
                lambda z, t: (z / t - (z / t).max(dim=-1, keepdim=True).values).exp()),
    )))


@functools.cache
def _entropy_cases() -> list[tuple]:
    return [(torch.full((10,), 0.1),), (torch.softmax(_randn(4, 10, seed=1, scale=3.0), dim=-1),),
            (torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]),),
            (torch.softmax(_randn(2, 3, 5, seed=11), dim=-1),)]


register(Exercise(
    "01.entropy", "entropy",
    hints=("H(p) = -sum_i p_i log p_i, summed over the last axis only: the result has one value per distribution.",
           "In nats means the natural log (torch.log), not log2. And 0 * log(0) is 0 * -inf = nan in floating point.",
           "torch.special.xlogy(p, p) computes p log p and gives exactly 0 where p = 0: "
           "return -torch.special.xlogy(p, p).sum(dim=-1)."),
    solution_name="entropy",
    reference=losses.entropy,
    cases=_entropy_cases,
    mistakes=(
        Mistake("0 log 0 computed as nan",
                "a probability of exactly 0 must contribute 0 (the limit of p log p), but 0 * log(0) is nan in "
                "floating point; torch.special.xlogy(p, p) handles it.",
                lambda p: -(p * p.log()).sum(-1)),
        Mistake("log base 2 (bits, not nats)", "use the natural logarithm: entropy in nats.",
                lambda p: -torch.special.xlogy(p, p).sum(-1) / math.log(2)),
        Mistake("the minus sign missing", "H(p) = -sum p log p is >= 0, since every log p <= 0.",
                lambda p: torch.special.xlogy(p, p).sum(-1)),
        Mistake("a sum over every axis", "sum over the last (class) axis only: one entropy per distribution.",
                lambda p: -torch.special.xlogy(p, p).sum()),
        Mistake("a mean over the classes instead of a sum", "entropy sums over the classes (no division by C).",
                lambda p: -torch.special.xlogy(p, p).mean(-1)),
    )))


@functools.cache
def _soft_gradient_cases() -> list[tuple]:
    return [(_randn(10, seed=20 + k), _randn(10, seed=30 + k, scale=3.0), t) for k, t in enumerate((1.0, 2.0, 4.0, 10.0))]


def _soft_gradient_reference(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Autograd through the package's own loss: ``d KL(p_T || q_T) / dz`` = the soft term of kd_loss over T^2."""
    student = student_logits.detach().double()[None].requires_grad_(True)
    soft = losses.kd_loss(student, teacher_logits.double()[None], None, temperature=temperature, alpha=1.0)
    (soft / temperature**2).backward()
    return student.grad[0]


def _q_minus_p(z: torch.Tensor, v: torch.Tensor, t: float, student_t: float | None = None,
               teacher_t: float | None = None) -> torch.Tensor:
    return torch.softmax(z / (student_t or t), -1) - torch.softmax(v / (teacher_t or t), -1)


register(Exercise(
    "01.soft_gradient", "soft-target gradient",
    hints=("Only the student's side depends on z: d KL(p || q) / dz_i = -sum_k p_k d log q_k / dz_i.",
           "With q = softmax(z / T), d log q_k / dz_i = (1[k = i] - q_i) / T: the chain rule through z / T "
           "brings out a factor 1 / T. Sum over k (the p_k sum to 1).",
           "p = softmax(teacher / T), q = softmax(student / T), and the gradient is (q - p) / T."),
    solution_name="soft_target_gradient",
    reference=_soft_gradient_reference,
    cases=_soft_gradient_cases,
    mistakes=(
        Mistake("the 1/T factor missing", "the chain rule through z / T brings out a factor 1 / T.",
                lambda z, v, t: _q_minus_p(z, v, t)),
        Mistake("the T^2 factor included", "this exercise asks for the gradient of the KL term alone; the T^2 "
                "factor belongs to the loss of notebook 02, not here.",
                lambda z, v, t: t * _q_minus_p(z, v, t)),
        Mistake("the sign flipped", "gradient descent moves z against the gradient, so the gradient must push q "
                "towards p: it is (q - p) / T, not (p - q) / T.",
                lambda z, v, t: -_q_minus_p(z, v, t) / t),
        Mistake("the teacher not softened", "p is the teacher's softmax at the same temperature T.",
                lambda z, v, t: _q_minus_p(z, v, t, teacher_t=1.0) / t),
        Mistake("the student not softened", "q is the student's softmax at temperature T.",
                lambda z, v, t: _q_minus_p(z, v, t, student_t=1.0) / t),
    )))


register(Exercise(
    "01.high_temperature_limit", "high-temperature limit",
    hints=("Look at the gradient with the T^2 factor, T (q - p), as T grows.",
           "For large T, exp(x / T) is about 1 + x / T, so q_i is about (1 + z_i / T) / C once z has zero mean. "
           "Do the same for p and subtract.",
           "T (q_i - p_i) tends to (z_i - v_i) / C: the gradient of a squared difference between two vectors."),
    solution_name="high_temperature_limit",
    reference=lambda: "b",
    mistakes=(
        Mistake("the one-hot labels", "the labels appear only in the hard term; the soft term has no labels at any T.",
                lambda: "a"),
        Mistake("the uniform distribution", "p and q both tend to uniform, but with the T^2 factor the gradient "
                "T (q - p) does not vanish: expand softmax(z / T) for large T and see what is left.", lambda: "c"),
    )))


# === 02 · the distillation loss =====================================================================================


@functools.cache
def _kd_cases() -> list[tuple]:
    generator = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(8, 10, generator=generator), torch.randn(8, 10, generator=generator) * 4
    targets = torch.randint(0, 10, (8,), generator=generator)
    return [(student, teacher, targets, t, a) for t, a in ((1.0, 0.0), (1.0, 1.0), (4.0, 0.9), (2.0, 0.25), (10.0, 0.5))]


def _kd_variant(*, t_squared: bool = True, swap: bool = False, probabilities: bool = False, per: str = "batch",
                swap_alpha: bool = False, teacher_t: float | None = None, hard_t: bool = False) -> Callable:
    """The KD loss with one typical mistake switched on (``per``: "batch", "element" or "sum")."""

    def loss(s: torch.Tensor, v: torch.Tensor, y: torch.Tensor, t: float, a: float) -> torch.Tensor:
        log_q, log_p = F.log_softmax(s / t, -1), F.log_softmax(v / (teacher_t or t), -1)
        if swap:
            log_q, log_p = log_p, log_q
        kl = (log_p.exp() * (log_p - (log_q.exp() if probabilities else log_q))).sum()
        soft = kl / {"batch": len(s), "element": s.numel(), "sum": 1}[per] * (t**2 if t_squared else 1.0)
        hard = F.cross_entropy(s / t if hard_t else s, y)
        return a * hard + (1 - a) * soft if swap_alpha else (1 - a) * hard + a * soft

    return loss


register(Exercise(
    "02.kd_loss", "kd_loss",
    hints=("Two terms: the cross-entropy with the labels at T = 1, and the KL divergence between the teacher's and "
           "the student's softmax at temperature T. alpha weights the soft term, 1 - alpha the hard one.",
           "F.kl_div(input, target) expects input = the student's LOG-probabilities and computes KL(target || input). "
           "With log_target=True the target is the teacher's log-probabilities too. reduction='batchmean' "
           "divides by the batch size; the default 'mean' also divides by the number of classes.",
           "soft = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), reduction='batchmean', "
           "log_target=True); return (1 - alpha) * F.cross_entropy(s, y) + alpha * T**2 * soft."),
    solution_name="kd_loss",
    reference=losses.kd_loss,
    cases=_kd_cases,
    mistakes=(
        Mistake("the T^2 factor missing", "multiply the soft term by T^2, or its gradients shrink as 1/T^2 "
                "(notebook 01) and the labels take over at high temperature.", _kd_variant(t_squared=False)),
        Mistake("the KL arguments swapped", "the student matches the teacher: KL(p_teacher || q_student). "
                "In F.kl_div(input, target), input is the student's log-probabilities and target the teacher's.",
                _kd_variant(swap=True)),
        Mistake("probabilities where log-probabilities are expected", "F.kl_div's first argument must be the "
                "student's log-probabilities (F.log_softmax), not its probabilities.", _kd_variant(probabilities=True)),
        Mistake("reduction 'mean' instead of 'batchmean'", "'mean' divides by batch x classes and shrinks the "
                "soft term C-fold; 'batchmean' divides by the batch size only (the true KL per example).",
                _kd_variant(per="element")),
        Mistake("the KL summed over the batch", "average over the examples (reduction='batchmean'), like the "
                "cross-entropy, so that the loss does not grow with the batch size.", _kd_variant(per="sum")),
        Mistake("alpha on the wrong term", "alpha weights the soft term (the teacher) and 1 - alpha the "
                "cross-entropy with the labels, as in Hinton et al. (2015).", _kd_variant(swap_alpha=True)),
        Mistake("the teacher not softened", "divide the teacher's logits by T too: both distributions are softened.",
                _kd_variant(teacher_t=1.0)),
        Mistake("the hard term softened", "the cross-entropy with the labels uses the plain logits (T = 1); "
                "only the soft term divides by T.", _kd_variant(hard_t=True)),
    )))


@functools.cache
def _bias_shift_cases() -> list[tuple]:
    cases = []
    for seed, (classes, omitted) in enumerate(((4, 2), (5, 0), (3, 1))):
        generator = torch.Generator().manual_seed(40 + seed)
        labels = torch.randint(0, classes, (300,), generator=generator)
        logits = torch.randn(300, classes, generator=generator) + 2.5 * F.one_hot(labels, classes)
        logits[:, omitted] -= 3.0  # never rewarded: the omitted class is under-predicted
        cases.append((logits, labels, omitted, [k / 2 for k in range(17)]))  # shifts 0, 0.5, ..., 8
    labels = torch.arange(3).repeat_interleave(10)  # a plateau: every shift in (2, 5) recovers class 1 without harm
    logits = 5.0 * F.one_hot(labels, 3)
    logits[labels == 1, 1] = -2.0
    return [*cases, (logits, labels, 1, [k / 2 for k in range(17)])]


def _best_shift_by(score: Callable[[torch.Tensor, torch.Tensor, int], float], largest_on_ties: bool = False) -> Callable:
    def choose(logits: torch.Tensor, labels: torch.Tensor, k: int, shifts: Sequence[float]) -> float:
        def value(shift: float) -> float:
            return score(recipes.bias_shift(logits, k, shift).argmax(-1), labels, k)

        return max(sorted(shifts, reverse=largest_on_ties), key=value)

    return choose


register(Exercise(
    "02.best_bias_shift", "best_bias_shift",
    hints=("Try every shift: add it to the omitted class's logit (one column), predict with argmax, measure the "
           "accuracy over all the images, and keep the shift with the best accuracy.",
           "Work on logits.clone(): adding in place would change the caller's logits and pile the shifts up. "
           "Measure the OVERALL accuracy (every class), not the omitted class's own: raising its logit always "
           "helps that class and hurts the others. Go through the shifts from smallest to largest and keep the "
           "first best, so that a tie keeps the smaller shift.",
           "for shift in sorted(shifts): shifted = logits.clone(); shifted[:, k] += shift; accuracy = "
           "(shifted.argmax(1) == labels).float().mean(); keep the shift when accuracy is strictly better."),
    solution_name="best_bias_shift",
    reference=recipes.best_bias_shift,
    cases=_bias_shift_cases,
    mistakes=(
        Mistake("the omitted class's own accuracy maximised", "choose the shift by the accuracy over ALL images: "
                "the omitted class's accuracy only grows with the shift, at the other classes' expense.",
                _best_shift_by(lambda pred, y, k: (pred[y == k] == k).float().mean().item())),
        Mistake("the largest shift kept among ties", "several shifts often give the same accuracy; keep the "
                "smallest (the least change to the model).",
                _best_shift_by(lambda pred, y, k: (pred == y).float().mean().item(), largest_on_ties=True)),
        Mistake("the shift added to every class", "add the shift to one column, the omitted class's logit: a "
                "constant added to all logits changes no prediction.", lambda logits, y, k, shifts: min(shifts)),
    )))

register(Exercise(
    "02.gap_closed", "gap closed",
    hints=("The gap is what separates the scratch student from the teacher.",
           "Divide the part the method closes (student - scratch) by the whole gap (teacher - scratch). "
           "A student worse than scratch closes a negative fraction: do not clip it."),
    solution_name="gap_closed",
    reference=evaluate.gap_closed,
    cases=lambda: [(0.85, 0.80, 0.90), (0.80, 0.80, 0.92), (0.93, 0.81, 0.93), (0.78, 0.80, 0.90), (0.8875, 0.852, 0.921)],
    mistakes=(
        Mistake("the result clipped at 0", "a student worse than scratch closes a negative fraction; keep the sign, "
                "it is information.", lambda s, b, t: max(0.0, (s - b) / (t - b))),
        Mistake("a division by the teacher's accuracy", "divide by the gap, teacher - scratch, not by the teacher's "
                "accuracy.", lambda s, b, t: (s - b) / t),
        Mistake("the gap left instead of the gap closed", "0 must mean 'no better than scratch' and 1 'as good as "
                "the teacher'.", lambda s, b, t: (t - s) / (t - b)),
    )))


def _gain(row: Mapping[str, Any]) -> float:
    return row["kd"]["mean"] - row["scratch"]["mean"]


_EXAMPLE_ROWS = ({"student": "cnn-2k", "parameters": 2_000, "scratch": {"mean": 0.800}, "kd": {"mean": 0.802}},
                 {"student": "cnn-9k", "parameters": 9_000, "scratch": {"mean": 0.850}, "kd": {"mean": 0.865}},
                 {"student": "cnn-104k", "parameters": 104_000, "scratch": {"mean": 0.880}, "kd": {"mean": 0.886}})

register(Exercise(
    "02.largest_gain", "largest distillation gain",
    hints=("The gain of a student is its distilled mean minus its own scratch mean, in points.",
           "Compute row['kd']['mean'] - row['scratch']['mean'] for every row, then take the student with the largest."),
    solution_name="largest_distillation_gain",
    reference=lambda rows: max(rows, key=_gain)["student"],
    context={"rows": _EXAMPLE_ROWS},
    mistakes=(
        Mistake("the most accurate distilled student", "the question is the largest GAIN (distilled - scratch of "
                "the same student), not the highest accuracy.",
                lambda rows: max(rows, key=lambda row: row["kd"]["mean"])["student"]),
        Mistake("the smallest gain (scratch - distilled)", "the gain is distilled minus scratch; take the largest.",
                lambda rows: min(rows, key=_gain)["student"]),
    )))


# === 02b · transfer sets =============================================================================================


@functools.cache
def _rebalancing_cases() -> list[tuple]:
    generator = torch.Generator().manual_seed(21)
    never_three = 5.0 * F.one_hot(torch.tensor([0, 0, 0, 1, 2, 2]), 4).float()  # class 3 never predicted
    skewed = torch.randn(200, 10, generator=generator)
    skewed[:150, 0] += 4.0  # the teacher files most images under class 0
    return [(never_three,), (torch.randn(50, 10, generator=generator),), (skewed,)]


def _per_predicted_class(total: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    """A variant: ``total(counts (C,), predicted (N,))`` -> per-image weights (a typical wrong normalisation)."""

    def weights(teacher_logits: torch.Tensor) -> torch.Tensor:
        predicted = teacher_logits.argmax(1)
        return total(torch.bincount(predicted, minlength=teacher_logits.shape[1]).double(), predicted)

    return weights


register(Exercise(
    "02b.rebalancing_weights", "rebalancing_weights",
    hints=("Work with the teacher's predicted class of each image (its arg-max): no true label is available. "
           "Images of a class the teacher predicts rarely must weigh more, each in inverse proportion to how many "
           "images share its class.",
           "Count the images per predicted class with torch.bincount(predicted, minlength=C); give each image "
           "1 / (the count of its class), one weight per IMAGE (shape (N,)), then normalise so the weights sum to 1. "
           "Every predicted class then holds the same total, and a class never predicted holds none.",
           "predicted = teacher_logits.argmax(1); counts = torch.bincount(predicted, minlength=teacher_logits.shape[1]); "
           "weights = 1.0 / counts[predicted]; return weights / weights.sum()."),
    solution_name="rebalancing_weights",
    reference=transfer.rebalancing_weights,
    cases=_rebalancing_cases,
    atol=1e-6,
    mistakes=(
        Mistake("weights that do not sum to 1", "normalise: divide the weights by their sum, so that they are a "
                "distribution to sample from (each predicted class then holds 1 / the number of classes predicted).",
                _per_predicted_class(lambda counts, predicted: 1.0 / counts[predicted])),
        Mistake("a share kept for the classes the teacher never predicts", "divide by the number of classes the "
                "teacher predicts at least once, not by the number of columns: a class without images cannot be "
                "drawn, so its share would be lost and the weights would not sum to 1.",
                _per_predicted_class(lambda counts, predicted: 1.0 / (len(counts) * counts[predicted]))),
        Mistake("one weight per class instead of one per image", "return a weight for every image, shape (N,): "
                "index the per-class values with each image's predicted class (values[predicted]).",
                _per_predicted_class(lambda counts, predicted: torch.where(counts > 0, 1.0 / (counts > 0).sum(), 0.0))),
        Mistake("weights that follow the class counts instead of undoing them", "a frequent class must get LESS "
                "weight per image: use 1 / count, not count.",
                _per_predicted_class(lambda counts, predicted: counts[predicted] / counts[predicted].sum())),
    )))


# === 03 · feature distillation ======================================================================================


def _seeded(seed: int, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


@functools.cache
def _hint_cases() -> list[tuple]:
    return [(_randn(4, 8, 14, 14, seed=50), _randn(4, 32, 14, 14, seed=51),
             _seeded(52, lambda: losses.HintAdapter(8, 32))),
            (_randn(2, 4, 7, 7, seed=53, scale=2.0), _randn(2, 16, 7, 7, seed=54).relu(),
             _seeded(55, lambda: losses.HintAdapter(4, 16, kernel_size=3)))]


def _hint_variant(reduce: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    return lambda s, t, adapter: reduce(adapter(s) - t.detach())


register(Exercise(
    "03.hint_loss", "hint loss through an adapter",
    hints=("The adapter r maps the student's features to the teacher's width; the loss is the squared error "
           "between r(student features) and the teacher's features.",
           "Average the squared error over every element (batch, channels and positions), like F.mse_loss; the "
           "teacher's side is a fixed target (detach it).",
           "return (adapter(student_features) - teacher_features.detach()).pow(2).mean()"),
    solution_name="hint_loss",
    reference=lambda s, t, adapter: losses.hint_loss(s, t, adapter=adapter),
    cases=_hint_cases,
    mistakes=(
        Mistake("the paper's 1/2 factor", "the course averages the squared error without the 1/2 of "
                "Romero et al.'s formula (cu.losses.hint_loss's convention).",
                _hint_variant(lambda d: 0.5 * d.pow(2).mean())),
        Mistake("a sum instead of a mean", "average over every element, so that the loss does not grow with the "
                "layer's size or the batch.", _hint_variant(lambda d: d.pow(2).sum())),
        Mistake("a sum over each example's elements", "average over channels and positions too, not only over "
                "the batch.", _hint_variant(lambda d: d.pow(2).sum(dim=(1, 2, 3)).mean())),
        Mistake("the absolute error instead of the squared error", "square the difference (an L2 loss).",
                _hint_variant(lambda d: d.abs().mean())),
        Mistake("the root of the mean squared error", "no square root: the hint loss is the mean squared error.",
                _hint_variant(lambda d: d.pow(2).mean().sqrt())),
    )))


@functools.cache
def _align_cases() -> list[tuple]:
    return [(_randn(2, 4, 28, 28, seed=60), (14, 14)), (_randn(2, 4, 14, 14, seed=61), (7, 7)),
            (_randn(2, 4, 28, 28, seed=65), (7, 7)), (_randn(1, 3, 10, 10, seed=66), (4, 4)),
            (_randn(2, 4, 7, 7, seed=62), (14, 14)), (_randn(1, 3, 5, 5, seed=63), (9, 9)),
            (_randn(2, 4, 14, 14, seed=64), (14, 14))]


def _align_variant(shrink: Callable, grow: Callable) -> Callable:
    def align(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(features.shape[-2:]) == tuple(size):
            return features
        return shrink(features, size) if features.shape[-2] >= size[0] else grow(features, size)

    return align


def _bilinear(features: torch.Tensor, size: tuple[int, int], corners: bool = False) -> torch.Tensor:
    return F.interpolate(features, size=size, mode="bilinear", align_corners=corners)


register(Exercise(
    "03.align_spatial", "spatial alignment",
    hints=("Two cases: the student's map is larger than the target size (shrink it) or smaller (grow it); "
           "return it unchanged when the sizes already match.",
           "To shrink, average the positions each output cell covers (F.adaptive_avg_pool2d); to grow, interpolate "
           "bilinearly (F.interpolate with mode='bilinear', align_corners=False)."),
    solution_name="align_spatial",
    reference=losses.align_spatial,
    cases=_align_cases,
    mistakes=(
        Mistake("max pooling to shrink", "average the positions (F.adaptive_avg_pool2d): a max keeps only the "
                "strongest response and changes the map's statistics.",
                _align_variant(F.adaptive_max_pool2d, _bilinear)),
        Mistake("interpolation to shrink", "bilinear interpolation samples a few positions and skips the rest "
                "when shrinking; average-pool instead.", _align_variant(_bilinear, _bilinear)),
        Mistake("align_corners=True when growing", "use align_corners=False (the pixel-centre convention).",
                _align_variant(F.adaptive_avg_pool2d, functools.partial(_bilinear, corners=True))),
        Mistake("nearest-neighbour growing", "grow with bilinear interpolation (mode='bilinear').",
                _align_variant(F.adaptive_avg_pool2d, lambda f, size: F.interpolate(f, size=size, mode="nearest"))),
    )))


def _mapping(rule: Callable[[float], int]) -> Callable[[int, int], list[int]]:
    return lambda n_student, n_teacher: [rule((i + 1) * n_teacher / n_student - 1) for i in range(n_student)]


register(Exercise(
    "03.progressive_mapping", "progressive layer mapping",
    hints=("Student stage i (of S) covers the fraction (i + 1) / S of the student's depth; find the teacher stage "
           "(of T) at the same fraction of the teacher's depth.",
           "That teacher stage is about (i + 1) * T / S - 1 (0-based). Round it down or up, either is accepted; "
           "the last student stage lands on the last teacher stage, T - 1.",
           "[(i + 1) * n_teacher // n_student - 1 for i in range(n_student)]"),
    solution_name="progressive_mapping",
    reference=_mapping(math.floor),
    also_correct=(_mapping(math.ceil), _mapping(lambda x: math.floor(x + 0.5)), _mapping(round)),
    cases=lambda: [(3, 3), (2, 4), (3, 4), (3, 5), (1, 3), (4, 8), (2, 3), (3, 6)],
    mistakes=(
        Mistake("the last student stage not on the last teacher stage", "the last stages of both networks feed "
                "their classifiers and must meet: stage i covers the fraction (i + 1) / S, not i / S.",
                lambda s, t: [i * t // s for i in range(s)]),
        Mistake("1-based teacher indices", "index the teacher's stages from 0: the last one is T - 1.",
                lambda s, t: [(i + 1) * t // s for i in range(s)]),
        Mistake("the first student stage pinned to the first teacher stage", "spreading from stage 0 to T - 1 "
                "gives the first student stage a far too shallow teacher stage; stage i covers the fraction "
                "(i + 1) / S of the depth.",
                lambda s, t: [t - 1] if s == 1 else [round(i * (t - 1) / (s - 1)) for i in range(s)]),
    )))

register(Exercise(
    "03.adapter_parameters", "adapter parameters",
    hints=("A 1x1 convolution from C_s to C_t channels has one weight per (input, output) channel pair; "
           "this one has no bias.",
           "Batch norm learns a scale and a shift per output channel; its running mean and variance are buffers, "
           "not parameters."),
    solution_name="adapter_parameters",
    reference=lambda student_channels, teacher_channels: student_channels * teacher_channels + 2 * teacher_channels,
    context={"student_channels": 16, "teacher_channels": 64},
    mistakes=(
        Mistake("a convolution bias counted", "the 1x1 convolution has bias=False (batch norm's shift plays its role).",
                lambda student_channels, teacher_channels: (student_channels + 3) * teacher_channels),
        Mistake("batch norm forgotten", "batch norm learns a scale and a shift per output channel.",
                lambda student_channels, teacher_channels: student_channels * teacher_channels),
        Mistake("batch norm's running statistics counted", "the running mean and variance are buffers, updated "
                "but not learned: count only the scale and the shift.",
                lambda student_channels, teacher_channels: (student_channels + 4) * teacher_channels),
    )))


# === 04 · attention transfer ========================================================================================


@functools.cache
def _attention_cases() -> list[tuple]:
    return [(_randn(2, 8, 14, 14, seed=70), 2.0), (_randn(3, 4, 7, 7, seed=71), 1.0),
            (torch.rand(2, 16, 7, 7, generator=torch.Generator().manual_seed(72)), 4.0), (_randn(1, 3, 5, 5, seed=73), 1.0)]


def _energy(features: torch.Tensor, p: float) -> torch.Tensor:
    return features.abs().pow(p).mean(dim=1).flatten(1)  # (B, H*W), not normalised


register(Exercise(
    "04.attention_map", "attention map",
    hints=("Three steps: |A|^p, averaged over the channel axis (dim=1); flattened to one vector of H*W positions "
           "per example; scaled to unit L2 length.",
           "The absolute value matters for odd p (activations can be negative before a ReLU). Normalise each "
           "example's vector (dim=1 after flattening), not the batch.",
           "F.normalize(features.abs().pow(p).mean(dim=1).flatten(1), dim=1)"),
    solution_name="attention_map",
    reference=losses.attention_map,
    cases=_attention_cases,
    mistakes=(
        Mistake("the attention map not normalised", "scale each example's map to unit L2 length (F.normalize, "
                "dim=1): maps of different layers and networks must be comparable.", _energy),
        Mistake("the absolute value missing", "take |A| before the power: for odd p a negative activation would "
                "cancel a positive one.", lambda a, p: F.normalize(a.pow(p).mean(dim=1).flatten(1), dim=1)),
        Mistake("the maps normalised over the batch", "normalise each example's map (dim=1 of the (B, H*W) "
                "tensor), not each position across the batch.", lambda a, p: F.normalize(_energy(a, p), dim=0)),
        Mistake("an L1 normalisation", "scale to unit L2 length (the square root of the sum of squares), "
                "not to sum 1.", lambda a, p: _energy(a, p) / _energy(a, p).sum(dim=1, keepdim=True)),
        Mistake("a max over the channels", "average |A|^p over the channels (the sum would do too, after normalising).",
                lambda a, p: F.normalize(a.abs().pow(p).amax(dim=1).flatten(1), dim=1)),
        Mistake("the power taken after the channel mean", "raise |A| to the power p first, then average over the "
                "channels.", lambda a, p: F.normalize(a.abs().mean(dim=1).pow(p).flatten(1), dim=1)),
        Mistake("the map not flattened", "flatten the (H, W) map to one vector of H*W positions per example: "
                "shape (B, H*W).", lambda a, p: F.normalize(_energy(a, p), dim=1).view(a.shape[0], *a.shape[2:])),
    )))


@functools.cache
def _at_cases() -> list[tuple]:
    return [(_randn(2, 8, 14, 14, seed=80), _randn(2, 64, 14, 14, seed=81), 2.0),
            (torch.rand(3, 4, 7, 7, generator=torch.Generator().manual_seed(82)),
             torch.rand(3, 128, 7, 7, generator=torch.Generator().manual_seed(83)), 2.0),
            (_randn(2, 4, 7, 7, seed=84), _randn(2, 32, 7, 7, seed=85), 1.0)]


def _map_difference(s: torch.Tensor, t: torch.Tensor, p: float) -> torch.Tensor:
    return losses.attention_map(s, p) - losses.attention_map(t, p)  # (B, H*W)


register(Exercise(
    "04.at_loss", "attention-transfer loss",
    hints=("Compute the attention map of the student's features and of the teacher's features (your "
           "attention_map), then compare them position by position.",
           "The loss is the mean of the squared differences over the batch and the positions; the teacher's "
           "side is a fixed target (detach it).",
           "(attention_map(s, p) - attention_map(t.detach(), p)).pow(2).mean()"),
    solution_name="at_loss",
    reference=lambda s, t, p: losses.at_loss(s, t, p),
    cases=_at_cases,
    mistakes=(
        Mistake("the attention maps not normalised", "compare unit-length maps: the raw energies of two networks "
                "have unrelated scales.", lambda s, t, p: (_energy(s, p) - _energy(t, p)).pow(2).mean()),
        Mistake("a sum instead of a mean", "average the squared differences over the batch and the positions.",
                lambda s, t, p: _map_difference(s, t, p).pow(2).sum()),
        Mistake("a sum over each example's positions", "average over the positions too, not only over the batch "
                "(the paper's code weights the mean with beta = 1000).",
                lambda s, t, p: _map_difference(s, t, p).pow(2).sum(dim=1).mean()),
        Mistake("the norm of the difference, not its square", "square the differences (no square root).",
                lambda s, t, p: _map_difference(s, t, p).norm(dim=1).mean()),
    )))


@functools.cache
def _multi_at_cases() -> list[tuple]:
    def features(prefix: str, widths: Sequence[int], seed: int) -> dict:
        return {f"{prefix}{k}": _randn(2, w, side, side, seed=seed + k)
                for k, (w, side) in enumerate(zip(widths, (28, 14, 7)))}

    student, teacher = features("s", (4, 8, 16), 90), features("t", (32, 64, 128), 95)
    return [(student, teacher, [("s1", "t1")], 1000.0),
            (student, teacher, [("s0", "t0"), ("s1", "t1"), ("s2", "t2")], 1000.0),
            (student, teacher, [("s2", "t2"), ("s1", "t1")], 50.0)]


def _at_sum(s: dict, t: dict, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
    return sum(losses.at_loss(s[a], t[b]) for a, b in pairs)


register(Exercise(
    "04.multi_at_loss", "multi-layer attention-transfer loss",
    hints=("One at_loss per (student_path, teacher_path) pair, on the features stored under those paths.",
           "Sum them over the pairs, then multiply by beta / 2 (the paper's code).",
           "beta / 2 * sum(cu.losses.at_loss(student_features[s], teacher_features[t]) for s, t in pairs)"),
    solution_name="multi_at_loss",
    reference=lambda s, t, pairs, beta: beta / 2 * _at_sum(s, t, pairs),
    cases=_multi_at_cases,
    mistakes=(
        Mistake("beta instead of beta / 2", "the paper's code weights the sum with beta / 2.",
                lambda s, t, pairs, beta: beta * _at_sum(s, t, pairs)),
        Mistake("a mean over the layer pairs", "sum over the pairs: each layer adds its own term.",
                lambda s, t, pairs, beta: beta / 2 * _at_sum(s, t, pairs) / len(pairs)),
        Mistake("beta forgotten", "multiply the sum by beta / 2: without it the term is too small to matter "
                "(maps are unit vectors, so squared differences are tiny).", lambda s, t, pairs, beta: _at_sum(s, t, pairs)),
    )))


def _sharpness(features: torch.Tensor, p: int) -> float:
    return losses.attention_map(features, p=p).max(dim=1).values.mean().item()


register(Exercise(
    "04.sharpest_p", "sharpest p",
    hints=("For each p in (1, 2, 4), compute the maps and the largest entry of each unit-length map, averaged "
           "over the images.",
           "cu.losses.attention_map(features, p=p).max(dim=1).values.mean() for each p; the sharpest map has the "
           "largest peak."),
    solution_name="sharpest_p",
    reference=lambda features: max((1, 2, 4), key=lambda p: _sharpness(features, p)),
    context={"features": _randn(2, 8, 7, 7, seed=99)},
    mistakes=(
        Mistake("the flattest map", "the question asks which p concentrates the map most: the LARGEST peak.",
                lambda features: min((1, 2, 4), key=lambda p: _sharpness(features, p))),
        Mistake("the paper's default rather than the measurement", "p = 2 is the paper's choice, not necessarily "
                "the sharpest: measure the peaks.", lambda features: 2),
    )))


# === 05 · the training schedule =====================================================================================


def _boundaries(fractions: Sequence[float], total_steps: int) -> list[tuple[int, int]]:
    phases = [{"name": f"phase{i}", "fraction": f} for i, f in enumerate(fractions)]
    return schedule.Schedule(phases, total_steps).boundaries


def _boundaries_by(end_of: Callable[[float], int], per_phase: bool = False, inclusive: bool = False) -> Callable:
    def boundaries(fractions: Sequence[float], total_steps: int) -> list[tuple[int, int]]:
        ends, running = [], 0.0
        for fraction in fractions:
            running = running + end_of(total_steps * fraction) if per_phase else running + fraction
            ends.append(running if per_phase else end_of(total_steps * running))
        ends[-1] = total_steps
        starts = [0, *ends[:-1]]
        return [(start, end - 1 if inclusive else end) for start, end in zip(starts, ends)]

    return boundaries


def _half_up(x: float) -> int:
    return math.floor(x + 0.5)


_BOUNDARY_CASES = [((0.2, 0.7, 0.1), 100), ((0.2, 0.7, 0.1), 1500), ((1 / 3, 1 / 3, 1 / 3), 10), ((0.25, 0.75), 10),
                   ((0.25, 0.75), 7), ((1.0,), 5), ((0.3, 0.3, 0.4), 15)]

register(Exercise(
    "05.phase_boundaries", "phase boundaries",
    hints=("Each phase ends at its running share of the steps: with c_i = f_1 + ... + f_i, phase i ends near N c_i, "
           "and starts where the previous one ended (ends are exclusive, like Python's range).",
           "Round N c_i half up, math.floor(N * c_i + 0.5): int() or math.floor alone truncates 89.99999 to 89, and "
           "Python's round() sends 2.5 to 2. Round the running sum, not each phase's length, and set the last end "
           "to N exactly."),
    solution_name="phase_boundaries",
    reference=_boundaries,
    cases=lambda: list(_BOUNDARY_CASES),
    mistakes=(
        Mistake("an off-by-one at the phase boundaries (inclusive ends)", "ends are exclusive, like range(start, "
                "end): phase i covers steps start .. end - 1, and the next phase starts AT end.",
                _boundaries_by(_half_up, inclusive=True)),
        Mistake("the ends truncated instead of rounded", "N * c_i is a float such as 89.99999999; round half up, "
                "math.floor(N * c_i + 0.5), instead of int() or math.floor.", _boundaries_by(math.floor)),
        Mistake("Python's round() (ties to even)", "round() sends 2.5 to 2; the schedule rounds half up: "
                "math.floor(N * c_i + 0.5).", _boundaries_by(round)),
        Mistake("each phase's length rounded separately", "round the running sum N * (f_1 + ... + f_i), so that the "
                "rounding errors do not add up from phase to phase.", _boundaries_by(_half_up, per_phase=True)),
    )))


@functools.cache
def _phase_index_cases() -> list[tuple]:
    cases = []
    for fractions, total, steps in (((0.2, 0.7, 0.1), 100, (0, 19, 20, 21, 89, 90, 99)),
                                    ((1 / 3, 1 / 3, 1 / 3), 10, (2, 3, 6, 7, 9))):
        cases += [(step, _boundaries(fractions, total)) for step in steps]
    return cases


def _phase_index_reference(step: int, boundaries: Sequence[tuple[int, int]]) -> int:
    total = boundaries[-1][1]
    built = schedule.Schedule([{"name": f"p{i}", "fraction": (end - start) / total}
                               for i, (start, end) in enumerate(boundaries)], total)
    if built.boundaries != [tuple(b) for b in boundaries]:
        raise AssertionError("the check's boundaries could not be rebuilt as a Schedule")
    return built.phase_index(step)


register(Exercise(
    "05.phase_index", "phase switch",
    hints=("Walk through the (start, end) pairs and return the index of the phase whose steps contain `step`.",
           "Ends are exclusive: phase i holds start <= step < end, so the step equal to an end belongs to the NEXT "
           "phase. Phases are numbered from 0."),
    solution_name="phase_index",
    reference=_phase_index_reference,
    cases=_phase_index_cases,
    mistakes=(
        Mistake("an off-by-one at the phase boundary", "the step equal to a phase's end already belongs to the "
                "next phase: test start <= step < end, not step <= end.",
                lambda step, boundaries: next(i for i, (_, end) in enumerate(boundaries) if step <= end)),
        Mistake("phases numbered from 1", "return 0-based indices, as schedule.phases[index] expects.",
                lambda step, boundaries: 1 + next(i for i, (_, end) in enumerate(boundaries) if step < end)),
    )))


def _margin_of(scores: torch.Tensor) -> torch.Tensor:
    top2 = scores.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


@functools.cache
def _margin_cases() -> list[tuple]:
    return [(torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0]]),), (_randn(16, 10, seed=5, scale=3.0),),
            (_randn(5, 4, seed=6),)]


register(Exercise(
    "05.margin", "teacher margin",
    hints=("The margin is measured on probabilities: softmax over the classes (dim=1) first.",
           "Take the two largest probabilities of each row (topk(2, dim=1)) and subtract the second from the first."),
    solution_name="margin",
    reference=lambda logits: _margin_of(torch.softmax(logits.double(), dim=1)),
    cases=_margin_cases,
    mistakes=(
        Mistake("the margin of the logits", "apply the softmax first: the margin is between probabilities.",
                lambda logits: _margin_of(logits)),
        Mistake("the top probability alone", "that is the confidence score; the margin subtracts the runner-up's "
                "probability.", lambda logits: torch.softmax(logits, dim=1).max(dim=1).values),
        Mistake("the largest minus the smallest probability", "subtract the SECOND-largest probability (topk(2)).",
                lambda logits: torch.softmax(logits, 1).max(1).values - torch.softmax(logits, 1).min(1).values),
        Mistake("the softmax over the wrong axis", "normalise over the classes (dim=1), not over the examples.",
                lambda logits: _margin_of(torch.softmax(logits, dim=0))),
    )))


# === 06 · edge export ===============================================================================================


def _affine_variant(widen: bool = True, round_zero: bool = True, levels: int = 0, zero_sign: int = -1) -> Callable:
    def parameters(low: float, high: float, q_min: int, q_max: int) -> tuple[float, float]:
        if widen:
            low, high = min(low, 0.0), max(high, 0.0)
        scale = (high - low) / (q_max - q_min + levels)
        return scale, q_min + zero_sign * (round(low / scale) if round_zero else low / scale)

    return parameters


register(Exercise(
    "06.affine_parameters", "scale and zero point",
    hints=("First widen the range to contain 0 (low = min(low, 0), high = max(high, 0)), so that 0 is exactly "
           "representable (zero padding, ReLU outputs).",
           "The scale spreads the range over q_max - q_min steps: s = (high - low) / (q_max - q_min). The zero point "
           "is the INTEGER that represents 0: z = q_min - round(low / s)."),
    solution_name="affine_parameters",
    reference=export.affine_parameters,
    wrap=_stack,
    cases=lambda: [(-1.0, 3.0, 0, 255), (0.0, 6.0, 0, 255), (-2.25, 0.75, -128, 127), (0.5, 4.0, 0, 255),
                   (-4.0, -1.0, 0, 255)],
    mistakes=(
        Mistake("the range not widened to contain 0", "take low = min(low, 0) and high = max(high, 0) first, so "
                "that 0 falls on the grid.", _affine_variant(widen=False)),
        Mistake("the zero point not rounded", "the zero point is an integer: z = q_min - round(low / s).",
                _affine_variant(round_zero=False)),
        Mistake("256 levels instead of 255 steps", "q_min .. q_max has q_max - q_min steps between its ends: "
                "divide by q_max - q_min.", _affine_variant(levels=1)),
        Mistake("the zero point's sign flipped", "x = low must map to q_min: z = q_min - round(low / s).",
                _affine_variant(zero_sign=1)),
    )))


def _with_gradient(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a fake-quantizer on ``x`` and return its values followed by ``d sum(output) / dx``."""

    def call(x: torch.Tensor, *rest: Any) -> torch.Tensor | None:
        x = x.detach().clone().requires_grad_(True)
        out = fn(x, *rest)
        if out is None:
            return None
        out = torch.as_tensor(out)
        grad = (torch.autograd.grad(out.sum(), x, allow_unused=True)[0] if out.requires_grad else None)
        return torch.cat([out.detach().reshape(-1), (torch.zeros_like(x) if grad is None else grad).reshape(-1)])

    return call


def _quantize_variant(rounding: Callable = torch.round, clamp: bool = True, subtract_zero: bool = True,
                      dequantize: bool = True, straight_through: bool = True) -> Callable:
    def fake_quantize(x: torch.Tensor, s: float, z: float, q_min: int, q_max: int) -> torch.Tensor:
        q = rounding(x / s) + z
        q = torch.clamp(q, q_min, q_max) if clamp else q
        x_hat = (q - z if subtract_zero else q) * s if dequantize else q
        return x + (x_hat - x).detach() if straight_through else x_hat

    return fake_quantize


@functools.cache
def _quantize_cases() -> list[tuple]:
    return [(_randn(50, seed=100, scale=2.0), 0.05, 10.0, 0, 255), (torch.linspace(-1, 1, 41), 2 / 255, 128.0, 0, 255),
            (_randn(30, seed=101), 0.02, 0.0, -127, 127)]


register(Exercise(
    "06.fake_quantize", "quantize and dequantize",
    hints=("Quantize: divide by the scale, round to an integer, add the zero point, clamp to [q_min, q_max]. "
           "Dequantize: subtract the zero point and multiply by the scale.",
           "Rounding has zero gradient almost everywhere, so training through it learns nothing. The straight-through "
           "estimator returns x + (x_hat - x).detach(): the value of x_hat, the gradient of x.",
           "q = torch.clamp(torch.round(x / s) + z, q_min, q_max); x_hat = (q - z) * s; return x + (x_hat - x).detach()"),
    solution_name="fake_quantize",
    reference=export.fake_quantize,
    wrap=_with_gradient,
    cases=_quantize_cases,
    mistakes=tuple(
        Mistake(name, advice, _quantize_variant(**wrong, straight_through=straight_through))
        for name, advice, wrong in (
            ("no rounding", "round x / s to an integer (torch.round): that is where the precision is lost.",
             {"rounding": lambda v: v}),
            ("no clamping", "clamp the integers to [q_min, q_max]: values outside the range saturate.", {"clamp": False}),
            ("the zero point not subtracted when dequantizing", "x_hat = (q - z) * s.", {"subtract_zero": False}),
            ("truncation instead of rounding", "torch.round, not int() or torch.trunc: truncation biases every value "
             "towards zero.", {"rounding": torch.trunc}),
            ("the integers returned (no dequantize step)", "map the integers back to floats: (q - z) * s.",
             {"dequantize": False}))
        for straight_through in (True, False))  # the value's mistake is named first, with or without the estimator
    + (Mistake("rounding without the straight-through estimator", "the values are right but the gradient is zero: "
               "return x + (x_hat - x).detach().", _quantize_variant(straight_through=False)),)))


@functools.cache
def _scale_cases() -> list[tuple]:
    return [(_randn(8, 4, 3, 3, seed=110),), (_randn(10, 64, seed=111),), (_randn(3, 2, 5, seed=112, scale=0.01),)]


def _over_channels(weight: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, weight.ndim))


register(Exercise(
    "06.per_channel_scales", "per-channel scales",
    hints=("One scale per output channel (axis 0): the largest |w| of that channel, over every other axis, "
           "divided by 127 (symmetric int8 uses -127 .. 127).",
           "weight.abs().amax(dim=tuple(range(1, weight.ndim))) / 127 has shape (C_out,)."),
    solution_name="per_channel_scales",
    reference=export.symmetric_scales,
    cases=_scale_cases,
    atol=1e-8, rtol=1e-5,
    mistakes=(
        Mistake("per-tensor where per-channel was asked", "one scale PER OUTPUT CHANNEL: reduce over every axis "
                "except axis 0, so the result has shape (C_out,).", lambda w: w.abs().max() / 127),
        Mistake("the max of w instead of the max of |w|", "a symmetric grid must cover the most negative weight "
                "too: use w.abs().", lambda w: w.amax(dim=_over_channels(w)) / 127),
        Mistake("a division by 255", "symmetric int8 maps [-max|w|, max|w|] onto [-127, 127]: divide by 127.",
                lambda w: w.abs().amax(dim=_over_channels(w)) / 255),
        Mistake("a division by 128", "the symmetric grid stops at 127 on both sides: divide by 127.",
                lambda w: w.abs().amax(dim=_over_channels(w)) / 128),
        Mistake("a reduction over the output channels", "axis 0 is the output channel you keep; reduce over the "
                "others.", lambda w: w.abs().amax(dim=0) / 127),
    )))


def _best_passing(entries: Sequence[Mapping[str, Any]], budget: Mapping[str, float]) -> str:
    passing = [e for e in entries if e["size_kb"] <= budget["max_kb"] and e["latency_ms"] <= budget["max_ms"]
               and e["accuracy"] >= budget["min_accuracy"]]
    return max(passing, key=lambda e: e["accuracy"])["name"] if passing else "none"


_EXAMPLE_ENTRIES = ({"name": "teacher FP32", "size_kb": 2_000.0, "latency_ms": 3.0, "accuracy": 0.93},
                    {"name": "cnn-9k INT8", "size_kb": 20.0, "latency_ms": 0.05, "accuracy": 0.88},
                    {"name": "cnn-29k FP32", "size_kb": 120.0, "latency_ms": 0.20, "accuracy": 0.90},
                    {"name": "cnn-2k INT8", "size_kb": 8.0, "latency_ms": 0.03, "accuracy": 0.82})

register(Exercise(
    "06.budget_choice", "edge budget",
    hints=("First keep the models that pass all three limits (size, latency, accuracy floor).",
           "Among those, take the most accurate. Mind the units (KB and ms) and use the table, not the plot."),
    solution_name="budget_choice",
    reference=_best_passing,
    context={"entries": _EXAMPLE_ENTRIES, "budget": {"max_kb": 64.0, "max_ms": 1.0, "min_accuracy": 0.0}},
    mistakes=(
        Mistake("the most accurate model, ignoring the budget", "a model that breaks a limit cannot ship: filter first.",
                lambda entries, budget: max(entries, key=lambda e: e["accuracy"])["name"]),
        Mistake("the smallest model", "among the models that pass, the question asks for the most ACCURATE one.",
                lambda entries, budget: min(entries, key=lambda e: e["size_kb"])["name"]),
    )))


# === 07 · capstone: predictive maintenance ==========================================================================


@functools.cache
def _envelope_cases() -> list[tuple]:
    rate = 12_000.0
    t = np.arange(1200) / rate
    carrier = np.cos(2 * np.pi * 3000 * t) * (1 + 0.5 * np.cos(2 * np.pi * 107.5 * t))  # a resonance, modulated
    noise = np.random.default_rng(120).standard_normal(1200) * 0.1
    return [(carrier + noise, rate), (np.random.default_rng(121).standard_normal(256), 1000.0),
            (np.random.default_rng(122).standard_normal(101), 500.0)]


def _envelope_variant(gain_positive: float = 2.0, power: int = 2, analytic: bool = True, centre: bool = True,
                      normalise: bool = True) -> Callable:
    def spectrum(signal: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
        n = len(signal)
        gain = np.zeros(n)
        gain[np.fft.fftfreq(n) > 0] = gain_positive
        gain[0] = 1.0
        envelope = np.abs(np.fft.ifft(np.fft.fft(signal) * gain)) ** power if analytic else signal**2
        envelope = envelope - envelope.mean() if centre else envelope
        return np.fft.rfftfreq(n, 1 / rate), np.abs(np.fft.rfft(envelope)) / (n if normalise else 1)

    return spectrum


register(Exercise(
    "07.envelope_spectrum", "envelope spectrum",
    hints=("Build the analytic signal with the FFT (zero the negative frequencies, double the positive ones, "
           "keep DC), take the squared magnitude of its inverse FFT: that is the squared envelope e(t).",
           "Remove the envelope's mean, then return (np.fft.rfftfreq(n, 1 / sample_rate), |np.fft.rfft(e)| / n). "
           "np.fft.fftfreq(n) > 0 selects the positive-frequency bins.",
           "gain = zeros(n); gain[fftfreq(n) > 0] = 2; gain[0] = 1; e = |ifft(fft(x) * gain)|**2; e -= e.mean(); "
           "return rfftfreq(n, 1 / fs), |rfft(e)| / n"),
    solution_name="envelope_spectrum",
    reference=vibration.envelope_spectrum,
    wrap=_stack,
    cases=_envelope_cases,
    mistakes=(
        Mistake("the envelope not squared", "the squared envelope is |x + i H[x]|^2: square the magnitude.",
                _envelope_variant(power=1)),
        Mistake("the mean not removed", "subtract the envelope's mean before the spectrum, or its DC line dwarfs "
                "every defect line.", _envelope_variant(centre=False)),
        Mistake("the spectrum not divided by N", "divide |rfft(e)| by the number of samples, so that the "
                "magnitude does not depend on the window's length.", _envelope_variant(normalise=False)),
        Mistake("the raw signal squared (no analytic signal)", "x^2 keeps the carrier's oscillation; the analytic "
                "signal's magnitude follows the envelope: zero the negative frequencies and double the positive ones.",
                _envelope_variant(analytic=False)),
        Mistake("the positive frequencies not doubled", "the analytic signal doubles the positive frequencies "
                "(gain 2) when it drops the negative ones, so its real part is the signal itself.",
                _envelope_variant(gain_positive=1.0)),
    )))


def _ftf_bsf_reference(shaft_hz: float) -> list[float]:
    frequencies = vibration.defect_frequencies(shaft_hz)
    return [float(frequencies["ftf"]), float(frequencies["bsf"])]


def _bearing_variant(ftf_sign: int = -1, bsf_factor: str = "pitch", bsf_power: int = 2) -> Callable:
    geometry = vibration.BearingGeometry()
    d, pitch, n = geometry.ball_diameter_mm, geometry.pitch_diameter_mm, geometry.n_balls
    ratio = d / pitch

    def frequencies(shaft_hz: float) -> list[float]:
        factor = pitch / (2 * d) if bsf_factor == "pitch" else n / 2
        return [shaft_hz / 2 * (1 + ftf_sign * ratio), factor * shaft_hz * (1 - ratio**bsf_power)]

    return frequencies


register(Exercise(
    "07.ftf_bsf", "cage and ball-spin frequencies",
    hints=("With ratio = d / D cos(phi) (d = ball diameter, D = pitch diameter): FTF = f_r / 2 (1 - ratio) and "
           "BSF = D / (2 d) f_r (1 - ratio^2).",
           "cu.vibration.BearingGeometry() holds the 6205's d = 7.94 mm, D = 39.04 mm and contact angle 0."),
    solution_name="ftf_bsf",
    reference=_ftf_bsf_reference,
    wrap=_stack,
    cases=lambda: [(15.0,), (29.95,), (40.0,)],
    mistakes=(
        Mistake("the ball count in BSF", "BSF's factor is D / (2 d), the ratio of diameters; n / 2 belongs to BPFO "
                "and BPFI.", _bearing_variant(bsf_factor="balls")),
        Mistake("FTF with (1 + ratio)", "the cage turns a little SLOWER than half the shaft: (1 - ratio).",
                _bearing_variant(ftf_sign=1)),
        Mistake("BSF without the square", "BSF has (1 - ratio^2).", _bearing_variant(bsf_power=1)),
    )))


register(Exercise(
    "07.ram_headroom", "RAM headroom",
    hints=("How many times does one number fit into another? A ratio.",
           "Divide the controller's 64 MB by the session's peak RAM in MB (report['peak_ram_mb'])."),
    solution_name="ram_headroom",
    reference=lambda peak_ram_mb: 64 / max(peak_ram_mb, 1e-9),
    context={"peak_ram_mb": 20.0},
    mistakes=(
        Mistake("the ratio inverted", "the question asks how many times the session fits INTO 64 MB: 64 / peak.",
                lambda peak_ram_mb: peak_ram_mb / 64),
        Mistake("the difference instead of the ratio", "'how many times' is a ratio, not the MB left over.",
                lambda peak_ram_mb: 64 - peak_ram_mb),
    )))


# === 08 · language-model distillation ===============================================================================


@functools.cache
def _kl_cases() -> list[tuple]:
    return [(_randn(2, 5, 96, seed=130), _randn(2, 5, 96, seed=131), 1.0),
            (_randn(2, 5, 96, seed=132), _randn(2, 5, 96, seed=133, scale=2.0), 3.0),
            (_randn(4, 10, seed=134), _randn(4, 10, seed=135), 2.0)]


def _kl_variant(swap: bool = False, temperature: float | None = None, t_squared: bool = False, mean: bool = False,
                probabilities: bool = False, scalar: bool = False) -> Callable:
    def kl(s: torch.Tensor, v: torch.Tensor, t: float) -> torch.Tensor:
        used = temperature or t
        log_p, log_q = F.log_softmax(v / used, -1), F.log_softmax(s / used, -1)
        if swap:
            log_p, log_q = log_q, log_p
        terms = log_p.exp() * (log_p - (log_q.exp() if probabilities else log_q))
        value = (terms.mean(-1) if mean else terms.sum(-1)) * (t**2 if t_squared else 1.0)
        return value.mean() if scalar else value

    return kl


register(Exercise(
    "08.kl_per_position", "kl_per_position",
    hints=("At each position the teacher's and the student's next-character distributions at temperature T: "
           "p = softmax(teacher / T), q = softmax(student / T) over the vocabulary (the last axis).",
           "KL(p || q) = sum_v p_v (log p_v - log q_v): use log_softmax for both logs, sum over the last axis only, "
           "and keep the (B, T) shape: no T^2 factor, no mean.",
           "log_p = F.log_softmax(t / T, -1); log_q = F.log_softmax(s / T, -1); "
           "return (log_p.exp() * (log_p - log_q)).sum(-1)"),
    solution_name="kl_per_position",
    reference=losses.kl_divergence,
    cases=_kl_cases,
    mistakes=(
        Mistake("the KL arguments swapped", "the teacher's distribution p weights the sum: KL(p_teacher || q_student).",
                _kl_variant(swap=True)),
        Mistake("the temperature forgotten", "divide both logits by T before the softmax.", _kl_variant(temperature=1.0)),
        Mistake("the T^2 factor included", "this asks for the KL itself; T^2 belongs to the training loss.",
                _kl_variant(t_squared=True)),
        Mistake("a mean over the vocabulary instead of a sum", "KL sums over the vocabulary.", _kl_variant(mean=True)),
        Mistake("probabilities where log-probabilities are expected", "subtract log-probabilities: log p - log q, "
                "with q from F.log_softmax.", _kl_variant(probabilities=True)),
        Mistake("a mean over the positions", "return one KL per position, shape (B, T), not their mean.",
                _kl_variant(scalar=True)),
    )))


@functools.cache
def _generation_cases() -> list[tuple]:
    def tiny_model() -> language.GPT:
        model = language.GPT(language.GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=16))
        generator = torch.Generator().manual_seed(140)
        with torch.no_grad():
            for parameter in model.parameters():  # larger weights than the trained init: varied, decisive argmaxes
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
        return model.eval()

    model = tiny_model()
    prompts = torch.randint(0, 96, (2, 5), generator=torch.Generator().manual_seed(141))
    return [(model, prompts, 6), (model, prompts[:1, :3], 4), (model, prompts, 1)]


def _greedy_variant(position: int = -1, feed_back: bool = True, keep_prompt: bool = False) -> Callable:
    @torch.no_grad()
    def continuation(model: language.GPT, prompt_ids: torch.Tensor, n: int) -> torch.Tensor:
        ids = prompt_ids
        for _ in range(n):
            context = ids if feed_back else prompt_ids
            next_id = model(context[:, -model.cfg.block_size:])[:, position, :].argmax(-1, keepdim=True)
            ids = torch.cat([ids, next_id], dim=1)
        return ids if keep_prompt else ids[:, prompt_ids.shape[1]:]

    return continuation


register(Exercise(
    "08.greedy_continuation", "greedy continuation (the sequence-level target)",
    hints=("Loop max_new_tokens times: run the model on the ids so far, pick the most likely next token, append it.",
           "The model returns logits for every position, (B, T, V); the LAST position predicts the next token. "
           "Crop the context to model.cfg.block_size, append with torch.cat, and return only the new tokens.",
           "for _ in range(n): logits = model(ids[:, -model.cfg.block_size:]); "
           "ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1); return ids[:, prompt_ids.shape[1]:]"),
    solution_name="greedy_continuation",
    reference=lambda model, prompt_ids, n: language.generate(model, prompt_ids, n, temperature=0),
    cases=_generation_cases,
    mistakes=(
        Mistake("the prompt returned with the new tokens", "return only the new tokens, (B, max_new_tokens): "
                "the prompt is the student's input, the continuation its target.", _greedy_variant(keep_prompt=True)),
        Mistake("the first position's logits", "logits[:, -1] (the last position) predicts the next token; "
                "logits[:, 0] predicts the prompt's second character.", _greedy_variant(position=0)),
        Mistake("the new token never fed back", "append each chosen token to the ids and run the model on the "
                "longer sequence: every step conditions on what was generated so far.", _greedy_variant(feed_back=False)),
    )))

register(Exercise(
    "08.bits_per_char_from_nats", "bits per character from nats",
    hints=("Cross-entropy in PyTorch uses the natural log; a bit is a log base 2.",
           "log2(x) = ln(x) / ln(2): one bit is ln 2 (about 0.693) nats, so divide by ln 2."),
    solution_name="bits_per_char_from_nats",
    reference=lambda loss: loss / math.log(2),
    cases=lambda: [(torch.tensor(1.0),), (torch.tensor([0.5, 2.3]),)],
    mistakes=(
        Mistake("a multiplication by ln 2", "one bit is ln 2 nats, so a number of nats is divided by ln 2 to count bits.",
                lambda loss: loss * math.log(2)),
        Mistake("ln 10 instead of ln 2", "bits are base-2 logarithms: divide by ln 2.", lambda loss: loss / math.log(10)),
    )))

register(Exercise(
    "08.uniform_bits", "uniform bits per character",
    hints=("A uniform model gives each of the 96 characters probability 1 / 96, whatever comes next.",
           "Its cross-entropy is -log2(1 / 96) = log2(96) bits per character."),
    solution_name="uniform_bits",
    reference=lambda vocabulary_size: math.log2(vocabulary_size),
    context={"vocabulary_size": 96},
    mistakes=(
        Mistake("nats instead of bits", "bits use the base-2 logarithm: log2(96), not ln(96).",
                lambda vocabulary_size: math.log(vocabulary_size)),
        Mistake("the probability instead of the bits", "bits per character are -log2 of the probability, not the "
                "probability itself.", lambda vocabulary_size: 1 / vocabulary_size),
    )))
