"""Checks at the public boundary: refuse empty, non-finite, out-of-range and mis-shaped input with a clear message.

Every public function and command-line program of the course checks its input here before any work, so a
mistake never turns into a silently wrong number or a raw torch / numpy error far from its cause:

    temperature = cu.validate.in_range(temperature, "temperature", 0.0, None, low_open=True)
    cu.validate.non_empty(images, "images", hint="pass at least one example")
    parser.add_argument("--epochs", type=cu.validate.positive_int, default=4)

Each message says what was wrong, what was expected, and how to fix it. A number may be a Python, NumPy or
0-d tensor number wherever a number is meant; the helpers return it as a plain Python ``int`` or ``float``.
"""

from __future__ import annotations

import argparse
import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import torch

Array = torch.Tensor | np.ndarray


def _fix(hint: str) -> str:
    return f" {hint}" if hint else ""


def as_number(value: Any, name: str, hint: str = "") -> int | float:
    """``value`` as a plain ``int`` or ``float``: Python, NumPy and 0-d tensor (or array) numbers are accepted.

    Booleans, strings and tensors with more than one element are refused with a ``TypeError``.
    """
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.ndim != 0:
            raise TypeError(f"{name} must be a single number, got a {type(value).__name__} of shape "
                            f"{tuple(value.shape)}: pick the one you mean (e.g. x[0]).{_fix(hint)}")
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}.{_fix(hint)}")
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def finite(value: Any, name: str, hint: str = "") -> int | float:
    """``value`` as a number, refusing NaN and infinities."""
    return in_range(value, name, hint=hint)


def in_range(value: Any, name: str, low: float | None = None, high: float | None = None, *, low_open: bool = False,
             high_open: bool = False, hint: str = "") -> int | float:
    """``value`` as a finite number in ``[low, high]`` (``(low`` / ``high)`` when open; ``None``: unbounded)."""
    number = as_number(value, name, hint)
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high or not math.isfinite(number):
        if low is not None and high is not None:
            expected = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            expected = f"{'>' if low_open else '>='} {low:g} and finite"
        elif high is not None:
            expected = f"{'<' if high_open else '<='} {high:g} and finite"
        else:
            expected = "a finite number"
        raise ValueError(f"{name} must be {expected}, got {number}.{_fix(hint)}")
    return number


def integer(value: Any, name: str, minimum: int | None = None, maximum: int | None = None, hint: str = "") -> int:
    """``value`` as a Python ``int`` in ``[minimum, maximum]``; floats are refused, even whole ones (write 2, not 2.0)."""
    number = as_number(value, name, hint)
    if not isinstance(number, int):
        raise TypeError(f"{name} must be a whole number (int), got the float {number}.{_fix(hint)}")
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        bounds = (f"between {minimum} and {maximum}" if minimum is not None and maximum is not None
                  else f">= {minimum}" if minimum is not None else f"<= {maximum}")
        raise ValueError(f"{name} must be an integer {bounds}, got {number}.{_fix(hint)}")
    return number


def non_empty(values: Any, name: str, hint: str = "") -> None:
    """Refuse a tensor, array or sequence with no elements (or no examples along its first axis)."""
    shape = tuple(values.shape) if hasattr(values, "shape") else (len(values),)
    if len(shape) == 0:
        return
    if shape[0] == 0 or 0 in shape:
        raise ValueError(f"{name} is empty (shape {shape}): there is nothing to compute on."
                         f"{_fix(hint or 'Pass at least one example.')}")


def all_finite(values: Array, name: str, hint: str = "") -> None:
    """Refuse a tensor or array holding NaN or infinite values; the message counts them and gives the first position."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "fc":
            return
        bad = ~np.isfinite(values)
        count = int(bad.sum())
        where = tuple(int(i) for i in np.argwhere(bad)[0]) if count else ()
    else:
        if not (values.is_floating_point() or values.is_complex()):
            return
        bad = ~torch.isfinite(values)
        if not bool(bad.any()):
            return
        count = int(bad.sum())
        where = tuple(int(i) for i in bad.nonzero()[0])
    if count:
        at = f", the first at index {where}" if where else ""
        raise ValueError(f"{name} holds {count} NaN or infinite value(s){at}: find where it came from (a division by "
                         f"zero, a log of 0, a diverged run) and fix or drop those entries.{_fix(hint)}")


def matching_shapes(first: Array, second: Array, names: tuple[str, str], hint: str = "") -> None:
    """Refuse two tensors or arrays whose shapes differ."""
    if tuple(first.shape) != tuple(second.shape):
        raise ValueError(f"{names[0]} {tuple(first.shape)} and {names[1]} {tuple(second.shape)} must have the same "
                         f"shape.{_fix(hint)}")


def same_length(first: Any, second: Any, names: tuple[str, str], hint: str = "") -> None:
    """Refuse two collections with a different number of examples (first axis)."""
    if len(first) != len(second):
        raise ValueError(f"{names[0]} has {len(first)} examples but {names[1]} has {len(second)}: they must pair up "
                         f"one to one.{_fix(hint)}")


def integer_labels(labels: Array | Any, name: str, num_classes: int | None = None, hint: str = "") -> Array:
    """Class indices as ``int64`` (a tensor stays a tensor, anything else becomes a NumPy array).

    Whole-valued floats (``2.0``) are accepted; fractional ones (``0.7``) are refused rather than truncated, and
    with ``num_classes`` every value must lie in ``[0, num_classes - 1]``.
    """
    is_tensor = isinstance(labels, torch.Tensor)
    values = labels.detach().cpu().numpy() if is_tensor else np.asarray(labels)
    if values.dtype == np.bool_ or values.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold integer class indices, got dtype {values.dtype}.{_fix(hint)}")
    if values.dtype.kind == "f":
        all_finite(values, name, hint)
        fractional = values != np.round(values)
        if fractional.any():
            first = tuple(int(i) for i in np.argwhere(fractional)[0])
            raise ValueError(f"{name} must be integer class indices, got {float(values[first])} at index {first}: "
                             f"round or map your labels to 0, 1, 2 ... yourself (nothing is truncated here)."
                             f"{_fix(hint)}")
    if num_classes is not None and values.size:
        low, high = values.min(), values.max()
        if low < 0 or high >= num_classes:
            bad = int(low) if low < 0 else int(high)
            raise ValueError(f"{name} must be class indices in [0, {num_classes - 1}] ({num_classes} classes), got "
                             f"{bad}.{_fix(hint or 'Check num_classes, or map the labels to 0 .. num_classes - 1.')}")
    if is_tensor:
        return labels.long()
    return values.astype(np.int64)


def class_axis(logits: torch.Tensor, name: str, minimum: int = 2, hint: str = "") -> int:
    """The size of the last (class) axis, refusing fewer than ``minimum`` classes."""
    if logits.ndim < 1 or logits.shape[-1] < minimum:
        raise ValueError(f"{name} need a class axis (the last) of size >= {minimum}, got shape {tuple(logits.shape)}: "
                         f"with one class the softmax is always 1 and there is nothing to learn or distil."
                         f"{_fix(hint)}")
    return int(logits.shape[-1])


# --- argparse types: `parser.add_argument("--epochs", type=cu.validate.positive_int)` --------------------------------


def _argument(convert: Any, text: str, expected: str, check: Any) -> Any:
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not check(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (epochs, steps, seeds, a batch size, threads)."""
    return _argument(int, text, "a positive integer (1, 2, 3 ...)", lambda v: v >= 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0 (a seed, warm-up steps)."""
    return _argument(int, text, "an integer >= 0", lambda v: v >= 0)


def finite_float(text: str) -> float:
    """argparse type: any finite number (no nan or inf)."""
    return _argument(float, text, "a finite number", math.isfinite)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a temperature, a learning rate)."""
    return _argument(float, text, "a finite number > 0", lambda v: math.isfinite(v) and v > 0)


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1] (alpha, a share of the data)."""
    return _argument(float, text, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)


def existing_directory(text: str) -> Path:
    """argparse type: a folder that exists."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing folder")
    return path
