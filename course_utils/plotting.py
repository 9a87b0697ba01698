"""Plots shared by the notebooks (matplotlib; every function returns its figure).

Domain-free: a plot that labels classes takes their ``class_names`` (e.g. ``cu.images.CLASS_NAMES`` or a data set's
``.class_names``), and images are drawn as they are, each on its own grey scale (min to max), so normalised and
raw pixels look the same.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch

from . import validate


def show_images(images: torch.Tensor, labels: Sequence[int] | torch.Tensor | None = None,
                class_names: Sequence[str] | None = None, columns: int = 8, titles: Sequence[str] | None = None,
                size: float = 1.4) -> plt.Figure:
    """A grid of ``(N, 1, H, W)`` grey images, titled by ``titles`` or by their labels' ``class_names`` (the label
    numbers without names)."""
    validate.non_empty(images, "images")
    for given, name in ((labels, "labels"), (titles, "titles")):
        if given is not None:
            validate.same_length(images, given, ("images", name))
    count = len(images)
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * (size + 0.25)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= count:
            continue
        ax.imshow(images[i].squeeze(0).cpu(), cmap="gray_r")
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
        elif labels is not None:
            label = int(labels[i])
            ax.set_title(class_names[label] if class_names is not None else str(label), fontsize=8)
    fig.tight_layout()
    return fig


def plot_history(histories: Mapping[str, object], metric: str = "val_accuracy") -> plt.Figure:
    """Curves of one metric (``val_accuracy`` or ``train_loss``) for several ``History`` objects."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, history in histories.items():
        values = getattr(history, metric)
        ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_confusion(matrix: torch.Tensor, class_names: Sequence[str], title: str = "") -> plt.Figure:
    """A confusion matrix (rows: true class, columns: predicted) with counts in the cells."""
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(class_names):
        raise ValueError(f"the confusion matrix {tuple(matrix.shape)} must be square with one row per class name "
                         f"({len(class_names)} given): pass the class_names of its data set.")
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.imshow(matrix, cmap="Blues")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = matrix.max().item()
    for i in ticks:
        for j in ticks:
            value = int(matrix[i, j])
            ax.text(j, i, value, ha="center", va="center", fontsize=7, color="white" if value > top / 2 else "black")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_distribution(probabilities: torch.Tensor, class_names: Sequence[str],
                      title: str = "", ax: plt.Axes | None = None) -> plt.Figure:
    """A bar chart of one probability vector over the classes."""
    if probabilities.ndim != 1 or len(probabilities) != len(class_names):
        raise ValueError(f"probabilities must be one vector with a value per class name ({len(class_names)}), got "
                         f"shape {tuple(probabilities.shape)}.")
    validate.all_finite(probabilities, "probabilities")
    if bool(probabilities.min() < 0) or bool(probabilities.max() > 1):
        raise ValueError("probabilities must lie in [0, 1] (the axis stops there): pass softmax(logits), e.g. "
                         "cu.losses.soft_targets(logits, temperature), not the logits.")
    fig = ax.figure if ax is not None else plt.subplots(figsize=(6, 2.8))[0]
    ax = ax if ax is not None else fig.axes[0]
    ax.bar(range(len(class_names)), probabilities.detach().cpu(), color="tab:blue")
    ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# --- notebook 05: training schedule ---
SCHEDULE_LABELS = {"lr": "learning rate", "alpha": "alpha (soft weight)", "temperature": "temperature T",
                   "at_weight": "attention weight", "pool": "curriculum pool"}


def plot_schedule(schedule: object, keys: Sequence[str] = ("lr", "alpha", "temperature", "at_weight", "pool"),
                  title: str = "") -> plt.Figure:
    """A timeline of a ``cu.schedule.Schedule``: one panel per value against the step, phases shaded."""
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 1.15 * len(keys) + 0.6), sharex=True, squeeze=False)
    steps = range(schedule.total_steps)
    colours = ["tab:orange", "tab:blue", "tab:green", "tab:purple", "tab:red"]
    for ax, key in zip(axes[:, 0], keys):
        ax.plot(steps, schedule.values(key), color="black", lw=1.4)
        for i, (start, end) in enumerate(schedule.boundaries):
            ax.axvspan(start, end, color=colours[i % len(colours)], alpha=0.15, lw=0)
        ax.set_ylabel(SCHEDULE_LABELS.get(key, key), fontsize=8, rotation=0, ha="right", va="center")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    top = axes[0, 0]
    for phase, (start, end) in zip(schedule.phases, schedule.boundaries):
        top.text((start + end) / 2, 1.02, f"{phase.name}\n{start}-{end}", transform=top.get_xaxis_transform(),
                 ha="center", va="bottom", fontsize=8)
    axes[-1, 0].set_xlabel("step")
    axes[-1, 0].set_xlim(0, schedule.total_steps)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_variant_accuracies(results: Mapping[str, Sequence[float]], title: str = "") -> plt.Figure:
    """Test accuracy per variant: one dot per seed, a bar for the mean and a line for +- one std."""
    fig, ax = plt.subplots(figsize=(6.5, 0.55 * len(results) + 1.2))
    for row, seed_values in enumerate(results.values()):
        values = torch.as_tensor(list(seed_values), dtype=torch.float64)
        mean, std = values.mean().item(), values.std().item() if len(values) > 1 else 0.0
        ax.barh(row, mean, color="tab:blue", alpha=0.3, height=0.6)
        ax.errorbar(mean, row, xerr=std, color="tab:blue", capsize=4)
        ax.plot(values, [row] * len(values), "o", color="black", ms=4)
        ax.text(mean, row + 0.33, f"{mean:.4f} ± {std:.4f}", ha="center", fontsize=8)
    ax.set_yticks(range(len(results)), list(results), fontsize=8)
    every = torch.tensor([v for values in results.values() for v in values], dtype=torch.float64)
    spread = max((every.max() - every.min()).item(), 0.005)
    ax.set_xlim(every.min().item() - spread, every.max().item() + spread)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_step_curves(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], target: float | None = None,
                     title: str = "") -> plt.Figure:
    """Accuracy against training steps for several runs, with an optional target line."""
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for name, (steps, accuracies) in curves.items():
        ax.plot(steps, accuracies, marker="o", ms=3, label=name)
    if target is not None:
        ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:.4f}")
    ax.set_xlabel("training steps")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_accuracy_grid(accuracies: torch.Tensor, row_values: Sequence[float], column_values: Sequence[float],
                       row_label: str, column_label: str, highlight: tuple[int, int] | None = None,
                       title: str = "") -> plt.Figure:
    """A heat map of accuracies over two settings, the ``highlight`` cell (row, column) outlined."""
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    image = ax.imshow(accuracies, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(column_values)), [f"{v:g}" for v in column_values])
    ax.set_yticks(range(len(row_values)), [f"{v:g}" for v in row_values])
    ax.set_xlabel(column_label)
    ax.set_ylabel(row_label)
    for i in range(len(row_values)):
        for j in range(len(column_values)):
            value = float(accuracies[i][j])
            dark = value < (float(accuracies.min()) + float(accuracies.max())) / 2  # viridis is dark at the low end
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
    if highlight is not None:
        ax.add_patch(plt.Rectangle((highlight[1] - 0.5, highlight[0] - 0.5), 1, 1, fill=False, ec="red", lw=2.5))
    fig.colorbar(image, ax=ax, label="test accuracy")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# --- notebooks 03-04: feature distillation and attention transfer ---


def plot_layer_mapping(teacher_layers: Sequence[tuple[str, Sequence[int]]],
                       student_layers: Sequence[tuple[str, Sequence[int]]], pairs: Sequence[tuple[str, str]],
                       title: str = "") -> plt.Figure:
    """Teacher stages (top) and student stages (bottom) as boxes ``name / C x H x W``, paired by arrows.

    ``teacher_layers`` and ``student_layers`` are ``(path, (C, H, W))`` in forward order; ``pairs``
    are ``(student_path, teacher_path)``. A box's height grows with its channels, its width with its resolution.
    """
    fig, ax = plt.subplots(figsize=(1.9 * max(len(teacher_layers), len(student_layers)) + 1.5, 3.4))
    centres: dict[tuple[str, str], tuple[float, float]] = {}
    widest = max(shape[0] for _, shape in [*teacher_layers, *student_layers])
    rows = (("teacher", teacher_layers, "tab:orange"), ("student", student_layers, "tab:blue"))
    for row, (who, layers, colour) in enumerate(rows):
        y = 1.0 - row
        offset = (max(len(teacher_layers), len(student_layers)) - len(layers)) / 2
        for i, (path, shape) in enumerate(layers):
            x = offset + i
            height = 0.15 + 0.25 * (shape[0] / widest) ** 0.5
            width = 0.3 + 0.5 * shape[-1] / 28
            ax.add_patch(plt.Rectangle((x - width / 2, y - height / 2), width, height, color=colour, alpha=0.35))
            ax.text(x, y, f"{path}\n{'×'.join(str(s) for s in shape)}", ha="center", va="center", fontsize=8)
            centres[(who, path)] = (x, y - height / 2 if row == 0 else y + height / 2)
        ax.text(-0.9, y, who, ha="right", va="center", fontsize=10, color=colour, weight="bold")
    for student_path, teacher_path in pairs:
        (xs, ys), (xt, yt) = centres[("student", student_path)], centres[("teacher", teacher_path)]
        ax.annotate("", xy=(xt, yt), xytext=(xs, ys), arrowprops={"arrowstyle": "->", "color": "black", "lw": 1.2})
    ax.set_xlim(-1.6, max(len(teacher_layers), len(student_layers)) - 0.4)
    ax.set_ylim(-0.5, 1.5)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def show_feature_maps(rows: Mapping[str, torch.Tensor], image: torch.Tensor | None = None, channels: int = 8,
                      title: str = "") -> plt.Figure:
    """A grid of feature maps: one row per entry of ``rows`` (``(C, H, W)`` maps of one image), first ``channels``.

    Each map is scaled to its own min..max, so the grid shows where a channel fires, not how strongly.
    """
    columns = channels + (image is not None)
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.15 * columns + 1.2, 1.25 * len(rows) + 0.4), squeeze=False)
    for r, (name, maps) in enumerate(rows.items()):
        maps = maps.detach().float().cpu()
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            k = c - (image is not None)
            if k < 0:
                ax.imshow(image.squeeze(0).cpu(), cmap="gray_r")
                ax.set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
                continue
            if k >= len(maps):
                ax.axis("off")
                continue
            ax.imshow(maps[k], cmap="viridis")
            if image is None and k == 0:
                ax.set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
            if r == 0:
                ax.set_title(f"channel {k}", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def show_attention_maps(images: torch.Tensor, maps: Mapping[str, torch.Tensor], titles: Sequence[str] | None = None,
                        size: float = 1.5) -> plt.Figure:
    """Images (rows) beside their attention maps (columns), as in Zagoruyko and Komodakis (2017), fig. 2.

    ``maps`` holds ``(N, H*W)`` flattened maps (``cu.losses.attention_map``) or ``(N, H, W)``; each map is
    drawn on its own colour scale, upsampled to the image size.
    """
    count = len(images)
    columns = 1 + len(maps)
    fig, axes = plt.subplots(count, columns, figsize=(columns * size, count * size + 0.4), squeeze=False)
    for i in range(count):
        axes[i, 0].imshow(images[i].squeeze(0).cpu(), cmap="gray_r")
        if titles is not None:
            axes[i, 0].set_ylabel(titles[i], fontsize=8)
        for j, (name, batch) in enumerate(maps.items(), start=1):
            square = batch[i].detach().float().cpu()
            if square.ndim == 1:
                side = int(round(square.numel() ** 0.5))
                square = square.view(side, side)
            grown = torch.nn.functional.interpolate(square[None, None], size=images.shape[-2:], mode="bilinear",
                                                    align_corners=False)[0, 0]
            axes[i, j].imshow(grown, cmap="inferno")
            if i == 0:
                axes[i, j].set_title(name, fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_method_comparison(accuracies: Mapping[str, Sequence[float]], teacher_accuracy: float | None = None,
                           baseline: str | None = None, title: str = "") -> plt.Figure:
    """Test accuracy per method: one dot per seed, the mean ± std as a bar, the teacher as a dashed line."""
    names = list(accuracies)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.4))
    for y, name in enumerate(names):
        values = torch.tensor([float(v) for v in accuracies[name]], dtype=torch.float64)
        mean = values.mean().item()
        std = values.std().item() if len(values) > 1 else 0.0
        ax.errorbar(mean, y, xerr=std, fmt="s", color="black", capsize=4, zorder=3)
        ax.scatter(values, [y] * len(values), color="tab:blue", alpha=0.6, zorder=2)
    if baseline is not None:
        ax.axvline(torch.tensor([float(v) for v in accuracies[baseline]]).mean().item(), color="grey", lw=1,
                   ls=":", label=f"{baseline} (mean)")
    if teacher_accuracy is not None:
        ax.axvline(teacher_accuracy, color="tab:orange", ls="--", label="teacher")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy (dots: seeds; square and bar: mean ± std)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- notebooks 01-02: soft targets and the distillation loss ---
def plot_temperature_grid(images: torch.Tensor, distributions: Mapping[float, torch.Tensor], titles: Sequence[str],
                          class_names: Sequence[str]) -> plt.Figure:
    """One row per image: the image, then its distribution at each temperature (``{T: (N, C)}``)."""
    temperatures = list(distributions)
    fig, axes = plt.subplots(len(images), len(temperatures) + 1, squeeze=False,
                             figsize=(1.6 + 2.3 * len(temperatures), 1.9 * len(images)))
    for row in range(len(images)):
        axes[row, 0].imshow(images[row].squeeze(0).cpu(), cmap="gray_r")
        axes[row, 0].set_title(titles[row], fontsize=8)
        axes[row, 0].axis("off")
        for col, temperature in enumerate(temperatures, start=1):
            ax = axes[row, col]
            ax.bar(range(len(class_names)), distributions[temperature][row], color="tab:blue")
            ax.set_ylim(0, 1)
            ax.set_xticks(range(len(class_names)), class_names if row == len(images) - 1 else [], rotation=70, fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            if row == 0:
                ax.set_title(f"T = {temperature:g}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_entropy_vs_temperature(temperatures: Sequence[float], entropies: Sequence[float], num_classes: int = 10,
                                marked: Sequence[float] = ()) -> plt.Figure:
    """Mean entropy (nats) of the softened distributions against T, with the uniform limit ``log C``."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.plot(temperatures, entropies, marker="o", ms=3, label="teacher, mean over test images")
    ax.axhline(float(torch.log(torch.tensor(float(num_classes)))), color="grey", ls="--", lw=1,
               label=f"uniform over {num_classes} classes (log {num_classes})")
    for temperature in marked:
        ax.axvline(temperature, color="tab:orange", lw=0.8, alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("temperature T (log scale)")
    ax.set_ylabel("entropy (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_class_similarity(matrix: torch.Tensor, class_names: Sequence[str], title: str = "") -> plt.Figure:
    """A (C, C) matrix of averaged soft targets (row: true class); the diagonal is greyed out to show the rest."""
    off_diagonal = matrix.clone().double()
    off_diagonal.fill_diagonal_(float("nan"))
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(off_diagonal, cmap="magma_r")
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set_xlabel("class the teacher gives probability to")
    ax.set_ylabel("true class")
    top = torch.nan_to_num(off_diagonal, nan=0.0).max().item()
    for i in ticks:
        for j in ticks:
            text = "·" if i == j else f"{matrix[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=7,
                    color="white" if i != j and matrix[i, j] > top / 2 else "black")
    fig.colorbar(image, ax=ax, label="mean probability (diagonal omitted)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_image_and_distribution(image: torch.Tensor, probabilities: torch.Tensor, class_names: Sequence[str],
                                reference: torch.Tensor | None = None, title: str = "") -> plt.Figure:
    """An image beside its class distribution (bars), with an optional ``reference`` distribution as outlines."""
    fig, (ax_image, ax_bars) = plt.subplots(1, 2, figsize=(8, 2.8), gridspec_kw={"width_ratios": [1, 3]})
    ax_image.imshow(image.squeeze(0).cpu(), cmap="gray_r")
    ax_image.axis("off")
    positions = range(len(class_names))
    ax_bars.bar(positions, probabilities, color="tab:blue", label="softened")
    if reference is not None:
        ax_bars.bar(positions, reference, fill=False, edgecolor="black", lw=1, label="T = 1")
        ax_bars.legend(fontsize=8)
    ax_bars.set_xticks(positions, class_names, rotation=45, ha="right", fontsize=8)
    ax_bars.set_ylim(0, 1)
    ax_bars.set_ylabel("probability")
    ax_bars.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_gradient_scaling(temperatures: Sequence[float], plain_norms: Sequence[float],
                          scaled_norms: Sequence[float]) -> plt.Figure:
    """Gradient norm of the soft loss against T, without and with the T^2 factor, and a 1/T^2 guide (log-log)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(temperatures, plain_norms, marker="o", label="KL(p_T || q_T)")
    ax.plot(temperatures, scaled_norms, marker="s", label="T² · KL(p_T || q_T)")
    guide = [plain_norms[-1] * (temperatures[-1] / t) ** 2 for t in temperatures]
    ax.plot(temperatures, guide, color="grey", ls="--", lw=1, label="∝ 1 / T²")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("gradient norm w.r.t. student logits")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_capacity(rows: Sequence[Mapping], teacher_accuracy: float | None = None,
                  floor: tuple[str, float] | None = None, title: str = "") -> plt.Figure:
    """Scratch against distilled accuracy by student size; ``rows`` hold ``parameters`` and ``scratch`` / ``kd``
    summaries (``mean``, ``std``, ``values``), as in ``results/kd_sweep.json``.

    ``floor = (label, accuracy)`` draws the simplest sensible model (logistic regression) as a line:
    a student below it is not worth distilling into.
    """
    fig, (ax, ax_gain) = plt.subplots(1, 2, figsize=(10, 3.6))
    params = [row["parameters"] for row in rows]
    for key, label, marker in (("scratch", "scratch", "o"), ("kd", "distilled", "s")):
        ax.errorbar(params, [row[key]["mean"] for row in rows], yerr=[row[key]["std"] for row in rows],
                    marker=marker, capsize=3, label=label)
    if teacher_accuracy is not None:
        ax.axhline(teacher_accuracy, color="black", ls="--", lw=1, label="teacher")
    if floor is not None:
        ax.axhline(floor[1], color="tab:red", ls=":", lw=1.5, label=f"floor: {floor[0]}")
    for row in rows:
        ax.annotate(row.get("student", ""), (row["parameters"], row["scratch"]["mean"]), fontsize=7,
                    textcoords="offset points", xytext=(0, -12), ha="center")
    gains = [row["kd"]["mean"] - row["scratch"]["mean"] for row in rows]
    errors = [math.sqrt(row["kd"]["std"] ** 2 / max(len(row["kd"].get("values", [0])), 1)
                        + row["scratch"]["std"] ** 2 / max(len(row["scratch"].get("values", [0])), 1)) for row in rows]
    ax_gain.bar(range(len(rows)), [100 * g for g in gains], yerr=[200 * e for e in errors], capsize=3,
                color=["tab:green" if g > 0 else "tab:red" for g in gains])
    ax_gain.set_xticks(range(len(rows)), [f"{row.get('student', '')}\n{row['parameters'] / 1000:.1f}k" for row in rows],
                       fontsize=8)
    ax_gain.axhline(0, color="black", lw=0.8)
    ax_gain.set_ylabel("distilled - scratch (points, ±2 SE)")
    for axis in (ax, ax_gain):
        axis.grid(alpha=0.3)
    ax.set_xscale("log")
    ax.set_xlabel("student parameters (log scale)")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_omitted_class(row: Mapping, title: str = "") -> plt.Figure:
    """Hinton's omitted-class experiment for one class: accuracy on that class (left) and overall (right).

    ``row`` holds ``soft`` and ``hard`` runs, each with per-seed lists ``class_accuracy_before`` /
    ``_after`` and ``overall_accuracy_before`` / ``_after`` (as ``cu.images.recipes.omitted_class`` returns them,
    gathered over seeds). Dots are seeds, bars their mean.
    """
    bars = {"hard labels": row["hard"], "soft targets": row["soft"]}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, metric, label in ((axes[0], "class_accuracy", f"test accuracy on {row.get('class_name', 'the class')}"),
                              (axes[1], "overall_accuracy", "overall test accuracy")):
        names, values = [], []
        for name, runs in bars.items():
            for tag in ("before", "after"):
                names.append(f"{name}\n{'+ bias shift' if tag == 'after' else 'as trained'}")
                values.append(list(runs[f"{metric}_{tag}"]))
        colours = ["tab:gray", "tab:gray", "tab:blue", "tab:green"]
        ax.bar(range(len(values)), [sum(v) / len(v) for v in values], color=colours, alpha=0.7)
        for i, seeds in enumerate(values):
            ax.scatter([i] * len(seeds), seeds, color="black", s=12, zorder=3)
        ax.set_xticks(range(len(values)), names, fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- notebook 06: edge export ---


_LABEL_OFFSETS = ((6, 4), (6, -10), (-6, 8), (6, 12), (-6, -12))  # staggered, so labels of close points overlap less


def plot_pareto(entries: Sequence[Mapping], budget: Mapping[str, float] | None = None, title: str = "",
                ax: plt.Axes | None = None) -> plt.Figure:
    """Accuracy against latency (log scale) for every model; marker area proportional to the file size.

    ``entries``: dicts with ``name``, ``latency_ms``, ``accuracy`` (0-1), ``size_kb`` and ``group``.
    The dashed step line is the Pareto front (no other model is both faster and more accurate).
    ``budget = {"max_kb", "max_ms", "min_accuracy"}`` shades the allowed region and draws the models
    that fail any limit hollow.
    """
    fig = ax.figure if ax is not None else plt.subplots(figsize=(8, 5))[0]
    ax = ax if ax is not None else fig.axes[0]
    largest = max(e["size_kb"] for e in entries)
    groups = list(dict.fromkeys(e["group"] for e in entries))
    colours = {g: plt.get_cmap("tab10")(i) for i, g in enumerate(groups)}
    for entry in entries:
        area = 25 + 1200 * entry["size_kb"] / largest
        passes = budget is None or (entry["size_kb"] <= budget["max_kb"] and entry["latency_ms"] <= budget["max_ms"]
                                    and entry["accuracy"] >= budget["min_accuracy"])
        colour = colours[entry["group"]]
        ax.scatter(entry["latency_ms"], 100 * entry["accuracy"], s=area, alpha=0.75 if passes else 0.9,
                   facecolors=colour if passes else "none", edgecolors=colour, linewidths=1.5)
        ax.annotate(entry["name"], (entry["latency_ms"], 100 * entry["accuracy"]), fontsize=6.5, alpha=0.85,
                    xytext=_LABEL_OFFSETS[entries.index(entry) % len(_LABEL_OFFSETS)], textcoords="offset points")
    front, best = [], -1.0
    for entry in sorted(entries, key=lambda e: (e["latency_ms"], -e["accuracy"])):
        if entry["accuracy"] > best:
            front.append(entry)
            best = entry["accuracy"]
    ax.step([e["latency_ms"] for e in front], [100 * e["accuracy"] for e in front], where="post", ls="--",
            color="grey", lw=1, label="Pareto front")
    ax.set_xscale("log")
    if budget is not None:
        low, high = ax.get_ylim()
        ax.axvspan(ax.get_xlim()[0], budget["max_ms"], ymin=(100 * budget["min_accuracy"] - low) / (high - low),
                   color="tab:green", alpha=0.08, label=f"budget: ≤ {budget['max_ms']:g} ms, ≥ "
                   f"{100 * budget['min_accuracy']:.1f} %, ≤ {budget['max_kb']:g} KB (hollow: fails)")
    for group in groups:
        ax.scatter([], [], color=colours[group], label=group)
    ax.set_xlabel("latency, batch 1 (ms, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title or "accuracy against latency (marker area ∝ model size)", fontsize=10)
    fig.tight_layout()
    return fig


# --- notebook 08: language-model distillation ---
def plot_bits_per_char(bits: Mapping[str, Sequence[float]], teacher_bits: float | None = None,
                       title: str = "") -> plt.Figure:
    """Held-out bits per character per method (lower is better): one dot per seed, mean ± std, the teacher dashed."""
    names = list(bits)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.4))
    for y, name in enumerate(names):
        values = torch.tensor([float(v) for v in bits[name]], dtype=torch.float64)
        std = values.std().item() if len(values) > 1 else 0.0
        ax.errorbar(values.mean().item(), y, xerr=std, fmt="s", color="black", capsize=4, zorder=3)
        ax.scatter(values, [y] * len(values), color="tab:blue", alpha=0.6, zorder=2)
    if teacher_bits is not None:
        ax.axvline(teacher_bits, color="tab:orange", ls="--", label="teacher")
        ax.legend(fontsize=8, loc="best")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("held-out bits per character (lower is better; dots: seeds, square and bar: mean ± std)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_exact_match(exact: Mapping[str, Mapping[int, float]], unseen_from: int | None = None,
                     title: str = "") -> plt.Figure:
    """Exact-match accuracy by operand length, one group of bars per length and one bar per model.

    ``unseen_from`` shades the lengths from that one on (operand lengths never seen in training).
    """
    names = list(exact)
    lengths = sorted({int(d) for row in exact.values() for d in row})
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    for i, name in enumerate(names):
        values = [float(exact[name].get(d, exact[name].get(str(d), float("nan")))) for d in lengths]
        ax.bar([x + (i - (len(names) - 1) / 2) * width for x in range(len(lengths))], values, width, label=name)
    if unseen_from is not None and unseen_from in lengths:
        start = lengths.index(unseen_from) - 0.5
        ax.axvspan(start, len(lengths) - 0.5, color="grey", alpha=0.12, label="unseen length")
    ax.set_xticks(range(len(lengths)), [f"{d} digit{'s' if d > 1 else ''}" for d in lengths])
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("exact match (held-out problems)")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- notebook 06: the speed-up decomposed, the seeds' claim, pruning ---
def plot_latency_decomposition(decomposition: Mapping[str, float], title: str = "") -> plt.Figure:
    """The four batch-1 latencies of ``cu.export.latency_decomposition`` as bars (log scale), each step's ratio
    written between two bars: runtime, model size, quantization; their product is the end-to-end ratio."""
    steps = [("teacher FP32\nPyTorch eager", "eager_teacher_ms", None),
             ("teacher FP32\nonnxruntime", "ort_teacher_ms", ("runtime", "runtime_ratio")),
             ("student FP32\nonnxruntime", "ort_student_fp32_ms", ("model size", "size_ratio")),
             ("student INT8\nonnxruntime", "ort_student_int8_ms", ("quantization", "quantization_ratio"))]
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    values = [decomposition[key] for _, key, _ in steps]
    ax.bar(range(4), values, color=["tab:grey", "tab:blue", "tab:green", "tab:purple"])
    for i, (_, _, step) in enumerate(steps):
        ax.annotate(f"{values[i]:.3f} ms", (i, values[i]), ha="center", xytext=(0, 3), textcoords="offset points",
                    fontsize=8)
        if step is not None:
            ax.annotate(f"{step[0]}\n{decomposition[step[1]]:.2f}x", (i - 0.5, math.sqrt(values[i - 1] * values[i])),
                        ha="center", va="center", fontsize=8, color="tab:red")
    ax.set_yscale("log")
    ax.set_xticks(range(4), [label for label, _, _ in steps], fontsize=8)
    ax.set_ylabel("median latency, batch 1 (ms, log)")
    ax.grid(axis="y", alpha=0.3, which="both")
    ax.set_title(title or f"end to end {decomposition['end_to_end_ratio']:.1f}x = runtime x model size x quantization",
                 fontsize=10)
    fig.tight_layout()
    return fig


def plot_claim(rows: Sequence[Mapping], max_points_lost: float = 2.0, min_ratio: float = 10.0,
               title: str = "") -> plt.Figure:
    """Accuracy lost against the teacher (points, mean ± std over seeds) against how many times smaller each student
    is (log scale), by parameters and by file (FP32 teacher / INT8 student); the shaded corner is the claim
    "``min_ratio`` times smaller, at most ``max_points_lost`` points lost".

    ``rows``: dicts with ``student``, ``parameter_ratio``, ``file_ratio``, ``points_lost`` and ``points_lost_std``.
    """
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for key, label, marker in (("parameter_ratio", "parameters (FP32 vs FP32)", "o"),
                               ("file_ratio", "file bytes (FP32 teacher vs INT8 student)", "s")):
        ax.errorbar([row[key] for row in rows], [row["points_lost"] for row in rows],
                    yerr=[row["points_lost_std"] for row in rows], marker=marker, ls="none", capsize=3, label=label)
        for row in rows:
            ax.annotate(row["student"], (row[key], row["points_lost"]), fontsize=7, textcoords="offset points",
                        xytext=(5, 3))
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    ax.fill_between([min_ratio, max(high, min_ratio * 2)], 0, max_points_lost, color="tab:green", alpha=0.12,
                    label=f"the claim: ≥ {min_ratio:g}x smaller, ≤ {max_points_lost:g} points lost")
    ax.set_xlim(low, max(high, min_ratio * 2))
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("times smaller than the teacher (log scale)")
    ax.set_ylabel("accuracy lost vs the teacher (points)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7.5)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_pruning(rows: Sequence[Mapping], dense_accuracy: float | None = None, title: str = "") -> plt.Figure:
    """Left: test accuracy against sparsity, right after pruning and after fine-tuning with the masks fixed.
    Right: the ONNX file's bytes against sparsity, raw and gzip'd, FP32 and INT8 (raw FP32 stays flat).

    ``rows``: dicts with ``sparsity``, ``one_shot`` and ``fine_tuned`` accuracies (0-1), and ``fp32_kb``,
    ``fp32_gzip_kb``, ``int8_kb``, ``int8_gzip_kb``.
    """
    fig, (ax, ax_size) = plt.subplots(1, 2, figsize=(10, 3.6))
    sparsity = [100 * row["sparsity"] for row in rows]
    ax.plot(sparsity, [100 * row["one_shot"] for row in rows], "o--", label="pruned, no fine-tuning")
    ax.plot(sparsity, [100 * row["fine_tuned"] for row in rows], "s-", label="pruned, then KD fine-tuning")
    if dense_accuracy is not None:
        ax.axhline(100 * dense_accuracy, color="black", ls=":", lw=1, label="dense, same fine-tuning")
    ax.set_xlabel("weights set to zero (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    for key, label, style in (("fp32_kb", "FP32 .onnx", "o-"), ("fp32_gzip_kb", "FP32 .onnx, gzip'd", "o--"),
                              ("int8_kb", "INT8 .onnx", "s-"), ("int8_gzip_kb", "INT8 .onnx, gzip'd", "s--")):
        ax_size.plot(sparsity, [row[key] for row in rows], style, label=label)
    ax_size.set_xlabel("weights set to zero (%)")
    ax_size.set_ylabel("file size (KB)")
    ax_size.set_ylim(bottom=0)
    ax_size.legend(fontsize=8)
    for axis in (ax, ax_size):
        axis.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- notebook 02b: transfer sets ---
def plot_teacher_confidence(logits: Mapping[str, torch.Tensor], class_names: Sequence[str],
                            title: str = "") -> plt.Figure:
    """What the teacher says on each transfer set ``{name: teacher logits (N, C)}``.

    Left: the distribution of its confidence ``max_c softmax(v)_c`` per set (box: quartiles, whiskers: 5-95 %).
    Right: the share of each set's images it assigns to each class (rows: sets): a set the teacher files
    under one or two classes teaches the student little about the others.
    """
    names = list(logits)
    confidences = [logits[name].softmax(1).max(1).values.numpy() for name in names]
    shares = torch.stack([torch.bincount(logits[name].argmax(1), minlength=len(class_names)).double()
                          / len(logits[name]) for name in names])  # (sets, C)
    fig, (ax, ax_share) = plt.subplots(1, 2, figsize=(11, 0.45 * len(names) + 1.8),
                                       gridspec_kw={"width_ratios": [1, 1.3]})
    ax.boxplot(confidences, vert=False, whis=(5, 95), showfliers=False, widths=0.6)
    for y, values in enumerate(confidences, start=1):
        ax.scatter(values.mean(), y, marker="D", color="tab:orange", zorder=3, s=18)
    ax.set_yticks(range(1, len(names) + 1), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.01)
    ax.set_xlabel("teacher's confidence, max softmax probability (diamond: mean)")
    ax.grid(axis="x", alpha=0.3)
    image = ax_share.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (row, col), share in zip(((r, c) for r in range(len(names)) for c in range(len(class_names))), shares.flatten()):
        if share >= 0.005:
            ax_share.text(col, row, f"{100 * share:.0f}", ha="center", va="center", fontsize=7,
                          color="white" if share > 0.5 else "black")
    ax_share.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right", fontsize=8)
    ax_share.set_yticks(range(len(names)), names, fontsize=8)
    ax_share.set_title("% of the set the teacher files under each class", fontsize=9)
    fig.colorbar(image, ax=ax_share, fraction=0.03)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_accuracy_curves(x_values: Sequence[float], curves: Mapping[str, Sequence[Sequence[float]]], xlabel: str,
                         teacher_accuracy: float | None = None, reference: tuple[str, float] | None = None,
                         x_labels: Sequence[str] | None = None, title: str = "") -> plt.Figure:
    """Test accuracy against a setting (transfer-set size, training steps) for several arms.

    ``curves`` maps an arm to one list of per-seed accuracies per x value; the line joins the means, the bars
    are ± std and the dots are the seeds. ``x_labels`` places the values at even spacing with those labels
    (for sizes from 0 to 58,000); ``reference = (label, accuracy)`` draws a dotted line (e.g. scratch).
    """
    fig, ax = plt.subplots(figsize=(7, 3.8))
    positions = list(range(len(x_values))) if x_labels is not None else [float(x) for x in x_values]
    for name, per_x in curves.items():
        values = [torch.tensor([float(v) for v in seeds], dtype=torch.float64) for seeds in per_x]
        means = [v.mean().item() for v in values]
        stds = [v.std().item() if len(v) > 1 else 0.0 for v in values]
        line = ax.errorbar(positions[:len(values)], means, yerr=stds, marker="o", capsize=3, label=name)
        for x, v in zip(positions, values):
            ax.scatter([x] * len(v), v, color=line[0].get_color(), s=10, alpha=0.5)
    if teacher_accuracy is not None:
        ax.axhline(teacher_accuracy, color="black", ls="--", lw=1, label="teacher")
    if reference is not None:
        ax.axhline(reference[1], color="grey", ls=":", lw=1.2, label=reference[0])
    if x_labels is not None:
        ax.set_xticks(positions, x_labels)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


# --- notebook 05: budgets and per-class accuracy ---


def plot_budget_curves(steps: Sequence[int], arms: Mapping[str, Sequence[Sequence[float]]], title: str = "",
                       teacher_accuracy: float | None = None) -> plt.Figure:
    """Test accuracy against the step budget, one line per arm: the mean over seeds, a bar for ± one std.

    ``arms[name][k]`` holds the per-seed values at ``steps[k]``. The x axis is logarithmic (budgets double).
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for i, (name, per_budget) in enumerate(arms.items()):
        values = [torch.tensor([float(v) for v in seeds], dtype=torch.float64) for seeds in per_budget]
        means = [v.mean().item() for v in values]
        stds = [v.std().item() if len(v) > 1 else 0.0 for v in values]
        shift = [s * 1.03 ** (i - (len(arms) - 1) / 2) for s in steps]  # spread the error bars apart
        ax.errorbar(shift, means, yerr=stds, marker="o", ms=4, capsize=3, label=name)
    if teacher_accuracy is not None:
        ax.axhline(teacher_accuracy, color="tab:orange", ls="--", lw=1, label="teacher")
    ax.set_xscale("log")
    ax.set_xticks(list(steps), [str(s) for s in steps])
    ax.minorticks_off()
    ax.set_xlabel("optimizer steps (batch 64), the same for every arm")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_per_class_accuracy(per_class: Mapping[str, Sequence[Sequence[float]]], class_names: Sequence[str],
                            highlight: Sequence[int] = (), title: str = "") -> plt.Figure:
    """Per-class test accuracy of several arms: ``{arm: per-seed lists of C accuracies}``; bars are seed means.

    ``highlight`` shades the classes a transfer set under-represents.
    """
    names = list(per_class)
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for k in highlight:
        ax.axvspan(k - 0.45, k + 0.45, color="tab:red", alpha=0.08)
    for i, name in enumerate(names):
        seeds = torch.tensor(per_class[name], dtype=torch.float64)  # (seeds, C)
        offsets = [x + (i - (len(names) - 1) / 2) * width for x in range(len(class_names))]
        ax.bar(offsets, seeds.mean(0), width, label=name)
        for x, column in zip(offsets, seeds.T):
            ax.scatter([x] * len(column), column, color="black", s=5, zorder=3)
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0.3, 1.0)
    ax.set_ylabel("test accuracy of the class")
    ax.legend(fontsize=8, ncol=len(names))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
