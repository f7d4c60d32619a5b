"""Train the Fashion-MNIST classifier whose embedding is edgekd's FID feature network, and ship it.

Writes ``edgekd/assets/fid/fmnist-classifier/{model.safetensors,config.json}`` atomically: the files go to a
temporary sibling folder that is renamed into place, so a crash never leaves half an asset behind.

    python benchmarks/train_fid_classifier.py [--data /usr/share/datasets/fashion-mnist] [--epochs 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from edgekd.paths import ASSETS, DEFAULT_FASHION_MNIST
from edgekd.profile.classifier import file_size_bytes, save_classifier, train_classifier

TARGET = ASSETS / "fid" / "fmnist-classifier"
MAX_BYTES = 2 * 1024 * 1024


def replace_folder_atomically(staged: Path, target: Path) -> None:
    """Move ``staged`` to ``target``; an existing ``target`` is swapped out first and removed afterwards."""
    backup = None
    if target.exists():
        backup = target.with_name(f".{target.name}.old-{int(time.time())}")
        target.rename(backup)
    try:
        staged.rename(target)
    except OSError:
        if backup is not None:
            backup.rename(target)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_FASHION_MNIST), help="folder with the Fashion-MNIST idx .gz files")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", default=str(TARGET), help="destination folder (default: the packaged asset)")
    args = parser.parse_args(argv)

    rows: list[tuple[int, float, float]] = []
    start = time.perf_counter()
    model, accuracy = train_classifier(
        args.data, epochs=args.epochs, seed=args.seed, batch_size=args.batch_size,
        on_epoch=lambda epoch, loss, acc: rows.append((epoch, loss, acc)),
    )
    seconds = time.perf_counter() - start

    print(f"\n{'epoch':>5} | {'train loss':>10} | {'test acc':>8}")
    print(f"{'-' * 5}-+-{'-' * 10}-+-{'-' * 8}")
    for epoch, loss, acc in rows:
        print(f"{epoch:>5} | {loss:>10.4f} | {acc:>8.4f}")

    info = {
        "purpose": "feature network for FID on Fashion-MNIST-like 1x32x32 images in [-1, 1] (penultimate embedding)",
        "dataset": "fashion_mnist",
        "test_accuracy": round(accuracy, 6),
        "epochs": args.epochs,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "train_seconds": round(seconds, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch_version": torch.__version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "made_by": "benchmarks/train_fid_classifier.py",
    }
    target = Path(args.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        save_classifier(model, staged, info)
        size = file_size_bytes(staged)
        if size > MAX_BYTES:
            raise SystemExit(f"classifier is {size} bytes, over the {MAX_BYTES} byte budget for a shipped asset")
        staged.chmod(0o755)  # mkdtemp makes 0700 folders; a shipped asset must be readable by all
        for file in staged.iterdir():
            file.chmod(0o644)
        replace_folder_atomically(staged, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    print(f"\ntest accuracy {accuracy:.4f}, {info['parameters']} parameters, {size / 1024:.0f} KiB, "
          f"{seconds:.0f} s -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
