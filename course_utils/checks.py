"""Self-checks for the exercises: compare a learner's function with the reference.

A check says what is wrong without printing the answer. Starter code that has not been
touched (it raises ``NotImplementedError`` or returns ``None``) gets "not attempted yet",
which is not a failure, so notebooks still run from top to bottom in CI. After a wrong
answer the check runs each registered :class:`Mistake` (a typical wrong answer, such as a
KD loss without its T^2 factor) on the same cases and, when the learner's results match one,
names it. ``cu.exercises`` builds the course's exercises on this engine.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

NOT_ATTEMPTED = "not attempted yet: replace the `raise NotImplementedError` with your code and run the check again."


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


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer, named so that a check can say which one a learner made.

    ``variant`` makes the mistake: for :func:`check_function`, a function with the learner's
    signature (e.g. the KD loss without T^2); for :func:`check_value`, a predicate that is true for
    the answers that make it. ``advice`` says what to change without giving the answer away.
    """

    name: str
    advice: str
    variant: Callable[..., Any]


def _report(result: CheckResult) -> CheckResult:
    print(repr(result))
    return result


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        return torch.from_numpy(value.astype(np.float64))
    return torch.as_tensor(value, dtype=torch.float64)


def _close(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, equal_nan: bool = False) -> bool:
    return got.shape == expected.shape and torch.allclose(got.double(), expected.double(), atol=atol, rtol=rtol,
                                                          equal_nan=equal_nan)


def _difference(got: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> str | None:
    """What is wrong with ``got`` (None when it matches ``expected``)."""
    if got.shape != expected.shape:
        return f"the result has shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if _close(got, expected, atol, rtol):
        return None
    if not torch.isfinite(got.double()).all():
        return "the result contains nan or inf"
    diff = (got.double() - expected.double()).abs().max().item()
    return f"values are off (largest difference {diff:.3g})"


def _changed_in_place(before: tuple, after: tuple) -> int | None:
    """The 1-based position of a tensor or array argument the learner's function modified, if any."""
    for position, (old, new) in enumerate(zip(before, after), start=1):
        if isinstance(old, torch.Tensor) and not (old.shape == new.shape and torch.allclose(
                old.double(), new.detach().double(), rtol=0.0, atol=0.0, equal_nan=True)):
            return position
        if isinstance(old, np.ndarray) and not np.array_equal(old, new, equal_nan=old.dtype.kind == "f"):
            return position
    return None


def _outputs(fn: Callable, cases: Sequence[tuple]) -> list[torch.Tensor] | None:
    """``fn`` on every case (on copies of the arguments), or None if it fails or returns None on one."""
    results = []
    for args in cases:
        try:
            value = fn(*copy.deepcopy(args))
        except Exception:  # a variant that cannot run on a case does not match
            return None
        if value is None:
            return None
        results.append(_as_tensor(value))
    return results


def _matches(outputs: list[torch.Tensor], fn: Callable, cases: Sequence[tuple], atol: float, rtol: float) -> bool:
    """Whether ``fn`` gives the learner's ``outputs`` on every case (nan matching nan)."""
    expected = _outputs(fn, cases)
    return expected is not None and all(_close(g, e, atol, rtol, equal_nan=True) for g, e in zip(outputs, expected))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run a check on one CPU thread: its tensors are tiny, and waking threads would cost more than the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_function(name: str, learner_fn: Callable, reference_fn: Callable, cases: Sequence[tuple],
                   hint: str = "", atol: float = 1e-5, rtol: float = 1e-4, mistakes: Sequence[Mistake] = (),
                   also_correct: Sequence[Callable] = (), footer: str = "") -> CheckResult:
    """Call both functions on every case (a tuple of positional arguments) and compare results.

    Each call gets its own copy of the arguments, and a function that modifies its input is wrong.
    After a wrong result, the first of ``mistakes`` whose variant reproduces the learner's results on
    every case is named with its advice (otherwise ``hint`` is added). A function that matches one of
    ``also_correct`` (other accepted answers, e.g. rounding down or up) on every case is correct.
    ``footer`` ends every wrong message. Runs on one thread. Prints and returns a :class:`CheckResult`.
    """
    with _one_thread():
        result = _check_function(name, learner_fn, reference_fn, cases, hint, atol, rtol, mistakes, also_correct, footer)
    return _report(result)


def _check_function(name: str, learner_fn: Callable, reference_fn: Callable, cases: Sequence[tuple], hint: str,
                    atol: float, rtol: float, mistakes: Sequence[Mistake], also_correct: Sequence[Callable],
                    footer: str) -> CheckResult:
    def wrong(*parts: str) -> CheckResult:
        return CheckResult(name, "wrong", " ".join(filter(None, (*parts, footer))))

    outputs = []
    for number, args in enumerate(cases, start=1):
        given = copy.deepcopy(args)
        try:
            got = learner_fn(*given)
        except NotImplementedError:
            return CheckResult(name, "not attempted", NOT_ATTEMPTED)
        except Exception as error:  # a learner's bug: say what happened, do not fail the notebook
            return wrong(f"case {number} raised {type(error).__name__}: {error}.", hint)
        if got is None:
            return CheckResult(name, "not attempted", "not attempted yet: your function returns None.")
        position = _changed_in_place(args, given)
        if position is not None:
            return wrong(f"case {number}: your function changed its argument {position} in place; work on a copy "
                         "(e.g. x.clone()) so that the caller's tensor is left as it was.")
        try:
            outputs.append(_as_tensor(got))
        except (TypeError, ValueError, RuntimeError) as error:
            return wrong(f"case {number} returned a {type(got).__name__} that is not a number or tensor ({error}).")
    for number, (args, got) in enumerate(zip(cases, outputs), start=1):
        problem = _difference(got, _as_tensor(reference_fn(*copy.deepcopy(args))), atol, rtol)
        if problem is None:
            continue
        if any(_matches(outputs, other, cases, atol, rtol) for other in also_correct):
            break
        mistake = next((m for m in mistakes if _matches(outputs, m.variant, cases, atol, rtol)), None)
        return wrong(f"case {number}: {problem}.", f"This looks like {mistake.name}: {mistake.advice}" if mistake else hint)
    return CheckResult(name, "correct", f"correct on all {len(cases)} cases.")


def check_value(name: str, answer: Any, is_correct: Callable[[Any], bool], hint: str = "",
                mistakes: Sequence[Mistake] = (), footer: str = "") -> CheckResult:
    """Check a learner's value (a number, a choice) with a predicate; ``None`` is "not attempted".

    A wrong answer for which a mistake's predicate holds is named with its advice (otherwise ``hint`` is added).
    """
    if answer is None or answer is ...:
        return _report(CheckResult(name, "not attempted", "not attempted yet: set your answer and run the check again."))
    try:
        ok = bool(is_correct(answer))
    except Exception as error:
        return _report(CheckResult(name, "wrong", " ".join(filter(None, (
            f"could not check {answer!r}: {error}.", hint, footer)))))
    if ok:
        return _report(CheckResult(name, "correct", "correct."))

    def makes(mistake: Mistake) -> bool:
        try:
            return bool(mistake.variant(answer))
        except Exception:
            return False

    mistake = next((m for m in mistakes if makes(m)), None)
    named = f"This looks like {mistake.name}: {mistake.advice}" if mistake else hint
    return _report(CheckResult(name, "wrong", " ".join(filter(None, ("not quite.", named, footer)))))
