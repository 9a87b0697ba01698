"""Notebook 03-04's students, regressors, multi-scale hints and the FitNets/AT runs of cu.images.feature_kd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import course_utils as cu

# --- the feature-distillation students ---


@pytest.mark.parametrize("name", [*cu.images.models.DEEP_STUDENTS, *cu.images.models.RESIDUAL_STUDENTS])
def test_feature_students_are_named_by_their_parameter_count(name):
    model = cu.images.create(name, seed=0)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    family = name.rsplit("-", 1)[0]
    assert name == f"{family}-{round(cu.evaluate.count_parameters(model) / 1000)}k"


def test_feature_students_leave_the_course_family_alone():
    assert list(cu.images.models.STUDENTS) == ["cnn-2k", "cnn-5k", "cnn-9k", "cnn-29k", "cnn-104k"]
    assert cu.images.models.DEFAULT_STUDENT == "cnn-9k"
    assert not set(cu.images.models.DEEP_STUDENTS) & set(cu.images.models.STUDENTS)
    default = cu.images.create("cnn-9k")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in default.modules()), "the default student keeps batch norm"


def test_deep_student_is_deeper_and_thinner_than_the_teacher_without_batch_norm():
    teacher = cu.images.create("resnet-teacher")
    for name in cu.images.models.DEEP_STUDENTS:
        deep = cu.images.create(name)
        convs = [m for m in deep.modules() if isinstance(m, torch.nn.Conv2d)]
        teacher_convs = [m for m in teacher.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
        assert len(convs) > len(teacher_convs)
        assert max(c.out_channels for c in convs) < min(c.out_channels for c in teacher_convs) * 2
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deep.modules())
        with cu.hooks.capture(deep, ["block1", "block2", "block3", "block2.relu3"]) as features:
            deep(torch.randn(2, 1, 28, 28))
        assert [features[p].shape[-1] for p in ("block1", "block2", "block3", "block2.relu3")] == [28, 14, 7, 14]


def test_residual_student_has_the_teachers_paths_and_resolutions():
    teacher = cu.images.create("resnet-teacher")
    for name in cu.images.models.RESIDUAL_STUDENTS:
        student = cu.images.create(name)
        assert isinstance(student, type(teacher))
        assert cu.evaluate.count_parameters(student) < cu.evaluate.count_parameters(teacher) / 10
        x = torch.randn(2, 1, 28, 28)
        with cu.hooks.capture(student, ["layer1", "layer2", "layer3"]) as s, \
                cu.hooks.capture(teacher, ["layer1", "layer2", "layer3"]) as t:
            student(x), teacher(x)
        assert all(s[p].shape[-2:] == t[p].shape[-2:] for p in s)


def test_unknown_name_lists_the_new_students_too():
    with pytest.raises(KeyError, match="deep-cnn-33k"):
        cu.images.create("deep-cnn-1k")


# --- the spatial adapter (Resize / HintRegressor with teacher_size) ---


def test_resize_pools_to_shrink_and_interpolates_to_grow():
    features = torch.arange(16.0).view(1, 1, 4, 4)
    pooled = cu.losses.Resize((2, 2))(features)
    assert torch.equal(pooled, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))  # 2x2 block means, by hand
    grown = cu.losses.Resize((8, 8))(torch.ones(2, 3, 4, 4))
    assert grown.shape == (2, 3, 8, 8) and torch.allclose(grown, torch.ones(2, 3, 8, 8))
    assert cu.losses.Resize((4, 4))(features) is features


@pytest.mark.parametrize("student_size, teacher_size", [(14, 7), (7, 14), (28, 14), (14, 14)])
def test_hint_regressor_maps_student_maps_onto_the_teachers_shape(student_size, teacher_size):
    regressor = cu.losses.HintRegressor(16, 64, teacher_size=(teacher_size, teacher_size))
    out = regressor(torch.randn(3, 16, student_size, student_size))
    assert out.shape == (3, 64, teacher_size, teacher_size)
    teacher = torch.randn(3, 64, teacher_size, teacher_size)
    loss = cu.losses.hint_loss(torch.randn(3, 16, student_size, student_size, requires_grad=True), teacher,
                               adapter=regressor)
    loss.backward()
    assert regressor.conv1.weight.grad is not None


def test_hint_regressor_resizes_before_its_convolution():
    # a 1x1 conv with weight 1 and bias 0 is the identity on one channel, so the output is the plain 2x2 average
    regressor = cu.losses.HintRegressor(1, 1, teacher_size=(2, 2), kernel_size=1)
    with torch.no_grad():
        regressor.conv1.weight.fill_(1.0), regressor.conv1.bias.zero_()
    features = torch.randn(2, 1, 4, 4)
    assert torch.allclose(regressor(features), F.avg_pool2d(features, 2), atol=1e-6)


def test_hint_regressor_without_teacher_size_refuses_a_resolution_mismatch():
    regressor = cu.losses.HintRegressor(16, 64)
    with pytest.raises(ValueError, match="resolution mismatch"):
        cu.losses.hint_loss(torch.randn(2, 16, 14, 14), torch.randn(2, 64, 7, 7), adapter=regressor)


def test_resize_rejects_a_bad_size():
    with pytest.raises(ValueError, match="height, width"):
        cu.losses.Resize((0, 7))


# --- progressive widths ---


def test_progressive_widths_are_geometric_and_end_at_the_teacher():
    assert cu.losses.progressive_widths(16, 64, 1) == [16, 64]
    assert cu.losses.progressive_widths(16, 64, 2) == [16, 32, 64]
    assert cu.losses.progressive_widths(8, 64, 3) == [8, 16, 32, 64]
    with pytest.raises(ValueError, match="steps"):
        cu.losses.progressive_widths(16, 64, 0)


def test_progressive_regressor_widens_in_steps():
    regressor = cu.losses.HintRegressor(16, 64, steps=2)
    convs = [m for m in regressor.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(16, 32), (32, 64)]
    assert any(isinstance(m, torch.nn.ReLU) for m in regressor.modules())
    assert regressor(torch.randn(2, 16, 14, 14)).shape == (2, 64, 14, 14)


# --- multi-scale hint loss ---


def test_multi_scale_hint_loss_is_the_weighted_sum_of_single_hints():
    torch.manual_seed(0)
    students = [torch.randn(2, 4, 14, 14), torch.randn(2, 8, 7, 7)]
    teachers = [torch.randn(2, 6, 14, 14), torch.randn(2, 12, 7, 7)]
    regressors = [cu.losses.HintRegressor(4, 6), cu.losses.HintRegressor(8, 12)]
    singles = [cu.losses.hint_loss(s, t, adapter=r) for s, t, r in zip(students, teachers, regressors)]
    assert cu.losses.multi_scale_hint_loss(students, teachers, regressors).item() == pytest.approx(
        (singles[0] + singles[1]).item() / 2, rel=1e-6)
    weighted = cu.losses.multi_scale_hint_loss(students, teachers, regressors, weights=[1.0, 3.0])
    assert weighted.item() == pytest.approx((singles[0] + 3 * singles[1]).item(), rel=1e-6)


def test_multi_scale_hint_loss_checks_its_pairs():
    with pytest.raises(ValueError, match="one regressor per student map"):
        cu.losses.multi_scale_hint_loss([torch.randn(1, 2, 3, 3)], [torch.randn(1, 2, 3, 3)], [])
    with pytest.raises(ValueError, match="weights"):
        cu.losses.multi_scale_hint_loss([torch.randn(1, 2, 3, 3)], [torch.randn(1, 2, 3, 3)], [None], weights=[-1.0])


# --- cu.images.feature_kd ---


def test_cache_features_matches_a_live_forward_and_restores_the_mode():
    teacher = cu.images.create("resnet-teacher", seed=0).train()
    images = torch.randn(7, 1, 28, 28)
    cached = cu.images.feature_kd.cache_features(teacher, images, ["layer2", "layer3"], dtype=torch.float32, batch_size=3)
    teacher.eval()
    with torch.no_grad(), cu.hooks.capture(teacher, ["layer2"]) as live:
        teacher(images)
    assert cached[0].shape == (7, 64, 14, 14) and cached[1].shape == (7, 128, 7, 7)
    assert torch.allclose(cached[0], live["layer2"], atol=1e-5)
    teacher.train()
    cu.images.feature_kd.cache_features(teacher, images, ["layer2"])
    assert teacher.training
    with pytest.raises(ValueError, match="empty"):
        cu.images.feature_kd.cache_features(teacher, images[:0], ["layer2"])


def test_run_until_stops_after_the_path_and_removes_its_hook():
    student = cu.images.create("deep-cnn-33k", seed=0)
    seen = []
    handle = student.head.register_forward_hook(lambda *args: seen.append("head"))
    with cu.hooks.capture(student, ["block2"]) as features:
        cu.images.feature_kd.run_until(student, torch.randn(2, 1, 28, 28), "block2")
    assert features["block2"].shape == (2, 16, 14, 14) and seen == []
    student(torch.randn(2, 1, 28, 28))  # the stop hook is gone: a full forward pass reaches the head
    assert seen == ["head"]
    handle.remove()


def test_hint_step_trains_only_the_guided_layers_and_the_regressor():
    student = cu.images.create("deep-cnn-33k", seed=0)
    regressor = cu.losses.HintRegressor(16, 64)
    batch = (torch.randn(4, 1, 28, 28), torch.zeros(4, dtype=torch.long), torch.randn(4, 10),
             torch.randn(4, 64, 14, 14).half())
    loss = cu.images.feature_kd.hint_step(["block2"], [regressor])(student, batch)
    loss.backward()
    assert student.block1.conv1.weight.grad is not None and regressor.conv1.weight.grad is not None
    assert student.block3.conv1.weight.grad is None and student.head.weight.grad is None


def test_train_fitnets_refuses_a_stage_without_steps(small_train):
    student = cu.images.create("deep-cnn-33k", seed=0)
    with pytest.raises(ValueError, match="hint_steps"):
        cu.images.feature_kd.train_fitnets(student, small_train, small_train, torch.zeros(len(small_train), 10), [],
                                           ["block2"], [], hint_steps=10, total_steps=10, seed=0)


def test_at_step_adds_the_papers_term_to_kd():
    torch.manual_seed(0)
    student = cu.images.create("resnet-20k", seed=0)
    images, labels, logits = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,)), torch.randn(4, 10)
    maps = [F.normalize(torch.rand(4, 14 * 14), dim=1)]
    student.eval()  # batch norm in eval mode: two forward passes give the same outputs
    with_at = cu.images.feature_kd.at_step(["layer2"], beta=1000.0)(student, (images, labels, logits, *maps))
    without = cu.images.feature_kd.at_step([], beta=1000.0)(student, (images, labels, logits))
    with cu.hooks.capture(student, ["layer2"]) as features:
        student(images)
    term = (cu.losses.attention_map(features["layer2"]) - maps[0]).pow(2).mean()
    assert with_at.item() == pytest.approx(without.item() + 500.0 * term.item(), rel=1e-5)


def test_feature_sweep_smoke_run_writes_every_arm(tmp_path):
    from course_utils.cli import feature_sweep

    out = tmp_path / "sweep.json"
    result = feature_sweep.main(["--seeds", "2", "--train-subset", "256", "--epochs", "1", "--sections", "default",
                                 "--out", str(out)])
    assert out.is_file() and result["seeds"] == [100, 101]
    assert result["default"]["budget"] == {"train_subset": 256, "epochs": 1, "total_steps": 4, "hint_steps": 1}
    arms = result["default"]["arms"]
    assert list(arms) == ["scratch", "KD", "FitNets direct + KD", "AT + KD", "AT", "AT + KD (beta 100)", "AT (beta 100)"]
    assert all(len(arm["values"]) == 2 and 0.0 <= arm["mean"] <= 1.0 for arm in arms.values())
    assert cu.images.feature_kd.load_sweep(out)["command"].startswith("python -m course_utils.cli.feature_sweep")
    with pytest.raises(SystemExit):
        feature_sweep.main(["--seeds", "1", "--out", str(out)])


def test_feature_sweep_merge_refuses_parts_with_different_settings(tmp_path):
    from course_utils.cli import feature_sweep

    part = {"command": "python -m course_utils.cli.feature_sweep --sections deep", "teacher_card": {"sha256": "a"},
            "settings": {"test_images": 10000}, "deep": {"budget": {"epochs": 16}, "arms": {}}, "wall_seconds": 5.0}
    other = {**part, "command": "python -m course_utils.cli.feature_sweep --sections residual",
             "residual": {"budget": {"epochs": 48}, "arms": {}}, "wall_seconds": 7.0}  # sections' budgets may differ
    del other["deep"]
    paths = [cu.report.write_precomputed(tmp_path / name, data) for name, data in (("a.json", part), ("b.json", other))]
    merged = feature_sweep.merge(paths, tmp_path / "merged.json")
    assert {"deep", "residual"} <= set(merged) and merged["residual"]["budget"] == {"epochs": 48}
    assert merged["wall_seconds"] == 7.0 and merged["part_wall_seconds"] == [5.0, 7.0]
    cu.report.write_precomputed(tmp_path / "b.json", {**other, "settings": {"test_images": 2000}})
    with pytest.raises(ValueError, match="different settings"):
        feature_sweep.merge(paths, tmp_path / "bad.json")
    with pytest.raises(ValueError, match="both hold the section"):
        feature_sweep.merge([paths[0], paths[0]], tmp_path / "bad.json")
