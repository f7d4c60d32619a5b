"""A diffusers teacher: UNet2DModel (epsilon prediction) + its scheduler, sampled with deterministic DDIM.

Loaded exactly as a user loads any diffusers checkpoint on disk (``unet/`` and ``scheduler/`` folders), or from a
Hugging Face hub id at a site with internet; offline, a hub id fails at once with a message that says what to do.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from edgekd.errors import EdgekdError, MissingResourceError
from edgekd.paths import resolve_builtin


def _quiet_diffusers() -> None:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()


@dataclass
class DiffusionTeacher:
    """The teacher network, the scheduler configuration it was trained with, and its other parts: the condition it
    takes (class labels or CLIP text), the decoder of a latent teacher, and the classifier-free guidance scale.

    ``unet`` is the raw diffusers denoiser (UNet2DModel, UNet2DConditionModel or a DiT transformer); ``denoiser``
    calls any of them the same way (edgekd.models.denoisers). ``sample_shape`` is what the denoiser sees (latents
    for a latent teacher), ``image_shape`` what the user sees."""

    unet: nn.Module
    scheduler_config: dict[str, Any]
    source: str
    fingerprint: str
    condition: Any = None  # ClassCondition | TextCondition | None (edgekd.teachers.conditions)
    decoder: nn.Module | None = None  # AutoencoderKL / VQModel of a latent teacher
    text_encoder: nn.Module | None = None
    tokenizer: Any = None
    guidance_scale: float = 1.0
    pipeline: str | None = None
    _null_cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from edgekd.models.denoisers import DenoiserCall

        self.denoiser = DenoiserCall(self.unet)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config["num_train_timesteps"])

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler_config.get("prediction_type", "epsilon"))

    @property
    def family(self) -> str:
        return self.denoiser.family

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return self.denoiser.sample_shape

    @property
    def latent(self) -> bool:
        return self.decoder is not None

    @property
    def scaling_factor(self) -> float:
        return float(self.decoder.config.get("scaling_factor", 1.0)) if self.decoder is not None else 1.0

    @property
    def image_shape(self) -> tuple[int, int, int]:
        if self.decoder is None:
            return self.sample_shape
        cfg = self.decoder.config
        factor = 2 ** (len(cfg.block_out_channels) - 1)
        return (int(cfg.out_channels), self.sample_shape[1] * factor, self.sample_shape[2] * factor)

    @property
    def plain(self) -> bool:
        """An unconditional epsilon-prediction pixel UNet2DModel: what every method takes (the others: the
        Denoising Student only, for now)."""
        return (self.family == "unet2d" and self.condition is None and self.decoder is None
                and self.prediction_type == "epsilon")

    def ddim(self, steps: int, spacing: str = "trailing") -> Any:
        return make_ddim(self.scheduler_config, steps, spacing)

    def timesteps(self, steps: int, spacing: str = "trailing") -> list[int]:
        return [int(t) for t in self.ddim(steps, spacing).timesteps]

    # ------------------------------------------------------------------ conditions
    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """CLIP text embeddings [B, L, D] exactly as StableDiffusionPipeline.encode_prompt makes them (padded to
        the tokenizer's max length; a prompt longer than that is an error, never silently truncated)."""
        if self.text_encoder is None or self.tokenizer is None:
            raise EdgekdError(f"teacher {self.source} takes no text prompt (it has no text encoder)")
        max_len = int(self.tokenizer.model_max_length)
        for p in prompts:
            n = len(self.tokenizer(p, truncation=False).input_ids)
            if n > max_len:
                raise EdgekdError(f"prompt '{p[:60]}' is {n} tokens; this teacher's tokenizer takes at most "
                                  f"{max_len}: shorten it")
        tok = self.tokenizer(list(prompts), padding="max_length", max_length=max_len, truncation=True,
                             return_tensors="pt")
        device = next(self.text_encoder.parameters()).device
        mask = tok.attention_mask.to(device) if getattr(self.text_encoder.config, "use_attention_mask", False) else None
        return self.text_encoder(tok.input_ids.to(device), attention_mask=mask)[0]

    def condition_input(self, ids: torch.Tensor | None) -> torch.Tensor | None:
        """What the denoiser takes for condition ids (class ids pass through; prompt indices become the recipe's
        prompts' embeddings, computed once)."""
        if self.condition is None or ids is None:
            return None
        if self.condition.kind == "class":
            return ids.long()
        table = self._null_cache.get("prompts")
        if table is None:
            table = self._null_cache["prompts"] = self.encode_prompts(list(self.condition.prompts)).cpu()
        return table[ids.long().cpu()]

    def null_input(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        """The unconditional branch of classifier-free guidance, as the diffusers pipelines define it: the null
        class (DiT: the label-dropout row) or the empty prompt."""
        cond = self.condition
        if cond is None or (cond.kind == "class" and cond.null is None):
            raise EdgekdError(f"teacher {self.source} has no unconditional branch: classifier-free guidance "
                              "(teacher.guidance_scale != 1) needs a text or DiT teacher")
        if cond.kind == "class":
            return torch.full((batch,), int(cond.null), dtype=torch.int64, device=like.device)
        empty = self._null_cache.get("empty")
        if empty is None:
            empty = self._null_cache["empty"] = self.encode_prompts([""]).cpu()
        return empty.expand(batch, *empty.shape[1:]).to(like.device, like.dtype)

    def predict(self, x: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor | None = None,
                guidance: float | None = None) -> torch.Tensor:
        """The network's raw prediction (epsilon, v or x0 as the scheduler says), guided when ``guidance`` > 1
        with the branches batched in the order the diffusers pipeline uses (SD: null first; DiT: null last)."""
        g = self.guidance_scale if guidance is None else float(guidance)
        if cond is not None:
            cond = cond.to(x.device)
        if g == 1.0 or cond is None:
            return self.denoiser(x, t, cond)
        null = self.null_input(x.shape[0], cond if cond.is_floating_point() else x)
        if self.condition.kind == "text":
            uncond, guided = self.denoiser(torch.cat([x, x]), t, torch.cat([null, cond])).chunk(2)
        else:
            guided, uncond = self.denoiser(torch.cat([x, x]), t, torch.cat([cond, null])).chunk(2)
        return uncond + g * (guided - uncond)

    def eps(self, x: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Epsilon whatever the prediction type (v and x0 predictions converted with the schedule's alphas)."""
        return to_epsilon(self.predict(x, t, cond), x, t, self.scheduler_config)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, noise: torch.Tensor, steps: int, spacing: str = "trailing", eta: float = 0.0,
               record: list[int] | None = None, solver: str = "ddim", condition: torch.Tensor | None = None,
               guidance: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Deterministic DDIM (eta 0) from ``noise`` with this teacher's network, or another ODE ``solver``
        (SOLVERS: DPM-Solver++ / UniPC multistep, fewer network calls for the same quality). ``condition``: ids
        (class ids or prompt indices, see ``condition_input``); the result is in the denoiser's space (latents
        for a latent teacher: ``decode`` makes images)."""
        if self.condition is not None and condition is None:
            raise EdgekdError(f"teacher {self.source} is {self.condition.kind}-conditional: a condition is needed")
        cond = self.condition_input(condition)

        def fn(x: torch.Tensor, t: Any) -> torch.Tensor:
            return self.predict(x, t, cond, guidance)

        if solver == "ddim":
            return ddim_sample(self.scheduler_config, fn, noise, steps, spacing, eta, record)
        return solver_sample(self.scheduler_config, fn, noise, steps, spacing, solver, record, clamp=not self.latent)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from the denoiser's output (the identity for a pixel teacher)."""
        if self.decoder is None:
            return latents
        dev = next(self.decoder.parameters()).device
        return self.decoder.decode(latents.to(dev) / self.scaling_factor).sample.clamp(-1.0, 1.0)

    def describe(self) -> dict[str, Any]:
        """What the run records about the teacher (teacher.json)."""
        return {"family": self.family, "class": type(self.unet).__name__, "pipeline": self.pipeline,
                "prediction_type": self.prediction_type, "sample_shape": list(self.sample_shape),
                "image_shape": list(self.image_shape), "latent": self.latent,
                "decoder": type(self.decoder).__name__ if self.decoder is not None else None,
                "scaling_factor": self.scaling_factor if self.latent else None,
                "condition": self.condition.describe() if self.condition is not None else None,
                "guidance_scale": self.guidance_scale}


def to_epsilon(pred: torch.Tensor, x: torch.Tensor, t: Any, scheduler_config: dict[str, Any]) -> torch.Tensor:
    """Convert a network's prediction to epsilon (diffusers' DDIM conventions: v = sqrt(a) eps - sqrt(1-a) x0)."""
    kind = scheduler_config.get("prediction_type", "epsilon")
    if kind == "epsilon":
        return pred
    a = _alpha_bar(scheduler_config, t, x)
    if kind == "v_prediction":
        return a.sqrt() * pred + (1 - a).sqrt() * x
    return (x - a.sqrt() * pred) / (1 - a).sqrt()  # sample (x0) prediction


def _alpha_bar(scheduler_config: dict[str, Any], t: Any, like: torch.Tensor) -> torch.Tensor:
    alphas = make_ddim(scheduler_config, 1).alphas_cumprod.to(like.device, torch.float32)
    t = torch.as_tensor(t, device=like.device).long().reshape(-1)
    a = alphas[t]
    return a.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def make_ddim(scheduler_config: dict[str, Any], steps: int, spacing: str = "trailing") -> Any:
    """A fresh diffusers DDIMScheduler on the teacher's noise schedule with ``steps`` timesteps."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(scheduler_config, timestep_spacing=spacing)
    sched.set_timesteps(steps)
    return sched


# The teacher's ODE solvers (diffusers schedulers) and the settings edgekd fixes for each. The settings are part of
# the trajectory store key (TrajectorySpec.solver_config), so changing one here never mixes cached pairs.
SOLVERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                    "lower_order_final": True, "final_sigmas_type": "zero"}),
    "unipc": ("UniPCMultistepScheduler", {"solver_order": 2, "predict_x0": True, "solver_type": "bh2",
                                          "lower_order_final": True, "final_sigmas_type": "zero"}),
}


def solver_config(solver: str) -> dict[str, Any]:
    """The fixed settings of ``solver`` (what the store key records)."""
    if solver not in SOLVERS:
        raise EdgekdError(f"teacher.solver '{solver}' is unknown (choose one of {', '.join(SOLVERS)})")
    return {"scheduler": SOLVERS[solver][0], **SOLVERS[solver][1]}


def make_solver(scheduler_config: dict[str, Any], solver: str, steps: int, spacing: str = "trailing") -> Any:
    """A fresh diffusers scheduler of kind ``solver`` on the teacher's noise schedule with ``steps`` network calls."""
    import diffusers

    if solver == "ddim":
        return make_ddim(scheduler_config, steps, spacing)
    cls_name = solver_config(solver)["scheduler"]
    sched = getattr(diffusers, cls_name).from_config(scheduler_config, timestep_spacing=spacing, **SOLVERS[solver][1])
    sched.set_timesteps(steps)
    return sched


@torch.no_grad()
def solver_sample(
    scheduler_config: dict[str, Any],
    eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    steps: int,
    spacing: str = "trailing",
    solver: str = "dpmsolver++",
    record: list[int] | None = None,
    clamp: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A multistep ODE solver (fresh scheduler per call: they keep past outputs) around an epsilon function.

    One network call per step, like DDIM. Returns (x_0 clamped to [-1, 1] as DDIM's clip_sample does, the
    recorded states or None).
    """
    sched = make_solver(scheduler_config, solver, steps, spacing)
    x = noise * sched.init_noise_sigma
    keep = set(record or [])
    states = []
    for i, t in enumerate(sched.timesteps):
        if i in keep:
            states.append(x.clone())
        x = sched.step(eps_fn(sched.scale_model_input(x, t), t), t, x).prev_sample
    return (x.clamp(-1.0, 1.0) if clamp else x), (torch.stack(states, dim=1) if states else None)


@torch.no_grad()
def ddim_sample(
    scheduler_config: dict[str, Any],
    eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    steps: int,
    spacing: str = "trailing",
    eta: float = 0.0,
    record: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DDIM through diffusers' scheduler around any epsilon function (torch UNet, ONNX session, routed students).

    Returns (x_0, the states x_t just before each recorded step index, stacked on dim 1, or None).
    """
    sched = make_ddim(scheduler_config, steps, spacing)
    x = noise * sched.init_noise_sigma
    keep = set(record or [])
    states = []
    gen = torch.Generator(device="cpu").manual_seed(0) if eta > 0 else None
    for i, t in enumerate(sched.timesteps):
        if i in keep:
            states.append(x.clone())
        x = sched.step(eps_fn(x, t), t, x, eta=eta, generator=gen).prev_sample
    return x, (torch.stack(states, dim=1) if states else None)


def _fingerprint(modules: nn.Module | list[nn.Module], scheduler_config: dict[str, Any],
                 extra: dict[str, Any] | None = None) -> str:
    """A content hash of every network's weights + the whole sampler configuration (+ the condition), so
    trajectory stores never mix two teachers.

    The schedule is hashed as the DDIM sampler sees it (every setting after diffusers fills in defaults, e.g.
    clip_sample_range, thresholding, steps_offset): any setting that changes a sample changes the fingerprint. An
    unconditional pixel teacher hashes only its UNet and schedule (its fingerprint, and so its cached
    trajectories, stay what they were before teachers had other parts)."""
    import json

    h = hashlib.sha256()
    for i, module in enumerate([modules] if isinstance(modules, nn.Module) else modules):
        prefix = "" if i == 0 else f"part{i}."
        for name, tensor in sorted(module.state_dict().items()):
            h.update((prefix + name).encode())
            h.update(str(tensor.dtype).encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    sampler = {k: v for k, v in dict(make_ddim(scheduler_config, 1).config).items()
               if not k.startswith("_") and k != "timestep_spacing"}
    h.update(json.dumps(sampler, sort_keys=True, default=str).encode())
    if extra:
        h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _is_hub_id(path: str) -> bool:
    return "/" in path and not path.startswith((".", "/", "~", "builtin:")) and path.count("/") == 1


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the hub, so an offline machine fails in seconds instead of retrying for a minute."""
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _download_from_hub(repo_id: str) -> Path:
    """The hub's local cache first; the network only when the hub answers. Returns the snapshot folder."""
    from huggingface_hub import snapshot_download

    attempts = [True] if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable() else [True, False]
    last: Exception | None = None
    for local_only in attempts:
        try:
            return Path(snapshot_download(repo_id, local_files_only=local_only,
                                          allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"]))
        except Exception as exc:  # the hub raises many types; the user needs one sentence
            last = exc
    offline = len(attempts) == 1
    raise MissingResourceError(
        f"teacher '{repo_id}' is not a local folder"
        + (" and the Hugging Face hub is not reachable from here (offline)" if offline else
           f" and could not be fetched from the Hugging Face hub ({type(last).__name__})")
        + f". Download it where there is internet (huggingface-cli download {repo_id} --local-dir DIR) "
        "and set teacher.path: DIR"
    )


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def load_teacher(path: str, device: torch.device | str = "cpu", prompts: list[str] | tuple[str, ...] | None = None,
                 guidance_scale: float = 1.0) -> DiffusionTeacher:
    """Load ``path`` (a diffusers pipeline folder, unet/ + scheduler/, a bare UNet folder, builtin:NAME, or a hub
    id) with every part it has (edgekd.teachers.layout). ``prompts``: the prompt list a text teacher's recordings
    cycle through (default: edgekd's short list); ``guidance_scale``: classifier-free guidance (1: none)."""
    _quiet_diffusers()
    from diffusers import DDPMScheduler

    from edgekd.teachers.conditions import DEFAULT_PROMPTS, ClassCondition, TextCondition
    from edgekd.models.denoisers import load_denoiser, num_classes
    from edgekd.teachers.layout import read_layout

    local = resolve_builtin(path)
    if local.exists():
        source = str(local)
    elif _is_hub_id(path):
        local, source = _download_from_hub(path), f"hub:{path}"
    else:
        raise MissingResourceError(f"teacher {local} does not exist (expected a diffusers folder with unet/ and scheduler/)")
    layout = read_layout(local)
    scheduler_config = _load_scheduler_config(layout.scheduler) if layout.scheduler is not None \
        else dict(DDPMScheduler().config)
    kind = scheduler_config.get("prediction_type", "epsilon")
    if "FlowMatch" in str(scheduler_config.get("_class_name", "")):
        raise MissingResourceError(f"teacher {path}: flow-matching schedulers ({scheduler_config['_class_name']}, "
                                   "SD3-style velocity) are not supported; edgekd distills DDPM-family teachers "
                                   f"(prediction types {', '.join(PREDICTION_TYPES)})")
    if kind not in PREDICTION_TYPES:
        raise MissingResourceError(f"teacher {path}: prediction_type '{kind}' is not supported (supported: "
                                   f"{', '.join(PREDICTION_TYPES)})")
    try:
        from edgekd.compress.prune import PRUNED_FILE, load_pruned_unet

        # a teacher pruned by `edgekd compress --teacher` keeps its unpruned config + a structure diff
        unet = load_pruned_unet(layout.denoiser) if (layout.denoiser / PRUNED_FILE).is_file() \
            else load_denoiser(layout.denoiser, layout.denoiser_class)
        decoder = _load_part(layout.decoder, "decoder") if layout.decoder is not None else None
        text_encoder = _load_part(layout.text_encoder, "text_encoder") if layout.text_encoder is not None else None
        tokenizer = _load_tokenizer(layout.tokenizer) if layout.tokenizer is not None else None
    except EdgekdError:
        raise
    except Exception as exc:  # diffusers/transformers raise many types for bad folders
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise MissingResourceError(f"cannot load the teacher from {local}: {text}") from None
    condition: Any = None
    n, null = num_classes(unet)
    if n and null is None and layout.id2label and n == len(layout.id2label) + 1 and max(layout.id2label) == n - 2:
        n, null = n - 1, n - 1  # edgekd's convention (edgekd teacher train, classes:): the last embedding = no class
    if n:
        unknown = sorted(k for k in layout.id2label if not 0 <= k < n)
        if unknown:
            raise MissingResourceError(f"teacher {path}: id2label names classes {unknown[:5]} outside 0..{n - 1}")
        condition = ClassCondition(n, dict(layout.id2label), null)
    elif type(unet).__name__ == "UNet2DConditionModel":
        if text_encoder is None or tokenizer is None:
            raise MissingResourceError(f"teacher {path}: the text-conditional UNet needs text_encoder/ and tokenizer/")
        width = int(text_encoder.config.hidden_size)
        if int(unet.config.cross_attention_dim) != width:
            raise MissingResourceError(f"teacher {path}: the text encoder's width {width} is not the UNet's "
                                       f"cross_attention_dim {unet.config.cross_attention_dim}")
        condition = TextCondition(tuple(prompts or DEFAULT_PROMPTS), int(tokenizer.model_max_length),
                                  (int(tokenizer.model_max_length), width))
    if guidance_scale != 1.0 and (condition is None or (condition.kind == "class" and condition.null is None)):
        raise MissingResourceError(f"teacher.guidance_scale {guidance_scale}: teacher {path} has no unconditional "
                                   "branch for classifier-free guidance (text and DiT teachers have one); set it to 1")
    parts = [m for m in (unet, decoder, text_encoder) if m is not None]
    for m in parts:
        m.eval().requires_grad_(False).to(device)
    extra = None
    if condition is not None:
        extra = {"condition": {k: v for k, v in condition.describe().items() if k != "prompts"}}
    teacher = DiffusionTeacher(unet=unet, scheduler_config=scheduler_config, source=source,
                               fingerprint=_fingerprint(parts, scheduler_config, extra), condition=condition,
                               decoder=decoder, text_encoder=text_encoder, tokenizer=tokenizer,
                               guidance_scale=float(guidance_scale), pipeline=layout.pipeline)
    if guidance_scale != 1.0:
        teacher.null_input(1, torch.zeros(1))  # the null branch is computable (fails early, in one line)
    return teacher


def load_recipe_teacher(recipe: Any, device: torch.device | str = "cpu") -> DiffusionTeacher:
    """The teacher of a recipe: its path, prompt list and guidance scale."""
    t = recipe.teacher
    return load_teacher(t.path, device, prompts=t.prompts, guidance_scale=t.guidance_scale)


def _load_part(folder: Path, what: str) -> nn.Module:
    """A decoder (AutoencoderKL / VQModel / AutoencoderTiny) or a transformers text encoder, by its config."""
    import json

    cfg = json.loads((folder / "config.json").read_text())
    if what == "decoder":
        import diffusers

        name = cfg.get("_class_name", "AutoencoderKL")
        if name not in ("AutoencoderKL", "VQModel", "AutoencoderTiny"):
            raise MissingResourceError(f"decoder {name} in {folder} is not supported (AutoencoderKL, VQModel, "
                                       "AutoencoderTiny)")
        return getattr(diffusers, name).from_pretrained(str(folder))
    import transformers

    arch = (cfg.get("architectures") or ["CLIPTextModel"])[0]
    if arch not in ("CLIPTextModel", "CLIPTextModelWithProjection"):
        raise MissingResourceError(f"text encoder {arch} in {folder} is not supported (CLIPTextModel)")
    return getattr(transformers, arch).from_pretrained(str(folder))


def _load_tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))


def _load_scheduler_config(folder: Path) -> dict[str, Any]:
    """The scheduler's config, checked: a garbage or hand-edited file is one line, not a diffusers traceback."""
    from diffusers import DDPMScheduler

    try:
        config = dict(DDPMScheduler.load_config(str(folder)))
        make_ddim(config, 1)  # every value the sampler needs is there and valid
    except Exception as exc:  # diffusers raises EnvironmentError, ValueError, JSONDecodeError, TypeError ...
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise MissingResourceError(f"teacher scheduler config {folder / 'scheduler_config.json'} is not a valid "
                                   f"diffusers scheduler config ({text}); restore it from the teacher's "
                                   "checkpoint") from None
    return config


def save_teacher(unet: nn.Module, scheduler_config: dict[str, Any], folder: Path) -> None:
    """Write a diffusers checkpoint (unet/ + scheduler/) that ``load_teacher`` and diffusers both read."""
    from diffusers import DDPMScheduler

    unet.save_pretrained(str(folder / "unet"), safe_serialization=True)
    DDPMScheduler.from_config(scheduler_config).save_config(str(folder / "scheduler"))
