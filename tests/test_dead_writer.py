"""A writer that dies or stops in the middle of a write cannot hang readers: they give up after
their timeout with a ReadTimeout that says what happened to the writer."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import seqshm
from seqshm import ReadTimeout
from seqshm.testing import PatternWriter, StalledWriter, torn

TIMEOUT = 0.2
#: Not a speed limit: a reader that waits this long has ignored its timeout.
HANG_GUARD_S = 5.0

CALLS: dict[str, Callable[[Any], Any]] = {
    "snapshot": lambda r: r.snapshot(),
    "read": lambda r: r.read(),
    "begin": lambda r: r.begin(),
    "apply": lambda r: r.apply(np.copy),
    "history": lambda r: r.history(),
}


@pytest.fixture
def stalled(shm_path: str) -> Iterator[StalledWriter]:
    """A writer process stuck in the middle of its 4th write (3 complete ones before it)."""
    with StalledWriter(shm_path, 64, writes_before=3) as w:
        yield w


def _timed_out(call: Callable[[Any], Any], path: str) -> ReadTimeout:
    with seqshm.open(path, timeout=TIMEOUT) as r:
        t0 = time.monotonic()
        with pytest.raises(ReadTimeout) as e:
            call(r)
        assert time.monotonic() - t0 < HANG_GUARD_S
        assert r.stats.timeouts >= 1
    return e.value


def test_history_of_a_ring_leaves_out_the_slot_a_dead_writer_left_mid_write(shm_path: str) -> None:
    with StalledWriter(shm_path, 64, nr_slots=4, writes_before=5) as w:
        w.kill(signal.SIGKILL)
        w.join()
        with seqshm.open(shm_path, timeout=TIMEOUT) as r:
            h = r.history()
            assert list(h.seq) == [3, 4, 5]  # slot of write 6 stays odd; write 2 was in it
            for row, seq in zip(h.data, h.seq, strict=True):
                assert int(row[0]) == seq and not torn(row)
            assert r.snapshot()[0] == 5 and r.seq == 5


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_reads_of_a_writer_killed_mid_write_time_out_saying_it_died(
        stalled: StalledWriter, call: Callable[[Any], Any]) -> None:
    stalled.kill(signal.SIGKILL)
    stalled.join()
    err = _timed_out(call, stalled.path)
    assert err.path == stalled.path and str(err).startswith(f"{stalled.path}: ")
    assert "is odd" in str(err)
    assert f"writer pid {stalled.pid} is gone: it died in the middle of a write" in str(err)


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_reads_of_a_writer_stopped_mid_write_time_out_saying_it_is_alive(
        stalled: StalledWriter, call: Callable[[Any], Any]) -> None:
    stalled.kill(signal.SIGSTOP)
    err = _timed_out(call, stalled.path)
    assert f"writer pid {stalled.pid} is alive but not finishing (stopped?)" in str(err)


def test_read_timeout_is_a_timeout_error(stalled: StalledWriter) -> None:
    err = _timed_out(CALLS["snapshot"], stalled.path)
    assert isinstance(err, TimeoutError) and isinstance(err, seqshm.SeqshmError)
    assert f"for {TIMEOUT:g} s" in str(err)


def test_zero_timeout_gives_up_at_once(stalled: StalledWriter) -> None:
    with seqshm.open(stalled.path, timeout=0) as r:
        t0 = time.monotonic()
        with pytest.raises(ReadTimeout):
            r.snapshot()
        assert time.monotonic() - t0 < HANG_GUARD_S


def test_a_failed_read_reports_no_seq(stalled: StalledWriter) -> None:
    out = np.zeros(8, np.uint64)
    with seqshm.open(stalled.path, timeout=TIMEOUT) as r, pytest.raises(ReadTimeout):
        r.snapshot(out)
    assert r.seq == 0 and r.timestamp_ns == 0  # no consistent read ever happened


def test_ring_reader_still_gets_the_last_complete_write_of_a_dead_writer(shm_path: str) -> None:
    with StalledWriter(shm_path, 64, nr_slots=4, writes_before=3) as w:
        w.kill(signal.SIGKILL)
        w.join()
        with seqshm.open(shm_path, timeout=TIMEOUT) as r:
            snap = r.read()
    assert snap.seq == 3 and not torn(snap.data) and int(snap.data[0]) == 3


def test_a_new_writer_can_take_over_from_a_dead_one(stalled: StalledWriter) -> None:
    stalled.kill(signal.SIGKILL)
    stalled.join()
    with seqshm.create(stalled.path, np.uint64, 8, overwrite=True) as w, \
            seqshm.open(stalled.path, timeout=TIMEOUT) as r:
        w.write(np.full(8, 42, np.uint64))
        assert r.snapshot().tolist() == [42] * 8


def test_a_stopped_writer_still_holds_the_channel(stalled: StalledWriter) -> None:
    stalled.kill(signal.SIGSTOP)
    with pytest.raises(seqshm.WriterBusy):
        seqshm.create(stalled.path, np.uint64, 8, overwrite=True)


def test_reader_recovers_when_a_stopped_writer_continues(shm_path: str) -> None:
    with PatternWriter(shm_path, 64, rate_hz=2000) as w, \
            seqshm.open(shm_path, timeout=TIMEOUT) as r:
        w.kill(signal.SIGSTOP)
        try:
            before = r.read().seq  # stopped between writes (almost always): still readable
        except ReadTimeout:
            before = 0  # stopped mid-write: the rare case, also fine here
        w.kill(signal.SIGCONT)
        r.timeout = HANG_GUARD_S
        deadline = time.monotonic() + HANG_GUARD_S
        while r.read().seq <= before and time.monotonic() < deadline:
            time.sleep(0.001)
        assert r.seq > before and not torn(r.snapshot())


def test_a_writer_killed_between_writes_leaves_its_last_write_readable(shm_path: str) -> None:
    with PatternWriter(shm_path, 4096, rate_hz=20) as w:
        time.sleep(0.2)
        w.kill(signal.SIGKILL)
        w.join()
        with seqshm.open(shm_path, timeout=1.0) as r:
            snap = r.read()
    assert snap.seq >= 1 and not torn(snap.data) and int(snap.data[0]) == snap.seq
