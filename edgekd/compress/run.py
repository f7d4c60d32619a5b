"""``edgekd compress RUN``: prune a trained run's student (or its teacher), recover it by distillation from the
unpruned model, and write a DERIVED run directory that every other command reads unchanged.

    RUN/compressed/pruned-50/            recipe.yaml (name ...-pruned-50, run_dir here, compress.prune filled in)
                              student/   the pruned (+ recovered) student: config.json (with "pruned") + safetensors
                              best/, checkpoints/, metrics.jsonl, tb/, samples/   the recovery run (shared loop)
                              exports/onnx/student.onnx (+ manifest)  exported and parity-checked at the end
                              report/compress.json, report/compress.md  unpruned / pruned / pruned + recovered
    RUN/compressed/teacher-pruned-50/    teacher/ (unet/ + edgekd_pruned.json, scheduler/), recipe.yaml whose
                                         teacher.path is that folder, student/ copied from RUN, the same report

so ``edgekd export RUN/compressed/pruned-50`` and ``edgekd profile RUN/compressed/pruned-50`` work as on any run.
The report measures each model the same way: parameters, MACs per image, ONNX latency (onnxruntime, 1 thread,
batch 1, median of ``profile.latency_repeats``), torch latency, FID (``profile.fid_samples`` images against the
real test split, the profiler's feature network) and PSNR against the unpruned model on the same noise.
"""

from __future__ import annotations

import copy
import datetime as dt
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from edgekd import __version__
from edgekd.compress.prune import IMPORTANCES
from edgekd.errors import EdgekdError
from edgekd.recipe import PruneConfig, Recipe, apply_overrides, validate_mapping
from edgekd.rundir import RunDir
from edgekd.train.checkpoint import AtomicDir, atomic_write_json, atomic_write_text


def load_compress_recipe(run: RunDir, overrides: list[str], prune_flags: dict[str, Any]) -> Recipe:
    """The run's recipe with ``--set`` overrides and the --prune/--importance/--recover-steps flags applied."""
    raw = yaml.safe_load(run.recipe_file.read_text()) or {}
    raw = apply_overrides(raw, overrides, str(run.recipe_file))
    flags = {k: v for k, v in prune_flags.items() if v is not None}
    if flags:
        compress = raw.setdefault("compress", {}) or {}
        raw["compress"] = compress
        prune = compress.get("prune") or {}
        prune.update(flags)
        compress["prune"] = prune
    return validate_mapping(raw, Recipe, str(run.recipe_file))


def derived_name(cfg: PruneConfig, teacher: bool) -> str:
    pct = round(cfg.ratio * 100)
    name = f"{'teacher-' if teacher else ''}pruned-{pct}"
    return name if cfg.importance == "l2" else f"{name}-{cfg.importance}"


def compress(run_path: Path, prune_flags: dict[str, Any] | None = None, quantize: bool = False,
             overrides: list[str] | None = None, teacher: bool = False, out: Path | None = None,
             fid_samples: int | None = None, resume: bool = False, exporter: str = "dynamo") -> Path | None:
    """The ``edgekd compress`` command: prune (+ recover) and/or quantize; returns the derived run (if pruned)."""
    flags = prune_flags or {}
    if flags.get("ratio") is not None and not 0.0 < flags["ratio"] < 1.0:
        raise EdgekdError(f"--prune {flags['ratio']} is out of range: give the fraction of channels to remove, "
                          "strictly between 0 and 1 (e.g. --prune 0.5)")
    if flags.get("importance") is not None and flags["importance"] not in IMPORTANCES:
        raise EdgekdError(f"--importance {flags['importance']} is unknown (choose one of {', '.join(IMPORTANCES)})")
    if flags.get("recover_steps") is not None and flags["recover_steps"] < 0:
        raise EdgekdError(f"--recover-steps {flags['recover_steps']} must be >= 0 (0 skips recovery)")
    if fid_samples is not None and fid_samples < 2:
        raise EdgekdError(f"--fid-samples {fid_samples} must be >= 2 (FID needs a covariance)")
    run = RunDir.open(Path(run_path), need_student=not teacher)
    recipe = load_compress_recipe(run, overrides or [], flags)
    do_prune = recipe.compress.prune is not None
    do_quantize = quantize or recipe.compress.quantize is not None
    if not do_prune and not do_quantize:
        raise EdgekdError(f"{run.path}: nothing to compress: pass --prune RATIO (e.g. --prune 0.5) or --quantize, "
                          "or add compress.prune / compress.quantize to the recipe")
    if teacher and not do_prune:
        raise EdgekdError("--teacher prunes the teacher: pass --prune RATIO as well")
    from edgekd.extras import require

    if do_prune:
        require("prune", "pruning")
        require("onnx", "pruning (its report runs the student in onnxruntime)")
    derived = None
    if do_prune:
        derived = prune_run(run, recipe, teacher=teacher, out=out, fid_samples=fid_samples, resume=resume,
                            exporter=exporter)
    if do_quantize:
        quantize_target = derived if derived is not None and not teacher else run.path
        _quantize(quantize_target, recipe, exporter)  # --exporter reaches the quantized exports too
    return derived


def _quantize(run_path: Path, recipe: Recipe, exporter: str = "dynamo") -> None:
    """Hand over to the quantization stage (edgekd/compress/quantize.py: ``quantize_run(run_dir, cfg)``)."""
    from edgekd.recipe import QuantizeConfig

    from edgekd.compress.quantize import quantize_run

    quantize_run(Path(run_path), recipe.compress.quantize or QuantizeConfig(), exporter=exporter)


# --------------------------------------------------------------------------------------------- pruning a run


def prune_run(run: RunDir, recipe: Recipe, teacher: bool = False, out: Path | None = None,
              fid_samples: int | None = None, resume: bool = False, exporter: str = "dynamo") -> Path:
    from edgekd.compress.prune import prune_student, prune_unet
    from edgekd.teachers.diffusers_teacher import load_recipe_teacher
    from edgekd.train.loop import pick_device, seed_everything

    cfg = recipe.compress.prune
    assert cfg is not None
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    derived = RunDir(Path(out) if out else run.path / "compressed" / derived_name(cfg, teacher))
    if derived.path.resolve() == run.path.resolve():
        raise EdgekdError(f"--out {derived.path} is the run itself; choose another folder")
    if derived.recipe_file.is_file() and not resume:
        raise EdgekdError(f"{derived.path} already exists; pass --resume to continue it, or delete it / choose --out")
    t = load_recipe_teacher(recipe)
    seed_everything(recipe.seed)
    device = pick_device(recipe.device)

    if teacher:
        original: nn.Module = t.unet
        pruned = prune_unet(original, cfg.ratio, cfg.importance, cfg.ignore, seed=recipe.seed)
    else:
        original = run.student()
        pruned = prune_student(original, cfg.ratio, cfg.importance, cfg.ignore, seed=recipe.seed)
    # how the model samples, not what it is: a DDIM-sampled student is recovered on epsilon like the teacher
    kind = "teacher" if teacher else ("eps" if original.sampling().kind == "ddim" else "one_step")
    print(f"pruned {'teacher' if teacher else 'student'} {cfg.ratio:.0%} ({cfg.importance}): "
          f"{_params(original) / 1e6:.3f}M -> {_params(pruned) / 1e6:.3f}M parameters")

    derived.path.mkdir(parents=True, exist_ok=True)
    derived_recipe = _derived_recipe(recipe, derived, teacher)
    if teacher and run.student_dir.is_dir():
        _copy_dir(run.student_dir, derived.student_dir)  # so export/profile of the derived run find a student
    derived.save_recipe(derived_recipe)

    meter = Meter(recipe, t, derived.path, kind, fid_samples, exporter)
    rows = [meter.measure("unpruned", original), meter.measure(f"pruned {cfg.ratio:.0%}", pruned)]

    final = pruned
    if cfg.recover_steps > 0:
        final = _recover(pruned, original, recipe, cfg, derived, kind, t, device, resume)
    elif not teacher:
        from edgekd.students import save_student

        with AtomicDir(derived.student_dir) as tmp:
            save_student(final, tmp)
    if teacher:
        _write_teacher(final, t.scheduler_config, derived.path / "teacher")
    onnx = None
    if kind == "one_step":
        from edgekd.export import export_run

        onnx = export_run(derived.path, exporter=exporter)  # the derived run's own export: parity gate + manifest
    if cfg.recover_steps > 0:
        rows.append(meter.measure(f"pruned {cfg.ratio:.0%} + recovered ({cfg.recover_steps} steps)", final, onnx))
    meter.close()
    report = _report(recipe, derived, cfg, rows, meter, teacher)
    print(report)
    if teacher:
        print(f"pruned teacher: {derived.path / 'teacher'} (unet/ with edgekd_pruned.json + scheduler/; "
              "load it with edgekd.compress.prune.load_pruned_unet)")
    print(f"derived run: {derived.path} (edgekd export / profile / sample work on it)")
    return derived.path


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _copy_dir(src: Path, dst: Path) -> None:
    with AtomicDir(dst) as tmp:
        for f in src.iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)


def _derived_recipe(recipe: Recipe, derived: RunDir, teacher: bool) -> Recipe:
    raw = recipe.model_dump(mode="json")
    raw["name"] = f"{recipe.name}-{derived.path.name}"
    raw["run_dir"] = str(derived.path)
    if teacher:
        raw["teacher"]["path"] = str((derived.path / "teacher").resolve())
    return validate_mapping(raw, Recipe, str(derived.recipe_file))


def _write_teacher(unet: nn.Module, scheduler_config: dict[str, Any], folder: Path) -> None:
    """A teacher folder: unet/ (unpruned config + pruned weights + edgekd_pruned.json) and scheduler/."""
    from diffusers import DDPMScheduler

    from edgekd.compress.prune import save_pruned_unet

    with AtomicDir(folder) as tmp:
        save_pruned_unet(copy.deepcopy(unet).cpu().eval(), tmp / "unet")
        DDPMScheduler.from_config(scheduler_config).save_config(str(tmp / "scheduler"))


def _recover(pruned: nn.Module, original: nn.Module, recipe: Recipe, cfg: PruneConfig, derived: RunDir, kind: str,
             t: Any, device: torch.device, resume: bool) -> nn.Module:
    from edgekd.compress.prune import load_pruned_unet, save_pruned_unet
    from edgekd.compress.recover import alphas_cumprod_of, recover
    from edgekd.data import load_dataset
    from edgekd.grid import labelled_rows
    from edgekd.noise import make_noise
    from edgekd.students import load_student, save_student

    if kind == "one_step":
        def save(net: nn.Module, folder: Path) -> None:
            with AtomicDir(folder) as tmp:
                save_student(copy.deepcopy(net).cpu().eval(), tmp)

        noise = make_noise(recipe.seed + 123, 0, 16, tuple(pruned.input_shape))
        with torch.no_grad():
            reference_out = original.eval()(noise).float()

        def preview(net: nn.Module, step: int) -> None:
            with torch.no_grad():
                out = net(noise.to(next(net.parameters()).device)).float().cpu()
            labelled_rows({"unpruned": reference_out, f"pruned, recovery step {step}": out},
                          derived.path / "samples" / f"step_{step:08d}.png")

        recover(pruned, original, cfg, recipe.train, derived.path, device, recipe.seed, save, resume=resume,
                preview=preview, pairs=_teacher_pairs(recipe, t, device) if cfg.teacher_weight > 0 else None)
        best = load_student(derived.path / "best")
        with AtomicDir(derived.student_dir) as tmp:
            save_student(best, tmp)
        return best

    # epsilon models: real images, timesteps of each UNet's range
    n_images = min(20000, max(2048, cfg.batch_size * cfg.recover_steps))
    images = load_dataset(recipe.data.model_copy(update={"split": "train", "limit": n_images}))
    if kind == "teacher":
        def save_eps(net: nn.Module, folder: Path) -> None:
            with AtomicDir(folder) as tmp:
                save_pruned_unet(copy.deepcopy(net).cpu().eval(), tmp)

        recover(pruned, original, cfg, recipe.train, derived.path, device, recipe.seed, save_eps, images=images,
                alphas_cumprod=alphas_cumprod_of(t.scheduler_config), resume=resume)
        return load_pruned_unet(derived.path / "best")

    def save_student_eps(net: nn.Module, folder: Path) -> None:
        with AtomicDir(folder) as tmp:
            save_student(copy.deepcopy(net).cpu().eval(), tmp)

    scheduler = original.sampling().scheduler_config
    recover(pruned, original, cfg, recipe.train, derived.path, device, recipe.seed, save_student_eps, images=images,
            alphas_cumprod=alphas_cumprod_of(scheduler), resume=resume)
    best = load_student(derived.path / "best")
    with AtomicDir(derived.student_dir) as tmp:
        save_student(best, tmp)
    return best


def _teacher_pairs(recipe: Recipe, t: Any, device: torch.device) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The run's recorded (noise, teacher x_0) pairs (cached in the trajectory store; recorded if missing)."""
    from edgekd.distill import open_store
    from edgekd.train.loop import TensorSource

    store = open_store(recipe, t)
    traj = recipe.trajectory
    store.ensure(t, traj.num_samples, traj.shard_size, traj.batch_size, device)
    n_train = traj.num_samples - traj.heldout
    train, held = store.read(0, n_train), store.read(n_train, traj.num_samples)
    heldout = TensorSource({"noise": held["noise"], "x0": held["x0"]}).all()
    return {"noise": train["noise"], "x0": train["x0"]}, heldout


# --------------------------------------------------------------------------------------------- measuring


class Meter:
    """Measures models the same way: params, MACs, ONNX 1-thread latency, torch latency, FID, PSNR vs unpruned."""

    def __init__(self, recipe: Recipe, teacher: Any, workdir: Path, kind: str, fid_samples: int | None,
                 exporter: str = "dynamo"):
        from edgekd.noise import make_noise

        self.recipe, self.teacher, self.kind, self.exporter = recipe, teacher, kind, exporter
        self.cfg = recipe.profile
        self.n_fid = fid_samples or self.cfg.fid_samples
        self.shape = tuple(teacher.sample_shape)
        self.one = make_noise(self.cfg.fid_seed, 0, 1, self.shape)
        self.noise = make_noise(self.cfg.fid_seed, 0, self.n_fid, self.shape)
        self.tmp = Path(tempfile.mkdtemp(prefix=".compress-", dir=workdir))
        self.reference: torch.Tensor | None = None
        self._fid: Any = None
        self.n_real = 0
        self.steps = recipe.teacher.steps

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    @torch.no_grad()
    def fid(self, images: torch.Tensor) -> float:
        """FID against the real test split, as edgekd.profile.quality.fid computes it, with the real statistics
        computed once for every model measured."""
        from edgekd.profile.quality import _check_images

        if self._fid is None:
            from torchmetrics.image.fid import FrechetInceptionDistance

            from edgekd.data import load_dataset
            from edgekd.profile.classifier import FeatureNet, load_classifier

            real = load_dataset(self.recipe.data.model_copy(update={"split": "test", "limit": None}))
            _check_images("real", real)
            self._fid = FrechetInceptionDistance(feature=FeatureNet(load_classifier(self.cfg.feature_net)),
                                                 normalize=True, reset_real_features=False)
            for start in range(0, len(real), 256):
                self._fid.update(real[start:start + 256].float().clamp(-1, 1), real=True)
            self.n_real = len(real)
        _check_images("generated", images)
        self._fid.reset()  # keeps the real statistics (reset_real_features=False)
        for start in range(0, len(images), 256):
            self._fid.update(images[start:start + 256].float().clamp(-1, 1), real=False)
        return max(float(self._fid.compute()), 0.0)

    def _generate(self, model: nn.Module) -> torch.Tensor:
        from edgekd.teachers.diffusers_teacher import ddim_sample

        outs = []
        model = model.eval()
        with torch.no_grad():
            for start in range(0, self.n_fid, self.cfg.batch_size):
                z = self.noise[start:start + self.cfg.batch_size]
                if self.kind == "teacher":
                    eps = lambda x, t, m=model: m(x, t).sample  # noqa: E731
                    outs.append(ddim_sample(self.teacher.scheduler_config, eps, z, self.steps,
                                            self.recipe.teacher.timestep_spacing)[0])
                else:
                    outs.append(model(z).float())
        return torch.cat(outs).clamp(-1, 1)

    def _onnx(self, model: nn.Module, path: Path | None) -> tuple[float | None, int | None]:
        """ONNX latency (1 thread, ms/img) and file size; exports to a temp file when no path is given."""
        from edgekd.export.onnx import TeacherStep, export_onnx
        from edgekd.profile.generators import OnnxStudent, OnnxTeacher
        from edgekd.profile.measure import latency_ms

        if self.kind == "eps":
            return None, None  # several step models (O2MKD): exported per student by `edgekd export`
        if path is None:
            path = self.tmp / f"m{len(list(self.tmp.iterdir()))}.onnx"
            if self.kind == "teacher":
                example = (torch.randn(2, *self.shape), torch.full((2,), 999, dtype=torch.int64))
                export_onnx(TeacherStep(copy.deepcopy(model)).eval(), example, path, ["sample", "timestep"], "epsilon",
                            exporter=self.exporter)
            else:
                export_onnx(copy.deepcopy(model).eval(), (torch.randn(2, *self.shape),), path, ["noise"], "image",
                            exporter=self.exporter)
        gen = (OnnxTeacher(path, self.teacher.scheduler_config, self.steps, 1, self.recipe.teacher.timestep_spacing)
               if self.kind == "teacher" else OnnxStudent(path, 1))
        return latency_ms(gen, self.one, self.cfg.latency_repeats), path.stat().st_size

    def measure(self, name: str, model: nn.Module, onnx_path: Path | None = None) -> dict[str, Any]:
        from edgekd.profile.generators import TorchStudent, TorchTeacher
        from edgekd.profile.measure import count_macs, count_params, latency_ms
        from edgekd.profile.quality import psnr

        model = copy.deepcopy(model).cpu().eval()
        if self.kind == "teacher":
            macs = count_macs(model, self.one, torch.tensor([999])) * self.steps
            wrapped = copy.copy(self.teacher)
            wrapped.unet = model
            torch_ms = latency_ms(TorchTeacher(wrapped, self.steps, self.recipe.teacher.timestep_spacing), self.one,
                                  self.cfg.latency_repeats)
        else:
            macs = count_macs(model, self.one)
            torch_ms = latency_ms(TorchStudent(model), self.one, self.cfg.latency_repeats)
        threads = torch.get_num_threads()
        onnx_ms, onnx_bytes = self._onnx(model, onnx_path)
        torch.set_num_threads(threads)
        images = self._generate(model)
        if self.reference is None:
            self.reference = images
        row = {"name": name, "params": count_params(model), "macs_per_image": int(macs),
               "onnx_ms_1t": onnx_ms, "onnx_bytes": onnx_bytes, "torch_ms": torch_ms,
               "fid": self.fid(images),
               "psnr_vs_unpruned": None if images is self.reference else psnr(self.reference, images)}
        print(f"  {name}: {row['params'] / 1e6:.3f}M params, {row['macs_per_image'] / 1e6:.1f}M MACs, "
              f"FID {row['fid']:.2f}")
        return row


def render_markdown(report: dict[str, Any]) -> str:
    who = "teacher" if report["teacher"] else "student"
    head = ["model", "params", "MACs/img", "ONNX ms/img (1t)", "ONNX MB", f"torch ms/img ({report['torch_threads']}t)",
            f"FID ({report['fid_samples']})", "PSNR vs unpruned dB"]
    lines = [f"# edgekd compress: {report['recipe']} ({who}, {report['prune']['ratio']:.0%} channels pruned, "
             f"{report['prune']['importance']} importance)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def f(v: float | None, d: int = 2) -> str:
        return "-" if v is None else ("inf" if v == float("inf") else f"{v:.{d}f}")

    for r in report["rows"]:
        lines.append("| " + " | ".join([
            r["name"], f"{r['params'] / 1e6:.3f}M", f"{r['macs_per_image'] / 1e6:.1f}M", f(r["onnx_ms_1t"]),
            "-" if r["onnx_bytes"] is None else f"{r['onnx_bytes'] / 1e6:.2f}", f(r["torch_ms"]), f(r["fid"]),
            f(r["psnr_vs_unpruned"], 1)]) + " |")
    lines += ["", f"Latency: batch 1, median of {report['repeats']} repeats, {report['machine']}. "
              f"ONNX: {report['exporter']} exporter, onnxruntime CPU. "
              f"FID: {report['fid_samples']} generated images against {report['fid_real']} real test images, features from "
              f"{report['feature_net']}." + (f" Teacher rows sample DDIM-{report['teacher_steps']}."
                                              if report["teacher"] else ""),
              f"Recovery: {report['prune']['recover_steps']} steps of distillation from the unpruned model "
              f"(loss {report['prune']['loss']}, lr {report['recover_lr']}, batch {report['prune']['batch_size']}"
              + (f", + {report['prune']['teacher_weight']} x loss to the teacher's recorded x_0"
                 if report['prune'].get('teacher_weight') else "") + ")."]
    return "\n".join(lines) + "\n"


def _report(recipe: Recipe, derived: RunDir, cfg: PruneConfig, rows: list[dict[str, Any]], meter: Meter,
            teacher: bool) -> str:
    from edgekd.compress.recover import recovery_lr

    report = {
        "edgekd_version": __version__, "recipe": recipe.name, "derived_run": str(derived.path), "teacher": teacher,
        "teacher_steps": recipe.teacher.steps, "prune": cfg.model_dump(mode="json"), "rows": rows,
        "recover_lr": recovery_lr(cfg, recipe.train),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}", "torch_threads": torch.get_num_threads(),
        "repeats": meter.cfg.latency_repeats, "fid_samples": meter.n_fid, "fid_real": meter.n_real,
        "feature_net": meter.cfg.feature_net, "exporter": meter.exporter,
    }
    text = render_markdown(report)
    atomic_write_json(derived.report_dir / "compress.json", report)
    atomic_write_text(derived.report_dir / "compress.md", text)
    return text
