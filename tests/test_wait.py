"""Waiting for the next write on a userspace channel: wait() and wait_async() in one process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

import seqshm

#: Not a speed limit: a bound so that a wait that ignores its timeout fails instead of hanging.
HANG_GUARD_S = 5.0


def test_wait_is_immediate_when_a_write_is_newer_than_the_last_read(
        make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int8, 1) as w, seqshm.open(w.path) as r:
        w.write([1])
        assert r.wait(timeout=0) is True  # nothing read yet: write 1 is new
        r.read()
        assert r.wait(timeout=0) is False
        w.write([2])
        assert r.wait(timeout=0) is True


def test_wait_times_out_with_false_when_nothing_is_written(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int8, 1) as w, seqshm.open(w.path) as r:
        w.write([1])
        r.read()
        t0 = time.monotonic()
        assert r.wait(timeout=0.05) is False
        assert 0.05 <= time.monotonic() - t0 < HANG_GUARD_S


def test_wait_wakes_for_a_write_from_another_thread(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int8, 1) as w, seqshm.open(w.path) as r:
        timer = threading.Timer(0.05, w.write, args=([7],))
        timer.start()
        try:
            assert r.wait(timeout=HANG_GUARD_S) is True
        finally:
            timer.join()
        assert r.read().data[0] == 7


def test_wait_async_times_out_with_false(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int8, 1) as w, seqshm.open(w.path) as r:
        w.write([1])
        r.read()
        assert asyncio.run(r.wait_async(timeout=0.05)) is False


def test_wait_async_lets_other_tasks_run_and_wakes_for_their_write(
        make_path: Callable[[], str]) -> None:
    async def main(w: seqshm.Writer, r: seqshm.Reader) -> int:
        async def write_later() -> None:
            await asyncio.sleep(0.05)
            w.write([9])

        task = asyncio.create_task(write_later())
        assert await r.wait_async(timeout=HANG_GUARD_S) is True
        await task
        return int(r.read().data[0])

    with seqshm.create(make_path(), np.int8, 1) as w, seqshm.open(w.path) as r:
        w.write([1])
        r.read()
        assert asyncio.run(main(w, r)) == 9


@pytest.mark.parametrize("timeout", [-1, float("nan")])
def test_wait_with_a_bad_timeout_is_a_value_error(make_path: Callable[[], str],
                                                  timeout: float) -> None:
    with seqshm.create(make_path(), np.int8, 1) as w, seqshm.open(w.path) as r:
        with pytest.raises(ValueError):
            r.wait(timeout=timeout)


def test_wait_on_a_closed_reader_is_a_value_error(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int8, 1) as w:
        r = seqshm.open(w.path)
        r.close()
        with pytest.raises(ValueError, match="closed"):
            r.wait(timeout=0)
        with pytest.raises(ValueError, match="closed"):
            asyncio.run(r.wait_async(timeout=0))
