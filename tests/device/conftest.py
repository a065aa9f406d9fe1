"""Helpers for the kernel-module tests (run inside the QEMU guest with seqshm.ko loaded).

Everything here talks to /dev/seqshm/* with the raw system calls (os, mmap, fcntl, ctypes),
so the tests check the module itself, not the Python reader. The `dev` fixture hands the
helpers to the tests; the `module_params` fixture reloads the module with other parameters.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import gc
import mmap
import os
import shutil
import struct
import subprocess
import time
from types import SimpleNamespace

import numpy as np
import pytest

DEV_DIR = "/dev/seqshm"
SELFTEST = DEV_DIR + "/selftest"
CPUSTAT = DEV_DIR + "/cpustat"
PARAMS = "/sys/module/seqshm/parameters"
PAGE = mmap.PAGESIZE

# <uapi/linux/seqshm.h>, restated only to test the module against it.
MAGIC = 0x00216D6873716573
ABI_VERSION = 1
HEADER_SIZE = 2048
SLOT_SIZE = 64
HEAD_OFFSET = 1792
F_RECORD = 1
IOC_MAGIC = 0xBC
INFO_ACK = 1
CLOCK_MONOTONIC = 1

_HDR = struct.Struct("=QIIQQQQIIiI64sIIII8Q")  # line 0 .. shape
_FIELD = struct.Struct("=32sIIBBB5x")


def _iowr(nr: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (IOC_MAGIC << 8) | nr


class IocInfo(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("abi_version", ctypes.c_uint32),
        ("nr_slots", ctypes.c_uint32),
        ("region_size", ctypes.c_uint64),
        ("payload_offset", ctypes.c_uint64),
        ("payload_size", ctypes.c_uint64),
        ("slot_stride", ctypes.c_uint64),
        ("head", ctypes.c_uint64),
        ("seen", ctypes.c_uint64),
        ("reserved", ctypes.c_uint64 * 4),
    ]


class IocStats(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("writes", ctypes.c_uint64),
        ("reads", ctypes.c_uint64),
        ("read_retries", ctypes.c_uint64),
        ("read_busy", ctypes.c_uint64),
        ("mmaps", ctypes.c_uint64),
        ("maps_active", ctypes.c_uint64),
        ("opens", ctypes.c_uint64),
        ("poll_wakeups", ctypes.c_uint64),
        ("reserved", ctypes.c_uint64 * 7),
    ]


assert ctypes.sizeof(IocInfo) == 96 and ctypes.sizeof(IocStats) == 128

IOC_INFO = _iowr(0, ctypes.sizeof(IocInfo))
IOC_STATS = _iowr(1, ctypes.sizeof(IocStats))

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
MAP_FAILED = ctypes.c_void_p(-1).value


def raw_mmap(fd: int, length: int, prot: int, offset: int = 0,
             flags: int = mmap.MAP_SHARED) -> int:
    """mmap(2) through libc: returns the address or raises OSError with the errno."""
    addr = libc.mmap(None, length, prot, flags, fd, offset)
    if addr == MAP_FAILED:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return addr


def raw_munmap(addr: int, length: int) -> None:
    if libc.munmap(addr, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def raw_ioctl(fd: int, cmd: int, arg) -> int:
    """ioctl(2) with a ctypes object (by reference) or an integer address."""
    ptr = ctypes.c_void_p(arg) if isinstance(arg, int) else ctypes.cast(ctypes.byref(arg),
                                                                          ctypes.c_void_p)
    rc = libc.ioctl(fd, cmd, ptr)
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return rc


def info(fd: int, flags: int = 0) -> IocInfo:
    i = IocInfo(size=ctypes.sizeof(IocInfo), flags=flags)
    raw_ioctl(fd, IOC_INFO, i)
    return i


def stats(fd: int) -> IocStats:
    s = IocStats(size=ctypes.sizeof(IocStats))
    raw_ioctl(fd, IOC_STATS, s)
    return s


def header(buf) -> dict:
    """The static header fields of a mapped (or copied) region, by name."""
    v = _HDR.unpack_from(buf, 0)
    names = ("magic abi_version header_size region_size payload_offset payload_size "
             "slot_stride nr_slots flags clock_id writer_pid name itemsize nr_fields ndim "
             "reserved0").split()
    h = dict(zip(names, v[:16], strict=True))
    h["name"] = h["name"].split(b"\0", 1)[0].decode()
    h["shape"] = tuple(v[16:16 + h["ndim"]])
    h["shape_rest"] = tuple(v[16 + h["ndim"]:])
    h["fields"] = []
    h["field_flags"] = []
    for i in range(h["nr_fields"]):
        name, off, count, kind, size, flags = _FIELD.unpack_from(buf, 256 + 48 * i)
        h["fields"].append((name.split(b"\0", 1)[0].decode(), off, count, chr(kind), size))
        h["field_flags"].append(flags)
    return h


def element_dtype(h: dict) -> np.dtype:
    """The element dtype the header describes (what a reader builds from the field table)."""
    if not h["flags"] & F_RECORD:
        (_, _, _, kind, size), = h["fields"]
        return np.dtype(f"{kind}{size}")
    return np.dtype({"names": [f[0] for f in h["fields"]],
                     "formats": [(np.dtype(f"{f[3]}{f[4]}"), (f[2],)) if fl & 1
                                 else np.dtype(f"{f[3]}{f[4]}")
                                 for f, fl in zip(h["fields"], h["field_flags"], strict=True)],
                     "offsets": [f[1] for f in h["fields"]],
                     "itemsize": h["itemsize"]})


def head(buf) -> int:
    return struct.unpack_from("=Q", buf, HEAD_OFFSET)[0]


@contextlib.contextmanager
def mapped(path: str = SELFTEST, length: int | None = None):
    """(fd, mmap, header) of a read-only mapping of the whole region (or `length` bytes)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with mmap.mmap(fd, PAGE, prot=mmap.PROT_READ) as first:
            h = header(first)
        m = mmap.mmap(fd, length or h["region_size"], prot=mmap.PROT_READ)
        try:
            yield fd, m, h
        finally:
            m.close()
    finally:
        os.close(fd)


def read_param(name: str) -> str:
    with open(f"{PARAMS}/{name}") as f:
        return f.read().strip()


def write_param(name: str, value) -> None:
    with open(f"{PARAMS}/{name}", "w") as f:
        f.write(f"{value}\n")


def _tool(name: str) -> list[str]:
    if shutil.which(name):
        return [name]
    if shutil.which("busybox"):
        return ["busybox", name]
    pytest.skip(f"no {name} (nor busybox) in the guest")


def rmmod() -> subprocess.CompletedProcess:
    gc.collect()  # mappings held only by garbage would keep the module busy
    return subprocess.run(_tool("rmmod") + ["seqshm"], capture_output=True, text=True)


def insmod(*params: str) -> None:
    ko = os.environ.get("SEQSHM_KO")
    if not ko or not os.path.exists(ko):
        pytest.skip("SEQSHM_KO does not name the module file: cannot reload it")
    r = subprocess.run(_tool("insmod") + [ko, *params], capture_output=True, text=True)
    assert r.returncode == 0, f"insmod {ko} {' '.join(params)}: {r.stdout}{r.stderr}"
    wait_for(lambda: os.path.exists(SELFTEST) and os.path.exists(CPUSTAT), 5.0, "devices")


def loaded() -> bool:
    return os.path.isdir("/sys/module/seqshm")


def wait_for(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def rate(fd: int, seconds: float) -> float:
    """Writes per second of the channel over `seconds`, from SEQSHM_IOC_STATS."""
    w0, t0 = stats(fd).writes, time.monotonic()
    time.sleep(seconds)
    w1, t1 = stats(fd).writes, time.monotonic()
    return (w1 - w0) / (t1 - t0)


@pytest.fixture
def dev():
    return SimpleNamespace(**{k: v for k, v in globals().items() if not k.startswith("__")})


@pytest.fixture
def fd():
    """A read-only file of the selftest channel, closed afterwards."""
    fd = os.open(SELFTEST, os.O_RDONLY)
    yield fd
    os.close(fd)


@pytest.fixture
def module_params():
    """reload(*params): reload seqshm with these parameters; defaults are back afterwards."""
    changed = []

    def reload(*params: str) -> None:
        changed.append(params)
        r = rmmod()
        assert r.returncode == 0, f"rmmod: {r.stdout}{r.stderr}"
        insmod(*params)

    yield reload
    if changed:
        if loaded():
            rmmod()
        insmod()


@pytest.fixture
def reloadable(dev):
    """For a test that unloads the module itself: loaded again afterwards if it is not."""
    if not os.environ.get("SEQSHM_KO"):
        pytest.skip("SEQSHM_KO is not set: cannot reload the module")
    yield
    if not dev.loaded():
        dev.insmod()


@pytest.fixture
def selftest_period():
    """set(us): change selftest_period_us at run time; restored afterwards."""
    old = read_param("selftest_period_us")
    yield lambda us: write_param("selftest_period_us", us)
    if loaded():
        write_param("selftest_period_us", old)


def expect_errno(code: int):
    """pytest.raises(OSError) that also checks the errno."""
    return _ErrnoRaises(code)


class _ErrnoRaises:
    def __init__(self, code: int):
        self.code = code

    def __enter__(self):
        return self

    def __exit__(self, typ, val, tb):
        if typ is None:
            raise AssertionError(f"expected {errno.errorcode[self.code]}, nothing was raised")
        if not issubclass(typ, OSError):
            return False
        assert val.errno == self.code, (
            f"expected {errno.errorcode[self.code]}, got {errno.errorcode.get(val.errno)}: {val}")
        return True


APITEST_SYS = "/sys/module/seqshm_apitest"


def built_test_module(name: str) -> str:
    """<name>.ko, a test-only module built beside $SEQSHM_KO (skip if it was not built)."""
    ko = os.environ.get("SEQSHM_KO", "")
    path = os.path.join(os.path.dirname(ko), f"{name}.ko")
    if not ko or not os.path.exists(path):
        pytest.skip(f"no {name}.ko beside $SEQSHM_KO")
    return path


@contextlib.contextmanager
def loaded_test_module(name: str, *params: str):
    """<name>.ko (see built_test_module()) loaded with `params` for the block and unloaded
    after it; yields its path."""
    path = built_test_module(name)
    r = subprocess.run(_tool("insmod") + [path, *params], capture_output=True, text=True)
    assert r.returncode == 0, f"insmod {path} {' '.join(params)}: {r.stdout}{r.stderr}"
    try:
        yield path
    finally:
        if os.path.isdir(f"/sys/module/{name}"):
            subprocess.run(_tool("rmmod") + [name], capture_output=True)


@pytest.fixture
def apitest(dev):
    """seqshm_apitest.ko loaded for the test, unloaded after it."""
    with loaded_test_module("seqshm_apitest") as path:
        yield path
