"""Shared helpers of the benchmarks: payload sizes, groups and extra_info, CPU pinning, names."""

from __future__ import annotations

import contextlib
import itertools
import os
import time

KiB = 1024
MiB = 1024 * KiB

_counter = itertools.count()


def size_id(nbytes: int) -> str:
    if nbytes >= MiB and nbytes % MiB == 0:
        return f"{nbytes // MiB}MiB"
    if nbytes >= KiB and nbytes % KiB == 0:
        return f"{nbytes // KiB}KiB"
    return f"{nbytes}B"


def shm_path(tag: str) -> str:
    """A fresh path under /dev/shm for one benchmark's channel or file."""
    return f"/dev/shm/seqshm-bench-{os.getpid()}-{next(_counter)}-{tag}"


def setup(benchmark, *, group: str, case: str, nbytes: int, baseline: bool = False,
          ops_per_call: int = 1, **extra) -> None:
    """Name the benchmark's group and record what the report needs to compare it.

    ``baseline`` marks the one benchmark of the group the others are divided by;
    ``ops_per_call`` is how many operations one call of the benchmarked function makes.
    """
    benchmark.group = group
    benchmark.extra_info.update(case=case, payload_bytes=nbytes, baseline=baseline,
                                ops_per_call=ops_per_call, **extra)


def finish(benchmark, **extra) -> None:
    """Add ns/op, ops/s and bytes/s (from the median) and ``extra`` to extra_info."""
    info = benchmark.extra_info
    info.update(extra)
    info["loadavg_1min"] = os.getloadavg()[0]  # other work on the machine skews a run
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: nothing was timed
        return
    median = stats.stats.median / info["ops_per_call"]
    info["ns_per_op"] = median * 1e9
    info["ops_per_s"] = 1.0 / median if median > 0 else None
    info["bytes_per_s"] = info["payload_bytes"] / median if median > 0 else None


def loop_count(nbytes: int) -> int:
    """Calls per timed loop for a payload size: ~1000 for small payloads, 1 from 256 KiB up."""
    return max(1, min(1000, (256 * KiB) // max(nbytes, 1)))


def looped(fn, *args, n: int):
    """A function calling ``fn(*args)`` ``n`` times in a plain for loop (what timeit does).

    pytest-benchmark's own loop calls ``fn(*args, **kwargs)``, ~20 ns per call here, more
    than a snapshot of 64 B costs; this loop's overhead is ~4 ns per call (measured by the
    ``empty_loop`` case). Use with ``setup(..., ops_per_call=n)``.
    """
    rng = range(n)
    if not args:
        def loop():
            for _ in rng:
                fn()
    elif len(args) == 1:
        (a,) = args

        def loop():
            for _ in rng:
                fn(a)
    elif len(args) == 2:
        a, b = args

        def loop():
            for _ in rng:
                fn(a, b)
    else:
        def loop():
            for _ in rng:
                fn(*args)
    return loop


def empty_loop(n: int):
    """The loop of ``looped`` with nothing in it: the harness's own cost per call."""
    rng = range(n)

    def loop():
        for _ in rng:
            pass
    return loop


def bounded(benchmark, fn, seconds: float = 0.5) -> None:
    """Benchmark ``fn()`` for about ``seconds`` whatever one call costs, even when calls vary
    from 100 ns to a 50 ms timeout (a starved reader): a 20 ms probe sizes the rounds, and
    there is no warmup beyond one round. (pytest-benchmark's own calibration can pick its
    rounds from one fast call and then run 10^4 slow ones.) Stats are per call."""
    if getattr(benchmark, "disabled", False):
        benchmark(fn)
        return
    t0 = time.perf_counter()
    calls = 0
    while True:
        fn()
        calls += 1
        spent = time.perf_counter() - t0
        if spent >= 0.02:
            break
    per_call = spent / calls
    iterations = max(1, int(0.001 / per_call))  # ~1 ms rounds
    rounds = max(5, int(seconds / (per_call * iterations)))
    benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=1)


def quick(request) -> bool:
    """True when benchmarks run once each (``--benchmark-disable``): bound any timed loop."""
    return bool(request.config.getoption("benchmark_disable", False))


@contextlib.contextmanager
def pinned_main():
    """Pin this process to the first CPU while helpers run pinned to the last, so a reader and
    a writer always run on different cores (the cross-core case is the one that costs)."""
    before = os.sched_getaffinity(0)
    cpus = sorted(before)
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[0]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
