"""Precompute notebook 02's sweeps: temperature x alpha, student capacity against logistic regression, omitted classes.

    python -m course_utils.cli.kd_sweep                      # writes results/kd_sweep.json (about 1.5 h on one core)
    python -m course_utils.cli.kd_sweep --seeds 1 --grid-epochs 1 --epochs 1 --omit-classes 9 --out /tmp/sweep.json  # smoke
    python -m course_utils.cli.kd_sweep --sections grid --out a.json           # parts in parallel, one per core,
    python -m course_utils.cli.kd_sweep --sections capacity omitted --out b.json   # (both use cu.images.recipes.KD)
    python -m course_utils.cli.kd_sweep --merge a.json b.json                  # then merged into results/kd_sweep.json

Sections:
- ``grid``: the temperature x alpha grid in the few-label regime (2,000 labels, 30 epochs, the default
  student), next to scratch and the PyTorch tutorial's recipe. Its best cell is the course recipe,
  ``cu.images.recipes.KD`` (a test checks that they agree).
- ``capacity``: every student and logistic regression on notebook 02's full-label budget (10,000 images,
  4 epochs), scratch against the course recipe: the floor each student must beat.
- ``omitted``: Hinton et al.'s omitted-class experiment for every class (soft targets against hard labels,
  with the bias shift chosen on a validation split), for notebook 02's class picker.

Every run trains a student with the course's training recipe (``cu.images.recipes.TRAINING``) on cached teacher
logits (no augmentation, so the cache is exact) and reports its last-epoch test accuracy. Seeds are 100,
101, ... (not the notebook's live seeds 0, 1, 2, so a live re-run is a fresh estimate). The JSON records
seeds, epochs, subset sizes, machine and wall time next to the results; the notebook only reads it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .. import evaluate, report, train, validate
from ..images import data, models, recipes

SWEEP_FILE, COMMAND = recipes.SWEEP_FILE, recipes.SWEEP_COMMAND
PEER_RECIPE = {"temperature": 2.0, "alpha": 0.25}  # PyTorch's KD tutorial: T = 2, soft weight 0.25, CE weight 0.75
SECTIONS = ("grid", "capacity", "omitted")


def few_label_split(full_train: data.ImageSet, labels: int) -> tuple[data.ImageSet, data.ImageSet]:
    """The few-label regime's ``labels`` stratified images (seed 0) and the rest of the training split."""
    return data.stratified_split(full_train, labels, seed=0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default=models.DEFAULT_STUDENT, choices=list(models.STUDENTS),
                        help="student of the grid and the omitted classes")
    parser.add_argument("--seeds", type=validate.positive_int, default=3, help="seeds per cell (100, 101, ...)")
    parser.add_argument("--grid-labels", type=validate.positive_int, default=2_000, help="labelled images of the grid")
    parser.add_argument("--grid-epochs", type=validate.positive_int, default=30)
    parser.add_argument("--temperatures", type=validate.positive_float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--alphas", type=validate.fraction, nargs="+", default=[0.25, 0.5, 0.75, 0.9, 1.0])
    parser.add_argument("--train-subset", type=validate.positive_int, default=10_000,
                        help="labelled images of the capacity sweep")
    parser.add_argument("--epochs", type=validate.positive_int, default=4, help="epochs of the capacity sweep")
    everyone = [*models.STUDENTS, *models.BASELINES]
    parser.add_argument("--capacity", nargs="+", choices=everyone, default=everyone)
    parser.add_argument("--omit-classes", type=validate.non_negative_int, nargs="+", default=list(range(10)))
    parser.add_argument("--omit-transfer", type=validate.positive_int, default=10_000,
                        help="transfer images (before the class is removed)")
    parser.add_argument("--omit-epochs", type=validate.positive_int, default=3)
    parser.add_argument("--out", type=Path, default=SWEEP_FILE)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--merge", type=Path, nargs="+", default=None, help="merge the JSON of parts run separately")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.merge:
        return merge(args.merge, args.out)
    if any(not 0 <= k < 10 for k in args.omit_classes):
        parser.error(f"--omit-classes takes class indices 0 to 9, got {args.omit_classes}")
    if args.train_subset > 60_000 or args.grid_labels > 60_000:
        parser.error("--train-subset and --grid-labels take at most 60000 (the training split's size)")
    if args.omit_transfer > 55_000:
        parser.error("--omit-transfer takes at most 55000 (the training split less the 5000-image validation split)")

    start = time.perf_counter()
    seeds = [100 + i for i in range(args.seeds)]
    full_train, test_set = data.load_fashion_mnist("train"), data.load_fashion_mnist("test")
    train_logits = models.load_teacher_logits("train")
    teacher_accuracy = (models.load_teacher_logits("test").argmax(1) == test_set.labels).float().mean().item()
    result: dict = {
        "command": COMMAND + (" " + " ".join(argv) if argv else ""),
        "teacher_accuracy": teacher_accuracy, "teacher_card": models.teacher_card(),
        "training": dict(recipes.TRAINING), "seeds": seeds, "test_images": len(test_set),
        "machine": report.sweep_machine(), "torch": torch.__version__,
    }

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    if "grid" in args.sections:
        result["grid"] = _grid(args, full_train, train_logits, test_set, teacher_accuracy, seeds, log)
    if "capacity" in args.sections:
        result["capacity"] = _capacity(args, full_train, train_logits, test_set, seeds, log)
    if "omitted" in args.sections:
        result["omitted"] = _omitted(args, full_train, train_logits, test_set, seeds, log)

    result["wall_seconds"] = time.perf_counter() - start
    report.write_precomputed(args.out, result)
    log(f"wrote {args.out}")
    return result


def merge(parts: Sequence[Path], out: Path) -> dict:
    """Merge parts run in parallel (``--sections``) into one sweep file; their commands and wall times are kept."""
    return report.merge_precomputed(parts, out, COMMAND, SECTIONS, same=("teacher_card",))


def _over_seeds(run: Callable[[int], float], seeds: Sequence[int]) -> dict[str, object]:
    return evaluate.seed_summary([run(seed) for seed in seeds])


def _grid(args: argparse.Namespace, full_train: data.ImageSet, train_logits: torch.Tensor, test_set: data.ImageSet,
          teacher_accuracy: float, seeds: list[int], log) -> dict:
    labelled, _ = few_label_split(full_train, args.grid_labels)
    logits = train_logits[labelled.index]

    def run(temperature: float, alpha: float) -> dict[str, object]:
        step = train.cross_entropy_step if alpha == 0 else recipes.kd_step(temperature, alpha)
        return _over_seeds(lambda seed: recipes.train_student(
            models.create(args.student, seed=seed), labelled, test_set, epochs=args.grid_epochs, seed=seed,
            loss_fn=step, teacher_logits=logits), seeds)

    scratch = run(1.0, 0.0)
    log(f"grid scratch {args.student}: {scratch['mean']:.4f}")
    cells = []
    for temperature in args.temperatures:
        for alpha in args.alphas:
            cell = {"temperature": temperature, "alpha": alpha, **run(temperature, alpha)}
            cell["gap_closed"] = evaluate.gap_closed(cell["mean"], scratch["mean"], teacher_accuracy)
            cells.append(cell)
            log(f"T={temperature:g} alpha={alpha:g}: {cell['mean']:.4f}")
    peer = {**PEER_RECIPE, **run(PEER_RECIPE["temperature"], PEER_RECIPE["alpha"])}
    log(f"peer recipe: {peer['mean']:.4f}")
    return {"student": args.student, "labels": args.grid_labels, "epochs": args.grid_epochs, "subset_seed": 0,
            "temperatures": args.temperatures, "alphas": args.alphas, "scratch": scratch, "cells": cells,
            "best": max(cells, key=lambda c: c["mean"]), "peer_recipe": peer}


def _capacity(args: argparse.Namespace, full_train: data.ImageSet, train_logits: torch.Tensor,
              test_set: data.ImageSet, seeds: list[int], log) -> dict:
    train_set = data.load_fashion_mnist("train", subset=args.train_subset, seed=0)
    logits = train_logits[train_set.index]
    rows = []
    for name in args.capacity:
        def run(step, name=name) -> dict[str, object]:
            return _over_seeds(lambda seed: recipes.train_student(
                models.create(name, seed=seed), train_set, test_set, epochs=args.epochs, seed=seed, loss_fn=step,
                teacher_logits=logits), seeds)

        row = {"student": name, "parameters": evaluate.count_parameters(models.create(name)),
               "scratch": run(train.cross_entropy_step), "kd": run(recipes.kd_step())}
        rows.append(row)
        log(f"{name}: scratch {row['scratch']['mean']:.4f}  kd {row['kd']['mean']:.4f}")
    return {"recipe": dict(recipes.KD), "train_subset": args.train_subset, "subset_seed": 0, "epochs": args.epochs,
            "rows": rows}


def _omitted(args: argparse.Namespace, full_train: data.ImageSet, train_logits: torch.Tensor,
             test_set: data.ImageSet, seeds: list[int], log) -> dict:
    validation, transfer = recipes.omitted_class_splits(full_train, args.omit_transfer)
    rows = []
    for class_index in args.omit_classes:
        row: dict[str, object] = {"class_index": class_index, "class_name": data.CLASS_NAMES[class_index]}
        for arm, soft in (("soft", True), ("hard", False)):
            runs = [recipes.omitted_class(models.create(args.student, seed=seed), transfer, validation, test_set,
                                          train_logits, class_index, epochs=args.omit_epochs, seed=seed, soft=soft)
                    for seed in seeds]
            row[arm] = {key: [run[key] for run in runs] for key in runs[0]}
        rows.append(row)
        log(f"omitted {data.CLASS_NAMES[class_index]}: soft {row['soft']['class_accuracy_before']} -> "
            f"{row['soft']['class_accuracy_after']}, hard {row['hard']['class_accuracy_before']}")
    return {"student": args.student, "temperature": recipes.KD["temperature"], "transfer_images": args.omit_transfer,
            "validation_images": len(validation), "epochs": args.omit_epochs, "rows": rows}


if __name__ == "__main__":
    main()
