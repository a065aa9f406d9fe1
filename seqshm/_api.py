"""The module-level API: resolve a channel name, open it for reading, take one snapshot."""

from __future__ import annotations

import fnmatch
import os
import stat
import sys

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
    /dev/seqshm does not exist, that the kernel module is not loaded), or for a name that is
    no channel's: empty, "." or ".."."""
    p = os.fsdecode(path)  # bytes paths too, as Reader takes them
    if not p:  # not the directories themselves
        raise FileNotFoundError(2, "no channel: the name is empty", p)
    if p in (".", ".."):  # nor the directories by their own names, nor their parent
        raise FileNotFoundError(2, f"no channel: {p!r} is a directory's name, not a channel's: "
                                "give a channel's name or a path to its file", p)
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


# -- channel discovery: which files are channels (seqshm list, the exporter's globs) -------------

#: A channel file's first 8 bytes: SEQSHM_MAGIC in native byte order, as every field of the
#: region (seqshm.h); a foreign-endian region is no channel here.
_MAGIC = _core.MAGIC.to_bytes(8, sys.byteorder)
_GLOB_CHARS = frozenset("*?[")
#: looks_like_channel's verdicts on regular files by (path, st_dev, st_ino, st_size, st_mode):
#: an exporter's scrape of a /dev/shm with thousands of files costs a stat per file, not an
#: open, a read and a close.
_verdicts: dict[tuple[str, int, int, int, int], bool] = {}
_MAX_VERDICTS = 1 << 16


def looks_like_channel(path: str) -> bool:
    """Whether ``path``, through whatever links, may be a channel: a character device (the
    kernel module's) or a regular file that starts with seqshm's magic; one this process may
    not read counts (opening it says why). Sidecars, temporaries and other programs' files are
    not. Never opens a device (O_PATH opens nothing; a regular file is then read through that
    very descriptor, so a file swapped in at the name meanwhile is not the one read), and
    never raises."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    if stat.S_ISCHR(st.st_mode):
        return True
    if not stat.S_ISREG(st.st_mode):
        return False
    verdict = _verdicts.get((path, st.st_dev, st.st_ino, st.st_size, st.st_mode))
    if verdict is not None:
        return verdict
    try:
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False  # gone meanwhile
    try:
        st = os.fstat(pfd)
        if not stat.S_ISREG(st.st_mode):  # swapped meanwhile: judged as it is now
            return stat.S_ISCHR(st.st_mode)
        try:
            fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return True  # unreadable: opening it reports why (and no verdict is kept)
        try:
            verdict = os.pread(fd, 8, 0) == _MAGIC
        except OSError:
            return True
        finally:
            os.close(fd)
    except OSError:
        return False
    finally:
        os.close(pfd)
    if len(_verdicts) >= _MAX_VERDICTS:
        _verdicts.clear()
    _verdicts[(path, st.st_dev, st.st_ino, st.st_size, st.st_mode)] = verdict
    return verdict


def _matching(pattern: str) -> list[str]:
    """The paths ``pattern`` (a glob) matches, sorted. Unlike glob.glob, which takes a
    directory it cannot list for an empty one, raises OSError when it cannot list one (a
    process out of descriptors must not see an empty /dev/shm)."""
    directory, base = os.path.split(pattern)
    if _GLOB_CHARS.intersection(directory):
        import glob  # only for a glob in a directory's name: not on every import of seqshm

        return sorted(glob.glob(pattern))  # globs in directories: glob's walk
    try:
        names = os.listdir(directory or ".")
    except (FileNotFoundError, NotADirectoryError):
        return []
    if not base.startswith("."):
        names = [n for n in names if not n.startswith(".")]  # as glob does
    return sorted(os.path.join(directory, n) for n in fnmatch.filter(names, base))


def channel_paths(pattern: str | None = None) -> list[str]:
    """The channels (looks_like_channel) that ``pattern``, a glob, names now: with a '/' it
    matches paths, without one the names in SEARCH_DIRS (/dev/seqshm's first); as in a shell,
    a name that starts with '.' only if the pattern's does. Raises OSError when a directory it
    must list cannot be listed. ``None``: every channel in SEARCH_DIRS, those whose names
    start with '.' too but not the temporaries ``.NAME.tmp``, a directory that cannot be
    listed left out (what ``seqshm list`` shows). Sorted within each directory."""
    if pattern is None:
        found = []
        for d in SEARCH_DIRS:
            try:
                names = sorted(os.listdir(d))
            except OSError:
                continue
            found += [os.path.join(d, n) for n in names
                      if not (n.startswith(".") and n.endswith(".tmp"))]
    elif "/" in pattern:
        found = _matching(pattern)
    else:
        found = [p for d in SEARCH_DIRS for p in _matching(os.path.join(d, pattern))]
    return [p for p in found if looks_like_channel(p)]
