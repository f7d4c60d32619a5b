"""O2MKD's student: N epsilon UNets, each owning a contiguous range of timesteps, routed inside one DDIM loop.

Student ``i`` owns the timesteps ``edges[i] <= t < edges[i+1]`` with ``edges = [0, *boundaries, T]`` (T the
teacher's ``num_train_timesteps``): students are numbered from the least noisy range to the noisiest, so student
N-1 runs the first DDIM steps and student 0 the last ones. A timestep equal to a boundary belongs to the student
above it.

``forward(noise)`` runs the whole deterministic DDIM loop (the teacher's scheduler, the recipe's step count and
spacing) and sends every step to the student that owns its timestep, so profiling, sampling and parity code that
treats a student as noise -> image works unchanged (it makes ``steps`` network calls per image, not one).
Each student is exported on its own as a step model (sample, timestep) -> epsilon: see edgekd/export/multi.py.
"""

from __future__ import annotations

import bisect
import copy
from typing import Any

import torch
from torch import nn

from edgekd.errors import EdgekdError
from edgekd.models.spec import DDIMLoop, GraphSpec, step_graph
from edgekd.teachers.diffusers_teacher import ddim_sample, make_ddim


def range_edges(boundaries: list[int], num_train_timesteps: int) -> list[int]:
    """[0, *boundaries, T]: student i owns edges[i] <= t < edges[i+1]."""
    return [0, *[int(b) for b in boundaries], int(num_train_timesteps)]


def route_timestep(boundaries: list[int], t: int) -> int:
    """The index of the student that owns timestep ``t`` (the number of boundaries <= t)."""
    return bisect.bisect_right(boundaries, int(t))


def route_tensor(boundaries: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Vectorised ``route_timestep`` for a batch of timesteps (int64 indices)."""
    return torch.bucketize(t, boundaries.to(t.device, t.dtype), right=True)


def check_boundaries(boundaries: list[int], num_train_timesteps: int, timesteps: list[int] | None = None) -> None:
    """Boundaries strictly increasing inside 1..T-1 and, given the sampler's timesteps, every student used.

    Raises ValueError with one line (the recipe validator and the student both call it).
    """
    bad = [b for b in boundaries if not 0 < b < num_train_timesteps]
    if bad:
        raise ValueError(f"boundaries {bad} must lie inside 1..{num_train_timesteps - 1} "
                         f"(the teacher's num_train_timesteps is {num_train_timesteps})")
    if any(b >= c for b, c in zip(boundaries, boundaries[1:])):
        raise ValueError(f"boundaries {boundaries} must be strictly increasing")
    if timesteps is not None:
        edges = range_edges(boundaries, num_train_timesteps)
        owned = [sum(1 for t in timesteps if edges[i] <= t < edges[i + 1]) for i in range(len(edges) - 1)]
        empty = [i for i, n in enumerate(owned) if n == 0]
        if empty:
            spans = ", ".join(f"{edges[i]}..{edges[i + 1] - 1}" for i in empty)
            raise ValueError(f"boundaries {boundaries}: student(s) {empty} (timesteps {spans}) own none of the "
                             f"{len(timesteps)} DDIM timesteps {timesteps}; move the boundaries or raise teacher.steps")


def _unet_config(unet: nn.Module) -> dict[str, Any]:
    return {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}


def unet_arch(unet: nn.Module) -> dict[str, Any]:
    """A JSON description that rebuilds ``unet`` (before its weights are loaded)."""
    structure = getattr(unet, "pruned_structure", None)
    if structure:  # channel-pruned by edgekd.compress.prune: its UNPRUNED config + what pruning changed
        return {"type": "pruned", "config": _unet_config(unet), "structure": structure}
    return {"type": "diffusers", "config": _unet_config(unet)}


def build_unet(arch: dict[str, Any]) -> nn.Module:
    """The inverse of ``unet_arch``."""
    from diffusers import UNet2DModel

    if arch.get("type") == "diffusers":
        return UNet2DModel(**arch["config"])
    if arch.get("type") == "pruned":
        from edgekd.compress.prune import build_pruned_unet

        return build_pruned_unet(arch["config"], arch["structure"])
    raise EdgekdError(f"unknown O2MKD student architecture type {arch.get('type')!r}")


class O2MKDStudent(nn.Module):
    """N epsilon UNets + the timestep boundaries between them + the DDIM sampler they are run with."""

    def __init__(self, unets: list[nn.Module], boundaries: list[int], scheduler_config: dict[str, Any], steps: int,
                 spacing: str = "trailing", sample_shape: tuple[int, int, int] | None = None,
                 inits: list[str] | None = None):
        super().__init__()
        if len(unets) != len(boundaries) + 1:
            raise ValueError(f"{len(boundaries)} boundaries make {len(boundaries) + 1} ranges, got {len(unets)} UNets")
        self.unets = nn.ModuleList(unets)
        self.boundaries = [int(b) for b in boundaries]
        self.scheduler_config = {k: v for k, v in dict(scheduler_config).items()}
        self.steps = int(steps)
        self.spacing = spacing
        self.inits = list(inits) if inits else ["unknown"] * len(unets)
        cfg = unets[0].config
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        self.sample_shape = tuple(sample_shape) if sample_shape else (int(cfg.in_channels), int(size), int(size))
        check_boundaries(self.boundaries, self.num_train_timesteps, self.timesteps())
        self.register_buffer("_boundaries_t", torch.tensor(self.boundaries, dtype=torch.int64), persistent=False)

    # ------------------------------------------------------------------ routing
    @property
    def num_students(self) -> int:
        return len(self.unets)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler_config["num_train_timesteps"])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.sample_shape

    def edges(self) -> list[int]:
        return range_edges(self.boundaries, self.num_train_timesteps)

    def ranges(self) -> list[tuple[int, int]]:
        """(first, last) timestep owned by each student, inclusive."""
        e = self.edges()
        return [(e[i], e[i + 1] - 1) for i in range(self.num_students)]

    def timesteps(self) -> list[int]:
        """The DDIM timesteps of the sampler, in sampling order (noisiest first)."""
        return [int(t) for t in make_ddim(self.scheduler_config, self.steps, self.spacing).timesteps]

    def route(self, t: int | torch.Tensor) -> int:
        """The student that owns timestep ``t``."""
        return route_timestep(self.boundaries, int(t))

    def route_batch(self, t: torch.Tensor) -> torch.Tensor:
        return route_tensor(self._boundaries_t, t)

    def schedule(self) -> list[tuple[int, int]]:
        """(DDIM timestep, student index) for every sampling step, in order."""
        return [(t, self.route(t)) for t in self.timesteps()]

    # ------------------------------------------------------------------ running
    def eps(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """Epsilon from the student that owns ``t`` (one timestep for the whole batch, as in sampling)."""
        return self.unets[self.route(t)](x, t).sample

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        """Noise -> image: the deterministic DDIM loop with every step routed to its student."""
        return ddim_sample(self.scheduler_config, self.eps, noise, self.steps, self.spacing)[0]

    # ------------------------------------------------------------------ describing (edgekd/models/spec.py)
    def graphs(self) -> list[GraphSpec]:
        """One (sample, timestep) -> epsilon graph per student, ``student_<i>``."""
        return [step_graph(f"student_{i}", unet, self.sample_shape, (lo + hi) // 2)
                for i, ((lo, hi), unet) in enumerate(zip(self.ranges(), self.unets))]

    def sampling(self) -> DDIMLoop:
        return DDIMLoop(dict(self.scheduler_config), self.steps, self.spacing,
                        tuple(f"student_{i}" for i in range(self.num_students)), tuple(self.boundaries))

    # ------------------------------------------------------------------ saving
    def export_config(self) -> dict[str, Any]:
        ts = self.timesteps()
        students = []
        for i, ((lo, hi), unet) in enumerate(zip(self.ranges(), self.unets)):
            students.append({"index": i, "range": [lo, hi], "timesteps": [t for t in ts if lo <= t <= hi],
                             "init": self.inits[i], "arch": unet_arch(unet)})
        return {"kind": "o2mkd", "boundaries": self.boundaries, "steps": self.steps, "spacing": self.spacing,
                "sample_shape": list(self.sample_shape), "scheduler": self.scheduler_config, "students": students,
                "routing": "student i owns edges[i] <= t < edges[i+1], edges = [0, *boundaries, T]; "
                           "forward(noise) = DDIM(steps, spacing) with every step's epsilon from its owner"}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "O2MKDStudent":
        students = sorted(config["students"], key=lambda s: s["index"])
        return cls([build_unet(s["arch"]) for s in students], config["boundaries"], config["scheduler"],
                   config["steps"], config["spacing"], tuple(config["sample_shape"]), [s["init"] for s in students])


# --------------------------------------------------------------------------------------------- building


def scaled_widths(channels: list[int], width: float, groups: int) -> list[int]:
    """``width`` x the teacher's channels, rounded to a multiple of the GroupNorm groups (at least one group)."""
    return [max(groups, int(round(c * width / groups)) * groups) for c in channels]


def slim_unet(teacher_unet: nn.Module, block_out_channels: list[int], norm_num_groups: int | None = None) -> nn.Module:
    """The teacher's UNet architecture (block types, depth, attention, embedding) with other channel widths."""
    from diffusers import UNet2DModel

    cfg = _unet_config(teacher_unet)
    cfg["block_out_channels"] = tuple(block_out_channels)
    if norm_num_groups is not None:
        cfg["norm_num_groups"] = norm_num_groups
    return UNet2DModel(**cfg)


def build_o2mkd_student(cfg: Any, teacher: Any, steps: int, spacing: str) -> O2MKDStudent:
    """The student from the recipe's ``student:`` section (kind o2mkd) and the loaded DiffusionTeacher."""
    n = len(cfg.boundaries) + 1
    t_cfg = teacher.unet.config
    groups = cfg.norm_num_groups or int(t_cfg.norm_num_groups)
    unets: list[nn.Module] = []
    for i in range(n):
        if cfg.init == "teacher":
            unet = copy.deepcopy(teacher.unet)
        elif cfg.init == "scratch":
            widths = cfg.block_out_channels or scaled_widths(list(t_cfg.block_out_channels), cfg.width_of(i), groups)
            bad = [c for c in widths if c % groups]
            if bad:
                raise EdgekdError(f"student.block_out_channels {bad} are not divisible by the GroupNorm groups ({groups})")
            unet = slim_unet(teacher.unet, widths, cfg.norm_num_groups)
        else:
            from edgekd.compress.prune import prune_unet

            lo, hi = range_edges(list(cfg.boundaries), teacher.num_train_timesteps)[i : i + 2]
            # the timestep only matters for taylor importance: the middle of the student's own range
            unet = prune_unet(teacher.unet, 1.0 - cfg.width_of(i), cfg.importance, timestep=(lo + hi - 1) // 2, seed=i)
        unets.append(unet.float().requires_grad_(True).train())
    return O2MKDStudent(unets, list(cfg.boundaries), teacher.scheduler_config, steps, spacing, teacher.sample_shape,
                        [cfg.init] * n)

