"""Models: shapes, parameter ranges, hookable paths, and the shipped teacher's checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import course_utils as cu
from course_utils.checkpoints import CheckpointError


@pytest.mark.parametrize("name", ["resnet-teacher", *cu.images.models.STUDENTS, *cu.images.models.BASELINES])
def test_every_model_maps_images_to_ten_logits(name):
    model = cu.images.create(name, seed=0)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_student_family_sizes_and_names():
    assert 100_000 <= cu.evaluate.count_parameters(cu.images.create("resnet-teacher")) <= 1_000_000
    counts = {name: cu.evaluate.count_parameters(cu.images.create(name)) for name in cu.images.models.STUDENTS}
    assert list(counts.values()) == sorted(counts.values()), "students are listed smallest first"
    assert 4 <= len(counts) <= 5
    assert 1_000 <= min(counts.values()) <= 3_000 and 80_000 <= max(counts.values()) <= 120_000
    assert counts[cu.images.models.DEFAULT_STUDENT] <= 10_000
    for name, count in counts.items():  # the name is the parameter count in thousands, rounded
        assert name == f"cnn-{round(count / 1000)}k", (name, count)
    assert cu.evaluate.count_parameters(cu.images.create("logreg")) == 28 * 28 * 10 + 10


def test_parameter_count_by_hand():
    # conv 1->4 (36) + bn (8) | conv 4->8 (288) + bn (16) | conv 8->8 (576) + bn (16) | linear 8*3*3 -> 10 (730)
    model = cu.images.models.Student(cu.images.models.StudentConfig((4, 8, 8)))
    assert cu.evaluate.count_parameters(model) == 36 + 8 + 288 + 16 + 576 + 16 + 730
    assert cu.checkpoints.serialized_size(model) > 4 * cu.evaluate.count_parameters(model)


@pytest.mark.parametrize("name", list(cu.images.models.STUDENTS))
def test_students_expose_three_hookable_scales(name):
    model = cu.images.create(name, seed=0)
    widths = cu.images.models.STUDENTS[name].widths
    with cu.hooks.capture(model, ["block1", "block2", "block3"]) as features:
        model(torch.randn(2, 1, 28, 28))
    assert [tuple(features[p].shape[1:]) for p in ("block1", "block2", "block3")] == [
        (widths[0], 28, 28), (widths[1], 14, 14), (widths[2], 7, 7)]


def test_stage_paths_have_matching_resolutions():
    teacher, student = cu.images.create("resnet-teacher"), cu.images.create("cnn-9k")
    x = torch.randn(2, 1, 28, 28)
    with cu.hooks.capture(teacher, ["layer1", "layer2", "layer3"]) as t, \
            cu.hooks.capture(student, ["block1", "block2", "block3"]) as s:
        teacher(x), student(x)
    for tp, sp in zip(["layer1", "layer2", "layer3"], ["block1", "block2", "block3"]):
        assert t[tp].shape[-2:] == s[sp].shape[-2:]


def test_unknown_model_name_lists_choices():
    with pytest.raises(cu.checkpoints.UnknownModelError, match="cnn-9k.*resnet-20k.*logreg"):
        cu.images.create("resnet50")
    with pytest.raises(KeyError):  # an UnknownModelError is a KeyError
        cu.images.create("teacher")  # renamed "resnet-teacher": model names are unique across the course


def test_configs_name_every_model_create_builds():
    families = {**cu.images.models.TEACHERS, **cu.images.models.STUDENTS, **cu.images.models.DEEP_STUDENTS,
                **cu.images.models.RESIDUAL_STUDENTS, **cu.images.models.BASELINES}
    assert cu.images.CONFIGS == families and "resnet-teacher" in cu.images.CONFIGS
    assert cu.images.models.teacher_card()["model"] == cu.images.models.TEACHER_NAME == "resnet-teacher"
    for name in cu.images.CONFIGS:
        assert isinstance(cu.images.create(name), torch.nn.Module)


def test_same_seed_same_weights():
    a, b = cu.images.create("cnn-29k", seed=7), cu.images.create("cnn-29k", seed=7)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_shipped_teacher_matches_its_card(test_split):
    card = cu.images.models.teacher_card()
    teacher = cu.images.load_teacher(device="cpu")
    assert not teacher.training
    measured = cu.evaluate.accuracy(teacher, test_split.images, test_split.labels)
    assert measured == pytest.approx(card["test_accuracy"], abs=1e-4)
    assert measured >= 0.93
    cached = cu.images.models.load_teacher_logits("test")
    live = cu.evaluate.predict_logits(teacher, test_split.images[:200])
    assert torch.allclose(cached[:200], live, atol=1e-4)


def test_second_teacher_makes_a_better_ensemble(test_split):
    folder = cu.config.WEIGHTS_DIR / "fashion_teacher_seed1"  # notebook 05's second teacher
    card = cu.images.models.teacher_card(folder)
    assert card["seed"] == 1 and card["epochs"] == cu.images.models.teacher_card()["epochs"]
    first = cu.images.models.load_teacher_logits("test")
    second = cu.images.models.load_teacher_logits("test", weights_dir=folder)

    def accuracy(logits: torch.Tensor) -> float:
        return (logits.argmax(1) == test_split.labels).float().mean().item()

    assert accuracy(second) == pytest.approx(card["test_accuracy"], abs=1e-4)
    assert accuracy((first + second) / 2) > accuracy(first)  # the ensemble is the better teacher v2


@pytest.fixture
def weights_copy(tmp_path):
    folder = tmp_path / "weights"
    shutil.copytree(cu.config.WEIGHTS_DIR, folder, ignore=shutil.ignore_patterns("lm_*", "vibration_*"))
    return folder


def test_tampered_checkpoint_is_refused(weights_copy):
    card = cu.images.models.teacher_card(weights_copy)
    path = weights_copy / card["weights_file"]
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="does not match its model card"):
        cu.images.load_teacher(weights_copy)


def test_missing_or_broken_card_is_refused(weights_copy):
    card_path = weights_copy / cu.images.models.TEACHER_CARD
    card_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        cu.images.load_teacher(weights_copy)
    card_path.unlink()
    with pytest.raises(CheckpointError, match="does not exist"):
        cu.images.load_teacher(weights_copy)


def test_checkpoint_of_another_shape_is_refused(weights_copy):
    card = json.loads((weights_copy / cu.images.models.TEACHER_CARD).read_text())
    path = weights_copy / card["weights_file"]
    torch.save(cu.images.create("cnn-9k").state_dict(), path)
    card["sha256"] = cu.checkpoints.sha256(path)
    (weights_copy / cu.images.models.TEACHER_CARD).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="does not fit"):
        cu.images.load_teacher(weights_copy)
