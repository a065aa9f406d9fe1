"""The exported in-kernel API, through seqshm_apitest.ko (a test-only producer module built
beside seqshm.ko): bad channel configurations are refused, a record with named fields, an
array field and a 2-d shape reaches userspace as the producer wrote it, and a producer module
can go away while userspace still has its channel open and mapped."""

import errno
import mmap
import os
import select
import struct
import subprocess

import numpy as np
import pytest

if not os.path.isdir("/dev/seqshm"):
    pytest.skip("no /dev/seqshm: the seqshm module is not loaded here (runs in the VM)",
                allow_module_level=True)

APITEST = "/dev/seqshm/apitest"
SYS = "/sys/module/seqshm_apitest"


def test_bad_configurations_are_refused(apitest):
    with open(f"{SYS}/parameters/checks") as f:
        checks = int(f.read())
    with open(f"{SYS}/parameters/failures") as f:
        failures = int(f.read())
    assert checks >= 25
    assert failures == 0, "see the kernel log for the checks that failed"


def test_records_reach_userspace_as_written(dev, apitest):
    with dev.mapped(APITEST) as (fd, m, h):
        assert h["flags"] & dev.F_RECORD
        assert (h["itemsize"], h["ndim"], h["shape"], h["nr_slots"]) == (24, 2, (2, 3), 2)
        assert h["fields"] == [("a", 0, 1, "i", 4), ("b", 8, 1, "f", 8), ("c", 16, 4, "u", 1)]
        assert h["field_flags"] == [0, 0, 1]
        assert dev.head(m) == 2
        dt = dev.element_dtype(h)
        data = np.frombuffer(os.read(fd, h["payload_size"]), dtype=dt).reshape(h["shape"])
        assert dev.info(fd).seen == 2
        flat = data.reshape(-1)
        assert flat["a"].tolist() == [100, 101, 102, 103, 104, 105]
        assert flat["b"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        assert flat["c"].tolist() == [[i] * 4 for i in range(6)]
        # write 1 (publish) is in slot 1, write 2 (begin/end, timestamp 12345) in slot 0
        seq0, _, ws0, ts0 = struct.unpack_from("=IIQQ", m, dev.HEADER_SIZE)
        seq1, _, ws1, _ = struct.unpack_from("=IIQQ", m, dev.HEADER_SIZE + 64)
        assert (seq0, ws0, ts0) == (2, 2, 12345)
        assert (seq1, ws1) == (2, 1)
        one = np.frombuffer(m, dtype=dt, count=6, offset=h["payload_offset"] + h["slot_stride"])
        assert one["a"].tolist() == [0, -1, -2, -3, -4, -5]
        del one


def test_producer_module_can_go_while_its_channel_is_mapped(dev, apitest):
    fd = os.open(APITEST, os.O_RDONLY)
    try:
        with mmap.mmap(fd, dev.PAGE, prot=mmap.PROT_READ) as first:
            size = dev.header(first)["region_size"]
        m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        assert dev.rmmod().returncode != 0, "seqshm removed under a module that uses it"
        r = subprocess.run(dev._tool("rmmod") + ["seqshm_apitest"], capture_output=True,
                           text=True)
        assert r.returncode == 0, f"rmmod seqshm_apitest: {r.stdout}{r.stderr}"
        assert not os.path.exists(APITEST)
        h = dev.header(m)
        assert h["magic"] == dev.MAGIC and h["name"] == "apitest" and dev.head(m) == 2
        a = np.frombuffer(m, dtype=np.int32, count=1, offset=h["payload_offset"])
        assert a[0] == 100
        del a
        with dev.expect_errno(errno.ENODEV):
            os.read(fd, h["payload_size"])
        p = select.poll()
        p.register(fd, select.POLLIN)
        assert p.poll(0)[0][1] & select.POLLHUP
        m.close()
    finally:
        os.close(fd)
    # The name is free again.
    r = subprocess.run(dev._tool("insmod") + [apitest], capture_output=True, text=True)
    assert r.returncode == 0, f"insmod again: {r.stdout}{r.stderr}"
    assert os.path.exists(APITEST)


def test_readme_producer_example(dev):
    """seqshm_example.ko is the README's in-kernel producer example (module/check.sh keeps the
    two identical): loaded, it publishes 16 readings scaled with integer arithmetic."""
    with dev.loaded_test_module("seqshm_example"):
        assert os.stat("/dev/seqshm/mysensor").st_mode & 0o7777 == 0o444  # .mode = 0444
        with dev.mapped("/dev/seqshm/mysensor") as (fd, m, h):
            assert h["fields"] == [("temp_mc", 0, 1, "i", 8), ("raw", 8, 1, "u", 4),
                                   ("avg_raw", 12, 1, "u", 4)]
            assert (h["shape"], h["nr_slots"], dev.head(m)) == ((16,), 4, 1)
            rec = np.frombuffer(os.read(fd, h["payload_size"]), dtype=dev.element_dtype(h))
            raw = [i * 273 for i in range(16)]
            assert rec["raw"].tolist() == raw
            assert rec["temp_mc"].tolist() == [x * 165000 // 4095 - 40000 for x in raw]
            assert rec["temp_mc"][0] == -40000 and rec["temp_mc"][-1] == 125000
            assert rec["avg_raw"].tolist() == [x + 1 for x in raw]
    assert not os.path.exists("/dev/seqshm/mysensor")
