"""`edgekd demo` (serving on 127.0.0.1 with the isolation headers, clean Ctrl-C) and `export --into-app`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edgekd.apps.demo import ISOLATION_HEADERS, make_server
from edgekd.apps.into_app import APP_MODEL_DIRS, copy_into_app
from edgekd.cli import main
from edgekd.errors import EdgekdError

from apps_testing import fake_export
from edgekd_testing import ROOT


@pytest.fixture()
def apps(tmp_path: Path) -> Path:
    """An apps/ folder with a web app whose npm packages are stand-ins (the server only checks they are there)."""
    web = tmp_path / "apps" / "web"
    for pkg in ("onnxruntime-web", "@litertjs/core", "@litertjs/wasm-utils"):
        (web / "node_modules" / pkg).mkdir(parents=True)
        (web / "node_modules" / pkg / "package.json").write_text("{}")
    (web / "index.html").write_text("<!doctype html><title>demo</title>")
    (web / "lib").mkdir()
    (web / "lib" / "noise.js").write_text("export const x = 1;")
    (web / "node_modules" / "onnxruntime-web" / "ort.wasm").write_bytes(b"\0asm")
    return tmp_path / "apps"


def _get(url: str) -> tuple[int, Any, bytes]:
    """(status, headers (case-insensitive), body)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as res:
            return res.status, res.headers, res.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, b""


def test_demo_serves_app_and_export_on_loopback_with_isolation_headers(tmp_path: Path, apps: Path):
    fake_export(tmp_path / "run", "onnx", payload=b"model-bytes")
    server, url = make_server(tmp_path / "run", "onnx", port=0, apps_dir=apps)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        assert url == f"http://127.0.0.1:{port}/?manifest=/run/student.manifest.json"
        base = f"http://127.0.0.1:{port}"
        for path, body in (("/", b"<!doctype html><title>demo</title>"), ("/run/student.onnx", b"model-bytes")):
            status, headers, data = _get(base + path)
            assert status == 200 and data == body
            for key, value in ISOLATION_HEADERS.items():
                assert headers[key] == value
        status, headers, _ = _get(base + "/lib/noise.js")
        assert status == 200 and headers["Content-Type"].startswith("text/javascript")
        assert _get(base + "/node_modules/onnxruntime-web/ort.wasm")[1]["Content-Type"] == "application/wasm"
        assert json.loads(_get(base + "/run/student.manifest.json")[2])["format_version"] == 3
        assert _get(base + "/run/../recipe.yaml")[0] == 404  # nothing outside the two folders
        assert _get(base + "/run/%2e%2e/recipe.yaml")[0] == 404
        assert _get(base + "/lib/")[0] == 404  # no listings
    finally:
        server.shutdown()
        server.server_close()


def test_demo_refuses_what_it_cannot_serve(tmp_path: Path, apps: Path, capsys):
    fake_export(tmp_path / "run", "onnx")
    with pytest.raises(EdgekdError, match=r"no student.manifest.json in .*tflite; export first: `edgekd export .* --target tflite`"):
        make_server(tmp_path / "run", "tflite", port=0, apps_dir=apps)
    manifest = tmp_path / "run" / "exports" / "onnx" / "student.manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "format_version": 2}))
    with pytest.raises(EdgekdError, match="format_version 2; the apps read version 3"):
        make_server(tmp_path / "run", "onnx", port=0, apps_dir=apps)
    shutil.rmtree(apps / "web" / "node_modules" / "@litertjs")
    assert main(["demo", str(tmp_path / "run"), "--apps-dir", str(apps)]) == 2
    assert "lacks @litertjs/core, @litertjs/wasm-utils: run `npm ci` in" in capsys.readouterr().err


def test_demo_command_prints_the_url_and_stops_cleanly_on_ctrl_c(tmp_path: Path, apps: Path):
    fake_export(tmp_path / "run", "onnx")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEKD_APPS": str(apps)}
    # a shell's background job inherits SIGINT ignored (and Python keeps it ignored): give the child the default
    proc = subprocess.Popen([sys.executable, "-m", "edgekd.cli", "demo", str(tmp_path / "run"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        assert line.startswith("edgekd demo: serving") and "http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split(" at ", 1)[1].strip()
        assert _get(url)[0] == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "edgekd demo: stopped" in out and "Traceback" not in err, err


@pytest.mark.parametrize("app,target", [("web", "onnx"), ("android", "tflite"), ("ios", "coreml")])
def test_into_app_copies_model_and_manifest_where_the_app_reads_them(tmp_path: Path, app: str, target: str):
    manifest = fake_export(tmp_path / "run", target, payload=b"v1")
    (tmp_path / "apps" / app).mkdir(parents=True)
    dest = copy_into_app(manifest, app, tmp_path / "apps")
    assert dest == tmp_path / "apps" / app / APP_MODEL_DIRS[app]
    assert sorted(p.name for p in dest.iterdir()) == sorted([f"student.{target}", "student.manifest.json"])
    assert (dest / f"student.{target}").read_bytes() == b"v1"
    # a second copy replaces the first completely (one manifest in the folder) and leaves no temp folders
    (dest / "old.manifest.json").write_text("{}")
    copy_into_app(manifest, app, tmp_path / "apps")
    assert sorted(p.name for p in dest.iterdir()) == sorted([f"student.{target}", "student.manifest.json"])
    assert [p.name for p in dest.parent.iterdir() if p.name.startswith(".")] == []


def test_into_app_refusals(tmp_path: Path):
    manifest = fake_export(tmp_path / "run", "onnx", payload=b"v1")
    with pytest.raises(EdgekdError, match=r"the web app is not at .*apps/web"):
        copy_into_app(manifest, "web", _mkdir(tmp_path / "apps"))
    (tmp_path / "apps" / "ios").mkdir()
    with pytest.raises(EdgekdError, match="the ios app runs coreml models, not onnx: export with --target coreml"):
        copy_into_app(manifest, "ios", tmp_path / "apps")
    (tmp_path / "apps" / "web").mkdir()
    (manifest.parent / "student.onnx").write_bytes(b"changed after export")
    with pytest.raises(EdgekdError, match="does not match its manifest's sha256"):
        copy_into_app(manifest, "web", tmp_path / "apps")
    assert not (tmp_path / "apps" / "web" / "models").exists()
    with pytest.raises(EdgekdError, match=r"no apps folder at .*nowhere \(--apps-dir\)"):
        copy_into_app(manifest, "web", tmp_path / "nowhere")


def test_export_into_app_needs_one_target(tmp_path: Path, capsys):
    assert main(["export", str(tmp_path), "--target", "all", "--into-app", "web"]) == 2
    assert "--into-app copies one export: pass one --target" in capsys.readouterr().err


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
