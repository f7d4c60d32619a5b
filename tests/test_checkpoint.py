"""Checkpoints are safetensors + JSON (no pickles) and every write is atomic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgekd.errors import EdgekdError
from edgekd.train.checkpoint import AtomicDir, atomic_write_text, load_state, save_state


def test_nested_state_round_trip(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"opt": opt.state_dict(), "rng": torch.get_rng_state(), "step": 5, "best": None, "t": (1, 2.5, "x")}
    save_state(tmp_path, "s", state)
    back = load_state(tmp_path, "s")
    assert back["step"] == 5 and back["best"] is None and back["t"] == (1, 2.5, "x")
    assert torch.equal(back["rng"], state["rng"])
    fresh = torch.optim.Adam(model.parameters())
    fresh.load_state_dict(back["opt"])
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    raw = (tmp_path / "s.safetensors").read_bytes()
    assert b"pickle" not in raw and not raw.startswith(b"\x80")  # not a pickle stream


def test_atomic_dir_keeps_old_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "ckpt"
    with AtomicDir(final) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with AtomicDir(final) as tmp:
            (tmp / "a.txt").write_text("new, half")
            raise RuntimeError("killed")
    assert (final / "a.txt").read_text() == "old"
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_atomic_write_text_replaces(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    atomic_write_text(path, "1")
    atomic_write_text(path, "2")
    assert path.read_text() == "2" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_corrupt_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    save_state(tmp_path, "s", {"w": torch.zeros(3)})
    (tmp_path / "s.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EdgekdError, match="unreadable or incomplete"):
        load_state(tmp_path, "s")


def test_no_unsafe_torch_load_in_package() -> None:
    """Users load checkpoints they did not make: any torch.load must pass weights_only=True."""
    root = Path(__file__).resolve().parents[1] / "edgekd"
    for path in root.rglob("*.py"):
        for line in path.read_text().splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"
