"""Kernel side, inside the QEMU guest: the module's selftest channel read through the read-only
mmap (seqshm's reader) beside the device's ``read()`` (the kernel copies under its seqlock),
per payload size, with the selftest hrtimer writing every 100 us.

Skipped where no seqshm module is loaded (the host). In the guest (see benchmarks/README.md
for the command) the module is reloaded with ``selftest_bytes`` set per payload size, which
needs ``SEQSHM_KO`` as the guest harness sets it. Under TCG every instruction is emulated:
a system call costs ~0.7 us and the kernel's rep-string copies run ~6x slower than glibc's
memcpy, so read the ratios, not the times, and expect them to differ on real hardware.

The seed answer's design, a lock taken with ``ioctl(LOCK)`` around a copy from a shared page
(module/bench/seqshm_bench_mutex.ko, one 4 KiB page, its hrtimer writer also every 100 us),
is measured when that module is loaded (``/dev/seqshm_bench_mutex``), with the share of
writer ticks it lost because a reader held the lock.
"""

from __future__ import annotations

import fcntl
import gc
import mmap
import os
import shutil
import struct
import subprocess
import time

import numpy as np
import pytest
from benchutil import KiB, finish, looped, setup, size_id

import seqshm
from seqshm import _hooks

SELFTEST = "/dev/seqshm/selftest"
CPUSTAT = "/dev/seqshm/cpustat"
MUTEX = "/dev/seqshm_bench_mutex"
MUTEX_LOCK = 0xB700      # _IO(0xB7, 0)
MUTEX_UNLOCK = 0xB701    # _IO(0xB7, 1)
MUTEX_STATS = (2 << 30) | (24 << 16) | (0xB7 << 8) | 2  # _IOR(0xB7, 2, __u64[3])
# (selftest_bytes, selftest_slots): a one-slot channel per size, and a ring at 64 KiB, where
# under TCG the emulated hrtimer write takes long enough to starve one-slot readers.
CHANNELS = [(64, 1), (4 * KiB, 1), (64 * KiB, 1), (64 * KiB, 8)]
READ_TIMEOUT = 0.05  # seconds; a starved read counts as a failed call
CASES = [
    "noop",               # _hooks.noop(r): a call into the extension
    "mmap_copy_unlocked", # _hooks.copy_unlocked(r, out): memcpy from the mapping, no seqlock
    "mmap_snapshot_out",  # r.snapshot(out): seqlock read through the mapping (baseline)
    "mmap_snapshot",      # r.snapshot(): a new array each call
    "read_into",          # os.readv(fd, [out]): the device's read(), into a preallocated array
    "read_bytes",         # os.read(fd, n): the device's read(), a new bytes object each call
    "ioctl_mutex",        # ioctl(LOCK); copy from the shared page; ioctl(UNLOCK) (<= 4 KiB)
]

pytestmark = pytest.mark.skipif(not os.path.exists(SELFTEST),
                                reason="needs the seqshm kernel module (the QEMU guest)")


def _tool(name):
    if shutil.which(name):
        return [name]
    return ["busybox", name]


def _reload(*params):
    ko = os.environ.get("SEQSHM_KO")
    if not ko or not os.path.exists(ko):
        pytest.skip("SEQSHM_KO does not name the module file: cannot reload it")
    gc.collect()  # mappings held only by garbage keep the module busy
    subprocess.run(_tool("rmmod") + ["seqshm"], check=True, capture_output=True)
    subprocess.run(_tool("insmod") + [ko, *params], check=True, capture_output=True)
    end = time.monotonic() + 5
    while not os.path.exists(SELFTEST):
        if time.monotonic() > end:
            raise AssertionError(f"{SELFTEST} did not appear after insmod")
        time.sleep(0.02)


@pytest.fixture(scope="module", params=CHANNELS,
                ids=lambda c: f"{size_id(c[0])}-slots{c[1]}")
def selftest(request):
    nbytes, slots = request.param
    _reload(f"selftest_bytes={nbytes}", f"selftest_slots={slots}")
    time.sleep(0.05)  # let the hrtimer publish
    yield nbytes, slots
    if request.param == CHANNELS[-1]:
        _reload()  # the defaults back for whatever runs next


def _mutex_stats(fd):
    return struct.unpack("3Q", fcntl.ioctl(fd, MUTEX_STATS, bytes(24)))


@pytest.fixture
def mutex_reader(selftest):
    """(reader_into(out) -> a read() filling out under the ioctl lock, stats()) for the seed
    answer's design."""
    nbytes, slots = selftest
    if slots != 1:
        pytest.skip("the ioctl-mutex model has one copy")
    if not os.path.exists(MUTEX):
        pytest.skip(f"{MUTEX} is not loaded (module/bench/seqshm_bench_mutex.ko)")
    if nbytes > mmap.PAGESIZE:
        pytest.skip("the ioctl-mutex model shares one page")
    fd = os.open(MUTEX, os.O_RDONLY)
    mm = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ)
    src = memoryview(mm)[:nbytes]
    ioctl = fcntl.ioctl

    def reader_into(out):
        dst = memoryview(out).cast("B")

        def read():
            ioctl(fd, MUTEX_LOCK)
            dst[:] = src
            ioctl(fd, MUTEX_UNLOCK)
            return out
        return read

    try:
        yield reader_into, lambda: _mutex_stats(fd)
    finally:
        src.release()
        mm.close()
        os.close(fd)


@pytest.mark.parametrize("case", CASES)
def test_kernel(benchmark, selftest, case, request):
    nbytes, slots = selftest
    mutex = request.getfixturevalue("mutex_reader") if case == "ioctl_mutex" else None
    r = seqshm.open(SELFTEST, timeout=READ_TIMEOUT)
    fd = os.open(SELFTEST, os.O_RDONLY)
    try:
        assert r.payload_size == nbytes
        out = np.empty(r.shape, r.dtype)
        n = 20  # calls per timed loop: emulated calls are slow, copies slower
        setup(benchmark, group=f"kernel {size_id(nbytes)} nr_slots={slots}", case=case,
              nbytes=nbytes, baseline=(case == "mmap_snapshot_out"), ops_per_call=n,
              section="kernel", nr_slots=slots, kernel=os.uname().release,
              emulated="SEQSHM_IN_VM" in os.environ)
        fn, args = {
            "noop": (_hooks.noop, (r,)),
            "mmap_copy_unlocked": (_hooks.copy_unlocked, (r, out)),
            "mmap_snapshot_out": (r.snapshot, (out,)),
            "mmap_snapshot": (r.snapshot, ()),
            "read_into": (os.readv, (fd, [out])),
            "read_bytes": (os.read, (fd, nbytes)),
            "ioctl_mutex": (mutex and mutex[0](out), ()),
        }[case]
        failed = [0, 0]  # calls, failed calls (ReadTimeout, or EAGAIN from the device's read)

        def call():
            failed[0] += 1
            try:
                fn(*args)
            except (seqshm.ReadTimeout, BlockingIOError):
                failed[1] += 1

        before = mutex[1]() if mutex else None
        head0, t0 = r.head, time.monotonic()
        benchmark(looped(call, n=n))  # every case pays the same wrapper
        # The selftest writer's rate while this reader ran (nominal 1 / selftest_period_us):
        # seqshm's writer never waits on readers, so it should not fall with the read method.
        extra = {"calls": failed[0], "failed_calls": failed[1],
                 "writer_writes_per_s": (r.head - head0) / (time.monotonic() - t0)}
        if mutex:
            w0, s0, _ = before
            w1, s1, _ = mutex[1]()
            ticks = (w1 - w0) + (s1 - s0)
            extra["writer_ticks_lost"] = (s1 - s0) / ticks if ticks else None
        if case in ("mmap_snapshot_out", "read_into", "ioctl_mutex"):
            try:
                fn(*args)
            except (seqshm.ReadTimeout, BlockingIOError):
                pass  # starved (counted above); nothing to check
            else:
                words = out.view(np.uint64)
                assert (words == words[0]).all()  # a consistent pattern
    finally:
        os.close(fd)
        r.close()
    finish(benchmark, **extra)


CPUSTAT_CASES = {
    "cpustat_snapshot": "snapshot()",  # baseline: a new array each call
    "cpustat_snapshot_out": "snapshot(out)",
    "psutil_cpu_times_percpu": "psutil.cpu_times(percpu=True): reads and parses /proc/stat",
}


@pytest.mark.parametrize("case", CPUSTAT_CASES)
def test_kernel_cpustat(benchmark, case):
    """Per-CPU times from the module's cpustat channel beside psutil, in the same guest."""
    if not os.path.exists(CPUSTAT):
        pytest.skip(f"no {CPUSTAT}")
    psutil = pytest.importorskip("psutil") if case.startswith("psutil") else None
    r = seqshm.open(CPUSTAT)
    try:
        out = r.snapshot()
        n = 20
        setup(benchmark, group="kernel cpustat per-CPU times", case=case,
              nbytes=r.payload_size, baseline=(case == "cpustat_snapshot"), ops_per_call=n,
              section="kernel", kernel=os.uname().release, cpus=r.shape[0],
              emulated="SEQSHM_IN_VM" in os.environ)
        fn, args = {
            "cpustat_snapshot": (r.snapshot, ()),
            "cpustat_snapshot_out": (r.snapshot, (out,)),
            "psutil_cpu_times_percpu": (psutil and psutil.cpu_times, (True,)),
        }[case]
        benchmark(looped(fn, *args, n=n))
        assert r.snapshot()["online"].any()  # real per-CPU records
    finally:
        r.close()
    finish(benchmark)
