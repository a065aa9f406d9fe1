"""Bad files, bad headers and bad arguments get typed exceptions that say what and which file."""

from __future__ import annotations

import multiprocessing
import os
import signal
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from children import HANG_GUARD_S

import seqshm
from seqshm import FormatError, VersionError, _core, _hooks
from seqshm._dtype import element_type
from seqshm.testing import StalledWriter

LAYOUT = _core.abi_layout()
H = LAYOUT["header"]
F = LAYOUT["field"]
SLOT = LAYOUT["slot"]
FMT = {"magic": "Q", "abi_version": "I", "header_size": "I", "region_size": "Q",
       "payload_offset": "Q", "payload_size": "Q", "slot_stride": "Q", "nr_slots": "I",
       "flags": "I", "clock_id": "i", "writer_pid": "I", "itemsize": "I", "nr_fields": "I",
       "ndim": "I", "head": "Q"}
RECORD = np.dtype([("a", "<u4"), ("b", "<u4")])
ARRAY = 1  # SEQSHM_FIELD_F_ARRAY


def header(dtype: Any = np.uint64, dims: tuple[int, ...] = (8,), slots: int = 1,
           **fields: Any) -> tuple[bytearray, int]:
    """A valid published header (magic set) for ``dtype``, ``dims`` and ``slots``, with the
    raw header ``fields`` patched in; and its region size."""
    built = _core.build_header("t", slots, dims, element_type(dtype), 0)
    region_size = built.region_size
    h = bytearray(built.to_bytes())
    struct.pack_into("=Q", h, H["magic"], _core.MAGIC)
    patch(h, **fields)
    return h, region_size


def patch(h: bytearray, **fields: Any) -> bytearray:
    for name, value in fields.items():
        if name == "shape":
            struct.pack_into("=8Q", h, H["shape"], *value, *[0] * (8 - len(value)))
        elif name == "name":
            h[H["name"]:H["name"] + 64] = value.ljust(64, b"\0")
        else:
            struct.pack_into("=" + FMT[name], h, H[name], value)
    return h


def patch_field(h: bytearray, i: int, *, name: bytes | None = None, **values: int) -> bytearray:
    base = H["fields"] + i * F["size"]
    if name is not None:
        h[base:base + 32] = name.ljust(32, b"\0")
    fmts = {"offset": "I", "count": "I", "kind": "B", "size_": "B", "flags": "B"}
    for k, v in values.items():
        struct.pack_into("=" + fmts[k], h, base + F[k], v)
    return h


def check(h: bytes | bytearray, file_size: int = 0) -> _core.Header:
    return _core.check_header(bytes(h), file_size, "/the/file")


def expect(exc: type[Exception], match: str) -> Any:
    """pytest.raises that also wants the file named in the message."""
    return pytest.raises(exc, match=rf"^/the/file: .*{match}")


# ---------------------------------------------------------------------------------------------
# Opening files that are not channels.

def test_missing_file_is_file_not_found_naming_it(tmp_path: Path) -> None:
    path = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError) as e:
        seqshm.open(path)
    assert e.value.filename == path


def test_missing_file_error_says_what_to_do(tmp_path: Path) -> None:
    # was the bare "No such file or directory"
    with pytest.raises(FileNotFoundError, match="start the channel's writer") as e:
        seqshm.open(tmp_path / "nope")
    assert e.value.filename == str(tmp_path / "nope")


def test_a_relative_path_from_a_removed_directory_says_to_give_an_absolute_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # was the bare "No such file or directory" of os.getcwd(), naming no file
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    calls: list[Callable[[], Any]] = [lambda: seqshm.open("./chan"),
                                      lambda: seqshm.snapshot("./chan"),
                                      lambda: seqshm.create("./chan", np.float64, 4)]
    for call in calls:
        with pytest.raises(FileNotFoundError, match="give an absolute path") as e:
            call()
        assert e.value.filename == "./chan"


def test_an_empty_name_is_no_channel_not_the_search_directory() -> None:
    # was FormatError for /dev/shm/ ("neither a regular file ..."): '' joined to the directory
    for call in (seqshm.open, seqshm.snapshot):
        with pytest.raises(FileNotFoundError, match="name is empty"):
            call("")


@pytest.mark.parametrize("name", [".", ".."])
def test_a_dot_name_is_no_channel_not_the_search_directory(name: str) -> None:
    # was FormatError for /dev/shm ("neither a regular file ..."), and IsADirectoryError for
    # '/dev/shm/..': the bare names of the search directory itself and of its parent
    for call in (seqshm.open, seqshm.snapshot):
        with pytest.raises(FileNotFoundError, match="a directory's name, not a channel's") as e:
            call(name)
        assert e.value.filename == name


def test_a_device_that_is_not_seqshm_says_so() -> None:
    # was "cannot map the header page: No such device"
    with pytest.raises(OSError, match="not a seqshm device.*/dev/shm") as e:
        seqshm.open("/dev/null")
    assert e.value.filename == "/dev/null"


def test_bare_name_that_exists_nowhere_is_file_not_found(shm_name: str) -> None:
    with pytest.raises(FileNotFoundError):
        seqshm.open(shm_name)


def test_directory_is_a_format_error(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="neither a regular file nor a seqshm device") as e:
        seqshm.open(tmp_path)
    assert e.value.path == str(tmp_path)


def test_empty_file_is_truncated(tmp_path: Path) -> None:
    p = tmp_path / "empty"
    p.touch()
    with pytest.raises(FormatError, match="truncated: 0 bytes") as e:
        seqshm.open(p)
    assert e.value.path == str(p) and str(p) in str(e.value)


def test_file_shorter_than_a_header_is_truncated(tmp_path: Path) -> None:
    p = tmp_path / "short"
    h, _ = header()
    p.write_bytes(bytes(h[:2047]))
    with pytest.raises(FormatError, match="truncated: 2047 bytes"):
        seqshm.open(p)


def test_file_shorter_than_its_region_is_truncated(tmp_path: Path) -> None:
    p = tmp_path / "cut"
    h, region_size = header()
    p.write_bytes(bytes(h) + bytes(region_size - len(h) - 4096))
    with pytest.raises(FormatError, match=f"truncated: the header says {region_size} bytes"):
        seqshm.open(p)


def test_text_file_is_not_a_seqshm_region(tmp_path: Path) -> None:
    p = tmp_path / "text"
    p.write_text("hello world\n" * 1000)
    with pytest.raises(FormatError, match="not a seqshm region") as e:
        seqshm.open(p)
    assert not isinstance(e.value, VersionError)


def test_unpublished_region_without_magic_is_not_a_seqshm_region(tmp_path: Path) -> None:
    built = _core.build_header("t", 1, (8,), element_type(np.uint64), 0)
    raw = built.to_bytes()
    p = tmp_path / "unpublished"
    p.write_bytes(raw + bytes(built.region_size - len(raw)))
    with pytest.raises(FormatError, match="magic is 0"):
        seqshm.open(p)


def test_char_device_of_zeros_is_not_a_seqshm_region() -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    with pytest.raises(FormatError, match="not a seqshm region"):
        seqshm.open("/dev/zero")


def test_char_device_that_cannot_be_mapped_is_an_os_error_naming_it() -> None:
    if not os.path.exists("/dev/null"):
        pytest.skip("no /dev/null")
    with pytest.raises(OSError) as e:
        seqshm.open("/dev/null")
    assert e.value.filename == "/dev/null"


def _open_in_child(path: str) -> str:
    """seqshm.open(path) in a forked child, bounded: the exception type's name or 'ok'."""
    ctx = multiprocessing.get_context("fork")
    r, w = ctx.Pipe(duplex=False)

    def child() -> None:
        try:
            seqshm.open(path, timeout=0.1).close()
            w.send("ok")
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            w.send(type(e).__name__)

    p = ctx.Process(target=child, daemon=True)
    p.start()
    w.close()
    p.join(5)
    if p.exitcode is None:
        p.kill()
        p.join()
        return "hang"
    return str(r.recv()) if r.poll() else f"exit {p.exitcode}"


def test_fifo_is_a_format_error_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert _open_in_child(str(fifo)) == "FormatError"


def test_create_overwriting_a_fifo_replaces_it_without_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    ctx = multiprocessing.get_context("fork")

    def child() -> None:
        seqshm.create(fifo, np.int8, 1, overwrite=True).close()

    p = ctx.Process(target=child, daemon=True)
    p.start()
    p.join(5)
    if p.exitcode is None:
        p.kill()
        p.join()
    assert p.exitcode == 0
    with seqshm.open(fifo) as r:
        assert r.dtype == np.int8


def test_path_may_be_bytes_or_pathlike(make_path: Callable[[], str]) -> None:
    path = make_path()
    with seqshm.create(path, np.int8, 1) as w:
        w.write([3])
        with seqshm.open(os.fsencode(path)) as r1, seqshm.open(Path(path)) as r2:
            assert r1.snapshot()[0] == r2.snapshot()[0] == 3
            assert r1.path == r2.path == path


# ---------------------------------------------------------------------------------------------
# Each check of seqshm_header_check() (src/protocol.c), on a header copy.

def test_valid_header_passes() -> None:
    h, size = header()
    assert check(h, size)["nr_slots"] == 1


def test_wrong_magic_is_a_format_error() -> None:
    with expect(FormatError, "not a seqshm region"):
        check(header(magic=0x1234)[0])


def test_byte_swapped_magic_says_other_byte_order() -> None:
    swapped = struct.unpack("<Q", struct.pack(">Q", _core.MAGIC))[0]
    with expect(FormatError, "other byte order"):
        check(header(magic=swapped)[0])


@pytest.mark.parametrize("version", [0, 2, 0xFFFFFFFF])
def test_other_abi_version_is_a_version_error(version: int) -> None:
    with expect(VersionError, f"ABI version {version}"):
        check(header(abi_version=version)[0])


def test_version_error_is_a_format_error() -> None:
    assert issubclass(VersionError, FormatError) and issubclass(FormatError, ValueError)


def test_wrong_header_size() -> None:
    with expect(FormatError, "header_size is 4096"):
        check(header(header_size=4096)[0])


def test_unknown_flags() -> None:
    with expect(FormatError, "unknown flags 0x2"):
        check(header(flags=3)[0])


@pytest.mark.parametrize("n", [0, 3, 6, 2048])
def test_nr_slots_not_a_power_of_two_up_to_the_max(n: int) -> None:
    with expect(FormatError, f"nr_slots is {n}"):
        check(header(nr_slots=n)[0])


@pytest.mark.parametrize("offset", [0, 2048, 4097])
def test_payload_offset_unaligned_or_over_the_slot_lines(offset: int) -> None:
    with expect(FormatError, f"payload_offset {offset}"):
        check(header(payload_offset=offset)[0])


def test_payload_offset_must_clear_every_slot_line() -> None:
    # 64 slots of 64 B end at 2048 + 4096: an offset of 4096 overlaps them.
    h, _ = header(slots=64)
    with expect(FormatError, "after the 64 slot lines"):
        check(patch(h, payload_offset=4096))


def test_zero_payload_size() -> None:
    with expect(FormatError, "payload_size is 0"):
        check(header(payload_size=0)[0])


@pytest.mark.parametrize("stride", [0, 32, 65, 128 + 8])
def test_slot_stride_not_a_cache_line_multiple_at_least_the_payload(stride: int) -> None:
    with expect(FormatError, f"slot_stride {stride}"):
        check(header(slots=2, slot_stride=stride)[0])


def test_region_size_unaligned() -> None:
    with expect(FormatError, "region_size 8193 is not a multiple"):
        check(header(region_size=8193)[0])


def test_slots_beyond_the_region() -> None:
    h, size = header(slots=4)
    with expect(FormatError, "do not fit in region_size"):
        check(patch(h, region_size=size - 4096))


def test_payload_beyond_the_region() -> None:
    h, size = header()  # payload at 4096, region 8192
    with expect(FormatError, "do not fit"):
        check(patch(h, payload_offset=8192))


def test_slot_arithmetic_overflow_is_caught() -> None:
    with expect(FormatError, "do not fit"):
        check(header(slots=4, slot_stride=1 << 62)[0])


def test_region_larger_than_the_file_is_truncated() -> None:
    h, size = header()
    with expect(FormatError, f"truncated: the header says {size} bytes, the file has 4096"):
        check(h, 4096)


@pytest.mark.parametrize("name", [b"x" * 64, b"tab\there", b"\x80high"])
def test_channel_name_unterminated_or_not_printable(name: bytes) -> None:
    with expect(FormatError, "channel name"):
        check(header(name=name)[0])


def test_empty_channel_name_is_allowed() -> None:
    assert check(header(name=b"")[0])["name"] == ""


def test_too_many_dimensions() -> None:
    with expect(FormatError, "ndim is 9"):
        check(header(ndim=9)[0])


def test_shape_set_beyond_ndim() -> None:
    with expect(FormatError, r"shape\[1\] is set beyond ndim 1"):
        check(header(shape=(8, 1))[0])


def test_zero_length_dimension() -> None:
    with expect(FormatError, r"shape\[0\] is 0"):
        check(header(shape=(0,))[0])


def test_shape_product_overflow() -> None:
    with expect(FormatError, r"shape\[1\] is 16"):
        check(header(ndim=2, shape=(1 << 62, 16))[0])


def test_zero_itemsize() -> None:
    with expect(FormatError, "itemsize is 0"):
        check(header(itemsize=0)[0])


def test_payload_size_not_itemsize_times_elements() -> None:
    with expect(FormatError, "payload_size 64 is not itemsize 4 times"):
        check(header(itemsize=4)[0])


@pytest.mark.parametrize("n", [0, 33])
def test_nr_fields_out_of_range(n: int) -> None:
    with expect(FormatError, f"nr_fields is {n}"):
        check(header(nr_fields=n)[0])


def test_scalar_element_with_two_fields() -> None:
    with expect(FormatError, "exactly one field, not 2"):
        check(header(nr_fields=2)[0])


@pytest.mark.parametrize("kind,size", [(ord("x"), 8), (ord("O"), 8), (ord("u"), 3),
                                       (ord("f"), 1), (ord("f"), 16), (ord("c"), 4),
                                       (ord("b"), 2), (0, 0)])
def test_field_kind_and_size_no_numpy_scalar_has(kind: int, size: int) -> None:
    h, _ = header(RECORD, (2,))
    with expect(FormatError, "which no NumPy scalar has"):
        check(patch_field(h, 1, kind=kind, size_=size))


@pytest.mark.parametrize("name", [b"", b"y" * 32, b"bad\nname"])
def test_record_field_name_empty_unterminated_or_not_printable(name: bytes) -> None:
    h, _ = header(RECORD, (2,))
    with expect(FormatError, "field 1's name is empty, unterminated or not printable"):
        check(patch_field(h, 1, name=name))


def test_field_with_count_zero() -> None:
    h, _ = header(RECORD, (2,))
    with expect(FormatError, "field 0 has count 0"):
        check(patch_field(h, 0, count=0))


@pytest.mark.parametrize("offset,count", [(6, 1), (4, 2), (0xFFFFFFFF, 1), (0, 0xFFFFFFFF)])
def test_field_beyond_itemsize(offset: int, count: int) -> None:
    h, _ = header(RECORD, (2,))
    with expect(FormatError, "beyond itemsize 8"):
        check(patch_field(h, 1, offset=offset, count=count, flags=ARRAY))


def test_field_with_count_over_one_that_is_not_an_array() -> None:
    h, _ = header(RECORD, (2,))
    with expect(FormatError, "field 0 has count 2 without SEQSHM_FIELD_F_ARRAY"):
        check(patch_field(h, 0, count=2, size_=2, kind=ord("u")))


def test_array_field_of_one_element_is_valid() -> None:
    h, _ = header(RECORD, (2,))
    check(patch_field(h, 0, flags=ARRAY))


@pytest.mark.parametrize("flags", [2, 0x80, 0xFF])
def test_field_with_unknown_flags(flags: int) -> None:
    h, _ = header(RECORD, (2,))
    with expect(FormatError, "field 1 has unknown flags"):
        check(patch_field(h, 1, flags=flags))


@pytest.mark.parametrize("change", [{"name": b"x"}, {"count": 2, "size_": 4, "flags": 1},
                                    {"flags": 1}])
def test_scalar_field_must_be_unnamed_at_zero_of_count_one(change: dict[str, Any]) -> None:
    h, _ = header(np.uint64, (8,))  # u4[2] is still 8 bytes: what fails is the shape
    with expect(FormatError, "a scalar element's field must be unnamed"):
        check(patch_field(h, 0, **change))


def test_scalar_field_size_must_equal_itemsize() -> None:
    h, _ = header(np.uint64, (8,))
    patch(h, itemsize=16, payload_size=128, slot_stride=128)
    with expect(FormatError, "a scalar element's field must be"):
        check(h)


def test_duplicate_field_names() -> None:
    h, _ = header(RECORD, (2,))
    with expect(FormatError, "fields 0 and 1 are both named 'a'"):
        check(patch_field(h, 1, name=b"a"))


def test_check_header_of_short_bytes_is_truncated() -> None:
    with pytest.raises(FormatError, match="truncated: 100 bytes"):
        _core.check_header(b"\0" * 100, 0, "/the/file")


def test_header_errors_name_the_file_they_came_from(tmp_path: Path) -> None:
    h, size = header(abi_version=7)
    p = tmp_path / "v7"
    p.write_bytes(bytes(h) + bytes(size - len(h)))
    with pytest.raises(VersionError) as e:
        seqshm.open(p)
    assert e.value.path == str(p) and str(e.value).startswith(f"{p}: ")
    assert "ABI version 7" in e.value.reason


def test_element_type_numpy_cannot_represent_is_a_format_error(tmp_path: Path) -> None:
    # One record of 2 GiB (a u1[2**31] field): valid for the header, too big for a NumPy dtype.
    big = 1 << 31
    h, _ = header(RECORD, (1,))
    payload_offset = struct.unpack_from("=Q", h, H["payload_offset"])[0]
    patch(h, nr_fields=1, itemsize=big, payload_size=big, slot_stride=big,
          region_size=payload_offset + big)
    patch_field(h, 0, count=big, kind=ord("u"), size_=1, flags=ARRAY)
    p = tmp_path / "huge"
    with open(p, "wb") as f:
        f.write(h)
        f.truncate(payload_offset + big)  # sparse
    with pytest.raises(FormatError, match="element type NumPy cannot represent"):
        seqshm.open(p)


# ---------------------------------------------------------------------------------------------
# Bad ``out`` arrays.

@pytest.fixture
def reader(make_path: Callable[[], str]) -> Any:
    with seqshm.create(make_path(), np.float32, (4, 3)) as w, seqshm.open(w.path) as r:
        w.write(np.ones((4, 3)))
        yield r


def test_out_of_another_dtype_is_a_type_error(reader: Any) -> None:
    with pytest.raises(TypeError, match=f"{reader.path}: out has dtype float64"):
        reader.snapshot(np.zeros((4, 3)))


@pytest.mark.parametrize("shape", [(3, 4), (12,), (4, 3, 1), ()])
def test_out_of_another_shape_is_a_value_error(reader: Any, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="out has shape"):
        reader.snapshot(np.zeros(shape, np.float32))


def test_non_contiguous_out_is_a_value_error(reader: Any) -> None:
    out = np.zeros((3, 4), np.float32).T
    with pytest.raises(ValueError, match="C-contiguous"):
        reader.snapshot(out)


def test_read_only_out_is_a_value_error(reader: Any) -> None:
    out = np.zeros((4, 3), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        reader.snapshot(out)
    assert not out.any()


def test_misaligned_out_is_a_value_error(reader: Any) -> None:
    raw = np.zeros(4 * 3 * 4 + 1, np.uint8)
    out = raw[1:].view(np.float32).reshape(4, 3)
    assert not out.flags.aligned
    with pytest.raises(ValueError, match="aligned"):
        reader.snapshot(out)


def test_out_that_is_not_an_array_is_a_type_error(reader: Any) -> None:
    with pytest.raises(TypeError):
        reader.snapshot([[0.0] * 3] * 4)


def test_bad_out_is_checked_by_unlocked_copy_too(reader: Any) -> None:
    with pytest.raises(TypeError):
        _hooks.copy_unlocked(reader, np.zeros((4, 3)))


# ---------------------------------------------------------------------------------------------
# Bad create() arguments.

@pytest.mark.parametrize("n", [0, 3, 12, 2048, -1])
def test_nr_slots_must_be_a_power_of_two_up_to_1024(make_path: Callable[[], str], n: int) -> None:
    with pytest.raises(ValueError, match="nr_slots"):
        seqshm.create(make_path(), np.int8, 1, nr_slots=n)


@pytest.mark.parametrize("n", [True, 2.0, "2"])
def test_nr_slots_must_be_an_int(make_path: Callable[[], str], n: Any) -> None:
    with pytest.raises(TypeError, match="nr_slots must be an int"):
        seqshm.create(make_path(), np.int8, 1, nr_slots=n)


@pytest.mark.parametrize("shape", [0, (2, 0), (-1,), (True,), (1,) * 9])
def test_shape_must_be_up_to_8_positive_ints(make_path: Callable[[], str], shape: Any) -> None:
    with pytest.raises(ValueError, match="shape"):
        seqshm.create(make_path(), np.int8, shape)


def test_shape_of_floats_is_a_type_error(make_path: Callable[[], str]) -> None:
    with pytest.raises(TypeError):
        seqshm.create(make_path(), np.int8, 2.0)


def test_payload_over_a_terabyte_is_refused(make_path: Callable[[], str]) -> None:
    with pytest.raises(ValueError, match="payload of"):
        seqshm.create(make_path(), np.int8, (1 << 20, 1 << 21))


@pytest.mark.parametrize("dtype", ["O", "S4", "U2", "V8", "M8[s]", "m8[s]", "g", "G",
                                   ">u4", ">f8", "<c16" if np.little_endian else ">c16"])
def test_dtypes_a_header_cannot_describe_are_type_errors(make_path: Callable[[], str],
                                                         dtype: str) -> None:
    dt = np.dtype(dtype)
    if dt.isnative and dt.kind == "c":
        dt = dt.newbyteorder()
    with pytest.raises(TypeError, match="dtype"):
        seqshm.create(make_path(), dt, 1)


def test_subarray_element_type_is_a_type_error(make_path: Callable[[], str]) -> None:
    with pytest.raises(TypeError, match="put its shape into the channel's shape"):
        seqshm.create(make_path(), np.dtype(("<u4", (3,))), 1)


def test_nested_record_is_a_type_error(make_path: Callable[[], str]) -> None:
    dt = np.dtype([("inner", [("a", "u1")]), ("b", "u1")])
    with pytest.raises(TypeError, match="nested record"):
        seqshm.create(make_path(), dt, 1)


def test_two_dimensional_subarray_field_is_a_type_error(make_path: Callable[[], str]) -> None:
    with pytest.raises(TypeError, match="2-d subarray"):
        seqshm.create(make_path(), np.dtype([("m", "<f4", (2, 2))]), 1)


def test_record_field_of_foreign_byte_order_is_a_type_error(make_path: Callable[[], str]) -> None:
    other = ">" if np.little_endian else "<"
    with pytest.raises(TypeError, match="foreign byte order"):
        seqshm.create(make_path(), np.dtype([("a", f"{other}u4")]), 1)


@pytest.mark.parametrize("name", ["x" * 32, "caf\u00e9", "new\nline"])
def test_bad_field_names_are_type_errors(make_path: Callable[[], str], name: str) -> None:
    with pytest.raises(TypeError, match="field name"):
        seqshm.create(make_path(), np.dtype([(name, "u1")]), 1)


def test_more_than_32_fields_is_a_type_error(make_path: Callable[[], str]) -> None:
    with pytest.raises(TypeError, match="33 fields"):
        seqshm.create(make_path(), np.dtype([(f"f{i}", "u1") for i in range(33)]), 1)


def test_record_with_no_fields_is_a_type_error(make_path: Callable[[], str]) -> None:
    with pytest.raises(TypeError, match="record with no fields"):
        seqshm.create(make_path(), np.dtype([]), 1)


def test_field_titles_are_refused_not_dropped(make_path: Callable[[], str]) -> None:
    titled = np.dtype({"names": ["a"], "formats": ["<f8"], "titles": ["Alpha"]})
    with pytest.raises(TypeError, match="title"):
        seqshm.create(make_path(), titled, 1)


@pytest.mark.parametrize("shape", [2.0, "3", None])
def test_shape_that_is_not_ints_is_a_type_error(make_path: Callable[[], str], shape: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="shape"):
        seqshm.create(make_path(), np.float64, shape)


@pytest.mark.parametrize("name", ["x" * 64, "caf\u00e9", "bell\a"])
def test_bad_channel_names_are_value_errors(make_path: Callable[[], str], name: str) -> None:
    with pytest.raises(ValueError, match="channel name"):
        seqshm.create(make_path(), np.int8, 1, name=name)


def test_failed_create_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        seqshm.create(tmp_path / "c", np.int8, 1, name="x" * 64)
    assert os.listdir(tmp_path) == []


def test_existing_path_without_overwrite_is_file_exists(make_path: Callable[[], str]) -> None:
    path = make_path()
    Path(path).write_bytes(b"precious")
    with pytest.raises(FileExistsError) as e:
        seqshm.create(path, np.int8, 1)
    assert e.value.filename == path
    assert Path(path).read_bytes() == b"precious"


def test_overwrite_replaces_a_file_no_writer_holds(make_path: Callable[[], str]) -> None:
    path = make_path()
    with seqshm.create(path, np.int8, 1) as w:
        w.write([1])
    with seqshm.create(path, np.int16, 2, overwrite=True) as w2, seqshm.open(path) as r:
        assert r.dtype == np.int16 and w2.seq == 0


def test_second_live_writer_is_writer_busy_even_with_overwrite(
        make_path: Callable[[], str]) -> None:
    path = make_path()
    with seqshm.create(path, np.int8, 1) as w:
        w.write([1])
        with pytest.raises(seqshm.WriterBusy) as e:
            seqshm.create(path, np.int8, 1, overwrite=True)
        assert e.value.path == path and isinstance(e.value, BlockingIOError)
        with seqshm.open(path) as r:
            assert r.snapshot()[0] == 1  # the live channel is untouched
    assert sorted(os.listdir(os.path.dirname(path))) == [os.path.basename(path)]


def test_writer_busy_from_a_writer_in_another_process(make_path: Callable[[], str]) -> None:
    from seqshm.testing import PatternWriter
    path = make_path()
    with PatternWriter(path, 64, rate_hz=100):
        with pytest.raises(seqshm.WriterBusy):
            seqshm.create(path, np.uint64, 8, overwrite=True)


# ---------------------------------------------------------------------------------------------
# Timeouts, closed objects, misuse of the write calls.

@pytest.mark.parametrize("timeout", [-1, -0.001, float("nan")])
def test_bad_timeout_is_a_value_error(make_path: Callable[[], str], timeout: float) -> None:
    with seqshm.create(make_path(), np.int8, 1) as w:
        with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0"):
            seqshm.open(w.path, timeout=timeout)
        with seqshm.open(w.path) as r, pytest.raises(ValueError, match="timeout"):
            r.timeout = timeout


@pytest.mark.parametrize("timeout", ["soon", [1], object()])
def test_timeout_that_is_not_a_number_is_refused(make_path: Callable[[], str],
                                                 timeout: Any) -> None:
    with seqshm.create(make_path(), np.int8, 1) as w:
        with pytest.raises(TypeError, match="timeout must be a number of seconds or None"):
            seqshm.open(w.path, timeout=timeout)


def test_zero_timeout_is_allowed_and_settable(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int8, 1) as w, seqshm.open(w.path, timeout=0) as r:
        assert r.timeout == 0
        r.timeout = 0.25
        assert r.timeout == 0.25
        w.write([1])
        assert r.snapshot()[0] == 1


READER_CALLS: dict[str, Callable[[Any], Any]] = {
    "snapshot": lambda r: r.snapshot(),
    "snapshot(out)": lambda r: r.snapshot(np.zeros(2, np.int8)),
    "read": lambda r: r.read(),
    "view": lambda r: r.view(),
    "begin": lambda r: r.begin(),
    "validate": lambda r: r.validate(0),
    "apply": lambda r: r.apply(np.sum),
    "history": lambda r: r.history(),
    "head": lambda r: r.head,
    "copy_unlocked hook": lambda r: _hooks.copy_unlocked(r),
}


@pytest.mark.parametrize("call", READER_CALLS.values(), ids=READER_CALLS.keys())
def test_closed_reader_raises_value_error(make_path: Callable[[], str],
                                          call: Callable[[Any], Any]) -> None:
    with seqshm.create(make_path(), np.int8, 2) as w:
        r = seqshm.open(w.path)
        r.close()
        assert r.closed
        with pytest.raises(ValueError, match=f"{w.path}: channel is closed"):
            call(r)


WRITER_CALLS: dict[str, Callable[[Any], Any]] = {
    "write": lambda w: w.write([1] * 8),
    "begin": lambda w: w.begin(),
    "end": lambda w: w.end(),
    "writing": lambda w: w.writing().__enter__(),
    "write_pattern hook": lambda w: _hooks.write_pattern(w, 1),
    "head": lambda w: w.head,
}


@pytest.mark.parametrize("call", WRITER_CALLS.values(), ids=WRITER_CALLS.keys())
def test_closed_writer_raises_value_error(make_path: Callable[[], str],
                                          call: Callable[[Any], Any]) -> None:
    w = seqshm.create(make_path(), np.uint64, 8)
    w.close()
    assert w.closed
    with pytest.raises(ValueError, match="channel is closed"):
        call(w)


@pytest.mark.parametrize("data", [[1, 2], np.zeros((3, 1)), np.zeros(4), 5])
def test_write_of_the_wrong_shape_is_a_value_error(make_path: Callable[[], str],
                                                   data: Any) -> None:
    with seqshm.create(make_path(), np.int32, 3) as w:
        with pytest.raises(ValueError, match=r"data has shape .* the channel holds \(3,\)"):
            w.write(data)
        assert w.seq == 0


def test_write_of_unconvertible_data_publishes_nothing(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int32, 1) as w:
        with pytest.raises((TypeError, ValueError)):
            w.write(["not a number"])
        assert w.seq == 0


@pytest.mark.parametrize(("dtype", "data", "stored"), [
    (np.uint8, np.array([300, 1, 2]), 44),         # wrapped around
    (np.uint8, np.array([-1, 1, 2]), 255),
    (np.int16, np.array([70000, 1, 2], np.int32), 4464),
    (np.int32, np.array([np.nan, 1, 2]), None),   # NaN has no integer: whatever the cast makes
    (np.int32, [1.5, 1, 2], 1),                   # truncated
    (np.float64, np.array([1 + 2j, 1, 2]), 1.0),  # imaginary part dropped
])
def test_write_of_values_the_channel_cannot_hold_publishes_nothing(
        make_path: Callable[[], str], dtype: Any, data: Any, stored: Any) -> None:
    """write() converted as np.asarray does: an array's values out of the channel's range
    wrapped around (300 became 44), NaN and fractions became some integer, complex lost its
    imaginary part, all published without an error (Python ints out of range already raised
    OverflowError). Values that convert exactly still do."""
    with seqshm.create(make_path(), dtype, 3) as w:
        with pytest.raises(ValueError, match=f"{w.path}.*cannot hold") as e:
            w.write(data)
        if stored is not None:
            assert f"stored as {stored!r}" in str(e.value)
        assert w.seq == 0
        w.write(np.array([1, 2, 3]))  # int64 into any of them: exact
        w.write([1.0, 2.0, 3.0])
        assert w.seq == 2


@pytest.mark.parametrize(("mode", "error"), [
    (-1, ValueError),      # was: a channel with mode 0o7777 (setuid, setgid, sticky, 0o777)
    (0o7777, ValueError),
    (0o4644, ValueError),  # was: setuid on the channel file
    (0o1000, ValueError),
    (6.44, TypeError),
    ("644", TypeError),
    (True, TypeError),
])
def test_create_refuses_a_mode_that_is_not_permission_bits(
        make_path: Callable[[], str], mode: Any, error: type[Exception]) -> None:
    path = make_path()
    with pytest.raises(error, match=f"{path}: mode"):
        seqshm.create(path, np.int64, 1, mode=mode)
    assert os.listdir(os.path.dirname(path)) == []  # nothing left behind


def test_begin_twice_is_a_runtime_error(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int32, 1) as w:
        w.begin()
        with pytest.raises(RuntimeError, match="begin"):
            w.begin()
        w.end()


def test_end_without_begin_is_a_runtime_error(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int32, 1) as w:
        with pytest.raises(RuntimeError, match=r"end\(\) without begin\(\)"):
            w.end()


def test_write_during_begin_publishes_and_end_publishes_after_it(
        make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.uint64, 1) as w, seqshm.open(w.path) as r:
        buf = w.begin()  # a private buffer: the channel is not mid-write meanwhile
        buf[0] = 2
        assert w.write([1]) == 1 and r.snapshot()[0] == 1
        assert w.end() == 2 and r.snapshot()[0] == 2


def test_write_pattern_needs_a_64_bit_word(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.uint8, 4) as w:
        with pytest.raises(ValueError, match="smaller than one 64-bit word"):
            _hooks.write_pattern(w, 1)


def test_close_drops_an_unfinished_write(make_path: Callable[[], str]) -> None:
    path = make_path()
    with seqshm.create(path, np.int32, 1) as w:
        w.write([4])
        w.begin()[0] = 5
    with seqshm.open(path, timeout=0.1) as r:
        assert r.read().data[0] == 4 and r.seq == 1


# -- why a read found no consistent copy (issue 16, recipe 7) ----------------------------------


class _LappingWriter:
    """What a reader sees of a writer that laps a one-slot channel with writes much longer
    than the gaps between them: the slot is odd (mid-write) at every look, and between two
    looks a write completed and the next began (its seq two higher, head one higher). Made on
    a real channel whose writer stalled mid-write (_hooks.stall_mid_write: alive, holding the
    channel), by a thread that moves the slot's seq and head on through a mapping of the file,
    as the writer's stores would: each one aligned store of the new value (ctypes), never
    struct.pack_into, which zero-fills its bytes before it packs them, so a reader could see
    seq 0 (even: "complete") between the two and take a copy no writer ever left."""

    def __init__(self, w: seqshm.Writer) -> None:
        import ctypes
        import mmap
        import threading

        _hooks.stall_mid_write(w, 1)
        self.fd = os.open(w.path, os.O_RDWR | os.O_CLOEXEC)
        self.map = mmap.mmap(self.fd, _core.SLOTS_OFFSET + 64, mmap.MAP_SHARED)
        self.seq = ctypes.c_uint32.from_buffer(self.map, _core.SLOTS_OFFSET + SLOT["seq"])
        self.head = ctypes.c_uint64.from_buffer(self.map, H["head"])
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.001):
            self.seq.value += 2  # odd still: the next write
            self.head.value += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        del self.seq, self.head  # they export the mapping's buffer: close() needs them gone
        self.map.close()
        os.close(self.fd)


def test_a_writer_lapping_the_slot_at_every_look_is_reported_as_overwriting_it(
        make_path: Callable[[], str]) -> None:
    """Issue 16, recipe 7: a busy writer of a one-slot channel is mid-write at almost every
    look of a reader (a 4 MiB write takes most of the time between two), so the last seq the
    reader saw was odd and ReadTimeout said "stayed mid-write ... alive but not finishing
    (stopped?)", though thousands of writes completed during the wait. The reader judges from
    what it saw during the whole read: the slot's seq and head moved on, so the writer
    overwrote the slot during every copy, and more slots are the cure."""
    with seqshm.create(make_path(), np.uint64, 8) as w:
        w.write(np.zeros(8, np.uint64))
        lapping = _LappingWriter(w)
        try:
            with seqshm.open(w.path, timeout=0.3) as r, pytest.raises(seqshm.ReadTimeout) as e:
                r.snapshot()
        finally:
            lapping.close()
    msg = str(e.value)
    assert "overwrote slot 0 during every copy" in msg and "nr_slots" in msg, msg
    assert "mid-write" not in msg and "stopped" not in msg, msg
    assert "writes completed meanwhile" in msg, msg
    assert e.value.stuck is False  # what `seqshm info` and `list` can tell their users


def test_a_writer_stuck_mid_write_is_still_reported_as_stuck(
        make_path: Callable[[], str]) -> None:
    """The other member: the slot keeps the same odd seq throughout the read (a writer
    stopped in its write, alive): "stayed mid-write", with what the reader knows of it."""
    with seqshm.create(make_path(), np.uint64, 8) as w:
        w.write(np.zeros(8, np.uint64))
        _hooks.stall_mid_write(w, 1)
        with seqshm.open(w.path, timeout=0.2) as r, pytest.raises(seqshm.ReadTimeout) as e:
            r.snapshot()
    msg = str(e.value)
    assert "slot 0 stayed mid-write (its sequence count 3 is odd) for 0.2 s" in msg, msg
    assert f"writer pid {os.getpid()} is alive but not finishing (stopped?)" in msg, msg
    assert "overwrote" not in msg, msg
    assert e.value.stuck is True


def test_a_real_writer_lapping_a_large_slot_is_reported_as_overwriting_it(
        make_path: Callable[[], str]) -> None:
    """Recipe 7 as found: a writer process rewriting a one-slot 4 MiB channel as fast as it
    can. A read that finds no consistent copy within its timeout says the slot was
    overwritten (a writer the machine preempts for a whole copy lets a read through: then
    there is nothing to report)."""
    from seqshm.testing import PatternWriter

    messages = []
    with PatternWriter(make_path(), 4 << 20) as pw, seqshm.open(pw.path, timeout=0.1) as r:
        for _ in range(30):
            try:
                r.snapshot()
            except seqshm.ReadTimeout as e:
                messages.append(str(e))
                if len(messages) == 3:
                    break
    if not messages:
        pytest.skip("every read found a gap between the writer's writes (a busy machine)")
    for msg in messages:
        assert "overwrote slot 0 during every copy" in msg and "mid-write" not in msg, msg


# -- records move by name (issue 16, recipe 7) -------------------------------------------------

XY = np.dtype([("x", "<f8"), ("y", "<f8")])
#: Records that are not the channel's fields (XY), in the same order, of the same types.
OTHER_FIELDS = {
    "reordered": np.dtype([("y", "<f8"), ("x", "<f8")]),
    "renamed": np.dtype([("a", "<f8"), ("b", "<f8")]),
    "other type": np.dtype([("x", "<f4"), ("y", "<f8")]),
    "integer type": np.dtype([("x", "<i8"), ("y", "<f8")]),
    "subarray": np.dtype([("x", "<f8", (2,)), ("y", "<f8")]),
    "extra field": np.dtype([("x", "<f8"), ("y", "<f8"), ("z", "<f8")]),
    "missing field": np.dtype([("x", "<f8")]),
    "not records": np.dtype("<f8"),
}
#: The channel's fields, by name and in order, of the same types, laid out otherwise.
OTHER_LAYOUT = {
    "byte order": np.dtype([("x", ">f8"), ("y", ">f8")]),
    "padding": np.dtype({"names": ["x", "y"], "formats": ["<f8", "<f8"],
                         "offsets": [0, 16], "itemsize": 24}),
    "fields picked by name": np.dtype({"names": ["x", "y"], "formats": ["<f8", "<f8"],
                                       "offsets": [8, 0], "itemsize": 16}),
}


def test_write_of_records_in_another_field_order_is_refused_not_swapped(
        make_path: Callable[[], str]) -> None:
    """Issue 16, recipe 7: w.write(a), ``a`` with the channel's fields in another order,
    stored them by position (x and y swapped: NumPy assigns records by position, whatever the
    names), while snapshot(out=a) refused that dtype. One rule for both: records move by name
    or not at all. write() refuses them, naming the file and the way to write them by name."""
    a = np.array([(2.0, 1.0)], dtype=OTHER_FIELDS["reordered"])  # y=2, x=1
    with seqshm.create(make_path(), XY, 1) as w, seqshm.open(w.path) as r:
        with pytest.raises(TypeError, match=f"^{w.path}: data has the channel's fields in "
                           r"another order \(y, x; the channel's: x, y\)") as e:
            w.write(a)
        assert "data[list(w.dtype.names)]" in str(e.value)
        assert w.seq == 0
        w.write(a[list(w.dtype.names)])  # the fields by name
        assert r.snapshot().tolist() == [(1.0, 2.0)]
        with pytest.raises(TypeError, match=f"^{w.path}: out has the channel's fields in "
                           "another order"):
            r.snapshot(out=a)


@pytest.mark.parametrize("dtype", OTHER_FIELDS.values(), ids=OTHER_FIELDS.keys())
def test_records_of_other_fields_are_refused_by_write_and_as_out(
        make_path: Callable[[], str], dtype: np.dtype) -> None:
    """Other names, order, types or shapes of fields: no conversion keeps every value in its
    field, so both directions refuse, saying which field differs."""
    a = np.zeros(2, dtype)
    with seqshm.create(make_path(), XY, 2) as w, seqshm.open(w.path) as r:
        with pytest.raises(TypeError, match=f"^{w.path}: data "):
            w.write(a)
        assert w.seq == 0
        w.write(np.zeros(2, XY))
        with pytest.raises(TypeError, match=f"^{w.path}: out "):
            r.snapshot(out=a)


@pytest.mark.parametrize("dtype", OTHER_LAYOUT.values(), ids=OTHER_LAYOUT.keys())
def test_records_laid_out_otherwise_are_written_by_name(
        make_path: Callable[[], str], dtype: np.dtype) -> None:
    """The channel's fields in its order with its types, in another byte order or at other
    offsets: write() converts them (no value and no field can change), snapshot(out=), which
    copies bytes, refuses them."""
    a = np.zeros(2, dtype)
    a["x"], a["y"] = [1.0, 3.0], [2.0, 4.0]
    with seqshm.create(make_path(), XY, 2) as w, seqshm.open(w.path) as r:
        w.write(a)
        assert r.snapshot().tolist() == [(1.0, 2.0), (3.0, 4.0)]
        with pytest.raises(TypeError, match=f"^{w.path}: out lays the channel's fields out "
                           "otherwise"):
            r.snapshot(out=a)


def test_records_into_a_channel_of_values_are_refused(make_path: Callable[[], str]) -> None:
    """A record array into a float channel: refused, whatever its one field is called."""
    with seqshm.create(make_path(), np.float64, 2) as w:
        with pytest.raises(TypeError, match=f"^{w.path}: data holds records"):
            w.write(np.zeros(2, [("x", "<f8")]))
        assert w.seq == 0


def test_write_of_tuples_an_integer_field_cannot_hold_publishes_nothing(
        make_path: Callable[[], str]) -> None:
    """Records given as tuples (by position: they have no names) were cast field by field as
    np.asarray does: 1.5 into an integer field became 1, without an error, as values did
    before into an integer channel. Refused; exact values still go in."""
    dt = np.dtype([("n", "<i4"), ("v", "<f8"), ("c", "<u2", (2,))])
    with seqshm.create(make_path(), dt, 1) as w:
        for bad, field in (([(1.5, 2.0, (1, 2))], "n"), ([(1, 2.0, (1, 2.5))], "c")):
            with pytest.raises(ValueError, match=f"{w.path}: .*field '{field}'.*cannot hold: "
                               "(1.5|2.5) would be stored as"):
                w.write(bad)
        assert w.seq == 0
        w.write([(1, 2.5, (1, 2))])
        w.write([(True, 2, (np.int64(3), 4))])
        assert w.seq == 2


def test_a_record_type_renamed_in_place_is_checked_again(make_path: Callable[[], str]) -> None:
    """NumPy lets a record type's field names be set anew, on the same dtype object: an
    array of it that write() took before is checked again once renamed."""
    dt = np.dtype([("x", "<f8"), ("y", "<f8")])
    a = np.zeros(1, dt)
    with seqshm.create(make_path(), XY, 1) as w:
        w.write(a)
        dt.names = ("y", "x")
        with pytest.raises(TypeError, match="another order"):
            w.write(a)
        assert w.seq == 1


# -- timeouts, timestamps and data a call cannot take ---------------------------------------

@pytest.mark.parametrize("timeout", [1e11, 1e300, float("inf"), None, 2**70])
def test_a_huge_timeout_is_honoured(shm_path: str, timeout: Any) -> None:
    with seqshm.create(shm_path, np.int64, 2) as w:
        w.write([4, 4])
        with seqshm.open(shm_path, timeout=timeout) as r:
            assert r.timeout == (None if timeout is None else float(timeout))
            assert r.snapshot().tolist() == [4, 4]
            threading.Timer(0.1, w.write, ([5, 5],)).start()
            assert r.wait(timeout) is True
        w.close(unlink=True)
    with StalledWriter(shm_path, 64, writes_before=1) as sw:
        sw.kill(signal.SIGSTOP)
        _read_for(seqshm.open(sw.path, timeout=timeout), 0.3)
        sw.kill(signal.SIGCONT)


def _read_for(r: seqshm.Reader, seconds: float) -> None:
    """Run a blocked snapshot() in a thread for ``seconds``: it must still be waiting (a
    timeout that became 0 would have raised at once)."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(_try(r.snapshot)), daemon=True)
    t.start()
    t.join(seconds)
    assert t.is_alive() or not isinstance(out[0], seqshm.ReadTimeout), out
    r.close()  # ends the blocked read with ClosedError
    t.join(HANG_GUARD_S)
    assert not t.is_alive()


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except BaseException as e:  # noqa: BLE001
        return e


@pytest.mark.parametrize("timeout", [-1, float("nan"), "abc", [1]])
def test_a_bad_timeout_is_refused_with_a_clear_error(shm_path: str, timeout: Any) -> None:
    with seqshm.create(shm_path, np.int64, 2) as w:
        with pytest.raises((TypeError, ValueError), match="timeout"):
            seqshm.open(w.path, timeout=timeout)
        with seqshm.open(w.path) as r, pytest.raises((TypeError, ValueError), match="timeout"):
            r.wait(timeout)
        w.close(unlink=True)


@pytest.mark.parametrize("timeout", [-1, float("nan"), "abc", True])
def test_every_call_taking_a_timeout_refuses_a_bad_one_at_once(shm_path: str,
                                                                timeout: Any) -> None:
    """follow() and follow_async() checked theirs only at their first wait: with writes to
    read they yielded them, and a caller learnt of its mistake later or never."""
    with seqshm.create(shm_path, np.int64, 2, nr_slots=4) as w, seqshm.open(shm_path) as r:
        w.write([1, 1])
        with pytest.raises((TypeError, ValueError), match="timeout"):
            r.follow(timeout)
        with pytest.raises((TypeError, ValueError), match="timeout"):
            r.follow_async(timeout)
        with pytest.raises((TypeError, ValueError), match="timeout"):
            seqshm.snapshot(shm_path, timeout=timeout)
        w.close(unlink=True)


def test_a_one_shot_refuses_a_bad_timeout_equal_to_a_good_one(shm_path: str) -> None:
    """The one-shot's kept reader was reused for any timeout equal to its own, so a Decimal
    (which open() refuses) passed when a Fraction of the same value had been used before."""
    from decimal import Decimal
    from fractions import Fraction

    with seqshm.create(shm_path, np.int64, 2) as w:
        seqshm.snapshot(shm_path, timeout=Fraction(1, 100))
        with pytest.raises(TypeError, match="timeout"):
            seqshm.snapshot(shm_path, timeout=Decimal("0.01"))
        w.close(unlink=True)


@pytest.mark.parametrize(("ts", "error"), [(-1, ValueError), (2**64, ValueError),
                                           (1.5, TypeError), ("1", TypeError),
                                           (True, TypeError)])
def test_a_bad_write_timestamp_is_refused_naming_the_file(shm_path: str, ts: Any,
                                                          error: type) -> None:
    """write() gave a bare OverflowError for a negative or huge timestamp, and took 1.5 as 1:
    end() and writing() already refused these, naming the file."""
    with seqshm.create(shm_path, np.int64, 2) as w:
        with pytest.raises(error, match=f"{shm_path}.*timestamp_ns"):
            w.write([1, 1], timestamp_ns=ts)
        assert w.head == 0
        assert w.write([1, 1], timestamp_ns=np.uint64(2**64 - 1)) == 1
        w.close(unlink=True)


@pytest.mark.parametrize("data", ["abc", None, [2**70, 1]])
def test_data_a_write_cannot_convert_is_an_error_naming_the_file(shm_path: str,
                                                                 data: Any) -> None:
    with seqshm.create(shm_path, np.int64, 2) as w:
        with pytest.raises((TypeError, ValueError, OverflowError), match=f"{shm_path}.*int64"):
            w.write(data)
        w.close(unlink=True)


@pytest.mark.parametrize("timeout", ["5", b"1", True, " 1e11 "])
def test_a_timeout_that_is_not_a_number_is_a_type_error(shm_path: str, timeout: Any) -> None:
    with seqshm.create(shm_path, np.int64, 2) as w:
        with pytest.raises(TypeError, match="timeout must be a number"):
            seqshm.open(shm_path, timeout=timeout)
        w.close(unlink=True)
