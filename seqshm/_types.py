"""Small result types returned by readers."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Snapshot(NamedTuple):
    """A consistent copy of a channel's payload with the write number and time it came from."""

    data: np.ndarray
    seq: int
    timestamp_ns: int


class Sample(NamedTuple):
    """One write as ``Reader.follow()`` yields it: a consistent copy, its write number and
    time, and how many writes the reader lost just before it (the writer lapped the ring)."""

    data: np.ndarray
    seq: int
    timestamp_ns: int
    lost: int


class History(NamedTuple):
    """The copies a ring holds, oldest first; gaps in ``seq`` are writes the ring lost."""

    data: np.ndarray
    seq: np.ndarray
    timestamp_ns: np.ndarray


class ReaderStats(NamedTuple):
    """Counters of one reader: consistent reads, failed attempts, reads that timed out."""

    snapshots: int
    retries: int
    timeouts: int
