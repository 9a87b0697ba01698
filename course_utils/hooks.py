"""Capture intermediate activations with forward hooks, addressed by module path.

    with cu.hooks.capture(student, ["block2", "block3"]) as features:
        logits = student(images)          # features["block2"] now holds block2's output

The model is never edited to return features, and every hook is removed on exit, even
when the block raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


def module_paths(model: nn.Module) -> list[str]:
    """Every addressable submodule path of ``model`` (``""``, the model itself, left out)."""
    return [name for name, _ in model.named_modules() if name]


def resolve(model: nn.Module, path: str) -> nn.Module:
    """``model.get_submodule(path)``, with an error that lists the valid paths."""
    try:
        return model.get_submodule(path)
    except AttributeError:
        valid = module_paths(model)
        shown = ", ".join(valid[:40]) + (" ..." if len(valid) > 40 else "")
        raise KeyError(f"{type(model).__name__} has no submodule {path!r}. Valid paths: {shown}") from None


class Captured(dict):
    """The dict :func:`capture` fills: asking for a path that produced no output says why, instead of a bare KeyError."""

    def __init__(self, paths: Sequence[str]):
        super().__init__()
        self.paths = list(paths)

    def __missing__(self, path: str) -> torch.Tensor:
        if path in self.paths:
            raise KeyError(f"{path!r} is hooked but produced no output yet: run the model's forward pass inside the "
                           "`with` block (and check that forward() really calls that module).")
        raise KeyError(f"{path!r} was not captured; the captured paths are {self.paths}.")


@contextmanager
def capture(model: nn.Module, paths: Sequence[str], detach: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Fill a dict ``{path: output}`` on every forward pass while the block runs.

    ``detach=True`` stores detached outputs (for a teacher or for plotting); keep the default
    for a student, whose features must carry gradients into the loss.
    """
    if isinstance(paths, str):
        paths = [paths]
    modules = {path: resolve(model, path) for path in paths}  # fail before registering anything
    outputs = Captured(list(modules))
    handles = []

    def make_hook(path: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            if detach:  # a module may return a tensor or a tuple/list of tensors
                output = torch.utils._pytree.tree_map(lambda t: t.detach() if torch.is_tensor(t) else t, output)
            outputs[path] = output
        return hook

    try:
        for path, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(path)))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def capture_over(model: nn.Module, images: torch.Tensor, paths: Sequence[str],
                 transform: Callable[[torch.Tensor], torch.Tensor] = lambda features: features,
                 batch_size: int = 500) -> list[torch.Tensor]:
    """``model``'s outputs at ``paths`` for all of ``images``, one tensor per path: the model runs in eval mode (its
    mode is restored afterwards) on batches of ``batch_size``, and each batch's output goes through ``transform``
    (e.g. to float16, or to an attention map) and to the CPU before the batches are concatenated."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks: dict[str, list[torch.Tensor]] = {path: [] for path in paths}
    try:
        with capture(model, paths, detach=True) as features:
            for start in range(0, len(images), batch_size):
                model(images[start:start + batch_size].to(device))
                for path in paths:
                    chunks[path].append(transform(features[path]).cpu())
    finally:
        model.train(was_training)
    return [torch.cat(chunks[path]) for path in paths]
