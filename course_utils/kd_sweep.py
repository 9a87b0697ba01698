"""Precompute notebook 02's distillation sweeps (temperature x alpha, student capacity, low labels, peer recipe).

    python -m course_utils.kd_sweep                  # writes results/kd_sweep.json (about an hour on one CPU core)
    python -m course_utils.kd_sweep --seeds 1 --epochs 1 --low-steps 20 --low-seeds 1 --out /tmp/sweep.json   # a smoke run
    python -m course_utils.kd_sweep --sections grid capacity --out a.json   # parts in parallel, one per core:
    python -m course_utils.kd_sweep --sections low --low-seeds 1 --low-first-seed 101 --out b.json   # (and 100, 102)
    python -m course_utils.kd_sweep --merge a.json b.json c.json d.json   # then merged (low-label seeds are pooled)

Every run trains a student from scratch on cached teacher logits (no augmentation, so the
cache is exact) and reports its test accuracy. The JSON records the seeds, epochs, subset
sizes, machine and wall time next to the results; the notebook only reads it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import config, data, evaluate, losses, models, report, train

SWEEP_FILE = config.REPO_DIR / "results" / "kd_sweep.json"
COMMAND = "python -m course_utils.kd_sweep"


def kd_step(temperature: float, alpha: float):
    """A ``loss_fn`` for :func:`cu.train.fit` on ``(images, labels, teacher_logits)`` batches."""

    def step(model: nn.Module, batch: tuple) -> torch.Tensor:
        images, labels, teacher_logits = batch[:3]
        return losses.kd_loss(model(images), teacher_logits, labels, temperature=temperature, alpha=alpha)

    return step


def low_label_step(temperature: float):
    """A ``loss_fn`` on ``(images, labels, teacher_logits, is_labelled)`` batches of a transfer set.

    ``T^2 KL`` on every image (the teacher needs no labels) plus cross-entropy on the labelled
    images only; the labels of the unlabelled images are never read.
    """

    def step(model: nn.Module, batch: tuple) -> torch.Tensor:
        images, labels, teacher_logits, is_labelled = batch
        student_logits = model(images)
        soft = losses.kd_loss(student_logits, teacher_logits, None, temperature=temperature, alpha=1.0)
        if not is_labelled.any():  # a batch without labels: the soft term alone
            return soft
        return soft + F.cross_entropy(student_logits[is_labelled], labels[is_labelled])

    return step


def train_student(student: str, train_set: data.ImageSet, teacher_logits: torch.Tensor, test_set: data.ImageSet, *,
                  temperature: float, alpha: float, epochs: int, seed: int, batch_size: int = 128) -> float:
    """Train ``student`` with ``kd_loss(T, alpha)`` (alpha = 0 is plain cross-entropy) and return its test accuracy."""
    model = models.create(student, seed=seed)
    loader = train_set.loader(batch_size=batch_size, seed=seed, extra=(teacher_logits,))
    loss_fn = train.cross_entropy_step if alpha == 0 else kd_step(temperature, alpha)
    train.fit(model, loader, epochs=epochs, loss_fn=loss_fn, seed=seed, progress=False)
    return evaluate.accuracy(model, test_set.images, test_set.labels)


def train_low_label(student: str, labelled: data.ImageSet, transfer: data.ImageSet | None, train_logits: torch.Tensor,
                    test_set: data.ImageSet, *, temperature: float, steps: int, seed: int, distil: bool,
                    loss_fn: train.LossFn | None = None, batch_size: int = 128) -> float:
    """A low-label student trained for exactly ``steps`` optimizer steps; returns its test accuracy.

    ``distil=False``: cross-entropy on ``labelled`` only. ``distil=True``: ``loss_fn`` (default
    :func:`low_label_step`) on ``(images, labels, teacher_logits, is_labelled)`` batches of ``labelled``
    plus the images of ``transfer`` (``None``: the labelled images only), whose labels are replaced by 0.
    ``train_logits`` are the teacher's logits on the full training split.
    """
    pool = labelled if transfer is None or not distil else data.ImageSet(
        torch.cat([labelled.images, transfer.images]), torch.cat([labelled.labels, transfer.labels]),
        index=torch.cat([labelled.index, transfer.index]))
    is_labelled = torch.zeros(len(pool), dtype=torch.bool)
    is_labelled[: len(labelled)] = True
    labels = torch.where(is_labelled, pool.labels, torch.zeros_like(pool.labels))  # hide the transfer set's labels
    loader = data.make_loader(pool.images, labels, train_logits[pool.index], is_labelled,
                              batch_size=batch_size, shuffle=True, seed=seed)
    epochs = -(-steps // len(loader))
    model = models.create(student, seed=seed)
    loss_fn = (loss_fn or low_label_step(temperature)) if distil else train.cross_entropy_step
    train.fit(model, loader, epochs=epochs, max_steps=steps, loss_fn=loss_fn, seed=seed, progress=False)
    return evaluate.accuracy(model, test_set.images, test_set.labels)


def gap_closed(student_accuracy: float, scratch_accuracy: float, teacher_accuracy: float) -> float:
    """Fraction of the teacher-student gap a method closes: ``(acc - scratch) / (teacher - scratch)``."""
    if teacher_accuracy <= scratch_accuracy:
        raise ValueError(f"the teacher ({teacher_accuracy:.4f}) must beat the scratch student "
                         f"({scratch_accuracy:.4f}) for a gap to exist.")
    return (student_accuracy - scratch_accuracy) / (teacher_accuracy - scratch_accuracy)


def summary(values: Sequence[float]) -> dict[str, object]:
    """Mean, sample std (0 for one value) and the values themselves."""
    values = [float(v) for v in values]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def load_sweep(path: str | Path | None = None) -> dict:
    """The precomputed sweep (``results/kd_sweep.json``); a clear error says how to make it."""
    return report.load_precomputed(path or SWEEP_FILE, COMMAND,
                                   "about an hour on one CPU core; see its docstring for running the parts in parallel")


def machine() -> str:
    """The CPU and the torch threads a sweep ran on, for its JSON."""
    return f"{report.cpu_name()}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default="student-s", help="student of the T x alpha grid and the peer recipe")
    parser.add_argument("--train-subset", type=int, default=10_000, help="labelled training images (full labels)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2, help="seeds per grid / capacity cell (100, 101, ...)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.25, 0.5, 0.75, 0.9, 1.0])
    parser.add_argument("--capacity", nargs="+", default=list(models.STUDENTS))
    parser.add_argument("--low-student", default="student-xl")
    parser.add_argument("--low-labels", type=int, default=2000)
    parser.add_argument("--low-transfer", type=int, nargs="+", default=[58_000],
                        help="transfer-set sizes (unlabelled images) for the low-label runs")
    parser.add_argument("--low-steps", type=int, default=4800, help="optimizer steps of every low-label run")
    parser.add_argument("--low-temperature", type=float, default=4.0)
    parser.add_argument("--low-seeds", type=int, default=3)
    parser.add_argument("--low-first-seed", type=int, default=100)
    parser.add_argument("--out", type=Path, default=SWEEP_FILE)
    parser.add_argument("--weights-dir", type=Path, default=None, help="another teacher (default: the shipped one)")
    parser.add_argument("--sections", nargs="+", choices=["grid", "capacity", "low"], default=["grid", "capacity", "low"])
    parser.add_argument("--capacity-recipe", type=float, nargs=2, metavar=("T", "ALPHA"), default=None,
                        help="recipe of the capacity sweep (default: the grid's best cell, which needs --sections grid)")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, help="merge the JSON of parts run separately")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.merge:
        return merge(args.merge, args.out)

    start = time.perf_counter()
    seeds = [100 + i for i in range(args.seeds)]  # not the notebook's live seeds 0, 1, 2: its re-run is a fresh estimate
    full_train, test_set = data.load_fashion_mnist("train"), data.load_fashion_mnist("test")
    train_logits = models.load_teacher_logits("train", weights_dir=args.weights_dir)
    test_logits = models.load_teacher_logits("test", weights_dir=args.weights_dir)
    teacher_accuracy = (test_logits.argmax(1) == test_set.labels).float().mean().item()
    train_set = data.load_fashion_mnist("train", subset=args.train_subset, seed=0)
    subset_logits = train_logits[train_set.index]
    result: dict = {
        "command": COMMAND + (" " + " ".join(argv) if argv else ""),
        "teacher_accuracy": teacher_accuracy, "teacher_card": models.teacher_card(args.weights_dir),
        "settings": {"student": args.student, "train_subset": args.train_subset, "subset_seed": 0,
                     "epochs": args.epochs, "seeds": seeds, "batch_size": 128, "lr": 3e-3, "schedule": "cosine",
                     "test_images": len(test_set)},
        "machine": machine(), "torch": torch.__version__,
    }

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    def run(student: str, temperature: float, alpha: float) -> dict[str, object]:
        return summary([train_student(student, train_set, subset_logits, test_set, temperature=temperature,
                                      alpha=alpha, epochs=args.epochs, seed=s) for s in seeds])

    if "grid" in args.sections:
        _grid_and_peer(args, run, result, log)
    if "capacity" in args.sections:
        recipe = args.capacity_recipe or (result["grid"]["best"]["temperature"], result["grid"]["best"]["alpha"])
        _capacity(args, run, result, log, recipe)
    if "low" in args.sections:
        _low_label(args, full_train, train_logits, test_set, teacher_accuracy, result, log)

    result["wall_seconds"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    log(f"wrote {args.out}")
    return result


def merge(parts: Sequence[Path], out: Path) -> dict:
    """Merge parts run in parallel (``--sections``) into one sweep file; their wall times are all kept."""
    loaded = [json.loads(Path(part).read_text()) for part in parts]
    cards = {json.dumps(part["teacher_card"], sort_keys=True) for part in loaded}
    if len(cards) != 1:
        raise ValueError("the parts were computed with different teachers; rerun them with the same one.")
    result: dict = {}
    for part in loaded:
        previous_capacity, previous_low = result.get("capacity"), result.get("low_label")
        result.update({k: v for k, v in part.items() if k not in ("command", "wall_seconds")})
        if previous_capacity and "capacity" in part:  # different students: concatenate the rows
            result["capacity"] = {**previous_capacity, "rows": previous_capacity["rows"] + part["capacity"]["rows"]}
        if previous_low and "low_label" in part:  # different seeds: pool the values
            result["low_label"] = _pool_low_label(previous_low, part["low_label"], result["teacher_accuracy"])
    for part in loaded:  # the top-level settings describe the grid
        if "grid" in part:
            result["settings"] = part["settings"]
    result["command"] = " ; ".join(part["command"] for part in loaded) + " ; " + COMMAND + " --merge ..."
    result["part_wall_seconds"] = [part["wall_seconds"] for part in loaded]
    result["wall_seconds"] = max(result["part_wall_seconds"])  # the parts ran side by side
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"merged {len(loaded)} parts into {out}")
    return result


def _pool_low_label(first: dict, second: dict, teacher_accuracy: float) -> dict:
    pooled = {**first, "seeds": first["seeds"] + second["seeds"]}
    pooled["scratch"] = summary(first["scratch"]["values"] + second["scratch"]["values"])
    rows = []
    for row in first["kd_transfer"]:
        other = next(r for r in second["kd_transfer"] if r["transfer_images"] == row["transfer_images"])
        merged = {"transfer_images": row["transfer_images"], **summary(row["values"] + other["values"])}
        merged["gap_closed"] = gap_closed(merged["mean"], pooled["scratch"]["mean"], teacher_accuracy)
        rows.append(merged)
    pooled["kd_transfer"] = rows
    return pooled


def _grid_and_peer(args: argparse.Namespace, run, result: dict, log) -> None:
    # 1. temperature x alpha grid (alpha = 0 is the scratch baseline, the same for every T)
    scratch = run(args.student, 1.0, 0.0)
    log(f"scratch {args.student}: {scratch['mean']:.4f}")
    grid = []
    for temperature in args.temperatures:
        for alpha in args.alphas:
            cell = {"temperature": temperature, "alpha": alpha, **run(args.student, temperature, alpha)}
            grid.append(cell)
            log(f"T={temperature:g} alpha={alpha:g}: {cell['mean']:.4f}")
    best = max(grid, key=lambda c: c["mean"])
    result["grid"] = {"temperatures": args.temperatures, "alphas": args.alphas, "scratch": scratch, "cells": grid,
                      "best": best}

    # 2. the PyTorch tutorial's recipe (T = 2, soft weight 0.25, CE weight 0.75) on the same student and budget
    result["peer_recipe"] = {"temperature": 2.0, "alpha": 0.25, **run(args.student, 2.0, 0.25)}
    log(f"peer recipe: {result['peer_recipe']['mean']:.4f}")


def _capacity(args: argparse.Namespace, run, result: dict, log, recipe: Sequence[float]) -> None:
    # 3. capacity: every student, scratch against one distillation recipe
    capacity = []
    for name in args.capacity:
        row = {"student": name, "parameters": models.count_parameters(models.create(name)),
               "scratch": run(name, 1.0, 0.0), "kd": run(name, recipe[0], recipe[1])}
        capacity.append(row)
        log(f"{name}: scratch {row['scratch']['mean']:.4f}  kd {row['kd']['mean']:.4f}")
    result["capacity"] = {"recipe": {"temperature": recipe[0], "alpha": recipe[1]}, "rows": capacity,
                          "settings": dict(result["settings"])}


def _low_label(args: argparse.Namespace, full_train: data.ImageSet, train_logits: torch.Tensor,
               test_set: data.ImageSet, teacher_accuracy: float, result: dict, log) -> None:
    # 4. low labels: scratch on the labels, KD on the labels only, KD with an unlabelled transfer set; equal steps
    labelled, rest = data.stratified_split(full_train, args.low_labels, seed=0)
    steps = args.low_steps
    low_seeds = list(range(args.low_first_seed, args.low_first_seed + args.low_seeds))
    low = {"student": args.low_student, "labels": args.low_labels, "temperature": args.low_temperature,
           "steps": steps, "seeds": low_seeds, "transfer_sizes": args.low_transfer}

    def low_run(transfer: data.ImageSet | None, distil: bool) -> dict[str, object]:
        return summary([train_low_label(args.low_student, labelled, transfer, train_logits, test_set,
                                        temperature=args.low_temperature, steps=steps, seed=s, distil=distil)
                        for s in low_seeds])

    low["scratch"] = low_run(None, distil=False)
    log(f"low-label scratch: {low['scratch']['mean']:.4f}")
    low["kd_transfer"] = []
    for size in args.low_transfer:
        order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(0))  # nested: 10k is inside 58k
        transfer = rest.subset(order[: min(size, len(rest))])
        row = {"transfer_images": len(transfer), **low_run(transfer, distil=True)}
        row["gap_closed"] = gap_closed(row["mean"], low["scratch"]["mean"], teacher_accuracy)
        low["kd_transfer"].append(row)
        log(f"low-label kd + {len(transfer)} transfer images: {row['mean']:.4f} (gap closed {row['gap_closed']:.2f})")
    result["low_label"] = low


if __name__ == "__main__":
    main()
