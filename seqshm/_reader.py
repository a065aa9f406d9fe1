"""The public Reader: opening a channel, its lifecycle (end, restart, reopen), waits, follow()."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import errno
import fcntl
import functools
import math
import mmap
import os
import queue
import select
import stat
import struct
import sys
import threading
import time
import traceback
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import Any, TypeVar

import numpy as np

from seqshm import _core
from seqshm._errors import ChannelEnded, ClosedError, FileTruncated, FormatError, ReadTimeout
from seqshm._files import Directory, PlantedLink, open_dir, open_in
from seqshm._lifecycle import ChannelState, end_reason, lock_is_free, same_file, writer_text
from seqshm._types import History, ReaderStats, Sample
from seqshm._writer import read_waiters_id, waiters_path

__all__ = ["Reader"]

_T = TypeVar("_T")

#: How often a waiting reader looks, with system calls, for an end the state word cannot show
#: (a writer that died, a file removed or replaced without create()): the bound on noticing.
CHECK_INTERVAL_S = 0.1
#: The longest sleep of a userspace wait() between looks at head.
POLL_MAX_S = 1e-3

_LAYOUT = _core.abi_layout()["ioc_info"]
_INFO_STRUCT = struct.Struct(f"=II{_LAYOUT['size'] - 8}x")
#: _futex_sleep()'s result when a write woke it: head is past the target.
_WOKEN = 3
#: How long a reader polls when the sidecar's lock is taken (the writer resetting the count,
#: for microseconds), doubled up to POLL_MAX_S while it stays taken (any process that may read
#: the channel may open the sidecar and hold the lock: readers must not spin on it).
_RESET_POLL_S = 20e-6

#: Threads in which wait_async() sleeps in the kernel, at most: one per waiting task (a
#: sleeping thread costs no CPU and little memory), so that a task is never queued behind
#: others' sleeps. A sleep is handed over only with one of as many slots
#: (_core.take_sleeper_slot(): a thread is free for it); queued behind sleeping ones, a wait
#: whose write came would be seen only when one of them ended its slice (up to 0.1 s later).
#: The waits beyond _SLEEPERS_MAX poll instead (1 ms late at most, as without a sidecar).
_SLEEPERS_MAX = 256
#: A sleeper thread with no sleep to run for this long ends: a burst of waits leaves no
#: threads behind.
_SLEEPER_IDLE_S = 1.0


class _SleeperThreads:
    """The threads in which wait_async() sleeps in the kernel (a futex cannot be polled by an
    event loop). Not concurrent.futures.ThreadPoolExecutor: its threads are joined at exit and
    are woken for it only once registered, so an exception from a signal handler between a
    thread's start and its registration (inside submit()) hung the interpreter's exit; and
    its threads never end. These are daemon threads that end after _SLEEPER_IDLE_S idle; all
    their bookkeeping is done by the threads themselves, where no signal handler runs."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[concurrent.futures.Future[int], Callable[[], int]]]
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0      # threads waiting for a job
        self._running = 0   # threads alive

    def submit(self, fn: Callable[[], int]) -> concurrent.futures.Future[int]:
        """Run ``fn()`` in a sleeper thread: a future of its result."""
        job: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._jobs.put((job, fn))
        with self._lock:
            # a thread for every job no idle thread will take; the sleeper slots bound them
            more = self._idle < self._jobs.qsize() and self._running < _SLEEPERS_MAX
        if more:
            threading.Thread(target=self._work, name="seqshm-wait", daemon=True).start()
        return job

    def _work(self) -> None:
        with self._lock:
            self._running += 1
        try:
            while True:
                with self._lock:
                    self._idle += 1
                try:
                    job, fn = self._jobs.get(timeout=_SLEEPER_IDLE_S)
                except queue.Empty:
                    return
                finally:
                    with self._lock:
                        self._idle -= 1
                if job.set_running_or_notify_cancel():  # else cancelled before it ran
                    try:
                        job.set_result(fn())
                    except BaseException as e:
                        job.set_exception(e)
        finally:
            with self._lock:
                self._running -= 1


_sleep_pool: _SleeperThreads | None = None


def _sleepers() -> _SleeperThreads:
    global _sleep_pool
    if _sleep_pool is None:
        _sleep_pool = _SleeperThreads()
    return _sleep_pool


#: The sleeps in progress in sleeper threads (changed by those threads only).
_asleep: set[_core.SleeperSlot] = set()
#: Set at exit: no more sleeps are handed to sleeper threads (waits poll).
_exiting = False


def _sleep_in_thread(reader: Reader, slot: _core.SleeperSlot, target: int, seconds: float
                     ) -> int:
    """A sleeper thread's job: one futex sleep, which ``slot.cancel()`` calls off, its slot
    given back when it ends."""
    _asleep.add(slot)
    try:
        return reader._kernel_sleep(target, seconds, slot)
    finally:
        _asleep.discard(slot)
        slot.release()


@atexit.register
def _call_off_sleeps() -> None:
    """At exit, before the sleeper threads (daemon threads) are stopped wherever they are:
    call off the sleeps in progress and let them end, so that none is left counted in its
    channel's sidecar (the writer would wake nobody at every write until it reset the
    count). Bounded: a thread the exit cannot wait for is let go."""
    global _exiting
    _exiting = True  # a wait that goes on (its loop in a thread of its own) polls from now
    deadline = time.monotonic() + 0.5
    while _asleep and time.monotonic() < deadline:
        for slot in list(_asleep):  # again: a sleep handed over just before the flag
            slot.cancel()
        time.sleep(0.001)


def _forget_sleepers() -> None:
    global _sleep_pool
    _sleep_pool = None  # a forked child has none of the parent's threads (nor their slots)


os.register_at_fork(after_in_child=_forget_sleepers)

# Every Reader of this process, so that a forked child can renew their locks: a thread of the
# parent inside a call at the fork (a wait looking at the state) held one, and no thread of
# the child would ever release it.
_readers: weakref.WeakSet[Reader] = weakref.WeakSet()


def _renew_locks_in_child() -> None:
    for r in list(_readers):
        r._fd_lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_locks_in_child)


def _open_region(d: Directory, name: str, path: str
                 ) -> tuple[int, bool, bool, bytes, int, _core.Mapping]:
    """Open ``name`` in ``d`` (``path`` for messages) read-only, never through a link another
    user planted (open_in), and map its region: (fd, is_device, followed a link, header,
    file_size, mapping)."""
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
        raise PermissionError(
            e.errno, "this user may not read the channel file: run as one its mode lets "
            "read, or have its writer create it with a wider mode (create(mode=0o644))",
            path) from None
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
            m = _core.Mapping(fd, h["region_size"], False, h["nr_slots"])
        except OSError as e:
            raise OSError(e.errno, f"cannot map {h['region_size']} bytes: {e.strerror}",
                          path) from None
        return fd, not size, followed, header, size, m
    except BaseException:
        os.close(fd)
        raise


def _element_key(h: dict[str, Any]) -> tuple[Any, ...]:
    """What decides a channel's dtype and shape: a follower moves only between equal ones."""
    return h["itemsize"], h["flags"], h["fields"], h["shape"]


class Reader(_core.ReaderEngine):
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
            fd, self._device, self._followed, header, size, m = _open_region(d, self._name, p)
        finally:
            d.close()
        self._fd = fd
        self._attach(p, header, m, size)
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
            if not self._device and st.st_size < self.header["region_size"]:
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
        return writer_text(0 if self._device else h["writer_pid"], h["writer_pidns"])

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
        self._next_switch = now + CHECK_INTERVAL_S
        try:
            d, _ = open_dir(self.path)
            try:
                fd, device, followed, header, size, m = _open_region(d, self._name, self.path)
            finally:
                d.close()
        except (OSError, FormatError) as e:
            self._no_follow = f"{type(e).__name__}: {e}"
            return False
        with self._fd_lock:
            if self.closed:
                os.close(fd)
                self._check_not_closed()
            h = _core.check_header(header, size, self.path)
            # the same file is a new channel only if another was written into it in place
            if same_file(os.fstat(fd), os.fstat(self._fd)) and h == self.header:
                os.close(fd)
                return False
            if _element_key(h) != _element_key(self.header):
                os.close(fd)
                self._no_follow = (f"its element type or shape {h['shape']} differs from "
                                   f"this reader's {self.dtype} {self.shape}")
                self._incompatible = True
                return False
            self._incompatible = False
            old, self._fd, self._device, self._followed = self._fd, fd, device, followed
            self._attach(self.path, header, m, size)
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
        if seq & 1 and not self._device and self.header["writer_pid"]:
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
            pid = self.header["writer_pid"]
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
                time.sleep(min(POLL_MAX_S, 1e-5 * tries))

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

    # -- waiting -----------------------------------------------------------------------------

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

    def _sidecar_path(self) -> str:
        """Where the channel's sidecar is: beside the channel file, in the directory where
        its writer made it (opened O_NOFOLLOW; the header's (st_dev, st_ino) and the sidecar's
        line 0 decide whether it is the channel's, so a planted one is ignored)."""
        if not self._followed:
            return waiters_path(self.path)
        with self._fd_lock:  # the file a link led to: its directory, as the kernel names it
            self._check_not_closed()
            return waiters_path(os.readlink(f"/proc/self/fd/{self._fd}"))

    def _open_waiters(self) -> None:
        """Sleep through the channel's sidecar from now on, if the header names one and the
        file at its place is it (st_dev and st_ino as the header says, and it names our
        channel file back); else poll, and look again in CHECK_INTERVAL_S."""
        self._next_waiters_try = time.monotonic() + CHECK_INTERVAL_S
        h = self.header
        if not h["waiters_ino"]:
            return
        # Owned (closed when dropped, once) from the instant it exists: an interrupt anywhere
        # below leaks nothing and closes nothing twice.
        try:
            fd = _core.take_fd(os.open, self._sidecar_path(),
                               os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return  # none (not yet renamed into place, removed) or not ours to write
        st = os.fstat(fd.fd)
        if (not stat.S_ISREG(st.st_mode) or st.st_size < _core.ALIGN
                or (st.st_dev, st.st_ino) != (h["waiters_dev"], h["waiters_ino"])):
            fd.close()
            return
        magic, dev, ino = read_waiters_id(fd.fd)
        with self._fd_lock:
            self._check_not_closed()
            ch = os.fstat(self._fd)
        if magic != _core.WAITERS_MAGIC or (dev, ino) != (ch.st_dev, ch.st_ino):
            fd.close()
            return
        waiters = _core.WaitersFile(fd)  # takes the descriptor over from fd
        self._set_waiters(waiters, bool(h["wake_flags"] & _core.WAKE_F_FENCE))

    def _sleeps_in_kernel(self) -> bool:
        """Whether a wait can sleep until the next write (a sidecar is attached); without
        one, looks for it (first at the reader's first wait: readers that only take
        snapshots never open it) and again at most every CHECK_INTERVAL_S."""
        if self._has_waiters:
            return True
        if not self._device and time.monotonic() >= self._next_waiters_try:
            try:
                self._open_waiters()
            except OSError:
                pass
        return bool(self._has_waiters)

    def _kernel_sleep(self, target: int, seconds: float,
                      slot: _core.SleeperSlot | None = None) -> int:
        """One futex sleep through the attached sidecar (see _core.ReaderEngine._futex_sleep),
        which ``slot.cancel()`` calls off: its result, _WOKEN when head passed ``target``; 1
        if the sidecar's lock is taken (the caller polls, with a backoff); negative if this
        reader must poll instead (the sidecar was dropped)."""
        rc: int = self._futex_sleep(target, seconds, slot)
        if rc < 0:
            self._next_waiters_try = 0.0  # e.g. a forked child: open its own at once
        return rc

    def _raise_truncated_now(self) -> None:
        raise FileTruncated(
            "the file shrank under this process's mapping (truncated by another process?); "
            "its data is gone: close this object and reopen the channel", self.path)

    def _dup(self) -> int:
        """A descriptor of the very file this reader has open, for the caller to close: never
        the path opened again (another file may have that name now, or a link another user
        planted); close() in another thread cannot pull it from under the caller."""
        with self._fd_lock:
            self._check_not_closed()
            return os.dup(self._fd)

    def _device_sleep(self, seconds: float) -> None:
        """Sleep in poll() on the device until a write newer than this file has seen."""
        with self._fd_lock:
            self._check_not_closed()
            # a copy close() in another thread cannot pull from under us, owned (closed
            # once, when dropped) from the instant it exists: Ctrl-C anywhere leaks nothing
            fd = _core.take_fd(os.dup, self._fd)
        try:
            info = bytearray(_INFO_STRUCT.pack(_LAYOUT["size"], _core.INFO_ACK))
            fcntl.ioctl(fd.fd, _core.IOC_INFO, info)  # what this file has seen is head now
            if int.from_bytes(info[_LAYOUT["head"]:_LAYOUT["head"] + 8], sys.byteorder) > self.seq:
                return
            p = select.poll()
            p.register(fd.fd, select.POLLIN)
            p.poll(max(0, int(seconds * 1000)))
        finally:
            fd.close()

    def _wait_plan(self, timeout: float | None, clock: Callable[[], float], target: int
                   ) -> Generator[tuple[float, int], None, bool]:
        """The steps of a wait for a write newer than ``target``, shared by wait() and
        wait_async(): yields how long to sleep next and the head to sleep past, returns the
        wait's result; raises ChannelEnded or ClosedError."""
        ns = _core.timeout_ns(timeout)
        deadline = None if ns == 2**64 - 1 else clock() + ns / 1e9
        delay = 20e-6
        next_check = 0.0
        while True:
            if self._newer(target):
                return True
            now = clock()
            if now >= next_check or self._state_word != _core.STATE_OPEN or self._truncated:
                target = self._end_or_follow(target)
                next_check = now + CHECK_INTERVAL_S
                if self._newer(target):
                    return True
            if deadline is not None and now >= deadline:
                return False
            left = CHECK_INTERVAL_S if deadline is None else min(deadline - now, CHECK_INTERVAL_S)
            if self._device or self._sleeps_in_kernel():
                # poll() or a futex wakes at the next write: sleep until the next check (a
                # writer that dies wakes no one)
                yield min(left, max(0.0, next_check - now)), target
            else:
                yield min(delay, left), target
                delay = min(delay * 2, POLL_MAX_S)

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until a write newer than the last one this reader read is published.

        Returns True when there is one, False when ``timeout`` seconds (None: no limit) passed.
        Raises ChannelEnded when the channel ends with nothing newer to read (a reopening
        reader moves to a replacement instead), ClosedError if closed meanwhile. Ctrl-C and
        other signals interrupt it; no thread is held up. On a kernel device it sleeps in
        poll(); on a userspace channel in a futex the writer wakes (see linux/seqshm.h),
        or, when the channel has no sidecar (or this process cannot use it), it looks at the
        head with a backoff from 20 us to 1 ms.
        """
        return self._wait(timeout, self.seq)

    def _wait(self, timeout: float | None, target: int) -> bool:
        """wait() for a write newer than ``target``."""
        plan = self._wait_plan(timeout, time.monotonic, target)
        locked = _RESET_POLL_S
        try:
            while True:
                seconds, target = next(plan)
                if self._device:
                    self._device_sleep(seconds)
                elif not self._has_waiters:  # no sidecar: poll (the plan looks for one)
                    time.sleep(min(seconds, POLL_MAX_S))
                else:
                    rc = self._kernel_sleep(target, seconds)
                    if rc == _WOKEN:  # what the plan's next look would find: return now
                        return True
                    if rc == 1:
                        time.sleep(min(seconds, locked))
                        locked = min(locked * 2, POLL_MAX_S)
                        continue
                    locked = _RESET_POLL_S
                    if rc < 0:
                        time.sleep(min(seconds, POLL_MAX_S))
        except StopIteration as done:
            return bool(done.value)

    async def wait_async(self, timeout: float | None = None) -> bool:
        """``await reader.wait_async()``: :meth:`wait` for asyncio (same results and errors).
        On a device the event loop watches the file; on a userspace channel the futex sleep
        runs in a worker thread (256 such threads at most, waits beyond them poll), or it
        polls head when it cannot. Cancelling it (``task.cancel()``, ``asyncio.wait_for``,
        ``asyncio.timeout``) at any point gives back at once what it took: its thread (a
        sleep in progress is called off), its count in the sidecar, any descriptor."""
        return await self._wait_async(timeout, self.seq)

    async def _wait_async(self, timeout: float | None, target: int) -> bool:
        """wait_async() for a write newer than ``target``."""
        loop = asyncio.get_running_loop()
        plan = self._wait_plan(timeout, loop.time, target)
        locked = _RESET_POLL_S
        try:
            while True:
                seconds, target = next(plan)
                if self._device:
                    await self._device_sleep_async(loop, seconds)
                    continue
                # -1: no sidecar, or every sleeper thread busy: poll
                rc = await self._sleep_in_pool(target, seconds) if self._has_waiters else -1
                if rc == 1:  # the sidecar's lock is taken: poll, backing off (see _wait)
                    await asyncio.sleep(min(seconds, locked))
                    locked = min(locked * 2, POLL_MAX_S)
                    continue
                locked = _RESET_POLL_S
                if rc < 0:  # no sidecar, no free thread, or this process cannot use it: poll
                    await asyncio.sleep(min(seconds, POLL_MAX_S))
        except StopIteration as done:
            return bool(done.value)

    async def _sleep_in_pool(self, target: int, seconds: float) -> int:
        """One futex sleep in a sleeper thread: the sleep's result, or -1 if no thread is free
        (the caller polls). The thread's slot is given back exactly once
        (SleeperSlot.release()): when the sleep ends, when its job is cancelled before a
        thread took it (the future's done callback), or when this wait is cancelled or
        interrupted at any point, which also calls the sleep off, so that the thread and its
        count in the sidecar come back at once, not at the end of the slice."""
        # Taken here, in the coroutine that gives it back: a coroutine made but never run
        # (an interrupt between its creation and its first step) holds none, and from the
        # store on an exception meets the handler, so no traceback keeps a slot to the GC.
        slot = None if _exiting else _core.take_sleeper_slot(_SLEEPERS_MAX)
        try:
            if slot is None:
                return -1
            job = _sleepers().submit(
                functools.partial(_sleep_in_thread, self, slot, target, seconds))
            job.add_done_callback(slot.release)  # also when cancelled before it ran
            rc: int = await asyncio.wrap_future(job)
        except BaseException:
            if slot is not None:
                slot.abandon()  # one C step: the sleep called off, the slot given back
            raise
        return rc

    async def _device_sleep_async(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        with self._fd_lock:
            self._check_not_closed()
            fd = _core.take_fd(os.dup, self._fd)  # owned: see _device_sleep()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        try:
            loop.add_reader(fd.fd, wake)
            await asyncio.wait_for(ready, seconds)
        except asyncio.TimeoutError:
            pass
        finally:
            # before the close: the loop must not watch a number that may be reused
            loop.remove_reader(fd.fd)
            fd.close()

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
