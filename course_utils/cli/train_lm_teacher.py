"""Train notebook 08's character-level teacher and write it with its model card and transfer set.

    python -m course_utils.cli.train_lm_teacher                     # the shipped recipe (~13 min on one idle CPU core)
    python -m course_utils.cli.train_lm_teacher --steps 20 --transfer-windows 16 --out /tmp/lm_teacher   # a quick try

Training data: random windows (the context, 32 characters) of the docstring corpus's training part, mixed with
windows of an addition stream (training problems of 1 to 3 digits, answers reversed; see
``cu.language.text``). Writes ``lm_teacher.pt`` (state_dict), ``lm_teacher.json`` (the model card) and
``lm_teacher_transfer.pt``: text the teacher generated and training additions it solved, the
transfer set of sequence-level distillation (Kim and Rush 2016), cached so the notebook need
not run slow autoregressive generation.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from .. import checkpoints, config, evaluate, language, report, train, validate

TRAIN_DIGITS = (1, 2, 3)  # operand lengths the models train on; 4 and 5 are held out entirely
PROMPT_CHARS = 8  # real characters that start each window of the transfer set; the teacher writes the rest


def lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


class WarmupCosine(LRScheduler):
    """:func:`lr_at` as a torch LR scheduler, stepped after every optimizer step: step ``k`` trains at
    ``lr_at(k, total, lr, warmup)``, ``lr`` being each parameter group's starting learning rate."""

    def __init__(self, optimizer: torch.optim.Optimizer, total: int, warmup: int) -> None:
        self.total, self.warmup = total, warmup
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [lr_at(self.last_epoch, self.total, base_lr, self.warmup) for base_lr in self.base_lrs]


class WindowBatches:
    """``steps`` batches of :func:`course_utils.language.mixed_windows`, drawn one by one from ``generator``."""

    def __init__(self, text_ids: torch.Tensor, addition_ids: torch.Tensor, steps: int, batch_size: int,
                 block_size: int, addition_fraction: float, generator: torch.Generator) -> None:
        self.text_ids, self.addition_ids, self.steps = text_ids, addition_ids, steps
        self.batch_size, self.block_size, self.addition_fraction = batch_size, block_size, addition_fraction
        self.generator = generator

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(self.steps):
            yield language.mixed_windows(self.text_ids, self.addition_ids, self.batch_size, self.block_size,
                                     self.addition_fraction, self.generator)


def next_char_loss(model: nn.Module, batch: tuple) -> torch.Tensor:
    """Cross-entropy of the next character at every position of the windows ``batch = (x, y)``."""
    x, y = batch[0], batch[1]
    logits = model(x)  # (B, T, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def fit_teacher(model: language.GPT, text_ids: torch.Tensor, addition_ids: torch.Tensor, *, steps: int, seed: int,
                batch_size: int = 64, lr: float = 2e-3, warmup: int = 100, addition_fraction: float = 0.5,
                progress: bool = True) -> train.History:
    """Train ``model`` in place with the shipped recipe, on the CPU, through :func:`course_utils.train.fit`.

    ``steps`` batches of windows (:class:`WindowBatches`, drawn from a generator seeded with ``seed``), AdamW
    (betas 0.9 and 0.99, weight decay 0.01), the learning rate of :func:`lr_at` (:class:`WarmupCosine`) and the
    gradients' norm clipped to 1. Seeding the global generators is the caller's.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    batches = WindowBatches(text_ids, addition_ids, steps, batch_size, model.cfg.block_size, addition_fraction,
                            torch.Generator().manual_seed(seed))
    return train.fit(model, batches, epochs=1, loss_fn=next_char_loss, optimizer=optimizer,
                     scheduler=WarmupCosine(optimizer, steps, warmup), grad_clip=1.0, device="cpu", progress=progress)


def transfer_set(model: language.GPT, text_ids: torch.Tensor, n_windows: int, prompt_chars: int, temperature: float,
                 n_additions: int, seed: int) -> dict[str, torch.Tensor]:
    """The teacher's own text and its answers to training additions (uint8 token ids).

    ``text_windows`` ``(n_windows, block_size + 1)``: a short real prompt, then the teacher's
    continuation sampled at ``temperature`` (< 1 leans to the teacher's most likely text, the
    mode Kim and Rush approximate with beam search). ``additions``: one stream of lines
    ``"a+b=<teacher's greedy answer>\\n"`` for training problems, right or wrong.
    """
    block = model.cfg.block_size
    generator = torch.Generator().manual_seed(seed)
    prompts, _ = language.random_windows(text_ids, n_windows, prompt_chars, generator)
    rows = []
    for i, chunk in enumerate(prompts.split(256)):
        continuation = language.generate(model, chunk, block + 1 - prompt_chars, temperature, seed=seed + i)
        rows.append(torch.cat([chunk, continuation], 1))
    problems = language.sample_additions(n_additions, TRAIN_DIGITS, "train", seed=seed)
    answers = language.addition_answers(model, problems)
    lines = []
    for (a, b), answer in zip(problems, answers):
        written = "?" if answer is None else str(answer)[::-1]
        lines.append(f"{language.format_addition(a, b)[0]}{written}\n")
    return {"text_windows": torch.cat(rows).to(torch.uint8), "additions": language.encode("".join(lines)).to(torch.uint8)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=validate.positive_int, default=6000)
    parser.add_argument("--batch-size", type=validate.positive_int, default=64)
    parser.add_argument("--lr", type=validate.positive_float, default=2e-3)
    parser.add_argument("--warmup", type=validate.non_negative_int, default=100)
    parser.add_argument("--block-size", type=validate.positive_int, default=language.CONFIGS["lm-teacher"].block_size,
                        help=f"context in characters (at least {PROMPT_CHARS}, the transfer set's real prompt)")
    parser.add_argument("--addition-fraction", type=validate.fraction, default=0.5)
    parser.add_argument("--seed", type=validate.non_negative_int, default=0)
    parser.add_argument("--threads", type=validate.positive_int, default=None,
                        help="torch threads (default: torch's choice)")
    parser.add_argument("--transfer-windows", type=validate.positive_int, default=1024)
    parser.add_argument("--transfer-additions", type=validate.positive_int, default=4000)
    parser.add_argument("--out", type=Path, default=config.WEIGHTS_DIR)
    args = parser.parse_args(argv)
    if args.block_size < PROMPT_CHARS:
        parser.error(f"--block-size {args.block_size} is shorter than the transfer set's {PROMPT_CHARS}-character "
                     "prompt: use at least that many characters of context.")
    if args.threads:
        torch.set_num_threads(args.threads)

    train.set_seed(args.seed)
    train_text, val_text = language.split_corpus(language.load_corpus())
    text_ids, val_ids = language.encode(train_text), language.encode(val_text)
    addition_ids = language.encode(language.addition_text(200_000, TRAIN_DIGITS, seed=args.seed))
    model = language.create("lm-teacher", seed=args.seed, block_size=args.block_size)
    start = time.perf_counter()
    history = fit_teacher(model, text_ids, addition_ids, steps=args.steps, seed=args.seed, batch_size=args.batch_size,
                          lr=args.lr, warmup=args.warmup, addition_fraction=args.addition_fraction)
    for first in range(0, args.steps, 100):
        losses = history.step_loss[first:first + 100]
        print(f"step {first + len(losses)}/{args.steps}  loss {sum(losses) / len(losses):.3f}", flush=True)
    seconds = time.perf_counter() - start
    model.eval()

    bpc = language.bits_per_char(model, val_ids)
    exact = {}
    for digits in (1, 2, 3, 4, 5):
        problems = language.sample_additions(200, digits, "test", seed=1)
        exact[str(digits)] = round(language.addition_accuracy(model, problems), 4)
    print(f"validation bits/char {bpc:.3f}; exact match by operand length {exact}", flush=True)
    gen_start = time.perf_counter()
    transfer = transfer_set(model, text_ids, args.transfer_windows, PROMPT_CHARS, 0.7, args.transfer_additions,
                            args.seed + 1)
    gen_seconds = time.perf_counter() - gen_start

    args.out.mkdir(parents=True, exist_ok=True)
    weights, transfer_path = args.out / "lm_teacher.pt", args.out / "lm_teacher_transfer.pt"
    torch.save(model.state_dict(), weights)
    torch.save(transfer, transfer_path)
    card = {
        "model": "lm-teacher",
        "architecture": "character-level GPT (pre-norm, tied head), see course_utils/language/models.py",
        "config": language.config_dict(model),
        "parameters": evaluate.count_parameters(model),
        "data": f"python-docstrings corpus (train part, sha256 {language.CORPUS_SHA256[:12]}...) mixed with addition "
                f"problems of {TRAIN_DIGITS} digits, answers reversed, fraction {args.addition_fraction} of windows",
        "val_bits_per_char": round(bpc, 4),
        "addition_exact_match_by_digits": exact,
        "train_digits": list(TRAIN_DIGITS),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "recipe": f"AdamW lr {args.lr} (warm-up {args.warmup}, cosine to 10%), betas (0.9, 0.99), weight decay 0.01, "
                  "gradient clipping 1.0",
        "training_seconds": round(seconds, 1),
        "hardware": f"cpu: {report.hardware_name(torch.device('cpu'))}, {torch.get_num_threads()} threads (shared machine)",
        "torch": torch.__version__,
        "weights_file": weights.name,
        "sha256": checkpoints.sha256(weights),
        "transfer_file": transfer_path.name,
        "transfer_sha256": checkpoints.sha256(transfer_path),
        "transfer": f"{args.transfer_windows} windows ({PROMPT_CHARS} real characters, then the teacher's sampling at "
                    f"temperature 0.7) and {args.transfer_additions} training additions answered greedily",
        "transfer_seconds": round(gen_seconds, 1),
    }
    (args.out / language.TEACHER_CARD).write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card, indent=2))
    return card


if __name__ == "__main__":
    main()
