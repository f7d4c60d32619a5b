"""A diffusers teacher: UNet2DModel (epsilon prediction) + its scheduler, sampled with deterministic DDIM.

Loaded exactly as a user loads any diffusers checkpoint on disk (``unet/`` and ``scheduler/`` folders), or from a
Hugging Face hub id at a site with internet; offline, a hub id fails at once with a message that says what to do.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
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
    """The teacher network and the scheduler configuration it was trained with."""

    unet: nn.Module
    scheduler_config: dict[str, Any]
    source: str
    fingerprint: str

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config["num_train_timesteps"])

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        cfg = self.unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        return (int(cfg.in_channels), int(size), int(size))

    def ddim(self, steps: int, spacing: str = "trailing") -> Any:
        return make_ddim(self.scheduler_config, steps, spacing)

    def timesteps(self, steps: int, spacing: str = "trailing") -> list[int]:
        return [int(t) for t in self.ddim(steps, spacing).timesteps]

    def eps(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        return self.unet(x, t).sample

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, steps: int, spacing: str = "trailing", eta: float = 0.0,
               record: list[int] | None = None, solver: str = "ddim") -> tuple[torch.Tensor, torch.Tensor | None]:
        """Deterministic DDIM (eta 0) from ``noise`` with this teacher's network, or another ODE ``solver``
        (SOLVERS: DPM-Solver++ / UniPC multistep, fewer network calls for the same quality)."""
        if solver == "ddim":
            return ddim_sample(self.scheduler_config, self.eps, noise, steps, spacing, eta, record)
        return solver_sample(self.scheduler_config, self.eps, noise, steps, spacing, solver, record)


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
    return x.clamp(-1.0, 1.0), (torch.stack(states, dim=1) if states else None)


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


def _fingerprint(unet: nn.Module, scheduler_config: dict[str, Any]) -> str:
    """A content hash of weights + the whole sampler configuration, so trajectory stores never mix two teachers.

    The schedule is hashed as the DDIM sampler sees it (every setting after diffusers fills in defaults, e.g.
    clip_sample_range, thresholding, steps_offset): any setting that changes a sample changes the fingerprint."""
    import json

    h = hashlib.sha256()
    for name, tensor in sorted(unet.state_dict().items()):
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    sampler = {k: v for k, v in dict(make_ddim(scheduler_config, 1).config).items()
               if not k.startswith("_") and k != "timestep_spacing"}
    h.update(json.dumps(sampler, sort_keys=True, default=str).encode())
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


def _load_from_hub(repo_id: str) -> tuple[nn.Module, dict[str, Any]]:
    """The hub's local cache first; the network only when the hub answers."""
    from diffusers import DDPMScheduler, UNet2DModel

    attempts = [True] if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable() else [True, False]
    last: Exception | None = None
    for local_only in attempts:
        try:
            unet = UNet2DModel.from_pretrained(repo_id, subfolder="unet", local_files_only=local_only)
            config = dict(DDPMScheduler.load_config(repo_id, subfolder="scheduler", local_files_only=local_only))
            return unet, config
        except Exception as exc:  # diffusers/hub raise many types; the user needs one sentence
            last = exc
    offline = len(attempts) == 1
    raise MissingResourceError(
        f"teacher '{repo_id}' is not a local folder"
        + (" and the Hugging Face hub is not reachable from here (offline)" if offline else
           f" and could not be fetched from the Hugging Face hub ({type(last).__name__})")
        + f". Download it where there is internet (huggingface-cli download {repo_id} --local-dir DIR) "
        "and set teacher.path: DIR"
    )


def load_teacher(path: str, device: torch.device | str = "cpu") -> DiffusionTeacher:
    """Load ``path`` (folder with unet/ + scheduler/, a bare UNet folder, builtin:NAME, or a hub id)."""
    _quiet_diffusers()
    from diffusers import DDPMScheduler, UNet2DModel

    local = resolve_builtin(path)
    if local.exists():
        unet_dir = local / "unet" if (local / "unet").is_dir() else local
        sched_dir = local / "scheduler" if (local / "scheduler").is_dir() else None
        if not (unet_dir / "config.json").is_file():
            raise MissingResourceError(f"{local} is not a diffusers checkpoint: no unet/config.json")
        try:
            from edgekd.compress.prune import PRUNED_FILE, load_pruned_unet

            # a teacher pruned by `edgekd compress --teacher` keeps its unpruned config + a structure diff
            unet = load_pruned_unet(unet_dir) if (unet_dir / PRUNED_FILE).is_file() \
                else UNet2DModel.from_pretrained(str(unet_dir))
        except EdgekdError:
            raise
        except Exception as exc:  # diffusers raises many types for bad folders
            raise MissingResourceError(f"cannot load the teacher UNet from {unet_dir}: {exc}") from None
        if sched_dir is not None:
            scheduler_config = _load_scheduler_config(sched_dir)
        else:
            scheduler_config = dict(DDPMScheduler().config)
        source = str(local)
    elif _is_hub_id(path):
        unet, scheduler_config = _load_from_hub(path)
        source = f"hub:{path}"
    else:
        raise MissingResourceError(f"teacher {local} does not exist (expected a diffusers folder with unet/ and scheduler/)")
    if scheduler_config.get("prediction_type", "epsilon") != "epsilon":
        raise MissingResourceError(
            f"teacher {path}: prediction_type '{scheduler_config.get('prediction_type')}' is not supported yet "
            "(edgekd's samplers expect an epsilon-prediction DDPM)"
        )
    unet.eval().requires_grad_(False).to(device)
    return DiffusionTeacher(unet=unet, scheduler_config=scheduler_config, source=source,
                            fingerprint=_fingerprint(unet, scheduler_config))


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
