"""A model as a pipeline of graphs: an optional condition encoder (the teacher's CLIP text encoder), the student
(or any model with graphs() and sampling()), an optional decoder (a latent teacher's VAE / VQ decoder).

Export, parity and the runtime loop over these graphs: the text encoder turns token ids into the student's
``encoder_hidden_states`` input, the student makes the latent, the decoder makes the picture. A model without a
condition encoder or a decoder is the one-graph case and is exported exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgekd.models.spec import GraphSpec, InputSpec


def student_condition(teacher: Any) -> dict | None:
    """The condition input a student of ``teacher`` takes (what the teacher's denoiser takes)."""
    cond = teacher.condition
    if cond is None:
        return None
    if cond.kind == "class":
        return {"kind": "class", "input": "class_labels", "high": cond.num_classes, "names":
                {str(k): v for k, v in sorted(cond.names.items())}}
    return {"kind": "text", "input": "encoder_hidden_states", "shape": list(cond.hidden_shape),
            "max_length": cond.max_length}


def token_ids(tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    """Token ids [B, L] padded to the tokenizer's max length, as the pipelines and the apps make them."""
    max_len = int(tokenizer.model_max_length)
    return tokenizer(list(prompts), padding="max_length", max_length=max_len, truncation=True,
                     return_tensors="pt").input_ids.long()


class TextEncoderGraph(nn.Module):
    """token ids [B, L] (int64, padded to the tokenizer's max length) -> encoder_hidden_states [B, L, D]."""

    def __init__(self, text_encoder: nn.Module):
        super().__init__()
        self.text_encoder = text_encoder

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(input_ids.long())[0]


class DecoderGraph(nn.Module):
    """latent -> image in [-1, 1]: the teacher's decoder with its scaling factor inside the graph (an app never
    needs to know it): image = clamp(decode(latent / scaling_factor), -1, 1)."""

    def __init__(self, decoder: nn.Module, scaling_factor: float):
        super().__init__()
        self.decoder = decoder
        self.scaling_factor = float(scaling_factor)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        h = latents / self.scaling_factor
        if type(self.decoder).__name__ == "VQModel":
            # VQModel.decode quantizes with torch.cdist, which CoreML and LiteRT lack: the same nearest-code
            # lookup written with matmuls (argmin of |z|^2 - 2 z.e + |e|^2 = argmin of the distance)
            h = _nearest_codes(h, self.decoder.quantize.embedding.weight)
            return self.decoder.decode(h, force_not_quantize=True).sample.clamp(-1.0, 1.0)
        return self.decoder.decode(h).sample.clamp(-1.0, 1.0)


def _nearest_codes(h: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Each latent vector of h [B, C, H, W] replaced by its nearest codebook row (as diffusers' VectorQuantizer)."""
    b, c, hh, ww = h.shape
    z = h.permute(0, 2, 3, 1).reshape(-1, c)
    dist = (z * z).sum(1, keepdim=True) - 2 * z @ codebook.t() + (codebook * codebook).sum(1)[None, :]
    q = codebook[dist.argmin(dim=1)]
    return q.reshape(b, hh, ww, c).permute(0, 3, 1, 2)


@dataclass
class Stages:
    """Which graph does what: ``condition`` (class / text / None), the text encoder's graph name, the decoder's."""

    condition: dict[str, Any] | None = None  # the student's condition dict (edgekd.students.unet_student)
    text_graph: str | None = None
    decode_graph: str | None = None
    scaling_factor: float = 1.0
    denoise_input: str = "noise"

    @property
    def staged(self) -> bool:
        return self.condition is not None or self.decode_graph is not None


class StagedModel:
    """``model`` (its graphs and sampling) with the teacher's text encoder and decoder graphs around it."""

    def __init__(self, model: Any, teacher: Any):
        self.model, self.teacher = model, teacher
        cond = getattr(model, "condition", None)
        self.stages = Stages(condition=cond)
        self.extra: list[GraphSpec] = []
        if cond is not None and cond["kind"] == "text":
            length = int(teacher.condition.max_length)
            vocab = int(teacher.text_encoder.config.vocab_size)
            self.extra.append(GraphSpec("text_encoder", TextEncoderGraph(teacher.text_encoder).eval(),
                                        [InputSpec("input_ids", (length,), torch.int64, high=vocab)],
                                        "encoder_hidden_states"))
            self.stages.text_graph = "text_encoder"
        if getattr(model, "latent", False):
            if teacher.decoder is None:
                raise ValueError("a latent student needs its teacher's decoder")
            self.extra.append(GraphSpec("decoder", DecoderGraph(teacher.decoder, teacher.scaling_factor).eval(),
                                        [InputSpec("latents", tuple(teacher.sample_shape))], "image"))
            self.stages.decode_graph = "decoder"
            self.stages.scaling_factor = teacher.scaling_factor

    def graphs(self) -> list[GraphSpec]:
        text = [g for g in self.extra if g.name == "text_encoder"]
        dec = [g for g in self.extra if g.name == "decoder"]
        return [*text, *self.model.graphs(), *dec]

    def sampling(self) -> Any:
        return self.model.sampling()

    def __getattr__(self, name: str) -> Any:  # the wrapped model's other attributes (input_shape, ...)
        if name in ("model", "teacher", "stages", "extra"):
            raise AttributeError(name)
        return getattr(self.model, name)


class GuidedEpsilonStep(nn.Module):
    """One denoising step of ANY teacher as an exported graph: (sample, int64 timestep [B], condition) -> epsilon.

    Classifier-free guidance runs inside the graph (both branches batched, in the order the diffusers pipeline
    uses; the null condition a constant: the null class id or the empty prompt's embedding), and a v- or
    x0-predicting network's output is converted to epsilon with the schedule's alphas (a buffer), so the DDIM loop
    an app runs stays the version-3 epsilon update."""

    def __init__(self, teacher: Any):
        super().__init__()
        from edgekd.models.denoisers import family_of

        self.net = teacher.unet
        self.family = family_of(teacher.unet)
        self.guidance = float(teacher.guidance_scale)
        self.prediction_type = teacher.prediction_type
        self.kind = teacher.condition.kind if teacher.condition is not None else None
        alphas = teacher.ddim(1).alphas_cumprod.to(torch.float32)
        self.register_buffer("alphas", alphas, persistent=False)
        if self.guidance != 1.0:
            null = teacher.null_input(1, torch.zeros(1))
            self.register_buffer("null", null.detach().clone(), persistent=False)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        from edgekd.models.denoisers import call_denoiser

        if self.guidance == 1.0:
            pred = call_denoiser(self.net, self.family, sample, timestep, condition)
        else:
            b = sample.shape[0]
            null = self.null.expand(b, *self.null.shape[1:]) if self.kind == "text" else \
                torch.zeros_like(condition) + self.null
            first, second = (null, condition) if self.kind == "text" else (condition, null)
            both = call_denoiser(self.net, self.family, torch.cat([sample, sample]), torch.cat([timestep, timestep]),
                                 torch.cat([first, second]))
            a_out, b_out = both[:b], both[b:]
            uncond, cond = (a_out, b_out) if self.kind == "text" else (b_out, a_out)
            pred = uncond + self.guidance * (cond - uncond)
        if self.prediction_type == "epsilon":
            return pred
        a = self.alphas[timestep.long()].reshape(-1, 1, 1, 1)
        if self.prediction_type == "v_prediction":
            return a.sqrt() * pred + (1 - a).sqrt() * sample
        return (sample - a.sqrt() * pred) / (1 - a).sqrt()


class ConditionalTeacherStepModel:
    """A conditional / latent / v- or x0-predicting teacher as an exportable model: one guided epsilon step graph
    taking the condition, sampled with DDIM at the recipe's step count (wrapped in StagedModel for the text
    encoder and decoder graphs)."""

    def __init__(self, teacher: Any, steps: int, spacing: str = "trailing"):
        self.teacher, self.steps, self.spacing = teacher, int(steps), spacing
        self.condition = student_condition(teacher)
        self.latent = teacher.latent
        self.input_shape = tuple(teacher.sample_shape)

    def graphs(self) -> list[GraphSpec]:
        inputs = [InputSpec("sample", self.input_shape), InputSpec("timestep", (), torch.int64)]
        c = self.condition
        if c is not None:
            inputs.append(InputSpec(c["input"], (), torch.int64, high=int(c["high"])) if c["kind"] == "class"
                          else InputSpec(c["input"], tuple(c["shape"])))
        return [GraphSpec("teacher_step", GuidedEpsilonStep(self.teacher).eval(), inputs, "epsilon")]

    def sampling(self) -> Any:
        from edgekd.models.spec import DDIMLoop

        config = {k: v for k, v in self.teacher.scheduler_config.items() if k != "prediction_type"}
        return DDIMLoop({**config, "prediction_type": "epsilon"}, self.steps, self.spacing, ("teacher_step",))
