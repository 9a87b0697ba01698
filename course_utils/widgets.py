"""Widgets with one figure: live where a widget frontend runs, static everywhere else.

:func:`explore` shows a plain function's result under a few controls. The cell gets a single
output whose preferred form is the live widget (controls above the function's output) and whose
fallback, for a viewer without a widget manager (nbconvert's HTML, a static viewer, a terminal),
is the static result at the default values. So JupyterLab, VS Code and Colab show one live
figure, and a static rendering shows one static figure. Slow work belongs in a precomputed
table: never retrain a network on a slider move.
"""

from __future__ import annotations

import base64
import html
import sys
from collections.abc import Callable
from typing import Any

import matplotlib.pyplot as plt

from . import validate

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _default(control: Any) -> Any:
    """The starting value of an ``interact``-style control: (lo, hi[, step]) -> lo, list -> first."""
    if isinstance(control, tuple) and len(control) in (2, 3) and all(isinstance(v, (int, float)) for v in control):
        return control[0]
    if isinstance(control, (list, dict)):
        return next(iter(control.values())) if isinstance(control, dict) else control[0]
    if hasattr(control, "value"):
        return control.value
    return control


def _render(fn: Callable[..., Any], values: dict[str, Any]) -> Any:
    """Call ``fn(**values)`` and capture what it prints and the figures it draws (an IPython ``CapturedIO``)."""
    from IPython.utils.capture import capture_output

    before = set(plt.get_fignums())
    with capture_output(stdout=True, stderr=False, display=True) as captured:
        fn(**values)
        plt.show()  # the inline backend displays (and closes) the figures fn drew: captured above
    for number in set(plt.get_fignums()) - before:  # no inline backend (a script): close fn's figures here
        plt.close(number)
    return captured


def static_bundle(captured: Any) -> dict[str, str]:
    """A ``text/html`` and ``text/plain`` rendering of captured output: printed text, then figures as PNGs."""
    parts_html, parts_text = [], []
    if captured.stdout:
        parts_html.append(f"<pre>{html.escape(captured.stdout)}</pre>")
        parts_text.append(captured.stdout.rstrip("\n"))
    for output in captured.outputs:
        data, metadata = output.data, output.metadata or {}
        if "image/png" in data:
            png = data["image/png"]
            png = png if isinstance(png, str) else base64.b64encode(png).decode("ascii")
            width = (metadata.get("image/png") or {}).get("width")
            size = f' width="{int(width)}"' if width else ""
            parts_html.append(f'<img src="data:image/png;base64,{png.strip()}"{size}/>')
        elif "text/html" in data:
            parts_html.append(data["text/html"])
        else:
            parts_html.append(f"<pre>{html.escape(data.get('text/plain', ''))}</pre>")
        parts_text.append(data.get("text/plain", ""))
    return {"text/html": "<div>" + "\n".join(parts_html) + "</div>", "text/plain": "\n".join(parts_text)}


def _colab_metadata() -> dict[str, Any]:
    """The display metadata that Colab's custom widget manager needs to render a widget view (as anywidget sends it)."""
    output = sys.modules.get("google.colab.output")
    url = getattr(getattr(output, "_widgets", None), "_installed_url", None)
    return {WIDGET_VIEW: {"colab": {"custom_widget_manager": {"url": url}}}} if url else {}


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
    """Show ``fn(**defaults)`` once: live under an ``ipywidgets.interactive`` over ``controls``, static elsewhere.

    ``controls`` use ipywidgets' ``interact`` abbreviations: ``(lo, hi, step)`` for a slider,
    a list for a dropdown, or a widget. Sliders update on release (``continuous_update=False``).
    ``fn`` runs twice at the start: once for the static fallback (what CI and static viewers keep)
    and once inside the widget's own output area. Returns the interactive widget, or ``None``
    when ipywidgets is not installed.
    """
    unknown = sorted(set(defaults or {}) - set(controls))
    if unknown:
        raise ValueError(f"defaults names {unknown}, which have no control: the static figure would use them but the "
                         f"widget would not. Give each a control, or fix it with functools.partial(fn, ...).")
    values = {name: _default(control) for name, control in controls.items()}
    values.update(defaults or {})
    for name, control in controls.items():
        _check_default(name, control, values[name])
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # plain Python: the figure is matplotlib's to show
        fn(**values)
        plt.show()
        return None
    static = _render(fn, values)
    try:
        import ipywidgets as widgets
    except ImportError:
        static.show()
        print("(ipywidgets is not installed: only the static result above is shown)")
        return None
    built, style = {}, {"description_width": "initial"}  # show the whole parameter name
    for name, control in controls.items():
        if isinstance(control, tuple) and len(control) in (2, 3):
            lo, hi, *step = control
            cls = widgets.IntSlider if all(isinstance(v, int) for v in control) else widgets.FloatSlider
            default_step = 1 if cls is widgets.IntSlider else (hi - lo) / 100
            built[name] = cls(value=values[name], min=lo, max=hi, step=step[0] if step else default_step,
                              continuous_update=False, description=name, style=style)
        elif isinstance(control, (list, dict)):
            built[name] = widgets.Dropdown(options=control, value=values[name], description=name, style=style)
        else:
            built[name] = control
    interactive = widgets.interactive(fn, **built)  # runs fn once more, into the widget's own output area
    shell = get_ipython()
    if shell is None:  # not in a kernel: nothing renders either form
        static.show()
        return interactive
    data, metadata = shell.display_formatter.format(interactive)  # keeps what frontend hooks (Colab's) add
    if WIDGET_VIEW not in data:  # a display hook has shown the widget itself
        return interactive
    # One output: frontends with a widget manager pick the widget view, all others the static rendering.
    display({**data, **static_bundle(static)}, metadata={**metadata, **_colab_metadata()}, raw=True)
    return interactive
