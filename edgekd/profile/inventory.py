"""Every generator a run holds, as plain JSON-able specs a fresh process can open.

A run's generators: the teacher in torch at each profiled step count, the student in torch, every export under
``exports/<target>/`` (each precision; the teacher's exported step at each step count; an O2MKD router), and the
same for each derived run under ``compressed/`` (pruned students or teachers). Specs are dicts, not objects,
because the profiler opens each one in its own subprocess to measure its memory alone (``profile/measure.py``).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from edgekd.errors import EdgekdError

RUNTIME_OF_TARGET = {"onnx": "onnxruntime", "tflite": "litert", "coreml": "coreml"}


def _manifest_facts(path: Path) -> dict[str, Any] | None:
    """Role, target, precision, size and parity of a manifest (any version), or None if it is not one."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or "role" not in raw:
        return None
    models = raw.get("models") or ([raw["model"]] if isinstance(raw.get("model"), dict) else [])
    target = raw.get("target") or (models[0].get("target") if models else None)
    if target not in RUNTIME_OF_TARGET:
        return None
    parity = raw.get("parity") or (models[0].get("parity") if models and raw.get("format_version", 0) >= 3 else None)
    skipped = raw.get("parity_skipped") or (models[0].get("parity_skipped") if models else None)
    size = raw.get("total_bytes") or sum(int(m.get("bytes", 0)) for m in models)
    return {"role": raw["role"], "target": target, "precision": raw.get("precision", "fp32"),
            "quantization": raw.get("quantization"), "parity": parity, "parity_skipped": skipped, "bytes": size,
            "sampling": raw.get("sampling") or {}, "format_version": raw.get("format_version")}


def _label(prefix: str, what: str) -> str:
    return f"{prefix}: {what}" if prefix else what


def run_specs(run_path: Path, steps_list: list[int], prefix: str = "", reference: bool = True) -> list[dict[str, Any]]:
    """Specs of one run directory (not its derived runs): torch teacher/student, then every export."""
    from edgekd.rundir import RunDir

    run = RunDir.open(run_path, need_student=False)
    recipe = run.recipe()
    spacing = recipe.teacher.timestep_spacing
    base = {"run": str(run.path), "run_label": prefix or "."}
    specs: list[dict[str, Any]] = []
    derived_teacher = (run.path / "teacher" / "unet").is_dir()
    if reference or derived_teacher:  # a derived run with the original teacher would repeat its rows
        for steps in steps_list:
            specs.append({**base, "kind": "torch_teacher", "group": "teacher", "reference": reference,
                          "label": _label(prefix, f"teacher DDIM-{steps} torch"), "model": f"teacher DDIM-{steps}",
                          "runtime": "torch", "precision": "fp32", "steps": steps, "teacher": recipe.teacher.path,
                          "spacing": spacing})
    has_student = (run.student_dir / "config.json").is_file()
    if has_student:
        specs.append({**base, "kind": "torch_student", "group": "student", "label": _label(prefix, "student torch"),
                      "model": "student", "runtime": "torch", "precision": "fp32", "steps": None})
    for manifest in sorted(run.exports.glob("*/*.manifest.json")) if run.exports.is_dir() else []:
        facts = _manifest_facts(manifest)
        if facts is None:
            continue
        runtime = RUNTIME_OF_TARGET[facts["target"]]
        common = {**base, "kind": "manifest", "path": str(manifest), "runtime": runtime, "target": facts["target"],
                  "precision": facts["precision"], "manifest": facts, "spacing": spacing}
        tag = f"{runtime}" + ("" if facts["precision"] == "fp32" else f" {facts['precision']}")
        if facts["role"] == "teacher_step":
            if not (reference or derived_teacher):
                continue
            for steps in steps_list:
                specs.append({**common, "group": "teacher", "reference": False, "steps": steps,
                              "model": f"teacher DDIM-{steps}", "teacher": recipe.teacher.path,
                              "label": _label(prefix, f"teacher DDIM-{steps} {tag}")})
        elif facts["role"] == "router":
            if manifest.with_name(manifest.name.replace("router", "student", 1)).is_file():
                continue  # the same export, also described by its v3 student manifest (listed on its own)
            steps = int(facts["sampling"].get("steps", 0)) or None
            specs.append({**common, "group": "student", "steps": steps, "model": "student",
                          "label": _label(prefix, f"student {tag}")})
        elif facts["role"] == "student" and has_student:
            specs.append({**common, "group": "student", "steps": None, "model": "student",
                          "label": _label(prefix, f"student {tag}")})
    for spec in specs:
        spec["skip"] = skip_reason(spec)
    return sorted(specs, key=lambda s: s["group"] != "teacher")  # teacher rows first (a stable sort)


def all_specs(run_path: Path, steps_list: list[int]) -> list[dict[str, Any]]:
    """The run's specs, then each derived run's under ``compressed/`` (labelled with its folder name)."""
    specs = run_specs(run_path, steps_list)
    compressed = Path(run_path) / "compressed"
    for derived in sorted(compressed.iterdir()) if compressed.is_dir() else []:
        if (derived / "recipe.yaml").is_file():
            specs += run_specs(derived, steps_list, prefix=derived.name, reference=False)
    return specs


def skip_reason(spec: dict[str, Any]) -> str | None:
    """Why this machine cannot run a spec (CoreML predicts on macOS only), or None."""
    if spec.get("runtime") == "coreml" and platform.system() != "Darwin":
        return "CoreML prediction needs macOS (the export was checked structurally)"
    return None


def preimport(spec: dict[str, Any]) -> None:
    """Import what opening ``spec`` needs (edgekd's runtime layer, the runtime's Python package)."""
    import importlib

    import edgekd.manifest  # noqa: F401
    import edgekd.profile.generators  # noqa: F401  (the runtime layer; diffusers for the torch teacher)
    import edgekd.runtime  # noqa: F401

    module = {"onnxruntime": "onnxruntime", "litert": "ai_edge_litert.interpreter",
              "torch": "edgekd.students"}.get(spec.get("runtime", ""))
    if module:
        importlib.import_module(module)


def open_spec(spec: dict[str, Any], threads: int | None = None) -> Any:
    """A Generator (``generate(noise) -> images``) for a spec through the runtime layer, at ``threads`` threads."""
    from edgekd.runtime import open_generator, torch_generator

    if spec.get("skip"):
        raise EdgekdError(f"{spec['label']}: {spec['skip']}")
    kind = spec["kind"]
    if kind == "torch_teacher":
        from edgekd.profile.generators import TorchTeacher
        from edgekd.rundir import RunDir
        from edgekd.teachers.diffusers_teacher import load_recipe_teacher

        recipe = RunDir.open(Path(spec["run"]), need_student=False).recipe()
        teacher = load_recipe_teacher(recipe.model_copy(update={"teacher": recipe.teacher.model_copy(
            update={"path": spec["teacher"]})}))
        return TorchTeacher(teacher, spec["steps"], spec.get("spacing", "trailing"))
    if kind == "torch_student":
        from edgekd.rundir import RunDir

        run = RunDir.open(Path(spec["run"]))
        return torch_generator(staged_student(run))
    if kind != "manifest":
        raise EdgekdError(f"unknown generator kind {kind!r}")
    path = Path(spec["path"])
    if spec["manifest"]["role"] != "teacher_step":
        return open_generator(path, threads)
    from edgekd.manifest import read_manifest

    m = read_manifest(path)
    if m.sampling.steps == spec["steps"]:
        return open_generator(path, threads)
    if m.condition is not None or m.decode is not None:  # a staged teacher step: the pipeline at N steps
        return open_generator(path, threads, name=spec["model"], steps=spec["steps"])
    # the exported teacher step at another step count: the same scheduler, another DDIM schedule
    from edgekd.profile.generators import _ddim
    from edgekd.runtime.steppers import open_stepper

    graphs = {g.name: open_stepper(m.target, path.parent / g.file, threads) for g in m.models}
    sched = dict(m.sampling.scheduler or {})
    spacing = sched.get("timestep_spacing", spec.get("spacing", "trailing"))
    return _ddim(sched, spec["steps"], spacing, graphs, name=spec["model"])


def staged_student(run: Any) -> Any:
    """The run's student in torch, with its teacher's text encoder and decoder around it when it has them."""
    student = run.student()
    if getattr(student, "condition", None) is None and not getattr(student, "latent", False):
        return student
    from edgekd.models.stages import StagedModel
    from edgekd.teachers.diffusers_teacher import load_recipe_teacher

    return StagedModel(student, load_recipe_teacher(run.recipe()))
