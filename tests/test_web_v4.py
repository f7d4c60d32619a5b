"""The web app (apps/web) on manifest v4: its CLIP BPE tokenizer (apps/web/lib/clip_bpe.js) gives transformers'
CLIPTokenizer's ids on the same vocab.json + merges.txt, and in real headless Chromium a class-conditional and a
text-conditional latent export (tests/layouts.py teachers, `edgekd distill` + `edgekd export --target onnx` at tiny
budgets, one module fixture) generate what Python's `open_generator(manifest).generate(noise, condition)` does;
broken v4 manifests are refused by the page's check with one line each.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edgekd_testing import ROOT, cli, tiny_recipe, write_recipe

WEB = ROOT / "apps" / "web"
TOKENIZER_JS = WEB / "lib" / "clip_bpe.js"
# what the golden comparison covers: case, punctuation and contractions, runs of (Unicode) whitespace, accents
# composed or not (NFC), scripts without spaces, digits, Greek sigma (lowercased per code point), an emoji (bytes
# outside the trained alphabet: unknown symbols), the special tokens typed exactly and in another case, the empty
# prompt, and prompts longer than max_length (truncated, eos kept)
PROMPTS = ["a red bag", "A Photo of a RED Sneaker!", "  two   shoes\t\nand\u3000a  bag  ", "don't stop, 'til it's 4.5%",
           "x\u0085y x\ufeffy", "caf\u00e9 cafe\u0301 na\u00efve", "\u65e5\u672c\u8a9e\u30c6\u30b9\u30c8 123",
           "\u03a3\u0391\u03a3 \u0399\u0301", "\u0130stanbul", "a \U0001F45F sneaker",
           "a<|endoftext|>b <|startoftext|>",
           "<|ENDOFTEXT|> HE'S", "", "the quick brown fox " * 6, "reder redder at at oo ooo"]
CORPUS = ["a photo of a red sneaker", "the quick brown fox jumps over the lazy dog", "two shoes and a bag",
          "a red dress, a blue coat and an ankle boot", "it's a trouser; they're shirts", "caf\u00e9 na\u00efve 123"]


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    return node


def js_token_ids(folder: Path, spec: dict, prompts: list[str]) -> list[list[int]]:
    """apps/web/lib/clip_bpe.js under Node on ``folder``'s vocab.json + merges.txt."""
    script = f"""
      import {{readFileSync}} from "node:fs";
      import {{ClipBpeTokenizer}} from "{TOKENIZER_JS.as_uri()}";
      const dir = {json.dumps(str(folder))};
      const t = ClipBpeTokenizer.fromText(readFileSync(dir + "/vocab.json", "utf8"),
                                          readFileSync(dir + "/merges.txt", "utf8"), {json.dumps(spec)});
      const prompts = JSON.parse(readFileSync(0, "utf8"));
      console.log(JSON.stringify(prompts.map((p) => t.encode(p))));
    """
    out = subprocess.run([_node(), "--input-type=module", "-e", script], input=json.dumps(prompts),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def python_token_ids(folder: Path, spec: dict, prompts: list[str]) -> list[list[int]]:
    """The reference: edgekd's exported_tokenizer (transformers' CLIPTokenizer on the same two files)."""
    from edgekd.models.stages import token_ids
    from edgekd.runtime.open import exported_tokenizer

    files = {"vocab": "vocab.json", "merges": "merges.txt"}
    m = SimpleNamespace(condition=SimpleNamespace(tokenizer=SimpleNamespace(files=files, **spec)))
    return token_ids(exported_tokenizer(m, folder), prompts).tolist()


def _trained_tokenizer(folder: Path) -> None:
    """A real BPE vocabulary (merges learned by HF tokenizers' trainer with CLIP's normaliser and pre-tokeniser),
    so that merge order, word-final merges and unknown symbols all matter; written as vocab.json + merges.txt."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
                                   r"""[^\s\p{L}\p{N}]+"""), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), end_of_word_suffix="</w>",
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 3, trainer)
    model = json.loads(tok.to_str())["model"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    merges = [" ".join(p) if isinstance(p, list) else p for p in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    assert len(merges) > 40


def test_clip_bpe_js_equals_transformers_on_a_trained_vocabulary(tmp_path: Path) -> None:
    _trained_tokenizer(tmp_path)
    spec = {"max_length": 16, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1, "lowercase": True}
    want = python_token_ids(tmp_path, spec, PROMPTS)
    got = js_token_ids(tmp_path, spec, PROMPTS)
    for prompt, w, g in zip(PROMPTS, want, got):
        assert g == w, (prompt, w, g)
    long = PROMPTS.index("the quick brown fox " * 6)
    assert want[long][-1] == 1 and 1 not in want[long][1:-1]  # truncated to max_length, eos kept last
    assert len({tuple(w) for w in want}) == len(PROMPTS)  # every prompt tokenizes differently: the test can fail


# --------------------------------------------------------------------------------------------- in Chromium

CHROMIUM = Path("/usr/bin/chromium")
# shared/STACK.md: a headless Chromium that reaches nothing but the local server
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SEED = 5
# Browser vs Python: the same graphs on the same float32 inputs, onnxruntime-web's wasm kernels against
# onnxruntime's native CPU ones. They differ only in float32 summation order (SIMD width, blocking): each
# reduction of n terms of size <= 1 moves by at most about n * 2^-24 relative, and these tiny graphs (reductions
# of at most a few hundred terms, outputs of order 1, three graphs in a row for the text model) stay near 1e-5 in the
# worst case; 1e-4 is the bar tests/test_web_app.py uses for the same pairing. Pixels: within 1 (a value that lands
# on a rounding boundary may round either way).
ATOL = 1e-4
TINY = {"train": {"steps": 4, "eval_every": 2, "sample_every": 4, "checkpoint_every": 2},
        "trajectory": {"num_samples": 20, "heldout": 4, "shard_size": 20, "batch_size": 10}}

_missing = [why for cond, why in (
    (CHROMIUM.is_file(), "Debian chromium is not installed (/usr/bin/chromium; scripts/setup.sh installs it)"),
    (importlib.util.find_spec("playwright") is not None, "PyPI playwright is not installed (the test extra)"),
    ((WEB / "node_modules" / "onnxruntime-web" / "package.json").is_file(),
     "apps/web/node_modules is missing (run `npm ci` in apps/web; scripts/setup.sh does)"),
) if not cond]
needs_browser = pytest.mark.skipif(bool(_missing), reason="; ".join(_missing))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A class-conditional pixel student and a text-conditional latent one (text encoder -> student -> decoder),
    distilled at tiny budgets and exported to ONNX (manifest v4): about 40 s on a shared 2-core machine."""
    from layouts import build

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("web_v4")
    out = {}
    for kind in ("class", "sd"):
        recipe = tiny_recipe(build(kind, root), root / f"run-{kind}", **TINY)
        recipe["teacher"]["steps"] = 3
        if kind == "sd":
            recipe["teacher"]["prompts"] = ["a red bag", "two shoes"]
        recipe["student"] = {"init": "teacher"}
        rc, log = cli("distill", write_recipe(root / f"{kind}.yaml", recipe))
        assert rc == 0, log
        rc, log = cli("export", root / f"run-{kind}", "--target", "onnx", "--exporter", "torchscript")
        assert rc == 0, log
        out[kind] = root / f"run-{kind}"
    torch.set_num_threads(before)
    return out


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        yield b
        b.close()


@contextlib.contextmanager
def page_for(browser, run: Path, target: str = "onnx"):
    """`edgekd demo`'s server for the run's export on a free port, and a page that has loaded it."""
    import threading

    from edgekd.apps.demo import make_server

    server, url = make_server(run, target, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(url)
        page.wait_for_function("window.edgekd && (window.edgekd.ready || window.edgekd.error)")
        assert page.evaluate("window.edgekd.error") is None
        yield page
        assert errors == []
    finally:
        page.close()
        server.shutdown()
        server.server_close()


def python_reference(manifest: Path, seed: int, condition: torch.Tensor) -> np.ndarray:
    """The export in Python (edgekd's runtime over onnxruntime, driven by the manifest) on the page's noise."""
    from edgekd.portable_noise import portable_noise
    from edgekd.runtime import open_generator

    m = json.loads(manifest.read_text())
    noise = torch.from_numpy(portable_noise(seed, 0, 1, tuple(m["noise"]["shape"])))
    return open_generator(manifest, threads=1).generate(noise, condition).numpy().reshape(-1)


def generate_in_page(page, seed: int) -> np.ndarray:
    """Press Generate (the UI path) and return the page's raw output."""
    page.fill("#seed", str(seed))
    page.evaluate("window.__before = window.edgekd.last")
    page.click("#generate")
    page.wait_for_function("window.edgekd.last && window.edgekd.last !== window.__before")
    assert page.evaluate("window.edgekd.error") is None
    return np.array(page.evaluate("window.edgekd.last.image"), dtype=np.float32)


def canvas_pixels(page) -> np.ndarray:
    px = page.evaluate("""() => { const c = document.getElementById('canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        return {w: c.width, h: c.height, data: Array.from(d)}; }""")
    return np.array(px["data"], dtype=np.uint8).reshape(px["h"], px["w"], 4)


def to_pixels(x: np.ndarray, shape: list[int]) -> np.ndarray:
    """The manifest's to_pixels as [H, W, C] (gray repeated on 3 channels, as the canvas shows it)."""
    c, h, w = shape
    img = np.round((np.clip(x.reshape(c, h, w), -1, 1) + 1) * 127.5).transpose(1, 2, 0)
    return np.repeat(img, 3, axis=2) if c == 1 else img


@needs_browser
@pytest.mark.slow
def test_class_picker_generates_the_chosen_class_as_python_does(browser, runs: dict[str, Path]) -> None:
    manifest = runs["class"] / "exports" / "onnx" / "student.manifest.json"
    m = json.loads(manifest.read_text())
    assert m["format_version"] == 4 and m["condition"]["kind"] == "class"
    with page_for(browser, runs["class"]) as page:
        assert page.is_visible("#class") and not page.is_visible("#prompt")
        options = page.eval_on_selector_all("#class option", "os => os.map(o => [o.value, o.textContent])")
        assert options == [[str(i), f"{i} · {n}"] for i, n in enumerate(m["condition"]["names"])]
        images = {}
        for cls in (7, 3):
            page.select_option("#class", str(cls))
            got = generate_in_page(page, SEED)
            assert page.evaluate("window.edgekd.last.condition") == {"class": cls}
            want = python_reference(manifest, SEED, torch.tensor([cls]))
            assert got.shape == want.shape and want.std() > 1e-3
            diff = float(np.abs(got - want).max())
            print(f"class {cls}: max |browser - python| = {diff:.2e}")
            assert diff < ATOL, diff
            top, left, h, w = m["image"]["crop"]
            expected = to_pixels(want, m["image"]["shape"])[top:top + h, left:left + w]
            rgba = canvas_pixels(page)
            assert rgba.shape[:2] == (h, w) and np.abs(rgba[..., :3].astype(int) - expected).max() <= 1
            images[cls] = got
        # another class is another picture (the class input reaches the graph), far beyond the tolerance
        assert float(np.abs(images[7] - images[3]).max()) > 100 * ATOL
        # a class by name (the test API), and a bad one is one clear line
        page.evaluate("window.edgekd.chooseCondition('Sneaker')")
        assert page.input_value("#class") == "7"
        err = page.evaluate("() => { try { window.edgekd.chooseCondition(12); } catch (e) { return e.message; } }")
        assert err == "class 12: choose an id 0..9 or a name"


@needs_browser
@pytest.mark.slow
def test_prompt_box_runs_text_encoder_student_and_decoder_as_python_does(browser, runs: dict[str, Path]) -> None:
    from edgekd.manifest import read_manifest
    from edgekd.models.stages import token_ids
    from edgekd.runtime.open import exported_tokenizer

    folder = runs["sd"] / "exports" / "onnx"
    manifest = folder / "student.manifest.json"
    m = json.loads(manifest.read_text())
    assert [g["name"] for g in m["models"]] == ["text_encoder", "student", "decoder"] and m["decode"]
    tokenizer = exported_tokenizer(read_manifest(manifest), folder)
    with page_for(browser, runs["sd"]) as page:
        assert page.is_visible("#prompt") and not page.is_visible("#class")
        assert page.input_value("#prompt") == m["condition"]["example_prompts"][0]
        # the page's tokenizer on the export's own files, in Chromium: the golden prompts
        got_ids = page.evaluate("(ps) => ps.map((p) => window.edgekd.tokenize(p))", PROMPTS)
        assert got_ids == token_ids(tokenizer, PROMPTS).tolist()
        images = {}
        for prompt in ("  Two RED   shoes!", "a red bag"):
            page.fill("#prompt", prompt)
            got = generate_in_page(page, SEED)
            last = page.evaluate("window.edgekd.last.condition")
            ids = token_ids(tokenizer, [prompt])
            assert last == {"prompt": prompt, "input_ids": ids[0].tolist()}
            want = python_reference(manifest, SEED, ids)
            assert got.shape == want.shape == (3 * 16 * 16,) and want.std() > 1e-3
            diff = float(np.abs(got - want).max())
            print(f"prompt {prompt!r}: max |browser - python| = {diff:.2e}")
            assert diff < ATOL, diff
            rgba = canvas_pixels(page)
            assert rgba.shape[:2] == (16, 16)  # image.shape, not the 4x8x8 latent noise
            assert np.abs(rgba[..., :3].astype(int) - to_pixels(want, m["image"]["shape"])).max() <= 1
            images[prompt] = got
        assert float(np.abs(images["a red bag"] - images["  Two RED   shoes!"]).max()) > 100 * ATOL


@needs_browser
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("EDGEKD_WEB_TFLITE") != "1",
                    reason="opt-in (EDGEKD_WEB_TFLITE=1): the two TFLite exports add about 2 min on a 2-core machine")
def test_tflite_exports_run_in_litert_js_as_python_does(browser, runs: dict[str, Path]) -> None:
    """The same two models exported to TFLite (int32 ids, LiteRT.js in the page, ai-edge-litert in Python)."""
    from edgekd.manifest import read_manifest
    from edgekd.models.stages import token_ids
    from edgekd.runtime.open import exported_tokenizer

    for kind, choices in (("class", [7, 3]), ("sd", ["two shoes!", "a red bag"])):
        rc, log = cli("export", runs[kind], "--target", "tflite")
        assert rc == 0, log
        manifest = runs[kind] / "exports" / "tflite" / "student.manifest.json"
        images = []
        with page_for(browser, runs[kind], "tflite") as page:
            assert page.inner_text("#runtime") == "-"
            for choice in choices:
                page.evaluate("window.__before = window.edgekd.last")
                page.evaluate(f"window.edgekd.generate({SEED}, {json.dumps(choice)})")
                assert page.inner_text("#runtime").startswith("litert.js")
                got = np.array(page.evaluate("window.edgekd.last.image"), dtype=np.float32)
                cond = (torch.tensor([choice]) if kind == "class" else
                        token_ids(exported_tokenizer(read_manifest(manifest), manifest.parent), [choice]))
                want = python_reference(manifest, SEED, cond)
                diff = float(np.abs(got - want).max())
                print(f"tflite {kind} {choice!r}: max |browser - python| = {diff:.2e}")
                assert diff < ATOL and want.std() > 1e-3, diff
                images.append(got)
        assert float(np.abs(images[0] - images[1]).max()) > 100 * ATOL


def test_bad_v4_manifests_are_refused_with_one_line_under_node() -> None:
    """The page's manifest check (apps/web/lib/sampler.js checkManifest) on broken v4 manifests: one line each."""
    graph = {"name": "student", "file": "s.onnx", "output": {"name": "image"},
             "inputs": [{"name": "noise", "shape": [1, 1, 4, 4]}, {"name": "class_labels", "shape": [1]}]}
    good = {"format_version": 4, "target": "onnx", "models": [graph],
            "sampling": {"kind": "one_step", "graph": "student"},
            "noise": {"shape": [1, 4, 4], "portable": "mulberry32-boxmuller-v1"},
            "condition": {"kind": "class", "input": "class_labels", "num_classes": 3, "names": ["a", "b", "c"]},
            "decode": None}
    cases = {
        "ok": {},
        "condition.kind \"audio\": this app reads class and text": {"condition": {**good["condition"],
                                                                                  "kind": "audio"}},
        "condition.input \"labels\" is not an input of graph student": {"condition": {**good["condition"],
                                                                                     "input": "labels"}},
        "condition.names must list 3 names (one per class id)": {"condition": {**good["condition"], "names": ["a"]}},
        "condition.encoder_graph \"text_encoder\" is not in models": {"condition": {
            "kind": "text", "input": "class_labels", "encoder_graph": "text_encoder",
            "tokenizer": {"kind": "clip_bpe"}}},
        "decode.graph \"decoder\" is not in models": {"decode": {"graph": "decoder", "input": "latents"}},
        "format_version 5; this app reads versions 3 and 4 (re-export with this edgekd)": {"format_version": 5},
    }
    manifests = {k: {**good, **v} for k, v in cases.items()}
    script = f"""
      import {{checkManifest}} from "{(WEB / 'lib' / 'sampler.js').as_uri()}";
      const out = {{}};
      for (const [k, m] of Object.entries({json.dumps(manifests)})) {{
        try {{ checkManifest(m); out[k] = "ok"; }} catch (e) {{ out[k] = e.message; }}
      }}
      console.log(JSON.stringify(out));
    """
    out = subprocess.run([_node(), "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for want, got in json.loads(out.stdout).items():
        assert got == (want if want == "ok" else f"manifest: {want}"), (want, got)
