"""Many processes: `torchrun --nproc_per_node 2 -m edgekd distill` on the CPU (gloo), as a user runs it on GPUs.

What is checked from the outside: both ranks end with the same weights while training on different batches
(ranks.json, gathered from each rank), rank 0 alone writes (one metrics line per step, one TensorBoard file per
session), a kill -9 of the whole launch mid-run is resumed with --resume, and a GAN (Adv-KD: student heads + one
discriminator per block, gradient penalty through double backward) stays in lockstep too. The DDP routing itself is
checked against a single process on the full batch.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from edgekd_testing import ROOT, needs_fmnist, needs_shared_teacher, tiny_recipe, write_recipe

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available in this build")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), "-m", "edgekd", *args]


def child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", NNCF_CI="1",
               EDGEKD_DIST_TIMEOUT_MIN="3")  # a stuck collective fails the test instead of hanging it
    env.pop("WORLD_SIZE", None)
    return env


def run_torchrun(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """torchrun to the end; on a timeout the whole launch (workers included) is killed before failing."""
    proc = subprocess.Popen(torchrun_cmd(*args), env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_launch(proc)
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def kill_launch(proc: subprocess.Popen) -> None:
    """kill -9 torchrun's process group and every worker (torchrun starts each worker in its own session)."""
    workers = children(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in workers:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    for pid in workers:
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists() or "Z" in _proc_state(pid):
                break
            time.sleep(0.1)


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"


def metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_ranks_agree(run: Path) -> dict:
    ranks = json.loads((run / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and [r["rank"] for r in ranks["ranks"]] == [0, 1]
    r0, r1 = ranks["ranks"]
    assert r0["params"] == r1["params"], "DDP ranks ended with different parameters"
    assert r0["weights"] == r1["weights"], "the ranks' states (parameters + buffers) differ"
    assert r0["ema"] == r1["ema"], "the EMA differs between ranks"
    assert r0["last_batch"] != r1["last_batch"], "both ranks trained on the same batch: data was not split"
    return ranks


@needs_fmnist
def test_torchrun_two_ranks_agree_and_resume_after_kill(tiny_teacher_dir: Path, tmp_path: Path) -> None:
    """One launch killed with -9 after a checkpoint, then --resume: same weights on both ranks, one set of outputs,
    continuous metrics, finite final weights, the effective batch recorded."""
    from safetensors.torch import load_file

    run = tmp_path / "run"
    # 150 steps leave the kill a wide margin whatever the machine's speed; the resume then stops 20 steps after
    # the checkpoint it resumes from (train.steps is one of the fields a resume may change) instead of running
    # the ~140 others: what is checked (lockstep, continuity, one writer) needs steps on both sides of the kill
    steps = 150
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(
        tiny_teacher_dir, run, train={"steps": steps, "checkpoint_every": 10, "eval_every": 10,
                                      "sample_every": 20, "threads": 1, "log_every": 1}))
    proc = subprocess.Popen(torchrun_cmd("distill", str(recipe)), env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 180
        latest = run / "checkpoints" / "latest.json"
        while time.time() < deadline and proc.poll() is None:
            if latest.is_file() and json.loads(latest.read_text())["step"] >= 10:
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
        assert latest.is_file(), "no checkpoint within 180 s"
    finally:
        if proc.poll() is None:
            kill_launch(proc)
    assert not (run / "summary.json").exists(), "killed run must not have finished"
    killed_at = json.loads(latest.read_text())["step"]
    assert killed_at < steps
    steps = killed_at + 20

    done = run_torchrun(["distill", str(recipe), "--resume", "--set", f"train.steps={steps}"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("student saved to") == 1  # printed by rank 0 only
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == steps and summary["resumed_from"] >= killed_at
    assert summary["world_size"] == 2 and summary["effective_batch"] == 16 and summary["batch_per_rank"] == 8
    assert_ranks_agree(run)
    assert metric_steps(run) == list(range(1, steps + 1))  # no gap, no duplicate (rank 0 alone writes)
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert first["world_size"] == 2 and first["effective_batch"] == 16
    # one set of outputs: one TensorBoard file per session, nothing half-written, no per-rank copies
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 2
    assert sorted(p.name for p in run.iterdir()) == [".edgekd-run", "best", "checkpoints", "metrics.jsonl",
                                                     "ranks.json", "recipe.yaml", "samples", "student",
                                                     "summary.json", "tb", "teacher.json"]
    weights = load_file(str(run / "student" / "model.safetensors"))
    assert weights and all(torch.isfinite(w).all() for w in weights.values())


@needs_fmnist
@needs_shared_teacher
@pytest.mark.parametrize("recipe,modules", [("adv-kd-tiny.yaml", "discriminators"), ("gdd-tiny.yaml", "discriminator")])
def test_torchrun_gan_wraps_generator_and_discriminators(tmp_path: Path, recipe: str, modules: str) -> None:
    """GANs under DDP stay identical on both ranks, discriminators included: Adv-KD (student heads with blocks
    unused in early stages, one discriminator per block, R1 in the same backward) and GDD (a separate lazy R1 pass,
    the held-out FID evaluated by rank 0 alone)."""
    run = tmp_path / "run"
    done = run_torchrun(["distill", str(ROOT / "recipes" / recipe), "--set", f"run_dir={run}",
                         "--set", f"trajectory.cache_dir={tmp_path / 'cache'}", "--set", "train.steps=4",
                         "--set", "train.checkpoint_every=4", "--set", "train.eval_every=2"])
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = assert_ranks_agree(run)
    assert ranks["step"] == 4
    saved = json.loads((run / "checkpoints" / "step_00000004" / "modules.json").read_text())
    assert modules in json.dumps(saved)  # the weights digest covered the discriminators too


# --------------------------------------------------------------------------------------------- the routing itself


class _Gen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 4)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.heads(z)[-1]

    def heads(self, z: torch.Tensor, upto: int = 1) -> list[torch.Tensor]:
        out = [self.a(z)]
        if upto >= 1:
            out.append(self.b(torch.tanh(out[0])))
        return out


def _gan_step(g: nn.Module, d: nn.Module, z: torch.Tensor, real: torch.Tensor, upto: int) -> list[torch.Tensor | None]:
    """A GAN step shaped like Adv-KD's: D twice + R1 (double backward), then G through a frozen D."""
    fake = g.heads(z, upto=upto)[-1][:, :4]
    x = real.detach().requires_grad_(True)
    d_real, d_fake = d(x), d(fake.detach())
    (grad,) = torch.autograd.grad(d_real.sum(), x, create_graph=True)
    (F.softplus(-d_real).mean() + F.softplus(d_fake).mean() + 10 * grad.square().sum(1).mean()).backward()
    d.requires_grad_(False)
    F.softplus(-d(fake)).mean().backward()
    d.requires_grad_(True)
    return [p.grad for p in [*g.parameters(), *d.parameters()]]


def _models() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    g, d = _Gen(), nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    gen = torch.Generator().manual_seed(1)
    return g, d, torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen)


def _rank_worker(rank: int, init_file: str, out: str) -> None:
    from edgekd.train.distributed import route_through_ddp

    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    g, d, z, real = _models()
    route_through_ddp(g, torch.device("cpu"), ("heads",), find_unused=True)
    route_through_ddp(d, torch.device("cpu"))
    half = slice(4 * rank, 4 * rank + 4)
    grads = []
    for upto in (0, 1):
        for p in [*g.parameters(), *d.parameters()]:
            p.grad = None
        grads.append([None if t is None else t.clone() for t in _gan_step(g, d, z[half], real[half], upto)])
    torch.save(grads, f"{out}.{rank}")
    torch.distributed.destroy_process_group()


def test_route_through_ddp_gives_the_full_batch_gradients() -> None:
    """Two gloo ranks on half a batch each = one process on the whole batch, for a GAN step with an unused block,
    a gradient penalty and a frozen discriminator in the generator's pass."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_rank_worker, args=(f"{tmp}/init", f"{tmp}/grads"), nprocs=2)
        per_rank = [torch.load(f"{tmp}/grads.{r}") for r in range(2)]
    g, d, z, real = _models()
    for i, upto in enumerate((0, 1)):
        for p in [*g.parameters(), *d.parameters()]:
            p.grad = None
        full = _gan_step(g, d, z, real, upto)
        for rank in range(2):
            for want, got in zip(full, per_rank[rank][i]):
                assert (want is None) == (got is None)  # block b is unused at upto 0 on every rank
                if want is not None:
                    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
