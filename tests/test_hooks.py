"""Forward hooks by module path: captured values, handle removal, nesting, exceptions, bad paths."""

from __future__ import annotations

import pytest
import torch

import course_utils as cu


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(module._forward_hooks) for module in model.modules())


@pytest.fixture
def student() -> torch.nn.Module:
    return cu.images.create("cnn-2k", seed=0).eval()


def test_capture_returns_the_layer_outputs(student):
    images = torch.randn(2, 1, 28, 28)
    with cu.hooks.capture(student, ["block1", "block2", "block3"]) as features:
        logits = student(images)
    block1 = student.block1(images)
    block2 = student.block2(block1)
    block3 = student.block3(block2)
    assert list(features) == ["block1", "block2", "block3"]
    assert torch.equal(features["block1"], block1)
    assert torch.equal(features["block2"], block2)
    assert torch.equal(features["block3"], block3)
    assert features["block2"].shape == (2, 8, 14, 14)
    assert torch.allclose(logits, student.head(student.pool(block3).flatten(1)), atol=1e-6)


def test_capture_of_a_nested_path_and_a_single_string(student):
    images = torch.randn(1, 1, 28, 28)
    with cu.hooks.capture(student, "block2.conv1") as features:
        student(images)
    expected = student.block2.conv1(student.block2.pool(student.block1(images)))
    assert torch.equal(features["block2.conv1"], expected)


def test_handles_are_removed_on_exit(student):
    with cu.hooks.capture(student, ["block1", "block3"]) as features:
        assert _hook_count(student) == 2
        student(torch.randn(1, 1, 28, 28))
    assert _hook_count(student) == 0
    features.clear()
    student(torch.randn(1, 1, 28, 28))
    assert features == {}, "a forward pass after the block must not fill the dict"


def test_handles_are_removed_after_an_exception(student):
    with pytest.raises(RuntimeError, match="boom"):
        with cu.hooks.capture(student, ["block1", "block2"]):
            student(torch.randn(1, 1, 28, 28))
            raise RuntimeError("boom")
    assert _hook_count(student) == 0


def test_handles_are_removed_when_the_forward_pass_fails(student):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("a layer failed")

    student.block2 = Broken()  # block1's hook has fired when block2 raises
    with pytest.raises(RuntimeError, match="a layer failed"):
        with cu.hooks.capture(student, ["block1"]):
            student(torch.randn(1, 1, 28, 28))
    assert _hook_count(student) == 0
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):  # a wrong channel count is named before any layer runs
        student(torch.randn(1, 3, 28, 28))


def test_nested_captures_fill_their_own_dicts(student):
    images = torch.randn(2, 1, 28, 28)
    with cu.hooks.capture(student, ["block1"]) as outer:
        with cu.hooks.capture(student, ["block1", "block3"]) as inner:
            student(images)
            assert _hook_count(student) == 3
        assert _hook_count(student) == 1  # the inner block removed only its own handles
        assert set(inner) == {"block1", "block3"}
        assert torch.equal(outer["block1"], inner["block1"])
        student(images * 2)
    assert _hook_count(student) == 0
    assert not torch.equal(outer["block1"], inner["block1"]), "the outer capture kept recording after the inner one"


def test_bad_path_lists_the_valid_paths_and_registers_nothing(student):
    with pytest.raises(KeyError) as info:
        with cu.hooks.capture(student, ["block1", "layer2"]):
            pass
    message = str(info.value)
    assert "'layer2'" in message
    for path in ("block1", "block2", "block3", "head", "block2.conv1"):
        assert path in message
    assert _hook_count(student) == 0


def test_resolve_and_module_paths():
    teacher = cu.images.create("resnet-teacher", seed=0)
    paths = cu.hooks.module_paths(teacher)
    assert {"stem", "layer1", "layer2", "layer3", "fc"} <= set(paths)
    assert "" not in paths
    assert cu.hooks.resolve(teacher, "layer2") is teacher.layer2
    with pytest.raises(KeyError, match="Valid paths"):
        cu.hooks.resolve(teacher, "layer4")


def test_student_features_keep_gradients_and_detach_drops_them(student):
    images = torch.randn(2, 1, 28, 28)
    with cu.hooks.capture(student, ["block2"]) as features:
        student(images)
    assert features["block2"].requires_grad
    features["block2"].pow(2).mean().backward()
    assert student.block1.conv1.weight.grad is not None
    with cu.hooks.capture(student, ["block2"], detach=True) as detached:
        student(images)
    assert not detached["block2"].requires_grad


def test_last_forward_pass_wins(student):
    first, second = torch.randn(1, 1, 28, 28), torch.randn(1, 1, 28, 28)
    with cu.hooks.capture(student, ["block3"]) as features:
        student(first)
        student(second)
    assert torch.equal(features["block3"], student.block3(student.block2(student.block1(second))))


def test_detached_capture_of_a_module_returning_a_tuple():
    class Pair(torch.nn.Module):
        def forward(self, x):
            return x * 2, x + 1

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), Pair())
    with cu.hooks.capture(model, ["1"], detach=True) as captured:
        model(torch.ones(1, 2))
    doubled, shifted = captured["1"]
    assert not doubled.requires_grad and not shifted.requires_grad


def test_even_adapter_kernel_is_refused():
    with pytest.raises(ValueError, match="odd"):
        cu.losses.HintAdapter(8, 16, kernel_size=2)
