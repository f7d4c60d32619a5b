"""One runtime layer: a stepper per runtime calls one graph; two samplers turn graphs into images.

``open_generator(manifest)`` builds any exported model from its manifest alone, the way an app does; parity,
profile and sample grids use it. ``torch_generator(model)`` is the same sampler over a model's own graphs in torch.
"""

from edgekd.runtime.generator import Generator, generate_batched
from edgekd.runtime.open import open_generator, torch_generator
from edgekd.runtime.samplers import DDIMSampler, OneStepSampler
from edgekd.runtime.steppers import Stepper, open_stepper

__all__ = ["Generator", "generate_batched", "open_generator", "torch_generator", "DDIMSampler", "OneStepSampler",
           "Stepper", "open_stepper"]
