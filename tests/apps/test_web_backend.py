"""The web app's backend choice, in real headless Chromium (no GPU): wasm is the default and what runs; asking for
WebGPU where the browser cannot give it falls back to wasm cleanly, says why, and still gives Python's numbers.

Fast on purpose (no `edgekd export`): one tiny hand-built ONNX graph (image = 0.9 * tanh(noise)) behind a minimal
manifest v3, served by `edgekd demo`'s server. tests/test_web_app.py checks real exports end to end (slow).
The browser states checked: navigator.gpu absent (the webgpu choice is disabled, a request falls back), present
with no adapter (what this headless Chromium with --disable-gpu really gives; also simulated, so that the case stays
covered where a Chromium hides navigator.gpu), an adapter whose session cannot be built (simulated: ORT's WebGPU
backend really loads, gets a stand-in adapter without a device, fails, and the page loads the model on wasm), and
a real software adapter (SwiftShader, --enable-unsafe-webgpu) on which the WebGPU path itself runs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
WEB = ROOT / "apps" / "web"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHAPE = [1, 1, 4, 4]
SEED = 3

_missing = [why for cond, why in (
    (CHROMIUM.is_file(), "Debian chromium is not installed (/usr/bin/chromium)"),
    (importlib.util.find_spec("playwright") is not None, "PyPI playwright is not installed (the test extra)"),
    (importlib.util.find_spec("onnx") is not None, "onnx is not installed"),
    ((WEB / "node_modules" / "onnxruntime-web" / "package.json").is_file(), "apps/web/node_modules is missing (npm ci)"),
) if not cond]
pytestmark = pytest.mark.skipif(bool(_missing), reason="; ".join(_missing))

# init scripts (run before the page's own) that give the page each browser state
NO_GPU = "Object.defineProperty(Navigator.prototype, 'gpu', {get: () => undefined, configurable: true});"
NO_ADAPTER = ("Object.defineProperty(Navigator.prototype, 'gpu', {configurable: true, get: () => "
              "({requestAdapter: async () => null, getPreferredCanvasFormat: () => 'rgba8unorm'})});")
BAD_ADAPTER = ("Object.defineProperty(Navigator.prototype, 'gpu', {configurable: true, get: () => "
               "({requestAdapter: async () => ({features: new Set(), limits: {}, info: {}, "
               "requestDevice: async () => { throw new Error('stand-in adapter: no device'); }}), "
               "getPreferredCanvasFormat: () => 'rgba8unorm'})});")


def _tiny_run(root: Path) -> Path:
    """A run folder as `edgekd demo` expects it: recipe.yaml, exports/onnx/{tiny.onnx, student.manifest.json}."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Tanh", ["noise"], ["t"]), helper.make_node("Mul", ["t", "k"], ["image"])], "tiny",
        [helper.make_tensor_value_info("noise", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor("k", TensorProto.FLOAT, [], [0.9])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    exports = root / "exports" / "onnx"
    exports.mkdir(parents=True)
    (root / "recipe.yaml").write_text("name: tiny\n")
    data = model.SerializeToString()
    (exports / "tiny.onnx").write_bytes(data)
    tensor = {"shape": SHAPE, "dtype": "float32", "layout": "NCHW"}
    manifest = {
        "format_version": 3, "name": "tiny", "target": "onnx", "precision": "fp32",
        "models": [{"name": "student", "file": "tiny.onnx", "sha256": hashlib.sha256(data).hexdigest(),
                    "inputs": [{"name": "noise", **tensor}], "output": {"name": "image", **tensor}}],
        "sampling": {"kind": "one_step", "graph": "student"},
        "noise": {"shape": SHAPE[1:], "portable": "mulberry32-boxmuller-v1"},
        "image": {"range": [-1.0, 1.0], "crop": None},
    }
    (exports / "student.manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    from edgekd.apps.demo import make_server

    server, url = make_server(_tiny_run(tmp_path_factory.mktemp("web-backend") / "run"), "onnx", port=0,
                              apps_dir=ROOT / "apps")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:  # one per module: the sync API cannot nest
        yield pw


@pytest.fixture(scope="module")
def browser(playwright):
    b = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
    yield b
    b.close()


def _expected() -> np.ndarray:
    from edgekd.portable_noise import portable_noise

    return (0.9 * np.tanh(portable_noise(SEED, 0, 1, tuple(SHAPE[1:])).astype(np.float32))).reshape(-1)


def _generate(browser, url: str, init: str | None = None) -> tuple[dict, str, bool, list[str]]:
    """Open the page (with `init` run first), press Generate; the backend state, the runtime line, whether the
    webgpu option is enabled, the page errors. The output must be Python's for every backend state."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    if init:
        page.add_init_script(init)
    page.goto(url)
    page.wait_for_function("window.edgekd && (window.edgekd.ready || window.edgekd.error)")
    assert page.evaluate("window.edgekd.error") is None
    offered = page.evaluate("!document.querySelector('#backend option[value=webgpu]').disabled")
    page.fill("#seed", str(SEED))
    page.click("#generate")
    page.wait_for_function(f"window.edgekd.last?.seed === {SEED} || window.edgekd.error")
    assert page.evaluate("window.edgekd.error") is None
    got = np.array(page.evaluate("window.edgekd.last.image"), dtype=np.float32)
    # tanh in wasm vs numpy: a few float32 ulp of values below 1, so 1e-6 is ~10 ulp of margin
    assert np.abs(got - _expected()).max() < 1e-6
    state, line = page.evaluate("window.edgekd.backend"), page.inner_text("#runtime")
    page.close()
    return state, line, offered, errors


def test_wasm_is_the_default_and_what_runs(browser, served: str) -> None:
    state, line, _, errors = _generate(browser, served)
    assert state == {"requested": "wasm", "used": "wasm", "fallback": None}
    assert line.startswith("onnxruntime-web ") and " · wasm · " in line and "running on wasm" not in line
    assert errors == []


@pytest.mark.parametrize("init,offered,why", [
    pytest.param(NO_GPU, False, "this browser has no WebGPU (navigator.gpu)", id="no-navigator.gpu"),
    pytest.param(NO_ADAPTER, True, "WebGPU gives no GPU adapter here", id="no-adapter"),
    # this Chromium as it is: headless with --disable-gpu, so no usable adapter
    pytest.param(None, None, None, id="this-chromium"),
])
def test_webgpu_request_falls_back_to_wasm(browser, served: str, init: str | None, offered: bool | None,
                                          why: str | None) -> None:
    state, line, shown, errors = _generate(browser, served + "&backend=webgpu", init)
    if offered is not None:
        assert shown is offered  # the choice is offered exactly where navigator.gpu exists
    assert state["requested"] == "webgpu" and state["used"] == "wasm", state
    assert state["fallback"].endswith(": running on wasm")
    if why is not None:
        assert state["fallback"] == f"{why}: running on wasm"
    assert " · wasm · " in line and state["fallback"] in line  # the page says what runs and why
    assert errors == []


def test_webgpu_session_failure_falls_back_to_wasm(browser, served: str) -> None:
    """An adapter that cannot give a device: onnxruntime-web's WebGPU backend really loads and fails, and the page
    loads the model again on wasm."""
    state, line, shown, errors = _generate(browser, served + "&backend=webgpu", BAD_ADAPTER)
    assert shown and state["used"] == "wasm", state
    assert state["fallback"].startswith("WebGPU session failed (") and " · wasm · " in line
    assert errors == []


def test_webgpu_runs_on_a_software_adapter(playwright, served: str) -> None:
    """The WebGPU path itself, on Chromium's SwiftShader adapter (--enable-unsafe-webgpu): the session is built on
    onnxruntime-web's WebGPU execution provider and gives Python's numbers. Correctness only: a software adapter's
    speed says nothing about a GPU, so no timing is taken from it."""
    b = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                   args=[*FLAGS, "--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader"])
    try:
        state, line, shown, errors = _generate(b, served + "&backend=webgpu")
    finally:
        b.close()
    if state["fallback"] == "WebGPU gives no GPU adapter here: running on wasm":
        pytest.skip("this Chromium has no SwiftShader WebGPU adapter")
    assert shown and state == {"requested": "webgpu", "used": "webgpu", "fallback": None}, state
    assert " · webgpu · " in line and errors == []


def test_a_bad_backend_name_is_one_clear_error(browser, served: str) -> None:
    page = browser.new_page()
    page.goto(served + "&backend=cuda")
    page.wait_for_function("window.edgekd && (window.edgekd.ready || window.edgekd.error)")
    assert page.evaluate("window.edgekd.error") == 'backend "cuda": choose wasm or webgpu'
    page.close()
