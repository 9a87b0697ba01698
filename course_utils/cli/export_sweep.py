"""Precompute notebook 06's sweeps: every student on a fair budget (the seeds' claim), quantization-aware distillation
where post-training quantization hurts, and pruning during distillation.

    python -m course_utils.cli.export_sweep --sections qat          # then students, then prune: each updates
    python -m course_utils.cli.export_sweep --sections students     # results/export_sweep.json in place
    python -m course_utils.cli.export_sweep --sections prune
    python -m course_utils.cli.export_sweep --seeds 1 --epochs 1 --train-subset 2000 --steps 20 --out /tmp/x.json  # smoke

A cut run (fewer images, epochs, students, sparsities or steps) says why in ``--note "..."``, kept in the JSON.

Sections:
- ``students``: every student of ``cu.images.models.STUDENTS`` distilled with the course recipes
  (``cu.images.recipes.TRAINING``, ``cu.images.recipes.KD``) on the teacher's own training data, all 60,000 images,
  for ``--epochs`` epochs (notebook 02's capacity sweep uses 10,000 images for 4 epochs, which handicaps students
  against a teacher trained on 60,000 for 10). Per seed: the test accuracy after every epoch, the FP32 ONNX accuracy,
  and post-training quantization (PTQ) to INT8 per channel and to 4-bit weights (per channel and per tensor), with the
  files' sizes. Against the teacher: the size ratio and the points lost, for the seeds' claim "ten times smaller,
  1-2 % lost".
- ``qat``: on ``--qat-student`` (the smallest), 4-bit per-tensor weights, where PTQ loses clearly. From each seed's
  distilled student (batch norm folded): PTQ alone; ``--steps`` of KD fine-tuning in FP32, then PTQ (the control:
  extra training alone); the same steps with fake quantization and the teacher's soft targets (quantization-aware
  distillation); and with fake quantization on the hard labels only.
- ``prune``: on ``--prune-student``, one-shot magnitude pruning at each ``--sparsities`` then ``--steps`` of
  fine-tuning with the masks fixed (KD, or the hard labels), against no fine-tuning; the FP32 and INT8 ONNX sizes,
  raw and gzip'd.

Seeds are 100, 101, ... (not the notebook's live seeds). Distilled students are cached in ``artifacts/export_sweep/``
(git ignores it) so the sections can run one after another without training a student twice. The JSON records the
command, seeds, settings, machine and wall time of every section next to its results; notebook 06 only reads it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .. import config, evaluate, export, report, train
from ..images import data, models, recipes

SWEEP_FILE = export.SWEEP_FILE
COMMAND = export.SWEEP_COMMAND
SECTIONS = ("students", "qat", "prune")
CACHE_DIR = config.REPO_DIR / "artifacts" / "export_sweep"
CALIBRATION_IMAGES = 512
OPSET = 21  # the first opset whose QuantizeLinear takes 4-bit integers (older ones need com.microsoft's)



def distilled_student(name: str, seed: int, train_set: data.ImageSet, logits: torch.Tensor, test_set: data.ImageSet,
                      epochs: int, log: Callable[[str], None]) -> tuple[nn.Module, list[float]]:
    """``name`` distilled with the course recipes for ``epochs`` epochs, and its test accuracy after every epoch.

    Cached by name, seed, training-set size and epochs under :data:`CACHE_DIR` (with the per-epoch accuracies).
    """
    recipe = f"T{recipes.KD['temperature']:g}_a{recipes.KD['alpha']:g}"
    path = CACHE_DIR / f"{name}_seed{seed}_n{len(train_set)}_e{epochs}_{recipe}.pt"
    model = models.create(name, seed=seed)
    if path.is_file():
        cached = torch.load(path, weights_only=True)
        model.load_state_dict(cached["state"])
        return model.eval(), cached["curve"]
    start = time.perf_counter()
    loader = train_set.loader(batch_size=recipes.TRAINING["batch_size"], seed=seed, extra=(logits,))
    history = train.fit(model, loader, epochs=epochs, loss_fn=recipes.kd_step(), seed=seed, lr=recipes.TRAINING["lr"],
                        val_data=(test_set.images, test_set.labels), progress=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": model.state_dict(), "curve": history.val_accuracy}, path)
    log(f"distilled {name} seed {seed}: {history.val_accuracy} ({time.perf_counter() - start:.0f} s)")
    return model.eval(), history.val_accuracy


def fine_tune(model: nn.Module, train_set: data.ImageSet, logits: torch.Tensor, *, steps: int, seed: int, lr: float,
              loss_fn: train.LossFn) -> nn.Module:
    """``steps`` AdamW steps (cosine from ``lr``) of ``loss_fn`` on ``(images, labels, teacher_logits)`` batches."""
    loader = train_set.loader(batch_size=recipes.TRAINING["batch_size"], seed=1000 + seed, extra=(logits,))
    train.fit(model, loader, epochs=-(-steps // len(loader)), max_steps=steps, loss_fn=loss_fn, seed=seed, lr=lr,
              progress=False)
    return model.eval()


def quantized(model: nn.Module, folder: Path, tag: str, calibration: torch.Tensor, test_set: data.ImageSet,
              variants: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Export ``model`` to FP32 ONNX and quantize it (static, MinMax) once per variant; accuracy and sizes of each.

    Accuracy runs on one onnxruntime thread, like the sweep's training (``OMP_NUM_THREADS=1``): on a shared machine
    a pool of one thread per core competes with the other processes.
    """
    def accuracy(path: Path) -> float:
        return export.onnx_accuracy(export.load_session(path, threads=1), test_set.images, test_set.labels)

    fp32 = export.export_onnx(model, folder / f"{tag}_fp32.onnx", test_set.images[:2], opset=OPSET)
    result = {"fp32": {"accuracy": accuracy(fp32),
                       "bytes": export.model_size(fp32), "gzip_bytes": export.gzip_size(fp32)}}
    for variant, options in variants.items():
        path = export.quantize_static(fp32, folder / f"{tag}_{variant}.onnx", calibration, **options)
        result[variant] = {"accuracy": accuracy(path),
                           "bytes": export.model_size(path), "gzip_bytes": export.gzip_size(path)}
    return result


PTQ_VARIANTS = {"int8_per_channel": {"per_channel": True},
                "int4_per_channel": {"per_channel": True, "weight_type": "qint4"},
                "int4_per_tensor": {"per_channel": False, "weight_type": "qint4"}}
QAT_VARIANT = {"int4_per_tensor": PTQ_VARIANTS["int4_per_tensor"]}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text}")
    return value


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--seeds", type=_positive_int, default=3, help="seeds per cell (100, 101, ...)")
    parser.add_argument("--train-subset", type=_positive_int, default=60_000, help="training images (all: 60,000)")
    parser.add_argument("--epochs", type=_positive_int, default=3, help="epochs of every distilled student")
    parser.add_argument("--students", nargs="+", default=list(models.STUDENTS))
    parser.add_argument("--qat-student", default=next(iter(models.STUDENTS)), help="the smallest student by default")
    parser.add_argument("--prune-student", default="cnn-29k", help="the student notebook 06 ships (its FLASH_KB rule)")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.9, 0.95])
    parser.add_argument("--steps", type=_positive_int, default=300, help="fine-tuning steps of QAT and pruning")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the fine-tuning (cosine)")
    parser.add_argument("--out", type=Path, default=SWEEP_FILE)
    parser.add_argument("--note", default="", help="why the settings differ from the defaults (kept in the JSON)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if any(not 0 < s < 1 for s in args.sparsities):
        parser.error(f"--sparsities take fractions strictly between 0 and 1, got {args.sparsities}")

    start = time.perf_counter()
    seeds = [100 + i for i in range(args.seeds)]
    full_train, test_set = data.load_fashion_mnist("train"), data.load_fashion_mnist("test")
    train_set = full_train if args.train_subset >= len(full_train) else data.load_fashion_mnist(
        "train", subset=args.train_subset, seed=0)
    all_logits = models.load_teacher_logits("train")
    logits = all_logits[train_set.index]
    teacher_accuracy = (models.load_teacher_logits("test").argmax(1) == test_set.labels).float().mean().item()
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result.update({"teacher_accuracy": teacher_accuracy, "teacher_card": models.teacher_card(),
                   "training": dict(recipes.TRAINING), "kd": dict(recipes.KD), "seeds": seeds,
                   "train_images": len(train_set), "epochs": args.epochs, "test_images": len(test_set),
                   "calibration_images": CALIBRATION_IMAGES, "machine": report.sweep_machine(), "torch": torch.__version__})
    if args.note:
        result["note"] = args.note

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    def student(name: str, seed: int) -> tuple[nn.Module, list[float]]:
        return distilled_student(name, seed, train_set, logits, test_set, args.epochs, log)

    def calibration(seed: int) -> torch.Tensor:
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))
        return train_set.images[order[:CALIBRATION_IMAGES]]

    def save(section: str, values: dict, section_start: float) -> None:
        values.update({"command": COMMAND + (" " + " ".join(argv) if argv else ""),
                       "wall_seconds": time.perf_counter() - section_start})
        result[section] = values
        report.write_precomputed(args.out, result)

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if "qat" in args.sections:
            section_start, runs = time.perf_counter(), []
            for seed in seeds:
                base = export.fold_batch_norm(student(args.qat_student, seed)[0])
                run = {"seed": seed, "ptq": quantized(base, folder, "base", calibration(seed), test_set, QAT_VARIANT)}
                arms = {"control": (False, recipes.kd_step()), "qat_kd": (True, recipes.kd_step()),
                        "qat_labels": (True, train.cross_entropy_step)}
                for arm, (fake_quant, loss_fn) in arms.items():
                    model = copy.deepcopy(base)
                    with export.fake_quantization(model, per_channel=False, weight_bits=4) if fake_quant else \
                            contextlib.nullcontext():
                        fine_tune(model, train_set, logits, steps=args.steps, seed=seed, lr=args.lr, loss_fn=loss_fn)
                    run[arm] = quantized(model, folder, arm, calibration(seed), test_set, QAT_VARIANT)
                runs.append(run)
                log(f"qat seed {seed}: " + ", ".join(f"{arm} {run[arm]['int4_per_tensor']['accuracy']:.4f}"
                                                     for arm in ("ptq", "control", "qat_kd", "qat_labels")))
                save("qat", {"student": args.qat_student, "weights": "4-bit per tensor, batch norm folded",
                             "activations": "UINT8 (static MinMax)", "steps": args.steps, "lr": args.lr, "runs": runs},
                     section_start)
        if "students" in args.sections:
            section_start, rows = time.perf_counter(), {name: [] for name in args.students}
            teacher = models.load_teacher(device="cpu")
            teacher_fp32 = export.export_onnx(teacher, folder / "teacher.onnx", test_set.images[:2], opset=OPSET)
            teacher_row = {"parameters": evaluate.count_parameters(teacher), "fp32_bytes": export.model_size(teacher_fp32)}
            for seed in seeds:  # seed-major: an interrupted sweep still holds whole seeds
                for name in args.students:
                    model, curve = student(name, seed)
                    run = {"seed": seed, "curve": curve, **quantized(model, folder, name, calibration(seed), test_set,
                                                                     PTQ_VARIANTS)}
                    rows[name].append(run)
                    log(f"{name} seed {seed}: fp32 {run['fp32']['accuracy']:.4f}, " + ", ".join(
                        f"{v} {run[v]['accuracy']:.4f}" for v in PTQ_VARIANTS))
                    save("students", {"teacher": teacher_row, "rows": [
                        {"student": n, "parameters": evaluate.count_parameters(models.create(n)), "runs": r}
                        for n, r in rows.items() if r]}, section_start)
        if "prune" in args.sections:
            section_start, runs = time.perf_counter(), []
            for seed in seeds:
                base = student(args.prune_student, seed)[0]
                int8 = {"int8_per_channel": PTQ_VARIANTS["int8_per_channel"]}
                dense = fine_tune(copy.deepcopy(base), train_set, logits, steps=args.steps, seed=seed, lr=args.lr,
                                  loss_fn=recipes.kd_step())  # the control: the same fine-tuning without pruning
                run = {"seed": seed, "dense": quantized(dense, folder, "dense", calibration(seed), test_set, int8),
                       "sparsities": []}
                for sparsity in args.sparsities:
                    cell: dict[str, object] = {"sparsity": sparsity}
                    for arm, loss_fn in (("kd", recipes.kd_step()), ("labels", train.cross_entropy_step)):
                        model = copy.deepcopy(base)
                        with export.magnitude_pruning(model, sparsity):
                            cell["one_shot"] = evaluate.accuracy(model, test_set.images, test_set.labels)
                            fine_tune(model, train_set, logits, steps=args.steps, seed=seed, lr=args.lr, loss_fn=loss_fn)
                        cell["measured_sparsity"] = export.weight_sparsity(model)
                        if arm == "kd":
                            cell.update(quantized(model, folder, "pruned", calibration(seed), test_set, int8))
                        else:
                            cell["labels_accuracy"] = evaluate.accuracy(model, test_set.images, test_set.labels)
                    run["sparsities"].append(cell)
                    log(f"prune seed {seed} sparsity {sparsity}: one-shot {cell['one_shot']:.4f}, "
                        f"KD fine-tuned {cell['fp32']['accuracy']:.4f}, labels {cell['labels_accuracy']:.4f}")
                runs.append(run)
                save("prune", {"student": args.prune_student, "steps": args.steps, "lr": args.lr,
                               "method": "one-shot layer-wise L1 magnitude (torch.nn.utils.prune), masks kept while "
                                         "fine-tuning", "runs": runs}, section_start)
    result["wall_seconds"] = time.perf_counter() - start
    log(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
