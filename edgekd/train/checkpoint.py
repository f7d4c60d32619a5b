"""Checkpoints as safetensors + JSON (no pickles), written atomically so a kill never leaves half a file.

Users load checkpoints they did not make; safetensors cannot execute code on load, pickles can.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from edgekd.errors import EdgekdError


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


class AtomicDir:
    """Build a directory under a temp name and rename it into place only when complete.

    ``with AtomicDir(final) as tmp: ...write files into tmp...``; on error the temp folder is removed and any
    previous ``final`` stays as it was.
    """

    def __init__(self, final: Path):
        self.final = Path(final)
        self.tmp = self.final.parent / f".{self.final.name}.partial"

    @staticmethod
    def recover(final: Path) -> None:
        """A kill between the two renames of __exit__ leaves ``final`` missing and ``.final.old`` complete: put
        the old one back (the new one was never in place, so nothing trusted it)."""
        final = Path(final)
        old = final.parent / f".{final.name}.old"
        if not final.exists() and old.is_dir():
            os.replace(old, final)

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        AtomicDir.recover(self.final)
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = None
        if self.final.exists():
            old = self.final.parent / f".{self.final.name}.old"
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def flatten_state(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested state (dicts/lists/tensors/numbers) into a JSON skeleton and a flat tensor dict."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, key: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[key] = node.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(node, dict):
            return {"__dict__": [[walk(k, f"{key}.k{i}"), walk(v, f"{key}.{i}")] for i, (k, v) in enumerate(node.items())]}
        if isinstance(node, (list, tuple)):
            return {"__list__" if isinstance(node, list) else "__tuple__": [walk(v, f"{key}.{i}") for i, v in enumerate(node)]}
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot store {type(node).__name__} in a checkpoint")

    return walk(obj, prefix or "s"), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "__tensor__" in node:
                return tensors[node["__tensor__"]]
            if "__dict__" in node:
                return {walk(k): walk(v) for k, v in node["__dict__"]}
            if "__list__" in node:
                return [walk(v) for v in node["__list__"]]
            if "__tuple__" in node:
                return tuple(walk(v) for v in node["__tuple__"])
        return node

    return walk(skeleton)


def save_state(folder: Path, name: str, state: Any) -> None:
    """Save any nested state as ``name.safetensors`` + ``name.json`` inside ``folder``."""
    skeleton, tensors = flatten_state(state)
    save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / f"{name}.json").write_text(json.dumps(skeleton))


def load_state(folder: Path, name: str) -> Any:
    try:
        tensors = load_file(str(folder / f"{name}.safetensors"))
        skeleton = json.loads((folder / f"{name}.json").read_text())
    except Exception as exc:  # safetensors raises its own SafetensorError on a corrupt header
        raise EdgekdError(f"checkpoint {folder} is unreadable or incomplete ({exc}); delete it to start over") from None
    return unflatten_state(skeleton, tensors)


def save_weights(folder: Path, module: torch.nn.Module, config: dict[str, Any], name: str = "model") -> None:
    """A model as ``model.safetensors`` + ``config.json``: what loaders and exporters read."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(folder / f"{name}.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError on a corrupt header
        raise EdgekdError(f"{path} is not a readable safetensors file ({exc})") from None


# ---------------------------------------------------------------------------------------------- resume

STATE_NAMES = ("modules", "ema", "optim", "loop")


def checkpoint_problem(folder: Path, names: tuple[str, ...] = STATE_NAMES) -> str | None:
    """Why ``folder`` is not a complete, readable checkpoint (None when it is).

    Cheap: the JSON skeletons are parsed and the safetensors headers checked against the file sizes (a truncated
    or half-copied file fails), without reading the tensors."""
    from safetensors import safe_open

    if not folder.is_dir():
        return "missing"
    for name in names:
        try:
            json.loads((folder / f"{name}.json").read_text())
            with safe_open(str(folder / f"{name}.safetensors"), "pt") as fh:
                fh.keys()
        except FileNotFoundError as exc:
            return f"{Path(exc.filename or name).name} is missing"
        except Exception as exc:  # SafetensorError, JSONDecodeError, UnicodeDecodeError: all mean damaged
            return f"{name} is damaged ({type(exc).__name__})"
    return None


def find_resume_checkpoint(ckpt_dir: Path, warn: Any = None) -> Path | None:
    """The checkpoint to resume from: the one latest.json names when it is complete, else the newest complete
    step_* folder (with a warning saying what was wrong), else None.

    A kill, a full disk or a bad copy can leave latest.json pointing at a missing or damaged folder, or leave
    latest.json itself torn; the previous checkpoint is still good and losing it would restart from step 0."""
    warn = warn or _warn
    ckpt_dir = Path(ckpt_dir)
    pointer = ckpt_dir / "latest.json"
    named = None
    if pointer.is_file():
        try:
            named = ckpt_dir / str(json.loads(pointer.read_text())["name"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            warn(f"{pointer} is corrupt; looking for the newest complete checkpoint instead")
    if named is not None and named.parent == ckpt_dir:
        problem = checkpoint_problem(named)
        if problem is None:
            return named
        warn(f"checkpoint {named.name} named by latest.json is unusable ({problem}); "
             "looking for the newest complete checkpoint instead")
    candidates = sorted((p for p in ckpt_dir.glob("step_*") if p.is_dir()), reverse=True) if ckpt_dir.is_dir() else []
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            if pointer.is_file() or named is not None:
                warn(f"resuming from {path.name}, the newest complete checkpoint")
            return path
        warn(f"skipping checkpoint {path.name} ({problem})")
    return None


def trim_metrics(path: Path, upto: int) -> None:
    """Keep the metric lines of steps <= ``upto`` (a resume drops what the killed run wrote past its checkpoint).

    A torn last line (a kill in the middle of a write) or any unreadable line is dropped, not a crash."""
    path = Path(path)
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step", 0), (int, float)) and record.get("step", 0) <= upto:
            keep.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in keep))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl as records; torn or unreadable lines (a kill mid-write) are skipped."""
    out = []
    if Path(path).is_file():
        for line in Path(path).read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                out.append(record)
    return out


def _warn(message: str) -> None:
    import sys

    print(f"edgekd: warning: {message}", file=sys.stderr)
