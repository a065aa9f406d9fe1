"""Property tests: any corruption or truncation of a region is refused with a typed error (never
a crash, a hang or another exception), and any representable dtype and shape round-trips."""

from __future__ import annotations

import mmap
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import seqshm
from seqshm import FormatError, ReadTimeout, _core

pytestmark = pytest.mark.slow

HEADER = _core.HEADER_SIZE
SLOT = _core.abi_layout()["slot"]["size"]
RECORD = np.dtype([("t", "<u8"), ("xyz", "<f4", (3,)), ("ok", "?")])


def _region(dtype: np.dtype, shape: tuple[int, ...], nr_slots: int, writes: int) -> bytes:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "base")
        with seqshm.create(path, dtype, shape, nr_slots=nr_slots, name="base") as w:
            for k in range(writes):
                w.write(np.full(shape, k, dtype) if dtype.names is None else np.zeros(shape, dtype))
        return Path(path).read_bytes()


BASES = {
    "scalar": _region(np.dtype(np.uint64), (16,), 1, 3),
    "record ring": _region(RECORD, (4,), 4, 6),
}


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _read_everything(path: Path) -> None:
    """What a reader does with a channel; exceptions propagate."""
    with seqshm.open(path, timeout=0.005) as r:
        out = r.snapshot()
        assert out.shape == r.shape and out.dtype == r.dtype
        assert out.nbytes == r.payload_size
        r.history()
        r.apply(lambda v: v.tobytes())
        token = r.begin()
        r.view(token).tobytes()
        r.validate(token)


def _control_bytes(base: bytes) -> int:
    """Bytes of the header and the slot control lines."""
    nr_slots = int(np.frombuffer(base, np.uint32, 1, _core.abi_layout()["header"]["nr_slots"])[0])
    return HEADER + nr_slots * SLOT


@pytest.mark.parametrize("base", BASES.values(), ids=BASES.keys())
@given(data=st.data())
def test_corrupt_header_or_slot_lines_is_refused_or_read_consistently(
        workdir: Path, base: bytes, data: st.DataObject) -> None:
    n = _control_bytes(base)
    changes = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)),
                                 min_size=1, max_size=8))
    buf = bytearray(base)
    for offset, value in changes:
        buf[offset] = value
    path = workdir / "corrupt"
    path.write_bytes(buf)
    try:
        _read_everything(path)
    except (FormatError, ReadTimeout):
        pass  # ReadTimeout: a slot's seq was made odd, i.e. mid-write forever


@pytest.mark.parametrize("base", BASES.values(), ids=BASES.keys())
@given(data=st.data())
def test_corrupt_static_field_words_are_refused(workdir: Path, base: bytes,
                                                data: st.DataObject) -> None:
    # Whole words, so that values like 0, 2**31 or all-ones (the dangerous ones) come up.
    layout = _core.abi_layout()["header"]
    names = ["abi_version", "header_size", "region_size", "payload_offset", "payload_size",
             "slot_stride", "nr_slots", "flags", "itemsize", "nr_fields", "ndim"]
    name = data.draw(st.sampled_from(names))
    size = 4 if name in ("abi_version", "header_size", "nr_slots", "flags", "itemsize",
                         "nr_fields", "ndim") else 8
    value = data.draw(st.one_of(st.integers(0, 2**(8 * size) - 1),
                                st.sampled_from([0, 1, 2**(8 * size) - 1, 2**(8 * size - 1),
                                                 4096, 4097, 64, 65])))
    buf = bytearray(base)
    buf[layout[name]:layout[name] + size] = value.to_bytes(size, "little" if np.little_endian
                                                           else "big")
    path = workdir / "words"
    path.write_bytes(buf)
    try:
        _read_everything(path)
    except FormatError:
        pass


@pytest.mark.parametrize("base", BASES.values(), ids=BASES.keys())
@given(length=st.integers(0, max(len(b) for b in BASES.values())))
def test_truncated_file_is_a_format_error(workdir: Path, base: bytes, length: int) -> None:
    path = workdir / "cut"
    path.write_bytes(base[:length])
    if length >= len(base):
        _read_everything(path)
        return
    with pytest.raises(FormatError, match="truncated"):
        _read_everything(path)


@given(data=st.data())
@settings(max_examples=50)
def test_header_scribbled_after_open_never_sends_a_reader_astray(
        workdir: Path, data: st.DataObject) -> None:
    """A reader trusts only its private copy of the header: a writer that later overwrites the
    shared header, head or slot lines can make reads fail (FormatError: a slot no writer
    leaves so, a damaged region) or time out, never crash them."""
    base = BASES["record ring"]
    path = workdir / "scribbled"
    path.write_bytes(base)
    n = _control_bytes(base)
    changes = data.draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)),
                                 min_size=1, max_size=16))
    with seqshm.open(path, timeout=0.005) as r:
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), len(base)) as m:
            for offset, value in changes:
                m[offset] = value
        for call in (r.snapshot, r.history, lambda: r.apply(np.copy), r.begin, r.view):
            try:
                call()
            except (ReadTimeout, FormatError):
                pass
        assert r.head >= 0


# ---------------------------------------------------------------------------------------------
# Round trips over generated dtypes and shapes.

SCALAR_DTYPES = st.sampled_from(["?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2",
                                 "f4", "f8", "c8", "c16"]).map(np.dtype)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=5)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@given(data=st.data(), dtype=SCALAR_DTYPES, shape=SHAPES, nr_slots=st.sampled_from([1, 2, 8]))
@settings(max_examples=60)
def test_any_scalar_array_round_trips(workdir: Path, data: st.DataObject, dtype: np.dtype,
                                      shape: tuple[int, ...], nr_slots: int) -> None:
    values = data.draw(hnp.arrays(dtype, shape))
    path = workdir / "scalar-rt"
    with seqshm.create(path, dtype, shape, nr_slots=nr_slots, overwrite=True) as w, \
            seqshm.open(path) as r:
        w.write(values)
        assert _same(r.snapshot(), values)
        out = np.empty(shape, dtype)
        assert r.snapshot(out) is out and _same(out, values)


@st.composite
def records(draw: st.DrawFn) -> np.dtype:
    names = draw(st.lists(st.text("abcdefghij_", min_size=1, max_size=31), min_size=1,
                          max_size=8, unique=True))
    formats: list[object] = []
    for _ in names:
        base = draw(SCALAR_DTYPES)
        count = draw(st.sampled_from([0, 0, 1, 2, 3, 7]))  # 0: a scalar field
        formats.append(base if count == 0 else (base, (count,)))
    align = draw(st.booleans())
    dt = np.dtype({"names": names, "formats": formats}, align=align)
    extra = draw(st.sampled_from([0, 0, 1, 8, 64]))  # trailing padding
    if extra:
        dt = np.dtype({"names": list(dt.names), "formats": [dt.fields[n][0] for n in dt.names],
                       "offsets": [dt.fields[n][1] for n in dt.names],
                       "itemsize": dt.itemsize + extra})
    if draw(st.booleans()):  # reversed field order with the same offsets
        rev = list(reversed(dt.names))
        dt = np.dtype({"names": rev, "formats": [dt.fields[n][0] for n in rev],
                       "offsets": [dt.fields[n][1] for n in rev], "itemsize": dt.itemsize})
    return dt


@given(data=st.data(), dtype=records(), shape=SHAPES)
@settings(max_examples=60)
def test_any_flat_record_round_trips(workdir: Path, data: st.DataObject, dtype: np.dtype,
                                     shape: tuple[int, ...]) -> None:
    assume(np.prod(shape, dtype=np.int64) * dtype.itemsize < 1 << 20)
    raw = data.draw(st.binary(min_size=dtype.itemsize, max_size=dtype.itemsize))
    values = np.full(shape, np.frombuffer(raw, dtype)[0], dtype)  # every byte, padding too
    path = workdir / "record-rt"
    with seqshm.create(path, dtype, shape, overwrite=True) as w, seqshm.open(path) as r:
        assert r.dtype == dtype and r.dtype.fields == dtype.fields
        w.write(values)
        assert _same(r.snapshot(), values)
