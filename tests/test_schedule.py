"""Tests for course_utils.schedule: phase boundaries, values at given steps, curriculum order, errors."""

import math

import pytest
import torch
from torch import nn

import course_utils as cu
from course_utils.schedule import Schedule, ScheduledBatches, difficulty_order

SEEDS_SPLIT = [
    {"name": "warmup", "fraction": 0.2, "lr": 3e-4, "lr_end": 3e-3, "alpha": 0.0, "order": "curriculum", "pool_start": 0.25},
    {"name": "distill", "fraction": 0.7, "lr": 3e-3, "lr_end": 1e-3, "alpha": 0.9, "temperature": 4.0, "at_weight": 1000.0},
    {"name": "finetune", "fraction": 0.1, "lr": 1e-3, "lr_end": 0.0, "alpha": 0.0},
]


def test_boundaries_and_step_counts():
    schedule = Schedule(SEEDS_SPLIT, total_steps=100)
    assert schedule.boundaries == [(0, 20), (20, 90), (90, 100)]
    assert [schedule.steps(name) for name in ("warmup", "distill", "finetune")] == [20, 70, 10]
    # thirds of 10 steps: ends at floor(3.33 + .5) = 3, floor(6.67 + .5) = 7, then 10
    thirds = Schedule([{"name": str(i), "fraction": 1 / 3} for i in range(3)], total_steps=10)
    assert thirds.boundaries == [(0, 3), (3, 7), (7, 10)]
    # 0.25 * 6 = 1.5 rounds half up to 2
    assert Schedule([{"name": "a", "fraction": 0.25}, {"name": "b", "fraction": 0.75}], 6).boundaries == [(0, 2), (2, 6)]


def test_phase_at_each_boundary():
    schedule = Schedule(SEEDS_SPLIT, total_steps=100)
    assert [schedule.phase_at(s).name for s in (0, 19, 20, 89, 90, 99)] == [
        "warmup", "warmup", "distill", "distill", "finetune", "finetune"]
    with pytest.raises(IndexError, match="outside"):
        schedule.phase_at(100)
    with pytest.raises(IndexError, match="outside"):
        schedule.phase_at(-1)


def test_values_at_given_steps():
    schedule = Schedule(SEEDS_SPLIT, total_steps=100)
    assert schedule.value("alpha", 5) == 0.0 and schedule.value("alpha", 50) == 0.9 and schedule.value("alpha", 95) == 0.0
    assert schedule.value("at_weight", 20) == 1000.0 and schedule.value("at_weight", 19) == 0.0
    assert schedule.value("temperature", 50) == 4.0
    # half cosine from lr to lr_end: at the phase's first step lr, halfway the mean of the two
    assert schedule.lr(0) == pytest.approx(3e-4)
    assert schedule.lr(10) == pytest.approx((3e-4 + 3e-3) / 2)
    assert schedule.lr(20) == pytest.approx(3e-3)
    assert schedule.lr(55) == pytest.approx(2e-3)  # 35 of 70 steps into distill
    k, n = 3, 10  # step 93 is 3 of 10 steps into finetune
    assert schedule.lr(93) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * k / n)))
    # pacing: pool grows linearly from pool_start over the curriculum phase, 1 elsewhere
    assert schedule.pool(0) == pytest.approx(0.25)
    assert schedule.pool(10) == pytest.approx(0.25 + 0.75 * 0.5)
    assert schedule.pool(50) == 1.0
    assert schedule.values("alpha").shape == (100,)
    constant = Schedule([{"name": "flat", "fraction": 1.0, "lr": 2e-3}], total_steps=10)
    assert constant.values("lr").tolist() == [2e-3] * 10


def test_lr_factor_feeds_fit():
    schedule = Schedule(SEEDS_SPLIT, total_steps=100)
    factor = schedule.lr_factor(1e-3)
    assert factor(20, 100) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="schedule has 100"):
        factor(0, 50)


def test_difficulty_order_by_confidence_and_margin():
    logits = torch.log(torch.tensor([
        [0.50, 0.40, 0.10],  # confidence 0.5, margin 0.1
        [0.90, 0.05, 0.05],  # confidence 0.9, margin 0.85
        [0.34, 0.33, 0.33],  # confidence 0.34, margin 0.01
        [0.60, 0.00001, 0.39999],  # confidence 0.6, margin ~0.2
    ]))
    assert difficulty_order(logits).tolist() == [1, 3, 0, 2]
    assert difficulty_order(logits, score="margin").tolist() == [1, 3, 0, 2]
    # confidence and margin disagree here: (0.45, 0.45, 0.1) is more confident than (0.4, 0.2, 0.2, 0.2) but has margin 0
    disagree = torch.log(torch.tensor([[0.45, 0.45, 0.10, 0.0001], [0.4, 0.2, 0.2, 0.2]]))
    assert difficulty_order(disagree).tolist() == [0, 1]
    assert difficulty_order(disagree, score="margin").tolist() == [1, 0]
    with pytest.raises(ValueError, match="confidence' or 'margin"):
        difficulty_order(logits, score="entropy")
    with pytest.raises(ValueError, match=r"\(N, classes"):
        difficulty_order(torch.zeros(4))


def test_curriculum_batches_come_from_the_easiest_pool():
    count, batch = 100, 10
    ranking = torch.randperm(count, generator=torch.Generator().manual_seed(0))  # easiest first
    schedule = Schedule([{"name": "warmup", "fraction": 0.5, "order": "curriculum", "pool_start": 0.2},
                         {"name": "rest", "fraction": 0.5}], total_steps=20)
    batches = ScheduledBatches(schedule, (torch.arange(count),), ranking, batch_size=batch, rounds=2, seed=0)
    rank_of = torch.empty(count, dtype=torch.long)
    rank_of[ranking] = torch.arange(count)
    seen = [b for chunk in range(2) for b in batches]
    assert len(seen) == 20 and [int(b[-1]) for b in seen] == list(range(20))
    for step, (examples, _) in enumerate(seen[:10]):
        pool = math.ceil(schedule.pool(step) * count)  # 20, 28, 36, ... of the easiest
        assert len(examples.unique()) == batch
        assert rank_of[examples].max() < pool
    assert rank_of[seen[0][0]].max() < 20
    # the random phase walks through a permutation: 5 steps of 10 cover 50 distinct examples
    rest = torch.cat([examples for examples, _ in seen[10:15]])
    assert len(rest.unique()) == 50


def test_schedule_errors():
    with pytest.raises(ValueError, match="sum to 0.2 \\+ 0.7 = 0.9, not 1"):
        Schedule([{"name": "a", "fraction": 0.2}, {"name": "b", "fraction": 0.7}], 100)
    with pytest.raises(ValueError, match="negative"):
        Schedule([{"name": "a", "fraction": -0.2}, {"name": "b", "fraction": 1.2}], 100)
    with pytest.raises(ValueError, match="empty"):
        Schedule([{"name": "a", "fraction": 0.0}, {"name": "b", "fraction": 1.0}], 100)
    with pytest.raises(ValueError, match="gets no step out of 10"):
        Schedule([{"name": "a", "fraction": 0.01}, {"name": "b", "fraction": 0.99}], 10)
    with pytest.raises(KeyError, match="unknown key 'temprature'.*Did you mean 'temperature'"):
        Schedule([{"name": "a", "fraction": 1.0, "temprature": 4.0}], 10)
    with pytest.raises(KeyError, match="needs a name and a fraction"):
        Schedule([{"name": "a"}], 10)
    with pytest.raises(ValueError, match="alpha must be in"):
        Schedule([{"name": "a", "fraction": 1.0, "alpha": 1.5}], 10)
    with pytest.raises(ValueError, match="order must be one of"):
        Schedule([{"name": "a", "fraction": 1.0, "order": "hardest"}], 10)
    with pytest.raises(ValueError, match="unique"):
        Schedule([{"name": "a", "fraction": 0.5}, {"name": "a", "fraction": 0.5}], 10)
    with pytest.raises(ValueError, match="total_steps must be an integer >= 1"):
        Schedule([{"name": "a", "fraction": 1.0}], 0)
    with pytest.raises(ValueError, match="at least one phase"):
        Schedule([], 10)
    with pytest.raises(KeyError, match="unknown schedule value"):
        Schedule([{"name": "a", "fraction": 1.0}], 10).value("beta", 0)


def test_scheduled_batches_errors():
    curriculum = Schedule([{"name": "a", "fraction": 1.0, "order": "curriculum"}], 10)
    data = (torch.zeros(20, 1), torch.zeros(20))
    with pytest.raises(ValueError, match="needs ranking"):
        ScheduledBatches(curriculum, data, batch_size=4)
    with pytest.raises(ValueError, match="batch_size must be between 1 and the 20"):
        ScheduledBatches(curriculum, data, ranking=torch.arange(20), batch_size=21)
    with pytest.raises(ValueError, match="permutation"):
        ScheduledBatches(curriculum, data, ranking=torch.zeros(20, dtype=torch.long), batch_size=4)
    with pytest.raises(ValueError, match="same length"):
        ScheduledBatches(curriculum, (torch.zeros(20), torch.zeros(19)), ranking=torch.arange(20))
    with pytest.raises(ValueError, match="rounds must divide"):
        ScheduledBatches(curriculum, data, ranking=torch.arange(20), batch_size=4, rounds=3)


def test_train_with_schedule_uses_the_schedules_lr_and_steps():
    torch.manual_seed(0)
    images, labels = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    schedule = Schedule([{"name": "warm", "fraction": 0.5, "lr": 1e-3}, {"name": "tune", "fraction": 0.5, "lr": 2e-4}], 8)
    seen_steps: list[int] = []

    def loss_fn(model: nn.Module, batch: tuple) -> torch.Tensor:
        batch_images, batch_labels, step = batch
        seen_steps.append(int(step))
        return nn.functional.cross_entropy(model(batch_images), batch_labels)

    model = cu.images.create("cnn-2k", seed=0)
    history = cu.schedule.train_with_schedule(model, schedule, (images, labels), loss_fn, rounds=2, batch_size=16,
                                              val_data=(images, labels))
    assert seen_steps == list(range(8))
    assert history.epoch == [1, 2] and len(history.val_accuracy) == 2
    assert history.lr == [pytest.approx(1e-3), pytest.approx(2e-4)]  # the lr of each round's last step
    assert cu.schedule.steps_to_reach(history, target=-1.0, steps_per_round=4) == 4
    assert cu.schedule.steps_to_reach(history, target=2.0, steps_per_round=4) is None


def test_cached_attention_maps_match_at_loss():
    teacher, student = cu.images.create("resnet-teacher", seed=0).eval(), cu.images.create("cnn-2k", seed=1)
    images = torch.randn(6, 1, 28, 28)
    maps = cu.schedule.cache_attention_maps(teacher, images, ["layer1", "layer2", "layer3"], batch_size=4)
    assert [m.shape for m in maps] == [(6, 784), (6, 196), (6, 49)]
    assert torch.allclose(maps[0].norm(dim=1), torch.ones(6), atol=1e-5)
    with cu.hooks.capture(teacher, ["layer2"], detach=True) as teacher_features, torch.no_grad():
        teacher(images)
    with cu.hooks.capture(student, ["block2"]) as student_features:
        student(images)
    cached = (cu.losses.attention_map(student_features["block2"]) - maps[1]).pow(2).mean()
    assert cached.item() == pytest.approx(cu.losses.at_loss(student_features["block2"], teacher_features["layer2"]).item(),
                                          rel=1e-5)
