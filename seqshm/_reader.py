"""The public Reader: opening a channel, its lifecycle (end, restart, reopen), reads built on
the engine (apply, history) and follow(); its waits are mixed in from _wait.py."""

from __future__ import annotations

import errno
import math
import mmap
import os
import stat
import sys
import threading
import time
import traceback
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any, TypeVar

import numpy as np

from seqshm import _core, _wait
from seqshm._errors import ChannelEnded, ClosedError, FileTruncated, FormatError, ReadTimeout
from seqshm._files import Directory, PlantedLink, describe_owner, open_dir, open_in
from seqshm._lifecycle import ChannelState, end_reason, lock_is_free, same_file, writer_text
from seqshm._types import History, ReaderStats, Sample

__all__ = ["Reader"]

_T = TypeVar("_T")

# Every Reader of this process, so that a forked child can renew their locks: a thread of the
# parent inside a call at the fork (a wait looking at the state) held one, and no thread of
# the child would ever release it.
_readers: weakref.WeakSet[Reader] = weakref.WeakSet()


def _renew_locks_in_child() -> None:
    for r in list(_readers):
        r._fd_lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_locks_in_child)


def _who_may_read(d: Directory, name: str) -> str:
    """What to do about a channel this user may not open: a kernel channel's mode is its
    producer's (module parameters, and the group the seqshm-dkms package's udev rule gives
    the devices), a file channel's its writer's. The entry itself is looked at (lstat), never
    what a link there points to."""
    try:
        st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
    except OSError:
        st = None
    if st is not None and stat.S_ISCHR(st.st_mode):
        return (f"this user may not read the kernel channel (mode "
                f"{stat.S_IMODE(st.st_mode):04o}): its producer sets the mode (0440 lets a "
                "group read; the module's own channels take cpustat_mode= and "
                "selftest_mode= at load), and the seqshm-dkms package's udev rule gives the "
                "devices the group 'seqshm': add this user to it (usermod -aG seqshm USER); "
                "see module/README.md, 'Giving a group read access'")
    shown = f" ({describe_owner(st)})" if st is not None and stat.S_ISREG(st.st_mode) else ""
    return (f"this user may not read the channel file{shown}: run as one its mode lets read, "
            "or have its writer create it with a wider mode (create(mode=0o644))")


def _open_region(d: Directory, name: str, path: str
                 ) -> tuple[int, bool, bool, _core.Header, _core.Mapping, os.stat_result]:
    """Open ``name`` in ``d`` (``path`` for messages) read-only, never through a link another
    user planted (open_in), and map its region: (fd, is_device, followed a link, the header
    as checked, mapping, the file's fstat). The one header check of an open; the caller
    refuses a file with holes (_core.refuse_holes, given that fstat) before anything reads
    the payload."""
    try:
        # O_NONBLOCK: a FIFO must not block
        fd, followed = open_in(d, name, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise FileNotFoundError(
            errno.ENOENT, "no channel file there: check the path, or start the channel's "
            "writer first (`seqshm list` shows the channels there are)", path) from None
    except PlantedLink:
        raise  # it names the link and says why
    except PermissionError as e:
        raise PermissionError(e.errno, _who_may_read(d, name), path) from None
    try:
        st = os.fstat(fd)
        size = 0
        if stat.S_ISREG(st.st_mode):
            size = st.st_size
            if size < _core.HEADER_SIZE:
                raise FormatError(
                    f"truncated: {size} bytes, a seqshm header alone has {_core.HEADER_SIZE} "
                    "(not a channel, or one cut short: have its writer create it again)", path)
            # pread, not a mapping: a file that shrinks now gives a short read, not SIGBUS
            header = os.pread(fd, _core.HEADER_SIZE, 0)
        elif stat.S_ISCHR(st.st_mode):
            try:
                with mmap.mmap(fd, _core.ALIGN, mmap.MAP_SHARED, mmap.PROT_READ) as page:
                    header = page[: _core.HEADER_SIZE]
            except OSError as e:
                raise OSError(e.errno, f"not a seqshm device: cannot map its header page "
                              f"({e.strerror}); open a channel under /dev/seqshm or /dev/shm",
                              path) from None
        else:
            raise FormatError("neither a regular file nor a seqshm device: open a channel "
                              "under /dev/seqshm or /dev/shm", path)
        h = _core.check_header(header, size, path)
        try:
            m = _core.Mapping(fd, h.region_size, False, h.nr_slots)
        except OSError as e:
            raise OSError(e.errno, f"cannot map {h.region_size} bytes: {e.strerror}",
                          path) from None
        return fd, not size, followed, h, m, st
    except BaseException:
        os.close(fd)
        raise


def _element_key(h: _core.Header) -> tuple[Any, ...]:
    """What decides a channel's dtype and shape: a follower moves only between equal ones."""
    return h.itemsize, h.flags, h.fields, h.shape


class Reader(_wait.Waiting, _core.ReaderEngine):
    """A read-only view of one seqshm channel (a kernel device or a /dev/shm file).

    Open with :func:`seqshm.open`. ``snapshot()`` copies the newest write into a NumPy array
    of the channel's ``dtype`` and ``shape``; ``read()`` returns it with its write number
    (``seq``) and the writer's CLOCK_MONOTONIC time in ns (``timestamp_ns``); ``view()``,
    ``begin()``/``validate()`` and ``apply()`` look at shared memory without copying;
    ``history()`` copies every slot of a ring; ``wait()``/``wait_async()`` sleep until a
    newer write.

    Lifecycle: ``state`` says whether the channel still has a writer; waits raise
    ChannelEnded when it ends. With ``reopen=True`` the reader moves to the new channel when
    one replaces its path (as ``tail -F`` follows a rotated log). Safe to share between
    threads: each call's data, seq and time come from one copy; ``close()`` from another
    thread makes a waiting call raise ClosedError. A file truncated under the reader raises
    FileTruncated, never SIGBUS. Another channel written into the same file (cp over it) is
    REPLACED for ``state`` and waits (looked at every 0.1 s); a kept reader's ``snapshot()``
    does not look (it would cost the fast path a read of the header), so wait, look at
    ``state`` or use :func:`seqshm.snapshot`, which does within its bound.
    """

    def __init__(self, path: str | os.PathLike[str] | bytes, *, timeout: float | None = 1.0,
                 reopen: bool = False) -> None:
        """Open ``path``. ``timeout``: seconds a read waits for a consistent copy (None: no
        limit). Raises FileNotFoundError, PermissionError, FormatError, VersionError."""
        # The directory is resolved by the kernel (an absolute name for it kept, so a later
        # chdir() does not change which file state() and reopening look at) and no path is
        # resolved in userspace (a reopening reader follows the name, as tail -F does, with
        # open_in's rule for links). Not held open: a reader costs one descriptor, not two.
        d, self._name = open_dir(path)
        p = d.join(self._name)
        self._fd = -1
        self._fd_lock = threading.Lock()
        self._timeout: float | None = None
        self.timeout = timeout
        self._follow_path = bool(reopen)
        self._next_switch = 0.0
        self._generation = 0  # channels this reader has moved to (reopen)
        try:
            fd, self._device, self._followed, header, m, st = _open_region(d, self._name, p)
        finally:
            d.close()
        self._fd = fd
        self._attach(p, header, m)  # (an element type NumPy cannot represent: refused here)
        _core.refuse_holes(st, header, p)  # nothing has read the payload yet
        self._set_follow(self._follow_path)
        self._next_waiters_try = 0.0  # the sidecar is opened by the first wait, if any
        _readers.add(self)

    def __del__(self) -> None:
        self._close_fd()

    # -- settings and counters ---------------------------------------------------------------

    @property
    def timeout(self) -> float | None:
        """Seconds a read waits for a consistent copy before it raises ReadTimeout; None: no
        limit (so is any value too large for a 64-bit count of ns)."""
        return self._timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._set_timeout_ns(_core.timeout_ns(value))
        try:
            self._timeout = None if value is None else float(value)
        except OverflowError:  # an int past float's range: no limit, as the engine has it
            self._timeout = math.inf

    @property
    def reopen(self) -> bool:
        """Whether this reader moves to a new channel that replaces its path."""
        return self._follow_path

    @property
    def stats(self) -> ReaderStats:
        """ReaderStats(snapshots, retries, timeouts) of this reader."""
        return ReaderStats(*self._counters)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def state(self) -> ChannelState:
        """The channel's state now (system calls: not for a hot loop; waits look at it at
        most every 0.1 s). See ChannelState."""
        if self._truncated:
            return ChannelState.TRUNCATED
        word = self._state_word
        if word == _core.STATE_CLOSED:
            return ChannelState.CLOSED
        if word == _core.STATE_REPLACED:
            return ChannelState.REPLACED
        with self._fd_lock:
            self._check_not_closed()
            st = os.fstat(self._fd)
            # Shrunk under the mapping, even if nothing has touched a lost page yet (a file
            # cut to its header page leaves head readable: waits would never learn of it)
            if not self._device and st.st_size < self.header.region_size:
                return ChannelState.TRUNCATED
            # Another channel written into this very file (cp over it, a rewrite in place):
            # same inode, other header, and this reader's geometry no longer fits the data
            if not self._device and self._rewritten(st.st_size):
                return ChannelState.REPLACED
            if not self._device and lock_is_free(self._fd):
                return ChannelState.WRITER_DIED
        try:
            now = self._stat_path()
        except FileNotFoundError:
            return ChannelState.REMOVED
        if not same_file(st, now):
            return ChannelState.REPLACED if not self._device else ChannelState.CLOSED
        return ChannelState.OPEN

    def _stat_path(self) -> os.stat_result:
        """The file at this reader's name now, found as the reader found it (a link followed
        only if open_in followed one)."""
        return os.stat(self.path, follow_symlinks=self._followed)

    def _rewritten(self, size: int) -> bool:
        """Whether the file's header (``size`` bytes long) is no longer the one this reader
        checked at open: another channel was written into the same file. The caller holds
        _fd_lock."""
        try:
            data = os.pread(self._fd, _core.HEADER_SIZE, 0)
            return bool(_core.check_header(data, size, self.path) != self.header)
        except (OSError, FormatError):
            return True

    @property
    def _truncated(self) -> bool:
        self._check_not_closed()
        return bool(self._mapping_damaged)

    @property
    def ended(self) -> bool:
        """True when no write will come: the writer closed the channel, died, or a new
        channel replaced it."""
        return self.state not in (ChannelState.OPEN, ChannelState.REMOVED)

    def _check_not_closed(self) -> None:
        if self.closed:
            raise ClosedError("channel is closed", self.path)

    def _writer_text(self) -> str:
        h = self.header
        return writer_text(h.writer_pid, h.writer_pidns, self._device)

    def _ended_error(self, state: ChannelState) -> ChannelEnded:
        no_follow = self._no_follow if self._follow_path else None
        what = end_reason(state, self._writer_text(), no_follow)
        return ChannelEnded(f"no more writes: {what}", self.path, state)

    _no_follow = "it is not ready"
    _incompatible = False

    def _switch(self) -> bool:
        """Follow mode: move to the channel that now has our path. True if we did."""
        now = time.monotonic()
        if now < self._next_switch:
            return False
        self._next_switch = now + _wait.CHECK_INTERVAL_S
        try:
            d, _ = open_dir(self.path)
            try:
                fd, device, followed, h, m, st = _open_region(d, self._name, self.path)
            finally:
                d.close()
            try:
                _core.refuse_holes(st, h, self.path)
            except BaseException:
                os.close(fd)
                raise
        except (OSError, FormatError) as e:
            self._no_follow = f"{type(e).__name__}: {e}"
            return False
        with self._fd_lock:
            if self.closed:
                os.close(fd)
                self._check_not_closed()
            # the same file is a new channel only if another was written into it in place
            if same_file(os.fstat(fd), os.fstat(self._fd)) and h == self.header:
                os.close(fd)
                return False
            if _element_key(h) != _element_key(self.header):
                os.close(fd)
                self._no_follow = (f"its element type or shape {h.shape} differs from "
                                   f"this reader's {self.dtype} {self.shape}")
                self._incompatible = True
                return False
            self._incompatible = False
            old, self._fd, self._device, self._followed = self._fd, fd, device, followed
            self._attach(self.path, h, m)
            self._generation += 1
            os.close(old)
            self._next_waiters_try = 0.0  # the new channel's sidecar, at the next wait
        return True

    def _replaced(self) -> None:
        # The engine calls this from snapshot()/read() of a reopening reader whose state word
        # says REPLACED: move to the new channel (at most every CHECK_INTERVAL_S on failure).
        self._switch()

    def _stalled(self, slot: int, seq: int) -> None:
        # The engine asks about every 0.1 s while a read is blocked on an odd slot: a writer
        # that died in it will never finish, whatever the timeout.
        if seq & 1 and not self._device and self.header.writer_pid:
            with self._fd_lock:
                dead = not self.closed and lock_is_free(self._fd)
            if dead:
                self._timed_out(slot, seq, early=True)

    def _timed_out(self, slot: int, seq: int, moved: bool = False, writes: int = 0,
                   early: bool = False) -> None:
        """Raise the ReadTimeout of a read blocked on ``slot`` (whose seq is ``seq``): at the
        timeout, or ``early`` because the writer is known dead (then it does not claim to
        have waited the whole timeout). ``moved``: the writer made progress during the read
        (head or the slot's seq changed; ``writes`` completed): it overwrote the slot during
        every copy, even if it was mid-write at the last look. Otherwise an odd seq is a
        writer stuck in that write."""
        t = None if early else self._timeout
        stuck = bool(seq & 1) and not moved
        if stuck:
            what = (f"slot {slot} stayed mid-write (its sequence count {seq} is odd)"
                    + ("" if t is None else f" for {t:g} s"))
            pid = self.header.writer_pid
            if pid and not self._device:
                with self._fd_lock:
                    dead = not self.closed and lock_is_free(self._fd)
                if dead:
                    what += f"; writer pid {pid} is gone: it died in the middle of a write"
                else:
                    what += f"; writer pid {pid} is alive but not finishing (stopped?)"
        else:
            done = f" ({writes} writes completed meanwhile)" if writes else ""
            what = (f"the writer overwrote slot {slot} during every copy for {t or 0:g} s"
                    f"{done}; a channel with more slots (nr_slots) lets readers through")
        raise ReadTimeout(f"no consistent snapshot: {what}", self.path, stuck=stuck)

    # -- reading -----------------------------------------------------------------------------

    def apply(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``fn(view, *args, **kwargs)`` on the newest slot, retried until its result is from a
        consistent read, which it returns.

        ``fn`` gets a read-only array of the channel's shape and dtype over shared memory. It
        must not keep or return any part of it (return a value or a copy): a result or
        anything left behind that still refers to the view is a ValueError, since a later
        write would change it. ``fn`` must tolerate a torn input: an exception it raises on a
        read that turns out torn is discarded and the call retried; one it raises on a
        consistent read propagates. Raises ReadTimeout after ``timeout``.
        """
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        tries = 0
        while True:
            token = self.begin()
            view, lease = self._leased_view(token)
            refs = sys.getrefcount(view), sys.getrefcount(lease)
            try:
                result = fn(view, *args, **kwargs)
            except Exception as e:
                if self.validate(token):
                    # the traceback's frames hold the view: only the exception may not
                    traceback.clear_frames(e.__traceback__)
                    if sys.getrefcount(view) > refs[0] or sys.getrefcount(lease) > refs[1]:
                        raise ValueError(
                            f"{self.path}: apply()'s function raised {type(e).__name__}({e}) "
                            "holding a view of shared memory, which later writes change"
                        ) from None
                    raise
            else:
                escaped = sys.getrefcount(view) > refs[0] or sys.getrefcount(lease) > refs[1]
                if self.validate(token):
                    if escaped:
                        raise ValueError(
                            f"{self.path}: apply()'s function returned or kept a view of "
                            "shared memory, which later writes change; return a copy "
                            "(np.array(...)) or a value computed from it")
                    return result
                del result
            del view, lease
            tries += 1
            if deadline is not None and time.monotonic() >= deadline:
                # every try was torn by a write: the writer is busy, not stuck
                self._timed_out(token >> 32, token & 0xFFFFFFFF, moved=True)
            if tries > 16:  # the writer keeps overwriting: give it the CPU rather than spin
                time.sleep(min(_wait.POLL_MAX_S, 1e-5 * tries))

    def history(self) -> History:
        """History(data, seq, timestamp_ns) of every write the slots hold, oldest first.

        ``data`` has shape (n,) + shape, ``seq`` and ``timestamp_ns`` are uint64 of shape
        (n,); with nr_slots N that is up to the last N writes, and a gap in ``seq`` is a write
        the ring lost before it was read. Each entry is a consistent copy; a slot with none
        within the timeout (a writer that died in it) is left out; ReadTimeout if no slot has
        one. Counts as a read: ``seq``, ``timestamp_ns`` and ``wait()`` then start from the
        newest entry.
        """
        data, seqs, stamps, error = self._read_slots()
        order = np.argsort(seqs, kind="stable")
        order = order[seqs[order] > 0]
        if error is not None and not len(order):
            raise error
        if len(order):
            self._mark_read(int(seqs[order[-1]]), int(stamps[order[-1]]))
        if len(order) and np.array_equal(order, np.arange(order[0], order[0] + len(order))):
            # in order already (the usual case): a view of the one copy, not a second copy
            # of the whole ring (twice the memory, and the GIL held throughout)
            picked = data[order[0]:order[-1] + 1]
        else:
            picked = data[order]
        return History(picked, seqs[order], stamps[order])

    # -- every write once ------------------------------------------------------------------------

    def _follow_plan(self) -> Generator[Sample | int, None, None]:
        """The steps of follow(), shared with follow_async(): yields each next write, or, when
        the caller must wait for it, the write number to wait past (head must reach the write
        it wants: waiting past the last write read returned at once while a write this reader
        skipped or had not read yet was still newer, and a follower spun)."""
        gen = -1
        lost = 0
        lapped = 0  # _follow_next()'s deadline while every write wanted is lapped (0: none)
        while True:
            if gen != self._generation:  # the start, or moved to a replacement channel
                # after the last write read; a reader that read none starts from the
                # oldest write the ring still holds
                nxt = self.seq + 1 if self.seq else max(1, self.head - self.nr_slots + 1)
                if gen >= 0:  # moved on: the new channel's writes it no longer holds are lost
                    lost += nxt - 1
                gen = self._generation
            # the shared protocol's follow steps (seqshm_follow_once()): the slot of write
            # nxt, the writes a lapping writer took from us counted (nxt moved past them),
            # the copy checked to be that write
            got, nxt, skipped, lapped = self._follow_next(nxt, lapped)
            lost += skipped
            if got is None:
                if not skipped:
                    lapped = 0  # caught up without losing a write: idle, not lapped
                slept = time.monotonic()
                yield nxt - 1
                if self._timeout is not None and time.monotonic() - slept > self._timeout:
                    lapped = 0  # idle longer than a read may take: earlier losses are old news
                continue
            data, seq, ts = got
            self._mark_read(seq, ts)
            yield Sample(data, seq, ts, lost)
            lost = 0
            nxt = seq + 1

    def follow(self, timeout: float | None = None) -> Iterator[Sample]:
        """Every write once, in order: ``for s in r.follow(): ...`` yields Sample(data, seq,
        timestamp_ns, lost), ``data`` a copy of the channel's shape and dtype.

        Starts after the last write this reader read (a reader that read none: from the
        oldest write the ring holds). ``lost`` counts the writes lost just before a sample,
        when the reader fell more than nr_slots writes behind; only slots not yet returned are
        copied. Between writes it sleeps in :meth:`wait`. Ends when the channel ends (a
        reopening reader moves on to the replacement instead) or when no write comes within
        ``timeout`` seconds (None: no limit). Each sample counts as read (``seq``, ``wait()``).
        A timeout that is not a number of seconds >= 0 or None is refused at once
        (TypeError, ValueError).
        """
        _core.timeout_ns(timeout)  # a bad timeout is refused now, not at the first wait
        return self._follow(timeout)

    def _follow(self, timeout: float | None) -> Iterator[Sample]:
        for sample in self._follow_plan():
            if not isinstance(sample, int):
                yield sample
                continue
            try:
                if not self._wait(timeout, sample):
                    return
            except ChannelEnded:
                return

    def follow_async(self, timeout: float | None = None) -> AsyncIterator[Sample]:
        """``async for s in r.follow_async(): ...``: :meth:`follow` for asyncio."""
        _core.timeout_ns(timeout)  # a bad timeout is refused now, not at the first wait
        return self._follow_async(timeout)

    async def _follow_async(self, timeout: float | None) -> AsyncIterator[Sample]:
        for sample in self._follow_plan():
            if not isinstance(sample, int):
                yield sample
                continue
            try:
                if not await self._wait_async(timeout, sample):
                    return
            except ChannelEnded:
                return

    # -- the hooks _wait.Waiting calls between sleeps -------------------------------------------

    def _newer(self, target: int) -> bool:
        return int(self.head) > target

    def _end_or_follow(self, target: int) -> int:
        """Between sleeps of a wait: raise ChannelEnded if the channel ended with nothing left
        to read, FileTruncated if its file shrank; a reopening reader instead moves to the
        channel that now has its path, or keeps waiting for one (as tail -F does) unless the
        one there cannot be followed. Returns the write number to wait past."""
        state = self.state
        if state is ChannelState.TRUNCATED:
            self._raise_truncated_now()
        if state in (ChannelState.OPEN, ChannelState.REMOVED) or self._newer(target):
            return target
        if self._follow_path:
            if self._switch():
                return self.seq
            if not self._incompatible:
                return target
        raise self._ended_error(state)

    def _raise_truncated_now(self) -> None:
        raise FileTruncated(
            "the file shrank under this process's mapping (truncated by another process?); "
            "its data is gone: close this object and reopen the channel", self.path)

    def _fstat(self) -> os.stat_result:
        """The stat of the very file this reader has open (not of its path, which may name
        another file by now); ClosedError after close()."""
        with self._fd_lock:
            self._check_not_closed()
            return os.fstat(self._fd)

    def _dup(self) -> int:
        """A descriptor of the very file this reader has open, for the caller to close: never
        the path opened again (another file may have that name now, or a link another user
        planted); close() in another thread cannot pull it from under the caller."""
        with self._fd_lock:
            self._check_not_closed()
            return os.dup(self._fd)

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Unmap the channel and close its file. Safe while other threads are inside calls:
        a copy in progress completes, a wait raises ClosedError. Views still held keep their
        memory mapped until they are gone."""
        with self._fd_lock:
            self._detach()  # unmaps and closes the file in one C step: once, interrupt or not

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
