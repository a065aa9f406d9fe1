"""How a channel's life is read from outside: its state, and whether its writer process lives."""

from __future__ import annotations

import enum
import fcntl
import os

__all__ = ["ChannelState", "process_start_time", "lock_is_free", "same_file", "writer_holds"]


class ChannelState(str, enum.Enum):
    """Where a channel is in its life, as a reader sees it (``Reader.state``).

    OPEN: a writer may still publish. CLOSED: its writer closed it (or the kernel destroyed
    the device). WRITER_DIED: the writer process ended without closing it. REPLACED: a new
    channel now has its path (or was written into its very file, as cp over it does).
    REMOVED: its file was unlinked (the writer may still publish, but no new reader can find
    it). TRUNCATED: its file is shorter than the region it mapped
    (shrunk by another process); reads that touch a lost page raise FileTruncated. Every state
    but OPEN means no new reader will see what this one sees; all but OPEN and REMOVED mean no
    write will come.
    """

    OPEN = "open"
    CLOSED = "closed"
    WRITER_DIED = "writer-died"
    REPLACED = "replaced"
    REMOVED = "removed"
    TRUNCATED = "truncated"


def process_start_time(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks after boot (field 22 of /proc/PID/stat),
    None if there is no such process or it is a zombie. With the pid it names one process:
    a reused pid has another start time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is field 3 (state); field 22 (starttime) is fields[19]
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def lock_is_free(fd: int) -> bool:
    """Whether no writer holds the channel open as ``fd``: a live userspace writer holds an
    exclusive flock(2) on its file from create() to close(), and the kernel drops it when
    the process dies, so this cannot be fooled by a reused pid. Takes a shared lock for an
    instant (create() retries briefly when it meets one)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def writer_holds(path: str) -> bool:
    """Whether a live writer holds the channel at ``path`` (False if there is no file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block
    except FileNotFoundError:
        return False
    try:
        return not lock_is_free(fd)
    finally:
        os.close(fd)
