"""Transfer sets: the images a student is distilled on, how to build them, and how to train on them.

    views, source = cu.images.transfer.augmented_views(labelled.images, cu.images.transfer.augmentation(),
                                                       views_per_image=4, seed=0)
    consistent_logits = cu.evaluate.predict_logits(teacher, views)   # the teacher sees the student's view
    fixed_logits = labelled_logits[source]                            # the teacher saw the un-augmented image
    student = cu.images.transfer.distil(student, labelled, labelled_logits, views, consistent_logits, steps=2000, seed=0)

A transfer set is any set of images the teacher labels softly (Hinton et al. 2015, section 2; Buciluǎ et al.
2006 built theirs synthetically). Notebook 02b compares real unlabelled images, synthetic blends of the
labelled images (mixup, Zhang et al. 2018; CutMix, Yun et al. 2019, built with ``torchvision.transforms.v2``),
out-of-domain images (noise, shuffled pixels) and augmented views with the teacher's logits on the *same*
view ("consistent") or on the original image ("fixed teacher"), after Beyer et al. (2022), "Knowledge
distillation: A good teacher is patient and consistent".

Images here are normalised ``(N, 1, 28, 28)`` tensors as :func:`cu.images.data.normalise` makes them; every
random draw is seeded, so a transfer set is the same on every run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import config, data, losses, report, train
from . import recipes
from .data import MEAN, STD, ImageSet, denormalise

ImageTransform = Callable[..., torch.Tensor]
SWEEP_FILE = config.REPO_DIR / "results" / "transfer_sweep.json"
SWEEP_COMMAND = "python -m course_utils.cli.transfer_sweep"
DATA_SEED = 0  # every transfer set (its order, blends, noise, views, bias) is drawn with this seed


def load_sweep(path: str | Path | None = None) -> dict:
    """Notebook 02b's precomputed arms (``results/transfer_sweep.json``); a clear error says how to make them."""
    return report.load_precomputed(path or SWEEP_FILE, SWEEP_COMMAND, "hours on one CPU core; see its docstring")


def sweep_arm(sweep: dict, key: str) -> dict:
    """One arm of the sweep, e.g. ``"real-20000@2000"``: ``mean``, ``std``, per-seed ``values`` and ``per_class``."""
    if key not in sweep["arms"]:
        raise KeyError(f"the sweep holds no arm {key!r} (it has {sorted(sweep['arms'])}); rerun `{SWEEP_COMMAND}` "
                       "with the settings that make it.")
    return sweep["arms"][key]


def _check_images(images: torch.Tensor, what: str = "images") -> None:
    if images.ndim != 4 or images.shape[1:] != (1, 28, 28):
        raise ValueError(f"{what} must be normalised Fashion-MNIST images (N, 1, 28, 28), got shape "
                         f"{tuple(images.shape)}; load them with cu.images.load_fashion_mnist.")
    if not len(images):
        raise ValueError(f"{what} is empty: a transfer set needs at least one image.")


def _check_count(count: int, what: str = "count") -> None:
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"{what} must be a whole number >= 1, got {count!r}.")


def augmentation(scale: tuple[float, float] = (0.5, 1.0)) -> ImageTransform:
    """The course's augmentation for transfer sets: a random resized crop (area ``scale``) and a horizontal flip.

    Built with ``torchvision.transforms.v2``; it acts on one ``(1, 28, 28)`` image in [0, 1] pixel space.
    The teacher was trained with flips and 2-pixel shifts only, so crops of half the garment change
    what it says: that is what makes the teacher's view matter (Beyer et al. 2022, section 3).
    """
    from torchvision.transforms import v2

    return v2.Compose([v2.RandomResizedCrop(28, scale=scale, antialias=True), v2.RandomHorizontalFlip()])


def mixing(alpha: float = 1.0, num_classes: int = 10) -> ImageTransform:
    """Mixup or CutMix, chosen at random per batch (``torchvision.transforms.v2``), on ``(images, labels)`` batches.

    Mixup: ``x = lam x_i + (1 - lam) x_j``; CutMix: a box of area ``1 - lam`` of ``x_i`` replaced by ``x_j``;
    ``lam ~ Beta(alpha, alpha)`` (Zhang et al. 2018; Yun et al. 2019). The mixed labels it also returns are
    not used here: the teacher labels the blends.
    """
    from torchvision.transforms import v2

    return v2.RandomChoice([v2.MixUp(alpha=alpha, num_classes=num_classes),
                            v2.CutMix(alpha=alpha, num_classes=num_classes)])


def augmented_views(images: torch.Tensor, transform: ImageTransform, views_per_image: int,
                    seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``views_per_image`` fixed augmented views of every image, and the index of each view's source image.

    ``transform`` acts on one image in [0, 1] pixel space (e.g. :func:`augmentation`); the views are
    normalised again. Returns ``views (N * K, 1, 28, 28)`` and ``source (N * K,)`` with
    ``views[j]`` an augmentation of ``images[source[j]]``: caching the teacher's logits of these K views
    per image makes consistent teaching (Beyer et al. 2022) as cheap as a fixed teacher at training time.
    """
    _check_images(images)
    _check_count(views_per_image, "views_per_image")
    pixels = denormalise(images)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        views = torch.stack([transform(pixels[i]) for i in range(len(images)) for _ in range(views_per_image)])
    source = torch.arange(len(images)).repeat_interleave(views_per_image)
    return (views - MEAN) / STD, source


def mixed_images(images: torch.Tensor, labels: torch.Tensor, count: int, seed: int,
                 transform: ImageTransform | None = None, batch_size: int = 16) -> torch.Tensor:
    """``count`` synthetic images blended from ``images`` by a batch transform (default :func:`mixing`).

    Shuffled batches of ``batch_size`` labelled images go through ``transform(images, labels)``
    (each batch draws its own ``lam``); the blends are returned ``(count, 1, 28, 28)``, normalised.
    """
    _check_images(images)
    _check_count(count)
    if len(images) < 2:
        raise ValueError("mixing needs at least two images to blend, got one.")
    transform = transform or mixing()
    generator = torch.Generator().manual_seed(seed)
    blends, made = [], 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        while made < count:
            order = torch.randperm(len(images), generator=generator)
            for start in range(0, len(order) - 1, batch_size):
                batch = order[start:start + batch_size]
                if len(batch) < 2:
                    continue
                mixed, _ = transform(images[batch], labels[batch])
                blends.append(mixed)
                made += len(mixed)
                if made >= count:
                    break
    return torch.cat(blends)[:count]


def real_subset(rest: ImageSet, count: int, seed: int = DATA_SEED) -> ImageSet:
    """``count`` real images of the unlabelled rest in one seeded order, so a smaller set is part of a larger one.

    Their labels stay in the returned set for evaluation only; a transfer set is used through its images
    and the teacher's logits (``all_teacher_logits[subset.index]``).
    """
    if not isinstance(count, int) or not 1 <= count <= len(rest):
        raise ValueError(f"count must be a whole number from 1 to {len(rest)} (the images available), got {count!r}.")
    order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))
    return rest.subset(order[:count])


def noise_images(count: int, seed: int) -> torch.Tensor:
    """``count`` images of Gaussian pixel noise with the training split's pixel mean and standard deviation.

    Each pixel is ``clamp(N(MEAN, STD), 0, 1)`` in [0, 1] space (a valid image), then normalised: out-of-domain
    images that share the data's first two moments and nothing else.
    """
    _check_count(count)
    generator = torch.Generator().manual_seed(seed)
    pixels = (MEAN + STD * torch.randn(count, 1, 28, 28, generator=generator)).clamp(0, 1)
    return (pixels - MEAN) / STD


def shuffled_pixels(images: torch.Tensor, seed: int) -> torch.Tensor:
    """Every image with its 784 pixels in a random order of its own: the same pixel values, no shape left."""
    _check_images(images)
    generator = torch.Generator().manual_seed(seed)
    flat = images.flatten(1)  # (N, 784)
    order = torch.rand(flat.shape, generator=generator).argsort(dim=1)
    return flat.gather(1, order).reshape(images.shape)


def biased_indices(labels: torch.Tensor, rare_classes: Sequence[int], keep_fraction: float, seed: int) -> torch.Tensor:
    """Indices of a biased transfer set: every image of the other classes, ``keep_fraction`` of ``rare_classes``.

    Simulates a collection that under-represents some classes (``keep_fraction = 0``: missing them).
    The true ``labels`` are used only to *build* the bias; a fix must not read them (see
    :func:`rebalanced_indices`).
    """
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must lie in [0, 1], got {keep_fraction}.")
    classes = int(labels.max()) + 1 if len(labels) else 0
    if any(not 0 <= int(k) < classes for k in rare_classes):
        raise ValueError(f"rare_classes must be class indices 0 to {classes - 1}, got {list(rare_classes)}.")
    generator = torch.Generator().manual_seed(seed)
    keep = torch.ones(len(labels), dtype=torch.bool)
    for k in rare_classes:
        members = (labels == int(k)).nonzero().flatten()
        dropped = members[torch.randperm(len(members), generator=generator)][round(keep_fraction * len(members)):]
        keep[dropped] = False
    return keep.nonzero().flatten()


def rebalancing_weights(teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-image sampling weights that give every class the *teacher predicts* the same total weight.

    ``w_i = 1 / (C_seen * n_{c(i)})`` with ``c(i) = argmax_c v_ic`` the teacher's class for image ``i``,
    ``n_c`` the number of images it files under ``c`` and ``C_seen`` the number of classes it predicts at
    least once; the weights sum to 1. No true label is read, so this works on unlabelled data.
    """
    if teacher_logits.ndim != 2 or not len(teacher_logits):
        raise ValueError(f"teacher_logits must be (N, classes) with N >= 1, got shape {tuple(teacher_logits.shape)}.")
    predicted = teacher_logits.argmax(1)
    counts = torch.bincount(predicted, minlength=teacher_logits.shape[1]).double()  # (C,)
    return 1.0 / (int((counts > 0).sum()) * counts[predicted])


def rebalanced_indices(teacher_logits: torch.Tensor, seed: int, size: int | None = None) -> torch.Tensor:
    """``size`` draws (default: as many as images), with replacement, by :func:`rebalancing_weights`.

    Images of a class the teacher rarely predicts are shown more often, so every predicted class is about
    equally frequent. A class the teacher never predicts on the set cannot be restored: there is nothing
    to oversample.
    """
    weights = rebalancing_weights(teacher_logits)
    size = len(teacher_logits) if size is None else size
    _check_count(size, "size")
    return torch.multinomial(weights, size, replacement=True, generator=torch.Generator().manual_seed(seed))


def transfer_kd_step(temperature: float = recipes.KD["temperature"], alpha: float = recipes.KD["alpha"]) -> train.LossFn:
    """A ``loss_fn`` on ``(images, labels, teacher_logits, is_labelled)`` batches: the course's KD on a transfer set.

        alpha * T^2 KL(softmax(v / T) || softmax(z / T))   averaged over every image of the batch
        + (1 - alpha) * CE(y, softmax(z))                   averaged over its labelled images

    (Hinton et al. 2015: the teacher labels the transfer set softly, the true labels add a hard term where
    they exist). On a batch of labelled images only it is exactly ``cu.losses.kd_loss`` with the same
    ``temperature`` and ``alpha``, notebook 02's KD; the transfer set's labels are never read.
    """

    def step(model: nn.Module, batch: tuple) -> torch.Tensor:
        images, labels, teacher_logits, is_labelled = batch
        student_logits = model(images)
        soft = losses.kd_loss(student_logits, teacher_logits, None, temperature=temperature, alpha=1.0)
        if not is_labelled.any():  # a batch without labels: the soft term alone
            return alpha * soft
        return alpha * soft + (1 - alpha) * F.cross_entropy(student_logits[is_labelled], labels[is_labelled])

    return step


def transfer_loader(labelled: ImageSet, labelled_logits: torch.Tensor, transfer_images: torch.Tensor | None,
                    transfer_logits: torch.Tensor | None, seed: int) -> torch.utils.data.DataLoader:
    """Batches ``(images, labels, teacher_logits, is_labelled)`` over the labelled images plus a transfer set.

    Like :func:`cu.images.recipes.low_label_loader`, but the transfer set is any images with their own teacher
    logits (synthetic, augmented, out of domain), not only images of the training split. Its labels are 0
    and masked by ``is_labelled``, so no loss can read them.
    """
    if len(labelled_logits) != len(labelled):
        raise ValueError(f"{len(labelled)} labelled images but {len(labelled_logits)} teacher logits; "
                         "slice the logits with the set's index: all_logits[labelled.index].")
    images, labels, logits = labelled.images, labelled.labels, labelled_logits
    is_labelled = torch.ones(len(labelled), dtype=torch.bool)
    if transfer_images is not None:
        _check_images(transfer_images, "transfer_images")
        if transfer_logits is None or len(transfer_logits) != len(transfer_images):
            raise ValueError(f"transfer_images ({len(transfer_images)}) need one row of teacher logits each, got "
                             f"{None if transfer_logits is None else len(transfer_logits)}.")
        if not torch.isfinite(transfer_logits).all():
            raise ValueError("transfer_logits contain NaN or infinite values; recompute them with "
                             "cu.evaluate.predict_logits(teacher, transfer_images).")
        count = len(transfer_images)
        images = torch.cat([images, transfer_images])
        labels = torch.cat([labels, torch.zeros(count, dtype=labels.dtype)])
        logits = torch.cat([logits, transfer_logits.to(logits.dtype)])
        is_labelled = torch.cat([is_labelled, torch.zeros(count, dtype=torch.bool)])
    return data.make_loader(images, labels, logits, is_labelled, batch_size=recipes.TRAINING["batch_size"],
                            shuffle=True, seed=seed)


def distil(model: nn.Module, labelled: ImageSet, labelled_logits: torch.Tensor,
           transfer_images: torch.Tensor | None = None, transfer_logits: torch.Tensor | None = None, *,
           steps: int, seed: int, loss_fn: train.LossFn | None = None) -> nn.Module:
    """Train ``model`` for exactly ``steps`` optimizer steps on the labelled images plus a transfer set.

    The loss defaults to :func:`transfer_kd_step` with the course recipe ``cu.images.recipes.KD``: ``alpha T^2 KL``
    on every image plus ``(1 - alpha)`` cross-entropy on the labelled ones; pass ``cu.train.cross_entropy_step``
    (and no transfer set) for the scratch student. The optimiser and batch are ``cu.images.recipes.TRAINING``'s,
    the learning rate follows a cosine over ``steps``, so every arm of a comparison has the same budget.
    Returns the trained model in eval mode.
    """
    _check_count(steps, "steps")
    loader = transfer_loader(labelled, labelled_logits, transfer_images, transfer_logits, seed)
    epochs = -(-steps // len(loader))
    train.fit(model, loader, epochs=epochs, max_steps=steps, loss_fn=loss_fn or transfer_kd_step(), seed=seed,
              lr=recipes.TRAINING["lr"], progress=False)
    return model


def confidence(logits: torch.Tensor) -> torch.Tensor:
    """The teacher's confidence per image: its largest softmax probability, ``max_c softmax(v)_c`` (T = 1)."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, classes), got shape {tuple(logits.shape)}.")
    return logits.softmax(dim=1).max(dim=1).values


def tensor_megabytes(*tensors: torch.Tensor) -> float:
    """Memory the tensors' elements take, in MB (10^6 bytes): ``sum(numel * element_size)``."""
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6
