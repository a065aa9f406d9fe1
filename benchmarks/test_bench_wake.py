"""Waking a reader that waits for the next write (issue 9 part 3), between two processes on
different cores.

- ``wake-up``: a ping-pong between this process and a helper: this process writes A, the
  helper wakes and answers on B at once, this process wakes. Before each round (untimed)
  this process spins 100 us, so the helper is asleep when A comes: ``extra_info`` has the
  one-way latency's p50/p99 from a sleeping reader, measured by the helper from the write's
  timestamp to its return from the wait, and the waiting reader's idle wake-ups and CPU per
  second with nothing written (0.5 s). The timed round trip (ns/op: half of it) is the
  protocol as used: this process may find B written before it sleeps. Cases: seqshm
  ``wait()`` sleeping in the futex, the same polling (the channel's sidecar removed before
  the readers opened it: the fallback, and the only way before), a pipe and an eventfd
  carrying the same notification. Baseline: the pipe.
- ``wake writer cost <api>``: a writer's cost per write (``write_pattern`` at C speed, and
  ``write()``, in loops) with no sidecar (the engine's count check switched off: the
  baseline) and with a sidecar and nobody waiting (one load per write: the 5% target).
- ``wake writer cost paced write``: one ``write()`` per round after 100 us (untimed), with
  nobody waiting (baseline) and with a reader process asleep in ``wait()`` at each write
  (the writer pays the FUTEX_WAKE).
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import time

import benchprocs
import numpy as np
import pytest
from benchutil import finish, looped, pinned_main, quick, setup, shm_path

import seqshm
from seqshm import _hooks, _sidecar

WAKE_CASES = ["pipe", "eventfd", "futex", "poll"]
IDLE_S = 0.5
ROUNDS = 1000
GAP_S = 100e-6  # before each timed round: the peer is asleep again by then


def _spin(seconds=GAP_S):
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def _pong_seqshm(path_a, path_b, poll, ready, stop):
    """Helper: wait for a write on A, answer on B with the wake-up's latency in ns."""
    wb = seqshm.create(path_b, np.int64, 1, overwrite=True)
    if poll:
        os.unlink(_sidecar.path_of(path_b))
    wb.write([0])
    ra = seqshm.open(path_a)
    ra.read()
    ready.set()
    try:
        while True:
            try:
                if not ra.wait(timeout=1.0):
                    continue
            except seqshm.ChannelEnded:
                return
            s = ra.read()
            wb.write([time.monotonic_ns() - s.timestamp_ns])
    finally:
        wb.close(unlink=True)
        ra.close()


def _pong_fd(kind, rfd, wfd, ready, stop):
    ready.set()
    while True:
        if kind == "pipe":
            data = os.read(rfd, 8)
            if not data:
                return
            t = int.from_bytes(data, "little")
        else:
            t = os.eventfd_read(rfd)
            if t == 1:
                return
        lat = time.monotonic_ns() - t
        if kind == "pipe":
            os.write(wfd, lat.to_bytes(8, "little"))
        else:
            os.eventfd_write(wfd, lat + 2)  # never 0 or 1


@contextlib.contextmanager
def _helper(target, *args):
    ready = benchprocs.CTX.Event()
    stop = benchprocs.CTX.Event()
    p = benchprocs.CTX.Process(target=target, args=(*args, ready, stop), daemon=True)
    p.start()
    try:
        benchprocs.pin_to_last_cpu(p.pid)
        assert ready.wait(benchprocs.STARTUP_TIMEOUT)
        yield p
    finally:
        stop.set()


def _idle(wait_once) -> dict:
    """Wake-ups (context switches) and CPU of this thread while ``wait_once()`` waits IDLE_S
    with nothing written."""
    r0 = resource.getrusage(resource.RUSAGE_THREAD)
    t0 = time.perf_counter()
    wait_once()
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_THREAD)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return {"idle_wakeups_per_s": (r1.ru_nvcsw + r1.ru_nivcsw - r0.ru_nvcsw - r0.ru_nivcsw) / dt,
            "idle_cpu_percent": 100 * cpu / dt}


def _percentiles(lat_ns: list[int]) -> dict:
    if not lat_ns:
        return {}
    a = np.sort(np.asarray(lat_ns, dtype=np.float64)) / 1e3
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)),
            "max_us": float(a[-1]), "samples": len(a)}


@pytest.mark.parametrize("kind", WAKE_CASES)
def test_wake_latency(benchmark, request, kind):
    setup(benchmark, group="wake-up 8B", case=kind, nbytes=8, baseline=(kind == "pipe"),
          ops_per_call=2, section="wake")
    lat: list[int] = []
    rounds = 3 if quick(request) else ROUNDS
    with pinned_main():
        if kind in ("futex", "poll"):
            path_a, path_b = shm_path("wakeA"), shm_path("wakeB")
            wa = seqshm.create(path_a, np.int64, 1, overwrite=True)
            if kind == "poll":
                os.unlink(_sidecar.path_of(path_a))
            wa.write([0])
            try:
                with _helper(_pong_seqshm, path_a, path_b, kind == "poll"):
                    rb = seqshm.open(path_b)
                    rb.read()
                    assert rb._sleeps_in_kernel() == (kind == "futex")
                    one = np.zeros(1, np.int64)

                    def roundtrip():
                        wa.write(one)
                        while not rb.wait(timeout=1.0):
                            pass
                        lat.append(int(rb.read().data[0]))

                    benchmark.pedantic(roundtrip, setup=_spin, rounds=rounds, iterations=1,
                                       warmup_rounds=10)
                    idle = _idle(lambda: rb.wait(timeout=IDLE_S))
                    wa.close(unlink=True)  # the helper's wait ends
                    rb.close()
            finally:
                wa.close(unlink=True)
        else:
            if kind == "pipe":
                a_r, a_w = os.pipe()
                b_r, b_w = os.pipe()
            else:
                a_r = a_w = os.eventfd(0)
                b_r = b_w = os.eventfd(0)
            try:
                with _helper(_pong_fd, kind, a_r, b_w):
                    def roundtrip():
                        t = time.monotonic_ns()
                        if kind == "pipe":
                            os.write(a_w, t.to_bytes(8, "little"))
                            lat.append(int.from_bytes(os.read(b_r, 8), "little"))
                        else:
                            os.eventfd_write(a_w, t)
                            lat.append(os.eventfd_read(b_r) - 2)

                    benchmark.pedantic(roundtrip, setup=_spin, rounds=rounds, iterations=1,
                                       warmup_rounds=10)
                    idle = _idle(lambda: select.select([b_r], [], [], IDLE_S))
                    if kind == "pipe":
                        os.close(a_w)
                    else:
                        os.eventfd_write(a_w, 1)
            finally:
                for fd in {a_r, a_w, b_r, b_w}:
                    with contextlib.suppress(OSError):
                        os.close(fd)
    finish(benchmark, **_percentiles(lat[10:]), **idle)


def _sleeper(path, ready, stop):
    """Helper: a reader that sleeps in wait() for every write it can catch."""
    r = seqshm.open(path)
    r.read()
    ready.set()
    while not stop.is_set():
        with contextlib.suppress(seqshm.ChannelEnded):
            if r.wait(timeout=0.05):
                r.read()
    r.close()


COST = [pytest.param(api, readers, id=f"{api}-{readers}")
        for api in ("write_pattern", "write") for readers in ("no_sidecar", "nobody")]
COST += [pytest.param("paced write", readers, id=f"paced-{readers}")
         for readers in ("nobody", "sleeper")]


@pytest.mark.parametrize(("api", "readers"), COST)
def test_writer_cost(benchmark, request, api, readers):
    path = shm_path("wakecost")
    w = seqshm.create(path, np.uint64, 8, overwrite=True)  # 64 B
    _hooks.write_pattern(w, 1)
    k = {"write_pattern": 20_000, "write": 1000, "paced write": 1}[api]
    setup(benchmark, group=f"wake writer cost {api} 64B",
          case={"no_sidecar": "no sidecar", "nobody": "sidecar, nobody waits",
                "sleeper": "1 reader asleep in wait()"}[readers],
          nbytes=64, baseline=(readers == ("nobody" if api == "paced write" else "no_sidecar")),
          ops_per_call=k, section="wake", api=api)
    data = np.arange(8, dtype=np.uint64)
    if readers == "no_sidecar":
        _hooks.wake_enable(w, False)
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(pinned_main())
            if readers == "sleeper":
                stack.enter_context(_helper(_sleeper, path))
            w0 = _hooks.wake_stats(w)[0]
            seq0 = w.seq
            if api == "write_pattern":
                benchmark(_hooks.write_pattern, w, k)
            elif api == "write":
                benchmark(looped(w.write, data, n=k))
            else:
                benchmark.pedantic(w.write, (data,), setup=_spin, warmup_rounds=10,
                                   rounds=3 if quick(request) else 2000, iterations=1)
            wakes = _hooks.wake_stats(w)[0] - w0
            writes = w.seq - seq0
    finally:
        w.close(unlink=True)
    finish(benchmark, wake_calls_per_write=wakes / writes if writes else None)
