"""Fashion-MNIST, read from the IDX files that ship in ``datasets/`` and checked by sha256.

The loader never downloads unless the caller opts in (``download=True``). It looks for the
four ``.gz`` files in an explicit folder, then in the repository's ``datasets/fashion-mnist``,
then in Debian's ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``).
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .. import config, validate
from ..checkpoints import sha256
from ..data import make_loader, stratified_indices

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
MEAN, STD = 0.2860, 0.3530  # pixel mean and std of the training split, after scaling to [0, 1]

FILES = {  # split -> (images file, labels file)
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
FIX = (
    "Restore it with `git checkout -- datasets/fashion-mnist`, install Debian's package "
    "`dataset-fashion-mnist`, or opt in to a download with "
    "`cu.images.load_fashion_mnist(..., download=True)`."
)


class DataFileError(FileNotFoundError):
    """A data file is missing, corrupt or not in the expected format."""


@dataclass
class ImageSet:
    """Normalised images ``(N, 1, 28, 28)`` float32, labels ``(N,)`` int64, and class names.

    ``index`` holds each example's position in the full split, so per-example caches (such as
    ``cu.images.models.load_teacher_logits``) can be sliced to match: ``teacher_logits[subset.index]``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...] = CLASS_NAMES
    index: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels.")
        if self.index is None:
            self.index = torch.arange(len(self.labels))

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ImageSet:
        """The examples at ``indices``, as a new ``ImageSet``."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return ImageSet(self.images[index], self.labels[index], self.class_names, self.index[index])

    def loader(self, batch_size: int = 128, shuffle: bool = True, seed: int = 0,
               extra: Sequence[torch.Tensor] = ()) -> DataLoader:
        """A DataLoader of ``(images, labels, *extra)`` batches; see :func:`cu.data.make_loader`."""
        return make_loader(self.images, self.labels, *extra,
                           batch_size=batch_size, shuffle=shuffle, seed=seed)


def find_data_dir(root: str | Path | None = None, download: bool = False) -> Path:
    """The first folder holding all four verified files: ``root``, then ``datasets/``, then Debian's.

    With ``download=True`` and no folder found, torchvision downloads the files into
    ``datasets/fashion-mnist`` (network needed) and they are verified like any other copy.
    """
    candidates = [Path(root)] if root is not None else [config.DATASETS_DIR / "fashion-mnist", SYSTEM_DIR]
    for folder in candidates:
        if all((folder / name).is_file() for name in SHA256):
            for name in SHA256:
                verify_file(folder / name)
            return folder
    if root is not None:
        missing = [name for name in SHA256 if not (Path(root) / name).is_file()]
        raise DataFileError(f"Fashion-MNIST file {Path(root) / missing[0]} does not exist "
                            f"(missing: {', '.join(missing)}). Pass the folder that holds the four "
                            f"IDX .gz files, or root=None to use the shipped copy. {FIX}")
    if download:
        return _download(config.DATASETS_DIR / "fashion-mnist")
    raise DataFileError("Fashion-MNIST's IDX files were found in none of: "
                        + ", ".join(str(c) for c in candidates) + f". {FIX}")


def verify_file(path: Path) -> None:
    """Raise :class:`DataFileError` if ``path`` does not have its recorded sha256."""
    expected = SHA256.get(path.name)
    if expected is None:
        raise DataFileError(f"{path} is not one of the Fashion-MNIST files {sorted(SHA256)}.")
    actual = sha256(path)
    if actual != expected:
        raise DataFileError(f"{path} is corrupt: its sha256 is {actual[:16]}..., expected "
                            f"{expected[:16]}... (see datasets/README.md). {FIX}")


def _download(folder: Path) -> Path:
    """Opt-in download through torchvision, into ``folder``; verified afterwards."""
    import shutil
    import tempfile

    from torchvision.datasets import FashionMNIST

    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for train in (True, False):
            FashionMNIST(tmp, train=train, download=True)
        for gz in Path(tmp).rglob("*.gz"):
            shutil.copy(gz, folder / gz.name)
    for name in SHA256:
        verify_file(folder / name)
    return folder


def read_idx(path: Path) -> torch.Tensor:
    """Read a gzipped IDX file (unsigned bytes) into a uint8 tensor of its recorded shape."""
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataFileError(f"{path} is not a readable gzip file ({error}). {FIX}") from error
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataFileError(f"{path} is not an IDX file of unsigned bytes (bad magic number). {FIX}")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    if len(body) != int(torch.tensor(shape).prod()):
        raise DataFileError(f"{path} is truncated: header says {shape}, body has {len(body)} bytes. {FIX}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels ``(N, 28, 28)`` -> float32 ``(N, 1, 28, 28)``, standardised with MEAN and STD."""
    images = pixels.float()  # one float copy, then standardised in place: no full-size temporaries
    return images.div_(255.0).sub_(MEAN).div_(STD).unsqueeze(1)


def denormalise(images: torch.Tensor) -> torch.Tensor:
    """Invert :func:`normalise` to [0, 1] pixel values, for display."""
    return (images * STD + MEAN).clamp(0, 1)


def load_fashion_mnist(split: str = "train", root: str | Path | None = None, subset: int | None = None,
                       seed: int = 0, download: bool = False) -> ImageSet:
    """Load a Fashion-MNIST split as a normalised :class:`ImageSet`.

    ``subset`` takes a stratified, seeded sample of that many examples (the same class balance
    as the split); use :func:`stratified_split` to also keep the rest as a transfer set.
    """
    if split not in FILES:
        raise ValueError(f"split must be one of {sorted(FILES)}, got {split!r}.")
    if subset is not None:
        subset = validate.integer(subset, "subset size", minimum=1,
                                  hint="It is the number of examples to keep; None keeps the whole split.")
    folder = find_data_dir(root, download=download)
    images_file, labels_file = FILES[split]
    pixels, labels = read_idx(folder / images_file), read_idx(folder / labels_file)
    if len(pixels) != len(labels):
        raise DataFileError(f"{folder}: {len(pixels)} images but {len(labels)} labels. {FIX}")
    labels = labels.long()
    if subset is None:
        return ImageSet(normalise(pixels), labels)
    index = stratified_indices(labels, subset, seed=seed)  # as stratified_split would pick, normalising only those
    return ImageSet(normalise(pixels[index]), labels[index], index=index)


def stratified_split(data: ImageSet, n_labelled: int, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Split into ``n_labelled`` stratified examples and the rest (an unlabelled transfer set).

    The rest keeps its labels so that it can be evaluated, but a low-label experiment must
    only use its images (with the teacher's soft targets).
    """
    labelled = stratified_indices(data.labels, n_labelled, seed=seed)
    mask = torch.ones(len(data), dtype=torch.bool)
    mask[labelled] = False
    return data.subset(labelled), data.subset(mask.nonzero().flatten())
