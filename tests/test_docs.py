"""The documentation site (docs/): it builds with warnings as errors, its internal links and
cross-references resolve, and every public Python name and public C function is on it."""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
# The public C headers whose every function the site documents: libseqshm's (when the C
# library is in the tree) and the in-kernel API's.
C_HEADERS = [REPO / "lib" / "include" / "seqshm.h",
             REPO / "module" / "include" / "linux" / "seqshm.h"]
# What builds the site: the `docs` extra of pyproject.toml, which scripts/test installs.
DOCS_PACKAGES = ("sphinx", "myst_parser", "furo", "linuxdoc")


@dataclass
class Site:
    out: Path
    log: str
    returncode: int

    def inventory(self) -> dict[str, set[str]]:
        """{role: names} of every object the site documents (its objects.inv)."""
        from sphinx.util.inventory import InventoryFile  # noqa: PLC0415

        with open(self.out / "objects.inv", "rb") as f:
            inv = InventoryFile.load(f, "", lambda base, uri: uri)
        return {role: set(items) for role, items in inv.data.items()} if hasattr(
            inv, "data") else {role: set(items) for role, items in inv.items()}


def build_site(out: Path) -> Site:
    """sphinx-build -W --keep-going -n (nitpicky): any warning, an unresolved cross-reference
    or internal link among them, fails the build. In a child process from the docs folder, so
    that the seqshm it documents is the installed package, as the tests' own."""
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html",
           "-d", str(out / ".doctrees"), str(DOCS), str(out)]
    p = subprocess.run(cmd, cwd=DOCS, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONSAFEPATH": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    return Site(out, p.stdout + p.stderr, p.returncode)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    missing = [m for m in DOCS_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"Sphinx is absent ({', '.join(missing)} not installed): the site is built "
                    "where the docs extra is installed (pip install '.[docs]'; scripts/test does)")
    return build_site(tmp_path_factory.mktemp("site"))


def test_site_builds_without_warnings(site: Site) -> None:
    assert site.returncode == 0 and "WARNING" not in site.log and "ERROR" not in site.log, (
        f"sphinx-build -W --keep-going -n docs failed:\n{site.log}")


def public_modules() -> list[str]:
    """seqshm and each of its submodules whose name is public (no leading underscore)."""
    import seqshm  # noqa: PLC0415

    names = ["seqshm"]
    for m in pkgutil.iter_modules(seqshm.__path__):
        if not m.name.startswith("_"):
            names.append(f"seqshm.{m.name}")
    return names


def public_python_names() -> list[str]:
    """Every public module, and every name in the __all__ of each: what the site must show."""
    names = []
    for modname in public_modules():
        mod = importlib.import_module(modname)
        names.append(modname)
        names += [f"{modname}.{n}" for n in getattr(mod, "__all__", ())]
    return names


def undocumented_python(inventory: dict[str, set[str]], names: list[str]) -> list[str]:
    """The names of ``names`` that no py: entry of the site's inventory documents."""
    documented = set().union(*(v for k, v in inventory.items() if k.startswith("py:")))
    return [n for n in names if n not in documented]


def _strip_c(text: str) -> str:
    """C source without comments, preprocessor lines, string literals' contents and the
    bodies of braces (struct members, inline functions' bodies), each body left as ';'."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r"^\s*#(?:[^\n]*\\\n)*[^\n]*", " ", text, flags=re.M)
    text = re.sub(r'extern\s+"C"\s*\{', " ", text)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    while True:
        stripped = re.sub(r"\{[^{}]*\}", ";", text)
        if stripped == text:
            return stripped.replace("}", ";")
        text = stripped


def c_functions(header: Path) -> list[str]:
    """The functions a C header declares or defines (static inline ones too), by name."""
    names = []
    for stmt in _strip_c(header.read_text()).split(";"):
        stmt = " ".join(stmt.split())
        if not stmt or stmt.startswith("typedef"):
            continue
        # specifiers and a return type, the name, the parameters, then attributes
        # (__acquires(x), __attribute__((...))) at most
        m = re.match(r"^(?:[A-Za-z_][\w]*[\s*]+)+?\**\s*([A-Za-z_]\w*)\s*\((.*)$", stmt)
        if m and m.group(1) not in ("__attribute__", "__SEQSHM_ASSERT", "_Static_assert",
                                    "static_assert"):
            names.append(m.group(1))
    return names


def undocumented_c(inventory: dict[str, set[str]], names: list[str]) -> list[str]:
    documented = inventory.get("c:function", set()) | inventory.get("c:macro", set())
    return [n for n in names if n not in documented]


def test_every_public_python_name_is_documented(site: Site) -> None:
    """seqshm.__all__ and each public submodule's __all__, by their public names (not by the
    private modules that define them, which move)."""
    assert site.returncode == 0, site.log
    missing = undocumented_python(site.inventory(), public_python_names())
    assert not missing, (f"public names with no documentation on the site: {missing} "
                         "(add them to docs/python-api.rst or docs/python-submodules.rst)")


def test_every_public_c_function_is_documented(site: Site) -> None:
    assert site.returncode == 0, site.log
    inventory = site.inventory()
    missing = {str(h.relative_to(REPO)): undocumented_c(inventory, c_functions(h))
               for h in C_HEADERS if h.exists()}
    assert not any(missing.values()), (
        f"C functions with no documentation on the site: {missing} (each needs a kernel-doc "
        "comment the site's C API pages include: docs/c-api.rst, docs/kernel-api.rst)")


def test_the_c_librarys_header_is_where_the_site_reads_it() -> None:
    """docs/c-api.rst shows a note instead of the reference while lib/ is not in the tree;
    once it is, the header must be at the path the page reads."""
    if (REPO / "lib").exists():
        assert C_HEADERS[0].is_file(), f"lib/ exists but {C_HEADERS[0]} does not (docs/c-api.rst)"


def test_the_checks_see_an_undocumented_name(site: Site) -> None:
    """The two checks above can fail: a name taken out of the site's inventory is reported."""
    assert site.returncode == 0, site.log
    inventory = site.inventory()
    names = public_python_names()
    py_less = {k: v - {"seqshm.Reader"} for k, v in inventory.items()}
    assert undocumented_python(py_less, names) == ["seqshm.Reader"]
    kernel = c_functions(REPO / "module" / "include" / "linux" / "seqshm.h")
    c_less = {k: v - {"seqshm_publish"} for k, v in inventory.items()}
    assert undocumented_c(c_less, kernel) == ["seqshm_publish"]


def test_c_functions_are_parsed_from_the_headers(tmp_path: Path) -> None:
    """The header parser finds prototypes over several lines, with attributes, pointer
    returns, static inline definitions, inside extern "C", and nothing else."""
    h = tmp_path / "x.h"
    h.write_text('/* f(int) in a comment */\n#define M(x) ((x) + 1)\n#ifdef __cplusplus\n'
                 'extern "C" {\n#endif\nstruct s { int a; int (*cb)(int); };\n'
                 "typedef int (*fn_t)(void *);\nint seqshm_a(int x,\n\tint y);\n"
                 "void *seqshm_b(struct s *p) __acquires(p);\n"
                 "static inline int seqshm_c(void)\n{\n\treturn f(1);\n}\n"
                 "const char *seqshm_d(void) __attribute__((pure));\n"
                 "#ifdef __cplusplus\n}\n#endif\n")
    assert c_functions(h) == ["seqshm_a", "seqshm_b", "seqshm_c", "seqshm_d"]
    kernel = c_functions(REPO / "module" / "include" / "linux" / "seqshm.h")
    assert "seqshm_channel_create" in kernel and "seqshm_write_end" in kernel
