"""The cpustat record, userspace's one statement of the kernel's struct seqshm_cpustat."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["CPUSTAT_DTYPE", "CPUSTAT_FIELDS", "CPUSTAT_SLOTS", "NS_PER_TICK", "USER_HZ",
           "is_cpustat"]

#: One CPU's times, in the order of module/seqshm_cpustat.c's struct seqshm_cpustat:
#: cumulative ns since boot (/proc/stat shows them in USER_HZ ticks); user includes guest and
#: nice includes guest_nice, as in /proc/stat. tests/device/test_cpustat.py holds this to the
#: kernel's channel, so a change there fails a test instead of turning the exporter's
#: node_cpu_seconds_total into generic gauges.
CPUSTAT_FIELDS = (
    "user_ns",
    "nice_ns",
    "system_ns",
    "idle_ns",
    "iowait_ns",
    "irq_ns",
    "softirq_ns",
    "steal_ns",
    "guest_ns",
    "guest_nice_ns",
)
#: The record of one CPU (array index = CPU number): the times, then 1 if the CPU was online.
CPUSTAT_DTYPE = np.dtype([(name, np.uint64) for name in CPUSTAT_FIELDS] + [("online", np.uint64)])
#: Slots of a userspace cpustat channel (the demo's): a ring, so a slow reader is never
#: starved by the writer.
CPUSTAT_SLOTS = 4

#: /proc/stat's unit, USER_HZ (ticks per second; 100 on every Linux architecture). The kernel
#: prints nsec_to_clock_t(ns), i.e. ns truncated to whole ticks.
USER_HZ = os.sysconf("SC_CLK_TCK")
NS_PER_TICK = 1_000_000_000 // USER_HZ


def is_cpustat(dtype: np.dtype[Any], shape: tuple[int, ...]) -> bool:
    """Whether a channel carries the cpustat record (one per CPU): the same field names, all
    unsigned 64-bit, in the same order, and a 1-D shape."""
    names = dtype.names
    if (len(shape) != 1 or names is None or "online" not in names
            or tuple(names[:len(CPUSTAT_FIELDS)]) != CPUSTAT_FIELDS
            or dtype.itemsize != 8 * len(names)):  # no padding: it reads as a u64 matrix
        return False
    return all(dtype.fields[n][0] == np.dtype(np.uint64) for n in names)  # type: ignore[index]
