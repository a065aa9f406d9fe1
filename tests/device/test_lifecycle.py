"""Module lifetime: rmmod is refused while a file or mapping is alive and clean afterwards;
load-time parameters shape the selftest channel. These tests reload the module."""

import errno
import mmap
import os
import select
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

if not os.path.isdir("/dev/seqshm"):
    pytest.skip("no /dev/seqshm: the seqshm module is not loaded here (runs in the VM)",
                allow_module_level=True)


def test_rmmod_refused_while_mapped_and_clean_after(dev, reloadable):
    fd = os.open(dev.SELFTEST, os.O_RDONLY)
    m = mmap.mmap(fd, dev.PAGE, prot=mmap.PROT_READ)
    os.close(fd)  # only the mapping holds the file now
    r = dev.rmmod()
    assert r.returncode != 0, "rmmod succeeded while the region was mapped"
    assert dev.loaded() and os.path.exists(dev.SELFTEST)
    assert dev.header(m)["magic"] == dev.MAGIC
    m.close()
    r = dev.rmmod()
    assert r.returncode == 0, f"rmmod after unmapping: {r.stdout}{r.stderr}"
    assert not dev.loaded()
    assert not os.path.exists(dev.SELFTEST)
    dev.insmod()
    assert dev.loaded()


def test_rmmod_refused_while_open(dev, reloadable):
    fd = os.open(dev.CPUSTAT, os.O_RDONLY)
    try:
        assert dev.rmmod().returncode != 0
    finally:
        os.close(fd)
    assert dev.rmmod().returncode == 0
    dev.insmod()


def test_mapping_in_killed_process_is_released(dev, reloadable):
    """A reader killed with its mapping in place (and a read() in flight) pins nothing."""
    code = ("import mmap, os\n"
            f"fd = os.open({dev.SELFTEST!r}, os.O_RDONLY)\n"
            "m = mmap.mmap(fd, 4096, prot=mmap.PROT_READ)\n"
            "print('ready', flush=True)\n"
            "while True: os.read(fd, 1 << 24)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout.readline().strip() == b"ready"
    time.sleep(0.1)
    child.kill()
    child.wait()
    child.stdout.close()
    assert dev.rmmod().returncode == 0
    dev.insmod()


def test_ring_and_size_parameters(dev, module_params, selftest_period):
    module_params("selftest_slots=8", "selftest_bytes=65536", "selftest_period_us=50")
    with dev.mapped() as (fd, m, h):
        assert (h["nr_slots"], h["payload_size"], h["shape"]) == (8, 65536, (8192,))
        assert h["payload_offset"] == 4096
        assert h["region_size"] == 4096 + 8 * 65536
        data = np.frombuffer(os.read(fd, 65536), dtype=np.uint64)
        assert (data == data[0]).all()
        time.sleep(0.1)
        selftest_period(0)  # stop the writer: the ring then holds the last 8 writes
        time.sleep(0.05)
        hd = dev.head(m)
        assert hd > 8
        seen = set()
        for s in range(8):
            seq, _, write_seq, ts = struct.unpack_from("=IIQQ", m, dev.HEADER_SIZE + 64 * s)
            assert seq % 2 == 0 and seq > 0
            assert write_seq % 8 == s and hd - 8 < write_seq <= hd
            off = h["payload_offset"] + s * h["slot_stride"]
            words = np.frombuffer(m[off:off + 65536], dtype=np.uint64)
            assert (words == write_seq).all()
            seen.add(write_seq)
        assert seen == set(range(hd - 7, hd + 1))


@pytest.mark.parametrize("bad", ["selftest_bytes=12", "selftest_bytes=0",
                                 "selftest_bytes=33554432", "selftest_slots=3",
                                 "selftest_slots=2048", "selftest_period_us=5"])
def test_bad_load_parameters_refuse_to_load(dev, reloadable, bad):
    assert dev.rmmod().returncode == 0
    r = subprocess.run(dev._tool("insmod") + [os.environ["SEQSHM_KO"], bad],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert not dev.loaded()
    dev.insmod()


@pytest.mark.parametrize("param,bad", [("selftest_period_us", "5"),
                                       ("selftest_period_us", "x"),
                                       ("cpustat_hz", "1001"), ("cpustat_hz", "-1")])
def test_bad_runtime_parameters_are_einval(dev, param, bad):
    old = dev.read_param(param)
    with pytest.raises(OSError):
        dev.write_param(param, bad)
    assert dev.read_param(param) == old


@pytest.mark.parametrize("param", ["selftest_period_us", "selftest_bytes", "selftest_slots",
                                   "cpustat_hz"])
@pytest.mark.parametrize("bad", [str(2**32), str(2**64), "99999999999999999999999"])
def test_parameter_too_large_for_its_type_is_einval(dev, param, bad):
    """A number of 2^32 or more is a bad value like any other: EINVAL (kstrtouint() alone
    says ERANGE), and the old value stays."""
    old = dev.read_param(param)
    with dev.expect_errno(errno.EINVAL):
        dev.write_param(param, bad)
    assert dev.read_param(param) == old


def test_load_parameter_too_large_is_einval(dev, reloadable):
    assert dev.rmmod().returncode == 0
    r = subprocess.run(dev._tool("insmod") + [os.environ["SEQSHM_KO"],
                                              f"selftest_period_us={2**32}"],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert not dev.loaded()
    # busybox insmod and kmod print strerror() of the load's error
    assert "Invalid argument" in r.stdout + r.stderr, r.stdout + r.stderr
    dev.insmod()


@pytest.mark.parametrize("param,bad", [("selftest_bytes", "12"), ("selftest_bytes", "0"),
                                       ("selftest_slots", "3"), ("selftest_slots", "0")])
def test_bad_geometry_at_run_time_is_einval_and_keeps_channel(dev, param, bad):
    with dev.mapped() as (fd, m, h):
        with pytest.raises(OSError):
            dev.write_param(param, bad)
        assert dev.info(fd).payload_size == h["payload_size"]
        assert len(os.read(fd, h["payload_size"])) == h["payload_size"]


@pytest.fixture
def geometry(dev):
    """set(name, value) for selftest_bytes/selftest_slots at run time; restored afterwards."""
    old = {n: dev.read_param(n) for n in ("selftest_bytes", "selftest_slots")}
    yield dev.write_param
    if dev.loaded():
        for n, v in old.items():
            if dev.read_param(n) != v:
                dev.write_param(n, v)


def test_geometry_change_recreates_channel_under_open_mapping(dev, geometry, reloadable):
    """Destroying a channel while userspace has it open and mapped is safe: the old region
    stays readable (frozen) through the old mapping, read() on the old file fails with
    ENODEV, poll() reports POLLHUP, new opens see the new channel, and the module cannot be
    removed until the old file and mapping are gone."""
    fd = os.open(dev.SELFTEST, os.O_RDONLY)
    m = mmap.mmap(fd, 2 * dev.PAGE, prot=mmap.PROT_READ)  # the whole default region
    try:
        old = dev.header(m)
        geometry("selftest_bytes", 8192)
        geometry("selftest_slots", 2)
        head_then = dev.head(m)
        time.sleep(0.05)
        assert dev.head(m) == head_then, "the old region is no longer written"
        assert dev.header(m)["payload_size"] == old["payload_size"]
        with dev.expect_errno(errno.ENODEV):
            os.read(fd, old["payload_size"])
        p = select.poll()
        p.register(fd, select.POLLIN)
        assert p.poll(1000)[0][1] & select.POLLHUP
        with dev.mapped() as (fd2, _m2, h2):
            assert (h2["payload_size"], h2["nr_slots"], h2["shape"]) == (8192, 2, (1024,))
            data = np.frombuffer(os.read(fd2, 8192), dtype=np.uint64)
            assert (data == data[0]).all() and data[0] > 0
        assert dev.rmmod().returncode != 0, "rmmod with the old channel still mapped"
    finally:
        m.close()
        os.close(fd)
    assert dev.rmmod().returncode == 0
    dev.insmod()


def test_a_recreated_channel_ends_for_its_readers_and_followers_move(dev, geometry):
    """The kernel marks a destroyed channel closed in its header: a seqshm Reader sees the
    end (state CLOSED, wait() raises ChannelEnded) and a following one moves to the new
    channel at the same path."""
    import seqshm

    plain = seqshm.open(dev.SELFTEST)
    follower = seqshm.open(dev.SELFTEST, reopen=True)
    try:
        plain.snapshot()
        follower.snapshot()
        old_slots = follower.nr_slots
        geometry("selftest_slots", 2 if old_slots != 2 else 4)  # same payload, another ring
        assert plain.state is seqshm.ChannelState.CLOSED and plain.ended
        with pytest.raises(seqshm.ChannelEnded) as e:
            while plain.wait(5):
                plain.snapshot()  # writes made before the end come first
        assert e.value.state is seqshm.ChannelState.CLOSED
        # The follower too gets the old channel's unread writes first (the timer kept writing
        # after its snapshot); with none left, wait() moves it to the new channel.
        for _ in range(3):
            assert follower.wait(5)
            if follower.nr_slots != old_slots:
                break
            follower.snapshot()
        assert follower.nr_slots != old_slots
        assert follower.state is seqshm.ChannelState.OPEN
        data = follower.snapshot().view(np.uint64)
        assert (data == data[0]).all() and follower.seq > 0
    finally:
        plain.close()
        follower.close()
