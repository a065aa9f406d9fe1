"""The module-level API: resolve a channel name, open it for reading, take one snapshot."""

from __future__ import annotations

import os

import numpy as np

from seqshm._reader import Reader

__all__ = ["open", "snapshot", "resolve"]

#: Where a bare channel name is looked up: the kernel module's devices, then userspace channels.
SEARCH_DIRS = ("/dev/seqshm", "/dev/shm")


def resolve(path: str | os.PathLike[str]) -> str:
    """The file a channel name stands for: ``path`` itself if it exists or contains a '/',
    else the first of /dev/seqshm/NAME and /dev/shm/NAME that exists."""
    p = os.fsdecode(path)  # bytes paths too, as Reader takes them
    if "/" in p or os.path.exists(p):
        return p
    for d in SEARCH_DIRS:
        candidate = os.path.join(d, p)
        if os.path.exists(candidate):
            return candidate
    return p


def open(  # noqa: A001
    path: str | os.PathLike[str], *, timeout: float | None = 1.0, reopen: bool = False
) -> Reader:
    """Open a seqshm channel (a device node or a file under /dev/shm) for reading.

    ``timeout`` is how long, in seconds, a read waits for a consistent copy before it raises
    ReadTimeout (None: no limit). ``reopen=True`` moves the reader to a new channel that
    replaces this one at its path. Raises FileNotFoundError, PermissionError, FormatError or
    VersionError.
    """
    return Reader(resolve(path), timeout=timeout, reopen=reopen)


def snapshot(path: str | os.PathLike[str], *, timeout: float | None = 1.0) -> np.ndarray:
    """One consistent copy of a channel's payload: open, snapshot, close."""
    with open(path, timeout=timeout) as reader:
        return reader.snapshot()
