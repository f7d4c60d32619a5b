"""FID of a teacher at several DDIM step counts, and a grid of its samples (the README's teacher figures).

    python benchmarks/teacher_quality.py [--teacher builtin:teachers/fmnist-tiny] [--samples 1000] [--steps 10 25 50]

Prints a table; writes the grid to docs/images/<name>-samples.png. FID uses edgekd's Fashion-MNIST classifier
features against the 10k test images (see docs/design.md), so it compares teachers and students within edgekd.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from edgekd.cli import quiet_libraries
from edgekd.data import load_dataset
from edgekd.grid import labelled_rows
from edgekd.noise import make_noise
from edgekd.profile.classifier import FeatureNet, load_classifier
from edgekd.profile.quality import class_histogram, fid
from edgekd.recipe import DataConfig
from edgekd.teachers.diffusers_teacher import load_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="builtin:teachers/fmnist-tiny")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50])
    parser.add_argument("--seed", type=int, default=5_000_000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    quiet_libraries()

    teacher = load_teacher(args.teacher)
    real = load_dataset(DataConfig(split="test"))
    features = FeatureNet(load_classifier())
    noise = make_noise(args.seed, 0, args.samples, teacher.sample_shape)

    def cond(start: int, count: int) -> torch.Tensor | None:
        """A class-conditional teacher draws class-balanced samples (sample i: class i mod K, no guidance; per-class
        figures: benchmarks/teacher_classes.py)."""
        return None if teacher.condition is None else teacher.condition.draw(start, count)

    rows, grid = [], {}
    for steps in args.steps:
        start = time.perf_counter()
        images = torch.cat([teacher.sample(noise[i : i + 250], steps, condition=cond(i, len(noise[i : i + 250])))[0]
                            for i in range(0, len(noise), 250)]).clamp(-1, 1)
        seconds = time.perf_counter() - start
        classes = int((class_histogram(load_classifier(), images) > 0.02).sum())
        rows.append((steps, fid(real, images, features), classes, 1000 * seconds / len(noise)))
        grid[f"DDIM-{steps}"] = images[:16]
    train = load_dataset(DataConfig(split="train", limit=args.samples))
    floor = fid(real, train, features)

    print(f"teacher {args.teacher}: {args.samples} samples, FID against {len(real)} Fashion-MNIST test images")
    print("| sampler | FID | classes seen (>2%) | ms/image (torch, batch 250) |")
    print("|---|---|---|---|")
    for steps, value, classes, ms in rows:
        print(f"| DDIM-{steps} | {value:.2f} | {classes}/10 | {ms:.1f} |")
    print(f"| real train images (floor) | {floor:.2f} | - | - |")
    name = Path(str(teacher.source)).name
    out = Path(args.out) if args.out else Path("docs/images") / f"{name}-samples.png"
    print(f"grid: {labelled_rows(grid, out, crop=(2, 2, 28, 28))}")


if __name__ == "__main__":
    main()
