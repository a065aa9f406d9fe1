"""How a channel's life is read from outside: its state, and whether its writer process lives."""

from __future__ import annotations

import enum
import errno
import fcntl
import os
import struct

from seqshm._files import open_dir, open_in

__all__ = ["ChannelState", "process_start_time", "hold_liveness", "lock_is_free", "take_over",
           "same_file", "writer_holds", "describe_writer", "writer_text", "end_reason"]


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


#: struct flock as fcntl(2) takes it on x86-64 and every other 64-bit Linux: l_type, l_whence
#: (short), l_start, l_len (off_t), l_pid (pid_t, 0 for open-file-description locks), padding.
_FLOCK = struct.Struct("hhqqi4x")
#: The byte of a channel file whose write lock is its writer's life: held from create() to
#: close(), dropped by the kernel when the last descriptor of that open file description goes
#: (the process's death included), so a reused pid cannot fool it.
LIVENESS_BYTE = 0
#: The byte a creator write-locks while it replaces a dead channel, so that of creators racing
#: for one path exactly one replaces it.
TAKEOVER_BYTE = 1


def _ofd_lock(fd: int, cmd: int, kind: int, byte: int) -> int:
    """fcntl(fd, cmd) with an open-file-description lock of ``kind`` on ``byte``; for
    F_OFD_GETLK the type of a lock that would conflict (F_UNLCK: none)."""
    out = fcntl.fcntl(fd, cmd, _FLOCK.pack(kind, os.SEEK_SET, byte, 1, 0))
    return int(_FLOCK.unpack(out)[0])


def hold_liveness(fd: int) -> None:
    """Take the write lock that says this open file description's process is the channel's
    live writer. ``fd`` must be open for writing: a write lock needs it, which is why a
    process that may only read the channel can neither take nor hold this lock (flock(2) and
    read locks, which a read-only descriptor can take, say nothing here). Raises
    BlockingIOError when another description holds it."""
    _ofd_lock(fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK, LIVENESS_BYTE)


def lock_is_free(fd: int) -> bool:
    """Whether no writer holds the channel open as ``fd``: a live userspace writer holds a
    write lock on LIVENESS_BYTE (hold_liveness) from create() to close(). Asks the kernel
    (F_OFD_GETLK) without taking anything: only a write lock conflicts with the read lock
    asked about, so no lock a reader takes, shared, exclusive or flock(2), can make a dead
    writer look alive, and asking never holds back a creator."""
    return _ofd_lock(fd, fcntl.F_OFD_GETLK, fcntl.F_RDLCK, LIVENESS_BYTE) == fcntl.F_UNLCK


def take_over(fd: int) -> bool:
    """Write-lock TAKEOVER_BYTE of the old channel file open as ``fd``: True when this creator
    holds it, False when another creator does. When only read locks stand in the way (a
    process that may read the channel can take those, to hold a restart back) no creator can
    hold the byte either: True, without the lock (docs/security.md, section 7, says what that
    leaves). So too when ``fd`` is open read-only (a creator whose channel's mode lets it only
    read the file, 0444, cannot take a write lock on it): True unless another creator holds
    the byte."""
    try:
        _ofd_lock(fd, fcntl.F_OFD_SETLK, fcntl.F_WRLCK, TAKEOVER_BYTE)
        return True
    except BlockingIOError:
        pass
    except OSError as e:
        if e.errno != errno.EBADF:  # EBADF: not open for writing
            raise
    return _ofd_lock(fd, fcntl.F_OFD_GETLK, fcntl.F_WRLCK, TAKEOVER_BYTE) != fcntl.F_WRLCK


def pid_namespace() -> int:
    """The inode number of this process's pid namespace (0 if /proc does not say)."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino & 0xFFFFFFFF
    except OSError:
        return 0


def describe_writer(pid: int, pidns: int) -> str:
    """Which process a userspace channel's writer is (or was), truthfully from any pid
    namespace: ``pid`` and ``pidns`` are the header's writer_pid and writer_pidns, as the
    writer's own namespace saw them. Whether it lives is the lock's to say (lock_is_free),
    not this: a pid is only a name."""
    here = pid_namespace()
    if pidns and here and pidns != here:
        return (f"pid {pid} of another pid namespace (inode {pidns}; a container's?), not "
                f"this namespace's pid {pid}")
    return f"pid {pid}"


def writer_text(pid: int, pidns: int, device: bool) -> str:
    """Who writes a channel, as a Reader's messages name it: "the kernel" for a device, else
    "writer " and describe_writer()'s words. Only a device is the kernel's: a file's header
    saying writer_pid 0 is a file someone made by hand, not the kernel's."""
    if device:
        return "the kernel"
    return "writer " + describe_writer(pid, pidns)


def end_reason(state: ChannelState, writer: str, no_follow: str | None = None) -> str:
    """Why no more writes will come to a channel in ``state`` (any but OPEN and TRUNCATED), as
    a Reader's ChannelEnded says it after "no more writes: ". ``writer`` is writer_text()'s;
    ``no_follow``: why a reopening reader cannot move to the replacement (None: it does not
    reopen)."""
    if state is ChannelState.CLOSED:
        return f"the channel was closed by {writer}"
    if state is ChannelState.WRITER_DIED:
        return f"{writer} ended without closing the channel"
    if state is ChannelState.REPLACED:
        if no_follow is not None:
            return "a new channel replaced this one but cannot be followed: " + no_follow
        return ("a new channel replaced this one at its path; reopen it, or open with "
                "reopen=True to move to replacements")
    if state is ChannelState.REMOVED:
        return "the channel's file was removed"
    raise ValueError(f"a channel in state {state.value} has not ended")


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def writer_holds(path: str) -> bool:
    """Whether a live writer holds the channel at ``path`` (False if there is no file). The
    path is opened as a reader opens it (never through a link another user planted)."""
    d, name = open_dir(path)
    try:
        fd, _ = open_in(d, name, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block
    except FileNotFoundError:
        return False
    finally:
        d.close()
    try:
        return not lock_is_free(fd)
    finally:
        os.close(fd)
