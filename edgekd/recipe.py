"""The typed recipe: one YAML file validated into pydantic objects before any work starts.

Every error names the file, the key and what was expected, so a user fixes a typo in seconds instead of
reading a traceback from deep inside the training loop.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekd.errors import RecipeError
from edgekd.paths import DEFAULT_FASHION_MNIST, check_safe_name, resolve_builtin, user_path

# reliability (issue 15): numbers are numbers. YAML's true/false are not 1/0, NaN/inf are refused, list entries
# have bounds. Kept in one place: _allows_bool, Strict._no_bools, the PosInt/Step aliases, RunRecipe._safe_name.
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
TeacherSteps = Annotated[int, Field(ge=1, le=1000)]


def _allows_bool(annotation: Any) -> bool:
    """Whether a field's type admits a YAML boolean (bool itself, or a union/Literal containing one)."""
    if annotation is bool:
        return True
    if any(isinstance(a, bool) for a in getattr(annotation, "__args__", ()) if getattr(annotation, "__origin__", None)
           is Literal):
        return True
    return any(_allows_bool(a) for a in getattr(annotation, "__args__", ()) or () if not isinstance(a, (int, str)))


class Strict(BaseModel):
    """Base for every recipe section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bools(cls, raw: Any) -> Any:
        """``steps: true`` is not 1: pydantic's lax mode would take it, a recipe must not."""
        if not isinstance(raw, dict):
            return raw
        for name, value in raw.items():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            if field is None or _allows_bool(field.annotation):
                continue
            items = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(v, bool) for v in items):
                raise ValueError(f"'{name}' must be a number or text, not the YAML boolean {value!r}")
        return raw


class DataConfig(Strict):
    """Training images: Fashion-MNIST idx files, an image folder or an .npz array."""

    kind: Literal["fashion_mnist", "folder", "npz"] = "fashion_mnist"
    path: str = str(DEFAULT_FASHION_MNIST)
    split: Literal["train", "test"] = "train"
    resolution: int = Field(32, ge=4, le=4096)
    channels: Literal[1, 3] = 1
    pad_value: float = -1.0
    hflip: bool = True
    limit: int | None = Field(None, ge=1)
    npz_key: str = "images"


class TeacherConfig(Strict):
    """A diffusers teacher (pipeline folder, unet/ + scheduler/, or hub id; docs/teachers.md) and how to sample it."""

    path: str
    # classifier-free guidance of a text or DiT teacher (1: none); part of the trajectory store's identity
    guidance_scale: float = Field(1.0, ge=0.0, le=50.0)
    # the prompts a text teacher's recordings, previews and FID cycle through (sample i: prompt i mod len)
    prompts: list[str] | None = Field(None, min_length=1)
    steps: TeacherSteps = 50
    timestep_spacing: Literal["trailing", "leading", "linspace"] = "trailing"
    eta: float = Field(0.0, ge=0.0, le=1.0)
    # The ODE solver that records trajectory pairs (diffusers schedulers): DPM-Solver++ / UniPC reach DDIM-50's
    # quality in ~10 calls; the store key includes the solver and its settings (edgekd.teachers.diffusers_teacher).
    solver: Literal["ddim", "dpmsolver++", "unipc"] = "ddim"

    @model_validator(mode="after")
    def _eta_is_ddim(self) -> "TeacherConfig":
        if self.eta > 0 and self.solver != "ddim":
            raise ValueError(f"eta > 0 is DDIM's stochastic sampling; solver {self.solver} is deterministic (eta: 0)")
        return self


class TrajectoryConfig(Strict):
    """Which teacher runs to record once and reuse: noise, chosen intermediate states, x_0."""

    num_samples: int = Field(2048, ge=2)
    heldout: int = Field(256, ge=1)
    seed: int = 1000
    record: list[NonNegInt] | Literal["all"] = Field(default_factory=list)
    shard_size: int = Field(1024, ge=1)
    batch_size: int = Field(128, ge=1)
    cache_dir: str | None = None
    # the teacher's arithmetic while recording: auto = bf16 autocast on CUDA, float32 on a CPU (part of the store key)
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    @model_validator(mode="after")
    def _heldout_fits(self) -> "TrajectoryConfig":
        if self.heldout >= self.num_samples:
            raise ValueError(
                f"heldout ({self.heldout}) must be smaller than num_samples ({self.num_samples})"
            )
        return self


class UNetStudentConfig(Strict):
    """A UNet student: a copy of the teacher (init: teacher), the teacher's weights channel-pruned to ``width`` of
    its channels (init: prune: the teacher's knowledge at a fraction of its cost) or a slimmer UNet trained from
    scratch (init: scratch, ``block_out_channels``)."""

    kind: Literal["unet"] = "unet"
    init: Literal["teacher", "prune", "scratch"] = "teacher"
    block_out_channels: list[PosInt] | None = None
    layers_per_block: int = Field(1, ge=1, le=4)
    attention: bool = False
    norm_num_groups: int = Field(8, ge=1)
    width: float | None = Field(None, gt=0.0, lt=1.0)
    importance: Literal["l1", "l2", "taylor", "lamp", "random"] = "l2"

    @model_validator(mode="after")
    def _sizes_match_init(self) -> "UNetStudentConfig":
        if self.init != "scratch" and self.block_out_channels is not None:
            raise ValueError(f"block_out_channels is only used with init: scratch (init: {self.init} takes the "
                             "teacher's architecture)")
        if self.init == "scratch" and not self.block_out_channels:
            raise ValueError("init: scratch needs block_out_channels, e.g. [16, 32, 32]")
        if self.init == "prune" and self.width is None:
            raise ValueError("init: prune needs width, the fraction of the teacher's channels kept (e.g. 0.5)")
        if self.init != "prune" and self.width is not None:
            raise ValueError(f"width is only used with init: prune (init: {self.init})")
        if self.block_out_channels:
            bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
            if bad:
                raise ValueError(
                    f"block_out_channels {bad} are not divisible by norm_num_groups ({self.norm_num_groups})"
                )
        return self


class LayerwiseStudentConfig(Strict):
    """Adv-KD's layerwise-denoising student: a static conv trunk of K blocks, one head per block, no timestep.

    ``channels`` gives one entry per block (K = its length). The teacher's noise is pooled inside the graph to
    ``input_size`` px; ``up_blocks`` are the stride-2 ConvTranspose blocks ("auto": 0, 2, 4, ... as in the
    official code, as many as needed to reach data.resolution).
    """

    kind: Literal["layerwise"] = "layerwise"
    input_size: int = Field(4, ge=1)
    channels: list[int] = Field(default_factory=lambda: [128, 128, 64, 64, 32, 32], min_length=1)
    up_blocks: list[int] | Literal["auto"] = "auto"
    convs_per_block: int = Field(1, ge=1, le=4)
    head_channels: int | None = Field(None, ge=1)
    negative_slope: float = Field(0.2, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _channels_positive(self) -> "LayerwiseStudentConfig":
        if any(c < 1 for c in self.channels):
            raise ValueError(f"channels must all be >= 1, got {self.channels}")
        if self.up_blocks != "auto":
            bad = [b for b in self.up_blocks if not 0 <= b < len(self.channels)]
            if bad or len(set(self.up_blocks)) != len(self.up_blocks):
                raise ValueError(f"up_blocks {self.up_blocks} must be distinct block indices 0..{len(self.channels) - 1}")
        return self


class O2MKDStudentConfig(Strict):
    """O2MKD: N slimmer copies of the teacher UNet; student i owns the timesteps edges[i] <= t < edges[i+1],
    edges = [0, *boundaries, T] (T: the teacher's num_train_timesteps), so N = len(boundaries) + 1.

    ``init``: scratch (the teacher's architecture at ``width`` x its channels, or ``block_out_channels``), prune
    (the teacher's weights, channel-pruned to ``width`` with ``importance``) or teacher (a full copy).
    """

    kind: Literal["o2mkd"] = "o2mkd"
    boundaries: list[int]
    init: Literal["scratch", "prune", "teacher"] = "scratch"
    # one width for every student, or one per student (e.g. [0.75, 0.5]: a wider student where detail is made, at
    # low t, and a narrower one for the coarse layout at high t)
    width: Union[Annotated[float, Field(gt=0.0, le=1.0)], list[Annotated[float, Field(gt=0.0, le=1.0)]], None] = None
    block_out_channels: list[PosInt] | None = None
    norm_num_groups: int | None = Field(None, ge=1)
    importance: Literal["l1", "l2", "taylor", "lamp", "random"] = "l2"

    def width_of(self, i: int) -> float | None:
        """Student i's width (the one width, or its own entry of the list)."""
        return self.width[i] if isinstance(self.width, list) else self.width

    @model_validator(mode="after")
    def _init_and_sizes(self) -> "O2MKDStudentConfig":
        b = self.boundaries
        if any(x < 1 for x in b) or any(x >= y for x, y in zip(b, b[1:])):
            raise ValueError(f"boundaries {b} must be strictly increasing timesteps >= 1 (e.g. [500] for 2 students)")
        if isinstance(self.width, list) and len(self.width) != len(b) + 1:
            raise ValueError(f"width has {len(self.width)} entries for {len(b) + 1} students (boundaries {b}): give one "
                             "width per student, or a single number for all")
        if self.init == "teacher" and (self.width is not None or self.block_out_channels is not None):
            raise ValueError("init: teacher copies the teacher; width and block_out_channels are for scratch/prune")
        if self.init == "scratch" and (self.width is None) == (self.block_out_channels is None):
            raise ValueError("init: scratch needs exactly one of width (e.g. 0.5) or block_out_channels")
        widths = self.width if isinstance(self.width, list) else [self.width]
        if self.init == "prune" and (self.width is None or max(widths) >= 1.0 or self.block_out_channels is not None):
            raise ValueError("init: prune needs width below 1 (the fraction of the teacher's channels kept, "
                             "e.g. 0.5) and no block_out_channels")
        if self.block_out_channels and self.norm_num_groups:
            bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
            if bad:
                raise ValueError(f"block_out_channels {bad} are not divisible by norm_num_groups ({self.norm_num_groups})")
        return self


StudentConfig = Annotated[Union[UNetStudentConfig, LayerwiseStudentConfig, O2MKDStudentConfig],
                          Field(discriminator="kind")]


class DenoisingStudentConfig(Strict):
    """Luhman & Luhman 2021: regress the teacher's deterministic DDIM output in one step.

    ``adv_weight`` > 0 adds a non-saturating GAN term against REAL images (edgekd.methods.adversarial) from step
    ``adv_start_step`` on (before it: pure regression, the warm start). With the GAN term the held-out L1 no longer
    ranks checkpoints (the GAN trades L1 for sharpness), so the latest EMA is kept instead of the best-L1 one.
    """

    name: Literal["denoising_student"] = "denoising_student"
    reads_data: ClassVar[bool] = False  # trains on the trajectory store only
    loss: Literal["l1", "l2"] = "l1"
    regression_weight: float = Field(1.0, ge=0.0)
    adv_weight: float = Field(0.0, ge=0.0)
    adv_start_step: int = Field(0, ge=0)
    disc_channels: int = Field(32, ge=1)
    r1_gamma: float = Field(0.1, ge=0.0)
    r1_every: int = Field(16, ge=1)
    d_lr: float = Field(2e-4, gt=0)
    # the student's Adam once the GAN term is on (GAN practice: lr 2e-4, betas (0, 0.99)); null: keep train.lr/betas
    adv_lr: float | None = Field(2e-4, gt=0)
    diffaug: bool = False

    @model_validator(mode="after")
    def _some_loss(self) -> "DenoisingStudentConfig":
        if self.regression_weight == 0 and self.adv_weight == 0:
            raise ValueError("regression_weight and adv_weight are both 0: nothing trains the student")
        return self


class AdvKDConfig(Strict):
    """Adv-KD: a layerwise student trained against the teacher's trajectory with one conditional GAN per block.

    Head k learns the teacher's state at recorded point k+1 (the states at ``trajectory.record``, then x_0).
    The paper's optimiser is Adam lr 1e-4, betas (0.5, 0.999): they become train.lr / train.betas when the
    recipe leaves those keys out (``train.lr`` / ``train.betas`` written in the recipe win).
    """

    name: Literal["adv_kd"] = "adv_kd"
    reads_data: ClassVar[bool] = False  # trains on the trajectory store only
    schedule: Literal["progressive", "joint"] = "progressive"
    regression: Literal["l1", "l2"] = "l1"
    regression_weight: float = Field(0.1, ge=0.0)
    gp_weight: float = Field(10.0, ge=0.0)
    resize: Literal["area", "bilinear"] = "area"
    disc_channels: int = Field(64, ge=1)
    disc_hidden: int = Field(256, ge=1)


class O2MKDConfig(Strict):
    """O2MKD: each student learns the teacher's epsilon on its own timestep range from forward-diffused real data.

    loss = kd_weight * MSE(eps_s, eps_teacher) + denoise_weight * MSE(eps_s, true noise)
           + feature_weight * relative MSE of the mid-block and up-block features (through 1x1 projections).
    ``timesteps``: where training timesteps come from inside a student's range: the sampler's DDIM timesteps,
    uniform integers, or half and half (mixed). ``weighting`` of the per-sample epsilon errors: eps (plain) or
    x0_trunc (times max(1, (1 - a_t) / a_t): the error of the implied x_0 where noise dominates, of epsilon
    elsewhere). train.batch_size is per student.
    """

    name: Literal["o2mkd"] = "o2mkd"
    timesteps: Literal["mixed", "ddim", "uniform"] = "mixed"
    weighting: Literal["eps", "x0_trunc"] = "eps"
    kd_weight: float = Field(1.0, ge=0.0)
    denoise_weight: float = Field(0.0, ge=0.0)
    feature_weight: float = Field(0.0, ge=0.0)
    heldout_images: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _some_output_loss(self) -> "O2MKDConfig":
        if self.kd_weight == 0 and self.denoise_weight == 0:
            raise ValueError("kd_weight and denoise_weight are both 0: nothing trains the students' epsilon output")
        return self


# GDD-I's default freeze rule. The paper freezes parameters whose EDM names contain (block|up|down|in) and
# (conv|proj): the 3x3 convolutions of the residual blocks, the resampling convolutions and the attention output
# projections. These are the same layers under diffusers UNet2DModel names; norms, the time embedding and its
# per-block projections (time_emb_proj), q/k/v, the 1x1 skips (conv_shortcut) and conv_in/conv_out keep training.
GDD_FREEZE_DEFAULT = [
    r"resnets\.\d+\.conv[12]\.",
    r"(down|up)samplers\.\d+\.conv\.",
    r"attentions\.\d+\.(to_out\.0|proj_attn)\.",
]


class GDDConfig(Strict):
    """GDD / GDD-I (Zheng & Yang): the teacher itself at t = T-1 as a one-step generator, tuned as a plain GAN
    against real data (non-saturating loss, lazy R1); no teacher output is regressed.

    ``innate: true`` is GDD-I: UNet parameters whose diffusers names match any regex of ``freeze`` (default
    GDD_FREEZE_DEFAULT, the paper's rule) are frozen. D sees the raw x0 (as in the paper); ``clamp_fakes: true``
    shows it the clamped x0 with a straight-through gradient instead. ``timestep`` (default T-1, the method's
    definition) is an ablation knob: a lower t amplifies the epsilon error less (docs/gdd.md). The paper's Adam
    is lr 1e-4, betas (0, 0.99), no gradient clipping: they become train.lr / train.betas / train.grad_clip when
    the recipe leaves those keys out.
    """

    name: Literal["gdd"] = "gdd"
    innate: bool = False
    freeze: list[str] | None = None
    discriminator: Literal["conv", "projected"] = "conv"
    feature_net: str = "builtin:fid/fmnist-classifier"
    disc_channels: int = Field(64, ge=1)
    clamp_fakes: bool = False
    timestep: int | None = Field(None, ge=0)
    r1_gamma: float = Field(1e-4, ge=0.0)
    r1_every: int = Field(16, ge=1)
    d_lr: float | None = Field(None, gt=0)
    # "x0": the teacher's x0 prediction at t (gain 1/sqrt(abar) = 157 at T-1 on a linear schedule, docs/gdd.md);
    # "unit": the Denoising Student's x0 = z - eps(z, t), unit gain on the network's output.
    parametrisation: Literal["x0", "unit"] = "x0"
    warm_start_steps: int = Field(0, ge=0)  # first steps: L1 regression to the teacher's pairs, no GAN
    diffaug: bool = False
    select_best: bool = True  # keep the EMA with the best held-out FID (on the evaluator!) or the latest one
    eval_samples: int = Field(256, ge=2)
    eval_real: int = Field(2048, ge=2)
    eval_seed: int = 3_000_000

    @model_validator(mode="after")
    def _freeze_patterns(self) -> "GDDConfig":
        if self.freeze is not None and not self.innate:
            raise ValueError("freeze patterns are used only by GDD-I: set innate: true (or drop freeze)")
        for pattern in self.freeze or []:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"freeze pattern {pattern!r} is not a valid regular expression ({exc})") from None
        return self

    def freeze_patterns(self) -> list[str]:
        """The regexes that freeze generator parameters: none for GDD, the paper's rule (or the recipe's) for GDD-I."""
        if not self.innate:
            return []
        return list(GDD_FREEZE_DEFAULT if self.freeze is None else self.freeze)


MethodConfig = Annotated[Union[DenoisingStudentConfig, AdvKDConfig, O2MKDConfig, GDDConfig], Field(discriminator="name")]


class TrainConfig(Strict):
    """The loop shared by every method."""

    steps: int = Field(2000, ge=1)
    # a wall-clock budget for this session's training: stop after the first step past it (with an eval and a
    # checkpoint, as at the last step), so one recipe fits a time budget on a fast and on a slow machine
    max_minutes: float | None = Field(None, gt=0)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(100, ge=0)
    ema_decay: float = Field(0.995, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(1.0, gt=0)
    eval_every: int = Field(200, ge=1)
    sample_every: int = Field(500, ge=1)
    checkpoint_every: int = Field(200, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    amp: Literal["auto", "bf16", "off"] = "auto"
    threads: int | None = Field(None, ge=1)
    # speed (docs/scale.md): none of these changes what is learned
    channels_last: bool | Literal["auto"] = "auto"  # auto: on CUDA
    compile: bool = False  # torch.compile the trained networks (minutes of compilation; pays off on long GPU runs)
    prefetch: int = Field(2, ge=0)  # batches drawn ahead in a background thread (0: in the training thread)
    log_every: int | None = Field(None, ge=1)  # None: 1 on a CPU, 50 on a GPU (each log waits for the device)


def known_targets(value: list[str]) -> list[str]:
    """Export target names are the plug-ins in edgekd/export/targets/ (discovered there, listed nowhere else): the
    module names in that folder, read without importing edgekd.export (which imports this module)."""
    import pkgutil

    folder = Path(__file__).resolve().parent / "export" / "targets"
    TARGETS = sorted(info.name for info in pkgutil.iter_modules([str(folder)]) if not info.name.startswith("_"))
    unknown = [t for t in value if t not in TARGETS]
    if unknown:
        raise ValueError(f"unknown export target {unknown[0]!r} (available: {', '.join(TARGETS)})")
    return value


class ExportConfig(Strict):
    """Export targets and the parity gate every export must clear."""

    targets: list[str] = Field(default_factory=lambda: ["onnx"])  # export target plug-in names
    psnr_min: float = 35.0
    parity_samples: int = Field(8, ge=1)
    parity_seed: int = 7

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, value: list[str]) -> list[str]:
        return known_targets(value)


class ProfileConfig(Strict):
    """How the student is compared with its teacher."""

    teacher_steps: list[TeacherSteps] = Field(default_factory=lambda: [50], min_length=1)
    fid_samples: int = Field(500, ge=2)
    fid_seed: int = 5_000_000
    feature_net: str = "builtin:fid/fmnist-classifier"
    latency_repeats: int = Field(15, ge=1)
    threads: list[PosInt] = Field(default_factory=lambda: [1, 2, 4], min_length=1)  # capped by the cores (profile/measure.py)
    batch_size: int = Field(128, ge=1)


class PruneConfig(Strict):
    """Structured (channel) pruning with torch-pruning's DepGraph, then distillation from the unpruned model."""

    ratio: float = Field(0.5, gt=0.0, lt=1.0)
    importance: Literal["l1", "l2", "taylor", "lamp", "random"] = "l2"
    ignore: list[str] = Field(default_factory=list)
    recover_steps: int = Field(500, ge=0)
    recover_lr: float | None = Field(None, gt=0)  # None: the recipe's train.lr (what the model was trained with)
    batch_size: int = Field(32, ge=1)
    loss: Literal["l1", "l2"] = "l1"
    teacher_weight: float = Field(0.0, ge=0.0)  # one-step students: + weight x loss to the teacher's recorded x_0


class QuantizeConfig(Strict):
    """Post-training quantization of the exported student (fp16 / int8 per target) and its quality gate."""

    precisions: list[Literal["fp16", "int8"]] = Field(default_factory=lambda: ["fp16", "int8"])
    targets: list[str] = Field(default_factory=lambda: ["onnx", "tflite"])  # export target plug-in names
    calibration_samples: int = Field(128, ge=1)
    calibration: Literal["trajectory", "noise"] = "trajectory"
    psnr_min: float = 35.0  # 30 dB cost +13.5% FID on the quickstart student, 35 dB +0.5% (docs/quantization.md)
    sensitivity: bool = True
    palettize_bits: list[Literal[4, 6, 8]] = Field(default_factory=lambda: [4, 6])
    qat_steps: int = Field(0, ge=0)
    # what ONNX int8 quantizes: weighted layers (Conv/Gemm/MatMul and their inputs) or every op NNCF can
    scope: Literal["weighted", "all"] = "weighted"
    heldout_samples: int = Field(32, ge=2)  # inputs the sensitivity and the fp32 fallback are judged on
    qat_lr: float = Field(1e-5, gt=0)
    qat_batch_size: int = Field(16, ge=1)

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, value: list[str]) -> list[str]:
        return known_targets(value)


class CompressConfig(Strict):
    """``edgekd compress``: what to do to a trained run (a section left out is not done unless asked on the CLI)."""

    prune: PruneConfig | None = None
    quantize: QuantizeConfig | None = None


class RunRecipe(Strict):
    """What every runnable recipe has: a name, a seed, where the run goes, which device, which data."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    run_dir: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = Field(default_factory=DataConfig)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return check_safe_name(name)

    def resolved_run_dir(self) -> Path:
        return user_path(self.run_dir) if self.run_dir else Path("runs") / self.name


class Recipe(RunRecipe):
    """A whole distillation run: data, teacher, recorded trajectories, student, method, loop, export, profile."""

    teacher: TeacherConfig
    trajectory: TrajectoryConfig = Field(default_factory=TrajectoryConfig)
    student: StudentConfig = Field(default_factory=UNetStudentConfig)
    method: MethodConfig = Field(default_factory=DenoisingStudentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    profile: ProfileConfig = Field(default_factory=ProfileConfig)
    compress: CompressConfig = Field(default_factory=CompressConfig)

    @model_validator(mode="before")
    @classmethod
    def _default_tags(cls, raw: Any) -> Any:
        """``student.kind`` and ``method.name`` may be left out: they default to unet / denoising_student."""
        if isinstance(raw, dict):
            o2mkd = isinstance(raw.get("method"), dict) and raw["method"].get("name") == "o2mkd"
            for section, tag, default in (("student", "kind", "o2mkd" if o2mkd else "unet"),
                                          ("method", "name", "denoising_student")):
                if isinstance(raw.get(section), dict):
                    raw[section] = {tag: default, **raw[section]}
            method = raw.get("method")
            if isinstance(method, dict) and method.get("name") == "adv_kd":
                train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
                raw["train"] = {"lr": 1e-4, "betas": [0.5, 0.999], **train}  # the paper's Adam, unless written
            if isinstance(method, dict) and method.get("name") == "gdd":
                train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
                raw["train"] = {"lr": 1e-4, "betas": [0.0, 0.99], "grad_clip": None, **train}  # GDD's Adam, unless written
        return raw


class UNetArchConfig(Strict):
    """The architecture of a teacher trained by ``edgekd teacher train``."""

    block_out_channels: list[PosInt] = Field(default_factory=lambda: [32, 64, 64], min_length=1)
    layers_per_block: int = Field(1, ge=1, le=4)
    attention_levels: list[int] = Field(default_factory=list)
    norm_num_groups: int = Field(8, ge=1)


class NoiseScheduleConfig(Strict):
    num_train_timesteps: int = Field(1000, ge=2)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    beta_start: float = Field(1e-4, gt=0)
    beta_end: float = Field(0.02, gt=0)


class TeacherClassesConfig(Strict):
    """A class-conditional teacher (``classes:``): the dataset's labels feed a class embedding of K + 1 rows, the
    last one the null label ("no class") that classifier-free guidance uses for its unconditional branch.

    ``drop_prob`` is the share of training images whose label is replaced by the null label (Ho & Salimans 2022
    use 0.1-0.2): without it the null row never learns and guidance has nothing to push away from."""

    drop_prob: float = Field(0.1, ge=0.0, lt=1.0)
    # the class embedding's own learning rate (default train.lr). A warm start (init:) begins it at zero beside
    # trained weights; at a fine-tuning lr Adam moves it ~lr per step, so the labels take thousands of steps to
    # matter (measured: no held-out loss difference between true and null labels after 500 steps at 5e-4)
    embed_lr: float | None = Field(None, gt=0)


class TeacherTrainRecipe(RunRecipe):
    """``edgekd teacher train``: a DDPM (epsilon prediction) on a diffusers UNet2DModel, unconditional or (with
    ``classes:``) class-conditional, from scratch or (``init:``) warm-started from an existing teacher folder."""

    unet: UNetArchConfig = Field(default_factory=UNetArchConfig)
    schedule: NoiseScheduleConfig = Field(default_factory=NoiseScheduleConfig)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(ema_decay=0.999, warmup_steps=200))
    sample_steps: TeacherSteps = 50
    classes: TeacherClassesConfig | None = None
    # a teacher folder (unet/ + scheduler/, or builtin:NAME) whose weights, architecture and noise schedule the
    # run starts from; a new class embedding starts at zero, so step 0 predicts exactly what that teacher does
    init: str | None = None

    @model_validator(mode="after")
    def _classes_and_init(self) -> "TeacherTrainRecipe":
        if self.classes is not None and self.data.kind != "fashion_mnist":
            raise ValueError(f"classes: needs the dataset's labels; data.kind {self.data.kind} has none (use "
                             "data.kind fashion_mnist, whose label files lie beside the images)")
        if self.init is not None:
            written = sorted({"unet", "schedule"} & self.model_fields_set)
            if written:
                raise ValueError(f"init: takes the architecture and noise schedule from {self.init}; drop the "
                                 f"{' and '.join(w + ':' for w in written)} section(s)")
        return self


# --------------------------------------------------------------------------------------------- loading


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to the raw recipe mapping."""
    if overrides and not isinstance(raw, dict):
        raise RecipeError(f"{source}: expected a YAML mapping of sections (name:, teacher:, ...), "
                          f"got {type(raw).__name__}")
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"{source}: override '{item}' must look like key.sub=value (e.g. train.steps=100)")
        key, _, text = item.partition("=")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"{source}: override '{key}': '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def _describe_error(err: dict[str, Any], model: type[BaseModel], source: str) -> str:
    shown, fields = _walk_location(model, err["loc"])
    loc = ".".join(shown)
    kind = err["type"]
    if kind == "extra_forbidden":
        hint = difflib.get_close_matches(shown[-1], fields, n=1)
        suggestion = f" (did you mean '{hint[0]}'?)" if hint else f" (allowed: {', '.join(sorted(fields))})"
        return f"{source}: unknown key '{loc}'{suggestion}"
    if kind == "missing":
        return f"{source}: missing required key '{loc}'"
    got = err.get("input")
    got_text = f", got {got!r}" if got is not None and not isinstance(got, dict) else ""
    msg = err["msg"].removeprefix("Value error, ")
    return f"{source}: key '{loc or '<top>'}': {msg}{got_text}"


def _walk_location(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[str], list[str]]:
    """Return the user-visible key path (union tags dropped) and the keys allowed beside the last one."""
    shown: list[str] = []
    current: Any = model
    parent_fields: list[str] = list(model.model_fields)
    for part in loc:
        current = _unwrap_optional(current)
        if isinstance(current, type) and issubclass(current, BaseModel) and part not in current.model_fields \
                and _union_member(current, part) is current:
            continue  # the tag of a one-member discriminated union
        if isinstance(current, type) and issubclass(current, BaseModel):
            parent_fields = list(current.model_fields)
            shown.append(str(part))
            field = current.model_fields.get(part)
            current = field.annotation if field is not None else None
            continue
        member = _union_member(current, part) if current is not None else None
        if member is not None:
            current = member  # a discriminated-union tag such as 'unet': not a key the user wrote
        else:
            shown.append(str(part))  # a list index
    return shown, parent_fields


def _unwrap_optional(annotation: Any) -> Any:
    """``Section | None`` -> ``Section`` (optional sections such as compress.prune), anything else unchanged."""
    args = getattr(annotation, "__args__", None)
    if args and type(None) in args and not hasattr(annotation, "__metadata__"):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and isinstance(rest[0], type) and issubclass(rest[0], BaseModel):
            return rest[0]
    return annotation


def _union_member(annotation: Any, tag: Any) -> Any:
    """The member of a (possibly Annotated) union whose 'kind'/'name' default equals ``tag``."""
    stack = [annotation]
    while stack:
        item = stack.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            for key in ("kind", "name"):
                if key in item.model_fields and item.model_fields[key].default == tag:
                    return item
            continue
        stack.extend(getattr(item, "__args__", ()) or ())
        if hasattr(item, "__metadata__"):
            stack.append(item.__origin__)
    return None


def validate_mapping(raw: Any, model: type[BaseModel], source: str) -> Any:
    """Validate a raw mapping into ``model``; raise one RecipeError line on failure."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: expected a YAML mapping of sections (name:, teacher:, ...), got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe_error(errors[0], model, source)
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise RecipeError(first + more) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: is not a text (UTF-8) YAML file") from None
    return raw if raw is not None else {}


def load_recipe(path: str | Path, overrides: list[str] | None = None, check_files: bool = True) -> Recipe:
    """Read, override, validate and (optionally) check that referenced files exist."""
    source = str(path)
    raw = apply_overrides(read_yaml(path), overrides or [], source)
    recipe = validate_mapping(raw, Recipe, source)
    check_layerwise(recipe, source)
    check_gdd(recipe, source)
    check_o2mkd(recipe, source)
    if check_files:
        check_recipe_files(recipe, source)
    return recipe


def load_teacher_recipe(path: str | Path, overrides: list[str] | None = None) -> TeacherTrainRecipe:
    source = str(path)
    raw = apply_overrides(read_yaml(path), overrides or [], source)
    recipe = validate_mapping(raw, TeacherTrainRecipe, source)
    check_data_files(recipe.data, source)
    levels = len(recipe.unet.block_out_channels)
    if recipe.data.resolution % (2 ** (levels - 1)):
        raise RecipeError(
            f"{source}: key 'data.resolution': {recipe.data.resolution} must be divisible by "
            f"{2 ** (levels - 1)} for a UNet with {levels} levels"
        )
    bad = [lvl for lvl in recipe.unet.attention_levels if not 0 <= lvl < levels]
    if bad:
        raise RecipeError(f"{source}: key 'unet.attention_levels': levels {bad} do not exist (0..{levels - 1})")
    return recipe


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_data_files(data: DataConfig, source: str) -> None:
    path = resolve_builtin(data.path)
    if data.kind == "fashion_mnist":
        from edgekd.data.fashion_mnist import idx_files

        images, _ = idx_files(path, data.split)
        if not images.is_file():
            raise RecipeError(
                f"{source}: key 'data.path': Fashion-MNIST file {images} not found "
                "(install Debian's dataset-fashion-mnist or point data.path at the folder of the .gz idx files)"
            )
    elif data.kind == "folder" and not path.is_dir():
        raise RecipeError(f"{source}: key 'data.path': image folder {path} does not exist")
    elif data.kind == "npz" and not path.is_file():
        raise RecipeError(f"{source}: key 'data.path': .npz file {path} does not exist")


def check_recipe_files(recipe: Recipe, source: str) -> None:
    """Fail before any work if the teacher or the data the recipe names is not there."""
    teacher = resolve_builtin(recipe.teacher.path)
    if not teacher.exists() and not (HUB_ID.match(recipe.teacher.path) and not recipe.teacher.path.startswith((".", "/"))):
        raise RecipeError(f"{source}: key 'teacher.path': teacher directory {teacher} does not exist")
    if teacher.exists():
        from edgekd.errors import EdgekdError
        from edgekd.teachers.layout import read_layout

        try:
            read_layout(teacher)
        except EdgekdError as exc:
            raise RecipeError(f"{source}: key 'teacher.path': {exc}") from None
    hub_teacher = not teacher.exists()
    if getattr(recipe.method, "reads_data", True) or not hub_teacher:
        # A hub recipe whose method trains on the trajectory store alone (recipes/cifar10-ddpm-gpu.yaml) must validate
        # before anything is downloaded: its data is read only by `edgekd profile`, whose loaders say what is missing.
        check_data_files(recipe.data, source)


def _paired(recipe: Recipe, source: str, student_cls: type, method_cls: type, student_text: str,
            method_name: str) -> bool:
    """A student kind that only one method trains, and back: True when the recipe uses the pair (checks follow),
    False when it uses neither, a one-line RecipeError when it uses only one of them."""
    kind = student_cls.model_fields["kind"].default
    uses_student, uses_method = isinstance(recipe.student, student_cls), isinstance(recipe.method, method_cls)
    if uses_method and not uses_student:
        raise RecipeError(f"{source}: key 'student.kind': method {method_name} trains {student_text} student; "
                          f"write kind: {kind}")
    if uses_student and not uses_method:
        raise RecipeError(f"{source}: key 'method.name': {student_text} student is trained by method {method_name}, "
                          f"not {recipe.method.name}")
    return uses_student


def check_layerwise(recipe: Recipe, source: str) -> None:
    """Cross-section checks of the layerwise student / Adv-KD (sizes against data.resolution, record against K)."""
    if not _paired(recipe, source, LayerwiseStudentConfig, AdvKDConfig, "a layerwise", "adv_kd"):
        return
    student = recipe.student
    res, size, k = recipe.data.resolution, student.input_size, len(student.channels)
    if res % size:
        raise RecipeError(f"{source}: key 'student.input_size': {size} must divide data.resolution ({res})")
    ratio, ups = res // size, 0
    while ratio > 1 and ratio % 2 == 0:
        ratio, ups = ratio // 2, ups + 1
    if ratio != 1:
        raise RecipeError(f"{source}: key 'student.input_size': data.resolution / input_size = {res // size} "
                          "must be a power of two (each up-block doubles the resolution)")
    if student.up_blocks == "auto":
        if 2 * ups - 1 > k:
            raise RecipeError(f"{source}: key 'student.channels': {k} blocks cannot reach {res}px from {size}px with "
                              f"up-blocks at 0, 2, 4, ... ({ups} needed, so at least {2 * ups - 1} blocks); "
                              "add blocks or list student.up_blocks")
    elif len(student.up_blocks) != ups:
        raise RecipeError(f"{source}: key 'student.up_blocks': {len(student.up_blocks)} up-blocks take {size}px to "
                          f"{size * 2 ** len(student.up_blocks)}px, but data.resolution is {res} ({ups} needed)")
    record = recipe.trajectory.record
    steps = recipe.teacher.steps
    if record == "all":
        points = list(range(1, steps))
    else:
        points = sorted({r for r in record if r != 0})
    if len(points) != k - 1:
        spread = sorted({max(1, min(steps - 1, round(steps * (i + 1) / k))) for i in range(k - 1)})
        hint = f" (e.g. {spread})" if len(spread) == k - 1 else f" (teacher.steps {steps} has too few steps for {k} blocks)"
        raise RecipeError(f"{source}: key 'trajectory.record': adv_kd needs {k - 1} DDIM step indices after 0 for "
                          f"{k} blocks (their states, then x_0, are the heads' targets), got {len(points)}{hint}")
    bad = [r for r in points if r >= steps]
    if bad:
        raise RecipeError(f"{source}: key 'trajectory.record': step indices {bad} are outside 0..{steps - 1} "
                          f"(teacher.steps is {steps})")


def check_o2mkd(recipe: Recipe, source: str) -> None:
    """O2MKD students go with method o2mkd; boundaries inside the teacher's 0..T and every student owns a DDIM step.

    T and the DDIM timesteps come from the teacher's scheduler/scheduler_config.json when the teacher is a local
    folder (a hub teacher is checked when the student is built).
    """
    import json

    if not _paired(recipe, source, O2MKDStudentConfig, O2MKDConfig, "an o2mkd", "o2mkd"):
        return
    student = recipe.student
    sched = resolve_builtin(recipe.teacher.path) / "scheduler" / "scheduler_config.json"
    if not sched.is_file():
        return
    try:
        config = json.loads(sched.read_text())
    except ValueError:
        return  # load_teacher reports an unreadable teacher
    from edgekd.students.o2mkd import check_boundaries
    from edgekd.teachers.diffusers_teacher import make_ddim

    timesteps = [int(t) for t in make_ddim(config, recipe.teacher.steps, recipe.teacher.timestep_spacing).timesteps]
    try:
        check_boundaries(list(student.boundaries), int(config.get("num_train_timesteps", 1000)), timesteps)
    except ValueError as exc:
        raise RecipeError(f"{source}: key 'student.boundaries': {exc}") from None


def check_gdd(recipe: Recipe, source: str) -> None:
    """GDD tunes the teacher's own network: the student must be a UNet copied from the teacher."""
    if not isinstance(recipe.method, GDDConfig):
        return
    if not isinstance(recipe.student, UNetStudentConfig):
        raise RecipeError(f"{source}: key 'student.kind': method gdd tunes a copy of the teacher UNet; "
                          "write kind: unet (or leave the student section out)")
    if recipe.student.init != "teacher":
        raise RecipeError(f"{source}: key 'student.init': method gdd starts from the teacher's weights "
                          "(write init: teacher or leave the student section out)")
