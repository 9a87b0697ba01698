"""Feature losses: FitNets' hint loss and attention transfer, against hand-computed values and the papers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import course_utils as cu

# --- hint loss (Romero et al. 2015) ---


def test_hint_loss_by_hand():
    student = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
    teacher = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2)
    # ((1 - 0)^2 + (3 - 1)^2) / 2 elements
    assert cu.losses.hint_loss(student, teacher).item() == pytest.approx(2.5)


def test_hint_loss_is_the_papers_squared_error_per_element():
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 5, 4, 4), torch.randn(3, 5, 4, 4)
    half_squared_norm = 0.5 * (teacher - student).pow(2).sum()  # the paper's 1/2 ||u_h - r(v_g)||^2
    expected = 2 * half_squared_norm / student.numel()
    assert cu.losses.hint_loss(student, teacher).item() == pytest.approx(expected.item(), rel=1e-5)


def test_hint_loss_applies_the_adapter_and_trains_it_not_the_teacher():
    torch.manual_seed(0)
    adapter = cu.losses.HintAdapter(4, 6)
    student = torch.randn(2, 4, 7, 7, requires_grad=True)
    teacher = torch.randn(2, 6, 7, 7, requires_grad=True)
    loss = cu.losses.hint_loss(student, teacher, adapter=adapter)
    assert loss.item() == pytest.approx(F.mse_loss(adapter(student), teacher).item(), rel=1e-6)
    loss.backward()
    assert student.grad is not None and adapter[0].weight.grad is not None
    assert teacher.grad is None, "the teacher's hint is a fixed target"


def test_hint_adapter_shapes():
    assert cu.losses.HintAdapter(8, 64)(torch.randn(2, 8, 14, 14)).shape == (2, 64, 14, 14)
    regressor = cu.losses.HintAdapter(8, 64, kernel_size=3)
    assert regressor(torch.randn(2, 8, 14, 14)).shape == (2, 64, 14, 14)
    assert regressor[0].weight.shape == (64, 8, 3, 3)


def test_hint_loss_width_mismatch_suggests_an_adapter():
    with pytest.raises(ValueError, match=r"HintAdapter\(8, 64\)"):
        cu.losses.hint_loss(torch.randn(2, 8, 14, 14), torch.randn(2, 64, 14, 14))


def test_hint_loss_resolution_mismatch_needs_align():
    student, teacher = torch.randn(2, 4, 14, 14), torch.randn(2, 4, 7, 7)
    with pytest.raises(ValueError, match="align=True"):
        cu.losses.hint_loss(student, teacher)
    expected = F.mse_loss(F.avg_pool2d(student, 2), teacher)  # 14 -> 7 by 2x2 averages
    assert cu.losses.hint_loss(student, teacher, align=True).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("student_shape, teacher_shape", [((2, 4, 7), (2, 4, 7, 7)), ((3, 4, 7, 7), (2, 4, 7, 7))])
def test_hint_loss_rejects_bad_shapes(student_shape, teacher_shape):
    with pytest.raises(ValueError):
        cu.losses.hint_loss(torch.randn(*student_shape), torch.randn(*teacher_shape))


def test_align_spatial_by_hand():
    features = torch.arange(16.0).view(1, 1, 4, 4)
    pooled = cu.losses.align_spatial(features, (2, 2))
    assert pooled.view(-1).tolist() == [2.5, 4.5, 10.5, 12.5]  # means of the four 2x2 blocks
    assert cu.losses.align_spatial(features, (4, 4)) is features
    grown = cu.losses.align_spatial(torch.ones(1, 3, 2, 2), (5, 5))
    assert grown.shape == (1, 3, 5, 5) and torch.allclose(grown, torch.ones_like(grown))


# --- attention transfer (Zagoruyko and Komodakis 2017) ---


def test_attention_map_by_hand():
    # two channels over two positions: A_0 = [1, 2], A_1 = [3, 0]
    features = torch.tensor([[1.0, 2.0], [3.0, 0.0]]).view(1, 2, 1, 2)
    # mean_c A_c^2 = [(1 + 9) / 2, (4 + 0) / 2] = [5, 2], L2-normalised: [5, 2] / sqrt(29)
    expected = torch.tensor([[5.0, 2.0]]) / math.sqrt(29)
    assert torch.allclose(cu.losses.attention_map(features), expected)


def test_attention_map_uses_absolute_values_for_odd_p():
    features = torch.tensor([[-1.0, 2.0], [3.0, 0.0]]).view(1, 2, 1, 2)
    # p = 1: mean_c |A_c| = [2, 1] -> [2, 1] / sqrt(5)
    expected = torch.tensor([[2.0, 1.0]]) / math.sqrt(5)
    assert torch.allclose(cu.losses.attention_map(features, p=1), expected)


def test_attention_map_shape_norm_and_scale_invariance():
    torch.manual_seed(0)
    features = torch.randn(3, 16, 7, 7)
    maps = cu.losses.attention_map(features)
    assert maps.shape == (3, 49)
    assert torch.allclose(maps.norm(dim=1), torch.ones(3))
    assert torch.allclose(cu.losses.attention_map(5 * features), maps, atol=1e-6)


def _authors_at_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The authors' code (github.com/szagoruyko/attention-transfer, utils.py), p = 2."""
    def at(z):
        return F.normalize(z.pow(2).mean(1).view(z.size(0), -1))
    return (at(x) - at(y)).pow(2).mean()


def test_at_loss_by_hand():
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0]]).view(1, 2, 1, 2)  # map [1, 0]
    teacher = torch.tensor([[0.0, 2.0], [0.0, 0.0]]).view(1, 2, 1, 2)  # map [0, 1]
    # ((1 - 0)^2 + (0 - 1)^2) / (1 example * 2 positions) = 1
    assert cu.losses.at_loss(student, teacher).item() == pytest.approx(1.0)


def test_at_loss_matches_the_authors_code_with_different_widths():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 8, 14, 14), torch.randn(4, 64, 14, 14)
    assert cu.losses.at_loss(student, teacher).item() == pytest.approx(_authors_at_loss(student, teacher).item(), rel=1e-5)


def test_at_loss_is_zero_for_proportional_features_and_does_not_train_the_teacher():
    torch.manual_seed(0)
    teacher = torch.rand(2, 4, 7, 7, requires_grad=True)
    student = (3 * teacher).detach().requires_grad_()
    loss = cu.losses.at_loss(student, teacher)
    assert loss.item() == pytest.approx(0.0, abs=1e-10)
    cu.losses.at_loss(torch.randn(2, 4, 7, 7, requires_grad=True), teacher).backward()
    assert teacher.grad is None


def test_at_loss_resolution_mismatch():
    student, teacher = torch.randn(2, 4, 14, 14), torch.randn(2, 8, 7, 7)
    with pytest.raises(ValueError, match="align=True"):
        cu.losses.at_loss(student, teacher)
    expected = _authors_at_loss(F.avg_pool2d(student, 2), teacher)
    assert cu.losses.at_loss(student, teacher, align=True).item() == pytest.approx(expected.item(), rel=1e-5)


def test_attention_errors():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        cu.losses.attention_map(torch.randn(4, 49))
    with pytest.raises(ValueError, match="p must be > 0"):
        cu.losses.attention_map(torch.randn(1, 2, 3, 3), p=0)
    with pytest.raises(ValueError, match="batch sizes differ"):
        cu.losses.at_loss(torch.randn(2, 4, 7, 7), torch.randn(3, 4, 7, 7))


def test_capture_and_losses_together():
    """The course's pattern: hook the student (with gradients) and the teacher (under no_grad)."""
    student, teacher = cu.images.create("cnn-2k", seed=0), cu.images.create("resnet-teacher", seed=0).eval()
    adapter = cu.losses.HintAdapter(8, 64)
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad(), cu.hooks.capture(teacher, ["layer2"]) as teacher_features:
        teacher(images)
    with cu.hooks.capture(student, ["block2"]) as student_features:
        student(images)
    loss = (cu.losses.hint_loss(student_features["block2"], teacher_features["layer2"], adapter=adapter)
            + cu.losses.at_loss(student_features["block2"], teacher_features["layer2"]))
    loss.backward()
    assert student.block1.conv1.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
