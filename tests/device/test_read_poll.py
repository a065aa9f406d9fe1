"""read(): one consistent copy of the newest payload; poll(): readable when a newer version is
published than this open file has seen."""

import errno
import os
import select
import time

import numpy as np
import pytest

if not os.path.isdir("/dev/seqshm"):
    pytest.skip("no /dev/seqshm: the seqshm module is not loaded here (runs in the VM)",
                allow_module_level=True)


def _read_one(fd, n):
    """One read() that succeeds: EAGAIN is read()'s documented answer when the writer kept
    the slot busy through its bounded retries (a preempted TCG vCPU on a loaded host can see
    that several times in a row), so it is asked again."""
    for _ in range(1000):
        try:
            return os.read(fd, n)
        except BlockingIOError:
            time.sleep(0.001)
    raise AssertionError("read() gave up with EAGAIN 1000 times in a row")


def test_read_returns_whole_pattern_of_one_write(dev, fd):
    """Every read() is one whole write. It may give up with EAGAIN (bounded retries), which
    must not be the common answer with the default 100 us writer (the bound is loose: under
    TCG on a loaded host a preempted vCPU sees bursts of them; a rate is the benchmarks')."""
    n = dev.info(fd).payload_size
    busy = 0
    for _ in range(2000):
        before = dev.stats(fd).writes
        try:
            data = os.read(fd, n + 100)
        except BlockingIOError:
            busy += 1
            assert busy <= 1000, "read() gave up with EAGAIN on more than half of the calls"
            continue
        after = dev.stats(fd).writes
        assert len(data) == n
        words = np.frombuffer(data, dtype=np.uint64)
        assert (words == words[0]).all(), "read() returned a torn copy"
        assert before <= words[0] <= after
        assert dev.info(fd).seen == words[0]


def test_read_shorter_than_payload_is_einval(dev, fd):
    n = dev.info(fd).payload_size
    with dev.expect_errno(errno.EINVAL):
        os.read(fd, n - 1)
    with dev.expect_errno(errno.EINVAL):
        os.read(fd, 0)


def test_read_into_bad_buffer_is_efault(dev, fd):
    n = dev.info(fd).payload_size
    libc = dev.libc
    libc.read.argtypes = [dev.ctypes.c_int, dev.ctypes.c_void_p, dev.ctypes.c_size_t]
    libc.read.restype = dev.ctypes.c_ssize_t
    assert libc.read(fd, 8, n) == -1
    assert dev.ctypes.get_errno() == errno.EFAULT


def test_file_is_a_stream(dev, fd):
    n = dev.info(fd).payload_size
    with dev.expect_errno(errno.ESPIPE):
        os.lseek(fd, 0, os.SEEK_SET)
    with dev.expect_errno(errno.ESPIPE):
        os.pread(fd, n, 0)
    a = np.frombuffer(_read_one(fd, n), dtype=np.uint64)[0]
    time.sleep(0.01)
    b = np.frombuffer(_read_one(fd, n), dtype=np.uint64)[0]
    assert b > a, "every read() takes a fresh copy"


def test_poll_readable_for_new_file(dev, fd):
    p = select.poll()
    p.register(fd, select.POLLIN)
    assert p.poll(1000) == [(fd, select.POLLIN)]
    p.modify(fd, select.POLLRDNORM)
    assert p.poll(1000) == [(fd, select.POLLRDNORM)]


def test_poll_wakes_on_publish(dev, fd, selftest_period):
    selftest_period(0)  # stopped: nothing new is published
    time.sleep(0.05)
    dev.info(fd, flags=dev.INFO_ACK)
    p = select.poll()
    p.register(fd, select.POLLIN)
    assert p.poll(200) == [], "readable with nothing new published"
    w0 = dev.stats(fd).poll_wakeups
    t0 = time.monotonic()
    selftest_period(100000)  # the first write lands 100 ms from now
    ev = p.poll(5000)
    waited = time.monotonic() - t0
    assert ev == [(fd, select.POLLIN)]
    assert 0.05 < waited < 4.0
    assert dev.stats(fd).poll_wakeups > w0


def test_select_sees_new_version_after_read(dev, fd):
    n = dev.info(fd).payload_size
    _read_one(fd, n)
    r, _, _ = select.select([fd], [], [], 5.0)
    assert r == [fd]


def test_read_marks_version_seen(dev, fd, selftest_period):
    n = dev.info(fd).payload_size
    selftest_period(0)
    time.sleep(0.05)
    os.read(fd, n)
    p = select.poll()
    p.register(fd, select.POLLIN)
    assert p.poll(100) == []


def test_readv_returns_one_payload_whatever_the_buffers(dev, fd):
    """One read call is one payload: readv() scatters one consistent copy over its buffers in
    order (the VFS would otherwise call read once per buffer and return several copies)."""
    n = dev.info(fd).payload_size
    a, b = bytearray(n), bytearray(b"\xaa" * n)
    assert os.readv(fd, [a, b]) == n
    words = np.frombuffer(a, dtype=np.uint64)
    assert words[0] > 0 and (words == words[0]).all()
    assert b == b"\xaa" * n, "readv() wrote a second copy into the second buffer"
    assert dev.info(fd).seen == words[0]
    # Split across buffers: still one copy, in order.
    parts = [bytearray(8), bytearray(n // 2 - 8), bytearray(n - n // 2)]
    assert os.readv(fd, parts) == n
    words = np.frombuffer(b"".join(parts), dtype=np.uint64)
    assert (words == words[0]).all(), "the copy scattered over three buffers is torn"
    # Too little room in all of them together: EINVAL, as for read().
    with dev.expect_errno(errno.EINVAL):
        os.readv(fd, [bytearray(n // 2), bytearray(n // 2 - 8)])
