"""The import graph between edgekd's packages: no new circles.

Every ``import edgekd.X`` / ``from edgekd.X import`` (at module level or inside a function: a lazy import is still a
dependency) from package A to package B is an edge A -> B (a top-level module such as ``recipe.py`` is a package of
its own). The graph must be acyclic once the edges in KNOWN_BACK_EDGES are removed; each of those closes a circle
that exists today and names the fix (docs/design.md, "Layers"). A new circle fails here, and so does a known edge
that has gone (delete it from the list: the list only shrinks).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "edgekd"

# edges that close a circle today, each with what removes it
KNOWN_BACK_EDGES = {
    ("data", "recipe"): "data/__init__.py types its config with recipe.DataConfig: move DataConfig into data/",
    ("train", "recipe"): "train/loop.py reads recipe.TrainConfig: move TrainConfig beside the loop",
    ("students", "compress"): "pruned UNets are rebuilt by compress/prune.py: move build_pruned_unet into models/",
    ("teachers", "compress"): "a pruned teacher loads through compress/prune.py: as students -> compress",
    ("teachers", "recipe"): "teachers/train_ddpm.py reads its recipe: move it above recipe (a command, not a layer)",
    ("export", "compress"): "int8 export calibrates through compress/quantize.py: move the ONNX quantizer and "
                            "calibration below export (a quantize/ layer)",
    ("methods", "profile"): "methods use profile/classifier.py for FID previews: move FID features to metrics/",
}


def package_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("").parts
    return rel[0]


def import_edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in ROOT.rglob("*.py"):
        src = package_of(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] != "edgekd" or len(parts) < 2:
                    continue
                dst = parts[1]
                if dst != src:
                    edges[(src, dst)].append(str(path.relative_to(ROOT.parent)))
    return edges


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state:
                found = visit(w)
                if found:
                    return found
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state:
            found = visit(v)
            if found:
                return found
    return None


def test_no_new_circle_between_packages() -> None:
    edges = import_edges()
    graph: dict[str, set[str]] = defaultdict(set)
    for (a, b) in edges:
        if (a, b) not in KNOWN_BACK_EDGES:
            graph[a].add(b)
    cycle = find_cycle(graph)
    if cycle:
        where = {f"{a} -> {b}": edges[(a, b)][:3] for a, b in zip(cycle, cycle[1:])}
        raise AssertionError(f"import circle {' -> '.join(cycle)}: {where}")


def test_every_known_back_edge_still_closes_a_circle() -> None:
    """The list only shrinks: an edge that has gone, or that no longer closes a circle, must leave it."""
    edges = import_edges()
    gone = sorted(k for k in KNOWN_BACK_EDGES if k not in edges)
    assert not gone, f"these edges are gone: remove them from KNOWN_BACK_EDGES: {gone}"
    for known in KNOWN_BACK_EDGES:
        graph: dict[str, set[str]] = defaultdict(set)
        for (a, b) in edges:
            if (a, b) not in KNOWN_BACK_EDGES or (a, b) == known:
                graph[a].add(b)
        assert find_cycle(graph), f"{known} closes no circle any more: remove it from KNOWN_BACK_EDGES"


def test_the_new_layers_import_nothing_above_them() -> None:
    """manifest, models and runtime are the bottom the apps' contract rests on: they never import export,
    compress, profile, methods or the commands."""
    above = {"export", "compress", "profile", "methods", "distill", "pipeline", "cli", "recipe", "rundir"}
    bad = {k: v for k, v in import_edges().items() if k[0] in {"manifest", "models", "runtime"} and k[1] in above}
    assert not bad, bad


def test_the_checker_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
