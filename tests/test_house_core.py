"""The shape of the library's core, read from its import statements (as test_one_protocol.py
reads the C side): the reader and the writer never import each other, the wake-up path
(_wait, _sidecar) sits below the Reader, the engine imports none of the modules built on it,
module-level imports form no cycle, and no core module outgrows one file's worth."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "seqshm"
#: The core modules this test holds to a size (_core.pyx, the engine, is the one exception:
#: the hot path must stay in one module).
CORE = ["_api", "_dtype", "_errors", "_files", "_lifecycle", "_reader", "_sidecar", "_types",
        "_wait", "_writer"]
MAX_LINES = 600

# module -> modules of seqshm it must never import, at any level (TYPE_CHECKING included)
FORBIDDEN = {
    "_reader": {"_writer"},
    "_writer": {"_reader", "_wait"},
    "_wait": {"_reader", "_writer", "_api"},
    "_sidecar": {"_reader", "_writer", "_wait", "_api"},
    "_lifecycle": {"_reader", "_writer", "_wait", "_api"},
    "_files": {"_reader", "_writer", "_wait", "_sidecar", "_api", "_core"},
}
ENGINE_MAY_NOT = {"_api", "_reader", "_writer", "_wait", "_sidecar", "_lifecycle", "_files",
                  "cli"}


def seqshm_imports(tree: ast.AST, module_level_only: bool = False) -> set[str]:
    """The seqshm modules ``tree`` imports (``from seqshm import _x``, ``from seqshm._x import
    y``, ``import seqshm._x``). ``module_level_only``: leave out imports inside functions and
    under ``if TYPE_CHECKING:``, which do not run when the module loads."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if (module_level_only and isinstance(child, ast.If)
                    and "TYPE_CHECKING" in ast.unparse(child.test)):
                continue
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                parts = child.module.split(".")
                if parts[0] == "seqshm":
                    if len(parts) > 1:
                        found.add(parts[1])
                    else:
                        found.update(a.name for a in child.names)
            elif isinstance(child, ast.Import):
                for a in child.names:
                    parts = a.name.split(".")
                    if parts[0] == "seqshm" and len(parts) > 1:
                        found.add(parts[1])
            visit(child)

    visit(tree)
    return found


def parse(module: str) -> ast.AST:
    return ast.parse((PACKAGE / f"{module}.py").read_text(), f"{module}.py")


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_a_core_module_imports_none_of_the_modules_above_it(module: str) -> None:
    bad = seqshm_imports(parse(module)) & FORBIDDEN[module]
    assert not bad, f"seqshm/{module}.py imports {sorted(bad)}"


def test_the_engine_imports_none_of_the_modules_built_on_it() -> None:
    text = (PACKAGE / "_core.pyx").read_text()
    imported = set(re.findall(r"^\s*(?:from|c?import)\s+seqshm\.(\w+)", text, flags=re.M))
    imported |= {n.strip() for line in re.findall(r"^\s*from\s+seqshm\s+c?import\s+(.+)$",
                                                   text, flags=re.M)
                 for n in line.split(",")}
    assert not imported & ENGINE_MAY_NOT, sorted(imported & ENGINE_MAY_NOT)


def test_module_level_imports_of_the_package_form_no_cycle() -> None:
    graph = {p.stem: seqshm_imports(ast.parse(p.read_text()), module_level_only=True)
             for p in PACKAGE.glob("*.py")}

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    return [*path, nxt]
                if nxt not in path:
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = [c for m in sorted(graph) if (c := cycle_from(m))]
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", CORE)
def test_no_core_module_is_over_600_lines(module: str) -> None:
    n = len((PACKAGE / f"{module}.py").read_text().splitlines())
    assert n <= MAX_LINES, f"seqshm/{module}.py has {n} lines"
