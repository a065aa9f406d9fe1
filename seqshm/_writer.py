"""The public Writer and create(): one writer per channel, atomic creation, clean ends."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import struct
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import DTypeLike

from seqshm import _core
from seqshm._dtype import element_type
from seqshm._errors import WriterBusy
from seqshm._lifecycle import process_start_time, same_file

__all__ = ["Writer", "create"]

# Every Writer of this process, so that a forked child can disown them (one writer per channel).
_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


def _disown_in_child() -> None:
    child = os.getpid()
    for w in list(_writers):
        w._disown(child)


os.register_at_fork(after_in_child=_disown_in_child)

#: Tests set this to make writers fence every write, as when membarrier(2) is unavailable.
_FORCE_FENCE = False
_WAITERS = _core.abi_layout()["waiters"]
#: Line 0 of a sidecar: its magic and the (st_dev, st_ino) of the channel file it serves.
WAITERS_ID = struct.Struct("=QQQ")


def read_waiters_id(fd: int) -> tuple[int, int, int]:
    """(magic, channel st_dev, channel st_ino) of the sidecar open at ``fd``."""
    magic, dev, ino = WAITERS_ID.unpack(os.pread(fd, WAITERS_ID.size, _WAITERS["magic"]))
    return magic, dev, ino


def waiters_path(path: str) -> str:
    """The sidecar file of the channel at ``path`` where its sleeping readers count themselves:
    ``<dir>/.<name>.waiters`` (hidden; ``seqshm list`` skips it)."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.waiters")


class _NewFile:
    """A new file in ``directory`` that has no name until it is linked into place
    (O_TMPFILE), so a creator killed before then (SIGKILL, or SIGTERM's default action, which
    runs no Python cleanup) leaves nothing behind. Where O_TMPFILE or /proc is missing, a
    named temporary ``<prefix>XXXX.tmp``, as mkstemp makes."""

    def __init__(self, directory: str, prefix: str) -> None:
        self.directory, self.prefix = directory, prefix
        self.name: str | None = None
        try:
            self.fd = os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
        else:
            if os.path.exists(self._proc()):
                return
            os.close(self.fd)
        self.fd, self.name = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")

    def _proc(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def link(self, path: str) -> None:
        """Give the file the name ``path`` too: atomic, FileExistsError if it is taken."""
        if self.name is not None:
            os.link(self.name, path)
            return
        # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N names an O_TMPFILE file. os.link()
        # calls linkat() only when given a directory fd (plain link() would try to link the
        # /proc symlink itself: EXDEV), so it gets the destination's directory.
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.link(self._proc(), os.path.basename(path), dst_dir_fd=dfd, follow_symlinks=True)
        finally:
            os.close(dfd)

    def named(self) -> str:
        """A name in the directory (made now if it has none), to rename over a path."""
        while self.name is None:
            candidate = os.path.join(self.directory,
                                     f"{self.prefix}{os.urandom(6).hex()}.tmp")
            with contextlib.suppress(FileExistsError):
                self.link(candidate)
                self.name = candidate
        return self.name

    def renamed(self) -> None:
        """The named temporary was renamed into place: it is no longer ours to remove."""
        self.name = None

    def discard_name(self) -> None:
        """Remove the temporary name, if any (the file lives on while open or linked)."""
        if self.name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.name)
            self.name = None


def _reserve(fd: int, size: int, path: str) -> None:
    """posix_fallocate() ``size`` bytes of the new file meant for ``path``; its errors name
    ``path`` and, for a full file system, what to do."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        directory = os.path.dirname(path)
        why = (f"no room for its {size} bytes in {directory} (see `df -h {directory}`): "
               "free some, or make the channel smaller (shape, nr_slots)"
               if e.errno == errno.ENOSPC else f"cannot reserve its {size} bytes: {e.strerror}")
        raise OSError(e.errno, why, path) from None


def _make_waiters(directory: str, name: str, mode: int, channel: os.stat_result
                  ) -> _NewFile:
    """A new sidecar for the channel file ``channel`` (its stat), unnamed until it is
    renamed into place once the channel has its path.

    Writable by every class of user (owner, group, others) that ``mode`` lets read the
    channel: its readers cannot write the channel's region, and count themselves here.
    fchmod, not the creation mode, so the umask does not take that away."""
    new = _NewFile(directory, f".{name}.waiters.")
    try:
        readable = mode & 0o444
        os.fchmod(new.fd, readable | (readable >> 1))
        _reserve(new.fd, _core.ALIGN, os.path.join(directory, f".{name}.waiters"))
        os.pwrite(new.fd, WAITERS_ID.pack(_core.WAITERS_MAGIC, channel.st_dev, channel.st_ino),
                  _WAITERS["magic"])
    except BaseException:
        os.close(new.fd)
        new.discard_name()
        raise
    return new


#: A sidecar is swept only this long after it was made: one younger may belong to a create()
#: that has linked its channel but not yet its sidecar (or is replacing an old one).
STALE_SIDECAR_AGE_S = 60.0


def _sweep_stale_waiters(directory: str) -> None:
    """Remove ``directory``'s sidecars whose channel is gone: a writer killed by SIGKILL, or a
    channel file removed with rm rather than ``close(unlink=True)``, leaves its
    ``.NAME.waiters`` (4 KiB of tmpfs) behind, and nothing else ever would remove it. Stale
    means the file at NAME is missing or is not the channel the sidecar names (st_dev,
    st_ino, line 0), and the sidecar was last written over STALE_SIDECAR_AGE_S ago (mtime).
    Best effort: a sidecar removed in a race costs its readers only their futex sleep (they
    poll instead)."""
    try:
        names = [n for n in os.listdir(directory)
                 if n.startswith(".") and n.endswith(".waiters")]
    except OSError:
        return
    now = time.time()
    for n in names:
        side = os.path.join(directory, n)
        channel = os.path.join(directory, n[1:-len(".waiters")])
        try:
            fd = os.open(side, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < STALE_SIDECAR_AGE_S:
                continue
            magic, dev, ino = read_waiters_id(fd)
            if magic != _core.WAITERS_MAGIC:
                continue  # not one of ours
            try:
                ch = os.stat(channel)
                if (ch.st_dev, ch.st_ino) == (dev, ino):
                    continue  # its channel is there
            except FileNotFoundError:
                pass
            cur = os.stat(side, follow_symlinks=False)
            if (cur.st_dev, cur.st_ino) == (st.st_dev, st.st_ino):
                os.unlink(side)
        except (OSError, struct.error):
            continue
        finally:
            os.close(fd)


class Writer(_core.WriterEngine):
    """The one writer of a userspace channel. Create with :func:`seqshm.create`.

    ``write(data)`` publishes a whole payload (the channel's ``shape`` and ``dtype``);
    ``with writing() as buf:`` (or ``begin()``/``end()``) fills a private copy of the last
    payload and publishes it at the end. The writer holds an exclusive flock on the file from
    create() to close(): one writer per channel across processes; writes from several threads
    are serialized; in a forked child every call raises WriterBusy. ``close()`` marks the
    channel closed, so readers see its end.
    """

    def __init__(self, fd: int, path: str) -> None:
        """Take over ``fd``: a region file whose header is complete but for its magic, locked
        by the caller (use :func:`seqshm.create`). Publishes the magic."""
        self._fd = -1
        self._close_lock = threading.Lock()
        self._attach(fd, path)
        self._fd = fd
        self._owner = os.getpid()
        self._pending: tuple[np.ndarray, int] | None = None
        self._waiters_id: tuple[int, int] | None = None  # the sidecar's (st_dev, st_ino)
        _writers.add(self)

    def __del__(self) -> None:
        self._close_fd()

    def _disown(self, child: int) -> None:
        """In a forked child: this process is not the writer. Refuse every call and let go of
        the child's copy of the file (the lock stays with the parent's)."""
        # a thread of the parent closing it at the fork held this; none of the child will
        # release it
        self._close_lock = threading.Lock()
        self._forget_in_child(WriterBusy(
            f"this Writer belongs to pid {self._owner}; forked child {child} cannot use it "
            "(one writer per channel): create a channel of its own, or write from the parent",
            self.path))
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def begin(self) -> np.ndarray:
        """Start an in-place write: returns a private writable array (the channel's shape and
        dtype) holding the last published payload. Readers see nothing of it until ``end()``
        publishes it; after that it is read-only."""
        if self._pending is not None:
            raise RuntimeError(f"{self.path}: begin() inside an unfinished begin()")
        buf = self._copy_newest()
        self._pending = (buf, _core.monotonic_ns())
        return buf

    def end(self, timestamp_ns: int | None = None) -> int:
        """Publish what ``begin()`` returned; returns its write number. ``timestamp_ns``
        defaults to the time of ``begin()``."""
        if self._pending is None:
            self._check_usable()
            raise RuntimeError(f"{self.path}: end() without begin()")
        buf, t0 = self._pending
        ts = t0 if timestamp_ns is None else _timestamp(timestamp_ns, self.path)
        self._pending = None
        return self._publish_buffer(buf, ts)

    def _publish_buffer(self, buf: np.ndarray, timestamp_ns: int) -> int:
        seq = self.write(buf, timestamp_ns)
        buf.flags.writeable = False  # a later change could only be a mistake: make it loud
        return seq

    def _check_usable(self) -> None:
        self.head  # noqa: B018 - raises ClosedError or WriterBusy as write() would

    @contextlib.contextmanager
    def writing(self, timestamp_ns: int | None = None) -> Iterator[np.ndarray]:
        """``with writer.writing() as buf:`` fill ``buf`` (a private copy of the last payload,
        as from ``begin()``); published as one write when the block ends, with
        ``timestamp_ns`` or the time the block began. If the block raises, nothing is
        published. Blocks in several threads each get their own buffer."""
        ts = None if timestamp_ns is None else _timestamp(timestamp_ns, self.path)
        buf = self._copy_newest()
        t0 = _core.monotonic_ns()
        yield buf
        self._publish_buffer(buf, t0 if ts is None else ts)

    #: close(unlink=True) was asked for: a close() that an interrupt cut short is finished by
    #: the next one (a with block's own close() included), the file's removal with it.
    _unlink_on_close = False

    def close(self, *, unlink: bool = False) -> None:
        """Mark the channel closed (readers see its end), unmap, release the channel, and with
        ``unlink=True`` remove its file if it is still this channel's. A begin() without
        end() is dropped. Waits for a write in progress in another thread; closing again (or
        from several threads at once) does nothing more.

        Ctrl-C (any exception from a signal handler) at any point leaves the writer either
        still open and usable, its files possibly removed already (closing again finishes the
        job), or wholly closed: never a descriptor open after the end, nor one closed twice."""
        with self._close_lock:
            if unlink:
                self._unlink_on_close = True
            if self._fd >= 0:  # not yet closed (nor a forked child's disowned copy)
                self._remove_files()
            self._pending = None
            # the end in one C step: state CLOSED, readers woken, unmapped, descriptor closed
            self._close_engine(_core.STATE_CLOSED)

    def _remove_files(self) -> None:
        """close()'s removals, before the end: each may be done again (an interrupted close()
        is finished by the next one), and each is done while this writer still holds the
        channel, so no creator can replace a path between the check and the removal
        (create() takes the old file's lock to replace it)."""
        # The sidecar goes with every close: after the end no reader sleeps. Ours only (a
        # creator replaces it only holding the lock).
        if self._waiters_id is not None:
            side = waiters_path(self.path)
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(side)
                if (st.st_dev, st.st_ino) == self._waiters_id:
                    os.unlink(side)
        if self._unlink_on_close:
            with contextlib.suppress(FileNotFoundError):
                if same_file(os.fstat(self._fd), os.stat(self.path)):
                    os.unlink(self.path)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _timestamp(value: int, path: str) -> int:
    """A write's timestamp: an int of ns from 0 to 2**64 - 1."""
    return _core.timestamp_arg(value, path)


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


#: A live writer holds its lock for good; a reader's liveness probe (lock_is_free) holds a
#: shared lock for microseconds. A creator retries this long before it calls the path busy.
_LOCK_RETRY_S = 0.02


def _lock_old(fd: int, path: str) -> None:
    """Take the exclusive lock of the channel file open as ``fd``, or raise WriterBusy."""
    deadline = time.monotonic() + _LOCK_RETRY_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise WriterBusy("another writer holds this channel", path) from None
            time.sleep(0.001)


def _take_path(new: _NewFile, path: str, overwrite: bool) -> None:
    """Put the complete, locked channel file ``new`` at ``path``, atomically: of creators
    racing for one path exactly one wins and the others get WriterBusy (or FileExistsError
    without ``overwrite``). Replacing a channel takes its file's lock first, so a live writer
    is never replaced, and marks it REPLACED, so its readers see the end at once."""
    for _ in range(100):
        try:
            new.link(path)  # atomic: fails if the path exists
            new.discard_name()
            return
        except FileExistsError:
            if not overwrite:
                raise FileExistsError(
                    17, "channel exists (pass overwrite=True to replace it)", path) from None
        try:
            old = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not block
            writable = True
        except PermissionError:
            old = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            writable = False
        except FileNotFoundError:
            if os.path.islink(path):  # a dangling symlink: nobody writes there, replace it
                os.replace(new.named(), path)
                new.renamed()
                return
            continue  # removed meanwhile: link again
        try:
            _lock_old(old, path)
            try:
                if not same_file(os.fstat(old), os.stat(path)):
                    continue  # replaced while we took the lock: look at the new one
            except FileNotFoundError:
                continue
            os.replace(new.named(), path)
            new.renamed()
            if writable:
                _core.mark_state(old, _core.STATE_REPLACED, path)
            return
        finally:
            os.close(old)
    raise WriterBusy("the path kept changing while this creator tried to take it", path)


def create(
    path: str | os.PathLike[str],
    dtype: DTypeLike,
    shape: int | Sequence[int] = (),
    *,
    nr_slots: int = 1,
    name: str | None = None,
    overwrite: bool = False,
    mode: int = 0o644,
) -> Writer:
    """Create a userspace channel at ``path`` (normally under /dev/shm) and return its writer.

    ``dtype`` is any NumPy scalar or flat structured dtype; ``shape`` the payload's shape;
    ``nr_slots`` a power of two: 1 for a plain seqlock, N > 1 for a ring that keeps readers
    from starving under a continuous writer and holds the last N writes. The file appears
    complete (readers never see a partial header) and stays locked by this writer until
    ``close()``: one writer per channel. An existing file is an error (FileExistsError)
    unless ``overwrite``; a file another live writer holds, or one another creator is taking
    at the same moment, is WriterBusy. Replacing a channel marks the old one REPLACED, so its
    readers see the end at once (and followers move to the new one). ``mode``: the file's
    permission bits (0o000 to 0o777; the umask does not apply).
    """
    # absolute: close(unlink=True) after a chdir() must still find the file
    # resolved as open(2) would: ".." after a symlink is the link target's parent, and a
    # symlink at the path is written through (the link stays; its target is the channel)
    path = os.path.realpath(os.fspath(path))
    try:
        element = element_type(dtype)
        dims = _shape(shape)
        if name is None:  # the file's name, as printable ASCII (any file name is a path)
            name = "".join(c if c.isprintable() else "?" for c in os.path.basename(path).encode(
                "ascii", "backslashreplace").decode("ascii"))[:63]
        if not (name.isascii() and name.isprintable()):
            raise ValueError(f"channel name {name!r} must be printable ASCII (pass name=)")
        if isinstance(nr_slots, bool) or not isinstance(nr_slots, (int, np.integer)):
            raise TypeError(f"nr_slots must be an int, not {type(nr_slots).__name__}")
        if not 1 <= nr_slots <= _core.MAX_SLOTS or nr_slots & (nr_slots - 1):
            raise ValueError(
                f"nr_slots is {nr_slots}, not a power of two from 1 to {_core.MAX_SLOTS}")
        if isinstance(mode, bool) or not isinstance(mode, (int, np.integer)):
            raise TypeError(f"mode must be an int (such as 0o644), not {type(mode).__name__}")
        if not 0 <= mode <= 0o777:
            # fchmod() takes the set-id and sticky bits too (and -1 as 0o7777)
            raise ValueError(f"mode {oct(mode)} is not permission bits from 0o000 to 0o777")
        pid = os.getpid()
        start = process_start_time(pid) or 0
        header, region_size = _core.build_header(name, int(nr_slots), dims, element, pid,
                                                 start)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{path}: {e}") from None
    if os.path.isdir(path):
        raise IsADirectoryError(21, "a directory, not a channel: choose another path", path)
    if os.path.lexists(path) and not overwrite:
        raise FileExistsError(17, "channel exists (pass overwrite=True to replace it)", path)
    directory = os.path.dirname(path)
    base = os.path.basename(path)
    try:
        new = _NewFile(directory, f".{base}.")
    except FileNotFoundError:
        raise FileNotFoundError(2, f"no directory {directory}", path) from None
    except PermissionError:
        raise PermissionError(13, f"cannot create a file in {directory}", path) from None
    fd = new.fd
    writer = None
    side_fd, side_new = -1, None
    try:
        os.fchmod(fd, mode)
        # The sidecar where sleeping readers count themselves, named in the header. Without
        # membarrier(2) the writer fences every write instead, and says so (wake.h).
        side_new = _make_waiters(directory, base, mode, os.fstat(fd))
        side_fd = side_new.fd
        side = os.fstat(side_fd)
        fence = _FORCE_FENCE or not _core.membarrier_register()
        header, _ = _core.build_header(name, int(nr_slots), dims, element, pid, start,
                                       waiters_dev=side.st_dev, waiters_ino=side.st_ino,
                                       wake_flags=_core.WAKE_F_FENCE if fence else 0)
        # Reserve the memory now: a full tmpfs then fails here with ENOSPC, not later with
        # SIGBUS on a write into a sparse page.
        _reserve(fd, region_size, path)
        os.pwrite(fd, header, 0)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        writer = Writer(fd, path)
        waiters = _core.WaitersFile(side_fd)  # owns side_fd from here
        side_fd = -1
        writer._set_waiters(waiters)
        writer._waiters_id = (side.st_dev, side.st_ino)
        _take_path(new, path, overwrite)
        # Only now, holding the channel (a creator that lost would have replaced the sidecar
        # of a live writer): a new file, so readers of an old channel keep the old one and
        # readers of ours find the one the header names. Readers that open the channel
        # before this poll, and look for the sidecar again every 0.1 s.
        try:
            side_new.link(waiters_path(path))  # none there yet: never a temporary name
            side_new.discard_name()
        except FileExistsError:  # an older channel's: replaced, through a name of its own
            os.replace(side_new.named(), waiters_path(path))
            side_new.renamed()
        _sweep_stale_waiters(directory)
    except BaseException:
        new.discard_name()
        if side_new is not None:
            side_new.discard_name()
        if side_fd >= 0:
            os.close(side_fd)
        if writer is None:
            os.close(fd)
        else:
            writer.close()
        raise
    return writer
