"""Notebook 05's schedules built from the course recipes, teacher v1 (classes removed) and ensembles."""

from __future__ import annotations

import pytest
import torch

import course_utils as cu
from course_utils.cli import schedule_sweep


def test_flat_kd_is_the_course_recipe_for_every_step():
    plan = cu.images.recipes.flat_kd(50)
    assert plan.boundaries == [(0, 50)]
    kd = cu.images.recipes.KD
    assert plan.value("alpha", 0) == kd["alpha"] and plan.value("temperature", 49) == kd["temperature"]
    assert plan.lr(0) == pytest.approx(cu.images.recipes.TRAINING["lr"]) and plan.lr(49) < plan.lr(0) / 100
    scratch = cu.images.recipes.flat_kd(50, alpha=0.0)
    assert scratch.value("alpha", 10) == 0.0 and scratch.phases[0].name == "scratch"


def test_warmup_distill_finetune_phases():
    plan = cu.images.recipes.warmup_distill_finetune(100)
    assert [p.name for p in plan.phases] == ["warmup", "distill", "finetune"]
    assert plan.boundaries == [(0, 20), (20, 90), (90, 100)]
    lr = cu.images.recipes.TRAINING["lr"]
    assert plan.lr(0) == pytest.approx(lr / 10) and plan.lr(20) == pytest.approx(lr)
    assert plan.value("alpha", 5) == 0.0 and plan.value("alpha", 50) == cu.images.recipes.KD["alpha"]
    assert plan.value("alpha", 95) == 0.0 and plan.phases[0].order == "curriculum"
    assert cu.images.recipes.warmup_distill_finetune(100, curriculum=False).phases[0].order == "random"
    assert [p.name for p in cu.images.recipes.warmup_distill_finetune(100, warmup=0.0, finetune=0.0).phases] == ["distill"]


def test_phase_kd_step_switches_the_loss_with_the_phase():
    torch.manual_seed(0)
    plan = cu.images.recipes.warmup_distill_finetune(10)
    model = cu.images.create("cnn-2k", seed=0).eval()
    images, labels, logits = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,)), torch.randn(4, 10)
    loss = cu.schedule.phase_kd_step(plan)
    warmup = loss(model, (images, labels, logits, torch.tensor(0)))
    distill = loss(model, (images, labels, logits, torch.tensor(5)))
    assert warmup.item() == pytest.approx(torch.nn.functional.cross_entropy(model(images), labels).item(), rel=1e-5)
    expected = cu.losses.kd_loss(model(images), logits, labels, **cu.images.recipes.KD)
    assert distill.item() == pytest.approx(expected.item(), rel=1e-5)


def test_without_classes_gives_the_unseen_classes_zero_probability():
    logits = torch.tensor([[2.0, 1.0, 0.5], [0.0, 3.0, -1.0]])
    masked = cu.schedule.without_classes(logits, [1])
    for temperature in (1.0, 4.0, 20.0):
        probabilities = cu.losses.soft_targets(masked, temperature)
        assert torch.all(probabilities[:, 1] == 0)
        seen = cu.losses.soft_targets(logits[:, [0, 2]], temperature)  # renormalised over the seen classes
        assert torch.allclose(probabilities[:, [0, 2]], seen)
    assert torch.equal(logits, torch.tensor([[2.0, 1.0, 0.5], [0.0, 3.0, -1.0]])), "the input is not modified"
    student = torch.randn(2, 3, requires_grad=True)
    loss = cu.losses.kd_loss(student, masked, None, temperature=4.0, alpha=1.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


def test_without_classes_rejects_bad_classes():
    with pytest.raises(ValueError, match="distinct indices"):
        cu.schedule.without_classes(torch.zeros(2, 3), [3])
    with pytest.raises(ValueError, match="at least one"):
        cu.schedule.without_classes(torch.zeros(2, 3), [0, 1, 2])


def test_ensemble_logits_average_and_check_shapes():
    a, b = torch.tensor([[1.0, 3.0]]), torch.tensor([[3.0, -1.0]])
    assert torch.equal(cu.schedule.ensemble_logits(a, b), torch.tensor([[2.0, 1.0]]))
    with pytest.raises(ValueError, match="at least two"):
        cu.schedule.ensemble_logits(a)
    with pytest.raises(ValueError, match="same shape"):
        cu.schedule.ensemble_logits(a, torch.zeros(2, 2))


def test_schedule_sweep_arms_share_budget_and_batches(small_train, test_split):
    logits = cu.images.models.load_teacher_logits("train")[small_train.index]
    assert [schedule_sweep.arm_schedule(arm, 40).total_steps for arm in schedule_sweep.ARMS] == [40] * 4
    with pytest.raises(KeyError, match="unknown arm"):
        schedule_sweep.arm_schedule("cosine", 40)
    accuracy = schedule_sweep.run_arm("3-phase, curriculum", 10, small_train, logits, test_split, seed=0, student="cnn-2k")
    assert 0.0 <= accuracy <= 1.0


def test_schedule_sweep_smoke_run(tmp_path):
    out = tmp_path / "budgets.json"
    result = schedule_sweep.main(["--seeds", "2", "--train-subset", "300", "--budgets", "10", "--out", str(out)])
    assert [row["steps"] for row in result["rows"]] == [10]
    assert all(len(result["rows"][0][arm]["values"]) == 2 for arm in schedule_sweep.ARMS)
    assert cu.schedule.load_sweep(out)["kd"] == dict(cu.images.recipes.KD)
    with pytest.raises(FileNotFoundError, match="schedule_sweep"):
        cu.schedule.load_sweep(tmp_path / "missing.json")
