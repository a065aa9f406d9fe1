"""breaker3's findings against docs/security.md: each test failed on main ff10f44."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
from channel_dir import SHM_DIR
from exporting import cpustat_publisher, parse, pick

import seqshm
from seqshm._lifecycle import hold_liveness


def export_once(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "seqshm", "export", "--once", *args],
                          capture_output=True, timeout=60, cwd="/")


def forged_cpustat_bytes(scratch: str) -> bytes:
    """The bytes of a live cpustat channel (state word open) that says every CPU spent 700 s
    in user mode, made by whoever calls it at ``scratch`` (removed again)."""
    from seqshm.cli import _procstat as telemetry

    cpus = len(telemetry.read_cpustat())
    rec = np.zeros(cpus, telemetry.CPUSTAT_DTYPE)
    rec["online"] = 1
    rec["user_ns"] = 700 * 10**9
    w = seqshm.create(scratch, telemetry.CPUSTAT_DTYPE, cpus, name="cpustat")
    try:
        w.write(rec)
        with open(scratch, "rb") as f:
            return f.read()
    finally:
        w.close(unlink=True)


def fill_and_hold(target: str, data: bytes, link: str | None, ready: str) -> None:
    """As another user: (hard-link ``target`` at ``link``, then) write ``data`` over the file,
    every byte allocated, and hold the liveness lock on it as a writer would; ``ready`` is
    made once done. Runs until killed."""
    if link is not None:
        os.link(target, link)  # fs.protected_hardlinks lets anyone who may read and write it
    fd = os.open(link or target, os.O_RDWR)
    os.ftruncate(fd, len(data))
    os.posix_fallocate(fd, 0, len(data))
    os.pwrite(fd, data, 0)
    hold_liveness(fd)
    os.close(os.open(ready, os.O_CREAT | os.O_WRONLY, 0o644))
    time.sleep(60)


def wait_for(path: str, what: str) -> None:
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


# -- finding 1 -------------------------------------------------------------------------------

# A root writer's sidecar (.NAME.waiters) is root's file, mode 0666 for a 0644 channel (its
# readers count themselves in it). Any local user may write it, grow it, lock it and, as
# fs.protected_hardlinks lets whoever may read and write a file, hard-link it under any name:
# a root-owned file with any content at any name the exporter's glob matches. The exporter
# trusts a file by its owner, so another user's forged cpustat speaks for the host.
# breaker3 finding 1, fixed: trusted_owner() trusts a file no one but its owner may write
# (no group or other write bit), so root's 0666 sidecar, or a hard link to it, is untrusted.
def test_another_user_cannot_speak_for_the_host_through_roots_sidecar(
        shm_name: str, hostile_paths: list[str], other_user: object) -> None:
    real = os.path.join(SHM_DIR, f"{shm_name}-cpustat")
    sidecar = os.path.join(SHM_DIR, f".{shm_name}-cpustat.waiters")
    link = os.path.join(SHM_DIR, f"{shm_name}-0cpustat")  # sorted before the real one
    ready = os.path.join(SHM_DIR, f"{shm_name}-ready")
    scratch = os.path.join(SHM_DIR, f"{shm_name}-scratch")
    hostile_paths.extend([link, ready, scratch, sidecar])
    with cpustat_publisher(real):
        assert os.stat(sidecar).st_uid == 0 and os.stat(sidecar).st_mode & 0o002
        data = other_user.run(forged_cpustat_bytes, scratch)  # type: ignore[attr-defined]
        other_user.start(fill_and_hold, sidecar, data, link, ready)  # type: ignore[attr-defined]
        wait_for(ready, "the other user did not forge the sidecar")
        done = export_once(f"{shm_name}-*")
    user = pick(parse(done.stdout), "node_cpu_seconds_total", mode="user")
    assert user, done.stderr.decode()[-800:]
    assert 700.0 not in user.values(), (
        f"the host's node_cpu_seconds_total comes from {link}, another user's hard link to "
        "root's sidecar")


def forged_bytes(scratch: str, dtype: object, shape: object, name: str, value: object) -> bytes:
    """The bytes of a live channel (state word open) of one write of ``value``, made by whoever
    calls it at ``scratch`` (removed again)."""
    w = seqshm.create(scratch, dtype, shape, name=name)
    try:
        w.write(value)
        with open(scratch, "rb") as f:
            return f.read()
    finally:
        w.close(unlink=True)


# -- finding 2 -------------------------------------------------------------------------------

# Finding 1's root-owned file, used for the scrape's series instead: another user's channel
# in root's sidecar, hard-linked under a name sorted first, counts as trusted and takes all of
# --max-series, so the operator's own channel has its state only.
# breaker3 finding 2, fixed by the same rule: the hard-linked sidecar comes after the
# operator's channel, which keeps its data.
def test_another_user_cannot_use_up_the_scrapes_series_through_roots_sidecar(
        shm_name: str, hostile_paths: list[str], other_user: object) -> None:
    real = os.path.join(SHM_DIR, f"{shm_name}-real")
    sidecar = os.path.join(SHM_DIR, f".{shm_name}-real.waiters")
    link = os.path.join(SHM_DIR, f"{shm_name}-0big")
    ready = os.path.join(SHM_DIR, f"{shm_name}-ready")
    scratch = os.path.join(SHM_DIR, f"{shm_name}-scratch")
    hostile_paths.extend([link, ready, scratch, sidecar])
    with seqshm.create(real, "<f8", 4, name="real") as w:
        w.write([20.0, 21.0, 22.0, 23.0])
        data = other_user.run(forged_bytes, scratch, "<f8", 1000, "big",  # type: ignore[attr-defined]
                              np.ones(1000))
        other_user.start(fill_and_hold, sidecar, data, link, ready)  # type: ignore[attr-defined]
        wait_for(ready, "the other user did not forge the sidecar")
        done = export_once("--max-series", "1000", f"{shm_name}-*")
        w.close(unlink=True)
    got = parse(done.stdout)
    assert pick(got, "seqshm_channel_up", channel=link), done.stderr.decode()[-800:]
    assert sorted(pick(got, "seqshm_real", channel=real).values()) == [20.0, 21.0, 22.0, 23.0], (
        f"the operator's channel lost its data to {link}, another user's hard link to root's "
        f"sidecar: {done.stderr.decode()[-500:]}")


# -- finding 3 -------------------------------------------------------------------------------

# A channel named alone on the command line is trusted by its path, not by the file the
# exporter has open (Channel.may_speak_for_host(named=True) looks at nothing): once its writer
# has gone and removed it, any local user may create a file at that name in /dev/shm (first
# come, first served), and the kept exporter reopens it (reopen_if_replaced) and serves its
# values as the host's node_cpu_*, though nobody named that user's file.
# breaker3 finding 3, fixed: naming a channel by its path vouches for its file's owner at
# start (Channel.vouched), not for whatever file comes to that path; a bare name vouches for
# nothing (it resolves in directories anyone may write).
def test_a_named_channels_trust_does_not_pass_to_another_users_file_at_its_name(
        shm_name: str, hostile_paths: list[str], other_user: object) -> None:
    from seqshm._metrics import ChannelMetrics
    from seqshm.cli import _procstat as telemetry

    path = os.path.join(SHM_DIR, f"{shm_name}-cpustat")
    hostile_paths.extend([path, os.path.join(SHM_DIR, f".{shm_name}-cpustat.waiters")])
    with cpustat_publisher(path):
        metrics = ChannelMetrics([path])  # the operator names the demo's channel
        first = [f for f in metrics.collect() if f.name == "node_cpu_seconds_total"]
        assert first  # served, from root's channel
    assert not os.path.exists(path)  # its writer removed it at the end

    cpus = len(telemetry.read_cpustat())
    rec = np.zeros(cpus, telemetry.CPUSTAT_DTYPE)
    rec["online"] = 1
    rec["user_ns"] = 700 * 10**9

    def squat() -> None:
        with seqshm.create(path, telemetry.CPUSTAT_DTYPE, cpus, name="cpustat") as w:
            w.write(rec)
            time.sleep(60)

    other_user.start(squat)  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while True:
        try:
            if os.stat(path).st_uid != 0:
                with seqshm.open(path) as r:
                    if r.head > 0:
                        break
        except (FileNotFoundError, seqshm.FormatError):
            pass
        assert time.monotonic() < deadline, "the other user's channel did not appear"
        time.sleep(0.01)
    try:
        fams = {f.name: f for f in metrics.collect()}
    finally:
        metrics.close()
    cpu = fams.get("node_cpu_seconds_total")
    values = [] if cpu is None else [float(v) for _, block in cpu.parts for v in block]
    assert 700.0 not in values, (
        f"the host's node_cpu_seconds_total now comes from {path}, another user's file at "
        "the name the operator gave")


# -- finding 4 -------------------------------------------------------------------------------

def _rss_mib() -> int:
    import gc

    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // (1 << 20)


# ChannelMetrics keeps the label values of every (channel label, shape) it has seen, up to
# 4096 of them (_label_cache), whatever their size: a block of a 99,999-series channel is
# ~13 MB. Another user who renames one such channel of theirs between scrapes (a rename costs
# nothing, and its writer goes on) adds a new block at every scrape: ~53 GB before the cache
# is cleared. MAX_SERIES_PER_SCRAPE bounds one scrape's series, not what scrapes leave behind.
# breaker3 finding 4, fixed: the label cache is bounded by the rows it keeps (2x
# --max-series), the exposition templates by their samples, not by their number.
def test_another_user_renaming_a_big_channel_does_not_grow_the_exporter(
        shm_name: str, hostile_paths: list[str], other_user: object) -> None:
    from seqshm._metrics import ChannelMetrics

    n, renames = 99_999, 30
    names = [os.path.join(SHM_DIR, f"{shm_name}-big{i}") for i in range(renames + 1)]
    hostile_paths.extend(names)
    hostile_paths.extend(os.path.join(SHM_DIR, f".{shm_name}-big{i}.waiters")
                         for i in range(renames + 1))

    def writer() -> None:
        with seqshm.create(names[0], "<f8", n, name="big") as w:
            w.write(np.arange(float(n)))
            time.sleep(60)

    other_user.start(writer)  # type: ignore[attr-defined]
    wait_for(names[0], "the other user's channel did not appear")
    time.sleep(0.3)  # its write
    metrics = ChannelMetrics([f"{shm_name}-big*"])
    try:
        metrics.collect()
        before = _rss_mib()
        for old, new in zip(names[:-1], names[1:], strict=True):
            other_user.run(os.rename, old, new)  # type: ignore[attr-defined]
            fams = {f.name: f for f in metrics.collect()}
            assert fams["seqshm_big"].size == n  # its data served at every scrape
        grown = _rss_mib() - before
    finally:
        metrics.close()
    assert grown < 100, (
        f"{renames} renames of another user's {n}-series channel grew the exporter by "
        f"{grown} MiB")


# -- finding 5 -------------------------------------------------------------------------------

# The series bound counts series after --sum-over, and read_needed then copies every element
# that is summed, and _generic_families converts the copy to float64 before summing: a
# channel of 64 MiB of uint8 makes one series under --sum-over dim0 (as an operator sums their
# robots' arrays, 'robot-*' --sum-over dim0) and costs each scrape 64 MiB + 512 MiB. Any user
# whose channel the glob matches sets the scrape's memory at 9x a payload of their choosing.
# breaker3 finding 5, fixed: a channel may have at most MAX_VALUES_PER_CHANNEL (1,000,000)
# values read, a scrape VALUES_PER_SERIES (10) per --max-series, counted before --sum-over;
# sums are taken in float64 without a float64 copy of the values.
def test_a_huge_channel_summed_to_one_series_does_not_cost_the_exporter_its_size(
        shm_name: str, hostile_paths: list[str], other_user: object) -> None:
    from exporting import live_channels
    from test_breaker2_findings import peak_rss_mib

    n = 64 << 20
    big = os.path.join(SHM_DIR, f"{shm_name}-big")
    hostile_paths.extend([big, os.path.join(SHM_DIR, f".{shm_name}-big.waiters")])

    def writer() -> None:
        with seqshm.create(big, "u1", n, name="big") as w:
            w.write(np.ones(n, "u1"))
            os.close(os.open(big + "-ready", os.O_CREAT | os.O_WRONLY, 0o644))
            time.sleep(60)

    hostile_paths.append(big + "-ready")
    other_user.start(writer)  # type: ignore[attr-defined]
    wait_for(big + "-ready", "the other user's channel did not appear")
    good = os.path.join(SHM_DIR, f"{shm_name}-good")
    with live_channels((good, "good", [7.0, 8.0])):
        done, rss = peak_rss_mib(["export", "--once", "--sum-over", "dim0", f"{shm_name}-*"])
    assert pick(parse(done.stdout), "seqshm_good", channel=good), done.stderr.decode()[-500:]
    assert rss < 256, (
        f"export --once --sum-over dim0 peaked at {rss} MiB over another user's "
        f"{n >> 20} MiB channel that makes one series")


# -- finding 6 -------------------------------------------------------------------------------

# breaker2 finding 5 made `seqshm info` and the reader's messages say "kernel" of a device only;
# `seqshm list` still writes "kernel" in the WRITER column of any file whose header claims
# writer_pid 0, so any local user's file in /dev/shm is listed as the kernel's channel.
# breaker3 finding 6, fixed: `seqshm list` says kernel of a device only (its JSON has
# "kernel": true/false), a file's writer as pid N.
def test_list_does_not_show_a_file_as_the_kernels(
        shm_name: str, hostile_paths: list[str], other_user: object) -> None:
    from test_breaker2_findings import hostile_channel

    bad = os.path.join(SHM_DIR, f"{shm_name}-fake-kernel")
    hostile_paths.append(bad)
    def forge() -> None:
        hostile_channel(bad, "<f8", (4,), allocate=True)  # writer_pid 0, as a device's

    other_user.run(forge)  # type: ignore[attr-defined]
    done = subprocess.run([sys.executable, "-m", "seqshm", "list", "--no-rate"],
                          capture_output=True, text=True, timeout=60, cwd="/",
                          env={**os.environ, "COLUMNS": "400"})
    row = next(line for line in done.stdout.splitlines() if line.startswith(bad))
    assert "kernel" not in row[len(bad):], f"a file of another user listed as the kernel's: {row!r}"
