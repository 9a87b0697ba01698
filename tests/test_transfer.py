"""Transfer sets (notebook 02b): augmented views, blends, out-of-domain images, bias and rebalancing, training."""

from __future__ import annotations

import pytest
import torch

import course_utils as cu


@pytest.fixture(scope="module")
def images(small_train) -> torch.Tensor:
    return small_train.images[:40]


def test_augmented_views_are_seeded_views_of_their_source(images):
    augment = cu.images.transfer.augmentation()
    views, source = cu.images.transfer.augmented_views(images[:10], augment, views_per_image=3, seed=0)
    assert views.shape == (30, 1, 28, 28) and source.tolist() == [i // 3 for i in range(30)]
    again, _ = cu.images.transfer.augmented_views(images[:10], augment, views_per_image=3, seed=0)
    other, _ = cu.images.transfer.augmented_views(images[:10], augment, views_per_image=3, seed=1)
    assert torch.equal(views, again) and not torch.equal(views, other)
    assert not torch.allclose(views, images[:10][source])  # the views are not the originals
    pixels = cu.images.data.denormalise(views)
    assert torch.allclose(pixels, views * cu.images.data.STD + cu.images.data.MEAN, atol=1e-5)  # still in [0, 1] pixel space
    identity, _ = cu.images.transfer.augmented_views(images[:10], lambda x: x, views_per_image=2, seed=0)
    assert torch.allclose(identity, images[:10].repeat_interleave(2, 0), atol=1e-5)  # the round trip is exact
    with pytest.raises(ValueError, match="views_per_image"):
        cu.images.transfer.augmented_views(images, augment, views_per_image=0, seed=0)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        cu.images.transfer.augmented_views(images[:, 0], augment, views_per_image=1, seed=0)


def test_mixed_images_are_blends_of_two_labelled_images(images, small_train):
    labels = small_train.labels[:40]
    blends = cu.images.transfer.mixed_images(images, labels, count=50, seed=0)
    assert blends.shape == (50, 1, 28, 28)
    assert torch.equal(blends, cu.images.transfer.mixed_images(images, labels, count=50, seed=0))
    assert blends.min() >= images.min() - 1e-5 and blends.max() <= images.max() + 1e-5  # convex or pasted
    distances = torch.cdist(blends.flatten(1), images.flatten(1)).min(1).values
    assert (distances > 1e-3).float().mean() > 0.8  # most blends are new images

    def mixup_half(batch, batch_labels):  # a known blend: lam = 0.5 with the batch rolled by one
        return 0.5 * batch + 0.5 * batch.roll(1, 0), batch_labels

    halves = cu.images.transfer.mixed_images(images[:4], labels[:4], count=4, seed=0, transform=mixup_half, batch_size=4)
    order = torch.randperm(4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(halves, 0.5 * images[order] + 0.5 * images[order].roll(1, 0))
    with pytest.raises(ValueError, match="two images"):
        cu.images.transfer.mixed_images(images[:1], labels[:1], count=3, seed=0)


def test_out_of_domain_images(images):
    noise = cu.images.transfer.noise_images(500, seed=0)
    pixels = noise * cu.images.data.STD + cu.images.data.MEAN
    assert noise.shape == (500, 1, 28, 28) and pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert abs(pixels.mean().item() - cu.images.data.MEAN) < 0.05
    shuffled = cu.images.transfer.shuffled_pixels(images, seed=0)
    assert shuffled.shape == images.shape and not torch.equal(shuffled, images)
    assert torch.equal(shuffled.flatten(1).sort(1).values, images.flatten(1).sort(1).values)  # same pixels per image
    with pytest.raises(ValueError, match="count"):
        cu.images.transfer.noise_images(0, seed=0)


def test_biased_set_keeps_the_asked_share_of_the_rare_classes():
    labels = torch.arange(10).repeat(100)  # 100 per class
    kept = cu.images.transfer.biased_indices(labels, rare_classes=[2, 4], keep_fraction=0.1, seed=0)
    counts = torch.bincount(labels[kept], minlength=10)
    assert counts[2] == counts[4] == 10 and counts[[0, 1, 3, 5, 6, 7, 8, 9]].eq(100).all()
    missing = cu.images.transfer.biased_indices(labels, rare_classes=[3], keep_fraction=0.0, seed=0)
    assert (labels[missing] != 3).all() and len(missing) == 900
    with pytest.raises(ValueError, match="keep_fraction"):
        cu.images.transfer.biased_indices(labels, [2], keep_fraction=1.5, seed=0)
    with pytest.raises(ValueError, match="class indices"):
        cu.images.transfer.biased_indices(labels, [12], keep_fraction=0.5, seed=0)


def test_rebalancing_weights_by_hand():
    predicted = torch.tensor([0, 0, 0, 1, 2, 2])
    logits = torch.nn.functional.one_hot(predicted, 4).float() * 5  # class 3 is never predicted: 3 classes seen
    weights = cu.images.transfer.rebalancing_weights(logits)
    expected = torch.tensor([1 / 9, 1 / 9, 1 / 9, 1 / 3, 1 / 6, 1 / 6], dtype=torch.float64)
    assert torch.allclose(weights, expected) and weights.sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(N, classes\)"):
        cu.images.transfer.rebalancing_weights(logits[0])


def test_rebalancing_by_the_teachers_prediction_equalises_predicted_classes():
    predicted = torch.cat([torch.zeros(900), torch.ones(90), torch.full((10,), 2)]).long()
    logits = torch.nn.functional.one_hot(predicted, 4).float() * 5  # class 3 is never predicted
    picked = cu.images.transfer.rebalanced_indices(logits, seed=0, size=3000)
    counts = torch.bincount(predicted[picked], minlength=4)
    assert ((counts[:3] - 1000).abs() < 100).all() and counts[3] == 0  # about equal; a missing class stays missing
    assert torch.equal(picked, cu.images.transfer.rebalanced_indices(logits, seed=0, size=3000))
    assert len(cu.images.transfer.rebalanced_indices(logits, seed=0)) == 1000
    with pytest.raises(ValueError, match="size"):
        cu.images.transfer.rebalanced_indices(logits, seed=0, size=0)


def test_real_subsets_are_nested(small_train):
    small, large = cu.images.transfer.real_subset(small_train, 100), cu.images.transfer.real_subset(small_train, 300)
    assert len(small) == 100 and torch.equal(large.index[:100], small.index)
    with pytest.raises(ValueError, match="count"):
        cu.images.transfer.real_subset(small_train, len(small_train) + 1)


def test_transfer_loader_hides_the_transfer_sets_labels(small_train):
    labelled = small_train.subset(range(30))
    labelled_logits = torch.randn(30, 10)
    extra, extra_logits = cu.images.transfer.noise_images(20, seed=0), torch.randn(20, 10)
    loader = cu.images.transfer.transfer_loader(labelled, labelled_logits, extra, extra_logits, seed=0)
    images, labels, logits, is_labelled = (torch.cat(parts) for parts in zip(*loader))
    assert len(images) == 50 and is_labelled.sum() == 30
    assert (labels[~is_labelled] == 0).all()
    for image, logit in zip(images[~is_labelled], logits[~is_labelled]):  # each image keeps its own logits
        position = (extra - image).flatten(1).abs().sum(1).argmin()
        assert torch.equal(logit, extra_logits[position])
    with pytest.raises(ValueError, match="one row of teacher logits"):
        cu.images.transfer.transfer_loader(labelled, labelled_logits, extra, extra_logits[:5], seed=0)
    with pytest.raises(ValueError, match="NaN"):
        cu.images.transfer.transfer_loader(labelled, labelled_logits, extra, extra_logits * float("nan"), seed=0)
    with pytest.raises(ValueError, match="index"):
        cu.images.transfer.transfer_loader(labelled, labelled_logits[:3], None, None, seed=0)


def test_distil_takes_exactly_the_asked_steps_and_learns(small_train, test_split):
    labelled = small_train.subset(range(200))
    calls = []

    def counting_step(model, batch):
        calls.append(len(batch[0]))
        return cu.train.cross_entropy_step(model, batch)

    model = cu.images.create("cnn-2k", seed=0)
    cu.images.transfer.distil(model, labelled, torch.zeros(200, 10), cu.images.transfer.noise_images(100, seed=0),
                              torch.zeros(100, 10), steps=7, seed=0, loss_fn=counting_step)
    assert len(calls) == 7 and not model.training  # 300 images: 5 batches of 64 per epoch, 2 epochs cut at 7 steps
    teacher_logits = cu.images.models.load_teacher_logits("train")[labelled.index]
    student = cu.images.transfer.distil(cu.images.create("cnn-2k", seed=0), labelled, teacher_logits, steps=60, seed=0)
    assert cu.evaluate.accuracy(student, test_split.images[:1000], test_split.labels[:1000]) > 0.4
    with pytest.raises(ValueError, match="steps"):
        cu.images.transfer.distil(model, labelled, teacher_logits, steps=0, seed=0)


def test_confidence_and_memory():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    expected = torch.tensor([torch.sigmoid(torch.tensor(2.0)).item(), 0.5])
    assert torch.allclose(cu.images.transfer.confidence(logits), expected)
    assert cu.images.transfer.tensor_megabytes(torch.zeros(1000, 10), torch.zeros(500, dtype=torch.float64)) == 0.044
    with pytest.raises(ValueError, match=r"\(N, classes\)"):
        cu.images.transfer.confidence(logits[0])


def test_transfer_kd_step_is_the_course_kd_on_labelled_images_and_never_reads_transfer_labels(small_train):
    generator = torch.Generator().manual_seed(0)
    model = cu.images.create("cnn-2k", seed=0).eval()  # eval: batch norm does not depend on the batch
    images, labels = small_train.images[:12], small_train.labels[:12]
    teacher_logits = torch.randn(12, 10, generator=generator) * 3
    step = cu.images.transfer.transfer_kd_step(temperature=8.0, alpha=0.75)
    all_labelled = (images, labels, teacher_logits, torch.ones(12, dtype=torch.bool))
    expected = cu.losses.kd_loss(model(images), teacher_logits, labels, temperature=8.0, alpha=0.75)
    assert torch.allclose(step(model, all_labelled), expected, atol=1e-6)
    is_labelled = torch.arange(12) < 5
    scrambled = torch.where(is_labelled, labels, (labels + 3) % 10)  # other labels on the unlabelled images
    first = step(model, (images, labels, teacher_logits, is_labelled))
    assert torch.allclose(first, step(model, (images, scrambled, teacher_logits, is_labelled)))
    soft_only = step(model, (images, labels, teacher_logits, torch.zeros(12, dtype=torch.bool)))
    assert torch.allclose(soft_only, 0.75 * cu.losses.kd_loss(model(images), teacher_logits, None, 8.0, alpha=1.0))


def test_sweep_keeps_per_seed_values_and_resumes(tmp_path):
    from course_utils.cli import transfer_sweep as sweep_program

    out = tmp_path / "sweep.json"
    common = ["--seeds", "2", "--short-steps", "2", "--patient-steps", "3", "--transfer-images", "400", "--sizes", "100",
              "--out", str(out)]
    first = sweep_program.main(["--sections", "bias", "--steps", "2", *common])
    assert first["sections"]["bias"][1:] == ["biased@2", "rebalanced@2", "missing@2"]
    for key in first["sections"]["bias"]:
        run = first["arms"][key]
        assert len(run["values"]) == 2 and len(run["per_class"]) == 2 and len(run["per_class"][0]) == 10
        assert run["mean"] == pytest.approx(sum(run["values"]) / 2)
    assert first["bias_sets"]["missing"]["true_counts"][2] == 0 and first["settings"]["kd"] == dict(cu.images.recipes.KD)
    second = sweep_program.main(["--sections", "size", "--steps", "3", *common])  # another budget: the bias arms stay
    assert set(first["arms"]) < set(second["arms"]) and second["sections"]["size"] == ["labelled@3", "real-100@3"]
    assert second["arms"]["biased@2"]["values"] == first["arms"]["biased@2"]["values"]
    assert cu.images.transfer.sweep_arm(cu.images.transfer.load_sweep(out), "real-100@3")["transfer_images"] == 100
    third = sweep_program.main(["--sections", "quality", "--steps", "3", "--sets", "real", *common])  # one kind of set
    assert third["sections"]["quality"] == ["labelled@3", "real-400@3"] and "noise-400@3" not in third["arms"]
    with pytest.raises(KeyError, match="rerun"):
        cu.images.transfer.sweep_arm(second, "real-100@2")
    with pytest.raises(SystemExit, match="--sizes"):
        sweep_program.main(["--sizes", "0", "--out", str(out)])


def test_the_committed_sweep_uses_the_course_recipe_and_keeps_every_seed():
    sweep = cu.images.transfer.load_sweep()
    assert sweep["settings"]["kd"] == dict(cu.images.recipes.KD), (
        "results/transfer_sweep.json was made with another KD recipe: rerun `python -m course_utils.cli.transfer_sweep`")
    assert sweep["settings"]["student"] == cu.images.models.DEFAULT_STUDENT and sweep["seeds"] == [100, 101, 102]
    for key, run in sweep["arms"].items():
        assert len(run["values"]) == len(sweep["seeds"]) == len(run["per_class"]), key
    for section, keys in sweep["sections"].items():
        assert all(key in sweep["arms"] for key in keys), section
    for key in ("scratch@2000", "labelled@2000", "real-20000@2000", "fixed-k8@2000", "consistent-k8@2000"):
        assert key in sweep["arms"], f"notebook 02b reads {key}"
