"""The command line: parse, load the recipe, call one function. Errors become one line and exit code 2."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edgekd import __version__
from edgekd.errors import EdgekdError
from edgekd.failure import describe_unexpected


class _Parser(argparse.ArgumentParser):
    """argparse with edgekd's error line: usage, then ``edgekd: error: ...`` naming the command's --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"edgekd: error: {message} (see `{self.prog} --help`)\n")


def int_range(lo: int | None = None, hi: int | None = None):  # type: ignore[no-untyped-def]
    """An argparse type: an integer within [lo, hi], so a bad number is argparse's one-line error, exit 2."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set train.steps=100 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgekd", description="Distill diffusion models into edge-ready students.")
    parser.add_argument("--version", action="version", version=f"edgekd {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full Python traceback of an error (also EDGEKD_DEBUG=1)")
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
    p.add_argument("-n", "--num", type=int_range(1, 4096), default=None, help="images (default 32; 8 with --previews)")
    p.add_argument("--seed", type=int_range(0, 2**31 - 1), default=123)
    p.add_argument("--teacher-steps", type=int_range(1, 1000), default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--previews", action="store_true",
                   help="layerwise (adv_kd) students: every block's head next to the teacher's state it learned "
                        "(the recipe's teacher steps; --teacher-steps is ignored)")
    p.add_argument("--class", dest="class_label", default=None, metavar="N|NAME",
                   help="class-conditional teachers: every image of this class (id or name; default: classes in turn)")
    p.add_argument("--prompt", default=None, help="text teachers: every image of this prompt (default: the recipe's "
                                                  "prompts in turn)")
    p.add_argument("--guidance", type=float, default=None,
                   help="the teacher row's classifier-free guidance (default: the recipe's teacher.guidance_scale; "
                        "the student learned that one and runs unguided)")

    p = sub.add_parser("export", help="export a run's student (onnx|tflite|coreml|all) and check it against PyTorch")
    p.add_argument("run")
    # targets and precisions are checked by edgekd.export (one clear line, exit 2), not by argparse choices
    p.add_argument("--target", default="onnx", help="onnx (default), tflite, coreml or all")
    p.add_argument("--precision", default="fp32",
                   help="fp32 (default), fp16, int8 (onnx: NNCF static QDQ with mixed-precision fallback; tflite: "
                        "dynamic-range; coreml: weights), int8_static (tflite), palettize4|palettize6|palettize8 "
                        "(coreml); see docs/quantization.md")
    p.add_argument("--teacher", action="store_true", help="export the teacher's denoising step instead of the student")
    p.add_argument("--batch", type=int_range(1), default=None,
                   help="fix the batch size (onnx default: dynamic; tflite/coreml default: 1)")
    p.add_argument("--psnr-min", type=float, default=None,
                   help="parity bar in dB (default: recipe export.psnr_min; 25 for int8)")
    p.add_argument("--exporter", choices=["dynamo", "torchscript"], default="dynamo",
                   help="torch.onnx path: dynamo (default, modern) or torchscript (faster, legacy)")
    p.add_argument("--compute-units", default="ALL", help="coreml: ALL (default), CPU_AND_NE, CPU_AND_GPU, CPU_ONLY")
    p.add_argument("--deployment-target", default="iOS17", help="coreml minimum deployment target (default iOS17)")
    p.add_argument("--into-app", choices=["web", "android", "ios"], default=None,
                   help="also copy the model + manifest where that sample app reads it (apps/<app>/...)")
    p.add_argument("--apps-dir", default=None, help="the apps/ folder for --into-app (default: beside edgekd)")

    p = sub.add_parser("profile", help="every generator of a run on the same noise: latency, memory, size, MACs, FID, KID, PSNR")
    p.add_argument("run")
    p.add_argument("--fid-samples", type=int_range(2), default=None)
    p.add_argument("--teacher-steps", type=int_range(1, 1000), nargs="+", default=None)
    p.add_argument("--repeats", type=int_range(1), default=None)
    p.add_argument("--import", dest="import_file", default=None, metavar="FILE.json",
                   help="merge a device benchmark from a sample app (docs/device-benchmark.md) instead of profiling")
    p.add_argument("--threads", type=int_range(1, 256), nargs="+", default=None,
                   help="thread counts to time (default: recipe profile.threads; capped by the machine's cores)")
    p.add_argument("--inception", default=None, metavar="PATH",
                   help="FID/KID with a local Inception: a TorchScript file (NVlabs inception-2015-12-05.pt) or an "
                        "ONNX feature extractor (default: edgekd's Fashion-MNIST classifier)")

    p = sub.add_parser("report", help="render RUN/report/index.html and report.md (plots, grids, exports, devices)")
    p.add_argument("run")
    p.add_argument("--profile", action="store_true", help="profile the run first (also done when it has no profile)")
    p.add_argument("--fid-samples", type=int_range(2), default=None)
    p.add_argument("--repeats", type=int_range(1), default=None)
    p.add_argument("--inception", default=None, metavar="PATH", help="as for `edgekd profile`")

    p = sub.add_parser("demo", help="serve the web app with a run's exported model on 127.0.0.1 (Ctrl-C stops)")
    p.add_argument("run")
    p.add_argument("--target", choices=["onnx", "tflite"], default="onnx")
    p.add_argument("--port", type=int_range(0, 65535), default=8765, help="port on 127.0.0.1 (default 8765; 0: a free one)")
    p.add_argument("--manifest", default=None, help="manifest file name in exports/TARGET (default student.manifest.json)")
    p.add_argument("--apps-dir", default=None, help="the apps/ folder holding web/ (default: beside edgekd)")

    p = sub.add_parser("compress", help="prune (+ recover by distillation) and/or quantize a run into a derived run")
    p.add_argument("run")
    p.add_argument("--prune", type=float, default=None, metavar="RATIO",
                   help="fraction of channels to remove, 0 < RATIO < 1 (default: recipe compress.prune.ratio)")
    p.add_argument("--importance", default=None, help="l1, l2 (default), taylor, lamp or random")
    p.add_argument("--recover-steps", type=int, default=None, metavar="N",
                   help="distillation steps from the unpruned model after pruning (0: none; default 500)")
    p.add_argument("--quantize", action="store_true", help="quantize too (recipe compress.quantize, or its defaults)")
    p.add_argument("--teacher", action="store_true", help="prune the run's teacher instead of its student")
    p.add_argument("--fid-samples", type=int_range(2), default=None, help="images for the report's FID (default: profile.fid_samples)")
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
        print(sample_grid(Path(args.run), num, args.seed, args.teacher_steps, args.out, previews=args.previews,
                          class_label=args.class_label, prompt=args.prompt, guidance=args.guidance))
        return 0
    if args.command == "export":
        from edgekd.export import export_all, export_run

        options = dict(teacher=args.teacher, batch=args.batch, psnr_min=args.psnr_min, exporter=args.exporter,
                       precision=args.precision, compute_units=args.compute_units,
                       deployment_target=args.deployment_target)
        if args.into_app and args.target == "all":
            raise EdgekdError("--into-app copies one export: pass one --target (onnx, tflite or coreml)")
        if args.target == "all":
            export_all(Path(args.run), **options)
        else:
            path = export_run(Path(args.run), target=args.target, **options)
            if args.into_app:
                from edgekd.apps.into_app import copy_into_app
                from edgekd.export.manifest import manifest_path

                manifest = path if path.name.endswith(".manifest.json") else manifest_path(path)
                dest = copy_into_app(manifest, args.into_app, args.apps_dir)
                print(f"{args.into_app} app: {manifest.name} and its model files copied to {dest}")
        return 0
    if args.command == "compress":
        from edgekd.compress.run import compress

        flags = {"ratio": args.prune, "importance": args.importance, "recover_steps": args.recover_steps}
        compress(Path(args.run), flags, quantize=args.quantize, overrides=args.overrides, teacher=args.teacher,
                 out=Path(args.out) if args.out else None, fid_samples=args.fid_samples, resume=args.resume,
                 exporter=args.exporter)
        return 0
    if args.command == "demo":
        from edgekd.apps.demo import serve

        return serve(Path(args.run), args.target, args.port, args.manifest, args.apps_dir)
    if args.command == "profile" and args.import_file:
        from edgekd.profile.device_import import import_benchmark

        row = import_benchmark(Path(args.run), Path(args.import_file))
        print(f"imported {row['label']}: median {row['latency_ms']['median']:.2f} ms into {Path(args.run) / 'report'}")
        return 0
    if args.command == "profile":
        from edgekd.profile.run import profile_run

        profile_run(Path(args.run), fid_samples=args.fid_samples, teacher_steps=args.teacher_steps, repeats=args.repeats,
                    threads=args.threads, inception=args.inception)
        return 0
    if args.command == "report":
        from edgekd.report.cli import report_command

        return report_command(Path(args.run), args.profile, args.fid_samples, args.repeats, args.inception)
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
    """Every command ends in its output or in exactly one ``edgekd: error: ...`` line (exit 2; 3 for a failed
    parity gate; 130 when interrupted); the full traceback only with --debug or EDGEKD_DEBUG=1."""
    quiet_libraries()
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("EDGEKD_DEBUG", "") not in ("", "0")
    try:
        return run(args)
    except EdgekdError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"edgekd: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgekd: error: interrupted (outputs are written atomically; rerun, or pass --resume where the command "
              "has it)", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else: one line, never a library's traceback (unless --debug)
        if debug:
            import traceback

            traceback.print_exc()
        message, code = describe_unexpected(exc)
        print(f"edgekd: error: {_one_line(message)}", file=sys.stderr)
        return code


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "unknown error"


if __name__ == "__main__":
    sys.exit(main())
