"""Tests for notebook 06's additions to course_utils.export: batch-norm folding, 4-bit weights, magnitude pruning,
gzip'd sizes, interleaved latency and the latency decomposition."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from course_utils import export
from course_utils.images import models


@pytest.fixture(scope="module")
def student() -> nn.Module:
    """A cnn-2k student with non-trivial batch-norm statistics (so folding changes the weights)."""
    model = models.create("cnn-2k", seed=0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(64, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def test_fold_batch_norm_keeps_the_function_and_removes_every_batch_norm(student, images):
    folded = export.fold_batch_norm(student)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in student.modules())  # the original is untouched
    with torch.no_grad():
        assert torch.allclose(folded(images), student(images), atol=1e-5)
    assert folded.block1.conv1.bias is not None  # the shift moved into the conv's bias


def test_fold_batch_norm_refuses_a_batch_norm_it_cannot_fold():
    class Residual(nn.Module):  # a BatchNorm outside an nn.Sequential: its input is not known to be a conv
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)

        def forward(self, x):
            return self.norm(self.conv(x))

    with pytest.raises(ValueError, match=r"\['norm'\] were left"):
        export.fold_batch_norm(Residual())


@pytest.mark.parametrize("per_channel", [True, False])
def test_four_bit_weights_are_symmetric_with_fifteen_levels(per_channel):
    weight = torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    quantized = export.WeightFakeQuant(per_channel=per_channel, bits=4)(weight)
    max_abs = weight.abs().amax(dim=(1, 2, 3), keepdim=True) if per_channel else weight.abs().max()
    codes = quantized / (max_abs / 7)  # s = max|w| / 7, integers in [-7, 7]
    assert torch.allclose(codes, codes.round(), atol=1e-4)
    assert codes.abs().max() <= 7 + 1e-4 and len(torch.unique(codes.round())) <= 15
    assert torch.allclose(quantized.abs().amax(dim=(1, 2, 3)) if per_channel else quantized.abs().max(),
                          max_abs.flatten() if per_channel else max_abs)  # max|w| sits on the grid: idempotent
    assert (quantized - weight).abs().max() <= max_abs.max() / 14 + 1e-6  # at most half a step
    again = export.WeightFakeQuant(per_channel=per_channel, bits=4)(quantized)
    assert torch.allclose(again, quantized, atol=1e-6)  # quantizing twice changes nothing
    with pytest.raises(ValueError, match="bits must be one of"):
        export.WeightFakeQuant(bits=3)


def test_int4_file_is_smaller_than_int8_and_four_bit_qat_lands_on_its_grid(student, images, tmp_path):
    raw = export.fold_batch_norm(student)
    trained = export.fold_batch_norm(student)
    with export.fake_quantization(trained, per_channel=False, weight_bits=4):
        optimizer = torch.optim.SGD(trained.parameters(), lr=0.01)
        nn.functional.cross_entropy(trained.train()(images), torch.arange(64) % 10).backward()
        optimizer.step()
    trained.eval()
    differences = {}
    for name, model in (("raw", raw), ("qat", trained)):
        fp32 = export.export_onnx(model, tmp_path / f"{name}.onnx", images[:2], opset=21)
        int4 = export.quantize_static(fp32, tmp_path / f"{name}_int4.onnx", images, per_channel=False, weight_type="qint4")
        differences[name] = export.parity(model, int4, images).max_abs_diff
    weights = [t for t in onnx.load(str(int4)).graph.initializer if t.name.endswith("weight_quantized")]
    assert weights and all(t.data_type == onnx.TensorProto.INT4 for t in weights)
    int8 = export.quantize_static(fp32, tmp_path / "int8.onnx", images, per_channel=False)
    assert export.model_size(int4) < export.model_size(int8)
    # weights trained on the 4-bit grid lose nothing more when the file rounds them to 4 bits: only the
    # activations' 8-bit rounding is left, far below what rounding the raw weights to 4 bits costs
    assert differences["qat"] < 0.5 * differences["raw"]
    codes = {t.name: numpy_helper.to_array(t).astype(np.float32) for t in onnx.load(str(int4)).graph.initializer}
    scale = codes["block2.conv1.weight_scale"]
    assert np.allclose(codes["block2.conv1.weight_quantized"] * scale, trained.block2.conv1.weight.detach().numpy(),
                       atol=1e-6)  # the file holds exactly the trained weights
    with pytest.raises(ValueError, match="type must be one of"):
        export.quantize_static(fp32, tmp_path / "int3.onnx", images, weight_type="qint3")


def test_magnitude_pruning_keeps_zeros_through_training_and_leaves_plain_weights(student, images):
    model = export.fold_batch_norm(student)
    with export.magnitude_pruning(model, sparsity=0.75):
        for layer in (model.block2.conv1, model.block3.conv1, model.head):
            zeros = (layer.weight == 0).float().mean().item()
            assert zeros == pytest.approx(0.75, abs=1 / layer.weight.numel())  # every layer at the target...
        assert not (model.block1.conv1.weight == 0).any()  # ...but the first, which reads the image
        pruned_mask = model.head.weight == 0
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
        nn.functional.cross_entropy(model(images), torch.arange(64) % 10).backward()
        optimizer.step()
        assert (model.head.weight[pruned_mask] == 0).all()  # the mask keeps pruned weights at zero
    assert isinstance(model.head.weight, nn.Parameter) and not hasattr(model.head, "weight_orig")
    assert not model.head._forward_pre_hooks
    first = model.block1.conv1.weight.numel()
    total = sum(layer.weight.numel() for layer in (model.block1.conv1, model.block2.conv1, model.block3.conv1, model.head))
    assert export.weight_sparsity(model) == pytest.approx(0.75 * (total - first) / total, abs=0.01)
    everything = export.fold_batch_norm(student)
    with export.magnitude_pruning(everything, sparsity=0.5, keep_first=False):
        assert (everything.block1.conv1.weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="nothing to prune"):
        with export.magnitude_pruning(nn.Linear(3, 2), 0.5):
            pass
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="sparsity must be in"):
            with export.magnitude_pruning(model, bad):
                pass


def test_pruning_saves_gzip_bytes_not_onnx_bytes(student, images, tmp_path):
    dense = export.fold_batch_norm(student)
    sparse = export.fold_batch_norm(student)
    with export.magnitude_pruning(sparse, sparsity=0.9):
        pass
    dense_path = export.export_onnx(dense, tmp_path / "dense.onnx", images[:2])
    sparse_path = export.export_onnx(sparse, tmp_path / "sparse.onnx", images[:2])
    assert export.model_size(sparse_path) == export.model_size(dense_path)  # zeros are stored as 4-byte floats
    assert export.gzip_size(sparse_path) < 0.7 * export.gzip_size(dense_path)
    assert export.weight_sparsity(sparse) > 0.85
    with pytest.raises(export.OnnxFileError, match="does not exist"):
        export.gzip_size(tmp_path / "missing.onnx")


def test_latency_decomposition_multiplies_to_the_end_to_end_ratio():
    d = export.latency_decomposition(2.0, 0.5, 0.1, 0.08)
    assert d["runtime_ratio"] == pytest.approx(4.0) and d["size_ratio"] == pytest.approx(5.0)
    assert d["quantization_ratio"] == pytest.approx(1.25) and d["end_to_end_ratio"] == pytest.approx(25.0)
    assert math.prod(d[k] for k in ("runtime_ratio", "size_ratio", "quantization_ratio")) == pytest.approx(
        d["end_to_end_ratio"], rel=1e-12)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive, finite"):
            export.latency_decomposition(2.0, bad, 0.1, 0.08)


def test_benchmark_interleaved_times_every_target_alike(student, images, tmp_path):
    path = export.export_onnx(student, tmp_path / "student.onnx", images[:2])
    student.train()
    threads_before = torch.get_num_threads()
    rows = export.benchmark_interleaved({"eager": student, "onnx": path}, (1, 28, 28), rounds=3, runs=4, warmup=1)
    assert set(rows) == {"eager", "onnx"}
    assert rows["eager"].backend == "torch" and rows["onnx"].backend == "onnxruntime"
    for row in rows.values():
        assert row.runs == 12 and row.batch_size == 1 and row.threads == 1 and row.p95_ms >= row.median_ms > 0
    assert student.training and torch.get_num_threads() == threads_before
    student.eval()
    with pytest.raises(TypeError, match="nn.Module or an ONNX file path"):
        export.benchmark_interleaved({"bad": 3}, (1, 28, 28))
    with pytest.raises(ValueError, match="rounds"):
        export.benchmark_interleaved({"eager": student}, (1, 28, 28), rounds=0)
    with pytest.raises(ValueError, match="empty"):
        export.benchmark_interleaved({}, np.zeros((1, 1, 28, 28), np.float32))


def test_load_sweep_says_how_to_make_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m course_utils.cli.export_sweep"):
        export.load_sweep(tmp_path / "missing.json")


def test_size_breakdown_splits_the_file(student, images, tmp_path):
    path = export.export_onnx(student, tmp_path / "student.onnx", images[:2])
    parts = export.size_breakdown(path)
    assert parts["weights"] + parts["graph"] == parts["total"] == export.model_size(path)
    parameters = sum(p.numel() for p in export.fold_batch_norm(student).parameters())
    assert 4 * parameters <= parts["weights"] < 4 * parameters + 1024  # float32 weights plus a little framing
    with pytest.raises(export.OnnxFileError, match="does not exist"):
        export.size_breakdown(tmp_path / "missing.onnx")
