"""Precompute notebook 08's size ladder over seeds: what a language-model student keeps as it shrinks.

    python -m course_utils.cli.lm_sweep                  # writes results/lm_ladder.json (1-3 hours on one shared CPU core)
    python -m course_utils.cli.lm_sweep --steps 20 --students lm-student-s --seeds 0 1 --out /tmp/ladder.json   # a smoke run
    python -m course_utils.cli.lm_sweep --resume         # continue an interrupted run (finished cells are kept)

Every student of :data:`cu.language.CONFIGS` is trained twice per seed for the same number of steps on the same
pool of windows (docstring text mixed with training additions, as in the notebook): on the text
alone (cross-entropy) and with token-level distillation (``cu.losses.kd_loss`` per position on the
teacher's cached logits). Each is measured by bits per character on held-out text and by exact
match on held-out additions by operand length. The budget is several times the notebook's, long
enough for arithmetic to appear where the student can hold it. The seed sets the student's
initialisation and the order of the batches; the pool is the same for every seed. The JSON keeps
one value per seed for every cell (``rows``), records the settings, machine and wall time, and is
rewritten after every run (``"complete": false`` until the last), so an interrupted sweep resumes;
the notebook only reads it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import data, evaluate, language, losses, report, train, validate

TEST_DIGITS = (1, 2, 3, 4)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    students = [name for name in language.CONFIGS if name != "lm-teacher"]
    parser.add_argument("--students", nargs="+", choices=students, default=students)
    parser.add_argument("--seeds", nargs="+", type=validate.non_negative_int, default=[100, 101, 102])
    parser.add_argument("--steps", type=validate.positive_int, default=4000)
    parser.add_argument("--batch-size", type=validate.positive_int, default=32)
    parser.add_argument("--epochs", type=validate.positive_int, default=4, help="passes over the pool of cached windows")
    parser.add_argument("--temperature", type=validate.positive_float, default=2.0)
    parser.add_argument("--alpha", type=validate.fraction, default=0.5)
    parser.add_argument("--addition-fraction", type=validate.fraction, default=0.5)
    parser.add_argument("--threads", type=validate.positive_int, default=1)
    parser.add_argument("--out", type=Path, default=language.LADDER_FILE)
    parser.add_argument("--resume", action="store_true", help="keep the finished runs of an interrupted sweep at --out")
    args = parser.parse_args(argv)
    if args.steps * args.batch_size // args.epochs < args.batch_size:
        parser.error(f"--steps {args.steps} x --batch-size {args.batch_size} / --epochs {args.epochs} leaves fewer "
                     "windows than one batch: raise --steps or lower --epochs.")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds {' '.join(map(str, args.seeds))} repeats a seed: give each seed once.")
    argv = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(args.threads)
    start = time.perf_counter()

    teacher, card = language.load_teacher(), language.teacher_card()
    block = teacher.cfg.block_size
    train_text, val_text = language.split_corpus(language.load_corpus())
    text_ids, val_ids = language.encode(train_text), language.encode(val_text)
    addition_ids = language.encode(language.addition_text(50_000, (1, 2, 3), seed=0))  # training problems only
    probe = {d: language.sample_additions(200, d, "test", seed=1) for d in TEST_DIGITS}
    pool = args.steps * args.batch_size // args.epochs
    x, y = language.mixed_windows(text_ids, addition_ids, pool, block, args.addition_fraction,
                                  torch.Generator().manual_seed(0))
    with torch.no_grad():
        teacher_logits = torch.cat([teacher(chunk).half() for chunk in x.split(256)])  # (pool, block, vocab)

    def text_only(model: torch.nn.Module, batch: tuple) -> torch.Tensor:
        return F.cross_entropy(model(batch[0]).transpose(1, 2), batch[1])

    def token_kd(model: torch.nn.Module, batch: tuple) -> torch.Tensor:
        inputs, targets, cached = batch
        return losses.kd_loss(model(inputs), cached.float(), targets, temperature=args.temperature, alpha=args.alpha)

    def measure(model: torch.nn.Module) -> dict[str, object]:
        return {"bits_per_char": language.bits_per_char(model, val_ids, max_windows=300),
                "exact_match": {str(d): language.addition_accuracy(model, problems) for d, problems in probe.items()}}

    settings = {"steps": args.steps, "batch_size": args.batch_size, "epochs": args.epochs, "pool_windows": pool,
                "temperature": args.temperature, "alpha": args.alpha, "seeds": args.seeds,
                "addition_fraction": args.addition_fraction, "probe_problems_per_length": 200, "val_windows": 300}
    done: dict[str, dict] = {}  # "student|method|seed" -> one run's measurements
    spent = 0.0
    if args.resume and args.out.is_file():
        previous = json.loads(args.out.read_text())
        if previous.get("settings") != settings or previous.get("teacher_sha256") != card["sha256"]:
            raise ValueError(f"{args.out} was made with other settings or another teacher: rerun without --resume.")
        done, spent = previous.get("runs", {}), previous.get("wall_seconds", 0.0)
        print(f"resuming: {len(done)} runs already done", flush=True)
    teacher_row = {"student": "lm-teacher", "method": "-", "parameters": evaluate.count_parameters(teacher),
                   **language.config_dict(teacher), **measure(teacher)}
    steps_fns = {"text only": (text_only, (x, y)), "token KD": (token_kd, (x, y, teacher_logits))}

    def write(complete: bool) -> dict:
        rows = []
        for name in args.students:
            for method in language.LADDER_METHODS:
                runs = [done[key] for seed in args.seeds if (key := f"{name}|{method}|{seed}") in done]
                if not runs:
                    continue
                rows.append({"student": name, "method": method, "parameters": runs[0]["parameters"],
                             **runs[0]["config"], "seeds": [r["seed"] for r in runs],
                             "bits_per_char": [r["bits_per_char"] for r in runs],
                             "exact_match": {str(d): [r["exact_match"][str(d)] for r in runs] for d in TEST_DIGITS},
                             "seconds": [r["seconds"] for r in runs]})
        options = [arg for arg in argv if arg != "--resume"]  # the command that makes this file from scratch
        result = {"command": language.LADDER_COMMAND + (" " + " ".join(options) if options else ""),
                  "machine": report.sweep_machine(), "torch": torch.__version__, "teacher_sha256": card["sha256"],
                  "settings": settings,
                  "teacher": teacher_row, "rows": rows, "runs": done, "complete": complete,
                  "wall_seconds": spent + time.perf_counter() - start}
        report.write_precomputed(args.out, result)
        return result

    for name in args.students:
        for method in language.LADDER_METHODS:
            loss_fn, tensors = steps_fns[method]
            for seed in args.seeds:
                key = f"{name}|{method}|{seed}"
                if key in done:
                    continue
                run_start = time.perf_counter()
                student = language.create(name, seed=seed, block_size=block)
                loader = data.make_loader(*tensors, batch_size=args.batch_size, shuffle=True, seed=seed)
                train.fit(student, loader, epochs=args.epochs, loss_fn=loss_fn, lr=3e-3, weight_decay=0.01, seed=seed,
                          progress=False)
                done[key] = {"seed": seed, "parameters": evaluate.count_parameters(student),
                             "config": language.config_dict(student), **measure(student),
                             "seconds": time.perf_counter() - run_start}
                write(complete=False)
                print(f"[{time.perf_counter() - start:6.0f}s] {key}: {done[key]['bits_per_char']:.3f} bits/char, "
                      f"exact {done[key]['exact_match']}", flush=True)
    result = write(complete=True)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
