"""GDD sweep on a GPU: several short time-boxed runs, FID of the EMA generator against the test split.

The sweep behind docs/gdd.md's GPU table. Each argument is one configuration,
NAME:G_LR:D_LR:INNATE(0|1):DISC(conv|projected):MAX_STEPS:CLAMP_FAKES(0|1):TIMESTEP, e.g.

    OUT=/tmp/sweep MAX_S=90 python benchmarks/gdd_gpu_sweep.py gddi:1e-4:1e-4:1:projected:5000:0:999

Paths (for a machine without the package's dependencies installed, stage them beside the checkout):
GDD_STAGE (default runs/gddgpu) holds site/ (extra site-packages: diffusers, pydantic, ...), teacher/ (the shared
teacher folder) and fmnist/ (the Fashion-MNIST idx files). Env knobs: MAX_S, EVAL_EVERY, BS, GAMMA.
"""
import json, os, sys, time
STAGE = os.environ.get("GDD_STAGE", "runs/gddgpu")
sys.path[:0] = [os.getcwd(), f"{STAGE}/site"]
import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel
from edgekd.data import load_dataset
from edgekd.methods.discriminators import build_discriminator
from edgekd.methods.gdd import GDDMethod, HeldoutFID, RealNoiseSource, build_gdd_generator
from edgekd.noise import make_noise
from edgekd.recipe import DataConfig, GDDConfig, TrainConfig
from edgekd.teachers.diffusers_teacher import load_teacher
from edgekd.train.loop import warmup_ema

torch.backends.cudnn.benchmark = True
dev = torch.device("cuda")
out_dir = os.environ.get("OUT", "/tmp")
max_s = float(os.environ.get("MAX_S", "90"))
eval_every = int(os.environ.get("EVAL_EVERY", "250"))
bs = int(os.environ.get("BS", "256"))
teacher = load_teacher(f"{STAGE}/teacher", dev)
train_x = load_dataset(DataConfig(path=f"{STAGE}/fmnist"))
test_x = load_dataset(DataConfig(path=f"{STAGE}/fmnist", split="test"))
fid = HeldoutFID(test_x, "builtin:fid/fmnist-classifier")
noise = make_noise(3_000_000, 0, 2048, teacher.sample_shape).to(dev)
print("real train vs test FID(2048):", fid(train_x[:2048]), flush=True)
results = {}
for spec in sys.argv[1:]:
    name, glr, dlr, innate, disc, steps, clamp, tg = spec.split(":")
    torch.manual_seed(0)
    cfg = GDDConfig(innate=innate == "1", discriminator=disc, disc_channels=64, d_lr=float(dlr),
                    clamp_fakes=clamp == "1", r1_gamma=float(os.environ.get("GAMMA", "1e-4")))
    g = build_gdd_generator(teacher, int(tg)).to(dev)
    d = build_discriminator(disc, teacher.sample_shape, 64, cfg.feature_net).to(dev)
    m = GDDMethod(g, d, cfg, TrainConfig(lr=float(glr), betas=(0.0, 0.99), grad_clip=None), fid)
    ema = AveragedModel(g, multi_avg_fn=warmup_ema(0.999), use_buffers=True)
    src, rng = RealNoiseSource(train_x, True), np.random.default_rng(0)
    amp = lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    g.train(); d.train()
    hist, t_train, t0, step = [], 0.0, time.time(), 0
    print(f"== {name}: {m.describe()}", flush=True)
    g.eval()
    with torch.no_grad():
        print("init FID", m.eval_loss(g, {"noise": noise}), flush=True)
    g.train()
    while step < int(steps) and t_train < max_s:
        b = {k: v.to(dev, non_blocking=True) for k, v in src.batch(bs, rng).items()}
        torch.cuda.synchronize(); ts = time.time()
        logs = m.train_step(b, step, amp)
        ema.update_parameters(g)
        torch.cuda.synchronize(); t_train += time.time() - ts
        step += 1
        if step % eval_every == 0 or step == int(steps) or t_train >= max_s:
            ema.module.eval()
            with torch.no_grad(), amp():
                f_ema = m.eval_loss(ema.module, {"noise": noise})
            g.eval()
            with torch.no_grad():
                f_raw = m.eval_loss(g, {"noise": noise})
            g.train()
            rec = {"step": step, "s_per_step": t_train / step, "fid_ema": f_ema, "fid_g": f_raw,
                   **{k: round(v, 4) for k, v in logs.items()}}
            hist.append(rec)
            print(json.dumps(rec), flush=True)
    results[name] = hist
    ema.module.eval()
    with torch.no_grad():
        imgs = torch.cat([ema.module(noise[:16]).float().cpu(), g.eval()(noise[:16]).float().cpu()])
    torch.save(imgs, f"{out_dir}/{name}_samples.pt")
    json.dump(results, open(f"{out_dir}/results.json", "w"), indent=1)
