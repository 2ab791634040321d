"""The package's layers: every import points down (or sideways inside a layer), and none goes in a circle.

The order is docs/architecture.md's: the entry points (cli, server, options,
demo, testing) over ``api/`` over ``serving/`` over ``lifecycle/`` over
``execution/`` over ``platforms/`` over the foundation (``codecs/``,
``protos/``, ``errors``, ``dtypes``). ``client/``, ``convert/`` and ``bench/``
stand beside the server: they use the foundation only (``bench/`` also ``client/``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "modelserve"

# Higher ranks may import lower ones; a layer may import itself.
RANKS = {
    "entry": 7,
    "api": 6,
    "serving": 5,
    "lifecycle": 4,
    "execution": 3,
    "platforms": 2,
    "codecs": 1,
    "protos": 1,
    "errors": 1,
    "dtypes": 1,
    "signatures": 1,
    "storage": 1,
    "budget": 1,
    "observe": 1,
    "client": 6,
    "convert": 6,
    "bench": 6,
}
ENTRY = {
    "__init__",
    "__main__",
    "cli",
    "server",
    "options",
    "demo",
    "testing",
    "frontends",
    "frontend",
    "processes",
    "ray",
}
# What users run beside the server: the client uses the foundation only; convert also loads what
# it wrote with the platforms, to check it.
BESIDE = {"client": 1, "convert": 2, "bench": 1}
# What stands beside the server may use another such part: the bench sends its requests with the client.
BESIDE_USES = {"bench": {"client"}}


def layer(module: str) -> str:
    """``modelserve.api.tfs_rest`` -> ``api``; ``modelserve.cli`` -> ``entry``."""
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else "__init__"
    return "entry" if head in ENTRY else head


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every ``modelserve`` module that ``path`` imports, at any depth of the file (lazy imports too)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("modelserve")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("modelserve"):
                found |= {f"{target}.{a.name}" if _is_module(f"{target}.{a.name}") else target for a in node.names}
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_file_is_in_a_known_layer() -> None:
    unknown = {module_name(p) for p in SOURCES if layer(module_name(p)) not in RANKS}
    assert not unknown, f"put these in a layer (and in docs/architecture.md): {sorted(unknown)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    own = layer(module_name(path))
    upward = []
    for target in imports(path):
        theirs = layer(target)
        if theirs == own or target == "modelserve" or theirs in BESIDE_USES.get(own, ()):
            continue
        if (
            (own in BESIDE and RANKS[theirs] > BESIDE[own])
            or (theirs in BESIDE and own not in ("entry", *BESIDE))
            or RANKS[theirs] > RANKS[own]
        ):
            upward.append(target)
    assert not upward, f"{module_name(path)} ({own}) imports from above or beside it: {sorted(upward)}"


def test_no_import_cycles() -> None:
    graph = {module_name(p): imports(p) for p in SOURCES}
    # modelserve/__init__ re-exports the client lazily; packages importing their own modules are fine.
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph or nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own modules
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import cycles: {cycles}"
