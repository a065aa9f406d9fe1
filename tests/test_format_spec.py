"""docs/format.md, the channel format's specification, says what the uapi header says: every
offset, size and constant in its tables is compiled against the header (and compared with the
extension's own layout, seqshm._core.abi_layout())."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO / "docs" / "format.md"
UAPI_DIR = REPO / "module" / "include" / "uapi"
SCALARS = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "s32": 4, "s64": 8, "char": 1}
# Each table's struct, named by the {c:struct} directive above it; "field" is how the spec
# writes struct seqshm_field as a type.
STRUCT_SIZES_BY_TYPE = {"field": "seqshm_field"}


@dataclass(frozen=True)
class Row:
    offset: int
    size: int
    type: str
    field: str


def spec_tables() -> dict[str, list[Row]]:
    """{struct name: its rows} for each field table of the spec: the first table with the
    columns offset | size | type | field after a ```{c:struct} NAME``` directive."""
    text = SPEC.read_text()
    tables: dict[str, list[Row]] = {}
    for m in re.finditer(r"```\{c:struct\} (\w+)", text):
        rest = text[m.end():]
        head = re.search(r"^\| offset \| size \| type \| field \|.*\n\|[-:| ]+\|\n", rest, re.M)
        assert head, f"no field table after the {m.group(1)} directive in {SPEC}"
        rows = []
        for line in rest[head.end():].splitlines():
            if not line.startswith("|"):
                break
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows.append(Row(int(cells[0]), int(cells[1]), cells[2], cells[3].strip("`")))
        tables[m.group(1)] = rows
    return tables


def spec_constants() -> dict[str, str]:
    """{name: value as written} of the spec's constants table and kinds table."""
    text = SPEC.read_text()
    consts = dict(re.findall(r"^\| `(SEQSHM_\w+)` \| `([^`]+)` \|", text, re.M))
    kinds = re.findall(r"^\| `(SEQSHM_KIND_\w+)` \| `'(.)'` \((0x[0-9a-f]+)\)", text, re.M)
    for name, char, code in kinds:
        assert ord(char) == int(code, 16), f"{name}: '{char}' is not {code}"
        consts[name] = code
    return consts


def type_size(t: str, tables: dict[str, list[Row]]) -> int:
    m = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", t)
    assert m, f"type {t!r} in {SPEC}"
    base, n = m.group(1), int(m.group(2) or 1)
    if base in SCALARS:
        return SCALARS[base] * n
    rows = tables[STRUCT_SIZES_BY_TYPE[base]]
    return (rows[-1].offset + rows[-1].size) * n


def test_the_spec_has_every_structure() -> None:
    assert set(spec_tables()) == {"seqshm_header", "seqshm_field", "seqshm_slot",
                                  "seqshm_waiters", "seqshm_ioc_info", "seqshm_ioc_stats"}


def test_each_table_is_contiguous_and_its_types_have_its_sizes() -> None:
    """Every byte of each structure is in exactly one row, in order, and each row's size is
    its type's: so the offsets and sizes cannot disagree with each other."""
    tables = spec_tables()
    for struct, rows in tables.items():
        at = 0
        for row in rows:
            assert row.offset == at, f"{struct}.{row.field} at {row.offset}, expected {at}"
            assert row.size == type_size(row.type, tables), f"{struct}.{row.field}: {row}"
            at += row.size


def test_the_offsets_are_the_extensions() -> None:
    """The Python extension's compiled layout (no compiler needed: the wheel's tests too)."""
    core = pytest.importorskip("seqshm._core")
    layout = core.abi_layout()
    names = {"seqshm_header": "header", "seqshm_slot": "slot", "seqshm_field": "field",
             "seqshm_waiters": "waiters", "seqshm_ioc_info": "ioc_info"}
    checked = 0
    for struct, rows in spec_tables().items():
        if struct not in names:
            continue
        known = layout[names[struct]]
        assert rows[-1].offset + rows[-1].size == known["size"], struct
        for row in rows:
            key = "size_" if struct == "seqshm_field" and row.field == "size" else row.field
            if key in known and key != "size":
                assert row.offset == known[key], f"{struct}.{row.field}"
                checked += 1
    assert checked >= 30


def _compile_and_run(tmp_path: Path, body: str) -> list[str]:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler: the offsets were checked against abi_layout() only")
    src = tmp_path / "spec.c"
    src.write_text("#include <stddef.h>\n#include <stdio.h>\n#include <linux/seqshm.h>\n"
                   "#define M(s, f) printf(\"%zu %zu\\n\", offsetof(struct s, f), "
                   "sizeof(((struct s *)0)->f))\n"
                   f"int main(void)\n{{\n{body}\treturn 0;\n}}\n")
    exe = tmp_path / "spec"
    subprocess.run([cc, "-std=gnu11", "-I", str(UAPI_DIR), "-o", str(exe), str(src)],
                   check=True, capture_output=True, text=True)
    return subprocess.run([str(exe)], check=True, capture_output=True,
                          text=True).stdout.splitlines()


def test_the_tables_are_the_headers(tmp_path: Path) -> None:
    """offsetof and sizeof of every row's member, as the C compiler lays the uapi header out,
    and sizeof of each structure."""
    tables = spec_tables()
    body, want = "", []
    for struct, rows in tables.items():
        for row in rows:
            body += f"\tM({struct}, {row.field});\n"
            want.append(f"{row.offset} {row.size}")
        end = rows[-1].offset + rows[-1].size
        body += f'\tprintf("%zu %zu\\n", sizeof(struct {struct}), sizeof(struct {struct}));\n'
        want.append(f"{end} {end}")
    got = _compile_and_run(tmp_path, body)
    labels = [f"{s}.{r.field}" for s, rows in tables.items() for r in [*rows, Row(0, 0, "", "")]]
    wrong = [(label, w, g) for label, w, g in zip(labels, want, got, strict=True) if w != g]
    assert not wrong, f"(member, spec's 'offset size', header's): {wrong}"


def test_the_constants_are_the_headers(tmp_path: Path) -> None:
    consts = spec_constants()
    assert len(consts) >= 25
    body = "".join(f'\tprintf("%llu\\n", (unsigned long long)({name}));\n' for name in consts)
    got = _compile_and_run(tmp_path, body)
    wrong = [(name, v, g) for (name, v), g in zip(consts.items(), got, strict=True)
             if int(v, 0) != int(g)]
    assert not wrong, f"(constant, spec's value, header's): {wrong}"
