"""The command line's place in the package: above the library (nothing in it imports seqshm.cli;
seqshm.cli never reaches past the library into the engine, _core), and one module per command,
of which a run imports only the chosen one (seqshm list loads no live display, no exporter)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import ENV

from seqshm.cli import COMMANDS

PACKAGE = Path(__file__).resolve().parent.parent / "seqshm"


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, by full name (``from seqshm import cli`` is seqshm.cli)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_the_library_never_imports_the_command_line() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "__main__.py":  # python -m seqshm: the command line's entry point
            continue
        bad = {m for m in _imports(path) if m == "seqshm.cli" or m.startswith("seqshm.cli.")}
        assert not bad, f"{path.name} imports {bad}: the command line sits above the library"


def test_the_command_line_never_imports_the_engine() -> None:
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        assert "seqshm._core" not in _imports(path), (
            f"cli/{path.name} imports seqshm._core: ask the library (Reader, _api) instead")


_RUN = """
import json, sys
from seqshm.cli import main
try:
    main(sys.argv[1:])
except SystemExit:  # --version
    pass
sys.stderr.write("\\nMODULES " + json.dumps(sorted(sys.modules)))
"""


def _modules_of(*args: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _RUN, *args], env=ENV, capture_output=True,
                         text=True, timeout=60)
    line = out.stderr.rpartition("\nMODULES ")[2]
    return set(json.loads(line))


@pytest.mark.parametrize("args", [["list", "--json", "--no-rate"], ["info", "./nonesuch"],
                                  ["--version"]])
def test_a_command_imports_only_its_own_module(args: list[str]) -> None:
    loaded = _modules_of(*args)
    chosen = args[0] if args[0] in COMMANDS else None
    others = {module for name, (module, _) in COMMANDS.items() if name != chosen}
    assert not others & loaded, others & loaded
    # the live display and the exporter's dependencies are the watch's, demo's and export's
    heavy = {"rich.live", "rich.progress", "prometheus_client", "h11", "seqshm.export",
             "seqshm.cli._procstat", "multiprocessing"}
    assert not heavy & loaded, heavy & loaded
