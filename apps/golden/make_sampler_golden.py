"""Golden vectors for the apps' sampler, pixel conversion and latency statistics, computed by the Python reference.

The apps (Kotlin JVM tests, Swift, the browser) run the same manifests with the same stand-in graph functions and
must land on these numbers, so "same seed, same pixels" is checked without a model file:
- noise: edgekd.portable_noise (mulberry32-boxmuller-v1), image i of seed s uses seed s + i;
- one step: the graph is ``image = 1.2 * tanh(noise)`` (so some values leave [-1, 1] and get clipped);
- DDIM: diffusers' DDIMScheduler (trailing spacing, the default DDPM betas, clip_sample) steps with
  ``eps = (0.5 + 0.25 * g) * tanh(x) + 1e-4 * t`` where g is the graph's index in ``models``; the sampling
  lists (timesteps, graph per step, both alphas, clipping) come from edgekd.models.spec.DDIMLoop.lists(), the code
  the exporter writes them with;
- pixels: round-half-even((clip(x, -1, 1) + 1) * 127.5) in float32 (torch), then the crop;
- stats: numpy median and the nearest-rank 90th percentile (numpy method="inverted_cdf"), as
  docs/device-benchmark.md defines them.

    PYTHONPATH=. python apps/golden/make_sampler_golden.py      # rewrites apps/golden/sampler.json
tests/apps/test_golden.py checks that the file equals what this script computes now.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parent / "sampler.json"
SEED_ONE_STEP = 7
SEED_DDIM = 42
STEPS = 6
STATS_SAMPLES = [5.25, 3.125, 4.5, 9.75, 3.25, 4.0, 12.5, 6.0]


def eps_fn(graph_index: int, x: np.ndarray, t: int) -> np.ndarray:
    """The stand-in DDIM step graph (float64 math, float32 result: what the apps compute too)."""
    return ((0.5 + 0.25 * graph_index) * np.tanh(x.astype(np.float64)) + 1e-4 * t).astype(np.float32)


def one_step_fn(x: np.ndarray) -> np.ndarray:
    return (1.2 * np.tanh(x.astype(np.float64))).astype(np.float32)


def to_pixels(x: np.ndarray, crop: list[int] | None) -> np.ndarray:
    """[N, C, H, W] float32 -> [N, h, w, C] uint8 exactly as edgekd.grid does (torch float32, round half even)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x))
    pix = ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if crop is not None:
        top, left, h, w = crop
        pix = pix[:, top : top + h, left : left + w, :]
    return pix


def _tensor(name: str, shape: list[int], dtype: str = "float32") -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": dtype, "layout": "NCHW"}


def _graph(name: str, inputs: list[dict], output: dict) -> dict[str, Any]:
    return {"name": name, "file": f"{name}.tflite", "bytes": 0, "sha256": "0" * 64, "inputs": inputs, "output": output,
            "parity": None, "parity_skipped": "golden fixture: stand-in graph functions, no model file",
            "checks": {}, "runtime_options": {}}


def _manifest(name: str, models: list[dict], sampling: dict, noise_shape: list[int], crop: list[int] | None,
              channels: int) -> dict[str, Any]:
    from edgekd.portable_noise import NAME

    return {
        "format_version": 3, "edgekd_version": "golden", "role": "student", "name": name, "target": "tflite",
        "precision": "fp32", "quantization": None, "models": models, "sampling": sampling,
        "noise": {"distribution": "standard_normal", "shape": noise_shape,
                  "seed_convention": "image i of seed s: portable generator seeded with s + i", "portable": NAME},
        "image": {"range": [-1.0, 1.0], "to_pixels": "pixel = round((clip(x, -1, 1) + 1) * 127.5), uint8",
                  "crop": crop, "channels": channels},
        "source": {"golden": "apps/golden/make_sampler_golden.py"}, "created": "2026-11-29T00:00:00Z",
    }


def one_step_case() -> dict[str, Any]:
    from edgekd.portable_noise import portable_noise

    shape = [2, 3, 8, 8]
    manifest = _manifest("golden-one-step", [_graph("student", [_tensor("noise", shape)], _tensor("image", shape))],
                         {"kind": "one_step", "graph": "student"}, shape[1:], None, 3)
    noise = portable_noise(SEED_ONE_STEP, 0, shape[0], tuple(shape[1:])).astype(np.float32)
    image = one_step_fn(noise)
    return {"manifest": manifest, "seed": SEED_ONE_STEP, "noise_first8": noise.ravel()[:8].tolist(),
            "output": image.ravel().tolist(), "pixels": to_pixels(image, None).ravel().tolist()}


def ddim_case() -> dict[str, Any]:
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler

    from edgekd.models.spec import DDIMLoop
    from edgekd.portable_noise import portable_noise

    config = dict(DDPMScheduler().config)
    loop = DDIMLoop(scheduler_config=config, num_steps=STEPS, spacing="trailing",
                    graph_names=("student_0", "student_1"), boundaries=(500,))
    lists = loop.lists()
    sched = DDIMScheduler.from_config(config, timestep_spacing="trailing")
    sched.set_timesteps(STEPS)
    timesteps, graphs = lists["timesteps"], lists["graph_per_step"]
    assert timesteps == [int(t) for t in sched.timesteps]
    shape, crop = [1, 1, 32, 32], [2, 2, 28, 28]
    models = [_graph(g, [_tensor("sample", shape), _tensor("timestep", [1], "int32")], _tensor("epsilon", shape))
              for g in ("student_0", "student_1")]
    sampling = {
        "kind": "ddim", "prediction": "epsilon", "steps": STEPS, **lists,
        "update": "x0 = (x - sqrt(1-a) eps) / sqrt(a); clip x0 if clip_sample; x = sqrt(a') x0 + sqrt(1-a') eps; "
                  "image = last x",
    }
    manifest = _manifest("golden-ddim", models, sampling, shape[1:], crop, 1)
    noise = portable_noise(SEED_DDIM, 0, 1, tuple(shape[1:])).astype(np.float32)
    x = torch.from_numpy(noise)
    for t, g in zip(timesteps, graphs):
        eps = torch.from_numpy(eps_fn(["student_0", "student_1"].index(g), x.numpy(), t))
        x = sched.step(eps, t, x).prev_sample  # diffusers itself, eta 0: the loop the apps reimplement
    image = x.numpy().astype(np.float32)
    return {"manifest": manifest, "seed": SEED_DDIM, "noise_first8": noise.ravel()[:8].tolist(),
            "output": image.ravel().tolist(), "pixels": to_pixels(image, crop).ravel().tolist()}


def build() -> dict[str, Any]:
    samples = np.asarray(STATS_SAMPLES, dtype=np.float64)
    return {
        "note": "made by apps/golden/make_sampler_golden.py; the apps' tests run these manifests with the stand-in "
                "graphs described there and must reproduce output (within 1e-5) and pixels",
        "one_step": one_step_case(),
        "ddim": ddim_case(),
        "stats": {"samples": STATS_SAMPLES, "median": float(np.median(samples)),
                  "p90": float(np.percentile(samples, 90, method="inverted_cdf"))},
    }


def main() -> int:
    text = json.dumps(build(), indent=1) + "\n"
    partial = OUT.with_name(OUT.name + ".partial")
    partial.write_text(text)
    os.replace(partial, OUT)
    print(f"wrote {OUT} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
