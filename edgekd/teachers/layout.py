"""Which diffusers folder layout a teacher folder is, read from the folder itself (never from its name).

Accepted (docs/teachers.md): a pipeline folder with ``model_index.json`` (DDPM/DDIM, LDM, Stable Diffusion 1.x/2.x
style text-to-image, DiT), a plain ``unet/`` + ``scheduler/`` folder (what ``edgekd teacher train`` and
``save_teacher`` write), or a bare denoiser folder (its ``config.json``). Refused with one line naming what is
supported: two text encoders (SDXL), flow-matching transformers (SD3, Flux), prior/decoder cascades.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.errors import MissingResourceError

DENOISER_FOLDERS = ("unet", "transformer")
DECODER_FOLDERS = ("vae", "vqvae")
SUPPORTED = ("UNet2DModel", "UNet2DConditionModel", "DiTTransformer2DModel", "Transformer2DModel")
SUPPORTED_TEXT = "UNet2DModel (optionally class-conditional), UNet2DConditionModel (CLIP text), DiT transformers"
# pipelines whose extra parts edgekd does not run: one line each, what to use instead
REFUSED_PIPELINES = {
    "StableDiffusionXLPipeline": "SDXL (two text encoders, size conditioning)",
    "StableDiffusion3Pipeline": "SD3 (flow-matching MMDiT with three text encoders)",
    "FluxPipeline": "Flux (flow-matching transformer)",
    "KandinskyV22Pipeline": "Kandinsky 2.2 (prior + decoder cascade)",
    "StableDiffusionUpscalePipeline": "the SD upscaler (image-conditioned)",
    "StableCascadeCombinedPipeline": "Stable Cascade (three-stage cascade)",
}


@dataclass
class Layout:
    """Where each part of a teacher lives (None: the teacher has no such part)."""

    root: Path
    denoiser: Path
    scheduler: Path | None
    decoder: Path | None = None
    text_encoder: Path | None = None
    tokenizer: Path | None = None
    pipeline: str | None = None
    id2label: dict[int, str] = field(default_factory=dict)

    @property
    def denoiser_class(self) -> str:
        return str(_read_json(self.denoiser / "config.json").get("_class_name", "UNet2DModel"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MissingResourceError(f"{path} is not readable JSON ({type(exc).__name__}); restore it from the "
                                   "teacher's checkpoint") from None
    if not isinstance(data, dict):
        raise MissingResourceError(f"{path} is not a JSON object; restore it from the teacher's checkpoint")
    return data


def _labels(raw: Any, where: Path) -> dict[int, str]:
    """id2label as {int: name} (diffusers/transformers keep the keys as strings; DiT names may list synonyms)."""
    if raw is None:
        return {}
    try:
        return {int(k): str(v) for k, v in dict(raw).items()}
    except (TypeError, ValueError):
        raise MissingResourceError(f"{where}: id2label must map class ids to names, e.g. {{\"0\": \"T-shirt\"}}") from None


def read_layout(root: Path) -> Layout:
    """The parts of the teacher folder ``root``, or one line saying why it is not a teacher edgekd can run."""
    index_path = root / "model_index.json"
    if index_path.is_file():
        index = _read_json(index_path)
        pipeline = str(index.get("_class_name", ""))
        if pipeline in REFUSED_PIPELINES or (root / "text_encoder_2").is_dir():
            what = REFUSED_PIPELINES.get(pipeline, "a pipeline with two text encoders (SDXL-style)")
            raise MissingResourceError(f"teacher {root}: {what} is not supported; edgekd runs {SUPPORTED_TEXT}")
        if (root / "prior").is_dir():
            raise MissingResourceError(f"teacher {root}: prior/decoder cascades are not supported; edgekd runs "
                                       f"{SUPPORTED_TEXT}")
        denoiser = next((root / d for d in DENOISER_FOLDERS if (root / d / "config.json").is_file()), None)
        if denoiser is None:
            raise MissingResourceError(f"teacher {root}: model_index.json names no unet/ or transformer/ folder "
                                       "with a config.json")
        labels = _labels(index.get("id2label"), index_path)
    else:
        denoiser = root / "unet" if (root / "unet").is_dir() else root
        if not (denoiser / "config.json").is_file():
            raise MissingResourceError(f"{root} is not a diffusers checkpoint: no model_index.json, unet/config.json "
                                       "or config.json (save it with diffusers' save_pretrained)")
        pipeline, labels = None, {}
    for extra in (root / "id2label.json", denoiser / "id2label.json"):
        if extra.is_file() and not labels:
            labels = _labels(_read_json(extra), extra)
    layout = Layout(root=root, denoiser=denoiser, pipeline=pipeline or None, id2label=labels,
                    scheduler=root / "scheduler" if (root / "scheduler").is_dir() else None,
                    decoder=next((root / d for d in DECODER_FOLDERS if (root / d / "config.json").is_file()), None),
                    text_encoder=root / "text_encoder" if (root / "text_encoder").is_dir() else None,
                    tokenizer=root / "tokenizer" if (root / "tokenizer").is_dir() else None)
    cls = layout.denoiser_class
    if cls not in SUPPORTED:
        raise MissingResourceError(f"teacher {root}: denoiser {cls} is not supported; edgekd runs {SUPPORTED_TEXT}")
    if cls == "UNet2DConditionModel" and (layout.text_encoder is None or layout.tokenizer is None):
        raise MissingResourceError(f"teacher {root}: a UNet2DConditionModel needs text_encoder/ and tokenizer/ "
                                   "folders beside it (a Stable Diffusion pipeline folder)")
    return layout
