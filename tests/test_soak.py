"""Soak: threads sharing and reopening readers while the writer process restarts every 100 ms,
for 30 s (SEQSHM_SOAK_S to change it). No crash, no torn or mislabelled copy, and every reader
ends on the newest channel or with a documented error."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
import pytest

import seqshm
from seqshm import _hooks
from seqshm.testing import torn

SOAK_S = float(os.environ.get("SEQSHM_SOAK_S", "30"))
GENERATION_S = 0.1
NBYTES = 64 * 1024
#: What a following reader may meet between generations: the documented signals.
DOCUMENTED = (seqshm.ChannelEnded, seqshm.ReadTimeout)


def _generation(path: str, gen: int) -> None:
    """One life of the producer: create (taking over the path), write for GENERATION_S, then
    close, die between writes, or die in the middle of a write."""
    w = seqshm.create(path, np.uint64, NBYTES // 8, nr_slots=4, overwrite=True)
    end = time.monotonic() + GENERATION_S
    while time.monotonic() < end:
        _hooks.write_pattern(w, 1)
        time.sleep(0.0005)
    if gen % 3 == 0:
        w.close()
        os._exit(0)
    if gen % 3 == 2:
        _hooks.stall_mid_write(w, NBYTES // 16)
    os._exit(1)


def _restarter(path: str, stop: Any, generations: Any) -> None:
    ctx = multiprocessing.get_context("fork")
    gen = 0
    while not stop.value:
        p = ctx.Process(target=_generation, args=(path, gen))
        p.start()
        p.join()
        gen += 1
        generations.value = gen
    # the last producer stays: readers must end on it
    w = seqshm.create(path, np.uint64, NBYTES // 8, nr_slots=4, overwrite=True)
    _hooks.write_pattern(w, 1)
    while stop.value != 2:
        _hooks.write_pattern(w, 1)
        time.sleep(0.001)
    w.close(unlink=True)


@pytest.mark.slow
def test_soak_restarting_writer_shared_and_reopened_readers(shm_path: str) -> None:
    ctx = multiprocessing.get_context("fork")
    stop, generations = ctx.RawValue("b", 0), ctx.RawValue("i", 0)
    with seqshm.create(shm_path, np.uint64, NBYTES // 8, nr_slots=4) as first:
        _hooks.write_pattern(first, 1)
    restarter = ctx.Process(target=_restarter, args=(shm_path, stop, generations))
    restarter.start()  # before any thread: fork is safe
    shared = seqshm.open(shm_path, reopen=True, timeout=0.3)
    bad: list[str] = []
    errors: Counter[str] = Counter()
    reads = Counter[str]()
    done = threading.Event()

    def check(s: seqshm.Snapshot, who: str) -> None:
        words = s.data.view(np.uint64)
        if torn(s.data) or (s.seq and int(words[0]) != s.seq):
            bad.append(f"{who}: data {int(words[0])} labelled {s.seq}")
        reads[who] += 1

    def read_loop(r: seqshm.Reader, who: str) -> None:
        while not done.is_set():
            try:
                check(r.read(), who)
            except DOCUMENTED as e:
                errors[type(e).__name__] += 1
                time.sleep(0.01)
            except Exception as e:  # noqa: BLE001 - anything else is a failure
                bad.append(f"{who}: {type(e).__name__}: {e}")
                return

    def own_reader(who: str) -> None:
        with seqshm.open(shm_path, reopen=True, timeout=0.3) as r:
            read_loop(r, who)

    def reopener() -> None:
        while not done.is_set():
            try:
                with seqshm.open(shm_path, timeout=0.3) as r:
                    for _ in range(20):
                        check(r.read(), "reopener")
            except DOCUMENTED as e:
                errors[type(e).__name__] += 1
            except Exception as e:  # noqa: BLE001
                bad.append(f"reopener: {type(e).__name__}: {e}")
                return

    threads = [threading.Thread(target=read_loop, args=(shared, f"shared{i}")) for i in range(8)]
    threads += [threading.Thread(target=own_reader, args=(f"own{i}",)) for i in range(2)]
    threads += [threading.Thread(target=reopener)]
    for t in threads:
        t.start()
    time.sleep(SOAK_S)
    stop.value = 1
    # wait until the last producer is up and has written, then let the readers catch it
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with seqshm.open(shm_path) as probe:
                if probe.state is seqshm.ChannelState.OPEN and probe.head:
                    break
        except (FileNotFoundError, seqshm.FormatError):
            pass
        time.sleep(0.05)
    time.sleep(1.0)
    done.set()
    for t in threads:
        t.join(10)
    try:
        assert not [t for t in threads if t.is_alive()], "a reader thread hung"
        assert not bad, f"{len(bad)} bad copies or errors: {bad[:5]}"
        assert generations.value >= SOAK_S / GENERATION_S / 3, generations.value
        assert sum(reads.values()) > 1000 and all(reads[f"shared{i}"] for i in range(8)), reads
        # the shared follower ends on the newest channel
        shared.wait(5)
        assert shared.state is seqshm.ChannelState.OPEN, shared.state
        assert not torn(shared.snapshot())
    finally:
        shared.close()
        stop.value = 2
        restarter.join(10)
    print(f"{generations.value} generations, reads {dict(reads)}, documented errors "
          f"{dict(errors)}")
