"""The public Writer and create(): one writer per channel, atomic creation, clean ends."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
import weakref
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import DTypeLike

from seqshm import _core, _sidecar
from seqshm._dtype import element_type
from seqshm._errors import FormatError, VersionError, WriterBusy
from seqshm._files import NAME_MAX, Directory, NewFile, new_file, reserve, split
from seqshm._lifecycle import (
    hold_liveness,
    lock_is_free,
    pid_namespace,
    process_start_time,
    same_file,
    take_over,
)

__all__ = ["Writer", "create"]

# Every Writer of this process, so that a forked child can disown them (one writer per channel).
_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


def _disown_in_child() -> None:
    child = os.getpid()
    for w in list(_writers):
        w._disown(child)


os.register_at_fork(after_in_child=_disown_in_child)

class Writer(_core.WriterEngine):
    """The one writer of a userspace channel. Create with :func:`seqshm.create`.

    ``write(data)`` publishes a whole payload (the channel's ``shape`` and ``dtype``);
    ``with writing() as buf:`` (or ``begin()``/``end()``) fills a private copy of the last
    payload and publishes it at the end. The writer holds a write lock (F_OFD_SETLK) on the
    file from create() to close(): one writer per channel across processes; writes from
    several threads are serialized; in a forked child every call raises WriterBusy.
    ``close()`` marks the channel closed, so readers see its end.
    """

    def __init__(self, fd: int, path: str, header: _core.Header) -> None:
        """Take over ``fd``: a region file that holds ``header`` (from build_header()) but for
        its magic, locked by the caller (use :func:`seqshm.create`). Publishes the magic."""
        self._fd = -1
        self._close_lock = threading.Lock()
        self._attach(fd, path, header)
        self._fd = fd
        self._owner = os.getpid()
        self._pending: tuple[np.ndarray, int] | None = None
        self._waiters_id: tuple[int, int] | None = None  # the sidecar's (st_dev, st_ino)
        # the directory (held open) and name of the channel file, set by create(): close()
        # finds its file and sidecar there, whatever was renamed or planted above it since
        self._dir: Directory | None = None
        self._name = os.path.basename(path)
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
            if self._dir is not None and self._fd < 0:
                self._dir.close()  # the end is whole: the directory is not needed any more

    def _remove_files(self) -> None:
        """close()'s removals, before the end: each may be done again (an interrupted close()
        is finished by the next one), and each is done while this writer still holds the
        channel, so no creator can replace a path between the check and the removal
        (create() takes the old file's lock to replace it). Names are looked up in the
        directory create() opened, without following links."""
        d, name = self._dir, self._name
        if d is None or d.fd < 0:
            return
        # The sidecar goes with every close: after the end no reader sleeps. Ours only (a
        # creator replaces it only holding the lock).
        if self._waiters_id is not None:
            side = _sidecar.name_of(name)
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(side, dir_fd=d.fd, follow_symlinks=False)
                if (st.st_dev, st.st_ino) == self._waiters_id:
                    os.unlink(side, dir_fd=d.fd)
        if self._unlink_on_close:
            with contextlib.suppress(FileNotFoundError):
                if same_file(os.fstat(self._fd), os.stat(name, dir_fd=d.fd,
                                                         follow_symlinks=False)):
                    os.unlink(name, dir_fd=d.fd)

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


#: A creator replacing a dead channel holds its takeover lock for microseconds, and a child
#: forked by a writer that just closed lets go of its copy of the file (and so of the lock)
#: a moment after the fork: a creator retries this long before it calls the path busy.
_LOCK_RETRY_S = 0.02


def _take_old(old: int, path: str) -> None:
    """Make sure the old channel file open as ``old`` may be replaced: its writer is gone
    (lock_is_free) and no other creator is replacing it (take_over); else WriterBusy."""
    deadline = time.monotonic() + _LOCK_RETRY_S
    while True:
        alive = not lock_is_free(old)
        if not alive and take_over(old):
            return
        if time.monotonic() >= deadline:
            raise WriterBusy("another writer holds this channel" if alive else
                             "another creator is replacing this channel", path)
        time.sleep(0.001)


def _open_old(d: Directory, name: str, path: str) -> tuple[int, bool] | None:
    """The file at ``name`` in ``d``, which create(overwrite=True) is to replace, open without
    following a link: (fd, open for writing), or None when it is gone. What is replaced: a
    seqshm channel, or any other file but a directory that this user owns. Refused with
    FileExistsError saying what it is: a symbolic link (which another user may have planted
    to have this creator replace or write its target), a directory, and another user's file
    that is not a channel (root may replace anything in a sticky directory; it must not
    destroy other users' files because a name was asked for)."""
    flags = os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW  # a FIFO must not block
    try:
        try:
            fd, writable = os.open(name, os.O_RDWR | flags, dir_fd=d.fd), True
        except (PermissionError, IsADirectoryError, OSError) as e:
            if e.errno == errno.ELOOP:
                raise
            fd, writable = os.open(name, os.O_RDONLY | flags, dir_fd=d.fd), False
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENXIO):  # ENXIO: a socket
            raise
        kind = "a symbolic link" if e.errno == errno.ELOOP else "a socket"
        raise FileExistsError(errno.EEXIST, f"{kind}, not a channel: not replaced (remove it, "
                              "or create the channel at another path)", path) from None
    try:
        st = os.fstat(fd)
        what: str | None = None
        if stat.S_ISDIR(st.st_mode):
            what = "a directory"
        elif not _is_channel(fd, st, path) and st.st_uid != os.geteuid():
            what = f"a file of uid {st.st_uid} that is not a seqshm channel"
        if what is not None:
            raise FileExistsError(errno.EEXIST, f"{what}: not replaced (remove it, or create "
                                  "the channel at another path)", path)
    except BaseException:
        os.close(fd)
        raise
    return fd, writable and stat.S_ISREG(st.st_mode)


def _is_channel(fd: int, st: os.stat_result, path: str) -> bool:
    if not stat.S_ISREG(st.st_mode):
        return False
    try:
        _core.check_header(os.pread(fd, _core.HEADER_SIZE, 0), st.st_size, path)
        return True
    except (FormatError, VersionError):
        return False


def _take_path(new: NewFile, name: str, path: str, overwrite: bool) -> None:
    """Put the complete, locked channel file ``new`` at ``name`` in its directory,
    atomically: of creators racing for one path exactly one wins and the others get
    WriterBusy (or FileExistsError without ``overwrite``). A channel is replaced only when its
    writer is gone, and is marked REPLACED, so its readers see the end at once."""
    d = new.d
    for _ in range(100):
        try:
            new.link(name)  # atomic: fails if anything, a link included, has the name
            new.discard_name()
            return
        except FileExistsError:
            if not overwrite:
                raise FileExistsError(
                    17, "channel exists (pass overwrite=True to replace it)", path) from None
        except FileNotFoundError:  # no such name in the directory it holds: it is gone
            raise FileNotFoundError(errno.ENOENT, f"its directory {d.path} was removed "
                                    "while the channel was being made", path) from None
        opened = _open_old(d, name, path)
        if opened is None:
            continue  # removed meanwhile: link again
        old, writable = opened
        try:
            _take_old(old, path)
            try:
                if not same_file(os.fstat(old), os.stat(name, dir_fd=d.fd,
                                                        follow_symlinks=False)):
                    continue  # replaced while we looked: look at the new one
            except FileNotFoundError:
                continue
            try:
                new.replace(name)  # rename(2): replaces the entry, never follows it
            except PermissionError:
                raise PermissionError(
                    errno.EPERM, "another user's file, in a directory where only its owner "
                    "may replace it (sticky): create the channel at another path", path
                ) from None
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
    # The directory is opened by the kernel (fs.protected_symlinks applies to it) and held:
    # every name below is made relative to it, never through a path resolved in userspace.
    directory, base = split(path)
    path = os.path.join(directory, base)
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
        room = NAME_MAX - (len(os.fsencode(_sidecar.name_of(base))) - len(os.fsencode(base)))
        if len(os.fsencode(base)) > room:
            raise ValueError(f"the file name is {len(os.fsencode(base))} bytes: at most "
                             f"{room}, so that its sidecar {_sidecar.name_of('NAME')!r} has a name "
                             f"({NAME_MAX} bytes at most)")
        pid = os.getpid()
        start = process_start_time(pid) or 0
        # built once, checked by the engine as it builds it; the sidecar's identity is added
        # once the sidecar exists (with_waiters), and the writer takes this very object
        header = _core.build_header(name, int(nr_slots), dims, element, pid, start,
                                    wake_flags=_core.WAKE_F_FENCE, writer_pidns=pid_namespace())
    except (TypeError, ValueError) as e:
        raise type(e)(f"{path}: {e}") from None
    d = Directory(directory, path)
    path = d.join(base)  # the directory as the kernel resolved it
    try:
        writer = _create_in(d, base, path, mode, overwrite, header)
    except BaseException:
        d.close()
        raise
    return writer


def _create_in(d: Directory, base: str, path: str, mode: int, overwrite: bool,
               header: _core.Header) -> Writer:
    """create()'s file work: the channel file and its sidecar made unnamed in ``d``, filled,
    locked, then linked at ``base``. On any exception, KeyboardInterrupt included, nothing is
    left: no name, no descriptor (the caller closes ``d``)."""
    with contextlib.suppress(FileNotFoundError):
        st = os.stat(base, dir_fd=d.fd, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(21, "a directory, not a channel: choose another path", path)
        if not overwrite:
            raise FileExistsError(17, "channel exists (pass overwrite=True to replace it)", path)
    new = new_file(d, f".{base}.", path)
    fd = new.fd
    writer = None
    side_fd, side_new = -1, None
    try:
        os.fchmod(fd, mode)
        # The sidecar where sleeping readers count themselves, named in the header. The writer
        # fences every write (WAKE_F_FENCE) rather than register for membarrier(2)'s global
        # expedited command: that registration would let any local user interrupt the
        # writer's CPUs at will (docs/security.md, section 2).
        side_new = _sidecar.make(d, base, mode, os.fstat(fd))
        side_fd = side_new.fd
        side = os.fstat(side_fd)
        # Reserve the memory now: a full tmpfs then fails here with ENOSPC, not later with
        # SIGBUS on a write into a sparse page.
        reserve(fd, header.region_size, path)
        header = header.with_waiters(side.st_dev, side.st_ino)
        os.pwrite(fd, header.to_bytes(), 0)
        hold_liveness(fd)  # unnamed so far: nobody else can hold or block it
        writer = Writer(fd, path, header)
        writer._dir, writer._name = d, base
        waiters = _core.WaitersFile(side_fd)  # owns side_fd from here
        side_fd = -1
        writer._set_waiters(waiters)
        writer._waiters_id = (side.st_dev, side.st_ino)
        _take_path(new, base, path, overwrite)
        # Only now, holding the channel; readers that open the channel before this poll, and
        # look for the sidecar again every 0.1 s.
        _sidecar.link_into_place(side_new, base)
        _sidecar.sweep_stale(d)
    except BaseException:
        new.discard_name()
        if side_new is not None:
            side_new.discard_name()
        if side_fd >= 0:
            os.close(side_fd)
        if writer is None:
            os.close(fd)
        else:
            # Its file goes too, if the path was already taken: a create() that raised leaves
            # no channel behind (close() removes only a file that is still this channel's)
            writer.close(unlink=True)
        raise
    return writer
