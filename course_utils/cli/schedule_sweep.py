"""Precompute notebook 05's budget sweep: where does a warmup -> distill -> finetune schedule (and its curriculum) help?

    python -m course_utils.cli.schedule_sweep                      # writes results/schedule_sweep.json
    python -m course_utils.cli.schedule_sweep --seeds 2 --budgets 30 60 --out /tmp/smoke.json   # a smoke run

For every budget (optimizer steps of batch 64) and seed, four arms train the default student on the same
images, on batches drawn by the same seeded stream: scratch (cross-entropy), flat KD with the course recipe
(``cu.images.recipes.KD``, cosine learning rate), and ``cu.images.recipes.warmup_distill_finetune`` with its warmup drawn
easiest-first by the teacher's confidence (the curriculum) or at random. Teacher logits are cached (no
augmentation). The last step's test accuracy on the full test split; seeds 100, 101, ... (the notebook's live
seeds are 0, 1, 2). Curricula are reported to help mainly when the budget is short (Wu, Dyer and Neyshabur 2021,
"When do curricula work?"); the sweep measures it here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .. import evaluate, report, schedule
from ..images import data, models, recipes
from ._common import few_label_data, sweep_seeds

SWEEP_FILE, COMMAND = schedule.SWEEP_FILE, schedule.SWEEP_COMMAND
ARMS = ("scratch", "flat KD", "3-phase, curriculum", "3-phase, random order")


def arm_schedule(arm: str, total_steps: int) -> schedule.Schedule:
    """The schedule of one of :data:`ARMS` over ``total_steps``."""
    if arm == "scratch":
        return recipes.flat_kd(total_steps, alpha=0.0)
    if arm == "flat KD":
        return recipes.flat_kd(total_steps)
    if arm in ("3-phase, curriculum", "3-phase, random order"):
        return recipes.warmup_distill_finetune(total_steps, curriculum=arm.endswith("curriculum"))
    raise KeyError(f"unknown arm {arm!r}; choose one of {ARMS}.")


def run_arm(arm: str, total_steps: int, train_set: data.ImageSet, teacher_logits: torch.Tensor,
            test_set: data.ImageSet, seed: int, student: str = models.DEFAULT_STUDENT) -> float:
    """Train a fresh ``student`` through :func:`arm_schedule` and return its last-step test accuracy."""
    plan = arm_schedule(arm, total_steps)
    model = models.create(student, seed=seed)
    schedule.train_with_schedule(model, plan, (train_set.images, train_set.labels, teacher_logits),
                                 schedule.phase_kd_step(plan), ranking=schedule.difficulty_order(teacher_logits),
                                 batch_size=recipes.TRAINING["batch_size"], seed=seed)
    return evaluate.accuracy(model, test_set.images, test_set.labels)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm and budget (100, 101, ...)")
    parser.add_argument("--train-subset", type=int, default=10_000, help="training images (stratified, seed 0)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[40, 80, 160, 320, 640], help="optimizer steps")
    parser.add_argument("--out", type=Path, default=SWEEP_FILE)
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv

    start = time.perf_counter()
    seeds = sweep_seeds(parser, args.seeds)
    train_set, test_set, logits = few_label_data(args.train_subset)
    rows = []
    for budget in args.budgets:
        row: dict[str, object] = {"steps": budget, "epochs": budget * recipes.TRAINING["batch_size"] / len(train_set)}
        for arm in ARMS:
            row[arm] = evaluate.seed_summary([run_arm(arm, budget, train_set, logits, test_set, seed) for seed in seeds])
            print(f"[{time.perf_counter() - start:7.1f}s] {budget} steps, {arm}: {row[arm]['mean']:.4f} "
                  f"± {row[arm]['std']:.4f}", flush=True)
        rows.append(row)
    result = {"command": COMMAND + (" " + " ".join(argv) if argv else ""), "seeds": seeds,
              "student": models.DEFAULT_STUDENT, "train_subset": args.train_subset, "subset_seed": 0,
              "batch_size": recipes.TRAINING["batch_size"], "kd": dict(recipes.KD), "lr": recipes.TRAINING["lr"],
              "arms": list(ARMS), "rows": rows, "test_images": len(test_set),
              "teacher_card": {k: models.teacher_card()[k] for k in ("sha256", "test_accuracy")},
              "machine": report.sweep_machine(), "torch": torch.__version__,
              "wall_seconds": time.perf_counter() - start}
    report.write_precomputed(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
