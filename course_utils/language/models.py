"""A character-level decoder-only transformer (nanoGPT-style) with generation, bits per character and the teacher.

Radford et al. (2019) GPT-2 layout: token + position embeddings, pre-norm blocks of causal
self-attention and an MLP, a final layer norm and a head tied to the token embedding.
Attention is written out (no fused kernel) so the shapes stay visible and the model exports to ONNX.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import checkpoints, config, evaluate, report, validate
from ..checkpoints import UnknownModelError
from . import text

TEACHER_CARD = "lm_teacher.json"


@dataclass
class GPTConfig:
    vocab_size: int = len(text.VOCAB)  # 96: newline + printable ASCII
    block_size: int = 32  # the longest context (characters): two or three addition lines, a docstring phrase
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0  # small models on this much data barely overfit in the steps we train


def check_ids(idx: torch.Tensor, vocab_size: int, name: str = "idx") -> None:
    """Refuse token ids that are not an integer ``(B, T)`` tensor with every id in ``[0, vocab_size - 1]``."""
    if not isinstance(idx, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of token ids, got {type(idx).__name__}: use cu.language.encode(text).")
    if idx.ndim != 2:
        fix = f"add the batch axis with {name}[None]" if idx.ndim == 1 else "pass a (B, T) tensor"
        raise ValueError(f"{name} must be (B, T) token ids (a batch of sequences), got shape {tuple(idx.shape)}: {fix}.")
    if idx.dtype.is_floating_point or idx.dtype in (torch.bool, torch.complex64, torch.complex128):
        raise TypeError(f"{name} must hold integer token ids (torch.long), got dtype {idx.dtype}.")
    if torch.compiler.is_compiling():  # export traces the graph: no data-dependent checks there
        return
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= vocab_size):
        bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
        raise ValueError(f"{name} holds the token id {bad}, outside the vocabulary [0, {vocab_size - 1}]: encode text "
                         "with cu.language.encode, and decode model outputs with cu.language.decode.")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd ({cfg.n_embd}) must be divisible by n_head ({cfg.n_head}).")
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)
        mask = torch.tril(torch.ones(cfg.block_size, cfg.block_size, dtype=torch.bool))
        self.register_buffer("mask", mask.view(1, 1, cfg.block_size, cfg.block_size), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # each (B, T, C)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        att = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])  # (B, nh, T, T)
        att = att.masked_fill(~self.mask[:, :, :T, :T], float("-inf")).softmax(dim=-1)
        y = self.dropout(att) @ v  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(cfg.n_embd), CausalSelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(), nn.Linear(4 * cfg.n_embd, cfg.n_embd),
                                 nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """``GPT(cfg)(idx)``: int64 token ids ``(B, T)`` -> next-token logits ``(B, T, vocab_size)``."""

    def __init__(self, cfg: GPTConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GPTConfig()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.n_layer)])
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying (Press and Wolf 2017)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        check_ids(idx, self.cfg.vocab_size)
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(f"sequence of length {T} is longer than block_size={self.cfg.block_size}: crop it "
                             f"(idx[:, -{self.cfg.block_size}:]).")
        positions = torch.arange(T, device=idx.device)
        x = self.tok_emb(idx) + self.pos_emb(positions)  # (B, T, C)
        return self.head(self.ln_f(self.blocks(x)))  # (B, T, vocab_size)


CONFIGS = {  # teacher and the students of notebook 08 (all with the teacher's context and vocabulary)
    "lm-teacher": GPTConfig(n_layer=4, n_head=4, n_embd=128),
    "lm-student-s": GPTConfig(n_layer=2, n_head=2, n_embd=32),
    "lm-student-m": GPTConfig(n_layer=2, n_head=4, n_embd=48),
    "lm-student-l": GPTConfig(n_layer=2, n_head=4, n_embd=64),
    "lm-student-xl": GPTConfig(n_layer=3, n_head=4, n_embd=64),  # one layer more: the ladder's step in depth
}


def create(name: str, seed: int | None = None, block_size: int | None = None) -> GPT:
    """A freshly initialised model by name (see :data:`CONFIGS`), seeded when ``seed`` is given.

    ``block_size`` overrides the context length (notebook 08 gives the students the teacher's). An unknown name
    raises ``cu.checkpoints.UnknownModelError`` (a ``KeyError``) listing the known ones.
    """
    if name not in CONFIGS:
        raise UnknownModelError(f"unknown language model {name!r}; choose one of {sorted(CONFIGS)}.")
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size must be a positive number of characters, got {block_size}.")
    if seed is not None:
        torch.manual_seed(seed)
    cfg = CONFIGS[name] if block_size is None else replace(CONFIGS[name], block_size=block_size)
    return GPT(cfg)


def student_from_teacher(teacher: GPT, layers: list[int] | tuple[int, ...]) -> GPT:
    """A student made of the teacher's own layers, as DistilBERT builds its student (Sanh et al. 2019, section 3).

    The student keeps the teacher's width, heads, vocabulary and context and has ``len(layers)`` blocks:
    block ``i`` starts as a copy of the teacher's block ``layers[i]``; the token and position embeddings, the
    final layer norm and the tied head start as copies too. DistilBERT takes "one layer out of two", i.e.
    ``layers = [0, 2]`` for this 4-layer teacher. The copies are independent tensors (training the student leaves
    the teacher unchanged); the student is returned in training mode.
    """
    layers = [int(layer) for layer in layers]
    if not layers or any(not 0 <= layer < teacher.cfg.n_layer for layer in layers):
        raise ValueError(f"layers must be a non-empty list of the teacher's block indices in "
                         f"[0, {teacher.cfg.n_layer - 1}], got {layers}; DistilBERT takes one out of two, "
                         f"e.g. {list(range(0, teacher.cfg.n_layer, 2))}.")
    student = GPT(replace(teacher.cfg, n_layer=len(layers)))
    state = {key: value.clone() for key, value in teacher.state_dict().items() if not key.startswith("blocks.")}
    for index, layer in enumerate(layers):
        state.update({f"blocks.{index}.{key}": value.clone() for key, value in teacher.blocks[layer].state_dict().items()})
    student.load_state_dict(state)
    return student.train()


@torch.no_grad()
def generate(model: GPT, prompt_ids: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int | None = None, stop_id: int | None = None) -> torch.Tensor:
    """Append ``max_new_tokens`` sampled tokens to ``prompt_ids`` ``(B, T0)``; returns only the new tokens ``(B, N)``.

    Each step samples from ``softmax(logits / temperature)`` (restricted to the ``top_k`` most
    likely tokens if given); ``temperature=0`` picks the argmax (greedy). The same ``seed`` gives
    the same text. Rows that produced ``stop_id`` keep emitting it (stop when all rows have).
    """
    if prompt_ids.ndim != 2 or prompt_ids.shape[1] < 1:
        raise ValueError(f"prompt_ids must be (B, T0) with T0 >= 1, got shape {tuple(prompt_ids.shape)}.")
    check_ids(prompt_ids, model.cfg.vocab_size, "prompt_ids")
    max_new_tokens = validate.integer(max_new_tokens, "max_new_tokens", minimum=1)
    temperature = validate.in_range(temperature, "temperature", 0.0, hint="0 = greedy (arg-max).")
    if top_k is not None:
        top_k = validate.integer(top_k, "top_k", minimum=1, hint="None samples from every token; 1 is greedy.")
    if stop_id is not None:
        stop_id = validate.integer(stop_id, "stop_id", minimum=0, maximum=model.cfg.vocab_size - 1)
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
    idx, new, done = prompt_ids, [], torch.zeros(prompt_ids.shape[0], dtype=torch.bool)
    for _ in range(max_new_tokens):
        logits = model(idx[:, -model.cfg.block_size:])[:, -1, :]  # (B, vocab)
        if temperature == 0:
            next_id = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            next_id = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)  # (B, 1)
        if stop_id is not None:
            next_id = torch.where(done[:, None], torch.full_like(next_id, stop_id), next_id)
            done |= next_id[:, 0] == stop_id
        new.append(next_id)
        idx = torch.cat([idx, next_id], dim=1)
        if stop_id is not None and bool(done.all()):
            break
    model.train(was_training)
    return torch.cat(new, dim=1)


def complete(model: GPT, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8, seed: int = 0,
             top_k: int | None = None) -> str:
    """Text convenience around :func:`generate`: the continuation of ``prompt``."""
    ids = text.encode(prompt)[None, :]
    return text.decode(generate(model, ids, max_new_tokens, temperature, top_k=top_k, seed=seed)[0])


@torch.no_grad()
def bits_per_char(model: GPT, ids: torch.Tensor, batch_size: int = 64, max_windows: int | None = None) -> float:
    """Mean next-character cross-entropy in bits, ``-(1/N) sum_i log2 p(x_i | x_<i)``, over held-out ``ids``.

    The text is cut into non-overlapping windows of ``block_size + 1`` characters; each window
    predicts its last ``block_size`` characters (so early positions see a short context, as in
    training). ``max_windows`` evaluates an evenly spaced subset (quicker).
    """
    if ids.ndim != 1:
        raise ValueError(f"ids must be one 1-D stream of token ids (cu.language.encode(text)), "
                         f"got shape {tuple(ids.shape)}.")
    check_ids(ids[None], model.cfg.vocab_size, "ids")
    batch_size = validate.integer(batch_size, "batch_size", minimum=1)
    if max_windows is not None:
        max_windows = validate.integer(max_windows, "max_windows", minimum=1, hint="None evaluates every window.")
    T = model.cfg.block_size
    n = (len(ids) - 1) // T
    if n < 1:
        raise ValueError(f"need more than block_size + 1 = {T + 1} tokens, got {len(ids)}.")
    starts = torch.arange(n) * T
    if max_windows is not None and max_windows < n:
        starts = starts[torch.linspace(0, n - 1, max_windows).long()]
    model.eval()
    total, count = 0.0, 0
    for chunk in starts.split(batch_size):
        windows = ids[chunk[:, None] + torch.arange(T + 1)]  # (b, T + 1)
        logits = model(windows[:, :-1])
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1), reduction="sum").item()
        count += windows[:, 1:].numel()
    return total / count / math.log(2)


@torch.no_grad()
def addition_accuracy(model: GPT, problems: list[tuple[int, int]], batch_size: int = 256,
                      reverse: bool = True) -> float:
    """Exact-match accuracy: the share of ``(a, b)`` for which greedy decoding of ``"\\na+b="`` writes ``a + b``."""
    if not problems:
        raise ValueError("problems is empty: pass at least one (a, b) pair.")
    answers = addition_answers(model, problems, batch_size, reverse)
    return sum(answer == a + b for answer, (a, b) in zip(answers, problems)) / len(problems)


@torch.no_grad()
def addition_answers(model: GPT, problems: list[tuple[int, int]], batch_size: int = 256,
                     reverse: bool = True) -> list[int | None]:
    """The model's greedy answers to ``"\\na+b="`` (None where it wrote no number). Prompts of a batch share a length."""
    newline = text.VOCAB.index("\n")
    answers: list[int | None] = [None] * len(problems)
    by_length: dict[int, list[int]] = {}
    prompts = ["\n" + text.format_addition(a, b, reverse)[0] for a, b in problems]
    for i, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(i)
    for rows in by_length.values():
        for chunk in [rows[j:j + batch_size] for j in range(0, len(rows), batch_size)]:
            ids = torch.stack([text.encode(prompts[i]) for i in chunk])
            longest = len(str(max(sum(problems[i]) for i in chunk))) + 2
            out = generate(model, ids, longest, temperature=0, stop_id=newline)
            for i, row in zip(chunk, out):
                answers[i] = text.read_answer(text.decode(row), reverse)
    return answers


RETRAIN = ("Restore it with `git checkout -- course_utils/weights` or retrain it with "
           "`python -m course_utils.cli.train_lm_teacher` (about 20 minutes on a laptop CPU).")


def teacher_card(weights_dir: str | Path | None = None) -> dict:
    """The shipped language-model teacher's card (bits per character, addition accuracy, seed, steps, sha256)."""
    return checkpoints.read_card(Path(weights_dir or config.WEIGHTS_DIR) / TEACHER_CARD, RETRAIN)


def load_teacher(weights_dir: str | Path | None = None) -> GPT:
    """The shipped teacher in eval mode, after checking its sha256 against the card (``torch.load(weights_only=True)``)."""
    folder = Path(weights_dir or config.WEIGHTS_DIR)
    card = teacher_card(folder)
    path = checkpoints.verified(folder / card["weights_file"], card["sha256"], "LM teacher checkpoint", RETRAIN)
    model = GPT(GPTConfig(**card["config"]))
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def config_dict(model: GPT) -> dict:
    """The model's configuration as a plain dict (for model cards)."""
    return asdict(model.cfg)


def load_transfer_set(weights_dir: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The teacher's cached transfer set (checked against the card): ``text_windows`` ``(N, block_size + 1)`` and the
    ``additions`` stream, as int64 token ids. Used for sequence-level distillation (Kim and Rush 2016)."""
    folder = Path(weights_dir or config.WEIGHTS_DIR)
    card = teacher_card(folder)
    path = checkpoints.verified(folder / card["transfer_file"], card["transfer_sha256"], "LM transfer set", RETRAIN)
    return {key: value.long() for key, value in torch.load(path, map_location="cpu", weights_only=True).items()}


# notebook 08's precomputed size ladder of students, made by `python -m course_utils.cli.lm_sweep`
LADDER_FILE = config.REPO_DIR / "results" / "lm_ladder.json"
LADDER_COMMAND = "python -m course_utils.cli.lm_sweep"
LADDER_METHODS = ("text only", "token KD")


def load_ladder(path: str | Path | None = None) -> dict:
    """The precomputed ladder (``results/lm_ladder.json``); a clear error says how to make it."""
    ladder = report.load_precomputed(path or LADDER_FILE, LADDER_COMMAND, "1-3 hours on one CPU core")
    if not ladder.get("complete", False) or "seeds" not in ladder.get("settings", {}):
        raise ValueError(f"{path or LADDER_FILE} is unfinished or from an older, single-seed version: run `{LADDER_COMMAND} "
                         "--resume` to finish it (or without --resume to start over).")
    return ladder


def ladder_cells(ladder: dict) -> dict[tuple[str, str], dict[str, object]]:
    """``{(student, method): {"parameters", "shape", "bits_per_char", "exact_match"}}`` from a loaded ladder.

    ``bits_per_char`` is :func:`cu.evaluate.seed_summary` of the per-seed values (mean, std, values);
    ``exact_match`` maps each operand length (int) to the same summary.
    """
    return {(row["student"], row["method"]): {
        "parameters": row["parameters"], "shape": f"{row['n_layer']} layers x {row['n_embd']}",
        "bits_per_char": evaluate.seed_summary(row["bits_per_char"]),
        "exact_match": {int(d): evaluate.seed_summary(values) for d, values in row["exact_match"].items()}}
        for row in ladder["rows"]}


def transfer_windows(transfer: dict[str, torch.Tensor], n: int, block_size: int, addition_fraction: float,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training windows ``(x, y)`` from the teacher's transfer set, a share ``addition_fraction`` of them additions."""
    n = validate.integer(n, "n", minimum=1)
    addition_fraction = validate.in_range(addition_fraction, "addition_fraction", 0.0, 1.0)
    n_add = round(n * addition_fraction)
    rows = transfer["text_windows"]
    if rows.shape[1] != block_size + 1:
        raise ValueError(f"the transfer set's windows have {rows.shape[1]} tokens; block_size + 1 = {block_size + 1}.")
    rows = rows[torch.randint(0, len(rows), (n - n_add,), generator=generator)]  # (n - n_add, block_size + 1)
    x_add, y_add = text.random_windows(transfer["additions"], n_add, block_size, generator)
    order = torch.randperm(n, generator=generator)
    return torch.cat([rows[:, :-1], x_add])[order], torch.cat([rows[:, 1:], y_add])[order]
