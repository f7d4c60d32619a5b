"""``edgekd teacher train``: a DDPM (epsilon prediction) on a diffusers UNet2DModel + DDPMScheduler.

It exists so a fresh machine has a teacher to distill (the quickstart ships one trained with it), and so users
can make a small teacher for their own data. The output is an ordinary diffusers checkpoint.

With ``classes:`` the UNet is class-conditional in the layout edgekd's teacher adapter reads
(edgekd.teachers.diffusers_teacher.load_teacher): ``num_class_embeds = K + 1``, class ids 0..K-1, id K the null
label that label dropout trains for classifier-free guidance, and ``id2label.json`` (K names) in the folder root.
With ``init:`` the run starts from an existing teacher's weights (a new class embedding at zero).
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from edgekd.data import load_dataset, load_labels
from edgekd.data.fashion_mnist import CLASSES
from edgekd.errors import EdgekdError
from edgekd.paths import claim_folder, resolve_builtin
from edgekd.grid import labelled_rows
from edgekd.noise import make_noise
from edgekd.recipe import TeacherTrainRecipe, UNetArchConfig
from edgekd.teachers.conditions import ClassCondition
from edgekd.teachers.diffusers_teacher import DiffusionTeacher, save_teacher
from edgekd.train.checkpoint import AtomicDir, atomic_write_json
from edgekd.train.loop import Batch, TensorSource, Trainer, backward_step, pick_device, seed_everything


ID2LABEL_FILE = "id2label.json"


def build_unet(arch: UNetArchConfig, resolution: int, channels: int, num_class_embeds: int | None = None) -> nn.Module:
    from diffusers import UNet2DModel

    levels = len(arch.block_out_channels)
    down = tuple("AttnDownBlock2D" if i in arch.attention_levels else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if levels - 1 - i in arch.attention_levels else "UpBlock2D" for i in range(levels))
    return UNet2DModel(
        sample_size=resolution,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=tuple(arch.block_out_channels),
        layers_per_block=arch.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=arch.norm_num_groups,
        add_attention=bool(arch.attention_levels),
        attention_head_dim=8,
        num_class_embeds=num_class_embeds,
    )


def warm_start(init: str, resolution: int, channels: int, num_class_embeds: int | None) -> tuple[nn.Module, dict]:
    """The UNet and noise schedule of the teacher folder ``init``, ready to train on (``num_class_embeds``: the
    class embedding rows the new teacher needs, or None for an unconditional one).

    A class embedding the init teacher lacks is added with zero weights: UNet2DModel adds it to the timestep
    embedding, so at step 0 the network predicts exactly what the init teacher does for every label, and training
    only has to learn what the label adds. Mismatches (another image size, a conditional teacher with other
    classes, another prediction type) are refused in one line."""
    from diffusers import DDPMScheduler, UNet2DModel

    from edgekd.teachers.layout import read_layout

    root = resolve_builtin(init)
    if not root.exists():
        raise EdgekdError(f"init: teacher folder {root} does not exist (expected unet/ and scheduler/)")
    layout = read_layout(root)
    if layout.denoiser_class != "UNet2DModel" or layout.scheduler is None:
        raise EdgekdError(f"init: {root} is not a UNet2DModel teacher with unet/ and scheduler/ "
                          f"(found {layout.denoiser_class}); edgekd teacher train warm-starts only those")
    source = UNet2DModel.from_pretrained(str(layout.denoiser))
    cfg = dict(source.config)
    if (int(cfg["sample_size"]), int(cfg["in_channels"])) != (resolution, channels):
        raise EdgekdError(f"init: {root} makes {cfg['in_channels']}x{cfg['sample_size']}x{cfg['sample_size']} "
                          f"images; data gives {channels}x{resolution}x{resolution}")
    have = cfg.get("num_class_embeds")
    if have is not None and have != num_class_embeds or cfg.get("class_embed_type") is not None:
        raise EdgekdError(f"init: {root} has a class embedding of {have} rows; this recipe needs "
                          f"{num_class_embeds or 'none'} (classes: K + 1)")
    sched = dict(DDPMScheduler.from_config(DDPMScheduler.load_config(str(layout.scheduler))).config)
    if sched.get("prediction_type", "epsilon") != "epsilon":
        raise EdgekdError(f"init: {root} predicts {sched['prediction_type']}; edgekd teacher train trains epsilon")
    if have == num_class_embeds:
        return source, sched
    cfg["num_class_embeds"] = num_class_embeds
    unet = UNet2DModel.from_config(cfg)
    missing, unexpected = unet.load_state_dict(source.state_dict(), strict=False)
    if unexpected or set(missing) != {"class_embedding.weight"}:
        raise EdgekdError(f"init: {root}'s weights do not fit its own config (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})")
    with torch.no_grad():
        unet.class_embedding.weight.zero_()
    return unet, sched


def drop_labels(labels: torch.Tensor, drop_prob: float, null: int) -> torch.Tensor:
    """Label dropout for classifier-free guidance: each label becomes ``null`` with probability ``drop_prob``
    (torch's RNG, so a resumed run draws what the uninterrupted one would)."""
    if drop_prob <= 0:
        return labels
    drop = torch.rand(labels.shape, device=labels.device) < drop_prob
    return torch.where(drop, torch.full_like(labels, null), labels)


class DDPMMethod:
    """Epsilon-prediction MSE at uniformly drawn timesteps (Ho et al. 2020), with horizontal flips; with
    ``null_label`` set, the batch's ``labels`` condition the net and a ``drop_prob`` share of them become the null
    label (classifier-free guidance training, Ho & Salimans 2022)."""

    def __init__(self, unet: nn.Module, scheduler_config: dict, lr: float, betas: tuple[float, float],
                 weight_decay: float, grad_clip: float | None, hflip: bool, null_label: int | None = None,
                 drop_prob: float = 0.0, embed_lr: float | None = None):
        from diffusers import DDPMScheduler

        self.generator = unet
        self.noise_scheduler = DDPMScheduler.from_config(scheduler_config)
        self.num_t = int(scheduler_config["num_train_timesteps"])
        embedding = getattr(unet, "class_embedding", None)
        params: Any = unet.parameters()
        if embed_lr is not None and embedding is not None:  # two groups; the warm-up schedule scales both
            own = {id(p) for p in embedding.parameters()}
            params = [{"params": [p for p in unet.parameters() if id(p) not in own]},
                      {"params": list(embedding.parameters()), "lr": embed_lr}]
        self.opt = torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
        self.grad_clip = grad_clip
        self.hflip = hflip
        self.null_label = null_label
        self.drop_prob = drop_prob

    def modules(self) -> dict[str, nn.Module]:
        return {"unet": self.generator}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"unet": self.opt}

    def _loss(self, net: nn.Module, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
              labels: torch.Tensor | None = None) -> torch.Tensor:
        xt = self.noise_scheduler.add_noise(x0, noise, t)
        out = net(xt, t).sample if labels is None else net(xt, t, class_labels=labels).sample
        return F.mse_loss(out.float(), noise)

    def _labels(self, batch: Batch, train: bool) -> torch.Tensor | None:
        if self.null_label is None:
            return None
        labels = batch["labels"]
        return drop_labels(labels, self.drop_prob, self.null_label) if train else labels

    def train_step(self, batch: Batch, step: int, autocast: Callable[[], AbstractContextManager]) -> dict[str, float]:
        x0 = batch["images"]
        if self.hflip:
            flip = torch.rand(x0.shape[0], device=x0.device) < 0.5
            x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.num_t, (x0.shape[0],), device=x0.device)
        labels = self._labels(batch, train=True)
        with autocast():
            loss = self._loss(self.generator, x0, noise, t, labels)
        return {"loss": backward_step(loss, self.opt, self.generator.parameters(), self.grad_clip)}

    def eval_loss(self, generator: nn.Module, batch: Batch) -> float:
        """The held-out loss, conditioned on the true labels (no dropout) for a class-conditional teacher."""
        return float(self._loss(generator, batch["images"], batch["noise"], batch["t"], self._labels(batch, False)))


def train_teacher(recipe: TeacherTrainRecipe, resume: bool = False) -> Path:
    """Train a DDPM teacher; returns the folder of the finished diffusers checkpoint (run_dir/teacher)."""
    from diffusers import DDPMScheduler

    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    seed_everything(recipe.seed)
    device = pick_device(recipe.device)
    run_dir = claim_folder(recipe.resolved_run_dir(), "teacher")  # never a user's folder (edgekd.rundir)
    (run_dir / "recipe.json").write_text(recipe.model_dump_json(indent=2))

    images = load_dataset(recipe.data)
    condition = None
    arrays: dict[str, torch.Tensor] = {"images": images}
    if recipe.classes is not None:
        arrays["labels"] = load_labels(recipe.data)
        condition = ClassCondition(len(CLASSES), dict(enumerate(CLASSES)), null=len(CLASSES))
        if len(arrays["labels"]) != len(images) or int(arrays["labels"].max()) >= condition.num_classes:
            raise EdgekdError(f"data {recipe.data.path}: {len(arrays['labels'])} labels in 0.."
                              f"{int(arrays['labels'].max())} for {len(images)} images; expected one label in "
                              f"0..{condition.num_classes - 1} per image")
    n_eval = min(512, max(1, len(images) // 10))
    gen = torch.Generator().manual_seed(recipe.seed)
    perm = torch.randperm(len(images), generator=gen)
    heldout = {k: v[perm[:n_eval]] for k, v in arrays.items()}
    train_arrays = {k: v[perm[n_eval:]] for k, v in arrays.items()}
    heldout["noise"] = torch.randn(heldout["images"].shape, generator=gen)
    embeds = None if condition is None else condition.num_classes + 1  # + the null label
    if recipe.init is not None:
        unet, sched_cfg = warm_start(recipe.init, recipe.data.resolution, recipe.data.channels, embeds)
    else:
        unet = build_unet(recipe.unet, recipe.data.resolution, recipe.data.channels, embeds)
        sched_cfg = dict(DDPMScheduler(**recipe.schedule.model_dump(), prediction_type="epsilon",
                                       clip_sample=True).config)
    num_t = int(sched_cfg["num_train_timesteps"])
    heldout["t"] = torch.randint(0, num_t, (n_eval,), generator=gen)
    method = DDPMMethod(unet, sched_cfg, recipe.train.lr, recipe.train.betas, recipe.train.weight_decay,
                        recipe.train.grad_clip, recipe.data.hflip, null_label=None if condition is None else
                        condition.null, drop_prob=recipe.classes.drop_prob if recipe.classes is not None else 0.0,
                        embed_lr=recipe.classes.embed_lr if recipe.classes is not None else None)
    shape = (recipe.data.channels, recipe.data.resolution, recipe.data.resolution)
    fixed_noise = make_noise(recipe.seed + 12345, 0, 32, shape)

    def sample_fn(net: nn.Module, step: int) -> None:
        teacher = DiffusionTeacher(net, sched_cfg, source="training", fingerprint="", condition=condition)
        ids = None if condition is None else condition.draw(0, len(fixed_noise)).to(device)
        title = f"DDIM-{recipe.sample_steps} samples, step {step}"
        if condition is not None:
            title += f" (sample i: class i mod {condition.num_classes}, no guidance)"
        with torch.no_grad():
            x0, _ = teacher.sample(fixed_noise.to(device), recipe.sample_steps, condition=ids)
        labelled_rows({title: x0}, run_dir / "samples" / f"step_{step:08d}.png")

    trainer = Trainer(run_dir, recipe.train, method, TensorSource(train_arrays), heldout, device,
                      recipe.seed, sample_fn=sample_fn)
    started = time.time()
    result = trainer.run(resume=resume)
    final = run_dir / "teacher"
    with AtomicDir(final) as tmp:
        save_teacher(trainer.ema.module.cpu(), sched_cfg, tmp)
        if condition is not None:  # the adapter's convention: K names at the root; id K (unnamed) is "no class"
            atomic_write_json(tmp / ID2LABEL_FILE, {str(k): v for k, v in sorted(condition.names.items())})
        params = sum(p.numel() for p in unet.parameters())
        (tmp / "train.json").write_text(json.dumps({
            "name": recipe.name, "steps": result.step, "batch": recipe.train.batch_size, "params": params,
            "eval_loss": result.best_eval, "seconds_this_session": round(time.time() - started, 1),
            "device": str(device), "channels": list(unet.config.block_out_channels),
            "layers_per_block": int(unet.config.layers_per_block), "data": recipe.data.model_dump(),
            "classes": None if recipe.classes is None else {**recipe.classes.model_dump(),
                                                            "num_classes": condition.num_classes,  # type: ignore[union-attr]
                                                            "null_label": condition.null},  # type: ignore[union-attr]
            "init": recipe.init,
        }, indent=2))
    atomic_write_json(run_dir / "result.json", {"teacher": str(final), "step": result.step, "eval_loss": result.best_eval})
    return final
