"""The web app (apps/web) on manifest v4: its CLIP BPE tokenizer (apps/web/lib/clip_bpe.js) gives transformers'
CLIPTokenizer's ids on the same vocab.json + merges.txt, and in real headless Chromium a class-conditional and a
text-conditional latent export (tests/layouts.py teachers, `edgekd distill` + `edgekd export --target onnx` at tiny
budgets, one module fixture) generate what Python's `open_generator(manifest).generate(noise, condition)` does.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edgekd_testing import ROOT, tiny_recipe, write_recipe

WEB = ROOT / "apps" / "web"
TOKENIZER_JS = WEB / "lib" / "clip_bpe.js"
# what the golden comparison covers: case, punctuation and contractions, runs of (Unicode) whitespace, accents
# composed or not (NFC), scripts without spaces, digits, Greek sigma (lowercased per code point), an emoji (bytes
# outside the trained alphabet: unknown symbols), the special tokens typed exactly and in another case, the empty
# prompt, and prompts longer than max_length (truncated, eos kept)
PROMPTS = ["a red bag", "A Photo of a RED Sneaker!", "  two   shoes\t\nand\u3000a  bag  ", "don't stop, 'til it's 4.5%",
           "x\u0085y x\ufeffy", "caf\u00e9 cafe\u0301 na\u00efve", "\u65e5\u672c\u8a9e\u30c6\u30b9\u30c8 123",
           "\u03a3\u0391\u03a3 \u0399\u0301", "\u0130stanbul", "a \U0001F45F sneaker", "a<|endoftext|>b <|startoftext|>",
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
