"""The package's layering, read from the source with `ast` (every import, inside functions too): which part may
import which (docs/architecture.md), engine imports only under engines/<engine>/, and no import cycles."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]

# part -> the parts of glm_plugin it may import (besides itself); "root" is glm_plugin/__init__.py (the version).
ALLOWED = {
    "settings": set(),
    "formats": set(),
    "checkpoint": set(),
    "kernels": {"settings", "checkpoint", "root"},
    "engines": {"settings", "formats", "checkpoint", "kernels", "root"},
    "command": {"settings", "formats", "checkpoint", "root"},
    "root": set(),
}


def modules(folder: str, package: str) -> dict[str, pathlib.Path]:
    out = {}
    for path in (ROOT / folder).rglob("*.py"):
        parts = path.relative_to(ROOT / folder).with_suffix("").parts
        parts = parts[:-1] if parts[-1] == "__init__" else parts
        out[".".join((package, *parts)) if package else ".".join(parts)] = path
    return out


def imports(name: str, path: pathlib.Path, known: dict) -> set[str]:
    """The modules of `known` that `name` imports anywhere in its source, and the top-level names of the rest."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != name:
                found.add(target)
    return found


def graph(folder: str, package: str) -> dict[str, set[str]]:
    known = modules(folder, package)
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One path per strongly connected group of more than one module."""
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    return found


def part(module: str) -> str:
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "root"


def test_each_part_imports_only_the_parts_below_it():
    wrong = sorted(f"{a} -> {b}" for a, targets in graph("glm_plugin", "glm_plugin").items() for b in targets
                   if b.startswith("glm_plugin") and part(b) != part(a) and part(b) not in ALLOWED[part(a)])
    assert not wrong, wrong


def test_engine_imports_only_in_their_adapter():
    wrong = []
    for a, targets in graph("glm_plugin", "glm_plugin").items():
        for engine in ("vllm", "sglang"):
            if any(t == engine or t.startswith(engine + ".") for t in targets) and \
                    not a.startswith(f"glm_plugin.engines.{engine}"):
                wrong.append(f"{a} imports {engine}")
    assert not wrong, wrong


def test_no_import_cycles_in_the_package_or_bench():
    for folder, package in (("glm_plugin", "glm_plugin"), ("bench", "")):
        edges = graph(folder, package)
        assert not cycles(edges), (folder, cycles(edges))


def test_the_checker_sees_a_cycle_and_an_upward_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert part("glm_plugin.kernels.ops") == "kernels" and "engines" not in ALLOWED["kernels"]
