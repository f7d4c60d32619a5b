"""Tiny random-weight diffusers folders of every layout edgekd takes, written by diffusers' own save_pretrained.

Each builder returns the folder; the pipelines load them with ``from_pretrained`` exactly as a user's would.
Sizes are the smallest diffusers accepts, so a test builds and samples one in a second or two.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

LAYOUTS = ("pixel", "class", "vpred", "ldm", "sd", "dit")


def _ddim(**kw):
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing", **kw)


def _unet2d(channels: int, size: int, **kw):
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, **kw)


def _kl_vae(latent_channels: int = 4):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(8, 16),
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         layers_per_block=1, norm_num_groups=4, sample_size=16, scaling_factor=0.18215)


def clip_tokenizer(folder: Path, max_length: int = 32):
    """A CLIP BPE tokenizer over single characters (every byte-level character and its word-final form), with no
    merges: real CLIPTokenizer code, a vocabulary small enough to write here."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in _byte_chars():
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges = [("r", "e"), ("re", "d</w>"), ("a", "t</w>"), ("o", "o")]  # a few, so BPE merging is exercised
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length, pad_token="<|endoftext|>")
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(folder))
    return CLIPTokenizer.from_pretrained(str(folder))


def _byte_chars() -> list[str]:
    """GPT-2/CLIP's byte-to-unicode alphabet (printable bytes map to themselves, the rest to 256+)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) \
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def build(kind: str, root: Path) -> Path:
    """Write layout ``kind`` (one of LAYOUTS) under ``root``; returns the teacher folder."""
    torch.manual_seed(0)
    folder = root / kind
    if kind in ("pixel", "class", "vpred"):
        from diffusers import DDIMPipeline

        extra = {"num_class_embeds": 10} if kind == "class" else {}
        unet = _unet2d(1, 32, **extra)
        pred = {"prediction_type": "v_prediction"} if kind == "vpred" else {}
        DDIMPipeline(unet=unet, scheduler=_ddim(clip_sample=True, **pred)).save_pretrained(str(folder))
        if kind == "class":
            labels = {str(i): n for i, n in enumerate(["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                       "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"])}
            (folder / "id2label.json").write_text(json.dumps(labels))
    elif kind == "ldm":
        from diffusers import LDMPipeline, VQModel

        vq = VQModel(in_channels=3, out_channels=3, latent_channels=3, num_vq_embeddings=32,
                     block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                     up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4)
        LDMPipeline(vqvae=vq, unet=_unet2d(3, 8), scheduler=_ddim(clip_sample=False)).save_pretrained(str(folder))
    elif kind == "sd":
        from diffusers import StableDiffusionPipeline, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        tok = clip_tokenizer(root / "_tokenizer")
        text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                            num_hidden_layers=2, num_attention_heads=2,
                                            max_position_embeddings=tok.model_max_length, bos_token_id=0,
                                            eos_token_id=1, pad_token_id=1))
        unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                                    layers_per_block=1, cross_attention_dim=16, attention_head_dim=4,
                                    norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
        pipe = StableDiffusionPipeline(vae=_kl_vae(), text_encoder=text, tokenizer=tok, unet=unet,
                                       scheduler=_ddim(clip_sample=False, set_alpha_to_one=False,
                                                       beta_schedule="scaled_linear", beta_start=0.00085,
                                                       beta_end=0.012), safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        pipe.save_pretrained(str(folder))
    elif kind == "dit":
        from diffusers import DiTPipeline, DiTTransformer2DModel

        dit = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
                                    num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=1000,
                                    norm_num_groups=4)
        DiTPipeline(transformer=dit, vae=_kl_vae(), scheduler=_ddim(clip_sample=False)).save_pretrained(str(folder))
        index = json.loads((folder / "model_index.json").read_text())
        index["id2label"] = {"0": "tench, Tinca tinca", "1": "goldfish, Carassius auratus", "207": "golden retriever"}
        (folder / "model_index.json").write_text(json.dumps(index))
    else:
        raise ValueError(kind)
    return folder
