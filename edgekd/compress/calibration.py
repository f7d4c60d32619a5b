"""Calibration inputs for post-training quantization: what the model will really see, across every timestep.

Quantization ranges are fitted to the activations the calibration inputs produce. A diffusion network sees very
different activations at different noise levels, so a step model calibrated at one timestep clips (or wastes
resolution) at the others. The rules:

- One-step students take noise only: calibration inputs are standard-normal noise (edgekd's noise convention,
  a seed of its own so the parity gate's noise stays unseen).
- Step models (``sample``, ``timestep`` -> ``epsilon``: the teacher step of ``edgekd export --teacher``, the
  O2MKD per-timestep students) get (x_t, t) pairs spread over every timestep they are called at:
  1. ``trajectory`` with recorded states: the teacher's own DDIM states x_t from the trajectory store
     (``trajectory.record``), round-robin over every recorded step (plus the initial noise at the first step), so
     each recorded timestep gets the same share;
  2. ``trajectory`` without recorded states: q_sample, x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps, of real data
     (the recipe's dataset; the store's teacher outputs when the data is not there) at stratified timesteps
     covering the model's whole range;
  3. ``noise``: plain Gaussian noise at stratified timesteps (the naive choice, kept for comparison).
- A model with a fixed batch gets its inputs in chunks of that batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from edgekd.errors import EdgekdError
from edgekd.noise import make_noise

# seeds of their own: calibration, held-out evaluation and the parity gate (export.parity_seed) never share noise
CALIBRATION_SEED = 31_000_000
HELDOUT_SEED = 32_000_000


@dataclass
class CalibrationSet:
    """Model inputs by name, each [N, ...] (float32 image-like inputs; int64 ``timestep`` for step models)."""

    inputs: dict[str, np.ndarray]
    source: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    @property
    def timesteps(self) -> np.ndarray | None:
        return self.inputs.get("timestep")

    def batches(self, batch: int = 1, dtypes: dict[str, Any] | None = None,
                fixed: bool = True) -> Iterator[dict[str, np.ndarray]]:
        """Chunks of ``batch``; with ``fixed`` (a fixed-batch model) a short last chunk is dropped."""
        n = len(self)
        stop = n - n % batch if fixed else n
        if stop == 0:
            raise EdgekdError(f"calibration set has {n} samples, fewer than the model's fixed batch {batch}; "
                              "raise compress.quantize.calibration_samples")
        for i in range(0, stop, batch):
            yield {k: np.ascontiguousarray(v[i : i + batch], dtype=(dtypes or {}).get(k, v.dtype))
                   for k, v in self.inputs.items()}

    def torch_inputs(self) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in self.inputs.values())

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"samples": len(self), "source": self.source}
        t = self.timesteps
        if t is not None:
            info.update(timestep_min=int(t.min()), timestep_max=int(t.max()), distinct_timesteps=int(len(np.unique(t))))
        if self.notes:
            info["notes"] = list(self.notes)
        return info


def noise_set(n: int, shape: Sequence[int], seed: int = CALIBRATION_SEED, name: str = "noise") -> CalibrationSet:
    """Standard-normal inputs for a one-step student."""
    return CalibrationSet({name: make_noise(seed, 0, n, tuple(shape)).numpy()}, "standard-normal noise")


def stratified_timesteps(n: int, lo: int, hi: int, seed: int) -> np.ndarray:
    """``n`` timesteps covering [lo, hi]: one uniform draw inside each of n equal strata (shuffled)."""
    if hi < lo:
        lo, hi = hi, lo
    rng = np.random.default_rng(seed)
    edges = np.linspace(lo, hi + 1, n + 1)
    t = np.floor(edges[:-1] + rng.random(n) * (edges[1:] - edges[:-1])).astype(np.int64)
    t = np.clip(t, lo, hi)
    rng.shuffle(t)
    return t


def q_sample(x0: torch.Tensor, t: np.ndarray, alphas_cumprod: np.ndarray, seed: int) -> np.ndarray:
    """x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps (the forward process), eps from edgekd's noise convention."""
    from edgekd.models.diffusion import add_noise

    alphas = torch.from_numpy(np.asarray(alphas_cumprod, dtype=np.float64)).float()
    eps = make_noise(seed, 0, len(x0), tuple(x0.shape[1:]))
    return add_noise(alphas, x0.float(), eps, torch.from_numpy(np.asarray(t))).numpy().astype(np.float32)


def _real_images(recipe: Any, n: int, seed: int) -> torch.Tensor | None:
    """``n`` real training images in [-1, 1] (a seeded random subset), or None when the data is not there."""
    from edgekd.data import load_dataset

    try:
        data = load_dataset(recipe.data)
    except (EdgekdError, OSError, ValueError):
        return None
    if len(data) == 0:
        return None
    idx = np.random.default_rng(seed).choice(len(data), size=n, replace=len(data) < n)
    return data[torch.from_numpy(idx)]


def _open_store(recipe: Any) -> Any:
    """The recipe's trajectory store when it holds samples, else None."""
    from edgekd.distill import open_store
    from edgekd.teachers.diffusers_teacher import load_recipe_teacher

    try:
        store = open_store(recipe, load_recipe_teacher(recipe))
    except (EdgekdError, OSError, ValueError):
        return None
    return store if store.available() > 0 else None


def _recorded_states(store: Any, recipe: Any, n: int, timesteps: list[int], lo: int, hi: int,
                     seed: int) -> CalibrationSet | None:
    """x_t from the teacher's recorded DDIM states whose timestep lies in [lo, hi], balanced over those steps."""
    ddim_t = [int(t) for t in timesteps]
    record = list(store.spec.record)
    # the state before step k is x at timestep ddim_t[k]; the noise itself is the state before step 0
    points = [(k, ddim_t[k]) for k in record if k < len(ddim_t) and lo <= ddim_t[k] <= hi]
    if 0 not in record and lo <= ddim_t[0] <= hi:
        points.insert(0, (-1, ddim_t[0]))  # -1: take the noise column
    if not points:
        return None
    available = store.available()
    rng = np.random.default_rng(seed)
    rows = rng.choice(available, size=n, replace=available < n)
    which = np.arange(n) % len(points)
    rng.shuffle(which)
    data = store.read(0, available)
    keys = data.keys()
    samples = np.empty((n, *store.spec.shape), dtype=np.float32)
    ts = np.empty(n, dtype=np.int64)
    for j, (k, t) in enumerate(points):
        sel = np.nonzero(which == j)[0]
        if len(sel) == 0:
            continue
        if k < 0:
            samples[sel] = data.gather("noise", rows[sel])
        elif "states" in keys:
            samples[sel] = data.gather("states", rows[sel])[:, record.index(k)].astype(np.float32)
        else:
            return None
        ts[sel] = t
    return CalibrationSet({"sample": samples, "timestep": ts},
                          f"teacher DDIM states from the trajectory store ({len(points)} timesteps)")


def step_set(recipe: Any, n: int, shape: Sequence[int], alphas_cumprod: np.ndarray, t_range: tuple[int, int],
             ddim_timesteps: list[int], source: str = "trajectory", seed: int = CALIBRATION_SEED) -> CalibrationSet:
    """(x_t, t) pairs for a step model that is called at timesteps in ``t_range`` (inclusive)."""
    lo, hi = int(min(t_range)), int(max(t_range))
    if source == "noise":
        t = stratified_timesteps(n, lo, hi, seed)
        x = make_noise(seed, 0, n, tuple(shape)).numpy()
        return CalibrationSet({"sample": x, "timestep": t}, "standard-normal noise at stratified timesteps")
    if source != "trajectory":
        raise EdgekdError(f"unknown calibration source '{source}' (trajectory or noise)")
    store = _open_store(recipe)
    notes = []
    if store is not None and store.spec.record:
        states = _recorded_states(store, recipe, n, ddim_timesteps, lo, hi, seed)
        if states is not None:
            return states
        notes.append(f"recorded states are outside timesteps {lo}..{hi}: q_sample used instead")
    t = stratified_timesteps(n, lo, hi, seed)
    x0 = _real_images(recipe, n, seed)
    what = "real data"
    if x0 is None and store is not None:
        idx = np.random.default_rng(seed).choice(store.available(), size=n, replace=store.available() < n)
        x0 = torch.from_numpy(store.read(0, store.available()).gather("x0", idx)).float().clamp(-1, 1)
        what = "the teacher's recorded outputs (the dataset is not available)"
    if x0 is None:
        raise EdgekdError(f"no calibration data for a step model: {recipe.data.path} cannot be read and the trajectory "
                          "store is empty; install the data, run `edgekd distill`, or set "
                          "compress.quantize.calibration: noise")
    x = q_sample(x0, t, alphas_cumprod, seed + 1)
    return CalibrationSet({"sample": x, "timestep": t}, f"q_sample of {what} at stratified timesteps {lo}..{hi}", notes)


def job_sets(job: Any, n: int, n_heldout: int, source: str = "trajectory") -> tuple[CalibrationSet, CalibrationSet | None]:
    """Calibration and held-out inputs for an export job (edgekd.export._Job): student, teacher step or O2MKD step.

    The held-out set is drawn the same way from other seeds: sensitivity and the mixed-precision fallback are
    judged on inputs the ranges were not fitted to. ``n_heldout`` 0: no held-out set (None).
    """
    if not job.teacher and (len(job.inputs) > 1 or job.name in ("text_encoder", "decoder")):
        return (pipeline_set(job, n, CALIBRATION_SEED),
                pipeline_set(job, n_heldout, HELDOUT_SEED) if n_heldout > 0 else None)
    if not job.teacher:
        return (noise_set(n, job.shape, CALIBRATION_SEED, job.inputs[0]),
                noise_set(n_heldout, job.shape, HELDOUT_SEED, job.inputs[0]) if n_heldout > 0 else None)
    recipe = job.recipe
    alphas = np.asarray(job.sampling.alphas_cumprod if job.sampling.alphas_cumprod is not None
                        else job.teacher_model.ddim(1).alphas_cumprod, dtype=np.float64)
    if job.name == "teacher_step":  # the teacher may be sampled with any step count: its whole range
        t_range = (0, len(alphas) - 1)
        ddim_t = job.teacher_model.timesteps(recipe.teacher.steps, recipe.teacher.timestep_spacing)
    else:  # a per-timestep student: the timesteps it owns
        owned = list(job.sampling.timesteps)
        t_range = (min(owned), max(owned))
        ddim_t = job.teacher_model.timesteps(recipe.teacher.steps, recipe.teacher.timestep_spacing)
    calib = step_set(recipe, n, job.shape, alphas, t_range, ddim_t, source, CALIBRATION_SEED)
    held = step_set(recipe, n_heldout, job.shape, alphas, t_range, ddim_t, source, HELDOUT_SEED) if n_heldout > 0 else None
    return calib, held


def pipeline_set(job: Any, n: int, seed: int) -> CalibrationSet:
    """Inputs a graph of a conditional or latent pipeline really sees: noise with conditions drawn i mod K (class
    ids, or the recipe's prompts through the teacher's text encoder); the prompts' token ids for the text encoder;
    the torch student's latents on that noise and those conditions for the decoder."""
    from edgekd.models.stages import token_ids

    teacher = job.teacher_model
    cond = teacher.condition
    ids = cond.draw(0, n) if cond is not None else None
    if job.name == "text_encoder":
        tokens = token_ids(teacher.tokenizer, [cond.prompts[int(i)] for i in ids]).numpy()
        return CalibrationSet({"input_ids": tokens}, f"token ids of the recipe's {len(cond.prompts)} prompts")
    student = job.run.student() if job.name == "decoder" else job.model
    noise = make_noise(seed, 0, n, tuple(student.input_shape))
    feeds: dict[str, Any] = {"noise": noise}
    if cond is not None:
        feeds[student.condition["input"]] = teacher.condition_input(ids).cpu()
    if job.name != "decoder":
        return CalibrationSet({k: v.numpy() for k, v in feeds.items()},
                              f"standard-normal noise with {cond.kind if cond else 'no'} conditions i mod K")
    with torch.no_grad():
        latents = student.eval()(*feeds.values()).float()
    return CalibrationSet({"latents": latents.numpy()}, "the torch student's latents on calibration noise")
