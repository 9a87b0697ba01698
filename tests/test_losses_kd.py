"""soft_targets and kd_loss against hand-computed values, their limits, gradient scaling and error paths."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
import torch.nn.functional as F

import course_utils as cu
from course_utils.cli import kd_sweep

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)


# --- soft_targets ---------------------------------------------------------------------------------
def test_soft_targets_hand_computed_at_t1_and_t2():
    logits = torch.tensor([0.0, LN2, LN4])  # exp -> 1, 2, 4
    assert torch.allclose(cu.losses.soft_targets(logits, 1.0), torch.tensor([1, 2, 4]) / 7.0)
    # T = 2: exp(z / 2) -> 1, sqrt(2), 2
    expected = torch.tensor([1.0, math.sqrt(2), 2.0]) / (3.0 + math.sqrt(2))
    assert torch.allclose(cu.losses.soft_targets(logits, 2.0), expected)


def test_soft_targets_limits_and_invariances():
    logits = torch.tensor([[3.0, 1.0, -2.0, 0.5]])
    assert torch.allclose(cu.losses.soft_targets(logits, 1.0), torch.softmax(logits, -1))  # T = 1 is softmax
    assert torch.allclose(cu.losses.soft_targets(logits, 1e6), torch.full((1, 4), 0.25), atol=1e-5)  # T -> inf: uniform
    assert torch.allclose(cu.losses.soft_targets(logits, 1e-3), F.one_hot(torch.tensor([0]), 4).float())  # T -> 0: arg-max
    assert torch.allclose(cu.losses.soft_targets(logits + 100.0, 3.0), cu.losses.soft_targets(logits, 3.0))  # shift


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan")])
def test_soft_targets_rejects_non_positive_temperature(temperature):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        cu.losses.soft_targets(torch.zeros(2, 10), temperature)


def test_soft_targets_rejects_logits_without_class_axis():
    with pytest.raises(ValueError, match="class axis"):
        cu.losses.soft_targets(torch.tensor(1.0), 2.0)
    with pytest.raises(ValueError, match="class axis"):
        cu.losses.soft_targets(torch.zeros(4, 1), 2.0)


# --- kd_loss: values ------------------------------------------------------------------------------
STUDENT = torch.tensor([[0.0, 0.0]])  # q = (1/2, 1/2) at any T
TEACHER = torch.tensor([[LN3, 0.0]])  # p = (3/4, 1/4) at T = 1
LABEL = torch.tensor([0])
KL_T1 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL(p || q) by hand
CE = math.log(2)  # -log q_0 at T = 1


def test_kd_loss_alpha_zero_is_cross_entropy():
    assert cu.losses.kd_loss(STUDENT, TEACHER, LABEL, temperature=4.0, alpha=0.0).item() == pytest.approx(CE)


def test_kd_loss_alpha_one_at_t1_is_kl():
    assert cu.losses.kd_loss(STUDENT, TEACHER, LABEL, temperature=1.0, alpha=1.0).item() == pytest.approx(KL_T1)
    assert cu.losses.kd_loss(STUDENT, TEACHER, None, temperature=1.0, alpha=1.0).item() == pytest.approx(KL_T1)


def test_kd_loss_mixture_at_t2_with_t_squared():
    # T = 2: teacher exp(z / 2) -> (sqrt 3, 1), p = (sqrt3, 1) / (sqrt3 + 1)
    p0 = math.sqrt(3) / (math.sqrt(3) + 1)
    kl_t2 = p0 * math.log(p0 / 0.5) + (1 - p0) * math.log((1 - p0) / 0.5)
    expected = 0.7 * CE + 0.3 * 4.0 * kl_t2  # alpha weights the soft term; T^2 = 4
    assert cu.losses.kd_loss(STUDENT, TEACHER, LABEL, temperature=2.0, alpha=0.3).item() == pytest.approx(expected)


def test_kd_loss_is_a_batch_mean_and_zero_when_student_equals_teacher():
    student = torch.tensor([[0.0, 0.0], [LN3, 0.0]])
    teacher = torch.tensor([[LN3, 0.0], [LN3, 0.0]])  # row 2: student == teacher, KL = 0
    loss = cu.losses.kd_loss(student, teacher, None, temperature=1.0, alpha=1.0)
    assert loss.item() == pytest.approx(KL_T1 / 2)
    same = torch.randn(5, 10)
    assert cu.losses.kd_loss(same, same.clone(), None, temperature=3.0, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_matches_the_notebook_formula_and_leading_axes():
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 5, 10, generator=generator), torch.randn(3, 5, 10, generator=generator)
    targets = torch.randint(0, 10, (3, 5), generator=generator)
    flat = cu.losses.kd_loss(student.reshape(15, 10), teacher.reshape(15, 10), targets.reshape(15), 3.0, 0.6)
    assert cu.losses.kd_loss(student, teacher, targets, 3.0, 0.6).item() == pytest.approx(flat.item())
    # the written-out formula: (1 - a) CE + a T^2 mean_b sum_c p log(p / q)
    p, log_q = torch.softmax(teacher / 3.0, -1), torch.log_softmax(student / 3.0, -1)
    kl = (p * (p.log() - log_q)).sum(-1).mean()
    expected = 0.4 * F.cross_entropy(student.reshape(15, 10), targets.reshape(15)) + 0.6 * 9.0 * kl
    assert flat.item() == pytest.approx(expected.item(), rel=1e-5)


# --- kd_loss: gradients ---------------------------------------------------------------------------
def _soft_grad(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    student = student.clone().requires_grad_(True)
    cu.losses.kd_loss(student, teacher, None, temperature=temperature, alpha=1.0).backward()
    return student.grad


def test_soft_gradient_is_t_times_q_minus_p_over_batch():
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(4, 10, generator=generator), torch.randn(4, 10, generator=generator) * 3
    for temperature in (1.0, 2.5, 8.0):
        q, p = torch.softmax(student / temperature, -1), torch.softmax(teacher / temperature, -1)
        # d/dz of T^2 * KL / B  =  T^2 * (1/T) (q - p) / B
        assert torch.allclose(_soft_grad(student, teacher, temperature), temperature * (q - p) / 4, atol=1e-6)


def test_teacher_receives_no_gradient():
    teacher = torch.randn(4, 10, requires_grad=True)
    student = torch.randn(4, 10, requires_grad=True)
    cu.losses.kd_loss(student, teacher, torch.zeros(4, dtype=torch.long), 4.0, 0.5).backward()
    assert teacher.grad is None and student.grad is not None


def test_unscaled_gradient_shrinks_as_one_over_t_squared_and_t_squared_restores_it():
    generator = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(16, 10, generator=generator) * 2, torch.randn(16, 10, generator=generator) * 2
    scaled_20, scaled_40 = _soft_grad(student, teacher, 20.0).norm(), _soft_grad(student, teacher, 40.0).norm()
    plain_20, plain_40 = scaled_20 / 20**2, scaled_40 / 40**2
    assert (plain_20 / plain_40).item() == pytest.approx(4.0, rel=0.02)  # doubling T quarters the plain gradient
    assert (scaled_20 / scaled_40).item() == pytest.approx(1.0, rel=0.02)  # T^2 makes it T-independent
    # the high-temperature limit is logit matching: T^2 grad -> (z - v - mean(z - v)) / (C B)
    difference = student - teacher
    matching = (difference - difference.mean(1, keepdim=True)) / (10 * 16)
    relative = (_soft_grad(student, teacher, 200.0) - matching).norm() / matching.norm()
    assert relative.item() < 0.01


# --- kd_loss: errors ------------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.0, -2.0])
def test_kd_loss_rejects_non_positive_temperature(temperature):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        cu.losses.kd_loss(STUDENT, TEACHER, LABEL, temperature=temperature, alpha=0.5)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_kd_loss_rejects_alpha_outside_unit_interval(alpha):
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        cu.losses.kd_loss(STUDENT, TEACHER, LABEL, temperature=2.0, alpha=alpha)


def test_kd_loss_rejects_mismatched_class_counts_and_batches():
    with pytest.raises(ValueError, match="same shape"):
        cu.losses.kd_loss(torch.zeros(4, 10), torch.zeros(4, 9), torch.zeros(4, dtype=torch.long), 2.0, 0.5)
    with pytest.raises(ValueError, match="same shape"):
        cu.losses.kd_loss(torch.zeros(4, 10), torch.zeros(3, 10), torch.zeros(4, dtype=torch.long), 2.0, 0.5)


def test_kd_loss_rejects_bad_targets():
    student, teacher = torch.zeros(4, 10), torch.zeros(4, 10)
    with pytest.raises(ValueError, match="targets must have shape"):
        cu.losses.kd_loss(student, teacher, torch.zeros(3, dtype=torch.long), 2.0, 0.5)
    with pytest.raises(ValueError, match=r"class indices in \[0, 9\]"):
        cu.losses.kd_loss(student, teacher, torch.tensor([0, 1, 2, 10]), 2.0, 0.5)
    with pytest.raises(ValueError, match="targets are None"):
        cu.losses.kd_loss(student, teacher, None, 2.0, 0.5)


# --- the low-label loss, the gap summary, the seed comparison and the sweep's merge --------------------
def test_low_label_step_never_reads_unlabelled_labels():
    model = torch.nn.Linear(4, 3)
    images, teacher_logits = torch.randn(6, 4), torch.randn(6, 3)
    is_labelled = torch.tensor([True, True, False, False, False, False])
    labels = torch.tensor([0, 2, 99, -5, 7, 1000])  # garbage where unlabelled: an index error if they were read
    step = cu.images.recipes.low_label_step(temperature=4.0)
    logits = model(images)
    expected = (cu.losses.kd_loss(logits, teacher_logits, None, 4.0, 1.0)
                + F.cross_entropy(logits[:2], labels[:2]))
    assert step(model, (images, labels, teacher_logits, is_labelled)).item() == pytest.approx(expected.item(), rel=1e-6)
    none = torch.zeros(6, dtype=torch.bool)  # a batch without labels: the soft term alone, not nan
    soft_only = step(model, (images, labels, teacher_logits, none))
    assert soft_only.item() == pytest.approx(cu.losses.kd_loss(logits, teacher_logits, None, 4.0, 1.0).item(), rel=1e-6)


def test_soft_only_step_never_reads_labels():
    model = torch.nn.Linear(4, 3)
    images, teacher_logits = torch.randn(5, 4), torch.randn(5, 3)
    garbage = torch.tensor([99, -5, 7, 1000, 3])
    loss = cu.images.recipes.soft_only_step(temperature=2.0)(model, (images, garbage, teacher_logits))
    assert loss.item() == pytest.approx(cu.losses.kd_loss(model(images), teacher_logits, None, 2.0, 1.0).item(), rel=1e-6)


def test_gap_closed():
    assert cu.evaluate.gap_closed(0.85, 0.80, 0.90) == pytest.approx(0.5)
    assert cu.evaluate.gap_closed(0.78, 0.80, 0.90) == pytest.approx(-0.2)  # worse than scratch: negative, not clipped
    with pytest.raises(ValueError, match="must beat"):
        cu.evaluate.gap_closed(0.9, 0.9, 0.9)


def test_compare_calls_a_win_only_beyond_two_standard_errors():
    clear = cu.evaluate.compare([0.84, 0.845, 0.842], [0.866, 0.865, 0.868])
    assert clear.won and not clear.lost and clear.verdict == "win"
    assert clear.difference == pytest.approx(0.866333 - 0.842333, abs=1e-5)
    se = math.sqrt(statistics.variance([0.84, 0.845, 0.842]) / 3 + statistics.variance([0.866, 0.865, 0.868]) / 3)
    assert clear.standard_error == pytest.approx(se)
    noisy = cu.evaluate.compare([0.75, 0.77, 0.76], [0.76, 0.78, 0.755])  # +0.5 points, spread of 1 point
    assert not noisy.won and not noisy.lost and noisy.verdict == "within noise"
    worse = cu.evaluate.compare([0.2, 0.21, 0.2], [0.3, 0.31, 0.3], higher_is_better=False)  # e.g. an error rate
    assert worse.lost and worse.difference == pytest.approx(-0.1, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        cu.evaluate.compare([0.8], [0.9, 0.91])


def test_seed_summary():
    summary = cu.evaluate.seed_summary([0.8, 0.9])
    assert summary["mean"] == pytest.approx(0.85) and summary["std"] == pytest.approx(statistics.stdev([0.8, 0.9]))
    assert cu.evaluate.seed_summary([0.7])["std"] == 0.0
    with pytest.raises(ValueError, match="at least one value"):
        cu.evaluate.seed_summary([])


def test_mean_std_summarise_and_the_comparison_line():
    assert cu.evaluate.mean_std([0.8, 0.9]) == pytest.approx((0.85, statistics.stdev([0.8, 0.9])))
    table = cu.evaluate.summarise({"scratch": [0.80, 0.82], "KD": [0.85, 0.87]}, teacher_accuracy=0.91)
    assert table["scratch"]["gap_closed"] == 0.0 and table["KD"]["values"] == [0.85, 0.87]
    assert table["KD"]["gap_closed"] == pytest.approx((0.86 - 0.81) / (0.91 - 0.81))
    with pytest.raises(KeyError, match="baseline 'scratch' has no results"):
        cu.evaluate.summarise({"KD": [0.85, 0.87]}, teacher_accuracy=0.91)
    with pytest.raises(ValueError, match="must beat the scratch student"):  # no gap to close: an error, not a ratio
        cu.evaluate.summarise({"scratch": [0.92, 0.93], "KD": [0.85, 0.87]}, teacher_accuracy=0.91)
    line = cu.evaluate.compare([0.840, 0.845, 0.842], [0.866, 0.865, 0.868]).describe("KD", "scratch")
    assert line == "KD vs scratch: +2.40 points (2 standard errors 0.34) -> win"  # 2 * sqrt(6.33e-6 / 3 + 2.33e-6 / 3)


def test_sweep_merge_joins_sections_and_refuses_other_teachers(tmp_path):
    card = {"sha256": "abc"}

    def part(name: str, section: str, wall: float, teacher_card: dict = card) -> dict:
        return {"command": f"part {name}", "wall_seconds": wall, "teacher_card": teacher_card, "teacher_accuracy": 0.9,
                section: {"rows": [name]}}

    paths = []
    for name, section, wall in (("a", "grid", 10.0), ("b", "capacity", 1010.0)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(part(name, section, wall)))
    merged = kd_sweep.merge(paths, tmp_path / "merged.json")
    assert merged["grid"] == {"rows": ["a"]} and merged["capacity"] == {"rows": ["b"]}
    assert merged["wall_seconds"] == 1010.0  # the parts ran side by side: the longest one
    assert "part a" in merged["command"] and "part b" in merged["command"]
    (tmp_path / "again.json").write_text(json.dumps(part("c", "grid", 5.0)))
    with pytest.raises(ValueError, match="both hold"):
        kd_sweep.merge([paths[0], tmp_path / "again.json"], tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps(part("d", "omitted", 1.0, {"sha256": "other"})))
    with pytest.raises(ValueError, match="different teachers"):
        kd_sweep.merge([paths[0], tmp_path / "other.json"], tmp_path / "bad.json")


# --- the notebooks' self-checks ------------------------------------------------------------------
def test_checks_report_not_attempted_wrong_and_correct(capsys):
    def untouched(*args):
        raise NotImplementedError

    kd_loss, entropy, soft_gradient, gap_closed, limit = (cu.exercises.get(name).check for name in (
        "02.kd_loss", "01.entropy", "01.soft_gradient", "02.gap_closed", "01.high_temperature_limit"))
    assert kd_loss(untouched).status == "not attempted"
    wrong = kd_loss(lambda s, t, y, temperature, alpha: cu.losses.kd_loss(s, t, y, temperature, 1 - alpha))  # alpha swapped
    assert wrong.status == "wrong" and "alpha weights the soft term" in wrong.message
    assert kd_loss(cu.losses.kd_loss).passed
    assert entropy(lambda p: -torch.special.xlogy(p, p).sum(-1)).passed
    assert entropy(lambda p: -(p * p.log()).sum(-1)).status == "wrong"  # nan at p = 0
    q_minus_p = lambda s, t, temperature: torch.softmax(s / temperature, -1) - torch.softmax(t / temperature, -1)
    assert soft_gradient(lambda s, t, temperature: q_minus_p(s, t, temperature) / temperature).passed
    assert soft_gradient(q_minus_p).status == "wrong"  # the 1/T factor is missing
    assert gap_closed(cu.evaluate.gap_closed).passed
    assert gap_closed(lambda a, s, t: max(0.0, (a - s) / (t - s))).status == "wrong"
    assert limit(None).status == "not attempted"
    assert limit("a").status == "wrong"
    assert limit(" B ").passed
    assert "logit" not in capsys.readouterr().out.lower()  # messages hint, they do not give the answer away


def test_kd_loss_rejects_infinite_temperature_boolean_alpha_and_float_targets():
    logits = torch.randn(3, 4)
    labels = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="> 0 and finite"):
        cu.losses.kd_loss(logits, logits, labels, temperature=float("inf"), alpha=0.5)
    with pytest.raises(TypeError, match="alpha must be a number"):  # a bool is not a weight
        cu.losses.kd_loss(logits, logits, labels, temperature=2.0, alpha=True)
    with pytest.raises(TypeError, match="integer class indices"):
        cu.losses.kd_loss(logits, logits, labels.float(), temperature=2.0, alpha=0.5)
