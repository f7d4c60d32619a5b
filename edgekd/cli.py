"""The command line: parse, load the recipe, call one function. Errors become one line and exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edgekd import __version__
from edgekd.errors import EdgekdError


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set train.steps=100 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgekd", description="Distill diffusion models into edge-ready students.")
    parser.add_argument("--version", action="version", version=f"edgekd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("quickstart", help="distill the built-in Fashion-MNIST teacher, export to ONNX, profile (CPU, minutes)")
    p.add_argument("--run-dir", default="runs/quickstart")
    p.add_argument("--resume", action="store_true")
    _add_overrides(p)

    p = sub.add_parser("distill", help="record teacher trajectories and train a student from RECIPE")
    p.add_argument("recipe")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    _add_overrides(p)

    p = sub.add_parser("sample", help="write a grid of teacher and student samples on the same noise")
    p.add_argument("run")
    p.add_argument("-n", "--num", type=int, default=None, help="images (default 32; 8 with --previews)")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--teacher-steps", type=int, default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--previews", action="store_true",
                   help="layerwise (adv_kd) students: every block's head next to the teacher's state it learned "
                        "(the recipe's teacher steps; --teacher-steps is ignored)")

    p = sub.add_parser("export", help="export a run's student (onnx|tflite|coreml|all) and check it against PyTorch")
    p.add_argument("run")
    # targets and precisions are checked by edgekd.export (one clear line, exit 2), not by argparse choices
    p.add_argument("--target", default="onnx", help="onnx (default), tflite, coreml or all")
    p.add_argument("--precision", default="fp32",
                   help="fp32 (default), fp16, int8 (onnx: NNCF static QDQ with mixed-precision fallback; tflite: "
                        "dynamic-range; coreml: weights), int8_static (tflite), palettize4|palettize6|palettize8 "
                        "(coreml); see docs/quantization.md")
    p.add_argument("--teacher", action="store_true", help="export the teacher's denoising step instead of the student")
    p.add_argument("--batch", type=int, default=None,
                   help="fix the batch size (onnx default: dynamic; tflite/coreml default: 1)")
    p.add_argument("--psnr-min", type=float, default=None,
                   help="parity bar in dB (default: recipe export.psnr_min; 25 for int8)")
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo",
                   help="torch.onnx path: dynamo (default, modern) or torchscript (faster, legacy)")
    p.add_argument("--compute-units", default="ALL", help="coreml: ALL (default), CPU_AND_NE, CPU_AND_GPU, CPU_ONLY")
    p.add_argument("--deployment-target", default="iOS17", help="coreml minimum deployment target (default iOS17)")

    p = sub.add_parser("profile", help="student against teacher: latency, size, MACs, FID, PSNR")
    p.add_argument("run")
    p.add_argument("--fid-samples", type=int, default=None)
    p.add_argument("--teacher-steps", type=int, nargs="+", default=None)
    p.add_argument("--repeats", type=int, default=None)

    p = sub.add_parser("compress", help="prune (+ recover by distillation) and/or quantize a run into a derived run")
    p.add_argument("run")
    p.add_argument("--prune", type=float, default=None, metavar="RATIO",
                   help="fraction of channels to remove, 0 < RATIO < 1 (default: recipe compress.prune.ratio)")
    p.add_argument("--importance", default=None, help="l1, l2 (default), taylor, lamp or random")
    p.add_argument("--recover-steps", type=int, default=None, metavar="N",
                   help="distillation steps from the unpruned model after pruning (0: none; default 500)")
    p.add_argument("--quantize", action="store_true", help="quantize too (recipe compress.quantize, or its defaults)")
    p.add_argument("--teacher", action="store_true", help="prune the run's teacher instead of its student")
    p.add_argument("--fid-samples", type=int, default=None, help="images for the report's FID (default: profile.fid_samples)")
    p.add_argument("--out", default=None, help="the derived run directory (default RUN/compressed/pruned-PCT)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted recovery in the derived run")
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo",
                   help="torch.onnx path for the report's ONNX models and the derived run's export")
    _add_overrides(p)

    sub.add_parser("doctor", help="Python, torch, backends, GPU and data: what edgekd can use here")

    teacher = sub.add_parser("teacher", help="teacher utilities").add_subparsers(dest="teacher_command", required=True)
    p = teacher.add_parser("train", help="train a DDPM teacher (diffusers UNet2DModel) from RECIPE")
    p.add_argument("recipe")
    p.add_argument("--resume", action="store_true")
    _add_overrides(p)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.command == "doctor":
        from edgekd.doctor import doctor

        return doctor()
    if args.command == "teacher":
        from edgekd.recipe import load_teacher_recipe
        from edgekd.teachers.train_ddpm import train_teacher

        recipe = load_teacher_recipe(args.recipe, args.overrides)
        out = train_teacher(recipe, resume=args.resume)
        print(f"teacher saved to {out}")
        return 0
    if args.command == "quickstart":
        from edgekd.pipeline import quickstart

        return quickstart(Path(args.run_dir), args.overrides, resume=args.resume)
    if args.command == "distill":
        from edgekd.distill import distill
        from edgekd.recipe import load_recipe

        recipe = load_recipe(args.recipe, args.overrides)
        run_dir = distill(recipe, resume=args.resume)
        if os.environ.get("RANK", "0") == "0":  # under torchrun, once
            print(f"student saved to {run_dir / 'student'}")
        return 0
    if args.command == "sample":
        from edgekd.pipeline import sample_grid

        num = args.num or (8 if args.previews else 32)
        print(sample_grid(Path(args.run), num, args.seed, args.teacher_steps, args.out, previews=args.previews))
        return 0
    if args.command == "export":
        from edgekd.export import export_all, export_run

        options = dict(teacher=args.teacher, batch=args.batch, psnr_min=args.psnr_min, exporter=args.exporter,
                       precision=args.precision, compute_units=args.compute_units,
                       deployment_target=args.deployment_target)
        if args.target == "all":
            export_all(Path(args.run), **options)
        else:
            export_run(Path(args.run), target=args.target, **options)
        return 0
    if args.command == "compress":
        from edgekd.compress.run import compress

        flags = {"ratio": args.prune, "importance": args.importance, "recover_steps": args.recover_steps}
        compress(Path(args.run), flags, quantize=args.quantize, overrides=args.overrides, teacher=args.teacher,
                 out=Path(args.out) if args.out else None, fid_samples=args.fid_samples, resume=args.resume,
                 exporter=args.exporter)
        return 0
    if args.command == "profile":
        from edgekd.profile.run import profile_run

        profile_run(Path(args.run), fid_samples=args.fid_samples, teacher_steps=args.teacher_steps, repeats=args.repeats)
        return 0
    raise AssertionError(args.command)


def quiet_libraries() -> None:
    """Keep a command's output to its own lines.

    litert-torch pulls in torchao, whose import (through diffusers) logs failed CUDA-kernel loads and pytree
    deprecations on a CPU build; the ONNX exporter logs skipped torchvision ops; diffusers suggests accelerate.
    """
    import logging

    os.environ.setdefault("NNCF_CI", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    for noisy in ("torchao", "torch.utils._pytree", "torch.onnx._internal.exporter._registration",
                  "diffusers.models.modeling_utils"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except EdgekdError as exc:
        print(f"edgekd: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
