"""The import layers, read from the source (every import statement, including those inside
functions): no import cycles between the project's modules; `engines` imports neither
`realtime` nor `train`; `realtime` imports no `train` module (the CLI names the training
commands as strings and imports one only to run it); `posestream` is only a face over
realtime.api."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("posestream", "engines", "realtime", "train", "web_viewer")


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (a package's __init__ as the package name)."""
    files = {}
    for top in PACKAGES:
        for f in (REPO / top).rglob("*.py"):
            parts = f.relative_to(REPO).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, f in files.items():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            graph[mod].update(n for n in names if n in files and n != mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_layers():
    graph = import_graph()
    for mod, deps in graph.items():
        top = mod.split(".")[0]
        tops = {d.split(".")[0] for d in deps}
        if top == "engines":
            assert not tops & {"realtime", "train", "posestream"}, (mod, deps)
        if top == "realtime":
            assert "train" not in tops, (mod, deps)
        if top in ("engines", "realtime", "train"):
            assert "posestream" not in tops or mod == "realtime.cli", (mod, deps)


def test_the_checker_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
