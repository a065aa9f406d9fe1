"""Readers and writers in different processes on different cores.

- A reader's snapshots/s and retries per snapshot with a writer process publishing at several
  rates (idle, 1 kHz, 100 kHz, as fast as it goes), one slot and a ring of 8 slots; baseline of
  each group: the idle writer. Under the continuous writer the ring's rate over its idle rate is
  the starvation figure.
- A writer's publishes/s with no reader and with one busy reader process spinning on
  snapshot(); baseline: no reader.

Snapshots/s, retries and success rates come from the reader's own counters (``r.stats``) over
the whole benchmark, not from the timer; a snapshot that times out (ReadTimeout, the reader's
timeout is short here) counts as a failed call.
"""

from __future__ import annotations

import time

import benchprocs
import numpy as np
import pytest
from benchutil import KiB, MiB, finish, pinned_main, setup, shm_path, size_id

import seqshm

SIZES = [64, 4 * KiB, 1 * MiB]
RATES = {"idle": 0, "1kHz": 1_000, "100kHz": 100_000, "max": None}
SLOTS = [1, 8]
READ_TIMEOUT = 0.05  # seconds: bounds a starved snapshot (and the quick run)


@pytest.mark.parametrize("nbytes", SIZES, ids=size_id)
@pytest.mark.parametrize("nr_slots", SLOTS, ids=lambda s: f"slots{s}")
@pytest.mark.parametrize("rate", list(RATES))
def test_reader_under_writer(benchmark, rate, nr_slots, nbytes):
    path = shm_path(f"cont{size_id(nbytes)}")
    setup(benchmark, group=f"contention {size_id(nbytes)} nr_slots={nr_slots}",
          case=f"writer {rate}", nbytes=nbytes, baseline=(rate == "idle"), section="contention",
          nr_slots=nr_slots, writer_rate=rate)
    calls = [0, 0]  # calls, timeouts

    def snap():
        calls[0] += 1
        try:
            r.snapshot(out)
        except seqshm.ReadTimeout:
            calls[1] += 1

    with pinned_main(), benchprocs.pattern_writer(path, nbytes, nr_slots=nr_slots,
                                              rate_hz=RATES[rate]) as writer:
        r = seqshm.open(path, timeout=READ_TIMEOUT)
        out = np.empty(r.shape, r.dtype)
        s0 = r.stats
        t0 = time.perf_counter()
        benchmark(snap)
        elapsed = time.perf_counter() - t0
        s1 = r.stats
        r.close()
    snaps = s1.snapshots - s0.snapshots
    retries = s1.retries - s0.retries
    finish(benchmark,
           calls=calls[0], timeouts=calls[1],
           snapshots_per_s=snaps / elapsed if elapsed > 0 else None,
           retries_per_snapshot=retries / snaps if snaps else None,
           attempt_success_rate=snaps / (snaps + retries) if snaps + retries else None,
           call_success_rate=(calls[0] - calls[1]) / calls[0] if calls[0] else None,
           writer_writes_per_s=writer.rate)


@pytest.mark.parametrize("nbytes", SIZES, ids=size_id)
@pytest.mark.parametrize("api", ["write_pattern", "write"])
@pytest.mark.parametrize("readers", [0, 1], ids=lambda n: f"readers{n}")
def test_writer_publish(benchmark, readers, api, nbytes):
    path = shm_path(f"pub{size_id(nbytes)}")
    w = seqshm.create(path, np.uint64, nbytes // 8, overwrite=True)
    w._write_pattern(1)
    # _write_pattern(k): k C-speed writes per call, ~0.1-1 ms; write(data): one API call.
    k = max(1, 4_000_000 // (nbytes + 64)) if api == "write_pattern" else 1
    setup(benchmark, group=f"writer publish {api} {size_id(nbytes)}",
          case=f"{readers} busy reader(s)", nbytes=nbytes, baseline=(readers == 0),
          ops_per_call=k, section="publish", readers=readers, api=api)
    data = np.arange(nbytes // 8, dtype=np.uint64)
    try:
        with pinned_main():
            helpers = [benchprocs.busy_reader(path) for _ in range(readers)]
            for h in helpers:
                h.__enter__()
            try:
                seq0 = w.seq
                t0 = time.perf_counter()
                if api == "write_pattern":
                    benchmark(w._write_pattern, k)
                else:
                    benchmark(w.write, data)
                elapsed = time.perf_counter() - t0
                published = w.seq - seq0
            finally:
                for h in helpers:
                    h.__exit__(None, None, None)
    finally:
        w.close(unlink=True)
    finish(benchmark, publishes_per_s=published / elapsed if elapsed > 0 else None,
           reader_snapshots_per_s=[h.rate for h in helpers])
