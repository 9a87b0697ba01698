"""The Fashion-MNIST loader: shipped files, checksums, stratified subsets, loaders and error paths."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import pytest
import torch

import course_utils as cu
from course_utils.images.data import DataFileError


def test_test_split_shapes_and_normalisation(test_split):
    assert test_split.images.shape == (10000, 1, 28, 28)
    assert test_split.images.dtype == torch.float32
    assert test_split.labels.shape == (10000,)
    assert test_split.labels.bincount().tolist() == [1000] * 10
    assert len(test_split.class_names) == 10 and test_split.class_names[6] == "Shirt"
    # normalised with the training split's statistics: the test split is close to, not exactly, (0, 1)
    assert abs(test_split.images.mean().item()) < 0.05
    assert abs(test_split.images.std().item() - 1.0) < 0.05
    assert torch.equal(test_split.index, torch.arange(10000))


def test_train_split_statistics_match_constants():
    train = cu.images.load_fashion_mnist("train")
    assert len(train) == 60000
    pixels = cu.images.data.denormalise(train.images)
    assert pixels.mean().item() == pytest.approx(cu.images.data.MEAN, abs=1e-3)
    assert pixels.std().item() == pytest.approx(cu.images.data.STD, abs=1e-3)


def test_stratified_subset_keeps_class_balance_and_is_seeded():
    a = cu.images.load_fashion_mnist("train", subset=2000, seed=1)
    b = cu.images.load_fashion_mnist("train", subset=2000, seed=1)
    c = cu.images.load_fashion_mnist("train", subset=2000, seed=2)
    assert len(a) == 2000
    assert a.labels.bincount().tolist() == [200] * 10
    assert torch.equal(a.index, b.index)
    assert not torch.equal(a.index.sort().values, c.index.sort().values)


def test_stratified_indices_with_uneven_classes():
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    picked = cu.data.stratified_indices(labels, 5, seed=0)
    assert len(picked) == len(set(picked.tolist())) == 5
    # quotas 3, 1.5, 0.5 -> floors 3, 1, 0, then the largest remainders (a tie: one more place)
    counts = labels[picked].bincount(minlength=3).tolist()
    assert counts[0] == 3 and sum(counts) == 5


def test_split_is_disjoint_and_complete(small_train):
    labelled, rest = cu.images.data.stratified_split(small_train, 200, seed=0)
    assert len(labelled) == 200 and len(rest) == 800
    both = torch.cat([labelled.index, rest.index])
    assert both.unique().numel() == 1000
    assert set(both.tolist()) == set(small_train.index.tolist())
    # index still points into the full split: the images there are the same
    full = cu.images.load_fashion_mnist("train")
    assert torch.equal(full.images[labelled.index], labelled.images)


@pytest.mark.parametrize("size", [-1, 0, 60001])
def test_bad_subset_sizes_raise(size):
    with pytest.raises(ValueError, match="subset size"):
        cu.images.load_fashion_mnist("train", subset=size)


def test_fractional_subset_size_is_a_type_error():
    with pytest.raises(TypeError, match="subset size must be a whole number"):
        cu.images.load_fashion_mnist("train", subset=2.5)


def test_unknown_split_raises():
    with pytest.raises(ValueError, match="split must be one of"):
        cu.images.load_fashion_mnist("validation")


def test_make_loader_batches_and_seeded_order():
    x, y = torch.arange(10).float(), torch.arange(10)
    batches = list(cu.data.make_loader(x, y, batch_size=4, shuffle=True, seed=3))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    again = list(cu.data.make_loader(x, y, batch_size=4, shuffle=True, seed=3))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(batches, again))
    assert torch.equal(torch.cat([b[0] for b in batches]).sort().values, x)
    assert all(torch.equal(b[0].long(), b[1]) for b in batches)  # rows stay aligned
    with pytest.raises(ValueError, match="same length"):
        cu.data.make_loader(x, y[:5])


def _copy_shipped(tmp_path: Path) -> Path:
    folder = tmp_path / "fm"
    shutil.copytree(cu.config.DATASETS_DIR / "fashion-mnist", folder)
    return folder


def test_explicit_root_is_used_and_wrong_root_names_the_file(tmp_path):
    folder = _copy_shipped(tmp_path)
    assert cu.images.data.find_data_dir(folder) == folder
    with pytest.raises(DataFileError, match="train-images-idx3-ubyte.gz") as error:
        cu.images.load_fashion_mnist("test", root=tmp_path / "nowhere")
    assert "does not exist" in str(error.value)


def test_corrupt_file_is_detected(tmp_path):
    folder = _copy_shipped(tmp_path)
    target = folder / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(target.read_bytes())
    raw[100] ^= 0xFF
    target.write_bytes(bytes(raw))
    with pytest.raises(DataFileError, match="t10k-labels-idx1-ubyte.gz is corrupt"):
        cu.images.load_fashion_mnist("test", root=folder)


def test_fallback_to_system_path_then_error_without_download(tmp_path, monkeypatch):
    folder = _copy_shipped(tmp_path)
    monkeypatch.setattr(cu.config, "DATASETS_DIR", tmp_path / "empty")
    monkeypatch.setattr(cu.images.data, "SYSTEM_DIR", folder)
    assert cu.images.data.find_data_dir() == folder
    monkeypatch.setattr(cu.images.data, "SYSTEM_DIR", tmp_path / "also-empty")
    with pytest.raises(DataFileError, match="download=True"):
        cu.images.data.find_data_dir()


def _write_idx(path: Path, body: bytes, header: bytes) -> None:
    with gzip.open(path, "wb") as handle:
        handle.write(header + body)


def test_read_idx_rejects_bad_magic_truncation_and_non_gzip(tmp_path):
    good = tmp_path / "good.gz"
    _write_idx(good, bytes(range(6)), b"\x00\x00\x08\x02" + struct.pack(">2I", 2, 3))
    assert cu.images.data.read_idx(good).tolist() == [[0, 1, 2], [3, 4, 5]]
    bad_magic = tmp_path / "magic.gz"
    _write_idx(bad_magic, bytes(6), b"\x00\x00\x0d\x02" + struct.pack(">2I", 2, 3))
    with pytest.raises(DataFileError, match="magic"):
        cu.images.data.read_idx(bad_magic)
    truncated = tmp_path / "short.gz"
    _write_idx(truncated, bytes(5), b"\x00\x00\x08\x02" + struct.pack(">2I", 2, 3))
    with pytest.raises(DataFileError, match="truncated"):
        cu.images.data.read_idx(truncated)
    plain = tmp_path / "plain.gz"
    plain.write_bytes(b"not gzip at all")
    with pytest.raises(DataFileError, match="gzip"):
        cu.images.data.read_idx(plain)
