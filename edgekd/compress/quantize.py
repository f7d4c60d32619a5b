"""Post-training quantization of exported models, per target, and ``quantize_run`` for ``edgekd compress``.

What runs where (docs/quantization.md has the measurements):

- ONNX int8: NNCF post-training quantization of the fp32 ONNX file (``nncf.quantize`` on the ONNX model: QDQ
  format, QuantizeLinear/DequantizeLinear pairs that onnxruntime executes), calibrated on
  ``edgekd.compress.calibration`` inputs. By default only the weighted layers (Conv, ConvTranspose, Gemm, MatMul)
  and their input activations are quantized (``scope: weighted``); element-wise ops, norms and resizes stay float.
  Then the sensitivity analysis and mixed-precision fallback of ``edgekd.compress.sensitivity`` keep the worst
  layers in fp32 until the output PSNR against fp32 clears ``psnr_min``.
- ONNX fp16: onnxruntime's float16 converter with fp32 inputs/outputs (the graph casts at its edges).
- TFLite / CoreML: the converters in edgekd/export (static int8 with this module's calibration sets; CoreML
  palettization).
- Every ONNX file written here is compacted (node metadata and value_info dropped): the dynamo exporter's
  per-node stack traces are about 40% of a small model's file and no runtime reads them.

The layer surgery works on the QDQ graph itself: a layer "kept in fp32" gets its original fp32 weight and bias
back and reads its input activation from before the QuantizeLinear; nothing is quantized twice, so any subset of
layers can be tried with one onnxruntime session each, without re-running NNCF.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from edgekd.compress.calibration import CalibrationSet
from edgekd.errors import EdgekdError

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
ONNX_QUANTIZATION = {
    "int8": "static int8 QDQ (QuantizeLinear/DequantizeLinear): NNCF post-training quantization, int8 per-channel "
            "symmetric weights, int8 per-tensor activations calibrated on {calibration}; fp32 layers: {fp32_layers}",
    "fp16": "fp16 weights and compute, fp32 inputs/outputs (onnxruntime.transformers.float16, keep_io_types)",
}


@contextlib.contextmanager
def quiet() -> Any:
    """NNCF draws progress bars and logs per call; keep a command's output to its own lines."""
    os.environ.setdefault("NNCF_CI", "1")
    loggers = [logging.getLogger(n) for n in ("nncf", "onnxruntime")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


# --------------------------------------------------------------------------------------------- ONNX helpers


def compact(model: Any) -> Any:
    """Drop what no runtime reads (per-node metadata such as stack traces, value_info, doc strings); in place."""
    for node in model.graph.node:
        node.ClearField("metadata_props")
        node.ClearField("doc_string")
    model.graph.ClearField("value_info")
    model.ClearField("metadata_props")
    model.graph.ClearField("doc_string")
    return model


def save_onnx(model: Any, path: Path) -> Path:
    import onnx

    onnx.save(compact(model), str(path))
    return path


def fixed_batch(model: Any) -> int | None:
    """The batch the model was exported for, or None when the batch is dynamic."""
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else None


def input_dtypes(model: Any) -> dict[str, Any]:
    from onnx import helper

    return {i.name: helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type) for i in model.graph.input}


def session(model: Any, threads: int | None = 1) -> Any:
    """An onnxruntime CPU session on an in-memory model (the runtime the parity gate uses)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def run_model(model: Any, data: CalibrationSet, threads: int | None = 1) -> np.ndarray:
    """All outputs of ``model`` (first output) over ``data``, in chunks of its batch."""
    sess = session(model, threads)
    batch = fixed_batch(model)
    dtypes = input_dtypes(model)
    outs = [sess.run(None, feed)[0] for feed in data.batches(batch or 16, dtypes, fixed=batch is not None)]
    return np.concatenate(outs).astype(np.float32)


def op_counts(model: Any) -> dict[str, int]:
    from collections import Counter

    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def model_bytes(model: Any) -> int:
    return int(compact(copy.deepcopy(model)).ByteSize())


# --------------------------------------------------------------------------------------------- ONNX int8 / fp16


def nncf_quantize(fp32: Any, calib: CalibrationSet, scope: str = "weighted") -> Any:
    """NNCF post-training int8 of an fp32 ONNX model (QDQ); ``scope`` weighted (default) or all."""
    with quiet():
        import nncf

        present = {n.op_type for n in fp32.graph.node}
        ignored = None
        if scope == "weighted":
            skip = sorted(present - set(WEIGHTED_OPS))
            ignored = nncf.IgnoredScope(types=skip, validate=False) if skip else None
        elif scope != "all":
            raise EdgekdError(f"unknown quantization scope '{scope}' (weighted or all)")
        batch = fixed_batch(fp32) or 1
        dtypes = input_dtypes(fp32)
        items = list(calib.batches(batch, dtypes))
        try:
            return nncf.quantize(fp32, nncf.Dataset(items), subset_size=len(items) * batch,
                                 preset=nncf.QuantizationPreset.PERFORMANCE, ignored_scope=ignored)
        except Exception as exc:  # nncf raises many types; the user needs the reason
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise EdgekdError(f"NNCF int8 quantization failed ({type(exc).__name__}: {first})") from None


def to_fp16(fp32: Any) -> Any:
    """fp16 weights and compute, fp32 inputs and outputs (casts at the graph's edges)."""
    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError:  # pragma: no cover - shipped with onnxruntime
        from onnxconverter_common.float16 import convert_float_to_float16  # type: ignore[no-redef]
    with quiet():
        return convert_float_to_float16(copy.deepcopy(fp32), keep_io_types=True)


@dataclass
class Layer:
    """A quantized layer: a node whose inputs come through DequantizeLinear (weights and/or activations)."""

    name: str
    op_type: str
    params: int
    weight_dq: list[int] = field(default_factory=list)      # input indices fed by DQ(int8 initializer)
    activation_dq: list[int] = field(default_factory=list)  # input indices fed by DQ(Q(activation))


def _producers(model: Any) -> dict[str, Any]:
    return {out: node for node in model.graph.node for out in node.output}


def quantized_layers(qmodel: Any) -> list[Layer]:
    """The quantized layers of a QDQ model, in graph order."""
    from onnx import numpy_helper

    inits = {t.name: t for t in qmodel.graph.initializer}
    prod = _producers(qmodel)
    layers = []
    for node in qmodel.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        layer = Layer(node.name, node.op_type, 0)
        for i, name in enumerate(node.input):
            dq = prod.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in inits:
                layer.weight_dq.append(i)
                layer.params += int(np.prod(numpy_helper.to_array(inits[dq.input[0]]).shape))
            elif (q := prod.get(dq.input[0])) is not None and q.op_type == "QuantizeLinear":
                layer.activation_dq.append(i)
        if layer.weight_dq or layer.activation_dq:
            layers.append(layer)
    if len({l.name for l in layers}) != len(layers) or any(not l.name for l in layers):
        raise EdgekdError("the quantized ONNX model has unnamed or duplicate layer names; cannot choose layers")
    return layers


def _prune_dead(model: Any) -> None:
    """Remove nodes whose outputs nobody reads, then initializers nobody reads (in place)."""
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | outputs
        dead = [n for n in model.graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    used = {i for n in model.graph.node for i in n.input}
    for init in [t for t in model.graph.initializer if t.name not in used]:
        model.graph.initializer.remove(init)


def keep_float(qmodel: Any, fp32: Any, names: Iterable[str], activations_only: bool = False) -> Any:
    """A copy of the QDQ model with the named layers back in fp32 (their original weights and biases, their input
    activations read from before the QuantizeLinear). ``activations_only`` keeps int8 weights (weight-only int8)."""
    from onnx import numpy_helper

    names = set(names)
    model = copy.deepcopy(qmodel)
    prod = _producers(model)
    inits = {t.name for t in model.graph.initializer}
    f_nodes = {n.name: n for n in fp32.graph.node}
    f_inits = {t.name: t for t in fp32.graph.initializer}
    found = set()
    for node in model.graph.node:
        if node.name not in names:
            continue
        found.add(node.name)
        original = f_nodes.get(node.name)
        for i, name in enumerate(list(node.input)):
            if not name:
                continue
            dq = prod.get(name)
            is_dq = dq is not None and dq.op_type == "DequantizeLinear"
            q = prod.get(dq.input[0]) if is_dq else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]  # activation: read it from before the fake quantization
                continue
            if activations_only or not (is_dq or name in inits):
                continue  # weight-only int8 keeps int8 weights and NNCF's bias; other inputs are not quantized
            # a weight (DQ of an int8 tensor) or a bias (changed by bias correction): the fp32 model's own tensor
            src = original.input[i] if original is not None and i < len(original.input) else None
            if src not in f_inits:
                if is_dq:
                    raise EdgekdError(f"layer {node.name}: no fp32 tensor for input {i} to fall back to")
                continue
            new = f"{src}__fp32"
            if new not in inits:
                model.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(f_inits[src]), new))
                inits.add(new)
            node.input[i] = new
    missing = names - found
    if missing:
        raise EdgekdError(f"unknown layers {sorted(missing)[:3]} (not in the quantized model)")
    _prune_dead(model)
    return model


def weight_only(qmodel: Any, fp32: Any) -> Any:
    """int8 weights, float activations: every activation QuantizeLinear/DequantizeLinear pair removed."""
    return keep_float(qmodel, fp32, [l.name for l in quantized_layers(qmodel)], activations_only=True)


def count_int8_weights(model: Any) -> tuple[int, int]:
    """(int8 weight elements, float weight elements of rank >= 2): how much of the model is stored in int8."""
    from onnx import TensorProto

    i8 = fl = 0
    for t in model.graph.initializer:
        n = int(np.prod(t.dims)) if t.dims else 1
        if t.data_type in (TensorProto.INT8, TensorProto.UINT8):
            i8 += n if len(t.dims) >= 2 else 0
        elif t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16) and len(t.dims) >= 2:
            fl += n
    return i8, fl


class LoopJudge:
    """Whole-model quality of a step model: images from a DDIM loop driven by it against the same loop driven by
    the fp32 model, on held-out noise (the way the parity gate checks a step export)."""

    def __init__(self, fp32: Any, scheduler_config: dict[str, Any], steps: int, noise: Any, spacing: str = "trailing"):
        import torch

        batch = fixed_batch(fp32)
        if batch and len(noise) % batch:  # a fixed-batch model: whole batches only
            noise = torch.cat([noise] * batch)[: batch * max(1, len(noise) // batch)]
        self.config, self.steps, self.spacing, self.noise = scheduler_config, steps, spacing, noise
        self.criterion = f"image PSNR after a DDIM-{steps} loop on {len(noise)} held-out noise images"
        self.reference = self.images(fp32)

    def images(self, model: Any) -> np.ndarray:
        import torch

        from edgekd.teachers.diffusers_teacher import ddim_sample

        sess = session(model)
        batch = fixed_batch(model)

        def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            xs = x.numpy().astype(np.float32)
            outs = []
            for i in range(0, len(xs), batch or len(xs)):
                chunk = xs[i : i + (batch or len(xs))]
                outs.append(sess.run(None, {"sample": chunk, "timestep": np.full(len(chunk), int(t), np.int64)})[0])
            return torch.from_numpy(np.concatenate(outs))

        return ddim_sample(self.config, eps, self.noise, self.steps, self.spacing)[0].numpy()

    def __call__(self, model: Any) -> float:
        from edgekd.compress.sensitivity import psnr_np

        return psnr_np(self.reference, self.images(model))


# --------------------------------------------------------------------------------------------- ONNX entry point


@dataclass
class OnnxQuantResult:
    precision: str
    model: Any
    calibration: dict[str, Any] = field(default_factory=dict)
    sensitivity: Any = None  # edgekd.compress.sensitivity.SensitivityReport for int8
    checks: dict[str, Any] = field(default_factory=dict)

    def description(self) -> str:
        if self.precision == "fp16":
            return ONNX_QUANTIZATION["fp16"]
        cal = self.calibration
        text = f"{cal.get('samples')} inputs ({cal.get('source')}"
        if "timestep_min" in cal:
            text += f", timesteps {cal['timestep_min']}..{cal['timestep_max']}, {cal['distinct_timesteps']} distinct"
        text += ")"
        kept = self.sensitivity.kept_fp32 if self.sensitivity is not None else []
        layers = f"{len(kept)} ({', '.join(kept)})" if kept else "none"
        return ONNX_QUANTIZATION["int8"].format(calibration=text, fp32_layers=layers)

    def manifest_checks(self) -> dict[str, Any]:
        """What the manifest's checks.quantization records (its description becomes the quantization line)."""
        return {"description": self.description(), **self.checks}


def quantize_onnx(fp32_path: Path, out_path: Path, precision: str, calib: CalibrationSet | None = None,
                  heldout: CalibrationSet | None = None, psnr_min: float = 30.0, sensitivity: bool = True,
                  scope: str = "weighted", progress: bool = False, make_judge: Any = None) -> OnnxQuantResult:
    """fp32 ONNX file -> ``precision`` (int8 | fp16) ONNX file at ``out_path`` (compacted). For int8: NNCF PTQ,
    then (``sensitivity``) per-layer analysis and the fp32 fallback of the worst layers until PSNR >= psnr_min
    on ``heldout``, or by ``make_judge(fp32_model)(model) -> dB`` when given (a LoopJudge for step models)."""
    import onnx

    fp32 = onnx.load(str(fp32_path))
    compact(fp32)
    if precision == "fp16":
        save_onnx(to_fp16(fp32), out_path)
        return OnnxQuantResult("fp16", onnx.load(str(out_path)))
    if precision != "int8":
        raise EdgekdError(f"precision '{precision}' is not an ONNX quantization (int8 or fp16)")
    if calib is None or heldout is None:
        raise EdgekdError("ONNX int8 needs calibration and held-out inputs")
    from edgekd.compress.sensitivity import analyse

    qmodel = nncf_quantize(fp32, calib, scope)
    report = analyse(qmodel, fp32, heldout, psnr_min, per_layer=sensitivity, progress=progress,
                     judge=make_judge(fp32) if make_judge is not None else None)
    final = report.model
    report.model = None
    save_onnx(final, out_path)
    i8, fl = count_int8_weights(final)
    checks = {"scope": scope, "calibration": calib.describe(), "heldout": heldout.describe(),
              "layers": report.n_layers, "fp32_layers": report.kept_fp32, "psnr_all_int8": report.psnr_all_int8,
              "psnr_final": report.psnr_final, "psnr_min": psnr_min, "reached": report.reached,
              "criterion": report.criterion,
              "int8_weight_fraction": round(i8 / max(1, i8 + fl), 4),
              "qdq_nodes": {k: v for k, v in op_counts(final).items() if k in ("QuantizeLinear", "DequantizeLinear")}}
    return OnnxQuantResult("int8", final, calib.describe(), report, checks)


# --------------------------------------------------------------------------------------------- export integration


def config_for(recipe: Any) -> Any:
    """The recipe's ``compress.quantize`` section, or its defaults."""
    from edgekd.recipe import QuantizeConfig

    compress = getattr(recipe, "compress", None)
    return getattr(compress, "quantize", None) or QuantizeConfig()


def quantize_job_onnx(job: Any, path: Path, precision: str, cfg: Any, target_psnr: float | None = None) -> OnnxQuantResult:
    """Replace the fp32 ONNX file an export job just wrote with its ``precision`` version (called by
    edgekd.export before the parity gate). int8: calibration and held-out sets from the job (student: noise;
    step model: x_t across its timesteps), NNCF, sensitivity and the fallback to ``target_psnr`` or cfg.psnr_min."""
    if precision == "fp16":
        return quantize_onnx(path, path, "fp16")
    from edgekd.compress.calibration import job_sets

    if cfg.qat_steps > 0:  # measured, not shipped: docs/quantization.md "Quantization-aware training"
        raise EdgekdError("compress.quantize.qat_steps > 0: quantization-aware training is not implemented in this "
                          "edgekd (post-training int8 with the mixed-precision fallback is); set qat_steps: 0")
    calib, held = job_sets(job, cfg.calibration_samples, cfg.heldout_samples, cfg.calibration)
    make_judge = None
    if job.teacher:  # a step model: judged through the DDIM loop the parity gate runs, on held-out noise
        from edgekd.compress.calibration import HELDOUT_SEED
        from edgekd.export import TEACHER_PARITY_STEPS
        from edgekd.noise import make_noise

        noise = make_noise(HELDOUT_SEED, 0, min(cfg.heldout_samples, 8), job.shape)

        def make_judge(fp32: Any) -> LoopJudge:
            return LoopJudge(fp32, job.teacher_model.scheduler_config, TEACHER_PARITY_STEPS, noise)

    return quantize_onnx(path, path, precision, calib, held, target_psnr if target_psnr is not None else cfg.psnr_min,
                         sensitivity=cfg.sensitivity, scope=cfg.scope, progress=True, make_judge=make_judge)


def run_precisions(cfg: Any) -> list[tuple[str, str]]:
    """(target, precision) pairs ``quantize_run`` makes: fp16/int8 per target; TFLite int8 both dynamic and
    static; CoreML palettization at each of ``palettize_bits``."""
    from edgekd.export.targets import get_target

    pairs = []
    for target in cfg.targets:
        for precision in cfg.precisions:
            if precision not in get_target(target).PRECISIONS:  # e.g. executorch has no fp16
                continue
            if target == "tflite" and precision == "int8":
                pairs += [(target, "int8"), (target, "int8_static")]
            else:
                pairs.append((target, precision))
        if target == "coreml":
            pairs += [(target, f"palettize{bits}") for bits in cfg.palettize_bits]
    return pairs


class RecipeQuantizer:
    """The calibration source export targets quantize with (edgekd.export.targets.Quantizer): ``cfg`` (the
    recipe's compress.quantize when None) decides the calibration data, held-out set and fallback bar."""

    def __init__(self, cfg: Any = None):
        self.cfg = cfg

    def config(self, job: Any) -> Any:
        return self.cfg or job.quantize_config or config_for(job.recipe)

    def onnx(self, job: Any, path: Path, precision: str, target_psnr: float | None) -> OnnxQuantResult:
        return quantize_job_onnx(job, path, precision, self.config(job), target_psnr)

    def calibration(self, job: Any, batch: int, dtypes: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        from edgekd.compress.calibration import job_sets

        cfg = self.config(job)
        calib, _ = job_sets(job, cfg.calibration_samples, 0, cfg.calibration)
        return list(calib.batches(batch, dtypes)), calib.describe()


def quantize_run(run_dir: Path, cfg: Any = None, teacher: bool = False, exporter: str = "dynamo") -> list[Any]:
    """Quantize a run's student (or teacher step) for every target and precision of ``cfg`` (the recipe's
    compress.quantize when None): every graph of the model (one for a one-step student, N for O2MKD). Writes
    RUN/exports/<target>/<stem>_<precision>.* with manifests and parity (the fp32 export of a target too when
    missing: it is the size reference), RUN/report/quantization.{json,md}, and for ONNX int8
    RUN/report/sensitivity_<stem>_int8.{json,md}. A failed entry does not stop the others; the call raises the
    first failure after the report is written. Returns edgekd.export.ExportResult per export."""
    from edgekd.export import ExportOptions, ExportResult, export_model, prepare, summary_table
    from edgekd.export.targets import get_target

    prep = prepare(Path(run_dir), teacher)
    cfg = cfg or config_for(prep.recipe)
    quantizer = RecipeQuantizer(cfg)
    results: list[ExportResult] = []
    rows = []
    for target, precision in [(t, "fp32") for t in cfg.targets] + run_precisions(cfg):
        existing = _existing_fp32(prep, target, get_target(target).SUFFIX) if precision == "fp32" else None
        if existing is not None:
            results.append(ExportResult(target, existing, _size_of(existing), None, "existing fp32 export"))
        else:
            try:
                results.append(export_model(prep, target, precision, ExportOptions(exporter=exporter), quantizer))
            except EdgekdError as exc:
                results.append(ExportResult(target, None, error=exc))
        rows.append((target, precision, results[-1]))
    report = _run_report(prep, rows)
    print(summary_table(results))
    print(f"report: {report}")
    failed = [r.error for r in results if r.error is not None]
    if failed:
        raise type(failed[0])(f"{len(failed)} of {len(results)} quantized exports failed; first: {failed[0]}")
    return results


def _existing_fp32(prep: Any, target: str, suffix: str) -> Path | None:
    """The fp32 export of ``target`` when every graph of it and its manifest exist (what export_model returns)."""
    folder = prep.run.exports / target
    files = [folder / f"{job.name}{suffix}" for job in prep.jobs]
    manifest = folder / f"{prep.stem}.manifest.json"
    if not all(f.exists() for f in files) or not manifest.is_file():
        return None
    return files[0] if len(files) == 1 else manifest


def _manifest_of(path: Path) -> Path:
    from edgekd.manifest import manifest_path

    return path if path.name.endswith(".manifest.json") else manifest_path(path)


def _size_of(path: Path) -> int:
    """Bytes of an export: its file, or every graph file of a several-graph manifest."""
    if path.name.endswith(".manifest.json"):
        from edgekd.manifest import read_manifest

        return read_manifest(path).total_bytes
    return _size(path)


def _graph_files(path: Path) -> list[Path]:
    if path.name.endswith(".manifest.json"):
        from edgekd.manifest import read_manifest

        return [path.parent / g.file for g in read_manifest(path).models]
    return [path]


def _size(path: Path) -> int:
    from edgekd.export import size_bytes

    return size_bytes(path)


def _run_report(job: Any, rows: list[tuple[str, str, Any]]) -> Path:
    """``job``: the Prepared model (edgekd.export._prepare)."""
    import datetime as dt

    from edgekd.manifest import read_manifest
    from edgekd.train.checkpoint import atomic_write_json, atomic_write_text

    import onnx

    fp32 = {t: r.bytes for t, p, r in rows if p == "fp32" and r.path is not None}
    compact_fp32 = {t: sum(model_bytes(onnx.load(str(f))) for f in _graph_files(r.path)) for t, p, r in rows
                    if t == "onnx" and p == "fp32" and r.path is not None}
    entries = []
    for target, precision, r in rows:
        entry: dict[str, Any] = {"target": target, "precision": precision, "file": str(r.path) if r.path else None,
                                 "bytes": r.bytes if r.path else None}
        if r.path is not None and fp32.get(target):
            entry["size_vs_fp32"] = round(r.bytes / fp32[target], 4)
        if r.path is not None and compact_fp32.get(target) and precision != "fp32":
            entry["size_vs_compact_fp32"] = round(r.bytes / compact_fp32[target], 4)  # like for like (see docs)
        if r.error is not None:
            entry["error"] = str(r.error)
        elif r.path is not None and _manifest_of(r.path).is_file():
            m = read_manifest(_manifest_of(r.path))
            entry["quantization"] = m.quantization
            if m.parity is not None:
                entry.update(parity_psnr_db=round(m.parity.psnr_db, 2), parity_bar_db=m.parity.psnr_min)
            else:
                entry["parity_skipped"] = m.parity_skipped
            q = m.models[0].checks.get("quantization") or {}
            if q:
                entry.update(fp32_layers=len(q.get("fp32_layers", [])), layers=q.get("layers"),
                             psnr_heldout_db=q.get("psnr_final"))
        entries.append(entry)
    report = {"run": str(job.run.path), "model": job.stem,
              "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "exports": entries}
    folder = job.run.report_dir
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "quantization.json", report)
    lines = [f"# Quantized exports: {job.run.path.name} {job.stem}", "",
             "| target | precision | MB | size vs fp32 (compacted fp32) | parity PSNR dB (bar) | notes |",
             "|---|---|---|---|---|---|"]
    for e in entries:
        mb = f"{e['bytes'] / 1e6:.3f}" if e.get("bytes") else "-"
        ratio = f"{e['size_vs_fp32']:.2f}x" if "size_vs_fp32" in e else "-"
        if "size_vs_compact_fp32" in e:
            ratio += f" ({e['size_vs_compact_fp32']:.2f}x)"
        parity = (f"{e['parity_psnr_db']:.1f} ({e['parity_bar_db']:.0f})" if "parity_psnr_db" in e
                  else ("not run: macOS only" if e.get("parity_skipped") else "-"))
        note = e.get("error") or (f"{e['fp32_layers']} of {e['layers']} layers kept fp32" if "fp32_layers" in e else "")
        lines.append(f"| {e['target']} | {e['precision']} | {mb} | {ratio} | {parity} | {note} |")
    atomic_write_text(folder / "quantization.md", "\n".join(lines) + "\n")
    return folder / "quantization.md"
