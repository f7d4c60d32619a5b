"""Quantization on tiny models with the real libraries (NNCF, onnxruntime, ai-edge-quantizer/LiteRT, coremltools).

A tiny run in a temp folder: the session's tiny diffusers teacher (UNet (8, 16)), a random one-step UNet student
(8, 16) and recipe.yaml. What is checked: ONNX int8 has QuantizeLinear/DequantizeLinear with int8 per-channel
weights, runs in onnxruntime and stays within a PSNR bound of fp32; the layer surgery is exact (all layers back
in fp32 = the fp32 model); sensitivity + fallback reach a bar the all-int8 model misses, and say so when a bar
cannot be reached; fp16 ONNX runs with fp32 I/O; calibration spans the timestep range (q_sample and recorded
states); TFLite static int8 runs in ai-edge-litert with int8 weights and float I/O; CoreML palettized weights.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd_testing import FMNIST, needs_fmnist

pytest.importorskip("nncf", reason="nncf not installed (pip install -c constraints.txt nncf)")
pytest.importorskip("onnxruntime", reason="onnxruntime not installed")

from edgekd.compress.calibration import HELDOUT_SEED, job_sets, noise_set, step_set, stratified_timesteps  # noqa: E402
from edgekd.compress.quantize import (  # noqa: E402
    count_int8_weights, keep_float, nncf_quantize, quantize_onnx, quantized_layers, run_model, weight_only)
from edgekd.compress.sensitivity import analyse, psnr_np  # noqa: E402
from edgekd.export import export_run  # noqa: E402
from edgekd.export.manifest import read_manifest  # noqa: E402
from edgekd.noise import make_noise  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

# All-int8 output of the tiny random student against fp32, measured 3 times on this machine: 34-36 dB; the bound
# leaves a margin for other CPUs' rounding. A wrong scale or a dropped DQ gives < 10 dB.
INT8_STUDENT_PSNR_BOUND = 28.0
SHAPE = (1, 32, 32)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_dir: Path) -> Path:
    from diffusers import UNet2DModel

    from edgekd.recipe import Recipe, validate_mapping
    from edgekd.rundir import RunDir
    from edgekd.students import save_student
    from edgekd.students.unet_student import build_unet_student

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("quantize")
    recipe = validate_mapping({
        "name": "tiny-quant", "run_dir": str(root / "run"), "data": {"path": str(FMNIST), "limit": 256},
        "teacher": {"path": str(tiny_teacher_dir), "steps": 4},
        "trajectory": {"num_samples": 24, "heldout": 4, "shard_size": 24, "batch_size": 24,
                       "cache_dir": str(root / "cache")},
        "student": {"init": "scratch", "block_out_channels": [8, 16], "norm_num_groups": 4},
        "export": {"parity_samples": 3},
        "compress": {"quantize": {"calibration_samples": 32, "heldout_samples": 8, "targets": ["onnx"]}},
    }, Recipe, "test")
    run = RunDir(root / "run")
    run.path.mkdir()
    run.save_recipe(recipe)
    torch.manual_seed(0)
    unet = UNet2DModel.from_pretrained(tiny_teacher_dir / "unet")
    save_student(build_unet_student(recipe.student, unet, 999).eval(), run.student_dir)
    return run.path


@pytest.fixture(scope="module")
def fp32_onnx(tiny_run: Path) -> Path:
    torch.set_num_threads(1)
    return export_run(tiny_run, target="onnx", exporter="torchscript")


@pytest.fixture(scope="module")
def quantized(fp32_onnx: Path) -> tuple:
    import onnx

    from edgekd.compress.quantize import compact

    fp32 = compact(onnx.load(str(fp32_onnx)))
    q = nncf_quantize(fp32, noise_set(32, SHAPE))
    return fp32, q


def _ops(model) -> set[str]:
    return {n.op_type for n in model.graph.node}


def test_onnx_int8_export_has_qdq_int8_weights_and_bounded_error(tiny_run: Path, fp32_onnx: Path) -> None:
    import onnx
    from onnx import TensorProto, numpy_helper

    from edgekd.profile.generators import OnnxStudent, TorchStudent
    from edgekd.rundir import RunDir

    path = export_run(tiny_run, target="onnx", precision="int8", exporter="torchscript")
    assert path.name == "student_int8.onnx"
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 0 and ops.count("DequantizeLinear") > ops.count("QuantizeLinear")
    # every Conv weight is an int8 tensor behind a DequantizeLinear with one scale per output channel
    inits = {t.name: t for t in model.graph.initializer}
    prod = {o: n for n in model.graph.node for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for conv in convs:
        dq = prod[conv.input[1]]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == TensorProto.INT8
        scale = numpy_helper.to_array(inits[dq.input[1]])
        assert scale.size == inits[dq.input[0]].dims[0]  # (a 1-channel output conv has a scalar scale)
    i8, fl = count_int8_weights(model)
    assert i8 > 0.8 * (i8 + fl)
    assert path.stat().st_size < fp32_onnx.stat().st_size  # (a tiny model: names and Q/DQ nodes weigh a lot)
    # onnxruntime runs it; error against torch fp32 bounded on noise no calibration saw
    noise = make_noise(123, 0, 6, SHAPE)
    ref = TorchStudent(RunDir(tiny_run).student()).generate(noise)
    out = OnnxStudent(path).generate(noise)
    assert psnr_np(ref.numpy(), out.numpy()) >= INT8_STUDENT_PSNR_BOUND
    m = read_manifest(path.with_name("student_int8.manifest.json"))
    assert m.precision == "int8" and m.parity is not None and m.parity.passed
    q = m.checks["quantization"]
    assert q["calibration"]["samples"] == 32 and q["calibration"]["source"] == "standard-normal noise"
    assert q["layers"] == len(convs) and "NNCF" in (m.quantization or "")
    assert (tiny_run / "report" / "sensitivity_student_int8.md").is_file()


def test_layer_surgery_is_exact(quantized: tuple) -> None:
    fp32, q = quantized
    layers = quantized_layers(q)
    assert layers and all(l.weight_dq for l in layers if l.op_type == "Conv")
    data = noise_set(4, SHAPE, HELDOUT_SEED)
    ref = run_model(fp32, data)
    back = keep_float(q, fp32, [l.name for l in layers])
    assert not {"QuantizeLinear", "DequantizeLinear"} & _ops(back)
    assert np.abs(run_model(back, data) - ref).max() < 1e-5  # every layer in fp32 = the fp32 model
    w8 = weight_only(q, fp32)
    assert "QuantizeLinear" not in _ops(w8) and "DequantizeLinear" in _ops(w8)
    assert psnr_np(ref, run_model(w8, data)) > psnr_np(ref, run_model(q, data))  # weights alone lose less
    one = keep_float(q, fp32, [layers[0].name])
    assert len(quantized_layers(one)) == len(layers) - 1


def test_sensitivity_fallback_reaches_a_bar_the_all_int8_model_misses(quantized: tuple, fp32_onnx: Path,
                                                                      tmp_path: Path) -> None:
    import onnx

    fp32, q = quantized
    held = noise_set(8, SHAPE, HELDOUT_SEED)
    full = analyse(q, fp32, held, psnr_min=0.0, per_layer=False)
    assert full.reached and full.psnr_all_int8 >= INT8_STUDENT_PSNR_BOUND and not full.kept_fp32
    bar = full.psnr_all_int8 + 6.0  # 6 dB (4x lower MSE) above what all-int8 reaches
    rep = analyse(q, fp32, held, psnr_min=bar)
    assert rep.reached and rep.psnr_final >= bar and 0 < len(rep.kept_fp32) < rep.n_layers
    assert all(r.psnr_only_this is not None for r in rep.layers)
    worst = sorted(rep.layers, key=lambda r: r.psnr_only_this)[: len(rep.kept_fp32)]
    assert {r.name for r in worst} == set(rep.kept_fp32)  # the most sensitive layers are the ones kept
    assert len(quantized_layers(rep.model)) == rep.n_layers - len(rep.kept_fp32)
    assert psnr_np(run_model(fp32, held), run_model(rep.model, held)) == pytest.approx(rep.psnr_final)
    md = rep.markdown("tiny")
    assert "reaches the bar" in md and rep.kept_fp32[0] in md
    # the file quantize_onnx writes is the model the fallback chose
    res = quantize_onnx(fp32_onnx, tmp_path / "b.onnx", "int8", noise_set(32, SHAPE), held, psnr_min=bar)
    saved = onnx.load(str(tmp_path / "b.onnx"))
    assert res.sensitivity.reached and len(quantized_layers(saved)) == res.checks["layers"] - len(res.checks["fp32_layers"])
    assert psnr_np(run_model(fp32, held), run_model(saved, held)) >= bar
    # a bar no model can clear: the fallback says so instead of pretending
    never = analyse(q, fp32, held, psnr_min=2000.0, per_layer=True)
    assert not never.reached and "does NOT reach" in never.markdown("tiny")


def test_fp16_onnx_runs_with_fp32_io(tiny_run: Path) -> None:
    import onnx
    from onnx import TensorProto

    path = export_run(tiny_run, target="onnx", precision="fp16", exporter="torchscript")
    model = onnx.load(str(path))
    assert {t.data_type for t in model.graph.initializer if len(t.dims) >= 2} == {TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    m = read_manifest(path.with_name("student_fp16.manifest.json"))
    assert m.precision == "fp16" and m.parity is not None and m.parity.passed and m.parity.psnr_db > 50


def test_stratified_timesteps_cover_the_range() -> None:
    t = stratified_timesteps(100, 0, 999, seed=1)
    assert t.min() >= 0 and t.max() <= 999
    assert sorted(np.bincount(t // 100, minlength=10).tolist()) == [10] * 10  # 10 per decile


@needs_fmnist
def test_step_model_calibration_spans_timesteps(tiny_run: Path) -> None:
    from edgekd.export import _prepare

    job = _prepare(tiny_run, teacher=True).jobs[0]
    calib, held = job_sets(job, 40, 8)
    t = calib.timesteps
    assert calib.inputs["sample"].shape == (40, *SHAPE) and t.dtype == np.int64
    assert t.min() < 100 and t.max() > 900 and len(np.unique(t)) > 30  # the whole 0..999 range
    assert "q_sample of real data" in calib.source
    # the forward process: at large t the input is nearly pure noise, at small t nearly an image (in [-1, 1])
    x = calib.inputs["sample"]
    assert np.abs(x[t < 50]).max() < 1.5 and x[t > 950].std() > 0.8
    assert not np.array_equal(held.inputs["sample"][:8], calib.inputs["sample"][:8])
    # a per-timestep student owning 300..600 sees only those
    alphas = np.asarray(job.sampling.alphas_cumprod)
    part = step_set(job.recipe, 20, SHAPE, alphas, (300, 600), job.sampling.timesteps)
    assert part.timesteps.min() >= 300 and part.timesteps.max() <= 600


def test_recorded_states_calibrate_at_their_timesteps(tiny_run: Path, tmp_path: Path) -> None:
    from edgekd.distill import open_store
    from edgekd.recipe import Recipe
    from edgekd.rundir import RunDir
    from edgekd.teachers.diffusers_teacher import load_teacher

    recipe = RunDir(tiny_run).recipe()
    recipe = Recipe.model_validate({**recipe.model_dump(), "trajectory": {
        **recipe.trajectory.model_dump(), "record": [1, 2, 3], "cache_dir": str(tmp_path / "cache")}})
    teacher = load_teacher(recipe.teacher.path)
    store = open_store(recipe, teacher)
    store.ensure(teacher, 12, 12, 12)
    ddim_t = teacher.timesteps(4, recipe.teacher.timestep_spacing)
    alphas = np.asarray(teacher.ddim(1).alphas_cumprod)
    calib = step_set(recipe, 16, SHAPE, alphas, (0, 999), ddim_t)
    assert "trajectory store" in calib.source
    assert sorted(set(calib.timesteps.tolist())) == sorted(ddim_t)  # recorded steps 1..3 + the noise at step 0
    assert np.bincount(np.searchsorted(sorted(ddim_t), calib.timesteps)).tolist() == [4, 4, 4, 4]  # balanced
    # a state is the teacher's x_t: equal to the stored state of that row
    data = store.read(0, 12)
    states = data["states"][:].astype(np.float32)
    k = ddim_t.index(int(calib.timesteps[0]))
    if k > 0:
        assert any(np.allclose(calib.inputs["sample"][0], states[i, k - 1]) for i in range(12))


@needs_fmnist
def test_teacher_step_int8_is_judged_through_the_ddim_loop(tiny_run: Path) -> None:
    path = export_run(tiny_run, target="onnx", precision="int8", teacher=True, exporter="torchscript")
    m = read_manifest(path.with_name("teacher_step_int8.manifest.json"))
    q = m.checks["quantization"]
    assert "DDIM-10 loop" in q["criterion"] and q["calibration"]["timestep_max"] > 900
    assert q["calibration"]["timestep_min"] < 100
    assert q["reached"] and q["psnr_final"] >= 30.0 and m.parity is not None and m.parity.passed


def test_tflite_static_int8_runs_in_litert(tiny_run: Path) -> None:
    pytest.importorskip("litert_torch", reason="litert-torch not installed")
    from ai_edge_litert.interpreter import Interpreter

    path = export_run(tiny_run, target="tflite", precision="int8_static")
    m = read_manifest(path.with_name("student_int8_static.manifest.json"))
    assert m.precision == "int8_static" and "static_wi8_ai8" in (m.quantization or "")
    assert m.parity is not None and m.parity.passed and m.parity.runtime.startswith("ai-edge-litert")
    assert m.checks["inputs"]["noise"]["dtype"] == "float32" and m.checks["outputs"]["image"]["dtype"] == "float32"
    assert m.checks["ops"].get("QUANTIZE", 0) >= 1 and m.checks["ops"].get("DEQUANTIZE", 0) >= 1
    assert m.checks["calibration"]["samples"] == 32
    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    conv_weights = {d["dtype"] for op in interp._get_ops_details() if op["op_name"] == "CONV_2D"
                    for d in [interp.get_tensor_details()[op["inputs"][1]]]}
    assert conv_weights == {np.int8}
    activations = {interp.get_tensor_details()[op["outputs"][0]]["dtype"] for op in interp._get_ops_details()
                   if op["op_name"] == "CONV_2D"}
    assert activations == {np.int8}  # int8 compute, not weight-only


@pytest.mark.parametrize("bits", [4, 6])
def test_coreml_palettized_weights(tiny_run: Path, bits: int) -> None:
    ct = pytest.importorskip("coremltools", reason="coremltools not installed")
    pytest.importorskip("sklearn", reason="scikit-learn (k-means palettization) not installed")

    path = export_run(tiny_run, target="coreml", precision=f"palettize{bits}")
    m = read_manifest(path.with_name(f"student_palettize{bits}.manifest.json"))
    assert m.precision == f"palettize{bits}" and set(m.checks["weight_dtypes"]) == {f"LUT{bits}"}
    if platform.system() != "Darwin":
        assert m.parity is None and "macOS" in (m.parity_skipped or "")
    from edgekd.export.coreml import _quiet

    with _quiet():
        meta = ct.optimize.coreml.get_weights_metadata(ct.models.MLModel(str(path), skip_model_load=True),
                                                       weight_threshold=0)
    luts = [v for k, v in meta.items() if "_lut" in k]
    assert luts and {v.val.shape[-1] if v.val.ndim == 1 else v.val.shape[-2] for v in luts} == {2 ** bits}
    assert all(v.unique_values <= 2 ** bits for v in luts)


def test_quantize_run_writes_exports_and_a_report(tiny_run: Path, fp32_onnx: Path) -> None:
    """What `edgekd compress --quantize` calls: every (target, precision) of the config, then the report."""
    import json

    from edgekd.compress.quantize import quantize_run, run_precisions
    from edgekd.recipe import QuantizeConfig

    assert run_precisions(QuantizeConfig(targets=["tflite", "coreml"], precisions=["int8"], palettize_bits=[4])) == [
        ("tflite", "int8"), ("tflite", "int8_static"), ("coreml", "int8"), ("coreml", "palettize4")]
    results = quantize_run(tiny_run, QuantizeConfig(targets=["onnx"], precisions=["fp16"]))
    assert [(r.target, r.path.name) for r in results] == [("onnx", "student.onnx"), ("onnx", "student_fp16.onnx")]
    report = json.loads((tiny_run / "report" / "quantization.json").read_text())
    fp16 = report["exports"][1]
    assert fp16["precision"] == "fp16" and 0.3 < fp16["size_vs_fp32"] < 1.0 and fp16["parity_psnr_db"] > 50
    assert "| onnx | fp16 |" in (tiny_run / "report" / "quantization.md").read_text()
