"""The module-level API: resolve a channel name, open it for reading, take one snapshot."""

from __future__ import annotations

import os

import numpy as np

from seqshm import _core
from seqshm._errors import ClosedError
from seqshm._lifecycle import ChannelState, same_file
from seqshm._reader import Reader

__all__ = ["open", "snapshot", "resolve"]

#: Where a bare channel name is looked up: the kernel module's devices, then userspace channels.
SEARCH_DIRS = ("/dev/seqshm", "/dev/shm")


def resolve(path: str | os.PathLike[str]) -> str:
    """The file a channel argument names: ``path`` itself if it contains a '/', else the first
    of /dev/seqshm/NAME and /dev/shm/NAME that exists (never the current directory: write
    ./NAME for that). Raises FileNotFoundError saying where it looked (and, when
    /dev/seqshm does not exist, that the kernel module is not loaded)."""
    p = os.fsdecode(path)  # bytes paths too, as Reader takes them
    if not p:  # not the directories themselves
        raise FileNotFoundError(2, "no channel: the name is empty", p)
    if "/" in p:
        return p
    looked = []
    for d in SEARCH_DIRS:
        candidate = os.path.join(d, p)
        if os.path.lexists(candidate):
            return candidate
        looked.append(candidate)
    why = f"no channel {p!r}: looked for {' and '.join(looked)}"
    if not os.path.isdir(SEARCH_DIRS[0]):
        why += f" ({SEARCH_DIRS[0]} does not exist: the seqshm kernel module is not loaded)"
    raise FileNotFoundError(2, why, p)


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


#: How long seqshm.snapshot(path) trusts a reader it keeps before it looks at the path again:
#: the bound on noticing a channel replaced (without create(), which marks the old one at once)
#: or removed, or a bare name that now resolves elsewhere.
ONESHOT_MAX_AGE_S = 0.1
#: Readers seqshm.snapshot() keeps open (one file descriptor and one mapping each).
ONESHOT_CAPACITY = 64


def _oneshot_miss(path: str | os.PathLike[str], timeout: float | None) -> np.ndarray:
    """The one-shot's slow path: reuse the kept reader if ``path`` still names its file, else
    open the channel anew; keep it, fresh for ONESHOT_MAX_AGE_S, and take the snapshot."""
    reader, _ = _oneshot.get(path)
    target = resolve(path)
    if isinstance(reader, Reader) and not reader.closed and reader.path == target:
        try:
            st = os.fstat(reader._fd)
            # the path still names the file, no other channel was written into it, and it
            # did not shrink under the mapping (a reader that did is done: a new one reads
            # the file if it is whole again, or says how short it is)
            current = (same_file(os.stat(target), st)
                       and reader.state not in (ChannelState.REPLACED, ChannelState.TRUNCATED))
        except (OSError, ClosedError):
            current = False
        if current:
            reader.timeout = timeout
            _oneshot.put(path, reader, timeout)
            return reader.snapshot()
    reader = Reader(target, timeout=timeout)
    _oneshot.put(path, reader, timeout)
    return reader.snapshot()


_oneshot = _core.ReaderCache(_oneshot_miss, ONESHOT_MAX_AGE_S, ONESHOT_CAPACITY)
# A forked child opens its own readers (a kept one may hold a lock another thread had).
os.register_at_fork(after_in_child=_oneshot.clear)


def snapshot(path: str | os.PathLike[str], *, timeout: float | None = 1.0) -> np.ndarray:
    """One consistent copy of the newest write of the channel at ``path`` (a device, a file,
    or a bare name as for :func:`open`): a new array of the channel's shape and dtype.

    Readers are kept open by path (at most ONESHOT_CAPACITY, least recently opened dropped
    first), so a repeated call costs about what a kept ``Reader.snapshot()`` does. A channel
    whose writer closed it or that a new one replaced is seen at once; one removed or replaced
    otherwise within ONESHOT_MAX_AGE_S (0.1 s). Raises what :func:`open` and
    ``Reader.snapshot()`` raise.
    """
    return _oneshot.snapshot(path, timeout=timeout)
