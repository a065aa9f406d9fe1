"""Kernel side, inside the QEMU guest: the module's selftest channel read through the read-only
mmap (seqshm's reader) beside the device's ``read()`` (the kernel copies under its seqlock),
per payload size, with the selftest hrtimer writing every 100 us.

Skipped where no seqshm module is loaded (the host). In the guest (see benchmarks/README.md
for the command) the module is reloaded with ``selftest_bytes`` set per payload size, which
needs ``SEQSHM_KO`` as the guest harness sets it. Under TCG every instruction is emulated:
a system call costs ~0.7 us and the kernel's rep-string copies run ~6x slower than glibc's
memcpy, so read the ratios, not the times, and expect them to differ on real hardware.
The seed answer's mutex-through-ioctl design has no implementation in module/ to compare.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import time

import numpy as np
import pytest
from benchutil import KiB, finish, loop_count, looped, setup, size_id

import seqshm

SELFTEST = "/dev/seqshm/selftest"
SIZES = [64, 4 * KiB, 64 * KiB]
CASES = [
    "noop",               # r._noop(): a call into the extension
    "mmap_copy_unlocked", # r._copy_unlocked(out): memcpy from the mapping, no seqlock
    "mmap_snapshot_out",  # r.snapshot(out): seqlock read through the mapping (baseline)
    "mmap_snapshot",      # r.snapshot(): a new array each call
    "read_into",          # os.readv(fd, [out]): the device's read(), into a preallocated array
    "read_bytes",         # os.read(fd, n): the device's read(), a new bytes object each call
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


@pytest.fixture(scope="module", params=SIZES, ids=size_id)
def selftest(request):
    nbytes = request.param
    _reload(f"selftest_bytes={nbytes}")
    time.sleep(0.05)  # let the hrtimer publish
    yield nbytes
    if request.param == SIZES[-1]:
        _reload()  # the defaults back for whatever runs next


@pytest.mark.parametrize("case", CASES)
def test_kernel(benchmark, selftest, case):
    nbytes = selftest
    r = seqshm.open(SELFTEST)
    fd = os.open(SELFTEST, os.O_RDONLY)
    try:
        assert r.payload_size == nbytes
        out = np.empty(r.shape, r.dtype)
        n = loop_count(nbytes) // 10 or 1  # emulated: fewer calls per timed loop
        setup(benchmark, group=f"kernel {size_id(nbytes)}", case=case, nbytes=nbytes,
              baseline=(case == "mmap_snapshot_out"), ops_per_call=n, section="kernel",
              kernel=os.uname().release, emulated="SEQSHM_IN_VM" in os.environ)
        fn, args = {
            "noop": (r._noop, ()),
            "mmap_copy_unlocked": (r._copy_unlocked, (out,)),
            "mmap_snapshot_out": (r.snapshot, (out,)),
            "mmap_snapshot": (r.snapshot, ()),
            "read_into": (os.readv, (fd, [out])),
            "read_bytes": (os.read, (fd, nbytes)),
        }[case]
        benchmark(looped(fn, *args, n=n))
        if case in ("mmap_snapshot_out", "read_into"):
            fn(*args)
            words = out.view(np.uint64)
            assert (words == words[0]).all()  # a consistent selftest pattern
    finally:
        os.close(fd)
        r.close()
    finish(benchmark)
