"""Readers of a userspace channel sleep in a futex until the next write (linux/seqshm.h,
"Waking sleepers"): woken by writes in other threads and processes, all at once, by the end
of the channel; a dead writer noticed by the bounded sleep; no lost wake-up; polling when the
sidecar is missing or stale; a stale count reset by the writer; nothing paid per write when
nobody sleeps."""

from __future__ import annotations

import asyncio
import fcntl
import multiprocessing
import os
import random
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import seqshm
from seqshm import _core, _hooks, _sidecar
from seqshm._lifecycle import ChannelState

#: Not a speed limit: a wait that takes this long has missed its wake-up and its checks.
HANG_GUARD_S = 10.0
#: A wake-up comes well within the readers' 0.1 s check interval; a lost one shows only at
#: the next check (or the next write), so a wait this late after its write lost one.
LATE_S = 0.04


def _ctx() -> Any:
    # fork while one thread runs (fast); spawn otherwise
    return multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")


def _count(path: str) -> int:
    """The sidecar's count of readers asleep now."""
    fd = os.open(_sidecar.path_of(path), os.O_RDWR | os.O_CLOEXEC)
    return _core.WaitersFile(fd).count


def _until(cond: Callable[[], bool], what: str, limit: float = HANG_GUARD_S) -> None:
    deadline = time.monotonic() + limit
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.001)


@pytest.fixture(params=["fence"])
def barrier(request: pytest.FixtureRequest) -> str:
    """How a writer orders its store of head before its load of the count: a full fence per
    write (it registers for no membarrier(2), which would hand every local user a way to
    interrupt its CPUs: docs/security.md, section 2)."""
    return str(request.param)


# -- the sidecar -------------------------------------------------------------------------------

def test_create_makes_a_sidecar_the_header_names(make_path: Callable[[], str],
                                                 barrier: str) -> None:
    with seqshm.create(make_path(), np.int64, 1) as w, seqshm.open(w.path) as r:
        st = os.stat(_sidecar.path_of(w.path))
        h = r.header
        assert (h["waiters_dev"], h["waiters_ino"]) == (st.st_dev, st.st_ino)
        assert st.st_size == _core.ALIGN
        assert bool(h["wake_flags"] & _core.WAKE_F_FENCE) == (barrier == "fence")
        assert r._sleeps_in_kernel()
        assert os.path.basename(_sidecar.path_of(w.path)) == f".{os.path.basename(w.path)}.waiters"


@pytest.mark.parametrize(("mode", "side_mode"), [(0o644, 0o666), (0o640, 0o660), (0o600, 0o600),
                                                 (0o444, 0o666)])
def test_sidecar_is_writable_by_whoever_may_read_the_channel(
        make_path: Callable[[], str], mode: int, side_mode: int) -> None:
    old = os.umask(0o077)  # fchmod: the umask takes nothing away
    try:
        with seqshm.create(make_path(), np.int64, 1, mode=mode) as w:
            assert stat.S_IMODE(os.stat(_sidecar.path_of(w.path)).st_mode) == side_mode
    finally:
        os.umask(old)


def test_close_removes_the_sidecar_with_or_without_unlink(make_path: Callable[[], str]) -> None:
    for unlink in (False, True):
        w = seqshm.create(make_path(), np.int64, 1)
        side = _sidecar.path_of(w.path)
        assert os.path.exists(side)
        w.close(unlink=unlink)
        assert not os.path.exists(side)
        assert os.path.exists(w.path) != unlink


def test_closing_the_reader_wakes_its_own_sleeping_threads(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 1) as w:
        w.write([1])
        r = seqshm.open(w.path)
        r.read()
        assert r._sleeps_in_kernel()
        ended: list[Any] = []

        def waiter() -> None:
            try:
                r.wait(timeout=HANG_GUARD_S)
            except BaseException as e:  # noqa: BLE001 - the test inspects it
                ended.append((e, time.monotonic()))

        t = threading.Thread(target=waiter)
        t.start()
        _until(lambda: _count(w.path) == 1, "the thread sleeps")
        t0 = time.monotonic()
        r.close()
        t.join(HANG_GUARD_S)
        assert isinstance(ended[0][0], seqshm.ClosedError)
        assert ended[0][1] - t0 < LATE_S  # woken, not found at its next check


def _write_then_hang(path: str, ready: Any) -> None:
    w = seqshm.create(path, np.int64, 1, overwrite=True)
    w.write([1])
    ready.set()
    time.sleep(HANG_GUARD_S)


def _dead_writer(path: str) -> None:
    """A channel at ``path`` whose writer process died without closing it."""
    ctx = _ctx()
    ready = ctx.Event()
    p = ctx.Process(target=_write_then_hang, args=(path, ready))
    p.start()
    try:
        assert ready.wait(60)
    finally:
        p.kill()
        p.join()


def test_create_over_a_channel_replaces_its_sidecar(make_path: Callable[[], str]) -> None:
    path = make_path()
    _dead_writer(path)
    r1 = seqshm.open(path)
    old = os.stat(_sidecar.path_of(path))
    with seqshm.create(path, np.int64, 1, overwrite=True) as w2, seqshm.open(path) as r2:
        new = os.stat(_sidecar.path_of(path))
        assert (new.st_dev, new.st_ino) != (old.st_dev, old.st_ino)
        assert r2._sleeps_in_kernel() and r2.header["waiters_ino"] == new.st_ino
        assert r1.state is ChannelState.REPLACED
        w2.write([1])
        assert r2.wait(timeout=0) is True
    r1.close()


# -- wake-ups ----------------------------------------------------------------------------------

def test_a_write_from_another_thread_wakes_a_sleeper(make_path: Callable[[], str],
                                                     barrier: str) -> None:
    with seqshm.create(make_path(), np.int64, 1) as w, seqshm.open(w.path) as r:
        w.write([1])
        r.read()
        timer = threading.Timer(0.05, w.write, args=([2],))
        timer.start()
        try:
            t0 = time.monotonic()
            assert r.wait(timeout=HANG_GUARD_S) is True
            assert time.monotonic() - t0 < HANG_GUARD_S
        finally:
            timer.join()
        assert r.read().data[0] == 2
        assert _hooks.wake_stats(w)[0] >= 1  # it slept counted, so the writer woke it


def _write_later(path: str, delay: float, value: int) -> None:
    w = seqshm.create(path, np.int64, 1, overwrite=True)
    try:
        w.write([0])
        time.sleep(delay)
        w.write([value])
        time.sleep(0.2)
    finally:
        w.close()


def test_a_write_from_another_process_wakes_a_sleeper(make_path: Callable[[], str],
                                                      barrier: str) -> None:
    path = make_path()
    p = _ctx().Process(target=_write_later, args=(path, 0.3, 7))
    p.start()
    try:
        _until(lambda: os.path.exists(_sidecar.path_of(path)), "the channel exists")
        with seqshm.open(path) as r:
            r.read()
            assert r._sleeps_in_kernel()
            if r.seq == 0:
                assert r.wait(timeout=HANG_GUARD_S) is True
                r.read()
            if r.seq == 1:
                assert r.wait(timeout=HANG_GUARD_S) is True
            assert r.read().data[0] == 7
    finally:
        p.join(HANG_GUARD_S)


def _sleepers_main(path: str, threads: int, ready: Any, results: Any) -> None:
    """In a child: ``threads`` threads each wait for a write newer than the first and report
    when they woke (or what ended the wait)."""
    r = seqshm.open(path)
    r.read()

    def one() -> None:
        try:
            ok = r.wait(timeout=HANG_GUARD_S)
            results.put(("woke", ok, time.monotonic()))
        except seqshm.ChannelEnded as e:
            results.put(("ended", e.state.value, time.monotonic()))
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            results.put(("error", repr(e), time.monotonic()))

    ts = [threading.Thread(target=one) for _ in range(threads)]
    for t in ts:
        t.start()
    ready.set()
    for t in ts:
        t.join()


@pytest.fixture
def sleepers(make_path: Callable[[], str]) -> Iterator[tuple[seqshm.Writer, Any, int]]:
    """A writer, and 3 processes of 2 threads each asleep on its channel (counted)."""
    w = seqshm.create(make_path(), np.int64, 1)
    w.write([1])
    ctx = _ctx()
    results = ctx.Queue()
    procs = []
    try:
        for _ in range(3):
            ready = ctx.Event()
            p = ctx.Process(target=_sleepers_main, args=(w.path, 2, ready, results))
            p.start()
            procs.append(p)
            assert ready.wait(60)
        _until(lambda: _count(w.path) == 6, "all 6 readers sleep")
        yield w, results, 6
    finally:
        w.close()
        for p in procs:
            p.join(HANG_GUARD_S)
            if p.is_alive():
                p.kill()


def test_one_write_wakes_every_sleeper_in_every_process(
        sleepers: tuple[seqshm.Writer, Any, int]) -> None:
    w, results, n = sleepers
    t0 = time.monotonic()
    w.write([2])
    got = [results.get(timeout=HANG_GUARD_S) for _ in range(n)]
    assert all(kind == "woke" and ok is True for kind, ok, _ in got), got
    lags = sorted(t - t0 for _, _, t in got)
    # futex wake-ups, not the 0.1 s checks (which would spread them over 0.1 s)
    assert lags[len(lags) // 2] < LATE_S, lags
    assert _hooks.wake_stats(w)[0] == 1


def test_close_wakes_every_sleeper_with_the_end(
        sleepers: tuple[seqshm.Writer, Any, int]) -> None:
    w, results, n = sleepers
    t0 = time.monotonic()
    w.close()
    got = [results.get(timeout=HANG_GUARD_S) for _ in range(n)]
    assert all(kind == "ended" and state == "closed" for kind, state, _ in got), got
    lags = sorted(t - t0 for _, _, t in got)
    assert lags[len(lags) // 2] < LATE_S, lags


def test_close_from_another_thread_ends_a_wait_at_once(make_path: Callable[[], str],
                                                       barrier: str) -> None:
    with seqshm.create(make_path(), np.int64, 1) as w, seqshm.open(w.path) as r:
        w.write([1])
        r.read()
        closed = []

        def close() -> None:
            closed.append(time.monotonic())
            w.close()

        timer = threading.Timer(0.05, close)
        timer.start()
        try:
            with pytest.raises(seqshm.ChannelEnded) as e:
                r.wait(timeout=HANG_GUARD_S)
            assert time.monotonic() - closed[0] < HANG_GUARD_S
        finally:
            timer.join()
        assert e.value.state is ChannelState.CLOSED


def test_a_writer_that_dies_is_noticed_within_the_check_interval(
        make_path: Callable[[], str]) -> None:
    path = make_path()
    ctx = _ctx()
    ready = ctx.Event()
    p = ctx.Process(target=_write_then_hang, args=(path, ready))
    p.start()
    try:
        assert ready.wait(60)
        with seqshm.open(path) as r:
            r.read()
            assert r._sleeps_in_kernel()
            threading.Timer(0.1, os.kill, args=(p.pid, signal.SIGKILL)).start()
            with pytest.raises(seqshm.ChannelEnded) as e:
                r.wait(timeout=HANG_GUARD_S)
            p.join(HANG_GUARD_S)
            assert e.value.state is ChannelState.WRITER_DIED
    finally:
        p.kill()
        p.join()


def test_ctrl_c_interrupts_a_futex_sleep_at_once(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 1) as w, seqshm.open(w.path) as r:
        w.write([1])
        r.read()
        assert r._sleeps_in_kernel()
        sent = []

        def interrupt() -> None:
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

        timer = threading.Timer(0.05, interrupt)
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                r.wait(timeout=HANG_GUARD_S)
            assert time.monotonic() - sent[0] < 0.1
        finally:
            timer.join()
        assert _count(w.path) == 0  # it counted itself out


def test_wait_async_sleeps_in_the_kernel_and_is_woken(make_path: Callable[[], str]) -> None:
    async def main(w: seqshm.Writer, r: seqshm.Reader) -> bool:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, w.write, [2])
        return await r.wait_async(timeout=HANG_GUARD_S)

    with seqshm.create(make_path(), np.int64, 1) as w, seqshm.open(w.path) as r:
        w.write([1])
        r.read()
        assert asyncio.run(main(w, r)) is True
        assert _hooks.wake_stats(w)[0] >= 1


def _wait_in_child(r: seqshm.Reader, results: Any) -> None:
    try:
        results.put(r.wait(timeout=HANG_GUARD_S))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        results.put(repr(e))


def test_a_forked_reader_sleeps_on_its_own_sidecar_file(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 1) as w, seqshm.open(w.path) as r:
        w.write([1])
        r.read()
        assert r._sleeps_in_kernel()
        ctx = multiprocessing.get_context("fork")
        results = ctx.Queue()
        p = ctx.Process(target=_wait_in_child, args=(r, results))  # fork: r is inherited
        p.start()
        try:
            _until(lambda: _count(w.path) == 1, "the child sleeps")
            w.write([2])
            assert results.get(timeout=HANG_GUARD_S) is True
        finally:
            p.join(HANG_GUARD_S)


# -- no lost wake-up ---------------------------------------------------------------------------

def _stress_writer(path: str, seconds: float, seed: int, ready: Any, go: Any,
                   log: Any) -> None:
    """Writes at random short intervals (spinning: microseconds, the window of the race)
    and now and then a long pause: a wake-up lost before a pause shows as a late wait.
    Sends back (write number, timestamp) of every write."""
    w = seqshm.create(path, np.int64, 1, nr_slots=64, overwrite=True)
    rng = random.Random(seed)
    writes = []
    try:
        ready.set()
        go.wait(60)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = _core.monotonic_ns()
            writes.append((w.write([0], t), t))
            if rng.random() < 0.1:
                time.sleep(0.1)  # a lost wake-up would now last until the reader's next check
            else:
                until = time.perf_counter() + rng.uniform(0, 300e-6)
                while time.perf_counter() < until:
                    pass
    finally:
        w.close()
        log.put(writes)


def test_no_wake_up_is_lost_under_random_writes(make_path: Callable[[], str], barrier: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A lost wake-up is a futex sleep that ran to its timeout although a write it waited
    for came well before that (the kernel's own account, so a reader the machine is slow to
    run is not one); and, looser, waits that end long after their write."""
    sleeps: list[tuple[int, int, int, int]] = []  # start, deadline (ns), target, result

    def futex_sleep(self: seqshm.Reader, target: int, seconds: float,
                    slot: _core.SleeperSlot | None = None) -> int:
        t0 = _core.monotonic_ns()
        rc = _core.ReaderEngine._futex_sleep(self, target, seconds, slot)
        sleeps.append((t0, t0 + int(seconds * 1e9), target, rc))
        return rc

    monkeypatch.setattr(seqshm.Reader, "_futex_sleep", futex_sleep)
    path = make_path()
    ctx = _ctx()
    ready, go, log = ctx.Event(), ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_stress_writer, args=(path, 2.0, 1234, ready, go, log))
    p.start()
    ends = []
    try:
        assert ready.wait(60)
        with seqshm.open(path) as r:
            assert r._sleeps_in_kernel()
            go.set()
            while True:
                target = r.seq
                try:
                    if not r.wait(timeout=HANG_GUARD_S):
                        break
                except seqshm.ChannelEnded:
                    break
                ends.append((target, _core.monotonic_ns()))
                r.history()  # read all: the next wait is for the write after the newest
        writes = dict(log.get(timeout=HANG_GUARD_S))
    finally:
        p.join(HANG_GUARD_S)
    margin = 20_000_000  # ns: a writer preempted between its timestamp and its wake
    lost = [(target + 1, (deadline - writes[target + 1]) / 1e9)
            for start, deadline, target, rc in sleeps
            if rc == 2 and target + 1 in writes and start < writes[target + 1] < deadline - margin]
    assert not lost, f"futex sleeps that timed out after the write they waited for: {lost}"
    assert len(ends) > 20 and sum(rc in (0, 3) for *_, rc in sleeps) > 20  # 3: woken, newer
    late = [(target + 1, (woke - writes[target + 1]) / 1e9) for target, woke in ends
            if target + 1 in writes and woke - writes[target + 1] > LATE_S * 1e9]
    assert len(late) <= max(2, len(ends) // 20), (len(ends), late)


# -- polling when there is no sidecar ----------------------------------------------------------

def _poll_wakes_on_a_thread_write(w: seqshm.Writer, r: seqshm.Reader) -> None:
    w.write([1])
    r.read()
    timer = threading.Timer(0.05, w.write, args=([2],))
    timer.start()
    try:
        assert r.wait(timeout=HANG_GUARD_S) is True
    finally:
        timer.join()
    assert r.read().data[0] == 2


def test_without_a_sidecar_a_reader_polls(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 1) as w:
        os.unlink(_sidecar.path_of(w.path))
        with seqshm.open(w.path) as r:
            assert not r._sleeps_in_kernel()
            _poll_wakes_on_a_thread_write(w, r)
            assert not r._has_waiters
        assert _hooks.wake_stats(w) == (0, 0)



@pytest.mark.parametrize("call", ["wait", "wait_async"])
def test_a_polling_reader_looks_for_the_sidecar_once_per_check_interval(
        make_path: Callable[[], str], monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    """wait() tried to open the missing sidecar at every poll (every 20 us to 1 ms: hundreds
    of failing open() calls a second), not every CHECK_INTERVAL_S as documented."""
    from seqshm import _wait

    looks = []
    look = seqshm.Reader._open_waiters
    monkeypatch.setattr(seqshm.Reader, "_open_waiters", lambda self: looks.append(look(self)))
    with seqshm.create(make_path(), np.int64, 1) as w:
        os.unlink(_sidecar.path_of(w.path))
        with seqshm.open(w.path) as r:
            t0 = time.monotonic()
            if call == "wait":
                assert r.wait(timeout=0.5) is False
            else:
                assert asyncio.run(r.wait_async(timeout=0.5)) is False
            elapsed = time.monotonic() - t0
        assert 1 <= len(looks) <= 2 + elapsed / _wait.CHECK_INTERVAL_S, len(looks)


def test_a_stale_sidecar_of_an_earlier_channel_is_not_used(make_path: Callable[[], str]) -> None:
    path = make_path()
    w1 = seqshm.create(path, np.int64, 1)
    os.link(_sidecar.path_of(path), path + ".old-sidecar")
    w1.close()
    with seqshm.create(path, np.int64, 1, overwrite=True) as w2:
        os.replace(path + ".old-sidecar", _sidecar.path_of(path))  # the earlier channel's
        with seqshm.open(path) as r:
            assert not r._sleeps_in_kernel()
            _poll_wakes_on_a_thread_write(w2, r)
            assert not r._has_waiters
            assert _count(path) == 0  # untouched


def test_a_sidecar_that_names_another_channel_is_not_used(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 1) as w:
        fd = os.open(_sidecar.path_of(w.path), os.O_RDWR)
        try:
            os.pwrite(fd, struct.pack("=Q", 12345), _core.abi_layout()["waiters"]["channel_ino"])
        finally:
            os.close(fd)
        with seqshm.open(w.path) as r:
            assert not r._sleeps_in_kernel()
            _poll_wakes_on_a_thread_write(w, r)


def test_a_reader_finds_a_sidecar_that_appears_later(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 1) as w:
        side = _sidecar.path_of(w.path)
        os.rename(side, side + ".away")  # as between create()'s two renames
        with seqshm.open(w.path) as r:
            assert not r._sleeps_in_kernel()
            os.rename(side + ".away", side)
            w.write([1])
            r.read()
            assert r.wait(timeout=0.3) is False  # looked again meanwhile
            assert r._has_waiters


# -- what the writer pays ----------------------------------------------------------------------

def test_the_writer_makes_no_wake_call_when_nobody_sleeps(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 1) as w, seqshm.open(w.path) as r:
        for i in range(1000):
            w.write([i])
        _hooks.write_pattern(w, 1000)
        assert _hooks.wake_stats(w) == (0, 0)
        r.read()
        timer = threading.Timer(0.05, w.write, args=([1],))
        timer.start()
        try:
            assert r.wait(timeout=HANG_GUARD_S) is True
        finally:
            timer.join()
        wakes = _hooks.wake_stats(w)[0]
        assert wakes >= 1
        for i in range(1000):  # the sleeper counted itself out
            w.write([i])
        assert _hooks.wake_stats(w)[0] == wakes


def _flock(kind: int) -> bytes:
    return struct.pack("=hh4xqqi4x", kind, os.SEEK_SET, 0, 1, 0)  # struct flock, x86-64 / arm64


def test_a_count_left_by_a_dead_reader_is_reset_by_the_writer(
        make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 1) as w:
        fd = os.open(_sidecar.path_of(w.path), os.O_RDWR)
        try:
            count_at = _core.abi_layout()["waiters"]["count"]
            os.pwrite(fd, struct.pack("=I", 3), count_at)  # three readers died counted
            _hooks.write_pattern(w, _core.WAKE_HEAL_AFTER - 1)
            assert _hooks.wake_stats(w) == (_core.WAKE_HEAL_AFTER - 1, 0)
            _hooks.write_pattern(w, 1)
            assert _hooks.wake_stats(w) == (_core.WAKE_HEAL_AFTER, 1)
            assert _count(w.path) == 0
            _hooks.write_pattern(w, 100)
            assert _hooks.wake_stats(w) == (_core.WAKE_HEAL_AFTER, 1)

            # a live counted reader holds its read lock: its count is not taken away
            os.pwrite(fd, struct.pack("=I", 1), count_at)
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_RDLCK))
            _hooks.write_pattern(w, _core.WAKE_HEAL_AFTER)
            assert _hooks.wake_stats(w) == (2 * _core.WAKE_HEAL_AFTER, 1)
            assert _count(w.path) == 1
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_UNLCK))
        finally:
            os.close(fd)


def test_create_removes_sidecars_whose_channel_is_gone(make_path: Callable[[], str]) -> None:
    """A writer killed by SIGKILL, or a channel removed with rm, leaves .NAME.waiters; the
    next create() in that directory removes those whose channel is gone or is another file
    (once they are STALE_SIDECAR_AGE_S old: one younger may be a create() in progress), and
    leaves every other file alone. Before: they piled up in /dev/shm forever."""
    STALE_SIDECAR_AGE_S = _sidecar.STALE_SIDECAR_AGE_S

    removed, replaced, young, live = make_path(), make_path(), make_path(), make_path()
    old = time.time() - 2 * STALE_SIDECAR_AGE_S
    keep = seqshm.create(live, np.uint8, 8)
    sidecars = {}
    for p in (removed, replaced, young):
        code = ("import os, sys, numpy as np, seqshm\n"
                "seqshm.create(sys.argv[1], np.uint8, 8)\nos._exit(0)\n")  # SIGKILL-like
        subprocess.run([sys.executable, "-c", code, p], check=True, timeout=60)
        sidecars[p] = _sidecar.path_of(p)
        assert os.path.exists(sidecars[p])
    os.unlink(removed)  # rm of the channel file
    # Another process's file made meanwhile: on ext4 it takes the lowest free inode number,
    # the removed channel's.
    with open(os.path.join(os.path.dirname(live), "meanwhile"), "wb"):
        pass
    # Another file at the name, made before it replaces the channel (mv or cp over it). Not rm
    # then create: that new file could be given the channel's freed inode number (ext4 hands
    # out the lowest free one; so it did under load, once another process's file had taken
    # the lower one, as just above), and the sweep, which knows a channel by st_dev and
    # st_ino only, then keeps the sidecar (left until the name changes again).
    with open(replaced + ".new", "wb") as f:
        f.write(b"x" * 4096)
    os.replace(replaced + ".new", replaced)
    for p in (removed, replaced):
        os.utime(sidecars[p], (old, old))
    os.utime(_sidecar.path_of(live), (old, old))  # old but its channel is there
    stranger = os.path.join(os.path.dirname(live), ".notes.waiters")
    with open(stranger, "wb") as f:  # not a sidecar of ours
        f.write(b"\0" * 4096)
    os.utime(stranger, (old, old))
    with seqshm.create(make_path(), np.uint8, 8):
        pass
    assert not os.path.exists(sidecars[removed])
    assert not os.path.exists(sidecars[replaced])
    assert os.path.exists(sidecars[young])  # too young to tell
    assert os.path.exists(_sidecar.path_of(live)) and os.path.exists(stranger)
    keep.close()


def test_a_dead_readers_count_is_reset_beside_a_live_reader_that_waits_now_and_then(
        make_path: Callable[[], str]) -> None:
    """A reader killed asleep leaves its count; a live reader that sleeps once every ten
    writes must not keep the writer paying a FUTEX_WAKE per write forever (its wakes that
    found someone used to restart the count of wakes that found nobody, so the reset never
    came)."""
    with seqshm.create(make_path(), np.int64, 1) as w, seqshm.open(w.path) as r:
        fd = os.open(_sidecar.path_of(w.path), os.O_RDWR)
        try:
            os.pwrite(fd, struct.pack("=I", 1), _core.abi_layout()["waiters"]["count"])
        finally:
            os.close(fd)
        go, done = threading.Event(), threading.Event()
        stop = False
        results: list[bool] = []

        def live_reader() -> None:
            while True:
                go.wait()
                go.clear()
                if stop:
                    return
                r.read()
                results.append(r.wait(timeout=HANG_GUARD_S))
                done.set()

        t = threading.Thread(target=live_reader)
        t.start()
        wchan = f"/proc/self/task/{t.native_id}/wchan"
        try:
            rounds = _core.WAKE_HEAL_AFTER // 9 + 2
            for i in range(rounds):
                done.clear()
                go.set()
                with open(wchan) as f:
                    _until(lambda: "futex" in (f.seek(0), f.read())[1], "the reader sleeps")
                w.write([i])  # a wake that finds the live reader
                assert done.wait(HANG_GUARD_S)
                for j in range(9):  # and nine that find nobody but the dead one's count
                    w.write([j])
        finally:
            stop = True
            go.set()
            t.join()
        assert results == [True] * rounds
        wakes, resets = _hooks.wake_stats(w)
        assert resets >= 1, f"{wakes} wakes, the dead reader's count never reset"
        assert _count(w.path) == 0
        for i in range(100):  # nobody counted now: no more wake calls
            w.write([i])
        assert _hooks.wake_stats(w)[0] == wakes


@pytest.mark.parametrize("call", ["wait", "wait_async"])
def test_a_reader_locked_out_of_the_sidecar_backs_off(
        make_path: Callable[[], str], monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    """Whoever may read a channel may open its sidecar and hold the write lock the writer
    takes for microseconds to reset the count: waiting readers then looked at it again every
    20 us for as long as it was held (17% of a CPU each; thousands of tries in 0.3 s). They
    back off to the polling rate of a reader without a sidecar (1 ms)."""
    tries: list[int] = []
    sleep = seqshm.Reader._futex_sleep
    monkeypatch.setattr(seqshm.Reader, "_futex_sleep",
                        lambda self, *a: tries.append(sleep(self, *a)) or tries[-1])
    with seqshm.create(make_path(), np.int64, 1) as w, seqshm.open(w.path) as r:
        w.write([1])
        r.read()
        fd = os.open(_sidecar.path_of(w.path), os.O_RDWR)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_WRLCK))
            seconds = 0.3
            if call == "wait":
                assert r.wait(seconds) is False
            else:
                assert asyncio.run(r.wait_async(seconds)) is False
        finally:
            os.close(fd)
        assert set(tries) == {1}  # every try met the lock
        # at 1 ms apart at most 300 tries (plus the backoff's first few); was about 5000
        assert len(tries) < seconds / seqshm._wait.POLL_MAX_S + 20, len(tries)


def test_async_waits_beyond_the_sleeper_threads_do_not_queue_behind_them(
        make_path: Callable[[], str], monkeypatch: pytest.MonkeyPatch) -> None:
    """wait_async() slept in one of 64 threads; the 65th waiting task's sleep was queued
    until one of them ended its slice, so the write it waited for was seen up to 0.1 s late
    (60 ms measured with 100 tasks). There are 256 threads now, and waits with no free
    thread poll instead (8 threads here). With slices of 5 s, a queued wait would have
    waited for one to run out."""
    from seqshm import _wait

    monkeypatch.setattr(_wait, "CHECK_INTERVAL_S", 5.0)
    monkeypatch.setattr(_wait, "_SLEEPERS_MAX", 8)
    ended: list[int] = []
    sleep = seqshm.Reader._futex_sleep

    def futex_sleep(self: seqshm.Reader, target: int, seconds: float,
                    slot: _core.SleeperSlot | None = None) -> int:
        rc = sleep(self, target, seconds, slot)
        ended.append(rc)
        return rc

    monkeypatch.setattr(seqshm.Reader, "_futex_sleep", futex_sleep)
    n = _wait._SLEEPERS_MAX + 4
    _until(lambda: _core.sleeper_slots() == 0, "earlier tests' sleeps are over")
    writers = [seqshm.create(make_path(), np.int64, 1) for _ in range(n)]
    readers = [seqshm.open(w.path) for w in writers]

    async def main() -> None:
        tasks = [asyncio.create_task(r.wait_async(HANG_GUARD_S)) for r in readers]
        deadline = time.monotonic() + HANG_GUARD_S
        while sum(_count(w.path) for w in writers) < _wait._SLEEPERS_MAX:
            assert time.monotonic() < deadline, "the sleeper threads never all slept"
            await asyncio.sleep(0.001)
        beyond = [i for i, w in enumerate(writers) if _count(w.path) == 0]
        assert len(beyond) == n - _wait._SLEEPERS_MAX
        writers[beyond[0]].write([1])
        assert await asyncio.wait_for(tasks[beyond[0]], HANG_GUARD_S) is True
        assert 2 not in ended  # no sleep ran out its slice before: the wait did not queue
        for w in writers:
            w.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(x, seqshm.ChannelEnded) for i, x in enumerate(results)
                   if i != beyond[0])

    try:
        for w in writers:
            w.write([0])
        for r in readers:
            r.read()
        asyncio.run(main())
    finally:
        for w in writers:
            w.close(unlink=True)
        for r in readers:
            r.close()


def test_a_dead_readers_count_is_reset_when_a_live_reader_is_counted_at_most_wakes(
        make_path: Callable[[], str]) -> None:
    """A live reader woken but not yet run still holds its read lock (and its count): a
    writer's burst of writes after a wake finds it so at most idle wakes. A reset tried only
    once per SEQSHM_WAKE_HEAL_AFTER idle wakes then kept failing (here: idle wake 1024, 2048,
    3072 and 4096 all met the lock, the first that would not is the 5120th); after a failed
    try the writer tries again within a few idle wakes."""
    with seqshm.create(make_path(), np.int64, 1) as w:
        fd = os.open(_sidecar.path_of(w.path), os.O_RDWR)
        try:
            os.pwrite(fd, struct.pack("=I", 1), _core.abi_layout()["waiters"]["count"])
            for _ in range(2 * _core.WAKE_HEAL_AFTER // 10):
                # nine writes while a live reader (this fd's read lock) is counted, one not
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_RDLCK))
                _hooks.write_pattern(w, 9)
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fcntl.F_UNLCK))
                _hooks.write_pattern(w, 1)
                if _hooks.wake_stats(w)[1]:
                    break
        finally:
            os.close(fd)
        wakes, resets = _hooks.wake_stats(w)
        assert resets == 1, f"{wakes} wakes and the count never reset"
        assert _count(w.path) == 0
