"""Host telemetry for the demo: per-CPU times from /proc/stat, published as the module's cpustat."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from seqshm import _writer
from seqshm._cpustat import CPUSTAT_DTYPE, CPUSTAT_FIELDS, CPUSTAT_SLOTS, NS_PER_TICK

#: The longest single sleep: time.sleep() and Connection.poll() raise OverflowError past about
#: 292 years, which a rate of 1e-300 Hz or an interval of 1e300 s would ask for.
MAX_SLEEP_S = 86400.0


def sleep_until(deadline: float) -> None:
    """Sleep until time.monotonic() reaches ``deadline``, however far away."""
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, MAX_SLEEP_S))


class _Settable(Protocol):
    """A threading or multiprocessing Event."""

    def is_set(self) -> bool: ...


class _SharedFlag(Protocol):
    """A multiprocessing Value or RawValue: nonzero means stop."""

    value: int


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


def publish_cpustat(
    path: str,
    rate_hz: float,
    *,
    duration: float | None = None,
    stop: Callable[[], bool] | _Settable | _SharedFlag | None = None,
) -> int:
    """Publish this host's per-CPU times to a new channel at ``path`` at ``rate_hz`` until
    ``duration`` seconds pass, ``stop`` is set (an Event, a shared Value, or a callable), or
    SIGTERM or SIGHUP; removes the channel and returns the
    number of writes."""
    if not rate_hz > 0:
        raise ValueError(f"rate must be > 0 Hz, not {rate_hz!r}")
    stopped: Callable[[], bool] | None
    if stop is None or callable(stop):
        stopped = stop
    elif hasattr(stop, "is_set"):
        stopped = stop.is_set
    else:
        flag = stop
        stopped = lambda: bool(flag.value)  # noqa: E731
    terminated = threading.Event()
    if threading.current_thread() is threading.main_thread():
        # The terminal closing (SIGHUP) or a kill (SIGTERM) still removes the channel.
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda *_: terminated.set())
    sample = np.zeros(possible_cpus(), CPUSTAT_DTYPE)
    period = 1.0 / rate_hz
    with _writer.create(path, CPUSTAT_DTYPE, sample.shape, nr_slots=CPUSTAT_SLOTS,
                     name="cpustat", overwrite=True) as writer:
        try:
            start = next_at = time.monotonic()
            while not terminated.is_set() and not (stopped and stopped()):
                # Parse outside the write: the slot is mid-write only for the copy.
                read_cpustat(sample)
                writer.write(sample)
                next_at += period
                now = time.monotonic()
                if duration is not None and now - start >= duration:
                    break
                if next_at > now:
                    # in pieces: time.sleep() refuses a period past ~292 years (rate 1e-300)
                    time.sleep(min(next_at - now, MAX_SLEEP_S))
                else:
                    next_at = now  # fell behind: do not burst to catch up
            return int(writer.seq)
        finally:
            writer.close(unlink=True)


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
