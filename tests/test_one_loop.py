"""train.fit is the course's one training loop: its optimizer/scheduler/grad_clip options, the teacher scripts
trained through it (equal, weight for weight, to the hand-written loops they replaced), and no other module of
the package steps an optimizer."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import course_utils as cu
from course_utils.cli import train_lm_teacher, train_teacher

PACKAGE = Path(cu.__file__).parent


def _same_weights(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    one, two = first.state_dict(), second.state_dict()
    return list(one) == list(two) and all(torch.equal(one[name], two[name]) for name in one)


@pytest.fixture
def one_thread():
    """One CPU thread for the short teacher runs: many times faster on a busy machine; the paths compared share it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- the image teacher: fit_teacher against the hand-written loop it replaced --------------------------------------

def _image_teacher_by_hand(train_set: cu.images.ImageSet, epochs: int, seed: int, lr: float, batch_size: int):
    """The loop train_teacher.main ran before it used train.fit (kept here as the reference)."""
    cu.train.set_seed(seed)
    model = cu.images.create("resnet-teacher", seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loader = train_set.loader(batch_size=batch_size, shuffle=True, seed=seed)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * len(loader),
                                                    pct_start=0.15)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for images, labels in loader:
            images = train_teacher.augment(images, generator)
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


def _image_teacher_by_fit(train_set: cu.images.ImageSet, epochs: int, seed: int, lr: float, batch_size: int):
    cu.train.set_seed(seed)
    model = cu.images.create("resnet-teacher", seed=seed)
    history = train_teacher.fit_teacher(model, train_set, epochs=epochs, seed=seed, lr=lr, batch_size=batch_size,
                                        device="cpu", progress=False)
    return model, history


def test_image_teacher_trains_through_fit_exactly_as_the_old_loop(small_train, one_thread):
    train_set = small_train.subset(range(32))  # 2 batches of 16, 2 epochs: 4 steps across the one-cycle peak
    settings = dict(epochs=2, seed=5, lr=0.1, batch_size=16)
    reference = _image_teacher_by_hand(train_set, **settings)
    model, history = _image_teacher_by_fit(train_set, **settings)
    again, _ = _image_teacher_by_fit(train_set, **settings)
    assert _same_weights(model, again)
    assert _same_weights(model, reference)
    assert len(history.step_loss) == 4 and history.epoch == [1, 2]
    assert not _same_weights(model, cu.images.create("resnet-teacher", seed=5))  # it trained


# --- the language-model teacher ---------------------------------------------------------------------------------

def _lm_ids(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 96, (3000,), generator=generator), torch.randint(0, 96, (3000,), generator=generator)


def _lm_teacher_by_hand(steps: int, seed: int, lr: float, warmup: int, batch_size: int):
    """The loop train_lm_teacher.main ran before it used train.fit (kept here as the reference)."""
    text_ids, addition_ids = _lm_ids(seed)
    cu.train.set_seed(seed)
    model = cu.language.create("lm-teacher", seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        x, y = cu.language.mixed_windows(text_ids, addition_ids, batch_size, model.cfg.block_size, 0.5, generator)
        for group in optimizer.param_groups:
            group["lr"] = train_lm_teacher.lr_at(step, steps, lr, warmup)
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model.eval()


def _lm_teacher_by_fit(steps: int, seed: int, lr: float, warmup: int, batch_size: int):
    text_ids, addition_ids = _lm_ids(seed)
    cu.train.set_seed(seed)
    model = cu.language.create("lm-teacher", seed=seed)
    history = train_lm_teacher.fit_teacher(model, text_ids, addition_ids, steps=steps, seed=seed,
                                           batch_size=batch_size, lr=lr, warmup=warmup, progress=False)
    return model, history


def test_lm_teacher_trains_through_fit_exactly_as_the_old_loop(one_thread):
    settings = dict(steps=6, seed=3, lr=2e-3, warmup=2, batch_size=4)  # warm-up, then the cosine; clipping bites
    reference = _lm_teacher_by_hand(**settings)
    model, history = _lm_teacher_by_fit(**settings)
    again, _ = _lm_teacher_by_fit(**settings)
    assert _same_weights(model, again)
    assert _same_weights(model, reference)
    assert len(history.step_loss) == 6
    assert history.lr == [train_lm_teacher.lr_at(5, 6, 2e-3, 2)]  # the learning rate of the last step


# --- fit's optimizer, scheduler and grad_clip options -------------------------------------------------------------

def _tiny(seed: int = 0) -> tuple[torch.nn.Module, torch.utils.data.DataLoader]:
    generator = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    images, labels = torch.randn(40, 1, 3, 4, generator=generator), torch.randint(0, 3, (40,), generator=generator)
    return model, cu.data.make_loader(images, labels, batch_size=10, shuffle=False)


def test_default_optimizer_equals_an_explicit_adamw_with_the_same_schedule():
    model, loader = _tiny()
    history = cu.train.fit(model, loader, epochs=2, progress=False)
    explicit, loader = _tiny()
    optimizer = torch.optim.AdamW(explicit.parameters(), lr=3e-3, weight_decay=5e-4)
    again = cu.train.fit(explicit, loader, epochs=2, optimizer=optimizer, lr_schedule="cosine", progress=False)
    assert _same_weights(model, explicit) and history.step_loss == again.step_loss
    factory, loader = _tiny()
    cu.train.fit(factory, loader, epochs=2, optimizer=functools.partial(torch.optim.AdamW, lr=3e-3, weight_decay=5e-4),
                 progress=False)
    assert _same_weights(model, factory)


def test_scheduler_is_stepped_per_step_or_per_epoch_and_factories_get_the_count():
    counts = []

    def step_decay(optimizer, count):
        counts.append(count)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 0.5**k)

    model, loader = _tiny()
    history = cu.train.fit(model, loader, epochs=3, optimizer=functools.partial(torch.optim.SGD, lr=1.0),
                           scheduler=step_decay, progress=False)
    assert counts == [12] and history.lr == [0.5**3, 0.5**7, 0.5**11]  # 4 steps per epoch, the lr of its last step
    model, loader = _tiny()
    history = cu.train.fit(model, loader, epochs=3, optimizer=functools.partial(torch.optim.SGD, lr=1.0),
                           scheduler=step_decay, scheduler_interval="epoch", max_steps=6, progress=False)
    assert counts[-1] == 2 and history.lr == [1.0, 0.5]  # 6 steps: 2 epochs run, stepped after each


def test_grad_clip_bounds_the_update():
    model, loader = _tiny()
    start = [p.detach().clone() for p in model.parameters()]
    cu.train.fit(model, loader, epochs=1, optimizer=functools.partial(torch.optim.SGD, lr=1.0), lr_schedule="constant",
                 grad_clip=1e-3, max_steps=1, progress=False)
    moved = torch.cat([(p.detach() - s).flatten() for p, s in zip(model.parameters(), start)])
    assert moved.norm().item() == pytest.approx(1e-3, rel=1e-4)  # SGD, lr 1: the step is the clipped gradient


def test_fit_rejects_bad_optimizer_scheduler_and_clip_arguments():
    model, loader = _tiny()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    fit = functools.partial(cu.train.fit, model, loader, epochs=1, progress=False)
    with pytest.raises(ValueError, match="grad_clip"):
        fit(grad_clip=0.0)
    with pytest.raises(ValueError, match="scheduler_interval"):
        fit(scheduler_interval="batch")
    with pytest.raises(ValueError, match="set them on the optimizer"):
        fit(optimizer=sgd, lr=0.1)
    with pytest.raises(TypeError, match="optimizer must be"):
        fit(optimizer="sgd")
    with pytest.raises(TypeError, match="must return a torch.optim.Optimizer"):
        fit(optimizer=lambda params: None)
    other, _ = _tiny()
    with pytest.raises(ValueError, match="not the model's"):
        fit(optimizer=torch.optim.SGD(other.parameters(), lr=0.1))
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(sgd, 4)
    with pytest.raises(ValueError, match="not both"):
        fit(optimizer=sgd, scheduler=cosine, lr_schedule="constant")
    with pytest.raises(ValueError, match="another optimizer"):
        fit(scheduler=cosine)  # fit builds its own AdamW; the scheduler drives the SGD
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        fit(optimizer=sgd, scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau(sgd))
    with pytest.raises(TypeError, match="scheduler must be"):
        fit(optimizer=sgd, scheduler=3)


# --- only train.py steps an optimizer -----------------------------------------------------------------------------

OPTIMIZER_NAME = re.compile(r"optim|^opt$|^sgd$|^adam", re.IGNORECASE)  # optimizer, optim, opt, sgd, adamw ...


def _receiver(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""


def _is_torch_optimizer_call(node: ast.expr) -> bool:
    """``torch.optim.X(...)`` / ``optim.X(...)``, but not a learning-rate scheduler (``torch.optim.lr_scheduler``)."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and _receiver(node.func.value) == "optim")


def optimizer_steps(source: str) -> list[tuple[int, str]]:
    """``(line, code)`` of every optimizer step or ``zero_grad`` call in ``source``.

    Flags ``X.zero_grad(...)``, and ``X.step(...)`` where ``X`` is named like an optimizer or was assigned
    ``torch.optim.<Optimizer>(...)`` in the module. ``scheduler.step()`` and unrelated ``.step`` names pass.
    """
    tree = ast.parse(source)
    built = {target.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and _is_torch_optimizer_call(node.value)
             for target in node.targets if isinstance(target, ast.Name)}
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name, receiver = node.func.attr, _receiver(node.func.value)
            if name == "zero_grad" or (name == "step" and (OPTIMIZER_NAME.search(receiver) or receiver in built)):
                hits.append((node.lineno, ast.unparse(node)))
    return sorted(hits)


def test_the_scan_finds_optimizer_steps_and_passes_scheduler_steps():
    source = ("opt = torch.optim.SGD(ps)\nrun = torch.optim.AdamW(ps)\nopt.zero_grad()\nrun.step()\n"
              "self.optimizer.step()\nscheduler.step()\nsched = torch.optim.lr_scheduler.OneCycleLR(opt)\n"
              "sched.step()\nschedule.step(3)\nbar.step()\n")
    assert [line for line, _ in optimizer_steps(source)] == [3, 4, 5]


def test_only_train_py_steps_an_optimizer():
    found = {path.relative_to(PACKAGE).as_posix(): optimizer_steps(path.read_text(encoding="utf-8"))
             for path in sorted(PACKAGE.rglob("*.py"))}
    # train.fit is the one loop: it calls zero_grad and optimizer.step, and nothing else flags there
    assert [code for _, code in found.pop("train.py")] == ["optimizer.zero_grad(set_to_none=True)", "optimizer.step()"]
    elsewhere = {path: hits for path, hits in found.items() if hits}
    assert not elsewhere, f"only course_utils/train.py may step an optimizer (train through cu.train.fit): {elsewhere}"
