"""The runtime layer and the model contract: graphs()/sampling() of every model kind, the DDIM sampler written
from the manifest's lists against diffusers' DDIMScheduler, and open_generator on what the manifest says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgekd.manifest import DDIMSampling, OneStepSampling
from edgekd.models.spec import DDIMLoop, TeacherStepModel
from edgekd.runtime import DDIMSampler, torch_generator
from edgekd.runtime.open import ddim_section
from edgekd.runtime.steppers import TorchStepper
from edgekd.teachers.diffusers_teacher import ddim_sample, load_teacher


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir: Path):
    return load_teacher(str(tiny_teacher_dir))


@pytest.mark.parametrize("spacing,steps", [("trailing", 6), ("leading", 4), ("linspace", 3)])
def test_ddim_from_the_manifest_lists_equals_diffusers(teacher, spacing: str, steps: int) -> None:
    """What an app computes from timesteps/alphas_cumprod/alphas_cumprod_prev is diffusers' DDIMScheduler.step."""
    loop = DDIMLoop(dict(teacher.scheduler_config), steps, spacing, ("teacher_step",))
    section = ddim_section(loop)
    assert len(section.timesteps) == len(section.alphas_cumprod_prev) == steps and section.clip_sample
    noise = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    ref = ddim_sample(teacher.scheduler_config, teacher.eps, noise, steps, spacing)[0]
    gen = torch_generator(TeacherStepModel(teacher, steps, spacing))
    assert gen.calls_per_image == steps
    assert torch.allclose(gen.generate(noise), ref, atol=1e-5)


def test_routing_sends_each_step_to_the_graph_owning_it(teacher) -> None:
    loop = DDIMLoop(dict(teacher.scheduler_config), 6, "trailing", ("a", "b", "c"), (300, 700))
    lists = loop.lists()
    assert lists["timesteps"] == [999, 832, 666, 499, 332, 166]
    assert lists["graph_per_step"] == ["c", "c", "b", "b", "b", "a"]
    calls: list[tuple[str, int]] = []

    class Probe:
        runtime = "probe"

        def __init__(self, name: str):
            self.name = name

        def __call__(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            calls.append((self.name, int(timestep[0])))
            return torch.zeros_like(sample)

    gen = DDIMSampler({n: Probe(n) for n in "abc"}, ddim_section(loop))
    gen.generate(torch.zeros(1, 1, 4, 4))
    assert calls == list(zip(lists["graph_per_step"], lists["timesteps"]))


def test_every_student_kind_describes_itself(teacher) -> None:
    from edgekd.recipe import O2MKDStudentConfig
    from edgekd.students.o2mkd import build_o2mkd_student
    from edgekd.students.unet_student import OneStepUNetStudent

    one = OneStepUNetStudent(teacher.unet, 999)
    [g] = one.graphs()
    assert g.name == "student" and [i.name for i in g.inputs] == ["noise"] and g.output == "image"
    assert one.sampling().kind == "one_step" and one.sampling().graph == "student"
    noise = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(torch_generator(one).generate(noise), one(noise))

    cfg = O2MKDStudentConfig(kind="o2mkd", boundaries=[500], init="scratch", width=0.5)
    o2 = build_o2mkd_student(cfg, teacher, 4, "trailing").eval()
    assert [g.name for g in o2.graphs()] == ["student_0", "student_1"]
    assert all(g.is_step and g.output == "epsilon" for g in o2.graphs())
    assert o2.sampling().kind == "ddim" and o2.sampling().lists()["graph_per_step"] == ["student_1"] * 2 + ["student_0"] * 2
    with torch.no_grad():
        assert torch.allclose(torch_generator(o2).generate(noise), o2(noise), atol=1e-5)

    t = TeacherStepModel(teacher, 3)
    assert [g.name for g in t.graphs()] == ["teacher_step"] and t.sampling().steps() == 3


def test_torch_stepper_feeds_inputs_in_declared_order(teacher) -> None:
    from edgekd.models.spec import EpsilonStep

    step = TorchStepper(EpsilonStep(teacher.unet), ["sample", "timestep"])
    x, t = torch.randn(1, 1, 32, 32), torch.tensor([500])
    with torch.no_grad():
        assert torch.equal(step(timestep=t, sample=x), teacher.unet(x, t).sample)


def test_sampling_sections_validate() -> None:
    assert OneStepSampling(graph="student").kind == "one_step"
    with pytest.raises(ValueError, match="one per step"):
        DDIMSampling(steps=2, timesteps=[999], graph_per_step=["a"], alphas_cumprod=[0.1], alphas_cumprod_prev=[0.2],
                     clip_sample=True)


def test_coreml_stepper_says_macos_only_elsewhere(tmp_path: Path) -> None:
    import platform

    from edgekd.errors import EdgekdError
    from edgekd.runtime import open_stepper

    if platform.system() == "Darwin":
        pytest.skip("CoreML runs here")
    with pytest.raises(EdgekdError, match="only be run on macOS"):
        open_stepper("coreml", tmp_path / "x.mlpackage")
