"""Make docs/images/web-demo.png: the web app in headless Chromium running an O2MKD student of the shared
Fashion-MNIST teacher (two students copied from the teacher, init: teacher, so the images are real garments
without training), exported to ONNX, DDIM-10 in the browser, followed by a short benchmark (10 runs).

    PYTHONPATH=$PWD .venv/bin/python scripts/web_demo_screenshot.py [--seed 3] [--out docs/images/web-demo.png]

Needs ../shared/teachers/fmnist-ddpm-s, Debian chromium, PyPI playwright and apps/web/node_modules.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT.parent / "shared" / "teachers" / "fmnist-ddpm-s"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def make_run(folder: Path, steps: int) -> Path:
    import torch

    from edgekd.recipe import Recipe, validate_mapping
    from edgekd.rundir import RunDir
    from edgekd.students import save_student
    from edgekd.students.o2mkd import build_o2mkd_student
    from edgekd.teachers.diffusers_teacher import load_teacher

    recipe = validate_mapping({"name": "web-demo", "run_dir": str(folder), "teacher": {"path": str(TEACHER), "steps": steps},
                               "student": {"kind": "o2mkd", "boundaries": [500], "init": "teacher"},
                               "method": {"name": "o2mkd"}, "export": {"parity_samples": 1}}, Recipe, "screenshot")
    run = RunDir(folder)
    run.path.mkdir(parents=True)
    run.save_recipe(recipe)
    teacher = load_teacher(str(TEACHER))
    torch.manual_seed(0)
    save_student(build_o2mkd_student(recipe.student, teacher, steps, recipe.teacher.timestep_spacing).eval(), run.student_dir)
    return run.path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "docs" / "images" / "web-demo.png"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    from edgekd.apps.demo import make_server
    from edgekd.cli import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run", args.steps)
        assert cli(["export", str(run), "--target", "onnx", "--exporter", "torchscript"]) == 0
        server, url = make_server(run, "onnx", port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS, headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 760})
                page.goto(url + "&device=headless%20Chromium%20(CI%20machine)")
                page.wait_for_function("window.edgekd && (window.edgekd.ready || window.edgekd.error)")
                page.evaluate(f"window.edgekd.generate({args.seed})")  # draws the image
                page.evaluate(f"window.edgekd.benchmark({{runs: 10, warmup: 2, seed: {args.seed}}})")  # median, p90
                page.screenshot(path=args.out)
                browser.close()
        finally:
            server.shutdown()
            server.server_close()
    print(args.out)


if __name__ == "__main__":
    main()
