"""Every diffusers layout edgekd takes samples exactly as diffusers' own pipeline does (same initial latents, steps,
scheduler and guidance), and what it refuses is refused in one line that says what is supported.

Tolerance 1e-4 on images in [0, 1]: both sides run the same float32 modules; the only differences are batching
(guidance batches the two branches) and the order of a few elementwise operations, each ~1e-7 relative, over at
most 4 steps and a decoder; 1e-4 is three orders above that and far below any wrong condition, guidance, scaling
or prediction type (those move pixels by > 1e-2, checked below).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from layouts import build

STEPS = 4
ATOL = 1e-4


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    return {k: build(k, root) for k in ("pixel", "class", "vpred", "ldm", "sd", "dit")}


def _ours(folder: Path, noise: torch.Tensor, cond: list[int] | None = None, **kw) -> np.ndarray:
    from edgekd.teachers.diffusers_teacher import load_teacher

    teacher = load_teacher(str(folder), **kw)
    ids = torch.tensor(cond) if cond is not None else None
    x, _ = teacher.sample(noise, STEPS, "trailing", condition=ids)
    return (teacher.decode(x) / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _noise(shape: tuple[int, ...], seed: int = 3) -> torch.Tensor:
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", ["pixel", "vpred"])
def test_pixel_teachers_equal_ddim_pipeline(folders: dict[str, Path], kind: str) -> None:
    from diffusers import DDIMPipeline

    pipe = DDIMPipeline.from_pretrained(str(folders[kind]))
    ref = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=STEPS, eta=0.0,
               output_type="np").images
    ours = _ours(folders[kind], _noise((2, 1, 32, 32)))
    np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)


def test_v_prediction_as_epsilon_gives_the_same_samples(folders: dict[str, Path]) -> None:
    """teacher.eps (v converted to epsilon with the schedule's alphas) drives an epsilon DDIM to the same images."""
    from edgekd.teachers.diffusers_teacher import ddim_sample, load_teacher

    teacher = load_teacher(str(folders["vpred"]))
    noise = _noise((2, 1, 32, 32))
    ref, _ = teacher.sample(noise, STEPS, "trailing")
    as_eps = {**teacher.scheduler_config, "prediction_type": "epsilon"}
    ours, _ = ddim_sample(as_eps, teacher.eps, noise, STEPS, "trailing")
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-4, rtol=0)


def test_class_unet_equals_the_diffusers_loop_and_follows_the_class(folders: dict[str, Path]) -> None:
    """No diffusers pipeline samples a class-conditional UNet2DModel: the reference is the scheduler loop."""
    from diffusers import DDIMScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(str(folders["class"] / "unet"))
    sched = DDIMScheduler.from_pretrained(str(folders["class"] / "scheduler"))
    sched.set_timesteps(STEPS)
    x = _noise((2, 1, 32, 32))
    labels = torch.tensor([3, 7])
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t, class_labels=labels).sample, t, x).prev_sample
    ref = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(_ours(folders["class"], _noise((2, 1, 32, 32)), [3, 7]), ref, atol=ATOL, rtol=0)
    other = _ours(folders["class"], _noise((2, 1, 32, 32)), [4, 8])
    assert np.abs(other - ref).max() > 1e-2  # the label reaches the network


def test_ldm_equals_ldm_pipeline(folders: dict[str, Path]) -> None:
    from diffusers import LDMPipeline

    pipe = LDMPipeline.from_pretrained(str(folders["ldm"]))
    ref = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), num_inference_steps=STEPS, eta=0.0,
               output_type="np").images
    ours = _ours(folders["ldm"], _noise((2, 3, 8, 8)))
    assert ours.shape == ref.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_sd_equals_stable_diffusion_pipeline(folders: dict[str, Path], guidance: float) -> None:
    from diffusers import StableDiffusionPipeline

    prompts = ["a red bag", "two shoes"]
    pipe = StableDiffusionPipeline.from_pretrained(str(folders["sd"]), safety_checker=None)
    latents = _noise((2, 4, 8, 8))
    ref = pipe(prompts, latents=latents.clone(), num_inference_steps=STEPS, guidance_scale=guidance,
               output_type="np").images
    ours = _ours(folders["sd"], latents, [0, 1], prompts=prompts, guidance_scale=guidance)
    np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)
    swapped = _ours(folders["sd"], latents, [1, 0], prompts=prompts, guidance_scale=guidance)
    assert np.abs(swapped - ref).max() > 1e-3  # the prompt reaches the network


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_dit_equals_dit_pipeline(folders: dict[str, Path], guidance: float) -> None:
    from diffusers import DiTPipeline

    pipe = DiTPipeline.from_pretrained(str(folders["dit"]))
    ref = pipe(class_labels=[1, 207], guidance_scale=guidance, generator=torch.Generator().manual_seed(3),
               num_inference_steps=STEPS, output_type="np").images
    ours = _ours(folders["dit"], _noise((2, 4, 8, 8)), [1, 207], guidance_scale=guidance)
    np.testing.assert_allclose(ours, ref, atol=ATOL, rtol=0)


def test_conditions_and_parts_are_described(folders: dict[str, Path]) -> None:
    from edgekd.teachers.diffusers_teacher import load_teacher

    dit = load_teacher(str(folders["dit"]))
    assert dit.condition.num_classes == 1000 and dit.condition.null == 1000
    assert dit.condition.parse("goldfish") == 1 and dit.condition.parse("Carassius auratus") == 1
    assert dit.latent and dit.image_shape == (3, 16, 16) and dit.sample_shape == (4, 8, 8)
    cls = load_teacher(str(folders["class"]))
    assert cls.condition.parse("sneaker") == 7 and not cls.latent
    sd = load_teacher(str(folders["sd"]))
    assert sd.condition.kind == "text" and sd.condition.hidden_shape == (32, 16)
    assert load_teacher(str(folders["vpred"])).prediction_type == "v_prediction"
    # every part is in the fingerprint: another guidance or decoder is another teacher's store
    assert len({load_teacher(str(folders[k])).fingerprint for k in ("pixel", "class", "vpred", "ldm", "sd", "dit")}) == 6


def test_refusals_are_one_line(folders: dict[str, Path], tmp_path: Path) -> None:
    import json
    import shutil

    from edgekd.errors import EdgekdError
    from edgekd.teachers.conditions import ClassCondition
    from edgekd.teachers.diffusers_teacher import load_teacher

    cases = {}
    flow = tmp_path / "flow"
    shutil.copytree(folders["pixel"], flow)
    cfg = json.loads((flow / "scheduler/scheduler_config.json").read_text())
    (flow / "scheduler/scheduler_config.json").write_text(json.dumps({**cfg, "_class_name": "FlowMatchEulerDiscreteScheduler"}))
    cases["flow-matching"] = flow
    sdxl = tmp_path / "sdxl"
    shutil.copytree(folders["sd"], sdxl)
    (sdxl / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    cases["SDXL"] = sdxl
    bad = tmp_path / "sample_pred"
    shutil.copytree(folders["pixel"], bad)
    (bad / "scheduler/scheduler_config.json").write_text(json.dumps({**cfg, "prediction_type": "velocity"}))
    cases["'velocity' is not supported"] = bad
    for text, folder in cases.items():
        with pytest.raises(EdgekdError) as err:
            load_teacher(str(folder))
        assert text in str(err.value) and "\n" not in str(err.value), str(err.value)
    with pytest.raises(EdgekdError, match="no unconditional branch"):
        load_teacher(str(folders["class"]), guidance_scale=3.0)
    with pytest.raises(EdgekdError, match="out of range"):
        ClassCondition(10).parse("12")
    with pytest.raises(EdgekdError, match="at most 32"):
        load_teacher(str(folders["sd"])).encode_prompts(["a prompt far, far longer than thirty-two tokens"])
