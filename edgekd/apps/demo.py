"""``edgekd demo RUN``: serve the web app and the run's exported model on 127.0.0.1, with the headers wasm threads need.

The page (apps/web) runs the model in the browser: onnxruntime-web for .onnx, LiteRT.js for .tflite. Browsers hand
out SharedArrayBuffer (so multi-threaded wasm) only to cross-origin isolated pages, which is what the
Cross-Origin-Opener-Policy / Cross-Origin-Embedder-Policy headers here declare. The server binds 127.0.0.1 only:
a demo is not something to expose on a network. Standard library only (no torch import), so it starts at once.
"""

from __future__ import annotations

import functools
import json
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from edgekd.apps import app_dir
from edgekd.errors import EdgekdError

HOST = "127.0.0.1"
DEFAULT_PORT = 8765
RUN_PREFIX = "/run"  # the run's exports/<target>/ appear under this URL path
WEB_TARGETS = ("onnx", "tflite")
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
NPM_PACKAGES = ("onnxruntime-web", "@litertjs/core", "@litertjs/wasm-utils")


class DemoHandler(SimpleHTTPRequestHandler):
    """Static files from the web app, and the exports under /run/; no directory listings, no caching."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".wasm": "application/wasm",
                      ".mjs": "text/javascript", ".js": "text/javascript", ".json": "application/json",
                      ".onnx": "application/octet-stream", ".tflite": "application/octet-stream"}

    def __init__(self, *args, web: Path, exports: Path, quiet: bool = True, **kwargs) -> None:
        self.web, self.exports, self.quiet = web, exports, quiet
        super().__init__(*args, directory=str(web), **kwargs)

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0].split("#", 1)[0]
        base, rest = self.web, path
        if clean == RUN_PREFIX or clean.startswith(RUN_PREFIX + "/"):
            base, rest = self.exports, path[len(RUN_PREFIX):] or "/"
        saved, self.directory = self.directory, str(base)
        try:
            return super().translate_path(rest)  # the stdlib's normalisation: no '..' escapes base
        finally:
            self.directory = saved

    def list_directory(self, path):  # noqa: ANN001 - stdlib signature
        self.send_error(404, "no directory listings")
        return None

    def end_headers(self) -> None:
        for key, value in ISOLATION_HEADERS.items():
            self.send_header(key, value)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        if not self.quiet:
            super().log_message(format, *args)


class DemoServer(ThreadingHTTPServer):
    """A browser that drops a connection mid-file (reload, tab closed) is normal, not a traceback."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001 - stdlib signature
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def check_web_app(web: Path) -> None:
    """The page needs its npm packages served beside it (no CDN): say how to install them when they are missing."""
    missing = [p for p in NPM_PACKAGES if not (web / "node_modules" / p / "package.json").is_file()]
    if missing:
        raise EdgekdError(f"{web}/node_modules lacks {', '.join(missing)}: run `npm ci` in {web} "
                          "(scripts/setup.sh does it)")


def pick_manifest(run_path: Path, target: str, manifest: str | None) -> Path:
    """The export's manifest v3 or v4 (default student.manifest.json); a missing export names the command that makes
    it."""
    if target not in WEB_TARGETS:
        raise EdgekdError(f"the web demo runs --target onnx or tflite, not '{target}'")
    run = Path(run_path)
    if not (run / "recipe.yaml").is_file():
        raise EdgekdError(f"{run} is not an edgekd run (no recipe.yaml)")
    folder = run / "exports" / target
    path = folder / (manifest or "student.manifest.json")
    if not path.is_file():
        found = sorted(p.name for p in folder.glob("*.manifest.json")) if folder.is_dir() else []
        hint = f"manifests there: {', '.join(found)} (pick one with --manifest)" if found and manifest is None and \
            path.name not in found else f"export first: `edgekd export {run} --target {target}`"
        raise EdgekdError(f"no {path.name} in {folder}; {hint}")
    try:
        version = json.loads(path.read_text()).get("format_version")
    except ValueError as exc:
        raise EdgekdError(f"manifest {path} is not valid JSON ({exc})") from None
    if version not in (3, 4):  # the web app reads v4's pipeline too (apps/web/lib/sampler.js)
        raise EdgekdError(f"manifest {path} has format_version {version!r}; the apps read version 3 (the web app also "
                          f"4): re-export with `edgekd export {run} --target {target}`")
    return path


def make_server(run_path: Path, target: str = "onnx", port: int = DEFAULT_PORT, manifest: str | None = None,
                apps_dir: str | Path | None = None, quiet: bool = True) -> tuple[DemoServer, str]:
    """A server bound to 127.0.0.1 (port 0: a free one) and the page URL that opens the run's model."""
    web = app_dir("web", apps_dir)
    check_web_app(web)
    manifest_file = pick_manifest(Path(run_path), target, manifest)
    handler = functools.partial(DemoHandler, web=web, exports=manifest_file.parent, quiet=quiet)
    try:
        server = DemoServer((HOST, port), handler)
    except OSError as exc:
        raise EdgekdError(f"cannot listen on {HOST}:{port} ({exc.strerror}); pass another --port (0 picks a free one)") from None
    url = f"http://{HOST}:{server.server_address[1]}/?manifest={RUN_PREFIX}/{manifest_file.name}"
    return server, url


def serve(run_path: Path, target: str = "onnx", port: int = DEFAULT_PORT, manifest: str | None = None,
          apps_dir: str | Path | None = None) -> int:
    """Serve until Ctrl-C, then close the socket and return 0."""
    server, url = make_server(run_path, target, port, manifest, apps_dir)
    print(f"edgekd demo: serving {run_path} ({target}) at {url}", flush=True)
    print("edgekd demo: open it in a browser; Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("edgekd demo: stopped", flush=True)
    return 0
