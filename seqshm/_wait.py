"""Waiting for a write: wait() and wait_async() (one plan, two drivers), the futex sleep
through the channel's sidecar, poll() on a device, and the threads wait_async() sleeps in."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import fcntl
import functools
import os
import queue
import select
import struct
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Protocol

from seqshm import _core, _sidecar

__all__ = ["CHECK_INTERVAL_S", "POLL_MAX_S", "Waiting"]

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
    its threads never end. These are daemon threads that end after _SLEEPER_IDLE_S idle. A
    signal handler's exception inside submit() costs at most one thread too many or a job
    left queued for the next free thread, whose wait was called off (its slot abandoned)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[concurrent.futures.Future[int],
                                            Callable[[], int]]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Under _lock. A job is counted in _queued from its put() until a thread has taken it,
        # a thread in _waiting while it is not running a job (starting, or in get()); they
        # are counted off together when a thread takes a job, so _queued - _waiting, the
        # jobs no thread is there for yet, stays right whichever thread takes whichever job.
        # (Counting idle threads "spoken for" per job was wrong: a thread started for one job
        # counted itself idle, the next job spoke for it, it took the first, and the second
        # waited behind a sleep of up to its whole slice.)
        self._queued = 0
        self._waiting = 0
        self._running = 0   # threads alive

    def submit(self, fn: Callable[[], int]) -> concurrent.futures.Future[int]:
        """Run ``fn()`` in a sleeper thread: a future of its result."""
        job: concurrent.futures.Future[int] = concurrent.futures.Future()
        with self._lock:
            self._jobs.put((job, fn))
            self._queued += 1
            # a thread for every queued job (the sleeper slots bound them)
            more = self._queued > self._waiting and self._running < _SLEEPERS_MAX
            if more:
                self._running += 1
                self._waiting += 1
        if more:
            try:
                threading.Thread(target=self._work, name="seqshm-wait", daemon=True).start()
            except BaseException:
                with self._lock:  # no thread after all: a later submit() starts one
                    self._running -= 1
                    self._waiting -= 1
                raise
        return job

    def _work(self) -> None:
        while True:
            try:
                job, fn = self._jobs.get(timeout=_SLEEPER_IDLE_S)
            except queue.Empty:
                with self._lock:
                    # a job put as the wait timed out: this thread stays for it
                    if self._queued == 0:
                        self._waiting -= 1
                        self._running -= 1
                        return
                continue
            with self._lock:
                # (never below 0: a signal handler's exception between a put() and its count
                # leaves a job uncounted, which costs one wait a free thread, no more)
                self._queued = max(0, self._queued - 1)
                self._waiting -= 1
            if job.set_running_or_notify_cancel():  # else cancelled before it ran
                try:
                    job.set_result(fn())
                except BaseException as e:
                    job.set_exception(e)
            with self._lock:
                self._waiting += 1


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


def _sleep_in_thread(reader: _Waiter, slot: _core.SleeperSlot, target: int, seconds: float
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



if TYPE_CHECKING:
    class _Waiter(Protocol):
        """What Waiting's methods use of the Reader they are mixed into (a Protocol, so this
        module never imports _reader)."""

        _device: bool
        _followed: bool
        _fd: int
        _fd_lock: threading.Lock
        _next_waiters_try: float

        @property
        def path(self) -> str: ...
        @property
        def seq(self) -> int: ...
        @property
        def header(self) -> _core.Header: ...
        @property
        def _has_waiters(self) -> bool: ...
        @property
        def _state_word(self) -> int: ...
        @property
        def _truncated(self) -> bool: ...
        def _check_not_closed(self) -> None: ...
        def _newer(self, target: int) -> bool: ...
        def _end_or_follow(self, target: int) -> int: ...
        def _set_waiters(self, waiters: _core.WaitersFile | None, fence: bool) -> None: ...
        def _futex_sleep(self, target: int, seconds: float,
                         slot: _core.SleeperSlot | None = ...) -> int: ...
        # Waiting's own, called on the same object
        def _sidecar_path(self) -> str: ...
        def _open_waiters(self) -> None: ...
        def _sleeps_in_kernel(self) -> bool: ...
        def _kernel_sleep(self, target: int, seconds: float,
                          slot: _core.SleeperSlot | None = ...) -> int: ...
        def _device_sleep(self, seconds: float) -> None: ...
        async def _device_sleep_async(self, loop: asyncio.AbstractEventLoop,
                                      seconds: float) -> None: ...
        async def _sleep_in_pool(self, target: int, seconds: float) -> int: ...
        def _wait_plan(self, timeout: float | None, clock: Callable[[], float], target: int
                       ) -> Generator[tuple[float, int], None, bool]: ...
        def _wait(self, timeout: float | None, target: int) -> bool: ...
        async def _wait_async(self, timeout: float | None, target: int) -> bool: ...


class _LockBackoff:
    """What a wait does after one futex sleep that did not sleep through its slice, for both
    drivers: with the sidecar's lock taken (result 1), poll from _RESET_POLL_S doubling up
    to POLL_MAX_S while it stays taken; without a sidecar (negative), poll at POLL_MAX_S."""

    __slots__ = ("_locked",)

    def __init__(self) -> None:
        self._locked = _RESET_POLL_S

    def after(self, rc: int, seconds: float) -> float | None:
        """How long to sleep after a sleep whose result was ``rc`` (None: not at all), with
        ``seconds`` left in the plan's slice."""
        if rc == 1:
            pause = min(seconds, self._locked)
            self._locked = min(self._locked * 2, POLL_MAX_S)
            return pause
        self._locked = _RESET_POLL_S
        return min(seconds, POLL_MAX_S) if rc < 0 else None


class Waiting:
    """The waits of a Reader (mixed in before its engine): wait(), wait_async(), and the
    sidecar they sleep in."""

    def _sidecar_path(self: _Waiter) -> str:
        """Where the channel's sidecar is: beside the channel file, in the directory where
        its writer made it (opened O_NOFOLLOW; the header's (st_dev, st_ino) and the sidecar's
        line 0 decide whether it is the channel's, so a planted one is ignored)."""
        if not self._followed:
            return _sidecar.path_of(self.path)
        with self._fd_lock:  # the file a link led to: its directory, as the kernel names it
            self._check_not_closed()
            return _sidecar.path_of(os.readlink(f"/proc/self/fd/{self._fd}"))

    def _open_waiters(self: _Waiter) -> None:
        """Sleep through the channel's sidecar from now on, if the header names one and the
        file at its place is it (st_dev and st_ino as the header says, and it names our
        channel file back); else poll, and look again in CHECK_INTERVAL_S."""
        self._next_waiters_try = time.monotonic() + CHECK_INTERVAL_S
        h = self.header
        if not h.waiters_ino:
            return
        with self._fd_lock:
            self._check_not_closed()
            channel = os.fstat(self._fd)
        waiters = _sidecar.open_for_reader(self._sidecar_path(), h.waiters_dev, h.waiters_ino,
                                           channel)
        if waiters is not None:
            self._set_waiters(waiters, bool(h.wake_flags & _core.WAKE_F_FENCE))

    def _sleeps_in_kernel(self: _Waiter) -> bool:
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

    def _kernel_sleep(self: _Waiter, target: int, seconds: float,
                      slot: _core.SleeperSlot | None = None) -> int:
        """One futex sleep through the attached sidecar (see _core.ReaderEngine._futex_sleep),
        which ``slot.cancel()`` calls off: its result, _WOKEN when head passed ``target``; 1
        if the sidecar's lock is taken (the caller polls, with a backoff); negative if this
        reader must poll instead (the sidecar was dropped)."""
        rc: int = self._futex_sleep(target, seconds, slot)
        if rc < 0:
            self._next_waiters_try = 0.0  # e.g. a forked child: open its own at once
        return rc

    def _device_sleep(self: _Waiter, seconds: float) -> None:
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

    def _wait_plan(self: _Waiter, timeout: float | None, clock: Callable[[], float], target: int
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

    def wait(self: _Waiter, timeout: float | None = None) -> bool:
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

    def _wait(self: _Waiter, timeout: float | None, target: int) -> bool:
        """wait() for a write newer than ``target``."""
        plan = self._wait_plan(timeout, time.monotonic, target)
        backoff = _LockBackoff()
        try:
            while True:
                seconds, target = next(plan)
                if self._device:
                    self._device_sleep(seconds)
                    continue
                # -1: no sidecar, poll (the plan looks for one)
                rc = self._kernel_sleep(target, seconds) if self._has_waiters else -1
                if rc == _WOKEN:  # what the plan's next look would find: return now
                    return True
                pause = backoff.after(rc, seconds)
                if pause is not None:
                    time.sleep(pause)
        except StopIteration as done:
            return bool(done.value)

    async def wait_async(self: _Waiter, timeout: float | None = None) -> bool:
        """``await reader.wait_async()``: :meth:`wait` for asyncio (same results and errors).
        On a device the event loop watches the file; on a userspace channel the futex sleep
        runs in a worker thread (256 such threads at most, waits beyond them poll), or it
        polls head when it cannot. Cancelling it (``task.cancel()``, ``asyncio.wait_for``,
        ``asyncio.timeout``) at any point gives back at once what it took: its thread (a
        sleep in progress is called off), its count in the sidecar, any descriptor."""
        return await self._wait_async(timeout, self.seq)

    async def _wait_async(self: _Waiter, timeout: float | None, target: int) -> bool:
        """wait_async() for a write newer than ``target``."""
        loop = asyncio.get_running_loop()
        plan = self._wait_plan(timeout, loop.time, target)
        backoff = _LockBackoff()
        try:
            while True:
                seconds, target = next(plan)
                if self._device:
                    await self._device_sleep_async(loop, seconds)
                    continue
                # -1: no sidecar, or every sleeper thread busy: poll
                rc = await self._sleep_in_pool(target, seconds) if self._has_waiters else -1
                pause = backoff.after(rc, seconds)
                if pause is not None:
                    await asyncio.sleep(pause)
        except StopIteration as done:
            return bool(done.value)

    async def _sleep_in_pool(self: _Waiter, target: int, seconds: float) -> int:
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

    async def _device_sleep_async(self: _Waiter, loop: asyncio.AbstractEventLoop,
                                  seconds: float) -> None:
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

