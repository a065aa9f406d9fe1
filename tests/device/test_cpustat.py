"""The cpustat channel holds the numbers /proc/stat shows, in ns, and moves the same way; its
record is the one userspace states (seqshm._cpustat), which the exporter recognises."""

import os
import time

import numpy as np
import pytest

if not os.path.isdir("/dev/seqshm"):
    pytest.skip("no /dev/seqshm: the seqshm module is not loaded here (runs in the VM)",
                allow_module_level=True)

import seqshm  # noqa: E402  (after the skip: the package is needed from here on)
from seqshm._cpustat import CPUSTAT_DTYPE, CPUSTAT_FIELDS, is_cpustat  # noqa: E402

FIELDS = list(CPUSTAT_FIELDS)
# /proc/stat prints USER_HZ ticks; USER_HZ is 100 on every architecture Linux runs on.
NS_PER_TICK = 10**9 // os.sysconf("SC_CLK_TCK")


def proc_stat() -> dict[int, np.ndarray]:
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *vals = line.split()
                out[int(name[3:])] = np.array([int(v) for v in vals[:10]], dtype=np.int64)
    return out


def sample(dev, fd, h):
    data = os.read(fd, h["payload_size"])
    a = np.frombuffer(data, dtype=dev.element_dtype(h))
    return np.stack([a[f].astype(np.int64) for f in FIELDS], axis=1), a["online"].copy()


@pytest.fixture
def cpustat(dev):
    old = dev.read_param("cpustat_hz")
    dev.write_param("cpustat_hz", 100)
    with dev.mapped(dev.CPUSTAT) as (fd, _m, h):
        yield fd, h
    dev.write_param("cpustat_hz", old)


def test_the_kernels_record_is_the_one_userspace_states(dev) -> None:
    """struct seqshm_cpustat (module/seqshm_cpustat.c) and seqshm._cpustat are the same
    record: a field added, renamed or moved there fails here, instead of turning the
    exporter's node_cpu_seconds_total into generic gauges without a word."""
    with dev.mapped(dev.CPUSTAT) as (_fd, _m, h):
        assert dev.element_dtype(h) == CPUSTAT_DTYPE  # the header as the tests decode it
    with seqshm.open(dev.CPUSTAT) as r:  # and as a reader (the exporter's) builds it
        assert r.dtype == CPUSTAT_DTYPE
        assert is_cpustat(r.dtype, r.shape), (r.dtype, r.shape)


def test_online_cpus_are_marked(dev, cpustat):
    fd, h = cpustat
    _, online = sample(dev, fd, h)
    for cpu in proc_stat():
        assert online[cpu] == 1


def test_values_are_monotonic_and_match_proc_stat(dev, cpustat):
    fd, h = cpustat
    time.sleep(0.1)
    v0, _ = sample(dev, fd, h)
    p0, t0 = proc_stat(), time.monotonic()
    busy_until = time.monotonic() + 1.0
    while time.monotonic() < busy_until:  # some user time on this CPU
        pass
    time.sleep(0.5)
    v1, _ = sample(dev, fd, h)
    p1, t1 = proc_stat(), time.monotonic()
    assert (v1 >= v0).all(), "a cumulative time went backwards"
    cpus = sorted(p0)
    d = (v1 - v0)[cpus]
    # user includes guest and nice includes guest_nice (as in /proc/stat): sum the first 8.
    total = d[:, :8].sum()
    elapsed_ns = (t1 - t0) * 1e9 * len(cpus)
    assert 0.7 * elapsed_ns < total < 1.3 * elapsed_ns, (total, elapsed_ns)
    busy = d[:, [0, 1, 2, 5, 6]].sum()  # user nice system irq softirq
    sums = (d[:, :8].sum(axis=0) // 10**6).tolist()
    print("deltas (ms) per CPU:", dict(zip(FIELDS[:8], sums, strict=True)))
    # Same deltas as /proc/stat, in ticks, within the sampling skew (100 Hz: 10 ms + slack).
    for i, cpu in enumerate(cpus):
        dp = (p1[cpu] - p0[cpu]) * NS_PER_TICK
        for j, name in enumerate(FIELDS[:8]):
            assert abs(int(d[i, j]) - int(dp[j])) <= 0.15 * (t1 - t0) * 1e9 + 50e6, (
                cpu, name, d[i, j], dp[j])
    # Loose: under TCG on a loaded host the guest books only part of the loop as busy.
    assert busy > 0.2e9, "1 s of busy loop shows as busy time"


def test_rate_follows_cpustat_hz(dev, cpustat):
    fd, _ = cpustat
    dev.write_param("cpustat_hz", 50)
    r50 = dev.rate(fd, 1.0)
    dev.write_param("cpustat_hz", 5)
    time.sleep(0.3)
    r5 = dev.rate(fd, 1.0)
    assert 25 < r50 < 60, r50
    assert 2 < r5 < 8, r5
    dev.write_param("cpustat_hz", 0)
    time.sleep(0.3)
    assert dev.rate(fd, 0.5) == 0
