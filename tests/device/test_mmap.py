"""The device's mapping: read-only in every way, offset 0, any length up to the region."""

import errno
import mmap
import os
import subprocess
import sys
import time

import pytest

if not os.path.isdir("/dev/seqshm"):
    pytest.skip("no /dev/seqshm: the seqshm module is not loaded here (runs in the VM)",
                allow_module_level=True)


def test_header_describes_selftest_region(dev):
    with dev.mapped() as (_, m, h):
        assert h["magic"] == dev.MAGIC
        assert h["abi_version"] == dev.ABI_VERSION
        assert h["header_size"] == dev.HEADER_SIZE
        assert h["name"] == "selftest"
        assert h["clock_id"] == dev.CLOCK_MONOTONIC
        assert h["writer_pid"] == 0
        assert h["flags"] == 0
        n = h["nr_slots"]
        assert n >= 1 and n & (n - 1) == 0
        payload = int(dev.read_param("selftest_bytes"))
        assert h["payload_size"] == payload
        assert h["slot_stride"] == -(-payload // 64) * 64
        slots_end = dev.HEADER_SIZE + n * dev.SLOT_SIZE
        assert h["payload_offset"] == -(-slots_end // 4096) * 4096
        end = h["payload_offset"] + n * h["slot_stride"]
        assert h["region_size"] == -(-end // dev.PAGE) * dev.PAGE
        assert len(m) == h["region_size"]
        assert (h["itemsize"], h["nr_fields"], h["ndim"]) == (8, 1, 1)
        assert h["shape"] == (payload // 8,)
        assert h["fields"] == [("", 0, 1, "u", 8)]
        assert not any(h["shape_rest"]) and h["reserved0"] == 0


def test_header_describes_cpustat_records(dev):
    with dev.mapped(dev.CPUSTAT) as (_, _m, h):
        assert h["name"] == "cpustat"
        assert h["flags"] & dev.F_RECORD
        names = [f[0] for f in h["fields"]]
        assert names[:10] == ["user_ns", "nice_ns", "system_ns", "idle_ns", "iowait_ns",
                              "irq_ns", "softirq_ns", "steal_ns", "guest_ns", "guest_nice_ns"]
        assert "online" in names
        assert all(f[3] == "u" and f[4] == 8 and f[2] == 1 for f in h["fields"])
        assert h["ndim"] == 1 and h["shape"][0] >= os.cpu_count()
        assert h["payload_size"] == h["itemsize"] * h["shape"][0]


def test_prot_write_on_rdwr_file_is_eacces(dev):
    fd = os.open(dev.SELFTEST, os.O_RDWR)
    try:
        with dev.expect_errno(errno.EACCES):
            dev.raw_mmap(fd, dev.PAGE, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


def test_prot_write_on_rdonly_file_is_eacces(dev):
    fd = os.open(dev.SELFTEST, os.O_RDONLY)
    try:
        with dev.expect_errno(errno.EACCES):
            dev.raw_mmap(fd, dev.PAGE, mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


@pytest.mark.parametrize("flags", [mmap.MAP_SHARED, mmap.MAP_PRIVATE], ids=["shared", "private"])
def test_mprotect_to_write_is_eacces(dev, flags):
    fd = os.open(dev.SELFTEST, os.O_RDWR)
    try:
        addr = dev.raw_mmap(fd, dev.PAGE, mmap.PROT_READ, flags=flags)
        try:
            rc = dev.libc.mprotect(addr, dev.PAGE, mmap.PROT_READ | mmap.PROT_WRITE)
            assert rc == -1 and dev.ctypes.get_errno() == errno.EACCES
        finally:
            dev.raw_munmap(addr, dev.PAGE)
    finally:
        os.close(fd)


def test_write_syscall_is_refused(dev):
    for mode, code in ((os.O_RDONLY, errno.EBADF), (os.O_RDWR, errno.EINVAL)):
        fd = os.open(dev.SELFTEST, mode)
        try:
            with dev.expect_errno(code):
                os.write(fd, b"\0" * 8)
        finally:
            os.close(fd)


def test_nonzero_offset_is_einval(dev):
    fd = os.open(dev.SELFTEST, os.O_RDONLY)
    try:
        with dev.expect_errno(errno.EINVAL):
            dev.raw_mmap(fd, dev.PAGE, mmap.PROT_READ, offset=dev.PAGE)
    finally:
        os.close(fd)


def test_length_beyond_region_is_einval(dev):
    with dev.mapped() as (fd, _m, h):
        with dev.expect_errno(errno.EINVAL):
            dev.raw_mmap(fd, h["region_size"] + dev.PAGE, mmap.PROT_READ)
        with dev.expect_errno(errno.EINVAL):
            dev.raw_mmap(fd, 1 << 40, mmap.PROT_READ)


def test_every_length_up_to_region_is_accepted(dev):
    with dev.mapped() as (fd, _m, h):
        for length in range(dev.PAGE, h["region_size"] + 1, dev.PAGE):
            addr = dev.raw_mmap(fd, length, mmap.PROT_READ)
            dev.raw_munmap(addr, length)
        # A length that is not a page multiple is rounded up by mmap(2), as for any file.
        addr = dev.raw_mmap(fd, 100, mmap.PROT_READ)
        dev.raw_munmap(addr, 100)


def test_mapping_cannot_grow_with_mremap(dev):
    with dev.mapped() as (fd, _m, h):
        addr = dev.raw_mmap(fd, dev.PAGE, mmap.PROT_READ)
        try:
            libc = dev.libc
            libc.mremap.restype = dev.ctypes.c_void_p
            libc.mremap.argtypes = [dev.ctypes.c_void_p, dev.ctypes.c_size_t,
                                    dev.ctypes.c_size_t, dev.ctypes.c_int]
            MREMAP_MAYMOVE = 1
            r = libc.mremap(addr, dev.PAGE, 2 * dev.PAGE, MREMAP_MAYMOVE)
            assert r == dev.MAP_FAILED
            assert dev.ctypes.get_errno() == errno.EFAULT  # VM_DONTEXPAND
        finally:
            dev.raw_munmap(addr, dev.PAGE)


def test_mappings_are_counted_and_released(dev):
    fd = os.open(dev.SELFTEST, os.O_RDONLY)
    try:
        before = dev.stats(fd)
        addr = dev.raw_mmap(fd, dev.PAGE, mmap.PROT_READ)
        during = dev.stats(fd)
        dev.raw_munmap(addr, dev.PAGE)
        after = dev.stats(fd)
        assert during.mmaps == before.mmaps + 1
        assert during.maps_active == before.maps_active + 1
        assert after.maps_active == before.maps_active
    finally:
        os.close(fd)


MADVISE_CHILD = r"""
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
flags = mmap.MAP_PRIVATE if sys.argv[2] == "private" else mmap.MAP_SHARED
with mmap.mmap(fd, 4096, prot=mmap.PROT_READ) as first:
    size = int.from_bytes(first[16:24], "little")
m = mmap.mmap(fd, size, flags=flags, prot=mmap.PROT_READ)
before = m[:]
m.madvise(mmap.MADV_DONTNEED)  # zaps every page of the mapping
after = m[:]                   # SIGBUS here without a fault handler
sys.stdout.buffer.write(b"%d %d\n" % (before == after, len(after)))
"""


@pytest.mark.parametrize("kind", ["shared", "private"])
def test_mapping_reads_again_after_madvise_dontneed(dev, selftest_period, kind):
    """madvise(MADV_DONTNEED) drops the mapping's pages; the next access maps the region's
    pages again (a fault handler), with the same bytes, and the mapping stays read-only. In
    a child process, so that a SIGBUS fails this test rather than killing pytest."""
    selftest_period(0)  # nothing changes between the two copies
    time.sleep(0.05)
    r = subprocess.run([sys.executable, "-c", MADVISE_CHILD, dev.SELFTEST, kind],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"child died (rc {r.returncode}, -7 is SIGBUS): {r.stderr}"
    same, size = map(int, r.stdout.split())
    assert same == 1, "the bytes read after MADV_DONTNEED differ from those before"
    with dev.mapped() as (fd, m, h):
        assert size == h["region_size"]
        m.madvise(mmap.MADV_DONTNEED)
        h2 = dev.header(m)
        assert h2 == h and h2["magic"] == dev.MAGIC
        off = h["payload_offset"] + (dev.head(m) & (h["nr_slots"] - 1)) * h["slot_stride"]
        assert m[off:off + h["payload_size"]] == os.read(fd, h["payload_size"])
        # Refaulted pages are as read-only as the first ones.
        addr = dev.raw_mmap(fd, dev.PAGE, mmap.PROT_READ)
        try:
            dev.libc.madvise.argtypes = [dev.ctypes.c_void_p, dev.ctypes.c_size_t,
                                         dev.ctypes.c_int]
            assert dev.libc.madvise(addr, dev.PAGE, mmap.MADV_DONTNEED) == 0
            assert dev.ctypes.string_at(addr, 8) == dev.MAGIC.to_bytes(8, "little")
            rc = dev.libc.mprotect(addr, dev.PAGE, mmap.PROT_READ | mmap.PROT_WRITE)
            assert rc == -1 and dev.ctypes.get_errno() == errno.EACCES
        finally:
            dev.raw_munmap(addr, dev.PAGE)
