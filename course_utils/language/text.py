"""Text data for notebook 08: the docstring corpus (checksummed), the character vocabulary and the addition probe.

The vocabulary is fixed: newline plus the 95 printable ASCII characters, so the corpus and
the arithmetic probe share one alphabet and a model never meets an unknown character.

The addition probe (after Lee et al. 2023, "Teaching Arithmetic to Small Transformers") writes
each problem as one line, ``"482+319=108\\n"``: the answer's digits are written least
significant first (801 reversed), which lets a left-to-right model emit each digit after the
digits that decide it. Problems are split into train and held-out by a hash of the operands,
so no held-out problem is ever trained on; longer operands than any in training test whether
the procedure generalises.
"""

from __future__ import annotations

import numbers
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .. import config, data, validate

VOCAB = "\n" + "".join(chr(code) for code in range(32, 127))  # 96 characters: newline + printable ASCII
CORPUS_FILE = "python_docstrings.txt"
CORPUS_SHA256 = "227eb282ceebaa185245fed1ca38e0853d3c878beb5260588bdc6f3afc55f2ab"  # Python 3.11.7's standard library
_INDEX = {char: i for i, char in enumerate(VOCAB)}


class CorpusError(RuntimeError):
    """The corpus file is missing or differs from the committed one."""


def encode(text: str) -> torch.Tensor:
    """Characters -> int64 token ids ``(len(text),)``; raises on a character outside :data:`VOCAB`."""
    try:
        return torch.tensor([_INDEX[char] for char in text], dtype=torch.long)
    except KeyError as error:
        raise ValueError(f"character {error.args[0]!r} is not in the vocabulary (newline and printable ASCII); "
                         "replace or remove it before encoding.") from None


def decode(ids: torch.Tensor | list[int]) -> str:
    """Token ids -> text (the inverse of :func:`encode`)."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
    if any(isinstance(i, bool) or not isinstance(i, numbers.Integral) for i in ids):
        kinds = sorted({type(i).__name__ for i in ids})
        raise TypeError(f"token ids must be integers, got {', '.join(kinds)} values: pass the ids a model produced "
                        "(e.g. logits.argmax(-1)), not probabilities or floats.")
    bad = [i for i in ids if not 0 <= i < len(VOCAB)]
    if bad:
        raise ValueError(f"token ids must be in [0, {len(VOCAB) - 1}], got {bad[:5]}.")
    return "".join(VOCAB[i] for i in ids)


def corpus_path() -> Path:
    """Where the committed corpus lives: ``datasets/python-docstrings/python_docstrings.txt``."""
    return config.DATASETS_DIR / "python-docstrings" / CORPUS_FILE


def load_corpus(path: str | Path | None = None, verify: bool = True) -> str:
    """The docstring corpus as one string, after checking its sha256 against :data:`CORPUS_SHA256`."""
    from ..checkpoints import sha256

    path = Path(path) if path is not None else corpus_path()
    if not path.is_file():
        raise CorpusError(f"corpus file {path} not found: it ships with the course repository "
                          "(datasets/python-docstrings/); clone the repository or pass path=.")
    if verify and (actual := sha256(path)) != CORPUS_SHA256:
        raise CorpusError(f"corpus {path} has sha256 {actual[:16]}..., expected {CORPUS_SHA256[:16]}...: "
                          "the file was changed or truncated; restore it from the repository.")
    return path.read_text(encoding="ascii")


def split_corpus(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """(train, validation): the last ``val_fraction`` of the text, cut at a docstring boundary ("\\n## ")."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    cut = text.find("\n## ", int(len(text) * (1.0 - val_fraction)))
    if cut < 0:
        raise ValueError("no docstring boundary ('\\n## ') after the cut point: the text is too short to split.")
    return text[: cut + 1], text[cut + 1:]


# --- the addition probe ---------------------------------------------------------------------------

def is_held_out(a: int, b: int, held_out_fraction: float = 0.1) -> bool:
    """True for the problems reserved for evaluation: a fixed hash of ``"a+b"`` (CRC-32) picks about 10%."""
    return zlib.crc32(f"{a}+{b}".encode()) % 1000 < int(1000 * held_out_fraction)


def format_addition(a: int, b: int, reverse: bool = True) -> tuple[str, str]:
    """(prompt, answer) for ``a + b``: ``("482+319=", "108")`` with the answer's digits reversed (801)."""
    if a < 0 or b < 0:
        raise ValueError(f"operands must be non-negative integers, got {a} and {b}.")
    total = str(a + b)
    return f"{a}+{b}=", total[::-1] if reverse else total


def read_answer(generated: str, reverse: bool = True) -> int | None:
    """The integer a model wrote after ``=`` (up to the newline), or None if it is not a number."""
    digits = generated.split("\n", 1)[0]
    if not digits.isdigit():
        return None
    return int(digits[::-1] if reverse else digits)


def _operand(digits: int, rng: random.Random) -> int:
    return rng.randrange(10 ** (digits - 1) if digits > 1 else 0, 10**digits)


def sample_additions(n: int, digits: int | tuple[int, ...], split: str, seed: int = 0) -> list[tuple[int, int]]:
    """``n`` distinct problems ``(a, b)`` of the given split ("train" or "test").

    ``digits`` is an operand length (both operands have it) or a tuple of lengths (each operand
    draws its own). Fewer than ``n`` are returned only when the split has fewer (1-digit test).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}.")
    lengths = (digits,) if isinstance(digits, int) else tuple(digits)
    if not lengths or min(lengths) < 1:
        raise ValueError(f"digits must be positive operand lengths, got {digits}.")
    want_test = split == "test"
    if max(lengths) <= 2:  # small spaces: enumerate instead of sampling
        pool = [(a, b) for da in lengths for db in lengths
                for a in range(10 ** (da - 1) if da > 1 else 0, 10**da)
                for b in range(10 ** (db - 1) if db > 1 else 0, 10**db) if is_held_out(a, b) == want_test]
        random.Random(seed).shuffle(pool)
        return pool[:n]
    rng, found = random.Random(seed), {}
    for _ in range(50 * n):
        a, b = _operand(rng.choice(lengths), rng), _operand(rng.choice(lengths), rng)
        if is_held_out(a, b) == want_test:
            found[(a, b)] = None
            if len(found) == n:
                break
    return list(found)


def addition_text(n_problems: int, digits: tuple[int, ...] = (1, 2, 3), seed: int = 0, reverse: bool = True) -> str:
    """Training text for the probe: ``n_problems`` random training problems, one per line."""
    rng = random.Random(seed)
    lines = []
    while len(lines) < n_problems:
        a, b = _operand(rng.choice(digits), rng), _operand(rng.choice(digits), rng)
        if not is_held_out(a, b):
            prompt, answer = format_addition(a, b, reverse)
            lines.append(f"{prompt}{answer}\n")
    return "".join(lines)


def random_windows(ids: torch.Tensor, n: int, block_size: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random windows of ``ids``: inputs ``x`` and next-token targets ``y``, each ``(n, block_size)``."""
    if ids.ndim != 1 or len(ids) <= block_size:
        raise ValueError(f"ids must be a 1-D tensor longer than block_size={block_size}, got shape {tuple(ids.shape)}.")
    n = validate.integer(n, "n (the number of windows)", minimum=0)
    starts = torch.randint(0, len(ids) - block_size, (n,), generator=generator)
    offsets = torch.arange(block_size + 1)
    windows = ids[starts[:, None] + offsets]  # (n, block_size + 1)
    return windows[:, :-1], windows[:, 1:]


def mixed_windows(text_ids: torch.Tensor, addition_ids: torch.Tensor, n: int, block_size: int,
                  addition_fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` windows, a fraction ``addition_fraction`` of them from the addition stream, rows shuffled."""
    if not 0.0 <= addition_fraction <= 1.0:
        raise ValueError(f"addition_fraction must be in [0, 1], got {addition_fraction}.")
    n_add = round(n * addition_fraction)
    x_text, y_text = random_windows(text_ids, n - n_add, block_size, generator)
    x_add, y_add = random_windows(addition_ids, n_add, block_size, generator)
    order = torch.randperm(n, generator=generator)
    return torch.cat([x_text, x_add])[order], torch.cat([y_text, y_add])[order]


@dataclass
class WindowSet:
    """The language domain's data set: ``inputs`` ``(N, T)`` windows of token ids and their ``targets`` ``(N, T)``,
    each the window shifted by one character (``targets[:, t]`` is the character after ``inputs[:, t]``), both int64.

    Made from :func:`mixed_windows`, :func:`random_windows` or :func:`cu.language.transfer_windows`;
    ``.loader(...)`` is the image and vibration data sets' loader.
    """

    inputs: torch.Tensor
    targets: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("inputs", "targets"):
            tensor = getattr(self, name)
            if not isinstance(tensor, torch.Tensor) or tensor.ndim != 2 or tensor.dtype != torch.int64:
                found = f"a {tensor.dtype} tensor of shape {tuple(tensor.shape)}" if isinstance(tensor, torch.Tensor) \
                    else f"a {type(tensor).__name__}"
                raise ValueError(f"WindowSet.{name} must be an int64 tensor (N, T) of token ids, got {found}: "
                                 "make windows with cu.language.mixed_windows or random_windows.")
        if self.inputs.shape != self.targets.shape:
            raise ValueError(f"inputs {tuple(self.inputs.shape)} and targets {tuple(self.targets.shape)} must have the "
                             "same shape: one target per input position.")
        if len(self.inputs) == 0:
            raise ValueError("WindowSet needs at least one window; ask the window functions for n >= 1.")

    def __len__(self) -> int:
        return len(self.inputs)

    def loader(self, batch_size: int = 128, shuffle: bool = True, seed: int = 0,
               extra: Sequence[torch.Tensor] = ()) -> DataLoader:
        """A DataLoader of ``(inputs, targets, *extra)`` batches (e.g. ``extra=(teacher_logits,)``);
        see :func:`cu.data.make_loader`."""
        return data.make_loader(self.inputs, self.targets, *extra, batch_size=batch_size, shuffle=shuffle, seed=seed)

