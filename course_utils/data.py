"""Data primitives for every domain: a fast in-memory loader and a stratified, seeded sample.

The data sets themselves live with their domain: Fashion-MNIST in ``cu.images.data``, the simulated vibration
windows in ``cu.vibration``, the text corpus in ``cu.language``.
"""

from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from . import validate


def stratified_indices(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` seeded indices into ``labels`` with (as nearly as possible) the same class balance."""
    total = len(labels)
    n = validate.integer(n, "subset size", minimum=0, maximum=total, hint=f"{total} is the split's size.")
    generator = torch.Generator().manual_seed(seed)
    classes, counts = labels.unique(return_counts=True)
    quota = (counts.double() * n / total).floor().long()
    remainder = (counts.double() * n / total) - quota  # largest remainders get the leftover places
    for k in remainder.argsort(descending=True)[: n - int(quota.sum())]:
        quota[k] += 1
    chosen = []
    for cls, q in zip(classes, quota):
        members = (labels == cls).nonzero().flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[: int(q)]])
    picked = torch.cat(chosen)
    return picked[torch.randperm(len(picked), generator=generator)]


def make_loader(*tensors: torch.Tensor, batch_size: int = 128, shuffle: bool = True,
                seed: int = 0) -> DataLoader:
    """A DataLoader over in-memory tensors that slices whole batches at once (fast on a CPU).

    Every tensor must have the same first dimension; batches are tuples in the same order.
    Shuffling is seeded, so the same seed gives the same batch order.
    """
    if not tensors:
        raise ValueError("make_loader needs at least one tensor.")
    for position, tensor in enumerate(tensors):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"make_loader takes tensors; argument {position} is a {type(tensor).__name__}: convert it "
                            "with torch.as_tensor(...).")
    sizes = {len(t) for t in tensors}
    if len(sizes) != 1:
        raise ValueError(f"all tensors must have the same length, got lengths {[len(t) for t in tensors]}.")
    validate.non_empty(tensors[0], "the first tensor", hint="An empty subset? A loader needs at least one example.")
    batch_size = validate.integer(batch_size, "batch_size", minimum=1)
    seed = validate.integer(seed, "seed")
    dataset = TensorDataset(*tensors)
    sampler = (RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)) if shuffle
               else SequentialSampler(dataset))
    # A TensorDataset indexed with a list returns the whole batch, so no per-example collation.
    return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None)
