"""Precompute notebook 08's size ladder: what a language-model student keeps as it shrinks.

    python -m course_utils.lm_sweep                  # writes results/lm_ladder.json (about 10 min on one CPU core)
    python -m course_utils.lm_sweep --steps 20 --students student-s --out /tmp/ladder.json   # a smoke run

Every student of :data:`cu.lm.CONFIGS` is trained twice for the same number of steps on the same
pool of windows (docstring text mixed with training additions, as in the notebook): on the text
alone (cross-entropy) and with token-level distillation (``cu.losses.kd_loss`` per position on the
teacher's cached logits). Each is measured by bits per character on held-out text and by exact
match on held-out additions by operand length. The budget is several times the notebook's, long
enough for arithmetic to appear where the student can hold it; the JSON records the settings,
machine and wall time, and the notebook only reads it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import config, data, lm, losses, report, text, train, validate
from .kd_sweep import machine

LADDER_FILE = config.REPO_DIR / "results" / "lm_ladder.json"
COMMAND = "python -m course_utils.lm_sweep"
TEST_DIGITS = (1, 2, 3, 4)


def load_ladder(path: str | Path | None = None) -> dict:
    """The precomputed ladder (``results/lm_ladder.json``); a clear error says how to make it."""
    return report.load_precomputed(path or LADDER_FILE, COMMAND, "about 10 minutes on one CPU core")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    students = [name for name in lm.CONFIGS if name != "teacher"]
    parser.add_argument("--students", nargs="+", choices=students, default=students)
    parser.add_argument("--steps", type=validate.positive_int, default=4000)
    parser.add_argument("--batch-size", type=validate.positive_int, default=32)
    parser.add_argument("--epochs", type=validate.positive_int, default=4, help="passes over the pool of cached windows")
    parser.add_argument("--temperature", type=validate.positive_float, default=2.0)
    parser.add_argument("--alpha", type=validate.fraction, default=0.5)
    parser.add_argument("--addition-fraction", type=validate.fraction, default=0.5)
    parser.add_argument("--seed", type=validate.non_negative_int, default=100)
    parser.add_argument("--threads", type=validate.positive_int, default=1)
    parser.add_argument("--out", type=Path, default=LADDER_FILE)
    args = parser.parse_args(argv)
    if args.steps * args.batch_size // args.epochs < args.batch_size:
        parser.error(f"--steps {args.steps} x --batch-size {args.batch_size} / --epochs {args.epochs} leaves fewer "
                     "windows than one batch: raise --steps or lower --epochs.")
    argv = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    teacher, card = lm.load_teacher(), lm.teacher_card()
    block = teacher.cfg.block_size
    train_text, val_text = text.split_corpus(text.load_corpus())
    text_ids, val_ids = text.encode(train_text), text.encode(val_text)
    addition_ids = text.encode(text.addition_text(50_000, (1, 2, 3), seed=0))  # training problems only
    probe = {d: text.sample_additions(200, d, "test", seed=1) for d in TEST_DIGITS}
    pool = args.steps * args.batch_size // args.epochs
    x, y = text.mixed_windows(text_ids, addition_ids, pool, block, args.addition_fraction, torch.Generator().manual_seed(0))
    with torch.no_grad():
        teacher_logits = torch.cat([teacher(chunk).half() for chunk in x.split(256)])  # (pool, block, vocab)

    def text_only(model: torch.nn.Module, batch: tuple) -> torch.Tensor:
        return F.cross_entropy(model(batch[0]).transpose(1, 2), batch[1])

    def token_kd(model: torch.nn.Module, batch: tuple) -> torch.Tensor:
        inputs, targets, cached = batch
        return losses.kd_loss(model(inputs), cached.float(), targets, temperature=args.temperature, alpha=args.alpha)

    def measure(model: torch.nn.Module) -> dict[str, object]:
        return {"bits_per_char": lm.bits_per_char(model, val_ids, max_windows=300),
                "exact_match": {str(d): lm.addition_accuracy(model, problems) for d, problems in probe.items()}}

    rows = [{"student": "teacher", "method": "-", "parameters": lm.count_parameters(teacher), **lm.config_dict(teacher),
             **measure(teacher)}]
    for name in args.students:
        for method, loss_fn, tensors in (("text only", text_only, (x, y)), ("token KD", token_kd, (x, y, teacher_logits))):
            run_start = time.perf_counter()
            student = lm.create(name, seed=args.seed, block_size=block)
            loader = data.make_loader(*tensors, batch_size=args.batch_size, shuffle=True, seed=args.seed)
            train.fit(student, loader, epochs=args.epochs, loss_fn=loss_fn, lr=3e-3, weight_decay=0.01, seed=args.seed,
                      progress=False)
            row = {"student": name, "method": method, "parameters": lm.count_parameters(student),
                   **lm.config_dict(student), **measure(student), "seconds": time.perf_counter() - run_start}
            rows.append(row)
            print(f"[{time.perf_counter() - start:6.0f}s] {name} {method}: {row['bits_per_char']:.3f} bits/char, "
                  f"exact {row['exact_match']}", flush=True)

    result = {"command": COMMAND + (" " + " ".join(argv) if argv else ""), "machine": machine(), "torch": torch.__version__,
              "teacher_sha256": card["sha256"],
              "settings": {"steps": args.steps, "batch_size": args.batch_size, "epochs": args.epochs, "pool_windows": pool,
                           "temperature": args.temperature, "alpha": args.alpha, "seed": args.seed,
                           "addition_fraction": args.addition_fraction, "probe_problems_per_length": 200,
                           "val_windows": 300},
              "rows": rows, "wall_seconds": time.perf_counter() - start}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
