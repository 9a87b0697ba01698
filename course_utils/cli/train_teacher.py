"""Train the course's Fashion-MNIST teacher reproducibly and write it with its model card.

    python -m course_utils.cli.train_teacher            # the shipped recipe (uses a GPU if present)
    python -m course_utils.cli.train_teacher --epochs 1 --out /tmp/teacher   # a quick try

Writes ``fashion_teacher.pt`` (state_dict), ``fashion_teacher_logits.pt`` (the teacher's
logits on both splits, without augmentation) and ``fashion_teacher.json`` (the model card).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from .. import checkpoints, config, evaluate, report, train, validate
from ..images import data, models


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random shift of up to 2 pixels (pad and crop), per image."""
    batch = images.shape[0]
    flip = torch.rand(batch, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    padded = nn.functional.pad(images, (2, 2, 2, 2), value=float(-data.MEAN / data.STD))  # (B, 1, 32, 32)
    dy, dx = torch.randint(0, 5, (2, batch), generator=generator)
    rows = (dy[:, None] + torch.arange(28))[:, :, None]  # (B, 28, 1)
    cols = (dx[:, None] + torch.arange(28))[:, None, :]  # (B, 1, 28)
    return padded[torch.arange(batch)[:, None, None], 0, rows, cols].unsqueeze(1)  # (B, 1, 28, 28)



def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=validate.positive_int, default=10)
    parser.add_argument("--seed", type=validate.non_negative_int, default=0)
    parser.add_argument("--lr", type=validate.positive_float, default=0.1)
    parser.add_argument("--batch-size", type=validate.positive_int, default=128)
    parser.add_argument("--out", type=Path, default=config.WEIGHTS_DIR)
    parser.add_argument("--threads", type=validate.positive_int, default=None, help="CPU threads for PyTorch (default: all)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    train.set_seed(args.seed)
    device = config.device()
    train_set, test_set = data.load_fashion_mnist("train"), data.load_fashion_mnist("test")
    model = models.create(models.TEACHER_NAME, seed=args.seed).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loader = train_set.loader(batch_size=args.batch_size, shuffle=True, seed=args.seed)
    total = args.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=total, pct_start=0.15)
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        for images, labels in loader:
            images = augment(images, generator).to(device)
            loss = nn.functional.cross_entropy(model(images), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        test_accuracy = evaluate.accuracy(model, test_set.images, test_set.labels)
        print(f"epoch {epoch}/{args.epochs}  loss {loss.item():.3f}  test accuracy {test_accuracy:.4f}  "
              f"{time.perf_counter() - start:.0f}s", flush=True)
    seconds = time.perf_counter() - start

    model = model.cpu().eval()
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "fashion_teacher.pt"
    torch.save(model.state_dict(), weights)
    logits = {split: evaluate.predict_logits(model, s.images) for split, s in (("train", train_set), ("test", test_set))}
    logits_path = args.out / "fashion_teacher_logits.pt"
    torch.save(logits, logits_path)
    card = {
        "model": models.TEACHER_NAME,
        "architecture": "ResNetTeacher(widths=(32, 64, 128), blocks=1)",
        "parameters": evaluate.count_parameters(model),
        "dataset": "Fashion-MNIST (train 60,000 / test 10,000)",
        "test_accuracy": round(evaluate.accuracy(model, test_set.images, test_set.labels), 4),
        "epochs": args.epochs,
        "seed": args.seed,
        "recipe": f"SGD nesterov momentum 0.9, one-cycle lr {args.lr}, weight decay 5e-4, batch "
                  f"{args.batch_size}, augmentation: horizontal flip + 2-pixel shift",
        "training_seconds": round(seconds, 1),
        "hardware": f"{device.type}: {report.hardware_name(device)}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "weights_file": weights.name,
        "sha256": checkpoints.sha256(weights),
        "logits_file": logits_path.name,
        "logits_sha256": checkpoints.sha256(logits_path),
    }
    (args.out / models.TEACHER_CARD).write_text(json.dumps(card, indent=2) + "\n")
    print(json.dumps(card, indent=2))
    return card


if __name__ == "__main__":
    main()
