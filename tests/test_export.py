"""Tests for course_utils.export: ONNX round trip and parity, INT8 size, latency statistics, fake quantization, errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from course_utils import export


class SmallCNN(nn.Module):
    """About 20k parameters: enough weight bytes that INT8 visibly shrinks the file."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(32, 48, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@pytest.fixture(scope="module")
def cnn() -> nn.Module:
    torch.manual_seed(0)
    model = SmallCNN()
    with torch.no_grad():  # non-trivial batch-norm statistics, so folding them into the conv is exercised
        model.features[1].running_mean.uniform_(-0.5, 0.5)
        model.features[1].running_var.uniform_(0.5, 2.0)
    return model.train()  # export must switch to eval mode itself (and restore this)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(96, 1, 28, 28, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def fp32_path(cnn, tmp_path_factory) -> export.Path:
    return export.export_onnx(cnn, tmp_path_factory.mktemp("onnx") / "cnn.onnx", torch.randn(1, 1, 28, 28))


def test_export_writes_one_checked_file_with_a_dynamic_batch(cnn, fp32_path):
    assert cnn.training, "export must restore the model's training mode"
    assert sorted(p.name for p in fp32_path.parent.iterdir()) == ["cnn.onnx", "cnn.onnx.json"]  # no .data file; a card
    proto = onnx.load(str(fp32_path))
    onnx.checker.check_model(proto, full_check=True)
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert not any(node.metadata_props for node in proto.graph.node)  # debug metadata stripped
    batch_axis = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_axis.dim_param == "batch" and not batch_axis.HasField("dim_value")
    assert export.model_size(fp32_path) == fp32_path.stat().st_size


def test_round_trip_matches_pytorch(cnn, fp32_path, images):
    session = export.load_session(fp32_path, threads=1)
    for batch in (1, 7, 96):  # the dynamic batch axis takes any size
        expected = export.torch_outputs(cnn, images[:batch]).numpy()
        assert np.abs(export.run_session(session, images[:batch]) - expected).max() < 1e-4
    labels = torch.arange(96) % 10
    report = export.parity(cnn, fp32_path, images, labels)
    assert report.within(1e-4) and report.agreement == 1.0 and report.count == 96
    expected_accuracy = (export.torch_outputs(cnn, images).argmax(1) == labels).float().mean().item()
    assert report.torch_accuracy == pytest.approx(expected_accuracy)
    assert report.onnx_accuracy == pytest.approx(export.onnx_accuracy(session, images, labels))


def test_run_session_chunks_give_the_same_result(fp32_path, images):
    session = export.load_session(fp32_path)
    np.testing.assert_allclose(export.run_session(session, images, batch_size=10),
                               export.run_session(session, images, batch_size=None), atol=1e-6)


def test_int8_files_are_smaller_and_close(cnn, fp32_path, images, tmp_path):
    fp32_size = export.model_size(fp32_path)
    dynamic = export.quantize_dynamic(fp32_path, tmp_path / "dynamic.onnx")
    static = export.quantize_static(fp32_path, tmp_path / "static.onnx", images[:64], per_channel=True)
    for path in (dynamic, static):
        assert export.model_size(path) < fp32_size / 2.5  # weights are 4x smaller; the graph is overhead
        report = export.parity(cnn, path, images)
        assert report.max_abs_diff < 0.25 and report.agreement >= 0.85
    ops = {node.op_type for node in onnx.load(str(static)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # the QDQ format


def test_exported_and_quantized_files_carry_a_card_that_loading_checks(fp32_path, tmp_path):
    from course_utils.checkpoints import sha256

    card = export.read_card(fp32_path)
    assert card["made_by"] == "cu.export.export_onnx" and card["model"] == "SmallCNN"
    assert card["sha256"] == sha256(fp32_path) and card["bytes"] == fp32_path.stat().st_size
    int8 = export.quantize_dynamic(fp32_path, tmp_path / "int8.onnx")
    assert export.read_card(int8)["source_sha256"] == card["sha256"]
    altered = bytearray(int8.read_bytes())
    altered[-20] ^= 0xFF  # one byte of the file changed after it was written
    int8.write_bytes(bytes(altered))
    with pytest.raises(export.OnnxFileError, match="does not match its card int8.onnx.json"):
        export.load_session(int8)
    with pytest.raises(export.OnnxFileError, match="does not match its card"):
        export.quantize_dynamic(int8, tmp_path / "again.onnx")  # nor is a changed file quantized


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_with_an_uneven_set_size(fp32_path, images, tmp_path, method):
    path = export.quantize_static(fp32_path, tmp_path / f"{method}.onnx", images[:70], method=method, batch_size=32)
    assert export.run_session(export.load_session(path), images[:3]).shape == (3, 10)


def test_calibration_reader_yields_every_example_once():
    data = np.arange(10, dtype=np.float32).reshape(10, 1)
    reader = export.ArrayCalibrationReader("input", data, batch_size=4)
    seen = []
    while (batch := reader.get_next()) is not None:
        seen.append(batch["input"])
    assert [len(b) for b in seen] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(seen), data)
    reader.rewind()
    assert reader.get_next()["input"].shape == (4, 1)


def test_benchmark_statistics_are_sane(cnn, fp32_path):
    threads_before = torch.get_num_threads()
    for target in (cnn, fp32_path, export.load_session(fp32_path, threads=1)):
        result = export.benchmark(target, (1, 28, 28), batch_sizes=(1, 4), threads=(1, None), warmup=1, runs=5)
        rows = result.rows
        assert len(rows) == (2 if hasattr(target, "run") else 4)  # a session keeps its own thread setting
        for row in rows:
            assert row.p95_ms >= row.median_ms > 0 and row.runs == 5
        assert result.median_ms(1, threads=1) == result.row(1, 1).median_ms
    assert torch.get_num_threads() == threads_before
    assert cnn.training
    assert set(export.benchmark(cnn, torch.randn(3, 1, 28, 28), threads=(1,), runs=2).as_dict()) == {"b1_t1", "b64_t1"}


def test_benchmark_restores_threads_after_an_error():
    threads_before = torch.get_num_threads()

    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        export.benchmark(Broken(), (3,), threads=(1,), runs=1, warmup=0)
    assert torch.get_num_threads() == threads_before
    with pytest.raises(ValueError, match="runs"):
        export.benchmark(Broken(), (3,), runs=0)


def test_token_and_1d_models_export(tmp_path):
    torch.manual_seed(0)

    class TokenModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(20, 16)
            self.mix = nn.Conv1d(16, 16, 3, padding=1)
            self.head = nn.Linear(16, 20)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) int64 -> (B, T, vocab)
            hidden = self.mix(self.embed(tokens).transpose(1, 2)).transpose(1, 2)  # (B, T, 16)
            return self.head(torch.relu(hidden))

    tokens = torch.randint(0, 20, (4, 12))
    model = TokenModel()
    path = export.export_onnx(model, tmp_path / "tokens.onnx", tokens, dynamic_axes={1: "sequence"})
    longer = torch.randint(0, 20, (3, 9))
    report = export.parity(model, path, longer, labels=longer)
    assert report.within(1e-4) and report.count == 27
    with pytest.raises(export.InputError, match="int64"):
        export.run_session(export.load_session(path), longer.float())
    conv1d = nn.Sequential(nn.Conv1d(3, 8, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 4))
    path = export.export_onnx(conv1d, tmp_path / "signal.onnx", torch.randn(2, 3, 64))
    assert export.parity(conv1d, path, torch.randn(5, 3, 64)).within(1e-4)


# --- errors -----------------------------------------------------------------------------------------------------------


def test_missing_empty_and_corrupt_files(tmp_path):
    with pytest.raises(export.OnnxFileError, match="does not exist"):
        export.load_session(tmp_path / "missing.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(export.OnnxFileError, match="empty"):
        export.load_session(tmp_path / "empty.onnx")
    (tmp_path / "corrupt.onnx").write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(export.OnnxFileError, match="corrupt"):
        export.load_session(tmp_path / "corrupt.onnx")
    with pytest.raises(export.OnnxFileError, match="does not exist"):
        export.model_size(tmp_path / "missing.onnx")
    with pytest.raises(export.OnnxFileError, match="does not exist"):
        export.quantize_dynamic(tmp_path / "missing.onnx", tmp_path / "int8.onnx")


def test_truncated_file_is_reported(fp32_path, tmp_path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(fp32_path.read_bytes()[: fp32_path.stat().st_size // 2])
    with pytest.raises(export.OnnxFileError, match="corrupt, truncated"):
        export.load_session(truncated)


def test_wrong_shape_and_dtype_name_what_is_expected(fp32_path):
    session = export.load_session(fp32_path)
    with pytest.raises(export.InputError, match=r"expects shape \(batch, 1, 28, 28\).*got \(2, 28, 28\)"):
        export.run_session(session, np.zeros((2, 28, 28), np.float32))
    with pytest.raises(export.InputError, match=r"expects shape .*got \(2, 3, 28, 28\)"):
        export.run_session(session, np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(export.InputError, match="expects dtype float32.*got dtype float64"):
        export.run_session(session, np.zeros((2, 1, 28, 28)))
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        export.run_session(session, [[0.0]])


def test_a_model_that_cannot_be_exported_raises_export_error(tmp_path):
    class DataDependent(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 if x.sum().item() > 0 else x  # Python control flow on a tensor value

    with pytest.raises(export.ExportError, match="could not export DataDependent"):
        export.export_onnx(DataDependent(), tmp_path / "bad.onnx", torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"\.onnx"):
        export.export_onnx(nn.Linear(3, 2), tmp_path / "model.pt", torch.randn(2, 3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        export.export_onnx(nn.Linear(3, 2), tmp_path / "model.onnx", np.zeros((2, 3), np.float32))


def test_calibration_errors(fp32_path, tmp_path):
    with pytest.raises(ValueError, match="calibration set is empty"):
        export.quantize_static(fp32_path, tmp_path / "int8.onnx", torch.empty(0, 1, 28, 28))
    with pytest.raises(ValueError, match="method must be one of"):
        export.quantize_static(fp32_path, tmp_path / "int8.onnx", torch.randn(4, 1, 28, 28), method="mse")
    with pytest.raises(export.InputError, match="expects dtype float32"):
        export.quantize_static(fp32_path, tmp_path / "int8.onnx", torch.randn(4, 1, 28, 28).double())
    with pytest.raises(ValueError, match="must differ"):
        export.quantize_dynamic(fp32_path, fp32_path)


# --- fake quantization --------------------------------------------------------------------------------------------------


def test_fake_quantize_by_hand_and_against_torch():
    x = torch.tensor([-1.0, -0.26, 0.0, 0.24, 0.26, 0.9, 5.0], requires_grad=True)
    # s = 0.5, z = 2, range [0, 7]: round(x / 0.5) + 2 = [0, 1.48->1, 2, 2.48->2, 2.52->3, 3.8->4, 12->clamp 7]
    got = export.fake_quantize(x, 0.5, 2.0, 0, 7)
    assert got.tolist() == pytest.approx([-1.0, -0.5, 0.0, 0.0, 0.5, 1.0, 2.5])
    got.sum().backward()
    assert x.grad.tolist() == [1.0] * 7  # straight-through: rounding and clipping pass the gradient unchanged
    y = torch.randn(1000, generator=torch.Generator().manual_seed(0)) * 3
    expected = torch.fake_quantize_per_tensor_affine(y, 0.05, 10, -128, 127)
    assert torch.allclose(export.fake_quantize(y, 0.05, 10.0, -128, 127), expected, atol=1e-6)


def test_weight_fake_quant_is_symmetric_int8_per_channel():
    weight = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    quantized = export.WeightFakeQuant(per_channel=True)(weight)
    scale = weight.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    integers = quantized / scale
    assert torch.allclose(integers, integers.round(), atol=1e-4) and integers.abs().max() <= 127 + 1e-4
    assert torch.allclose(quantized.abs().amax(dim=(1, 2, 3)), weight.abs().amax(dim=(1, 2, 3)))  # max|w| is on the grid
    per_tensor = export.WeightFakeQuant(per_channel=False)(weight) / (weight.abs().max() / 127)
    assert torch.allclose(per_tensor, per_tensor.round(), atol=1e-4)


def test_activation_fake_quant_range_contains_zero_and_follows_the_average():
    observer = export.ActivationFakeQuant(momentum=0.5)
    observer(torch.tensor([1.0, 3.0]))
    assert (observer.low.item(), observer.high.item()) == (0.0, 3.0)  # the range always contains 0
    observer(torch.tensor([-2.0, 5.0]))
    assert (observer.low.item(), observer.high.item()) == (-1.0, 4.0)  # halfway to (-2, 5)
    observer(torch.tensor([-100.0, 100.0]), update=False)
    assert (observer.low.item(), observer.high.item()) == (-1.0, 4.0)


def test_fake_quantization_trains_and_leaves_weights_on_the_grid():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    inputs, targets = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    with export.fake_quantization(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
        assert model[0].parametrizations.weight.original.grad is not None
    assert not hasattr(model[0], "parametrizations") and not model[0]._forward_pre_hooks
    for layer in (model[0], model[3]):
        scale = layer.weight.abs().amax(dim=tuple(range(1, layer.weight.ndim)), keepdim=True) / 127
        assert torch.allclose(layer.weight / scale, (layer.weight / scale).round(), atol=1e-3)
    with pytest.raises(ValueError, match="no Conv1d, Conv2d or Linear"):
        with export.fake_quantization(nn.ReLU()):
            pass


def test_the_subpackage_re_exports_every_public_name_and_stays_out_of_cli_and_the_domains():
    """``cu.export.<name>`` reaches every public name of onnx, quantize, qat and measure; no module of export/ imports
    cli/, and the domains import only lazily, inside the two functions that wrap a language model."""
    import ast
    import inspect
    from pathlib import Path

    for module in (export.onnx, export.quantize, export.qat, export.measure):
        defined = []  # the names the module itself defines at top level (functions, classes, constants)
        for node in ast.parse(inspect.getsource(module)).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined.append(node.name)
            elif isinstance(node, ast.Assign):
                defined += [target.id for target in node.targets if isinstance(target, ast.Name)]
        public = [name for name in defined if not name.startswith("_")]
        assert public and all(getattr(export, name) is getattr(module, name) for name in public), module.__name__
        assert set(public) <= set(export.__all__), sorted(set(public) - set(export.__all__))
    for path in Path(export.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                names = [node.module or ""] + [alias.name for alias in node.names]
                assert not any(name.split(".")[0] == "cli" for name in names), f"{path.name} imports cli/"
        top_level = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.level == 2]
        assert all(node.module in ("validate", None) and {a.name for a in node.names} <= {"validate"}
                   for node in top_level), f"{path.name} imports more than validate from the package at import time"
