"""Precompute notebooks 03 and 04's comparisons over seeds: FitNets' layer mappings, and attention transfer.

    python -m course_utils.cli.feature_sweep                          # writes results/feature_sweep.json
    python -m course_utils.cli.feature_sweep --seeds 1 --sections deep --out /tmp/smoke.json      # a smoke run
    python -m course_utils.cli.feature_sweep --sections deep --out a.json                         # parts in parallel,
    python -m course_utils.cli.feature_sweep --sections default residual --out b.json             # one per core,
    python -m course_utils.cli.feature_sweep --merge a.json b.json                                # then merged

Sections (every arm of a section trains the same student on the same images for the same number of steps):
- ``deep``: the deep-thin student (``cu.images.models.DEEP_STUDENTS``, FitNets' regime): scratch, KD, and FitNets'
  stage-1 hints + KD for every layer mapping of ``cu.images.feature_kd.MAPPINGS``; plus the same student *with* batch
  norm from scratch (the control: is the student hard to train because it is deep and thin, or because it has
  no normalisation?).
- ``default``: the course's default student (a plain CNN with batch norm): scratch, KD, FitNets direct + KD,
  and attention transfer on its three blocks, + KD and + cross-entropy, for each weight of ``--betas``.
- ``residual``: the thin residual student of the teacher's family (``cu.images.models.RESIDUAL_STUDENTS``): scratch, KD,
  attention transfer on three stages, + KD and + cross-entropy, for each weight of ``--betas``.

Data as in the notebooks: a stratified subset of the training split (seed 0), the course's training recipe (AdamW,
batch 64, cosine), the teacher's logits, hints and maps cached (no augmentation, so exact), the last step's accuracy
on the full test split. Seeds 100, 101, ... (not the notebooks' live 0, 1, 2). 48 epochs (768 steps on 1,000 images),
three times notebook 03 and 04's live budget: at 16 epochs hints and attention transfer tied with or lost to their
baselines on every student; at 48 they win where their papers say they should (see notebooks 03 and 04). Each
section records its ``budget`` (images, epochs, steps), so parts trained for different lengths can still be merged.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .. import evaluate, report, schedule, train
from ..images import feature_kd, models, recipes
from ._common import few_label_data, sweep_seeds

SWEEP_FILE, COMMAND = feature_kd.SWEEP_FILE, feature_kd.SWEEP_COMMAND
SECTIONS = ("deep", "default", "residual")
TEACHER_STAGES = ("layer1", "layer2", "layer3")
BETA = 1000.0  # the attention-transfer weight of Zagoruyko and Komodakis's code (their 32 x 32 CIFAR maps)


def hint_steps(total_steps: int, fraction: float = 0.25) -> int:
    """FitNets' stage 1 gets this share of the budget (at least one step, and at least one left for stage 2)."""
    return min(max(1, round(fraction * total_steps)), total_steps - 1)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per arm (100, 101, ...)")
    parser.add_argument("--train-subset", type=int, default=1_000, help="training images (stratified, seed 0)")
    parser.add_argument("--epochs", type=int, default=48, help="epochs of every arm")
    parser.add_argument("--hint-fraction", type=float, default=0.25, help="share of the steps in FitNets' stage 1")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--betas", type=float, nargs="+", default=[BETA, BETA / 10],
                        help="attention-transfer weights of the AT arms (AT + KD and AT + CE for each)")
    parser.add_argument("--out", type=Path, default=SWEEP_FILE)
    parser.add_argument("--merge", type=Path, nargs="+", default=None, help="merge the JSON of parts run separately")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.merge:
        return merge(args.merge, args.out)

    start = time.perf_counter()
    seeds = sweep_seeds(parser, args.seeds)
    train_set, test_set, logits = few_label_data(args.train_subset)
    teacher = models.load_teacher(device="cpu")
    total_steps = -(-len(train_set) // recipes.TRAINING["batch_size"]) * args.epochs
    budget = {"train_subset": args.train_subset, "epochs": args.epochs, "total_steps": total_steps,
              "hint_steps": hint_steps(total_steps, args.hint_fraction)}  # recorded per section: parts may differ
    result: dict = {
        "command": COMMAND + (" " + " ".join(argv) if argv else ""), "seeds": seeds,
        "settings": {"subset_seed": 0, "training": dict(recipes.TRAINING), "kd": dict(recipes.KD),
                     "test_images": len(test_set)},
        "teacher_card": {k: models.teacher_card()[k] for k in ("sha256", "test_accuracy")},
        "machine": report.sweep_machine(), "torch": torch.__version__,
    }

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    def arm(name: str, run: Callable[[int], float]) -> dict[str, object]:
        summary = evaluate.seed_summary([run(seed) for seed in seeds])
        log(f"{name}: {summary['mean']:.4f} ± {summary['std']:.4f}  {[round(v, 4) for v in summary['values']]}")
        return summary

    def plain_run(student: str | Callable, loss_fn: train.LossFn = train.cross_entropy_step,
                  tensors: tuple = ()) -> Callable:
        def run(seed: int) -> float:
            model = models.create(student, seed=seed) if isinstance(student, str) else student(seed)
            loader_extra = (logits, *tensors)
            loader = train_set.loader(batch_size=recipes.TRAINING["batch_size"], seed=seed, extra=loader_extra)
            train.fit(model, loader, epochs=args.epochs, loss_fn=loss_fn, lr=recipes.TRAINING["lr"], seed=seed,
                      progress=False)
            return evaluate.accuracy(model, test_set.images, test_set.labels)
        return run

    def fitnets_run(student: str, mapping: feature_kd.LayerMapping, hints: dict[str, torch.Tensor]) -> Callable:
        def run(seed: int) -> float:
            model = models.create(student, seed=seed)
            teacher_hints = [hints[t] for _, t in mapping.pairs]
            regressors = feature_kd.regressors_for(mapping, model, teacher_hints)
            return feature_kd.train_fitnets(model, train_set, test_set, logits, teacher_hints,
                                            [s for s, _ in mapping.pairs], regressors, seed=seed,
                                            hint_steps=budget["hint_steps"], total_steps=total_steps)
        return run

    if {"deep", "default"} & set(args.sections):
        hints = dict(zip(TEACHER_STAGES, feature_kd.cache_features(teacher, train_set.images, TEACHER_STAGES)))
        log(f"cached the teacher's hints {[tuple(h.shape) for h in hints.values()]}")
    if {"default", "residual"} & set(args.sections):
        maps = tuple(schedule.cache_attention_maps(teacher, train_set.images, TEACHER_STAGES))
        log(f"cached the teacher's attention maps {[tuple(m.shape) for m in maps]}")
    if "deep" in args.sections:
        student = next(iter(models.DEEP_STUDENTS))
        with_bn = dataclasses.replace(models.DEEP_STUDENTS[student], batch_norm=True)
        arms = {"scratch": arm("deep scratch", plain_run(student)),
                "KD": arm("deep KD", plain_run(student, recipes.kd_step()))}
        for name, mapping in feature_kd.MAPPINGS.items():
            arms[f"FitNets {name} + KD"] = arm(f"deep FitNets {name}", fitnets_run(student, mapping, hints))
        control = arm("deep with batch norm, scratch",
                      plain_run(lambda seed: (torch.manual_seed(seed), models.Student(with_bn))[1]))
        result["deep"] = {"student": student, "parameters": evaluate.count_parameters(models.create(student)),
                          "budget": budget, "arms": arms, "with_batch_norm_scratch": control,
                          "mappings": {name: {"pairs": m.pairs, "steps": m.steps, "description": m.description}
                                       for name, m in feature_kd.MAPPINGS.items()}}
    def attention_arms(section: str, student: str, paths: list[str]) -> dict[str, dict[str, object]]:
        """Attention transfer on ``paths`` (teacher maps of layer1-3), + KD and + cross-entropy, per ``--betas``."""
        arms = {}
        for beta in args.betas:
            suffix = "" if beta == BETA else f" (beta {beta:g})"
            arms["AT + KD" + suffix] = arm(f"{section} AT + KD{suffix}",
                                           plain_run(student, feature_kd.at_step(paths, beta), maps))
            arms["AT" + suffix] = arm(f"{section} AT + CE{suffix}",
                                      plain_run(student, feature_kd.at_step(paths, beta, kd=False), maps))
        return arms

    if "default" in args.sections:
        student, paths = models.DEFAULT_STUDENT, ["block1", "block2", "block3"]
        result["default"] = {"student": student, "budget": budget, "at_paths": paths, "betas": args.betas, "arms": {
            "scratch": arm("default scratch", plain_run(student)),
            "KD": arm("default KD", plain_run(student, recipes.kd_step())),
            "FitNets direct + KD": arm("default FitNets", fitnets_run(student, feature_kd.MAPPINGS["direct"], hints)),
            **attention_arms("default", student, paths)}}
    if "residual" in args.sections:
        student, paths = next(iter(models.RESIDUAL_STUDENTS)), list(TEACHER_STAGES)  # the teacher's own paths
        result["residual"] = {"student": student, "parameters": evaluate.count_parameters(models.create(student)),
                              "budget": budget, "at_paths": paths, "betas": args.betas, "arms": {
            "scratch": arm("residual scratch", plain_run(student)),
            "KD": arm("residual KD", plain_run(student, recipes.kd_step())),
            **attention_arms("residual", student, paths)}}

    result["wall_seconds"] = time.perf_counter() - start
    report.write_precomputed(args.out, result)
    log(f"wrote {args.out}")
    return result


def merge(parts: list[Path], out: Path) -> dict:
    """Merge parts run in parallel (``--sections``) into one sweep file; their commands and wall times are kept.

    The parts must share the teacher, the recipe and the test split (``settings``); each section keeps its own
    ``budget`` (training images, epochs, steps), so the sections may be trained for different lengths."""
    return report.merge_precomputed(parts, out, COMMAND, SECTIONS, same=("teacher_card", "settings"))


if __name__ == "__main__":
    main()
