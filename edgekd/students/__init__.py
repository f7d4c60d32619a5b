"""Students: networks that map noise to an image in one evaluation, saved as safetensors + config.json."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from edgekd.errors import EdgekdError
from edgekd.students.layerwise import LayerwiseStudent
from edgekd.students.o2mkd import O2MKDStudent
from edgekd.students.unet_student import OneStepUNetStudent
from edgekd.train.checkpoint import load_weights_file, save_weights

STUDENT_KINDS: dict[str, type] = {"one_step_unet": OneStepUNetStudent, "layerwise": LayerwiseStudent,
                                  "o2mkd": O2MKDStudent}


def save_student(student: nn.Module, folder: Path) -> None:
    """Write ``folder/model.safetensors`` + ``folder/config.json`` (what export/profile/sample load)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(folder, student, student.export_config())


def load_student(folder: Path) -> nn.Module:
    cfg_path = Path(folder) / "config.json"
    if not cfg_path.is_file():
        raise EdgekdError(f"{folder} holds no student (no config.json); run `edgekd distill RECIPE` first")
    try:
        config = json.loads(cfg_path.read_text())
        cls = STUDENT_KINDS[config["kind"]]
    except (ValueError, KeyError) as exc:
        raise EdgekdError(f"{cfg_path} is not an edgekd student config ({exc})") from None
    student = cls.from_config(config)
    state = load_weights_file(Path(folder) / "model.safetensors")
    missing, unexpected = student.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise EdgekdError(f"{folder}/model.safetensors does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return student.eval()
