"""SEQSHM_IOC_INFO and SEQSHM_IOC_STATS, and what the device does with bad ioctls."""

import ctypes
import errno
import os

import pytest

if not os.path.isdir("/dev/seqshm"):
    pytest.skip("no /dev/seqshm: the seqshm module is not loaded here (runs in the VM)",
                allow_module_level=True)


def test_info_matches_header(dev):
    with dev.mapped() as (fd, m, h):
        i = dev.info(fd)
        assert i.size == ctypes.sizeof(dev.IocInfo)
        assert i.flags == 0
        assert i.abi_version == h["abi_version"]
        assert i.nr_slots == h["nr_slots"]
        assert i.region_size == h["region_size"]
        assert i.payload_offset == h["payload_offset"]
        assert i.payload_size == h["payload_size"]
        assert i.slot_stride == h["slot_stride"]
        assert i.head <= dev.head(m)
        assert list(i.reserved) == [0, 0, 0, 0]


def test_info_ack_records_head_as_seen(dev, fd):
    assert dev.info(fd).seen == 0
    i = dev.info(fd, flags=dev.INFO_ACK)
    assert i.seen == i.head > 0
    assert dev.info(fd).seen == i.head


def test_stats_count_opens_reads_and_writes(dev, fd):
    s0 = dev.stats(fd)
    fd2 = os.open(dev.SELFTEST, os.O_RDONLY)
    os.read(fd2, dev.info(fd2).payload_size)
    os.close(fd2)
    s1 = dev.stats(fd)
    assert s1.opens == s0.opens + 1
    assert s1.reads == s0.reads + 1
    assert s1.writes >= s0.writes
    assert s1.size == ctypes.sizeof(dev.IocStats)
    assert list(s1.reserved) == [0] * 7


@pytest.mark.parametrize("cmd", [
    0,
    0x5401,                                   # TCGETS: a tty ioctl
    (3 << 30) | (96 << 16) | (0xBC << 8) | 7,  # our type, unknown number
    (2 << 30) | (96 << 16) | (0xBC << 8) | 0,  # INFO's number, wrong direction
    (3 << 30) | (8 << 16) | (0xBC << 8) | 0,   # INFO's number, smaller than version 0
])
def test_unknown_command_is_enotty(dev, fd, cmd):
    buf = (ctypes.c_uint8 * 256)()
    with dev.expect_errno(errno.ENOTTY):
        dev.raw_ioctl(fd, cmd, buf)


@pytest.mark.parametrize("flags", [2, 1 << 31, 0xFFFFFFFF])
def test_info_unknown_flags_are_einval(dev, fd, flags):
    i = dev.IocInfo(size=ctypes.sizeof(dev.IocInfo), flags=flags)
    with dev.expect_errno(errno.EINVAL):
        dev.raw_ioctl(fd, dev.IOC_INFO, i)


def test_stats_any_flag_is_einval(dev, fd):
    s = dev.IocStats(size=ctypes.sizeof(dev.IocStats), flags=1)
    with dev.expect_errno(errno.EINVAL):
        dev.raw_ioctl(fd, dev.IOC_STATS, s)


@pytest.mark.parametrize("which", range(4))
def test_info_nonzero_reserved_is_einval(dev, fd, which):
    i = dev.IocInfo(size=ctypes.sizeof(dev.IocInfo))
    i.reserved[which] = 1
    with dev.expect_errno(errno.EINVAL):
        dev.raw_ioctl(fd, dev.IOC_INFO, i)


def test_stats_nonzero_reserved_is_einval(dev, fd):
    s = dev.IocStats(size=ctypes.sizeof(dev.IocStats))
    s.reserved[6] = 1
    with dev.expect_errno(errno.EINVAL):
        dev.raw_ioctl(fd, dev.IOC_STATS, s)


@pytest.mark.parametrize("size", [0, 8, 95, 97, 1 << 20])
def test_size_field_not_matching_command_is_einval(dev, fd, size):
    i = dev.IocInfo(size=size)
    with dev.expect_errno(errno.EINVAL):
        dev.raw_ioctl(fd, dev.IOC_INFO, i)


@pytest.mark.parametrize("addr", [0, 8, 0xFFFF_FFFF_FFFF_F000])
def test_bad_pointer_is_efault(dev, fd, addr):
    with dev.expect_errno(errno.EFAULT):
        dev.raw_ioctl(fd, dev.IOC_INFO, addr)
    with dev.expect_errno(errno.EFAULT):
        dev.raw_ioctl(fd, dev.IOC_STATS, addr)


def test_larger_struct_from_newer_caller(dev, fd):
    """A newer caller's larger structure: accepted with a zero tail, E2BIG with a nonzero one;
    the kernel says how many bytes it filled."""
    big = ctypes.sizeof(dev.IocInfo) + 32
    cmd = (3 << 30) | (big << 16) | (0xBC << 8) | 0
    buf = (ctypes.c_uint8 * big)()
    ctypes.c_uint32.from_buffer(buf, 0).value = big
    dev.raw_ioctl(fd, cmd, buf)
    assert ctypes.c_uint32.from_buffer(buf, 0).value == ctypes.sizeof(dev.IocInfo)
    assert ctypes.c_uint32.from_buffer(buf, 8).value == dev.ABI_VERSION
    assert bytes(buf[ctypes.sizeof(dev.IocInfo):]) == bytes(32)
    buf[big - 1] = 1
    ctypes.c_uint32.from_buffer(buf, 0).value = big
    with dev.expect_errno(errno.E2BIG):
        dev.raw_ioctl(fd, cmd, buf)


def test_garbage_ioctls_leave_the_writer_running(dev, fd):
    w0 = dev.stats(fd).writes
    junk = (ctypes.c_uint8 * 4096)(*([0xA5] * 4096))
    for nr in range(256):
        for size in (0, 8, 96, 128, 4095):
            cmd = (3 << 30) | (size << 16) | (0xBC << 8) | nr
            try:
                dev.raw_ioctl(fd, cmd, junk)
            except OSError as e:
                assert e.errno in (errno.ENOTTY, errno.EINVAL, errno.E2BIG)
    dev.wait_for(lambda: dev.stats(fd).writes > w0, 5.0, "a write after the junk")
