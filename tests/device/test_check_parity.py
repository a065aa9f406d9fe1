"""One protocol source, one verdict: the header check compiled into seqshm.ko (reached through
seqshm_apitest.ko's /dev/seqshm_apitest_check) and the one compiled into the userspace
extension accept and reject the same headers, with the same sentence; and every header the
kernel publishes passes the userspace check."""

import errno
import glob
import mmap
import os
import random
import struct

import numpy as np
import pytest

if not os.path.isdir("/dev/seqshm"):
    pytest.skip("no /dev/seqshm: the seqshm module is not loaded here (runs in the VM)",
                allow_module_level=True)

seqshm = pytest.importorskip("seqshm")
from seqshm import _core  # noqa: E402  (after the skip: the package is needed from here on)
from seqshm._dtype import element_type  # noqa: E402

CHECK_DEV = "/dev/seqshm_apitest_check"
LAYOUT = _core.abi_layout()
HDR = LAYOUT["header"]
FIELD = LAYOUT["field"]
HEADER_SIZE = HDR["size"]
RANDOM_CASES = 400


def kernel_verdict(header: bytes, region_size: int = 0) -> tuple[str, str]:
    """("ok" | "format" | "version", why) from seqshm.ko's seqshm_check_header()."""
    fd = os.open(CHECK_DEV, os.O_RDWR)
    try:
        os.write(fd, struct.pack("=Q", region_size) + header)
        code, _, why = os.read(fd, 4096).decode().rstrip("\n").partition(" ")
    finally:
        os.close(fd)
    kinds = {0: "ok", -errno.EBADMSG: "format", -errno.EPROTONOSUPPORT: "version"}
    assert int(code) in kinds, f"unexpected errno {code} from the kernel's check: {why}"
    return kinds[int(code)], why if int(code) else ""


def user_verdict(header: bytes, region_size: int = 0) -> tuple[str, str]:
    """The same from the userspace reader's check (seqshm._core.check_header)."""
    try:
        _core.check_header(header, region_size)
    except seqshm.VersionError as e:
        return "version", str(e)
    except seqshm.FormatError as e:
        return "format", str(e)
    return "ok", ""


def valid_header() -> bytearray:
    """A userspace writer's header of a record channel (3 fields, one an array), 2-d, 4 slots,
    with its magic published."""
    dt = np.dtype([("a", "<i4"), ("b", "<f8"), ("c", "u1", (4,))])
    h = bytearray(_core.build_header("parity", 4, (3, 5), element_type(dt), 1234,
                                     5678).to_bytes())
    struct.pack_into("=Q", h, HDR["magic"], _core.MAGIC)
    return h


def put(h: bytearray, offset: int, fmt: str, value: int | bytes) -> bytearray:
    struct.pack_into(fmt if fmt[0] in "<>=" else "=" + fmt, h, offset, value)
    return h


def field_at(i: int, name: str) -> int:
    return HDR["fields"] + i * FIELD["size"] + FIELD[name]


MUTATIONS = {
    "valid": lambda h: h,
    "no magic": lambda h: put(h, HDR["magic"], "Q", 0),
    "other byte order": lambda h: put(h, HDR["magic"], ">Q", _core.MAGIC),
    "abi version 2": lambda h: put(h, HDR["abi_version"], "I", 2),
    "header_size": lambda h: put(h, HDR["header_size"], "I", HEADER_SIZE - 8),
    "unknown flag": lambda h: put(h, HDR["flags"], "I", 0x81),
    "0 slots": lambda h: put(h, HDR["nr_slots"], "I", 0),
    "3 slots": lambda h: put(h, HDR["nr_slots"], "I", 3),
    "2048 slots": lambda h: put(h, HDR["nr_slots"], "I", 2048),
    "payload_offset unaligned": lambda h: put(h, HDR["payload_offset"], "Q", 4096 + 64),
    "payload_offset in the slots": lambda h: put(h, HDR["payload_offset"], "Q", 0),
    "payload_size 0": lambda h: put(h, HDR["payload_size"], "Q", 0),
    "stride unaligned": lambda h: put(h, HDR["slot_stride"], "Q", 65 * 8),
    "stride short": lambda h: put(h, HDR["slot_stride"], "Q", 64),
    "region unaligned": lambda h: put(h, HDR["region_size"], "Q", 8192 + 8),
    "region short": lambda h: put(h, HDR["region_size"], "Q", 4096),
    "stride overflows": lambda h: put(h, HDR["slot_stride"], "Q", 1 << 62),
    "name unterminated": lambda h: put(h, HDR["name"], "64s", b"x" * 64),
    "name not printable": lambda h: put(h, HDR["name"], "64s", b"a\x01b"),
    "9 dims": lambda h: put(h, HDR["ndim"], "I", 9),
    "shape past ndim": lambda h: put(h, HDR["shape"] + 7 * 8, "Q", 1),
    "zero dimension": lambda h: put(h, HDR["shape"], "Q", 0),
    "shape overflows": lambda h: put(h, HDR["shape"], "Q", 1 << 63),
    "itemsize 0": lambda h: put(h, HDR["itemsize"], "I", 0),
    "payload != shape": lambda h: put(h, HDR["payload_size"], "Q", 8 * 24 * 15),
    "0 fields": lambda h: put(h, HDR["nr_fields"], "I", 0),
    "33 fields": lambda h: put(h, HDR["nr_fields"], "I", 33),
    "scalar with 3 fields": lambda h: put(h, HDR["flags"], "I", 0),
    "unknown kind": lambda h: put(h, field_at(0, "kind"), "B", ord("x")),
    "int of 3 bytes": lambda h: put(h, field_at(0, "size_"), "B", 3),
    "empty field name": lambda h: put(h, field_at(1, "name"), "32s", b""),
    "field name unterminated": lambda h: put(h, field_at(1, "name"), "32s", b"n" * 32),
    "unknown field flag": lambda h: put(h, field_at(0, "flags"), "B", 0x80),
    "field reserved": lambda h: put(h, field_at(0, "flags") + 1, "B", 1),
    "count 0": lambda h: put(h, field_at(0, "count"), "I", 0),
    "count 2 without F_ARRAY": lambda h: put(h, field_at(0, "count"), "I", 2),
    "field past itemsize": lambda h: put(h, field_at(2, "offset"), "I", 22),
    "duplicate field names": lambda h: put(h, field_at(1, "name"), "32s", b"a"),
}


@pytest.mark.parametrize("case", MUTATIONS)
def test_kernel_and_userspace_checks_agree(apitest, case):
    header = bytes(MUTATIONS[case](valid_header()))
    user = user_verdict(header)
    assert kernel_verdict(header) == user
    if case == "valid":
        assert user == ("ok", "")
    else:
        assert user[0] != "ok", f"{case}: the userspace check accepted it"


@pytest.mark.parametrize("limit", [0, 4096, 8192, 1 << 20])
def test_checks_agree_on_the_backing_files_size(apitest, limit):
    header = bytes(valid_header())
    assert kernel_verdict(header, limit) == user_verdict(header, limit)


def test_checks_agree_on_random_corruptions(apitest):
    """Seeded random corruptions of one to four bytes of the header up to the end of its third
    (last used) field, each checked against a random file size: the two verdicts and sentences
    agree on every one. (Bytes after the third field are unused field entries, which neither
    check reads.)"""
    rng = random.Random(20261129)
    checked = HDR["fields"] + 3 * FIELD["size"]
    rejected = 0
    sizes = [0, 4096, 8192, 12288, 1 << 20, (1 << 64) - 1]
    for _ in range(RANDOM_CASES):
        h = valid_header()
        for _ in range(rng.randint(1, 4)):
            h[rng.randrange(checked)] = rng.randrange(256)
        size = rng.choice(sizes)  # the backing file's size, 0: unknown (a device)
        user = user_verdict(bytes(h), size)
        assert kernel_verdict(bytes(h), size) == user, f"size {size}, {bytes(h[:512]).hex()}"
        rejected += user[0] != "ok"
    assert rejected > RANDOM_CASES // 4, "the corruptions hardly ever hit a checked field"


def published_headers():
    for path in sorted(glob.glob("/dev/seqshm/*")):
        fd = os.open(path, os.O_RDONLY)
        try:
            m = mmap.mmap(fd, HEADER_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
            yield path, bytes(m[:HEADER_SIZE]), os.fstat(fd).st_size
            m.close()
        finally:
            os.close(fd)


def test_every_header_the_kernel_publishes_passes_both_checks(apitest):
    """cpustat, selftest and the API test module's record channel, as mapped by a reader."""
    seen = []
    for path, header, size in published_headers():
        assert user_verdict(header, size) == ("ok", ""), path
        assert kernel_verdict(header, size) == ("ok", ""), path
        seen.append(os.path.basename(path))
    assert {"apitest", "cpustat", "selftest"} <= set(seen)


@pytest.mark.parametrize("geometry", [("selftest_slots=8", "selftest_bytes=65536"),
                                      ("selftest_slots=1024", "selftest_bytes=8"),
                                      ("selftest_slots=2", "selftest_bytes=16777216")])
def test_headers_of_other_geometries_pass_the_userspace_check(module_params, geometry):
    """The selftest channel laid out by the kernel in other geometries (the module reloaded
    with them; the kernel's own check ran on each before it was published)."""
    module_params(*geometry)
    for path, header, size in published_headers():
        assert user_verdict(header, size) == ("ok", ""), path


@pytest.mark.parametrize("device", ["selftest", "apitest"])
def test_the_kernel_lays_out_a_channel_as_a_userspace_writer_would(apitest, device):
    """The same layout code on both sides: a userspace writer's header for the kernel
    channel's element, shape and slots has the kernel's geometry, byte for byte where a
    layout is decided (the writer's identity and the magic aside)."""
    path = f"/dev/seqshm/{device}"
    fd = os.open(path, os.O_RDONLY)
    try:
        m = mmap.mmap(fd, HEADER_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        kernel = _core.check_header(bytes(m[:HEADER_SIZE]))
        m.close()
    finally:
        os.close(fd)
    with seqshm.open(path) as r:
        raw = _core.build_header(kernel.name, kernel.nr_slots, tuple(r.shape),
                                 element_type(r.dtype)).to_bytes()
    user = _core.check_header(bytes(put(bytearray(raw), HDR["magic"], "Q", _core.MAGIC)))
    layout = ("region_size", "payload_offset", "payload_size", "slot_stride", "nr_slots",
              "flags", "itemsize", "ndim", "shape", "fields", "name")
    assert {k: user[k] for k in layout} == {k: kernel[k] for k in layout}
