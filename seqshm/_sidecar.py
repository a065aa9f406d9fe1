"""The sidecar of sleeping readers as files: its name, its identity line, making, linking,
opening for a reader, and sweeping stale ones (the futex protocol itself is src/wake.{c,h})."""

from __future__ import annotations

import errno
import os
import stat
import struct
import time

from seqshm import _core
from seqshm._errors import FormatError, VersionError
from seqshm._files import Directory, NewFile, new_file, reserve

__all__ = ["ID", "STALE_SIDECAR_AGE_S", "link_into_place", "make", "name_of",
           "open_for_reader", "path_of", "read_id", "sweep_stale"]

_WAITERS = _core.abi_layout()["waiters"]
#: Line 0 of a sidecar: its magic and the (st_dev, st_ino) of the channel file it serves.
ID = struct.Struct("=QQQ")
#: A sidecar is swept only this long after it was made: one younger may belong to a create()
#: that has linked its channel but not yet its sidecar (or is replacing an old one).
STALE_SIDECAR_AGE_S = 60.0


def read_id(fd: int) -> tuple[int, int, int]:
    """(magic, channel st_dev, channel st_ino) of the sidecar open at ``fd``."""
    magic, dev, ino = ID.unpack(os.pread(fd, ID.size, _WAITERS["magic"]))
    return magic, dev, ino


def name_of(name: str) -> str:
    """The name of the sidecar of the channel file ``name`` in the same directory, where its
    sleeping readers count themselves: ``.<name>.waiters`` (hidden; ``seqshm list`` skips it)."""
    return f".{name}.waiters"


def path_of(path: str) -> str:
    """The sidecar file of the channel at ``path`` (see name_of)."""
    directory, name = os.path.split(path)
    return os.path.join(directory, name_of(name))


def make(d: Directory, name: str, mode: int, channel: os.stat_result) -> NewFile:
    """A new sidecar for the channel file ``channel`` (its stat), unnamed until it is
    linked into place (link_into_place) once the channel has its name ``name`` in ``d``.

    Writable by exactly the classes of user (owner, group, others) that ``mode`` lets read the
    channel: its readers cannot write the channel's region, and count themselves here; a
    class that may not read the channel may not touch its sidecar either. fchmod, not the
    creation mode, so the umask does not take that away."""
    new = new_file(d, f".{name}.waiters.", d.join(name))
    try:
        readable = mode & 0o444
        os.fchmod(new.fd, readable | (readable >> 1))
        reserve(new.fd, _core.ALIGN, d.join(name_of(name)))
        os.pwrite(new.fd, ID.pack(_core.WAITERS_MAGIC, channel.st_dev, channel.st_ino),
                  _WAITERS["magic"])
    except BaseException:
        os.close(new.fd)
        new.discard_name()
        raise
    return new


def link_into_place(new: NewFile, name: str) -> None:
    """Give the sidecar ``new`` its name beside the channel file ``name``, which its creator
    now holds (a creator that lost the race would have replaced the sidecar of a live
    writer). A new file, so readers of an old channel keep the old one and readers of ours
    find the one the header names."""
    try:
        new.link(name_of(name))  # none there yet: never a temporary name
        new.discard_name()
    except FileExistsError:  # an older channel's, or a planted file: replaced, not followed
        try:
            new.replace(name_of(name))
        except OSError as e:
            # another user's file at the name, in a sticky directory (EPERM), or a directory
            # there, which rename(2) cannot put a file over (EISDIR, and ENOTEMPTY, EEXIST for
            # a directory that holds something): the channel works without a sidecar (its
            # readers poll) rather than not at all
            if e.errno not in (errno.EPERM, errno.EACCES, errno.EISDIR, errno.ENOTEMPTY,
                               errno.EEXIST):
                raise
            new.discard_name()


def open_for_reader(path: str, dev: int, ino: int, channel: os.stat_result
                    ) -> _core.WaitersFile | None:
    """The sidecar at ``path`` (opened O_NOFOLLOW) for a reader to sleep in, if it is the one
    the channel's header names, (``dev``, ``ino``), and it names the channel file ``channel``
    (its stat) back; else None (none there yet, removed, planted, or not ours to write)."""
    # Owned (closed when dropped, once) from the instant it exists: an interrupt anywhere
    # below leaks nothing and closes nothing twice.
    try:
        fd = _core.take_fd(os.open, path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    st = os.fstat(fd.fd)
    if (not stat.S_ISREG(st.st_mode) or st.st_size < _core.ALIGN
            or (st.st_dev, st.st_ino) != (dev, ino)):
        fd.close()
        return None
    magic, ch_dev, ch_ino = read_id(fd.fd)
    if magic != _core.WAITERS_MAGIC or (ch_dev, ch_ino) != (channel.st_dev, channel.st_ino):
        fd.close()
        return None
    return _core.WaitersFile(fd)  # takes the descriptor over from fd


def _names_sidecar(d: Directory, channel: str, side: os.stat_result) -> bool:
    """Whether the file at ``channel`` in ``d`` is a channel whose header names the sidecar
    ``side`` (its st_dev, st_ino): the header is its writer's, which no reader can write (a
    sidecar's own line 0 is writable by every reader, so it cannot say whose it is). OSError
    when that cannot be told (a channel this user may not read)."""
    try:
        fd = os.open(channel, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK,
                     dir_fd=d.fd)
    except FileNotFoundError:
        return False
    except OSError as e:
        if e.errno == errno.ELOOP:  # a symbolic link: no channel's
            return False
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        h = _core.check_header(os.pread(fd, _core.HEADER_SIZE, 0), st.st_size, channel)
    except (FormatError, VersionError):
        return False
    finally:
        os.close(fd)
    return (h.waiters_dev, h.waiters_ino) == (side.st_dev, side.st_ino)


def sweep_stale(d: Directory) -> None:
    """Remove ``d``'s sidecars whose channel is gone: a writer killed by SIGKILL, or a
    channel file removed with rm rather than ``close(unlink=True)``, leaves its
    ``.NAME.waiters`` (4 KiB of tmpfs) behind, and nothing else ever would remove it. Stale
    means the file at NAME is missing or is not a channel whose header names the sidecar
    (_names_sidecar), and the sidecar was last written over STALE_SIDECAR_AGE_S ago (mtime).
    Every name is looked up in ``d`` without following links. Best effort: a sidecar removed
    in a race costs its readers only their futex sleep (they poll instead)."""
    try:
        names = [n for n in d.listdir() if n.startswith(".") and n.endswith(".waiters")]
    except OSError:
        return
    now = time.time()
    for n in names:
        channel = n[1:-len(".waiters")]
        try:
            fd = os.open(n, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK,
                         dir_fd=d.fd)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < STALE_SIDECAR_AGE_S:
                continue
            if read_id(fd)[0] != _core.WAITERS_MAGIC:
                continue  # not one of ours
            if _names_sidecar(d, channel, st):
                continue  # its channel is there
            cur = os.stat(n, dir_fd=d.fd, follow_symlinks=False)
            if (cur.st_dev, cur.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(n, dir_fd=d.fd)
        except (OSError, struct.error):
            continue
        finally:
            os.close(fd)
