"""Widgets with a static fallback.

:func:`explore` first calls the plain function once with the default values, so the
notebook shows a static result headless, in CI and in a static viewer; then, when a widget
frontend can be used, it adds the interactive version. Slow work belongs in a precomputed
table: never retrain a network on a slider move.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import matplotlib.pyplot as plt

from . import validate


def _default(control: Any) -> Any:
    """The starting value of an ``interact``-style control: (lo, hi[, step]) -> lo, list -> first."""
    if isinstance(control, tuple) and len(control) in (2, 3) and all(isinstance(v, (int, float)) for v in control):
        return control[0]
    if isinstance(control, (list, dict)):
        return next(iter(control.values())) if isinstance(control, dict) else control[0]
    if hasattr(control, "value"):
        return control.value
    return control


def _check_default(name: str, control: Any, value: Any) -> None:
    """Refuse a slider whose range is empty or excludes its default, and a dropdown default that is not an option.

    ipywidgets would clamp such a slider to its range, so the widget would start from another value than the
    static figure shows.
    """
    if isinstance(control, tuple) and len(control) in (2, 3):
        low, high = (validate.finite(v, f"the {name} slider's bounds") for v in control[:2])
        if not low < high:
            raise ValueError(f"the {name} slider needs low < high, got ({low}, {high}): write (low, high[, step]).")
        value = validate.finite(value, f"the default of {name}")
        if not low <= value <= high:
            raise ValueError(f"the default {name} = {value} lies outside its slider's range [{low}, {high}]: the widget "
                             f"would clamp it while the static figure shows {value}. Widen the range or change the default.")
    elif isinstance(control, (list, dict)):
        options = list(control.values()) if isinstance(control, dict) else control
        if not options:
            raise ValueError(f"the {name} dropdown has no options.")
        if value not in options:
            raise ValueError(f"the default {name} = {value!r} is not one of the dropdown's options {options}.")


def explore(fn: Callable[..., Any], defaults: dict[str, Any] | None = None, **controls: Any) -> Any:
    """Show ``fn(**defaults)`` as a static figure, then an ``ipywidgets.interactive`` over ``controls``.

    ``controls`` use ipywidgets' ``interact`` abbreviations: ``(lo, hi, step)`` for a slider,
    a list for a dropdown, or a widget. Sliders update on release (``continuous_update=False``).
    Returns the interactive widget, or ``None`` when ipywidgets is not installed.
    """
    unknown = sorted(set(defaults or {}) - set(controls))
    if unknown:
        raise ValueError(f"defaults names {unknown}, which have no control: the static figure would use them but the "
                         f"widget would not. Give each a control, or fix it with functools.partial(fn, ...).")
    values = {name: _default(control) for name, control in controls.items()}
    values.update(defaults or {})
    for name, control in controls.items():
        _check_default(name, control, values[name])
    fn(**values)
    plt.show()  # the static figure: what CI and static viewers keep
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:
        print("(ipywidgets is not installed: only the static figure above is shown)")
        return None
    built = {}
    for name, control in controls.items():
        if isinstance(control, tuple) and len(control) in (2, 3):
            lo, hi, *step = control
            cls = widgets.IntSlider if all(isinstance(v, int) for v in control) else widgets.FloatSlider
            default_step = 1 if cls is widgets.IntSlider else (hi - lo) / 100
            built[name] = cls(value=values[name], min=lo, max=hi, step=step[0] if step else default_step,
                              continuous_update=False, description=name)
        elif isinstance(control, (list, dict)):
            built[name] = widgets.Dropdown(options=control, value=values[name], description=name)
        else:
            built[name] = control
    interactive = widgets.interactive(fn, **built)
    display(interactive)
    return interactive
