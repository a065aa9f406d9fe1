"""The module-level API: open a channel for reading, take one snapshot, create a writer."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Sequence

import numpy as np
from numpy.typing import DTypeLike

from seqshm import _core
from seqshm._dtype import element_type
from seqshm._errors import WriterBusy

__all__ = ["open", "snapshot", "create", "resolve"]

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


def open(path: str | os.PathLike[str], *, timeout: float = 1.0) -> _core.Reader:  # noqa: A001
    """Open a seqshm channel (a device node or a file under /dev/shm) for reading.

    ``timeout`` is how long, in seconds, a read waits for a consistent copy before it raises
    ReadTimeout. Raises FileNotFoundError, PermissionError, FormatError or VersionError.
    """
    return _core.Reader(resolve(path), timeout=timeout)


def snapshot(path: str | os.PathLike[str], *, timeout: float = 1.0) -> np.ndarray:
    """One consistent copy of a channel's payload: open, snapshot, close."""
    with open(path, timeout=timeout) as reader:
        return reader.snapshot()


def _shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        dims: tuple[object, ...] = (shape,)
    else:
        try:
            dims = tuple(shape)
        except TypeError:
            raise TypeError(
                f"shape {shape!r}: an int or a sequence of ints, not {type(shape).__name__}"
            ) from None
    for n in dims:
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise ValueError(f"shape {shape!r}: every dimension must be an integer >= 1")
    if len(dims) > _core.MAX_DIMS:
        raise ValueError(f"shape {shape!r} has more than {_core.MAX_DIMS} dimensions")
    return tuple(int(n) for n in dims)  # type: ignore[call-overload]


def _check_not_busy(path: str) -> None:
    """Raise WriterBusy if a live writer holds the channel at ``path``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise WriterBusy("another writer holds this channel", path) from None
    finally:
        os.close(fd)


def create(
    path: str | os.PathLike[str],
    dtype: DTypeLike,
    shape: int | Sequence[int] = (),
    *,
    nr_slots: int = 1,
    name: str | None = None,
    overwrite: bool = False,
    mode: int = 0o644,
) -> _core.Writer:
    """Create a userspace channel at ``path`` (normally under /dev/shm) and return its writer.

    ``dtype`` is any NumPy scalar or flat structured dtype; ``shape`` the payload's shape;
    ``nr_slots`` a power of two: 1 for a plain seqlock, N > 1 for a ring that keeps readers
    from starving under a continuous writer and holds the last N writes. The file appears
    complete (readers never see a partial header) and stays locked by this writer until
    ``close()``: one writer per channel. An existing file is an error unless ``overwrite``,
    and a file another live writer holds is always an error (WriterBusy).
    """
    path = os.fspath(path)
    element = element_type(dtype)
    dims = _shape(shape)
    if name is None:
        name = os.path.basename(path)[:63]
    if not (name.isascii() and name.isprintable()):
        raise ValueError(f"channel name {name!r} must be printable ASCII")
    if isinstance(nr_slots, bool) or not isinstance(nr_slots, (int, np.integer)):
        raise TypeError(f"nr_slots must be an int, not {type(nr_slots).__name__}")
    if not 1 <= nr_slots <= _core.MAX_SLOTS or nr_slots & (nr_slots - 1):
        raise ValueError(f"nr_slots is {nr_slots}, not a power of two from 1 to {_core.MAX_SLOTS}")
    header, region_size = _core.build_header(name, int(nr_slots), dims, element, os.getpid())
    if os.path.lexists(path):
        if not overwrite:
            raise FileExistsError(17, "channel exists (pass overwrite=True to replace it)", path)
        _check_not_busy(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    writer = None
    try:
        os.fchmod(fd, mode)
        # Reserve the memory now: a full tmpfs then fails here with ENOSPC, not later with
        # SIGBUS on a write into a sparse page.
        os.posix_fallocate(fd, 0, region_size)
        os.pwrite(fd, header, 0)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        writer = _core.Writer(fd, path)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic: fails if someone created path meanwhile
            os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if writer is None:
            os.close(fd)
        else:
            writer.close()
        raise
    return writer
