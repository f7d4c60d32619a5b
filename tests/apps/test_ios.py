"""The iOS app, checked without a Swift compiler (none here): every Swift file parses with tree-sitter-swift (no
ERROR/MISSING node), the Contract names it uses exist, the core stays Foundation-only, and the Xcode project is
a consistent OpenStep plist pointing at the app folder. A broken copy must fail. The numeric contract with the
exported .mlpackage is tests/apps/test_contract.py.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tree_sitter", reason="tree-sitter not installed (pip install -e '.[test]')")
pytest.importorskip("tree_sitter_swift", reason="tree-sitter-swift not installed (pip install -e '.[test]')")

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "ios"
_spec = importlib.util.spec_from_file_location("edgekd_check_swift", APP / "tools" / "check_swift.py")
check_swift = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_swift)


def test_every_swift_file_parses_and_uses_declared_contract_names() -> None:
    files, problems = check_swift.check(APP)
    names = {f.relative_to(APP).as_posix() for f in files}
    assert {"EdgekdDemo/EdgekdDemoApp.swift", "EdgekdDemo/ContentView.swift", "EdgekdDemo/CoreMLGraphs.swift",
            "EdgekdDemo/Core/Manifest.swift", "EdgekdDemo/Core/PortableNoise.swift", "EdgekdDemo/Core/Sampler.swift",
            "Package.swift", "Tests/EdgekdCoreTests/GoldenTests.swift"} <= names
    assert problems == []


def test_broken_copies_fail(tmp_path: Path) -> None:
    app = tmp_path / "ios"
    shutil.copytree(APP, app)
    sampler = app / "EdgekdDemo/Core/Sampler.swift"
    sampler.write_text(sampler.read_text().replace("onStep?(i + 1, s.steps)\n            }", "onStep?(i + 1, s.steps)\n", 1))
    view = app / "EdgekdDemo/ContentView.swift"
    view.write_text(view.read_text().replace("await model.generate()", "await model.generate(", 1))
    model = app / "EdgekdDemo/DemoModel.swift"
    model.write_text(model.read_text().replace("Contract.manifestFile", "Contract.manifestFiles", 1))
    core = app / "EdgekdDemo/Core/Pixels.swift"
    core.write_text("import UIKit\n" + core.read_text())
    _, problems = check_swift.check(app)
    text = "\n".join(problems)
    assert re.search(r"Sampler\.swift:\d+:\d+: MISSING \}", text), text
    assert re.search(r"ContentView\.swift:\d+:\d+: MISSING \)", text), text
    assert "Contract.manifestFiles is not declared" in text
    assert "Pixels.swift: the core imports UIKit" in text
    assert check_swift.main([str(app)]) == 1


# ------------------------------------------------------------------------------ the Xcode project (OpenStep plist)

_TOKEN = re.compile(r'\s*(?:(//[^\n]*|/\*.*?\*/)|("(?:[^"\\]|\\.)*")|([{}();=,])|([^\s{}();=,"]+))', re.S)


def parse_openstep(text: str):
    """A small parser for the old-style plist Xcode writes (dicts, arrays, strings); comments dropped."""
    tokens = [m.group(2) or m.group(3) or m.group(4) for m in _TOKEN.finditer(text) if not m.group(1)]
    tokens = [t for t in tokens if t is not None]
    pos = 0

    def value():
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "{":
            out = {}
            while tokens[pos] != "}":
                key = value()
                assert tokens[pos] == "=", f"expected = after {key!r}"
                pos += 1
                out[key] = value()
                assert tokens[pos] == ";", f"expected ; after {key!r}"
                pos += 1
            pos += 1
            return out
        if tok == "(":
            items = []
            while tokens[pos] != ")":
                items.append(value())
                if tokens[pos] == ",":
                    pos += 1
            pos += 1
            return items
        return tok[1:-1] if tok.startswith('"') else tok

    root = value()
    assert pos == len(tokens), "trailing tokens after the root dictionary"
    return root


def test_xcode_project_is_consistent() -> None:
    text = (APP / "EdgekdDemo.xcodeproj/project.pbxproj").read_text()
    assert text.startswith("// !$*UTF8*$!")
    project = parse_openstep(text)
    objects = project["objects"]
    ids = set(objects)

    def refs(value):  # every object id mentioned anywhere must exist
        if isinstance(value, dict):
            for v in value.values():
                yield from refs(v)
        elif isinstance(value, list):
            for v in value:
                yield from refs(v)
        elif isinstance(value, str) and re.fullmatch(r"[0-9A-F]{24}", value):
            yield value

    assert set(refs(objects)) | {project["rootObject"]} <= ids
    root = objects[project["rootObject"]]
    assert root["isa"] == "PBXProject"
    (target,) = [objects[t] for t in root["targets"]]
    assert target["productType"] == "com.apple.product-type.application"
    groups = [objects[g] for g in target["fileSystemSynchronizedGroups"]]
    assert [g["path"] for g in groups] == ["EdgekdDemo"] and (APP / "EdgekdDemo").is_dir()
    assert "@main" in (APP / "EdgekdDemo/EdgekdDemoApp.swift").read_text()
    for config_id in objects[target["buildConfigurationList"]]["buildConfigurations"]:
        settings = objects[config_id]["buildSettings"]
        assert settings["PRODUCT_BUNDLE_IDENTIFIER"] == "dev.edgekd.demo"
        assert settings["INFOPLIST_KEY_UIFileSharingEnabled"] == "YES"  # the benchmark JSON reaches the Files app
    # the asset folder `edgekd export --into-app ios` writes into is inside the synchronized folder
    assert (APP / "EdgekdDemo/Resources/edgekd").is_dir()


def test_project_parser_rejects_a_broken_project() -> None:
    text = (APP / "EdgekdDemo.xcodeproj/project.pbxproj").read_text()
    with pytest.raises((AssertionError, IndexError)):
        parse_openstep(text.replace("isa = PBXNativeTarget;", "isa = PBXNativeTarget", 1))


# ------------------------------------------------------------------------------ review fixes, checked on the syntax tree
# No Swift compiler runs here, so these read the parsed Swift (tree-sitter) for the structure of two fixes; the
# behaviour itself is in Tests/EdgekdCoreTests (testNaNIsZeroAndInfinitiesClip), which `swift test` runs on a Mac.


def _functions(path: Path) -> dict[str, object]:
    tree = check_swift.parser().parse(path.read_bytes())
    found, stack = {}, [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "function_declaration":
            name = next(c for c in node.children if c.type == "simple_identifier").text.decode()
            found[name] = node
        stack.extend(node.children)
    return found


def _statements(fn) -> list:
    body = next(c for c in fn.children if c.type == "function_body")
    return next(c for c in body.children if c.type == "statements").children


def _guards_returning_silently(fn) -> list[str]:
    """guard ... else { return } with nothing else in the else block: the action ends and the user sees nothing."""
    out, stack = [], [fn]
    while stack:
        node = stack.pop()
        if node.type == "guard_statement":
            block = [c for c in node.children if c.type == "statements"]
            if block and block[-1].text.decode().strip() == "return":
                out.append(node.text.decode())
        stack.extend(node.children)
    return out


def test_to_pixel_maps_nan_before_the_uint8_conversion() -> None:
    """UInt8(Float.nan) traps, and min/max pass NaN through: the first statement must send NaN to 0."""
    fn = _functions(APP / "EdgekdDemo/Core/Pixels.swift")["toPixel"]
    first, *rest = [s for s in _statements(fn) if s.type != "comment"]
    assert first.type == "guard_statement", first.text
    condition = " ".join(first.text.decode().split())
    assert condition.startswith("guard !x.isNaN else") and condition.endswith("{ return 0 }"), condition
    text = "".join(s.text.decode() for s in rest)
    assert text.index("min(max(x, -1), 1)") < text.index("UInt8(")  # infinities clip before the conversion


def test_generate_and_benchmark_never_end_silently() -> None:
    """A failed benchmark drops the graphs (to time a fresh load): Generate must load them again or say why, and
    the benchmark's failure must reach the status line."""
    fns = _functions(APP / "EdgekdDemo/DemoModel.swift")
    for name in ("generate", "benchmark"):
        assert _guards_returning_silently(fns[name]) == [], name
    generate = fns["generate"].text.decode()
    assert "try await loadedGraphs(m)" in generate and "graphs else" not in generate
    loaded = fns["loadedGraphs"].text.decode()
    assert "if let loaded = graphs { return loaded }" in loaded and "graphs = loaded" in loaded
    assert 'status = "Benchmark failed: \\(error)"' in fns["benchmark"].text.decode()
