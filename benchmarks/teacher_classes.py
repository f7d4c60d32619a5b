"""Does a class-conditional teacher draw the class it is asked for? Per-class accuracy of its samples.

    python benchmarks/teacher_classes.py [--teacher builtin:teachers/fmnist-cond] [--per-class 50] [--steps 50]
                                         [--guidance 1 2 3] [--threads 2] [--json out.json]

For each guidance scale, sample ``per-class`` images of every class (sample i: class i mod K, noise
edgekd.noise.make_noise(seed, i): class-balanced and regenerable) with deterministic DDIM, and report the share of
each class's samples that edgekd's Fashion-MNIST classifier (builtin:fid/fmnist-classifier, the FID feature net)
assigns to the asked class. The classifier's own per-class accuracy on the 10k real test images is the ceiling
row: a teacher cannot score above what the classifier gets on real images of that class, except by drawing
over-typical ones (which guidance does). Chance (an unconditional teacher) is about 10%. FID is against the 10k
test images with the same feature net, on K * per-class samples: with few samples FID is biased upward, so compare
it only within one table.

Guidance s > 1 is classifier-free guidance (eps_null + s * (eps_class - eps_null)) through the teacher adapter;
it needs a teacher with a null label (edgekd teacher train with classes:, drop_prob > 0).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from edgekd.cli import quiet_libraries
from edgekd.data import load_dataset, load_labels
from edgekd.grid import labelled_rows
from edgekd.noise import make_noise
from edgekd.profile.classifier import FeatureNet, load_classifier, to_classifier_input
from edgekd.profile.quality import fid
from edgekd.recipe import DataConfig
from edgekd.teachers.diffusers_teacher import DiffusionTeacher, load_teacher


@torch.no_grad()
def predict(classifier: torch.nn.Module, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """The classifier's top-1 class of each image in [-1, 1]."""
    return torch.cat([classifier(to_classifier_input(images[i : i + batch])).argmax(1)
                      for i in range(0, len(images), batch)])


def per_class_accuracy(pred: torch.Tensor, asked: torch.Tensor, num_classes: int) -> list[float]:
    """Share of the samples asked for class c that the classifier assigns to c, for each c."""
    return [float((pred[asked == c] == c).double().mean()) for c in range(num_classes)]


@torch.no_grad()
def label_losses(teacher: DiffusionTeacher, count: int = 1000) -> dict[str, float]:
    """Epsilon MSE on ``count`` test images (fixed noise and timesteps, seed 0) with their true labels, the null
    label and shuffled labels: whether the network uses the label at all (true < shuffled), and what guidance
    has to work with (true < null)."""
    from diffusers import DDPMScheduler

    cfg = DataConfig(split="test", limit=count)
    x0, y = load_dataset(cfg), load_labels(cfg)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=gen)
    t = torch.randint(0, teacher.num_train_timesteps, (len(x0),), generator=gen)
    xt = DDPMScheduler.from_config(teacher.scheduler_config).add_noise(x0, noise, t)
    labels = {"true": y, "null": torch.full_like(y, teacher.condition.null if teacher.condition.null is not None else -1),
              "shuffled": y[torch.randperm(len(y), generator=gen)]}
    if teacher.condition.null is None:
        del labels["null"]
    return {k: float(((teacher.unet(xt, t, class_labels=v).sample - noise) ** 2).mean()) for k, v in labels.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="builtin:teachers/fmnist-cond")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    parser.add_argument("--seed", type=int, default=5_000_000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--grid", default=None, help="PNG of 8 samples per class at each guidance "
                        "(default docs/images/<teacher>-classes.png)")
    args = parser.parse_args()
    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)

    teacher = load_teacher(args.teacher)
    cond = teacher.condition
    if cond is None or cond.kind != "class":
        raise SystemExit(f"teacher {args.teacher} is not class-conditional")
    k = cond.num_classes
    classifier = load_classifier()
    features = FeatureNet(classifier)
    real = load_dataset(DataConfig(split="test"))
    real_labels = load_labels(DataConfig(split="test"))
    ceiling = per_class_accuracy(predict(classifier, real), real_labels, k)

    n = k * args.per_class
    noise = make_noise(args.seed, 0, n, teacher.sample_shape)
    asked = cond.draw(0, n)
    results, grid = [], {}
    for g in args.guidance:
        if g != 1.0 and cond.null is None:
            print(f"guidance {g:g}: skipped (teacher has no null label)")
            continue
        start = time.perf_counter()
        images = torch.cat([teacher.sample(noise[i : i + args.batch], args.steps, condition=asked[i : i + args.batch],
                                           guidance=g)[0] for i in range(0, n, args.batch)]).clamp(-1, 1)
        seconds = time.perf_counter() - start
        acc = per_class_accuracy(predict(classifier, images), asked, k)
        results.append({"guidance": g, "per_class": acc, "mean": sum(acc) / k, "fid": fid(real, images, features),
                        "ms_per_image": 1000 * seconds / n})
        order = torch.cat([torch.nonzero(asked == c).flatten()[:8] for c in range(k)])
        grid[f"DDIM-{args.steps}, guidance {g:g}: rows = classes 0..{k - 1}"] = images[order]

    names = [cond.name(c) for c in range(k)]
    print(f"teacher {args.teacher}: {args.per_class} samples per class, DDIM-{args.steps}, seed {args.seed}; "
          f"share of each class's samples that builtin:fid/fmnist-classifier assigns to the asked class")
    print("| | " + " | ".join(names) + " | mean | FID |")
    print("|---" * (k + 3) + "|")
    for r in results:
        print(f"| guidance {r['guidance']:g} | " + " | ".join(f"{a:.0%}" for a in r["per_class"])
              + f" | {r['mean']:.1%} | {r['fid']:.2f} |")
    print("| real test images (ceiling) | " + " | ".join(f"{a:.0%}" for a in ceiling)
          + f" | {sum(ceiling) / k:.1%} | - |")
    losses = label_losses(teacher)
    print("held-out epsilon MSE, 1000 test images, labels: " + ", ".join(f"{k} {v:.5f}" for k, v in losses.items()))
    name = Path(str(teacher.source)).name
    out = Path(args.grid) if args.grid else Path("docs/images") / f"{name}-classes.png"
    print(f"grid: {labelled_rows(grid, out, ncol=8, crop=(2, 2, 28, 28))}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "teacher": args.teacher, "per_class_samples": args.per_class, "steps": args.steps, "seed": args.seed,
            "classes": names, "results": results, "real_test_per_class": ceiling, "label_losses": losses},
            indent=2) + "\n")


if __name__ == "__main__":
    main()
