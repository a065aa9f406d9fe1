"""The Python package keeps its shape: arrows between modules run one way (CLI -> Python API ->
Cython engine), no circles, the reader and the writer apart, the wake-up path in its own
modules, test hooks out of shipped code, no module over 600 lines. The C side's shape is
tests/test_one_protocol.py; this is its Python twin, read from the import statements."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "seqshm"
MAX_LINES = 600
# The engine holds the hot path and every C struct in one module, on purpose (a split costs a
# call on the hot path): the one file allowed past MAX_LINES.
LONG_BY_DESIGN = {"seqshm/_core.pyx"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    """Every Python and Cython module of the package by dotted name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*"))
            if p.suffix in (".py", ".pyx") and "__pycache__" not in p.parts}


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _from(base: str, names: list[str]) -> Iterator[str]:
    """What ``from base import names`` depends on: each name that is a module of the package
    (``from seqshm import _core`` is an arrow to seqshm._core, not to the package), and
    ``base`` itself when some name is not (a name defined in base's code)."""
    mods = sources()
    subs = [f"{base}.{n}" for n in names if f"{base}.{n}" in mods]
    yield from subs
    if len(subs) < len(names):
        yield base


def _targets(node: ast.Import | ast.ImportFrom, here: str, is_package: bool) -> Iterator[str]:
    """The seqshm modules an import statement depends on (relative imports resolved against
    ``here``)."""
    if isinstance(node, ast.Import):
        for a in node.names:
            yield a.name
        return
    base = node.module or ""
    if node.level:
        pkg = here.split(".") if is_package else here.split(".")[:-1]
        pkg = pkg[:len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([base] if base else []))
    yield from _from(base, [a.name for a in node.names])


def imports(name: str, path: Path, annotations: bool = False) -> list[tuple[str, bool]]:
    """(module imported, at import time?) for each seqshm import in the module, skipping
    those under `if TYPE_CHECKING:` (annotations only, never executed). An import inside a
    function runs later, on demand: an arrow, but not a link of an import-time circle."""
    text = path.read_text()
    if path.suffix == ".pyx":  # Cython: `import x`, `from x import y`, `cimport` lines
        found = re.findall(r"^\s*(?:from\s+([\w.]+)\s+c?import\s+([\w, ]+)|c?import\s+([\w.]+))",
                           text, re.M)
        pyx: list[tuple[str, bool]] = []
        for frm, names, mod in found:
            if mod:
                pyx.append((mod, True))
            else:
                pyx += [(m, True) for m in _from(frm, [n.strip() for n in names.split(",")])]
        return [(m, t) for m, t in pyx if m.split(".")[0] == "seqshm"]
    tree = ast.parse(text, str(path))
    out: list[tuple[str, bool]] = []

    def walk(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child) and not annotations:
                for sub in child.orelse:
                    walk(sub, top)
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                out.extend((t, top) for t in _targets(child, name, path.name == "__init__.py"))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                walk(child, False)
            else:
                walk(child, top)

    walk(tree, True)
    mods = sources()
    return [(m, t) for m, t in out if m in mods]


def graph(at_import_only: bool = False, annotations: bool = False) -> dict[str, set[str]]:
    mods = sources()
    return {m: {t for t, top in imports(m, p, annotations)
                if t != m and (top or not at_import_only)}
            for m, p in mods.items()}


def reaches(g: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = list(g.get(start, ()))
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(g.get(m, ()))
    return seen


def in_cli(m: str) -> bool:
    return m == "seqshm.cli" or m.startswith("seqshm.cli.") or m == "seqshm.__main__"


def test_the_package_has_the_modules_these_rules_name() -> None:
    """The rules below name modules; a rename must update them, not silently pass them by."""
    mods = sources()
    for m in ("seqshm._core", "seqshm._reader", "seqshm._writer", "seqshm._wait",
              "seqshm._sidecar", "seqshm.cli", "seqshm._metrics", "seqshm.export", "seqshm.otel",
              "seqshm._hooks", "seqshm._cpustat"):
        assert m in mods, f"{m} is gone: update tests/test_house.py"


def test_no_import_time_circles() -> None:
    g = graph(at_import_only=True)
    circles = sorted(m for m in g if m in reaches(g, m))
    assert not circles, f"modules on an import-time circle: {circles}"


def test_the_engine_imports_nothing_above_it() -> None:
    """_core.pyx is the bottom of the Python house: what it imports (error types, the dtype
    rules) imports no module that needs the engine, and none of the API or the CLI."""
    g = graph()
    below = reaches(g, "seqshm._core")
    above = sorted(m for m in below if "seqshm._core" in g[m] or m == "seqshm"
                   or m in ("seqshm._api", "seqshm._reader", "seqshm._writer", "seqshm._wait",
                            "seqshm._sidecar") or in_cli(m))
    assert not above, above


@pytest.mark.parametrize("a,b", [("seqshm._reader", "seqshm._writer"),
                                 ("seqshm._writer", "seqshm._reader")])
def test_the_reader_and_the_writer_do_not_import_each_other(a: str, b: str) -> None:
    """What both need (the sidecar's files, liveness, new files) has its own module."""
    assert b not in graph()[a]


@pytest.mark.parametrize("m", ["seqshm._wait", "seqshm._sidecar"])
def test_the_wake_up_path_sits_below_the_reader_and_the_writer(m: str) -> None:
    """_wait.py is a mixin of Reader: it names the reader's hooks in a typing.Protocol, so
    not even its annotations import the reader (a real import would close a circle);
    _sidecar.py is the files both ends use."""
    above = {"seqshm", "seqshm._reader", "seqshm._writer", "seqshm._api"}
    assert not graph(annotations=True)[m] & above


def test_the_library_never_imports_the_command_line() -> None:
    g = graph()
    offenders = {m: sorted(filter(in_cli, g[m])) for m in g
                 if not in_cli(m) and any(in_cli(t) for t in g[m])}
    assert not offenders, offenders


def test_the_command_line_reaches_the_engine_only_through_the_library() -> None:
    """No command reads raw region memory or the engine's constants: the Reader does."""
    g = graph()
    offenders = {m: "seqshm._core" for m in g if in_cli(m) and "seqshm._core" in g[m]}
    assert not offenders, offenders


@pytest.mark.parametrize("m", ["seqshm._metrics", "seqshm.export", "seqshm.otel"])
def test_the_exporters_do_not_depend_on_the_demo(m: str) -> None:
    """The cpustat record they recognise is seqshm._cpustat, tied to the kernel's struct (it
    was seqshm.telemetry, the demo's publisher)."""
    assert not any(in_cli(t) or t == "seqshm.telemetry" for t in reaches(graph(), m))


# The test kit: a userspace pattern writer for tests of programs that read seqshm, which
# may use the hooks (documented as such); nothing the library imports may.
TEST_KIT = {"seqshm.testing", "seqshm._hooks"}


def test_test_hooks_stay_out_of_shipped_modules() -> None:
    """The benchmark and test hooks (_core._bench_*) are reached only through seqshm._hooks:
    `import seqshm`, the command line and the exporters never load it, and no other module
    names a hook."""
    g = graph()
    users = sorted(m for m in g if "seqshm._hooks" in g[m] and m not in TEST_KIT)
    assert not users, users
    for root in ("seqshm", "seqshm.cli", "seqshm.export", "seqshm.otel"):
        assert not TEST_KIT & reaches(g, root), root
    bench = re.compile(r"\b_bench_\w+")
    for m, p in sources().items():
        if m not in ("seqshm._core", "seqshm._hooks"):
            assert not bench.search(p.read_text()), f"{m} uses a _bench_ hook"


@pytest.mark.parametrize("path", sorted(
    p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("*")
    if p.suffix in (".py", ".pyx") and "__pycache__" not in p.parts))
def test_no_module_is_longer_than_its_subject_needs(path: str) -> None:
    n = len((REPO / path).read_text().splitlines())
    assert n <= MAX_LINES or path in LONG_BY_DESIGN, f"{path}: {n} lines (> {MAX_LINES})"


def test_each_module_says_what_it_is_for_in_its_first_line() -> None:
    missing = []
    for m, p in sources().items():
        text = p.read_text()
        doc = ast.get_docstring(ast.parse(text)) if p.suffix == ".py" else None
        first = text.lstrip().splitlines()[0] if text.strip() else ""
        if not (doc or first.startswith("#")):
            missing.append(m)
    assert not missing, missing


_RUN = """
import json, sys
from seqshm.cli import main
try:
    main(sys.argv[1:])
except SystemExit:  # --version
    pass
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("args", [["list", "--json", "--no-rate"], ["info", "./nonesuch"],
                                  ["--version"]])
def test_a_command_imports_only_its_own_module(args: list[str], tmp_path: Path) -> None:
    """`seqshm list` must not pay for rich's live display, prometheus_client or the recorder:
    only the chosen command's module is imported (pip's way)."""
    from seqshm.cli import COMMANDS

    out = subprocess.run([sys.executable, "-c", _RUN, *args], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, check=False)
    loaded = set(json.loads(out.stderr.rpartition("\nMODULES ")[2]))
    chosen = args[0] if args[0] in COMMANDS else None
    others = {module for name, (module, _) in COMMANDS.items() if name != chosen}
    assert not others & loaded, others & loaded
    # the live display and the exporter's dependencies are the watch's, demo's and export's
    heavy = {"rich.live", "rich.progress", "prometheus_client", "h11", "seqshm.export",
             "seqshm.cli._procstat", "multiprocessing", "pyarrow"}
    assert not heavy & loaded, heavy & loaded
