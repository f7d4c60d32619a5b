#!/usr/bin/env python3
"""Check the iOS app's Swift without a Swift compiler (none runs on this Linux machine).

- syntax: every .swift file parses with tree-sitter-swift with no ERROR or MISSING node (a syntax check, not a
  type check: a wrong method name still passes, which is what the contract test and the Mac build are for);
- Contract names: every ``Contract.x`` used anywhere is declared in EdgekdDemo/Core/Contract.swift;
- the core is platform-free: EdgekdDemo/Core imports Foundation only (it is also the EdgekdCore package target).

    python apps/ios/tools/check_swift.py [APP_DIR]     # exit 0 when clean, 1 with one line per problem
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

APP = Path(__file__).resolve().parent.parent


def parser():
    import tree_sitter_swift
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_swift.language()))


def syntax_errors(path: Path, p=None) -> list[str]:
    """'file:line:col: ERROR|MISSING near ...' for every bad node in ``path``."""
    p = p or parser()
    tree = p.parse(path.read_bytes())
    problems: list[str] = []
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            kind = "MISSING " + node.type if node.is_missing else "ERROR"
            text = node.text.decode(errors="replace").splitlines()[0][:50] if node.text else ""
            problems.append(f"{path}:{node.start_point[0] + 1}:{node.start_point[1] + 1}: {kind} near {text!r}")
        elif node.has_error:
            stack.extend(node.children)
    return sorted(problems)


def contract_problems(app: Path) -> list[str]:
    declared = set(re.findall(r"static let (\w+)", (app / "EdgekdDemo/Core/Contract.swift").read_text()))
    problems = []
    for path in sorted(app.rglob("*.swift")):
        for name in sorted(set(re.findall(r"\bContract\.(\w+)", path.read_text())) - declared):
            problems.append(f"{path}: Contract.{name} is not declared in Contract.swift")
    return problems


def platform_problems(app: Path) -> list[str]:
    problems = []
    for path in sorted((app / "EdgekdDemo/Core").glob("*.swift")):
        for module in re.findall(r"^\s*import\s+(\w+)", path.read_text(), re.M):
            if module != "Foundation":
                problems.append(f"{path}: the core imports {module}; it must stay Foundation-only")
    return problems


def check(app: Path = APP) -> tuple[list[Path], list[str]]:
    files = sorted(app.rglob("*.swift"))
    p = parser()
    problems = [e for f in files for e in syntax_errors(f, p)]
    return files, problems + contract_problems(app) + platform_problems(app)


def main(argv: list[str]) -> int:
    app = Path(argv[0]) if argv else APP
    files, problems = check(app)
    for line in problems:
        print(line)
    print(f"check_swift: {len(files)} files, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
