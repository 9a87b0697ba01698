"""The image lessons' models: a small ResNet teacher, a configurable CNN student family and the logistic-regression floor.

Every layer a lesson hooks has a stable module path (``layer1``, ``block2.conv1``...), so
features are captured with forward hooks (see ``cu.hooks``) and models never change shape
to return them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import checkpoints, config, validate


def _check_images(x: torch.Tensor) -> None:
    """Shape-only check (safe while exporting): the image models take ``(B, 1, 28, 28)`` grey images."""
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected images of shape (B, 1, 28, 28), got {tuple(x.shape)}; add the batch axis with "
                         "x[None] or the channel axis with x.unsqueeze(1).")


class BasicBlock(nn.Module):
    """ResNet's basic block (He et al. 2016): two 3x3 convs and a shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNetTeacher(nn.Module):
    """A small ResNet for 28x28 grey images: stem, three stages at 28, 14 and 7 pixels, linear head.

    Hookable paths: ``stem``, ``layer1`` (C1 x 28 x 28), ``layer2`` (C2 x 14 x 14),
    ``layer3`` (C3 x 7 x 7), ``fc``.
    """

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128), blocks: int = 1, num_classes: int = 10):
        super().__init__()
        self.widths = tuple(widths)
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, in_channels = [], widths[0]
        for stage, width in enumerate(widths):
            stride = 1 if stage == 0 else 2
            stack = [BasicBlock(in_channels, width, stride)] + [BasicBlock(width, width) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*stack))
            in_channels = width
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 28, 28)
        _check_images(x)
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))  # (B, C3, 7, 7)
        return self.fc(self.pool(x).flatten(1))  # (B, num_classes)


class ConvBlock(nn.Sequential):
    """``depth`` x (3x3 conv, batch norm, ReLU), after an optional 2x2 max-pool.

    ``batch_norm=False`` leaves the norm out (the convolutions then carry a bias): a plain
    2015-style stack, as in FitNets' deep-thin students.
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int = 1, pool: bool = False,
                 batch_norm: bool = True):
        layers: dict[str, nn.Module] = {}
        if pool:
            layers["pool"] = nn.MaxPool2d(2)
        for i in range(1, depth + 1):
            layers[f"conv{i}"] = nn.Conv2d(in_channels if i == 1 else out_channels, out_channels, 3, 1, 1,
                                           bias=not batch_norm)
            if batch_norm:
                layers[f"bn{i}"] = nn.BatchNorm2d(out_channels)
            layers[f"relu{i}"] = nn.ReLU()
        super().__init__(OrderedDict(layers))


@dataclass(frozen=True)
class StudentConfig:
    """A student's shape: channels of its three blocks, convs per block, and the head's pooled grid."""

    widths: tuple[int, int, int] = (8, 16, 32)
    depth: int = 1  # convs per block; 2 doubles the depth at about twice the parameters
    num_classes: int = 10
    batch_norm: bool = True  # False: plain conv + bias + ReLU stacks (FitNets' 2015 regime, see DEEP_STUDENTS)


class Student(nn.Module):
    """A LeNet-style CNN student: three blocks at 28, 14 and 7 pixels, a 2x2 max-pool, a flat linear head.

    Hookable paths: ``block1`` (w1 x 28 x 28), ``block2`` (w2 x 14 x 14), ``block3`` (w3 x 7 x 7)
    (and ``block2.conv1`` ...), ``head``. The resolutions match the teacher's ``layer1..3``.

    The head keeps *where* a feature fired: the 7 x 7 maps are max-pooled to 3 x 3 and flattened
    (w3 x 9 inputs). A global-average-pooling head at these widths threw that away and trained
    worse than logistic regression on the course's budget (measured in notebook 02's capacity sweep).
    """

    def __init__(self, cfg: StudentConfig = StudentConfig()):
        super().__init__()
        self.cfg = cfg
        if len(cfg.widths) != 3:
            raise ValueError(f"a student has three blocks: widths must hold three channel counts, got {cfg.widths}.")
        for width in cfg.widths:
            validate.integer(width, "each width", minimum=1)
        validate.integer(cfg.depth, "depth", minimum=1)
        w1, w2, w3 = cfg.widths
        self.block1 = ConvBlock(1, w1, cfg.depth, batch_norm=cfg.batch_norm)
        self.block2 = ConvBlock(w1, w2, cfg.depth, pool=True, batch_norm=cfg.batch_norm)
        self.block3 = ConvBlock(w2, w3, cfg.depth, pool=True, batch_norm=cfg.batch_norm)
        self.pool = nn.MaxPool2d(2)  # 7 x 7 -> 3 x 3
        self.head = nn.Linear(w3 * 9, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, 28, 28)
        _check_images(x)
        x = self.block3(self.block2(self.block1(x)))  # (B, w3, 7, 7)
        return self.head(self.pool(x).flatten(1))  # (B, w3 * 9) -> (B, num_classes)


# name -> shape, smallest first. The name is the parameter count, rounded (a test checks it).
STUDENTS: dict[str, StudentConfig] = {
    "cnn-2k": StudentConfig((4, 8, 8)),
    "cnn-5k": StudentConfig((8, 16, 16)),
    "cnn-9k": StudentConfig((8, 16, 32)),
    "cnn-29k": StudentConfig((16, 32, 64)),
    "cnn-104k": StudentConfig((32, 64, 128)),
}
DEFAULT_STUDENT = "cnn-9k"  # the course's default image student (at most 10k parameters)
TEACHER_NAME = "resnet-teacher"  # the shipped teacher's model name (unique across the course's domains)
TEACHERS: dict[str, dict] = {TEACHER_NAME: {"widths": (32, 64, 128), "blocks": 1}}
# Students of the feature-distillation lessons, named like STUDENTS: <family>-<parameters in thousands>k.
# deep-cnn: FitNets' regime (Romero et al. 2015), deeper than the teacher (3 convs per block, 9 in all, against the
# teacher's 7) and 4x thinner, a plain conv + ReLU stack without batch norm as in 2015: it trains poorly from scratch.
DEEP_STUDENTS: dict[str, StudentConfig] = {"deep-cnn-33k": StudentConfig((8, 16, 32), depth=3, batch_norm=False)}
# resnet: the teacher's own family, 4x thinner (attention transfer is between residual networks of one family,
# Zagoruyko and Komodakis 2017). Hookable paths as the teacher's: stem, layer1 (28 px), layer2 (14), layer3 (7), fc.
RESIDUAL_STUDENTS: dict[str, dict] = {"resnet-20k": {"widths": (8, 16, 32), "blocks": 1}}
BASELINES: dict[str, dict] = {"logreg": {"num_classes": 10}}  # the floor every student must beat on the same budget


def logistic_regression(num_classes: int = 10) -> nn.Sequential:
    """Multinomial logistic regression on the 784 pixels: ``softmax(W x + b)``, 7,850 parameters.

    The floor of the course: a student that cannot beat it on the same budget is not worth distilling into.
    """
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), linear=nn.Linear(28 * 28, num_classes)))


# Every model create() builds, name -> config: a StudentConfig, or the keyword arguments of ResNetTeacher (teacher,
# residual students) or of logistic_regression (baseline). The family dicts above group the same names for the lessons.
CONFIGS: dict[str, StudentConfig | dict] = {**TEACHERS, **STUDENTS, **DEEP_STUDENTS, **RESIDUAL_STUDENTS, **BASELINES}


def create(name: str, seed: int | None = None) -> nn.Module:
    """Build a fresh (untrained) model by its name in :data:`CONFIGS`: ``"resnet-teacher"``, one of
    :data:`STUDENTS`, :data:`DEEP_STUDENTS`, :data:`RESIDUAL_STUDENTS`, or ``"logreg"``.

    With ``seed`` the initial weights are reproducible. An unknown name raises
    :class:`cu.checkpoints.UnknownModelError` (a ``KeyError``) listing the known ones.
    """
    if name not in CONFIGS:
        raise checkpoints.UnknownModelError(f"unknown image model name {name!r}; choose one of {list(CONFIGS)}, or build "
                                            "cu.images.models.Student(StudentConfig(widths=..., depth=...)) for another "
                                            "shape.")
    if seed is not None:
        torch.manual_seed(seed)
    model_config = CONFIGS[name]
    if isinstance(model_config, StudentConfig):
        return Student(model_config)
    if name in BASELINES:
        return logistic_regression(**model_config)
    return ResNetTeacher(**model_config)


TEACHER_CARD = "fashion_teacher.json"
RETRAIN = ("Restore it with `git checkout -- course_utils/weights` or retrain with "
           "`python -m course_utils.cli.train_teacher`.")


def teacher_card(weights_dir: str | Path | None = None) -> dict:
    """The shipped teacher's model card (accuracy, epochs, seed, sha256, time, hardware)."""
    return checkpoints.read_card(Path(weights_dir or config.WEIGHTS_DIR) / TEACHER_CARD, RETRAIN)


def load_teacher(weights_dir: str | Path | None = None, device: str | torch.device | None = None) -> nn.Module:
    """The shipped, trained teacher in eval mode, after checking its sha256 against the card.

    Loaded with ``torch.load(weights_only=True)``, which refuses arbitrary pickled code.
    """
    folder = Path(weights_dir or config.WEIGHTS_DIR)
    card = teacher_card(folder)
    path = checkpoints.verified(folder / card["weights_file"], card["sha256"], "teacher checkpoint", RETRAIN)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = create(card["model"])
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise checkpoints.CheckpointError(f"{path} does not fit the model {card['model']!r}: {error}. "
                                          f"{RETRAIN}") from error
    return model.to(config.device() if device is None else device).eval()


def load_teacher_logits(split: str = "train", weights_dir: str | Path | None = None) -> torch.Tensor:
    """The teacher's logits ``(N, 10)`` for a whole Fashion-MNIST split, cached at training time.

    Valid for training students only without data augmentation: an augmented image would
    need the teacher's logits for that augmented image, not the cached ones.
    """
    folder = Path(weights_dir or config.WEIGHTS_DIR)
    card = teacher_card(folder)
    path = checkpoints.verified(folder / card["logits_file"], card["logits_sha256"], "teacher-logits cache",
                                RETRAIN)
    logits = torch.load(path, map_location="cpu", weights_only=True)
    if split not in logits:
        raise ValueError(f"split must be one of {sorted(logits)}, got {split!r}.")
    return logits[split].float()
