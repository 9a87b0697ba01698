"""Precompute notebook 02b's slow arms: transfer-set quality, size, consistency, patience and bias.

    python -m course_utils.cli.transfer_sweep                 # writes results/transfer_sweep.json (hours on one core)
    python -m course_utils.cli.transfer_sweep --sections quality size   # some sections only (merged into --out)
    python -m course_utils.cli.transfer_sweep --seeds 1 --steps 20 --short-steps 10 --patient-steps 30 \\
        --sizes 100 300 --transfer-images 300 --views 2 --out /tmp/smoke.json   # a smoke run in a minute
    python -m course_utils.cli.transfer_sweep --sections quality --sets noise   # some arms only (those already made stay)

Every arm trains the course's default student (``cu.images.models.DEFAULT_STUDENT``) with
``cu.images.recipes.TRAINING`` on the 2,000 stratified labelled images of notebook 02
(``cu.images.data.stratified_split(full_train, 2000, seed=0)``) plus a transfer set, with
:func:`cu.images.transfer.distil` (:func:`cu.images.transfer.transfer_kd_step` with the course recipe
``cu.images.recipes.KD``: the teacher's soft targets on every image, cross-entropy on the labelled ones) for exactly
``steps`` optimizer steps, and reports its last-step test accuracy and per-class accuracies.

Sections:
- ``quality``: scratch (labels only, cross-entropy), labelled only (KD), and KD plus ``--transfer-images`` real
  unlabelled images, mixup / CutMix blends of the labelled images, Gaussian noise, or real images with shuffled pixels.
- ``size``: KD plus 0 ... 58,000 real unlabelled images (nested subsets of one fixed order).
- ``consistency``: KD plus ``--views`` fixed augmented views (crop + flip) of every labelled image, with the teacher's
  logits of the same view ("consistent") or of the un-augmented image ("fixed teacher").
- ``schedule``: labelled only (no augmentation), fixed and consistent teacher at a short, the main and a patient budget.
- ``bias``: a transfer set that keeps ``--keep-fraction`` of ``--rare-classes`` (and one that misses them),
  against a balanced set of the same size, and the biased set rebalanced by the teacher's predicted class.

Arms shared by sections are trained once. Seeds are 100, 101, ... (notebook 02b's live seeds are 0, 1, 2); the
transfer sets themselves are built with seed 0, so the seeds vary only the training. The JSON is rewritten after
every arm, and a rerun keeps the arms it already holds when only step budgets or sizes changed (an interrupted
sweep resumes; every arm's key names its set and its steps, e.g. ``real-5000@2000``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .. import evaluate, report, train
from ..images import data, models, recipes, transfer

SWEEP_FILE, COMMAND, DATA_SEED = transfer.SWEEP_FILE, transfer.SWEEP_COMMAND, transfer.DATA_SEED
SECTIONS = ("consistency", "quality", "bias", "size", "schedule")  # the order they run in


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default=models.DEFAULT_STUDENT)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per arm (100, 101, ...)")
    parser.add_argument("--labels", type=int, default=2_000, help="labelled images (stratified, seed 0)")
    parser.add_argument("--steps", type=int, default=2_000, help="the main step budget of every comparison")
    parser.add_argument("--short-steps", type=int, default=960, help="notebook 02's budget: 30 epochs of 2,000 images")
    parser.add_argument("--patient-steps", type=int, default=4_000, help="about 4 times the short budget")
    parser.add_argument("--transfer-images", type=int, default=20_000, help="images of each quality / bias set")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 5_000, 20_000, 58_000],
                        help="real unlabelled images added in the size section (besides 0)")
    parser.add_argument("--views", type=int, default=8, help="augmented views per labelled image (consistency)")
    parser.add_argument("--crop-scale", type=float, default=0.5, help="smallest crop area of the augmentation")
    parser.add_argument("--rare-classes", type=int, nargs="+", default=[2, 4, 6], help="under-represented classes")
    parser.add_argument("--keep-fraction", type=float, default=0.05, help="share of the rare classes kept")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--sets", nargs="+", default=None,
                        help="train only the arms of these kinds of set (scratch, labelled, real, mixed, noise, shuffled, "
                             "fixed, consistent, balanced, biased, rebalanced, missing); a section then lists the arms "
                             "it trained or already held")
    parser.add_argument("--out", type=Path, default=SWEEP_FILE)
    return parser


def _settings(args: argparse.Namespace, rest: int) -> dict:
    problems = [f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}"
                for name in ("seeds", "labels", "steps", "short_steps", "patient_steps", "transfer_images", "views")
                if getattr(args, name) < 1]
    problems += [f"--sizes must lie in 1 .. {rest} (the unlabelled rest), got {size}"
                 for size in args.sizes if not 1 <= size <= rest]
    if args.transfer_images > rest:
        problems.append(f"--transfer-images must be at most {rest} (the unlabelled rest), got {args.transfer_images}")
    if not 0 < args.crop_scale <= 1 or not 0 <= args.keep_fraction <= 1:
        problems.append(f"--crop-scale must lie in (0, 1] and --keep-fraction in [0, 1], got {args.crop_scale} "
                        f"and {args.keep_fraction}")
    if any(not 0 <= k < len(data.CLASS_NAMES) for k in args.rare_classes):
        problems.append(f"--rare-classes takes class indices 0 to 9, got {args.rare_classes}")
    if problems:
        raise SystemExit("transfer_sweep: " + "; ".join(problems))
    keys = ("student", "labels", "steps", "short_steps", "patient_steps", "transfer_images", "sizes", "views",
            "crop_scale", "rare_classes", "keep_fraction")
    return {**{key: getattr(args, key) for key in keys}, "kd": dict(recipes.KD),
            "training": dict(recipes.TRAINING), "data_seed": DATA_SEED}


def main(argv: list[str] | None = None) -> dict:
    args = _parser().parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    start = time.perf_counter()
    full_train, test_set = data.load_fashion_mnist("train"), data.load_fashion_mnist("test")
    labelled, rest = data.stratified_split(full_train, args.labels, seed=0)
    del full_train
    settings = _settings(args, len(rest))
    train_logits = models.load_teacher_logits("train")
    labelled_logits = train_logits[labelled.index]
    teacher_accuracy = (models.load_teacher_logits("test").argmax(1) == test_set.labels).float().mean().item()
    seeds = [100 + i for i in range(args.seeds)]

    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    budgets = ("steps", "short_steps", "patient_steps", "sizes", "sections")  # part of every arm's key, e.g. real-5000@2000

    def defining(values: dict) -> dict:
        return {key: value for key, value in values.items() if key not in budgets}

    same = previous.get("seeds") == seeds and previous.get("teacher_sha256") == models.teacher_card()["sha256"]
    result: dict = {}
    if same and defining(previous["settings"]) == defining(settings):
        result = previous
    elif same and defining({**previous["settings"], "kd": None}) == defining({**settings, "kd": None}):
        # only the KD recipe changed: the scratch student never saw the teacher, keep it
        result = {**previous, "arms": {k: v for k, v in previous["arms"].items() if v["set"] == "scratch"},
                  "sets": {}, "sections": {}, "arm_seconds": sum(v["seconds"] for v in previous["arms"].values()
                                                                 if v["set"] == "scratch")}
    commands = result.get("commands", []) + [COMMAND + (" " + " ".join(argv) if argv else "")]
    result.update({"command": " ; ".join(dict.fromkeys(commands)), "commands": list(dict.fromkeys(commands)),
                   "seeds": seeds, "settings": settings, "teacher_accuracy": teacher_accuracy,
                   "teacher_sha256": models.teacher_card()["sha256"], "test_images": len(test_set),
                   "machine": report.sweep_machine(), "torch": torch.__version__})
    result.setdefault("arms", {})
    result.setdefault("sets", {})
    result.setdefault("sections", {})
    result.setdefault("arm_seconds", 0.0)

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    def save() -> None:
        report.write_precomputed(args.out, result)

    teacher = models.load_teacher(device="cpu")
    sets: dict[str, Callable[[], tuple[torch.Tensor | None, torch.Tensor | None]]] = {}

    def real(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = transfer.real_subset(rest, count)
        return chosen.images, train_logits[chosen.index]

    def labelled_by_teacher(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return images, evaluate.predict_logits(teacher, images)

    def views() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, source = transfer.augmented_views(labelled.images, transfer.augmentation((args.crop_scale, 1.0)),
                                                  args.views, seed=DATA_SEED)
        return images, evaluate.predict_logits(teacher, images), labelled_logits[source]

    view_cache: dict[str, tuple] = {}

    def view_set(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        if not view_cache:
            view_cache["all"] = views()
        images, consistent, fixed = view_cache["all"]
        return images, consistent if kind == "consistent" else fixed

    pool = transfer.real_subset(rest, args.transfer_images)  # the quality section's real set, before the bias
    rare_kept = transfer.biased_indices(pool.labels, args.rare_classes, args.keep_fraction, seed=DATA_SEED)
    rare_missing = transfer.biased_indices(pool.labels, args.rare_classes, 0.0, seed=DATA_SEED)

    def biased(kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return pool.images[kept], train_logits[pool.index[kept]]

    def rebalanced() -> tuple[torch.Tensor, torch.Tensor]:
        images, logits = biased(rare_kept)
        picked = transfer.rebalanced_indices(logits, seed=DATA_SEED)
        return images[picked], logits[picked]

    n = args.transfer_images
    sets.update({
        "labelled": lambda: (None, None), "scratch": lambda: (None, None),
        f"real-{n}": lambda: real(n),
        f"mixed-{n}": lambda: labelled_by_teacher(transfer.mixed_images(labelled.images, labelled.labels, n,
                                                                         seed=DATA_SEED)),
        f"noise-{n}": lambda: labelled_by_teacher(transfer.noise_images(n, seed=DATA_SEED)),
        f"shuffled-{n}": lambda: labelled_by_teacher(transfer.shuffled_pixels(real(n)[0], seed=DATA_SEED)),
        f"fixed-k{args.views}": lambda: view_set("fixed"),
        f"consistent-k{args.views}": lambda: view_set("consistent"),
        f"balanced-{len(rare_kept)}": lambda: real(len(rare_kept)),
        "biased": lambda: biased(rare_kept), "missing": lambda: biased(rare_missing), "rebalanced": rebalanced,
    })
    sets.update({f"real-{size}": (lambda size=size: real(size)) for size in args.sizes})

    def arm(name: str, steps: int) -> str:
        key = f"{name}@{steps}"
        if key in result["arms"]:
            return key
        arm_start = time.perf_counter()
        images, logits = sets[name]()
        if images is not None and name not in result["sets"]:
            result["sets"][name] = _describe_set(logits)
        loss_fn = train.cross_entropy_step if name == "scratch" else None
        accuracies, per_class = [], []
        for seed in seeds:
            model = transfer.distil(models.create(args.student, seed=seed), labelled, labelled_logits, images, logits,
                                    steps=steps, seed=seed, loss_fn=loss_fn)
            predictions = evaluate.predict_logits(model, test_set.images).argmax(1)
            accuracies.append((predictions == test_set.labels).float().mean().item())
            per_class.append(evaluate.per_class_accuracy(predictions, test_set.labels).tolist())
        seconds = time.perf_counter() - arm_start
        result["arms"][key] = {"set": name, "steps": steps, "transfer_images": 0 if images is None else len(images),
                               **evaluate.seed_summary(accuracies), "per_class": per_class, "seconds": seconds}
        result["arm_seconds"] += seconds
        save()
        summary = result["arms"][key]
        log(f"{key}: {summary['mean']:.4f} ± {summary['std']:.4f} {[round(v, 4) for v in accuracies]}")
        return key

    s, short, patient, k = args.steps, args.short_steps, args.patient_steps, args.views
    plan = {
        "quality": [("scratch", s), ("labelled", s), (f"real-{n}", s), (f"mixed-{n}", s), (f"noise-{n}", s),
                    (f"shuffled-{n}", s)],
        "size": [("labelled", s)] + [(f"real-{size}", s) for size in args.sizes],
        "consistency": [("labelled", s), (f"fixed-k{k}", s), (f"consistent-k{k}", s)],
        "schedule": [(name, steps) for steps in (short, s, patient)
                     for name in ("labelled", f"fixed-k{k}", f"consistent-k{k}")],
        "bias": [(f"balanced-{len(rare_kept)}", s), ("biased", s), ("rebalanced", s), ("missing", s)],
    }
    def wanted(name: str, steps: int) -> bool:
        return args.sets is None or name.split("-")[0] in args.sets or f"{name}@{steps}" in result["arms"]

    for section in args.sections:
        result["sections"][section] = [arm(name, steps) for name, steps in plan[section] if wanted(name, steps)]
        if section == "consistency":
            images, consistent, fixed = view_cache.get("all") or views()
            result["view_cache"] = _describe_views(images, consistent, fixed, labelled.labels, args.views)
        if section == "bias":
            result["bias_sets"] = {name: {"true_counts": torch.bincount(pool.labels[kept], minlength=10).tolist()}
                                   for name, kept in (("biased", rare_kept), ("missing", rare_missing))}
        save()
    result["wall_seconds"] = result["arm_seconds"]  # training time summed over every run that made these arms
    save()
    log(f"wrote {args.out}")
    return result


def _describe_set(logits: torch.Tensor) -> dict:
    """The teacher's view of a transfer set: mean confidence and how often it predicts each class."""
    return {"images": len(logits), "teacher_confidence_mean": transfer.confidence(logits).mean().item(),
            "teacher_predicted_counts": torch.bincount(logits.argmax(1), minlength=10).tolist()}


def _describe_views(images: torch.Tensor, consistent: torch.Tensor, fixed: torch.Tensor, labels: torch.Tensor,
                    views_per_image: int) -> dict:
    """What the K-view cache holds and costs, and how far the teacher's view-logits are from the fixed ones."""
    source = torch.arange(len(labels)).repeat_interleave(views_per_image)
    temperature = recipes.KD["temperature"]
    log_p, log_q = (fixed / temperature).log_softmax(1), (consistent / temperature).log_softmax(1)
    return {"views": len(images), "views_per_image": views_per_image,
            "logits_megabytes": transfer.tensor_megabytes(consistent), "images_megabytes": transfer.tensor_megabytes(images),
            "kl_fixed_to_consistent": (log_p.exp() * (log_p - log_q)).sum(1).mean().item(),
            "argmax_changed": (consistent.argmax(1) != fixed.argmax(1)).float().mean().item(),
            "teacher_accuracy_views": (consistent.argmax(1) == labels[source]).float().mean().item(),
            "teacher_accuracy_originals": (fixed.argmax(1) == labels[source]).float().mean().item()}


if __name__ == "__main__":
    main()
