"""Readers and writers in different processes on different cores.

- A reader's snapshots/s and retries per snapshot with a writer process publishing at several
  rates (idle, 1 kHz, 100 kHz, as fast as it goes), one slot and a ring of 8 slots; baseline of
  each group: the idle writer. Under the continuous writer the ring's rate over its idle rate is
  the starvation figure.
- A writer's publishes/s with no reader and with one busy reader process spinning on
  snapshot() (of this channel, or of another one as a control), one slot and a ring;
  baseline: no reader.

Snapshots/s is the share of calls that returned a consistent copy over the mean time of a call
(the mean, not the median: slow retried calls count); retries per snapshot and the attempt
success rate come from the reader's own counters (``r.stats``) over the whole benchmark. A
snapshot that times out (ReadTimeout; the reader's timeout is 50 ms here) is a failed call.
"""

from __future__ import annotations

import contextlib
import time

import benchprocs
import numpy as np
import pytest
from benchutil import (
    KiB,
    MiB,
    bounded,
    finish,
    loop_count,
    looped,
    pinned_main,
    setup,
    shm_path,
    size_id,
)

import seqshm
from seqshm import _hooks

SIZES = [64, 4 * KiB, 1 * MiB]
RATES = {"idle": 0, "1kHz": 1_000, "100kHz": 100_000, "max": None}
SLOTS = [1, 8]
READ_TIMEOUT = 0.05  # seconds: bounds a starved snapshot (and the quick run)


@pytest.mark.parametrize(("rate", "nr_slots", "nbytes"), [  # a group's cases together
    pytest.param(rate, nr_slots, nbytes, id=f"{rate}-slots{nr_slots}-{size_id(nbytes)}")
    for nbytes in SIZES for nr_slots in SLOTS for rate in RATES])
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
        bounded(benchmark, snap)
        elapsed = time.perf_counter() - t0
        s1 = r.stats
        r.close()
    snaps = s1.snapshots - s0.snapshots
    retries = s1.retries - s0.retries
    ok = (calls[0] - calls[1]) / calls[0] if calls[0] else 0.0
    mean = benchmark.stats.stats.mean if getattr(benchmark, "stats", None) else 0.0
    finish(benchmark,
           calls=calls[0], timeouts=calls[1],
           # consistent snapshots per second of reading: the success rate over the mean time
           # of a call (timed rounds only; the wall-clock rate, which also counts time the
           # machine gave to other work, is snapshots_per_s_wall)
           snapshots_per_s=ok / mean if mean > 0 else None,
           snapshots_per_s_wall=snaps / elapsed if elapsed > 0 else None,
           retries_per_snapshot=retries / snaps if snaps else None,
           attempt_success_rate=snaps / (snaps + retries) if snaps + retries else None,
           call_success_rate=(calls[0] - calls[1]) / calls[0] if calls[0] else None,
           writer_writes_per_s=writer.rate)


PUBLISH = [pytest.param(api, nr_slots, readers, nbytes,
                        id=f"{api}-slots{nr_slots}-readers_{readers}-{size_id(nbytes)}")
           for api in ("write_pattern", "write") for nr_slots in SLOTS for nbytes in SIZES
           for readers in ("none", "same", "other")]


@pytest.mark.parametrize(("api", "nr_slots", "readers", "nbytes"), PUBLISH)
def test_writer_publish(benchmark, api, nr_slots, readers, nbytes):
    """readers: none; "same": a busy reader of this channel; "other": a busy reader of another
    channel of the same size (a control: the machine's share of the slowdown, memory bandwidth
    and the hypervisor, apart from sharing cache lines with the writer)."""
    path = shm_path(f"pub{size_id(nbytes)}")
    w = seqshm.create(path, np.uint64, nbytes // 8, nr_slots=nr_slots, overwrite=True)
    _hooks.write_pattern(w, 1)
    # write_pattern(w, k): k C-speed writes per call (~0.1-1 ms); write(data): the Python API.
    k = max(1, 4_000_000 // (nbytes + 64)) if api == "write_pattern" else loop_count(nbytes)
    setup(benchmark, group=f"writer publish {api} {size_id(nbytes)} nr_slots={nr_slots}",
          case={"none": "no reader", "same": "1 busy reader",
                "other": "1 busy reader of another channel"}[readers],
          nbytes=nbytes, baseline=(readers == "none"), ops_per_call=k, section="publish",
          readers=readers, api=api, nr_slots=nr_slots)
    data = np.arange(nbytes // 8, dtype=np.uint64)
    other = None
    try:
        if readers == "other":
            other = seqshm.create(path + "-other", np.uint64, nbytes // 8, overwrite=True)
            _hooks.write_pattern(other, 1)
        with contextlib.ExitStack() as stack:
            stack.enter_context(pinned_main())
            helpers = []
            if readers != "none":
                target = path if readers == "same" else path + "-other"
                helpers.append(stack.enter_context(benchprocs.busy_reader(target)))
            seq0 = w.seq
            t0 = time.perf_counter()
            if api == "write_pattern":
                benchmark(_hooks.write_pattern, w, k)
            else:
                benchmark(looped(w.write, data, n=k))
            elapsed = time.perf_counter() - t0
            published = w.seq - seq0
    finally:
        w.close(unlink=True)
        if other is not None:
            other.close(unlink=True)
    finish(benchmark, publishes_per_s=published / elapsed if elapsed > 0 else None,
           reader_snapshots_per_s=[h.rate for h in helpers])
