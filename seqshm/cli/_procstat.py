"""This host's per-CPU times from /proc/stat, and the loop that publishes them as a cpustat channel
(``seqshm demo``'s writer, the export tests and benchmarks)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeAlias, cast

import numpy as np

from seqshm import _writer
from seqshm._cpustat import CPUSTAT_DTYPE, CPUSTAT_FIELDS, CPUSTAT_SLOTS, NS_PER_TICK
from seqshm.cli._base import MAX_SLEEP_S, Signalled, raise_signalled


def possible_cpus() -> int:
    """Number of CPU numbers the kernel may use (the array length of a cpustat channel)."""
    try:
        with open("/sys/devices/system/cpu/possible") as f:
            last = f.read().strip().split(",")[-1]
        return int(last.split("-")[-1]) + 1
    except (OSError, ValueError):
        return os.cpu_count() or 1


def parse_proc_stat(text: str, out: np.ndarray) -> np.ndarray:
    """Fill ``out`` (CPUSTAT_DTYPE, one element per CPU) from the text of /proc/stat.

    CPUs that /proc/stat does not list (offline) read as all zero.
    """
    out[...] = 0
    n = out.shape[0]
    for line in text.splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *values = line.split()
        cpu = int(name[3:])
        if cpu >= n:
            continue
        rec = out[cpu]
        for field, value in zip(CPUSTAT_FIELDS, values, strict=False):
            rec[field] = int(value) * NS_PER_TICK
        rec["online"] = 1
    return out


def read_cpustat(out: np.ndarray | None = None) -> np.ndarray:
    """The current per-CPU times of this host, read from /proc/stat."""
    if out is None:
        out = np.zeros(possible_cpus(), CPUSTAT_DTYPE)
    with open("/proc/stat") as f:
        return parse_proc_stat(f.read(), out)


class _Waitable(Protocol):
    """A threading or multiprocessing Event: wait() returns True once it is set."""

    def wait(self, timeout: float | None = ...) -> bool: ...


class _Pollable(Protocol):
    """The read end of a multiprocessing Pipe: readable once its write end is closed."""

    def poll(self, timeout: float | None = ...) -> bool: ...


class _SharedFlag(Protocol):
    """A multiprocessing Value or RawValue: nonzero means stop."""

    value: int


Stop: TypeAlias = Callable[[], bool] | _Waitable | _Pollable | _SharedFlag


def _never() -> bool:
    return False


def _waiter(stop: Stop | None) -> Callable[[float], bool]:
    """wait(seconds): whether ``stop`` says stop, after at most ``seconds``; an Event or a
    pipe ends the wait as soon as it does."""
    if hasattr(stop, "poll"):
        return cast(_Pollable, stop).poll
    if hasattr(stop, "wait"):
        return cast(_Waitable, stop).wait
    check: Callable[[], bool]
    if stop is None:
        check = _never
    elif callable(stop):
        check = stop
    else:
        flag = cast(_SharedFlag, stop)
        check = lambda: bool(flag.value)  # noqa: E731

    def wait(seconds: float) -> bool:
        if seconds > 0:
            time.sleep(seconds)
        return bool(check())

    return wait


def publish_cpustat(path: str, rate_hz: float, *, duration: float | None = None,
                    stop: Stop | None = None) -> int:
    """Publish this host's per-CPU times to a new channel at ``path`` at ``rate_hz`` until
    ``duration`` seconds pass, ``stop`` says so, or SIGTERM or SIGHUP (when called in the main
    thread); removes the channel and returns the number of writes. ``stop``: an Event, the
    read end of a pipe (a multiprocessing Connection: stop once it is readable, as when the
    process holding its write end closes it or dies, however), a shared Value (nonzero), or
    a callable. The one publish loop: the demo's writer process runs it too."""
    if not rate_hz > 0:
        raise ValueError(f"rate must be > 0 Hz, not {rate_hz!r}")
    wait = _waiter(stop)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        # The terminal closing (SIGHUP) or a kill (SIGTERM) still removes the channel; raised,
        # not flagged, so that a long pause ends at once too
        previous = {sig: signal.signal(sig, raise_signalled)
                    for sig in (signal.SIGTERM, signal.SIGHUP)}
    sample = np.zeros(possible_cpus(), CPUSTAT_DTYPE)
    period = 1.0 / rate_hz
    writes = 0
    try:
        with _writer.create(path, CPUSTAT_DTYPE, sample.shape, nr_slots=CPUSTAT_SLOTS,
                            name="cpustat", overwrite=True) as writer:
            try:
                start = next_at = time.monotonic()
                while not wait(0):
                    # Parse outside the write: the slot is mid-write only for the copy.
                    read_cpustat(sample)
                    writer.write(sample)
                    next_at += period
                    now = time.monotonic()
                    if duration is not None and now - start >= duration:
                        break
                    if next_at <= now:
                        next_at = now  # fell behind: do not burst to catch up
                        continue
                    # in pieces: a sleep refuses a period past ~292 years (rate 1e-300)
                    while (left := next_at - time.monotonic()) > 0:
                        if wait(min(left, MAX_SLEEP_S)):
                            return int(writer.seq)
            finally:
                writes = int(writer.seq)
                writer.close(unlink=True)
    except Signalled:
        pass  # SIGTERM or SIGHUP: the channel is removed all the same
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return writes


def cpu_busy_fraction(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Per CPU, the fraction of time not idle between two cpustat samples (NaN if no time)."""
    def total(a: np.ndarray) -> np.ndarray:
        # guest times are already inside user and nice, as in /proc/stat
        t: np.ndarray = np.sum([a[f].astype(np.float64) for f in CPUSTAT_FIELDS[:8]], axis=0)
        return t

    dt = total(cur) - total(prev)
    idle = (cur["idle_ns"].astype(np.float64) + cur["iowait_ns"]) - (
        prev["idle_ns"].astype(np.float64) + prev["iowait_ns"]
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        busy: np.ndarray = np.where(dt > 0, 1.0 - idle / dt, np.nan)
    return busy
