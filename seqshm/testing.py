"""Test helpers (like numpy.testing): writer processes that publish a checkable pattern."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
import traceback
from types import TracebackType
from typing import Any

import numpy as np

from seqshm import _hooks

__all__ = ["PatternWriter", "StalledWriter", "count_torn", "pattern_value", "torn"]

#: Seconds ``__enter__`` waits for the child to publish its channel.
START_TIMEOUT = 30.0
#: Seconds ``__exit__`` waits for the child to stop before it terminates, then kills it.
STOP_TIMEOUT = 5.0
_POLL_S = 0.005


def torn(a: np.ndarray) -> bool:
    """True if ``a`` cannot be one pattern write: not every 64-bit word holds the same value."""
    words = _words(a)
    return bool(words.size and (words != words[0]).any())


def count_torn(a: np.ndarray) -> int:
    """How many rows of ``a`` (a stack of copies, one per row) are torn."""
    rows = np.asarray(a).reshape(len(a), -1).view(np.uint64)
    return int((rows != rows[:, :1]).any(axis=1).sum())


def pattern_value(a: np.ndarray) -> int:
    """The write number a pattern copy holds; ValueError if it is torn."""
    words = _words(a)
    if torn(words):
        raise ValueError("torn copy: its 64-bit words differ")
    return int(words[0])


def _words(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint64)


def _context() -> Any:
    # fork starts in milliseconds, but forking a process that runs threads can deadlock the
    # child (and warns from Python 3.12 on); spawn is the safe choice then.
    return multiprocessing.get_context("fork" if threading.active_count() == 1 else "spawn")


def _create(path: str, nbytes: int, nr_slots: int) -> Any:
    import seqshm

    return seqshm.create(path, np.uint64, nbytes // 8, nr_slots=nr_slots, overwrite=True)


def _pattern_main(path: str, nbytes: int, nr_slots: int, rate_hz: float | None,
                  ready: Any, stop: Any, writes: Any, errors: Any) -> None:
    """The child: create the channel, then publish pattern writes until ``stop`` is set."""
    try:
        writer = _create(path, nbytes, nr_slots)
    except BaseException:
        errors.send(traceback.format_exc())
        raise
    try:
        ready.value = 1
        if rate_hz is None:
            # Check for stop every few ms whatever the payload size.
            batch = max(1, min(1000, (4 << 20) // nbytes))
            while not stop.value:
                writes.value = _hooks.write_pattern(writer, batch)
        else:
            period = 1.0 / rate_hz
            due = time.monotonic()
            while not stop.value:
                writes.value = _hooks.write_pattern(writer, 1)
                due += period
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(min(delay, _POLL_S))
                else:
                    due = time.monotonic()  # fell behind: do not burst to catch up
        writes.value = writer.seq
    finally:
        writer.close()


def _stalled_main(path: str, nbytes: int, nr_slots: int, writes_before: int,
                  ready: Any, stop: Any, writes: Any, errors: Any) -> None:
    """The child: publish some pattern writes, then stop in the middle of one more, with its
    slot's seq odd and half the payload written, as a writer killed or stopped inside write()."""
    try:
        writer = _create(path, nbytes, nr_slots)
        if writes_before:
            _hooks.write_pattern(writer, writes_before)
        writes.value = writer.seq
        _hooks.stall_mid_write(writer, nbytes // 16)  # half written: what a reader must never see
    except BaseException:
        errors.send(traceback.format_exc())
        raise
    ready.value = 1
    while not stop.value:
        time.sleep(_POLL_S)
    # Reached only if the parent stops us gently: leave the slot odd as a dead writer would
    # and just exit (close() would mark the channel closed).
    os._exit(0)


class _ChildWriter:
    """A writer process publishing a uint64 channel at ``path``; a context manager."""

    _target: Any = None

    def __init__(self, path: str | os.PathLike[str], nbytes: int, nr_slots: int,
                 args: tuple[Any, ...], unlink: bool) -> None:
        if nbytes < 8 or nbytes % 8:
            raise ValueError(f"nbytes is {nbytes}: a multiple of 8 from 8 up")
        self.path = os.fspath(path)
        self.nbytes = nbytes
        self.nr_slots = nr_slots
        self.unlink = unlink
        ctx = _context()
        # Plain shared flags polled by both sides, not Events: a child killed or stopped while
        # waiting on an Event's condition would make the parent's set() wait for it forever.
        self._ready = ctx.RawValue("b", 0)
        self._stop = ctx.RawValue("b", 0)
        self._writes = ctx.RawValue("Q", 0)
        self._errors_r, errors_w = ctx.Pipe(duplex=False)
        self._proc: multiprocessing.process.BaseProcess = ctx.Process(
            target=type(self)._target,
            args=(self.path, nbytes, nr_slots, *args, self._ready, self._stop, self._writes,
                  errors_w),
            name=f"{type(self).__name__}({self.path})",
            daemon=True,
        )
        self._errors_w = errors_w

    @property
    def pid(self) -> int | None:
        """The child's process id (None before ``__enter__``)."""
        return self._proc.pid

    @property
    def writes(self) -> int:
        """Writes published so far (exact once the writer has stopped; a lower bound before)."""
        return int(self._writes.value)

    @property
    def exitcode(self) -> int | None:
        return self._proc.exitcode

    def is_alive(self) -> bool:
        return self._proc.is_alive()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the writer process (SIGKILL: it dies wherever it is)."""
        if self._proc.pid is not None and self._proc.exitcode is None:
            os.kill(self._proc.pid, sig)

    def join(self, timeout: float = STOP_TIMEOUT) -> None:
        """Wait up to ``timeout`` seconds for the writer process to exit (after ``kill()``)."""
        self._proc.join(timeout)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the child and wait until its channel file exists and is readable."""
        self._proc.start()
        self._errors_w.close()
        deadline = time.monotonic() + timeout
        while not self._ready.value:
            time.sleep(_POLL_S)
            if not self._proc.is_alive() or time.monotonic() > deadline:
                why = self._child_error()
                self.stop()
                state = (f"did not publish it within {timeout:g} s" if why is None
                         else f"failed:\n{why}")
                raise RuntimeError(f"{type(self).__name__} for {self.path}: the writer {state}")
        if not os.access(self.path, os.R_OK):
            self.stop()
            raise RuntimeError(f"{type(self).__name__}: {self.path} is not readable after the "
                               "writer published it")

    def _child_error(self) -> str | None:
        if self._errors_r.poll(0.1):
            try:
                return str(self._errors_r.recv())
            except EOFError:
                pass
        if self._proc.exitcode is not None:
            return f"exit code {self._proc.exitcode}"
        return None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the child (terminate, then kill, if it does not stop within ``timeout``)."""
        self._stop.value = 1
        if self._proc.pid is not None:
            self.kill(signal.SIGCONT)  # a stopped child could not see the stop flag
            self._proc.join(timeout)
            if self._proc.exitcode is None:
                self.kill(signal.SIGCONT)  # a stopped child cannot act on SIGTERM
                self._proc.terminate()
                self._proc.join(timeout)
            if self._proc.exitcode is None:
                self._proc.kill()
                self._proc.join(timeout)
        self._errors_r.close()
        if self.unlink:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, typ: type[BaseException] | None, val: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path!r} pid={self.pid} writes={self.writes}>"


class PatternWriter(_ChildWriter):
    """A child process publishing pattern writes: every 64-bit word of write k holds k.

    ``with PatternWriter(path, nbytes) as w:`` creates a uint64 channel of ``nbytes // 8``
    words and ``nr_slots`` slots at ``path`` (replacing what is there), writes as fast as it
    can (``rate_hz=None``) or ``rate_hz`` times a second, and stops on leaving the block;
    ``w.writes`` then says how many writes it published. The channel's file is removed on
    exit unless ``unlink=False``. ``w.kill(sig)`` signals the writer.
    """

    _target = _pattern_main

    def __init__(self, path: str | os.PathLike[str], nbytes: int, *, nr_slots: int = 1,
                 rate_hz: float | None = None, unlink: bool = True) -> None:
        if rate_hz is not None and not rate_hz > 0:
            raise ValueError(f"rate_hz is {rate_hz!r}: a positive number or None")
        super().__init__(path, nbytes, nr_slots, (rate_hz,), unlink)
        self.rate_hz = rate_hz


class StalledWriter(_ChildWriter):
    """A child process that publishes ``writes_before`` pattern writes, then begins one more
    and never ends it: the slot's sequence count stays odd, as when a writer dies or is stopped
    mid-write. ``kill(SIGKILL)`` or ``kill(SIGSTOP)`` it to make either case."""

    _target = _stalled_main

    def __init__(self, path: str | os.PathLike[str], nbytes: int = 64, *, nr_slots: int = 1,
                 writes_before: int = 3, unlink: bool = True) -> None:
        super().__init__(path, nbytes, nr_slots, (writes_before,), unlink)
