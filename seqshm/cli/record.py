"""``seqshm record``: every write of a channel to a .npy, .npz, .parquet or .arrow file, spooled
to disk as it comes (seqshm/cli/_spool.py); ``record --recover`` saves what a killed one left."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

import seqshm
from seqshm.cli import _destination, _spool
from seqshm.cli._base import (
    CHANNEL_HELP,
    EXIT_OK,
    EXIT_USAGE,
    Failure,
    at_least_one,
    nonnegative,
    open_channel,
    positive,
)
from seqshm.cli._format import shown

USAGE = ("%(prog)s CHANNEL -o FILE [--count N | --duration S] [--timeout S]"
         "\n       %(prog)s --recover FILE")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.usage = USAGE
    p.add_argument("path", nargs="?", metavar="CHANNEL", help=CHANNEL_HELP)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="a .npy, .npz, .parquet or .arrow file (the last two need pyarrow); "
                        "writes go as they come to .FILE.recording beside it (a .npy), which "
                        "becomes FILE at the end: memory stays bounded, a recording killed "
                        "outright keeps what reached the disk (see --recover), the disk needs "
                        "room for the recording (twice that at the end for .npz, .parquet and "
                        ".arrow), and a full disk stops the recording and keeps what it holds")
    p.add_argument("--recover", metavar="FILE",
                   help="save what a recording to FILE that was killed (kill -9, a crash, a "
                        "power cut) left in .FILE.recording, as FILE (any of the formats)")
    stop = p.add_mutually_exclusive_group()
    stop.add_argument("--count", type=at_least_one, default=None, metavar="N",
                      help="stop after N writes")
    stop.add_argument("--duration", type=positive, default=None, metavar="S",
                      help="stop after S seconds")
    p.add_argument("--timeout", type=nonnegative, default=1.0, metavar="S",
                   help="how long a read waits for a consistent copy (default 1)")


def run(args: argparse.Namespace) -> int:
    if args.recover is not None:
        if args.path or args.output or args.count or args.duration:
            raise Failure("record --recover FILE takes no CHANNEL, -o, --count or "
                          "--duration", EXIT_USAGE)
        return recover(args.recover)
    if not args.path or not args.output:
        raise Failure("record needs a CHANNEL and -o FILE (or --recover FILE)", EXIT_USAGE)
    return record(args.path, args.output, args.count, args.duration, args.timeout)


@contextmanager
def _no_interrupts() -> Iterator[None]:
    """Ctrl-C ignored meanwhile, SIGTERM and SIGHUP held until after it (saving what was
    recorded must not be cut short; the exit status still says which signal came)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN)}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if held:
        signal.raise_signal(held[0])  # now handled as it would have been (main(): Signalled)


def _progress(console: Console, what: str, count: int | None, duration: float | None
              ) -> tuple[Progress, Any]:
    # markup=False: the description is a channel's path (shown() escapes it, rich must not
    # take its brackets for markup)
    columns = [TextColumn("recording {task.description}", markup=False), BarColumn(),
               TextColumn("{task.fields[writes]:,} writes ({task.fields[lost]:,} lost)"),
               TimeElapsedColumn()]
    progress = Progress(*columns, console=console, transient=False)
    task = progress.add_task(what, total=count or duration, writes=0, lost=0)
    return progress, task


def _usage(call: Callable[[], Any], about: str | None = None) -> Any:
    """``call()``, its refusals of the file asked for turned into usage errors (exit 2), their
    message after the channel's path ``about`` when they are about the channel."""
    try:
        return call()
    except (_spool.FormatUnavailable, _destination.DestinationUnwritable) as e:
        raise Failure(f"{shown(about)}: {e}" if about else str(e), EXIT_USAGE) from None


def record(path: str, output: str, count: int | None, duration: float | None,
           timeout: float) -> int:
    """Record every write of a channel (Reader.follow()) to ``output`` until ``count``
    writes, ``duration`` seconds, the channel's end or Ctrl-C; the file is written in every
    case. Each write goes to the spool beside ``output`` (``.FILE.recording``, a .npy) as it
    comes, so memory does not grow with the recording and a recording killed outright leaves
    what reached the disk (``record --recover``); a full disk stops the recording, saves what
    the spool holds and exits 1 saying so."""
    ext = _usage(lambda: _spool.output_format(output))
    err = Console(stderr=True, highlight=False, emoji=False)
    with _usage(lambda: _destination.Destination(output)) as dest:
        _usage(dest.check)
        with open_channel(path, timeout=timeout) as reader:
            _usage(lambda: _spool.check_dtype(ext, reader.dtype), reader.path)
            _usage(lambda: _spool.check_shape(reader.dtype, reader.shape), reader.path)
            try:
                spool = _usage(lambda: _spool.Spool.create(dest, reader.dtype,
                                                                reader.shape))
            except _spool.RecordingStopped as e:
                raise Failure(f"{shown(output)}: cannot record: {e.strerror}") from None
            lost = _record_into(spool, ext, reader, err, count, duration)
            _save(spool, ext)
    if spool.stopped is not None:
        raise Failure(f"{shown(output)}: {spool.stopped.strerror}: recording stopped after "
                      f"{spool.received:,} writes; the first {spool.count:,} are saved "
                      f"in {shown(output)}")
    if err.is_terminal:
        err.print(f"{spool.count:,} writes ({lost:,} lost) written to {shown(output)}",
                  markup=False)
    return EXIT_OK


def _record_into(spool: _spool.Spool, ext: str, reader: seqshm.Reader, err: Console,
                 count: int | None, duration: float | None) -> int:
    """Follow ``reader`` into ``spool`` until ``count`` writes, ``duration`` seconds, the
    channel's end, a full disk or Ctrl-C (which is raised once the recording is saved);
    the writes lost between two reads."""
    lost = 0
    progress, task = _progress(err, shown(reader.path), count, duration)
    start = time.monotonic()
    deadline = None if duration is None else start + duration
    shown_at = 0.0
    if err.is_terminal:
        progress.start()
    try:
        try:
            done = False
            while not done:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                for s in reader.follow(timeout=0.1 if left is None else min(0.1, left)):
                    spool.append(s)
                    lost += s.lost
                    if count is not None and spool.received >= count:
                        done = True
                        break
                    if deadline is not None and time.monotonic() >= deadline:
                        done = True
                        break
                    if err.is_terminal and time.monotonic() - shown_at > 0.1:
                        shown_at = time.monotonic()
                        progress.update(task, completed=spool.received if count else
                                        shown_at - start, writes=spool.received, lost=lost)
                else:
                    done = reader.ended  # follow() ended: no write for 0.1 s, or the end
                    spool.tick()  # a pause: put a batch old enough on disk meanwhile
        finally:
            if err.is_terminal:
                progress.update(task, completed=spool.received if count else
                                time.monotonic() - start, writes=spool.received, lost=lost)
                progress.stop()
    except _spool.RecordingStopped:
        pass  # spool.stopped says why, after saving
    except BaseException:
        _save(spool, ext)  # Ctrl-C, SIGTERM: what was recorded is saved, then it goes on
        raise
    return lost


def _save(spool: _spool.Spool, ext: str) -> None:
    """spool.save(ext) with Ctrl-C ignored and SIGTERM and SIGHUP held meanwhile."""
    try:
        with _no_interrupts():
            spool.save(ext)
    except OSError:
        raise  # its message names the file, and where the writes are kept if they are
    except BaseException:
        if spool.kept:
            print(f"seqshm: the {spool.count:,} writes recorded are kept in "
                  f"{shown(spool.kept)}", file=sys.stderr)
        raise


def recover(output: str) -> int:
    """Save what a recording to ``output`` (or the spool ``output`` names) that did not end
    left in its spool, as ``output``'s format; the spool is removed once that is written."""
    target = _destination.recovery_target(output)
    ext = _usage(lambda: _spool.output_format(target))
    with _usage(lambda: _destination.Destination(target)) as dest:
        spool = _usage(lambda: _spool.Spool.recover(dest))
        try:
            _usage(lambda: _spool.check_dtype(ext, spool.data_dtype.base))
        except BaseException:
            spool.close()
            raise
        _save(spool, ext)
    print(f"{spool.count:,} writes recovered into {shown(target)}", file=sys.stderr)
    return EXIT_OK
