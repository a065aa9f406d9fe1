"""The shared region's layout: the compiled core, the uapi header's static asserts and the bytes
of a real channel file all agree."""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest

import seqshm
from seqshm import _core

UAPI_HEADER = Path(__file__).resolve().parent.parent / "module/include/uapi/linux/seqshm.h"
STRUCTS = {"seqshm_header": "header", "seqshm_slot": "slot", "seqshm_field": "field",
           "seqshm_waiters": "waiters"}


@pytest.fixture(scope="module")
def uapi_text() -> str:
    if not UAPI_HEADER.exists():
        pytest.skip(f"{UAPI_HEADER} is not here (tests run outside the source tree)")
    return UAPI_HEADER.read_text()


def _defines(text: str) -> dict[str, int]:
    out = {}
    for name, value in re.findall(r"^#define\s+(SEQSHM_\w+)\s+(0x[0-9a-fA-F]+|\d+)", text, re.M):
        out[name] = int(value, 0)
    return out


def _number(token: str, defines: dict[str, int]) -> int:
    return int(token, 0) if token[0].isdigit() else defines[token]


@pytest.fixture(scope="module")
def documented(uapi_text: str) -> dict[str, dict[str, int]]:
    """{struct: {field: offset, "sizeof": size}} from the header's __SEQSHM_ASSERT lines."""
    defines = _defines(uapi_text)
    doc: dict[str, dict[str, int]] = {}
    for struct_name, field, value in re.findall(
            r"__SEQSHM_ASSERT\(__builtin_offsetof\(struct (\w+), (\w+)\) == (\w+)", uapi_text):
        doc.setdefault(struct_name, {})[field] = _number(value, defines)
    for struct_name, value in re.findall(
            r"__SEQSHM_ASSERT\(sizeof\(struct (\w+)\) == (\w+)", uapi_text):
        doc.setdefault(struct_name, {})["sizeof"] = _number(value, defines)
    return doc


def _compiled(kind: str, field: str) -> int:
    layout = _core.abi_layout()[kind]
    if field == "sizeof":
        return int(layout["size"])
    return int(layout["size_" if kind == "field" and field == "size" else field])


def test_header_documents_every_shared_struct(documented: dict[str, dict[str, int]]) -> None:
    assert set(STRUCTS) <= set(documented)
    assert documented["seqshm_header"]["sizeof"] == 2048
    assert documented["seqshm_header"]["head"] == 1792


@pytest.mark.parametrize("struct_name", sorted(STRUCTS))
def test_compiled_offsets_equal_the_documented_ones(
        documented: dict[str, dict[str, int]], struct_name: str) -> None:
    kind = STRUCTS[struct_name]
    mismatches = {f: (off, _compiled(kind, f)) for f, off in documented[struct_name].items()
                  if _compiled(kind, f) != off}
    assert not mismatches, f"struct {struct_name}: {{field: (documented, compiled)}} {mismatches}"


def test_module_constants_equal_the_header_defines(uapi_text: str) -> None:
    d = _defines(uapi_text)
    assert seqshm.ABI_VERSION == _core.ABI_VERSION == d["SEQSHM_ABI_VERSION"]
    assert _core.MAGIC == d["SEQSHM_MAGIC"]
    assert _core.ALIGN == d["SEQSHM_ALIGN"]
    assert _core.MAX_SLOTS == d["SEQSHM_MAX_SLOTS"]
    assert _core.MAX_DIMS == d["SEQSHM_MAX_DIMS"]
    assert _core.HEADER_SIZE == _core.SLOTS_OFFSET == 2048


def test_magic_spells_seqshm_in_little_endian_memory() -> None:
    assert struct.pack("<Q", _core.MAGIC) == b"seqshm!\0"


# ---------------------------------------------------------------------------------------------
# The bytes of a real file, read at the documented offsets (not through the reader).

RECORD = np.dtype({"names": ["t", "xyz", "flag"], "formats": ["<u8", ("<f4", (3,)), "u1"],
                   "offsets": [0, 8, 24], "itemsize": 32})


@pytest.fixture
def off(documented: dict[str, dict[str, int]]) -> dict[str, int]:
    return documented["seqshm_header"]


@pytest.fixture
def slot_off(documented: dict[str, dict[str, int]]) -> dict[str, int]:
    return documented["seqshm_slot"]


def _u(fmt: str, buf: bytes, offset: int) -> int:
    return struct.unpack_from("=" + fmt, buf, offset)[0]


def test_created_file_has_the_documented_header_bytes(make_path, off) -> None:
    path = make_path()
    with seqshm.create(path, RECORD, (5, 2), nr_slots=4, name="layout-test"):
        buf = Path(path).read_bytes()
    assert _u("Q", buf, off["magic"]) == _core.MAGIC
    assert _u("I", buf, off["abi_version"]) == 1
    assert _u("I", buf, off["header_size"]) == 2048
    assert _u("Q", buf, off["region_size"]) == len(buf) == os.path.getsize(path)
    assert len(buf) % 4096 == 0
    payload_offset = _u("Q", buf, off["payload_offset"])
    assert payload_offset % 4096 == 0 and payload_offset >= 2048 + 4 * 64
    assert _u("Q", buf, off["payload_size"]) == 5 * 2 * 32
    stride = _u("Q", buf, off["slot_stride"])
    assert stride % 64 == 0 and stride >= 320
    assert payload_offset + 4 * stride <= len(buf)
    assert _u("I", buf, off["nr_slots"]) == 4
    assert _u("I", buf, off["flags"]) == 1  # SEQSHM_F_RECORD
    assert _u("i", buf, off["clock_id"]) == 1  # CLOCK_MONOTONIC
    assert _u("I", buf, off["writer_pid"]) == os.getpid()
    assert buf[off["name"]:off["name"] + 64].rstrip(b"\0") == b"layout-test"
    assert _u("I", buf, off["itemsize"]) == 32
    assert _u("I", buf, off["nr_fields"]) == 3
    assert _u("I", buf, off["ndim"]) == 2
    assert struct.unpack_from("=8Q", buf, off["shape"]) == (5, 2, 0, 0, 0, 0, 0, 0)
    assert _u("Q", buf, off["head"]) == 0


def test_created_file_has_the_documented_field_table(make_path, off, documented) -> None:
    f = documented["seqshm_field"]
    path = make_path()
    with seqshm.create(path, RECORD, 1):
        buf = Path(path).read_bytes()
    table = []
    for i in range(3):
        base = off["fields"] + i * f["sizeof"]
        table.append((buf[base:base + 32].rstrip(b"\0").decode(), _u("I", buf, base + f["offset"]),
                      _u("I", buf, base + f["count"]), chr(buf[base + f["kind"]]),
                      buf[base + f["size"]], buf[base + f["flags"]]))
    array = 1  # SEQSHM_FIELD_F_ARRAY: xyz is a subarray
    assert table == [("t", 0, 1, "u", 8, 0), ("xyz", 8, 3, "f", 4, array),
                     ("flag", 24, 1, "u", 1, 0)]
    unused = buf[off["fields"] + 3 * f["sizeof"]:off["fields"] + 32 * f["sizeof"]]
    assert unused == bytes(len(unused))


def test_scalar_element_is_one_unnamed_field_of_itemsize(make_path, off, documented) -> None:
    f = documented["seqshm_field"]
    path = make_path()
    with seqshm.create(path, np.float32, (3, 4)):
        buf = Path(path).read_bytes()
    base = off["fields"]
    assert _u("I", buf, off["flags"]) == 0
    assert (_u("I", buf, off["itemsize"]), _u("I", buf, off["nr_fields"])) == (4, 1)
    assert buf[base:base + 32] == bytes(32)
    assert (_u("I", buf, base + f["offset"]), _u("I", buf, base + f["count"]),
            chr(buf[base + f["kind"]]), buf[base + f["size"]]) == (0, 1, "f", 4)


def test_head_counts_completed_writes(make_path, off) -> None:
    path = make_path()
    with seqshm.create(path, np.uint64, 8) as w:
        for k in range(1, 6):
            w.write(np.full(8, k, np.uint64))
        assert _u("Q", Path(path).read_bytes(), off["head"]) == 5 == w.seq


def test_one_slot_seq_is_twice_the_writes_and_even(make_path, off, slot_off) -> None:
    path = make_path()
    with seqshm.create(path, np.uint64, 8) as w:
        for k in range(1, 8):
            w.write(np.full(8, k, np.uint64), timestamp_ns=1000 + k)
        buf = Path(path).read_bytes()
    line = off["sizeof"]
    assert _u("I", buf, line + slot_off["seq"]) == 14
    assert _u("Q", buf, line + slot_off["write_seq"]) == 7
    assert _u("Q", buf, line + slot_off["timestamp_ns"]) == 1007


def test_ring_write_k_goes_to_slot_k_mod_n(make_path, off, slot_off) -> None:
    path = make_path()
    with seqshm.create(path, np.uint64, 8, nr_slots=4) as w:
        for k in range(1, 11):
            w.write(np.full(8, k, np.uint64), timestamp_ns=100 * k)
        buf = Path(path).read_bytes()
    payload_offset, stride = _u("Q", buf, off["payload_offset"]), _u("Q", buf, off["slot_stride"])
    for s in range(4):
        line = off["sizeof"] + s * slot_off["sizeof"]
        newest = max(k for k in range(1, 11) if k % 4 == s)
        writes_to_slot = sum(1 for k in range(1, 11) if k % 4 == s)
        assert _u("I", buf, line + slot_off["seq"]) == 2 * writes_to_slot
        assert _u("Q", buf, line + slot_off["write_seq"]) == newest
        assert _u("Q", buf, line + slot_off["timestamp_ns"]) == 100 * newest
        data = np.frombuffer(buf, np.uint64, 8, payload_offset + s * stride)
        assert (data == newest).all()
    assert _u("Q", buf, off["head"]) == 10


def test_payload_sits_at_payload_offset(make_path, off) -> None:
    path = make_path()
    data = np.arange(12, dtype=np.int16).reshape(3, 4)
    with seqshm.create(path, np.int16, (3, 4)) as w:
        w.write(data)
        buf = Path(path).read_bytes()
    start = _u("Q", buf, off["payload_offset"])
    assert buf[start:start + data.nbytes] == data.tobytes()


def test_header_properties_report_what_the_file_holds(make_path) -> None:
    path = make_path()
    with seqshm.create(path, RECORD, (5, 2), nr_slots=2, name="props") as w:
        with seqshm.open(path) as r:
            h = r.header
    assert h["nr_slots"] == 2 and h["name"] == "props" and h["shape"] == (5, 2)
    assert h["itemsize"] == 32 and h["payload_size"] == 320 and h["writer_pid"] == os.getpid()
    assert (r.nr_slots, r.payload_size, r.name, r.shape, r.dtype) == (2, 320, "props", (5, 2),
                                                                      RECORD)
    assert h == w.header


def test_check_header_accepts_what_build_header_makes() -> None:
    element = seqshm._dtype.element_type(RECORD)
    built = _core.build_header("x", 8, (3,), element, 42)
    header, region_size = built.to_bytes(), built.region_size
    assert len(header) == 2048 and struct.unpack_from("=Q", header, 0)[0] == 0  # magic last
    published = struct.pack("=Q", _core.MAGIC) + header[8:]
    h = _core.check_header(published, region_size, "p")
    assert (h["nr_slots"], h["shape"], h["writer_pid"], h["region_size"]) == (8, (3,), 42,
                                                                              region_size)


HEADER_KEYS = ("magic", "abi_version", "header_size", "region_size", "payload_offset",
               "payload_size", "slot_stride", "nr_slots", "flags", "clock_id", "writer_pid",
               "writer_start", "waiters_dev", "waiters_ino", "wake_flags", "writer_pidns",
               "name", "itemsize", "nr_fields", "ndim", "shape", "fields")


def test_header_is_read_by_attribute_and_by_name_alike(make_path) -> None:
    """Reader.header was a dict: its keys and values read the same from the typed Header."""
    with seqshm.create(make_path(), RECORD, (5, 2), nr_slots=2, name="keys") as w, \
            seqshm.open(w.path) as r:
        h = r.header
    assert tuple(h.keys()) == HEADER_KEYS == tuple(h) and len(h) == len(HEADER_KEYS)
    assert dict(h.items()) == {k: getattr(h, k) for k in HEADER_KEYS} == {k: h[k] for k in h}
    assert h == dict(h.items()) and "nr_slots" in h and "head" not in h
    assert (h.name, h.nr_slots, h.shape, h.magic) == ("keys", 2, (5, 2), _core.MAGIC)
    assert h.get("nope") is None and h.get("nope", 7) == 7 and h.get("name") == "keys"
    with pytest.raises(KeyError):
        h["head"]  # not a static field: read Reader.head
    assert tuple(h.values()) == tuple(h[k] for k in HEADER_KEYS)


def test_a_header_is_made_only_by_the_engine() -> None:
    with pytest.raises(TypeError, match="check_header"):
        _core.Header()


def test_reader_header_is_the_one_taken_at_open_not_rebuilt(make_path) -> None:
    with seqshm.create(make_path(), np.uint64, 4) as w, seqshm.open(w.path) as r:
        assert r.header is r.header and w.header is w.header


def test_an_open_and_a_move_to_a_replacement_check_the_header_once_each(
        make_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One header check per open: a reopening reader that moves to the channel that replaced
    its own checks the new header once (it used to check it again after opening it)."""
    calls = []
    real = _core.check_header

    def counted(*args: object) -> _core.Header:
        calls.append(args)
        return real(*args)  # type: ignore[arg-type]

    path = make_path()
    monkeypatch.setattr(_core, "check_header", counted)
    with seqshm.create(path, np.uint64, 4) as w:
        w.write([1, 2, 3, 4])
        r = seqshm.open(path, reopen=True)
    assert len(calls) == 1
    with r, seqshm.create(path, np.uint64, 4, overwrite=True) as w2:
        del calls[:]
        w2.write([5, 6, 7, 8])
        assert r.wait(5) and r.snapshot().tolist() == [5, 6, 7, 8]
        assert len(calls) == 1, calls


def test_create_hands_its_header_to_the_writer_without_reading_it_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """create() builds the header once and the writer takes that object: no pread of the new
    file (it used to write the header, read it back and check it a third time)."""
    reads = []
    real = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        reads.append((fd, n, offset))
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    with seqshm.create(tmp_path / "c", RECORD, 3, nr_slots=4) as w:
        assert w.header.nr_slots == 4 and w.header.magic == _core.MAGIC
        monkeypatch.undo()
        with seqshm.open(w.path) as r:
            assert r.header == w.header
    assert reads == []


def test_dtype_limits_are_the_engines() -> None:
    """_dtype restates the engine's limits (so that _core may import it): tied here."""
    from seqshm import _dtype

    assert (_dtype.FIELD_NAME_MAX, _dtype.MAX_FIELDS) == (_core.FIELD_NAME_MAX, _core.MAX_FIELDS)


def test_a_pickled_header_comes_back_as_the_dict_it_used_to_be(make_path) -> None:
    import pickle

    with seqshm.create(make_path(), np.uint64, 4) as w, seqshm.open(w.path) as r:
        back = pickle.loads(pickle.dumps(r.header))
    assert isinstance(back, dict) and back == r.header and tuple(back) == HEADER_KEYS
