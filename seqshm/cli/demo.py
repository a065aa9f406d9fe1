"""``seqshm demo``: a writer process publishes this host's per-CPU times (/proc/stat) as a
cpustat channel, and a reader shows them live with the cost of a snapshot."""

from __future__ import annotations

import argparse
import math
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import signal
import time

import numpy as np
from rich import box
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table

import seqshm
from seqshm import _cpustat
from seqshm._files import open_dir
from seqshm._lifecycle import lock_is_free, same_file, writer_holds
from seqshm.cli._base import (
    EXIT_OK,
    EXIT_USAGE,
    Failure,
    fstat,
    make_console,
    nonnegative,
    positive,
    sleep_until,
)
from seqshm.cli._format import rate, rate_text, shown
from seqshm.cli._procstat import cpu_busy_fraction, publish_cpustat
from seqshm.cli.watch import line

DEMO_PATH = "/dev/shm/seqshm-demo-cpustat"
#: Snapshots taken back to back to time one (the cost of a warm read, not of a cache miss).
_BURST = 1000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rate", type=positive, default=100.0, metavar="HZ",
                   help="writes per second of the demo writer (default 100)")
    p.add_argument("--duration", type=nonnegative, default=10.0, metavar="S",
                   help="seconds to run, 0 for until Ctrl-C (default 10)")
    p.add_argument("--interval", type=positive, default=0.5, metavar="S",
                   help="seconds between screen updates (default 0.5)")
    p.add_argument("--path", default=DEMO_PATH, help=f"channel file (default {DEMO_PATH})")


def run(args: argparse.Namespace) -> int:
    return demo(args.path, args.rate, args.duration, args.interval)


def _demo_table(reader: seqshm.Reader, busy: np.ndarray, sample: np.ndarray,
                rate_hz: float | None, elapsed: float, read_ns: float,
                width: int) -> RenderableType:
    stats = reader.stats
    title = [
        line(f"seqshm demo: per-CPU load from /proc/stat through {shown(reader.path)}"),
        line(f"writer pid {reader.header['writer_pid']}  {rate_text(rate_hz)} writes/s  "
              f"seq {reader.seq}  snapshot {read_ns:,.0f} ns  "
              f"retries {stats.retries}/{stats.snapshots}  t={elapsed:.0f}s"),
    ]
    fields = ("user_ns", "system_ns", "idle_ns", "iowait_ns")
    cpus = [cpu for cpu in range(sample.shape[0]) if sample[cpu]["online"]]
    fracs = [float(busy[cpu]) for cpu in cpus]
    rows = [[str(cpu), "-" if math.isnan(frac) else f"{frac:6.1%}",
             *(f"{sample[cpu][f] / 1e9:,.1f}" for f in fields)]
            for cpu, frac in zip(cpus, fracs, strict=True)]
    header = ["cpu", "busy", "user s", "system s", "idle s", "iowait s"]
    used = sum(max([len(h)] + [len(r[c]) for r in rows]) + 2 for c, h in enumerate(header))
    bar_width = max(0, min(20, width - used - 3))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
    for col in header[:2]:
        table.add_column(col, justify="right", no_wrap=True)
    if bar_width:
        table.add_column("", no_wrap=True, width=bar_width)
    for col in header[2:]:
        table.add_column(col, justify="right", no_wrap=True)
    for row, frac in zip(rows, fracs, strict=True):
        bar = "" if math.isnan(frac) else "#" * int(round(frac * bar_width))
        table.add_row(*row[:2], *([f"[green]{bar}[/]"] if bar_width else []), *row[2:])
    return Group(*title, table)


def _demo_writer(path: str, rate_hz: float,
                 parent: multiprocessing.connection.Connection) -> None:
    """The demo's writer process: publishes this host's per-CPU times at ``rate_hz`` until
    ``parent`` (the read end of a pipe whose only write end the parent holds) becomes
    readable: the parent closed it, or died, even by SIGKILL, since the kernel closes a dead
    process's files. Removes its channel on the way out (also on SIGTERM and SIGHUP)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    publish_cpustat(path, rate_hz, stop=parent)


def _open_written_by(path: str, writer: multiprocessing.process.BaseProcess
                     ) -> seqshm.Reader:
    """The channel at ``path`` once ``writer`` has created it (not one left by another)."""
    deadline = time.monotonic() + 30  # the child imports NumPy and seqshm first
    while True:
        try:
            reader = seqshm.open(path)
            if reader.header["writer_pid"] == writer.pid:
                return reader
            reader.close()
        except (FileNotFoundError, seqshm.FormatError):
            pass
        if not writer.is_alive() or time.monotonic() > deadline:
            raise Failure(f"the demo writer did not create {shown(path)}")
        time.sleep(0.02)


def _unlink_if_still(path: str, st: os.stat_result) -> None:
    """Remove the file at ``path`` if it is still the one ``st`` describes, looked up in its
    directory as a reader looks (never through another user's link): what is removed is the
    file that was checked, whatever was swapped in at its name or above it since."""
    d, name = open_dir(path)
    try:
        if same_file(os.stat(name, dir_fd=d.fd, follow_symlinks=False), st):
            os.unlink(name, dir_fd=d.fd)
    finally:
        d.close()


def _remove_if_left_by(path: str, pid: int | None) -> None:
    """Remove the channel at ``path`` if process ``pid`` created it and no writer holds it."""
    try:
        with seqshm.open(path) as r:
            fd = r._dup()
            ours = r.header["writer_pid"] == pid
        try:
            if ours and lock_is_free(fd):
                _unlink_if_still(path, os.fstat(fd))
        finally:
            os.close(fd)
    except (OSError, seqshm.SeqshmError):
        pass


def _left_by_a_demo(path: str) -> os.stat_result | None:
    """The file at ``path`` if it is a channel of the demo's cpustat record (a file it may
    replace), else None."""
    try:
        with seqshm.open(path, timeout=0.1) as r:
            return fstat(r) if r.dtype == _cpustat.CPUSTAT_DTYPE else None
    except (OSError, seqshm.SeqshmError):
        return None


def demo(path: str, rate_hz: float, duration: float, interval: float) -> int:
    """Start a writer process publishing host telemetry and show it live from a reader."""
    console = make_console()
    if os.path.lexists(path):
        # A channel left by a demo that was killed: remove it, unless a live writer holds it.
        # Anything else there is not ours to remove (--path ~/notes.txt must not delete it).
        if writer_holds(path):
            raise Failure(f"another writer is publishing {shown(path)}: pass --path to run a "
                          "second demo")
        left = _left_by_a_demo(path)
        if left is None:
            raise Failure(f"{path} exists and is not a channel an earlier demo left: pass "
                          "another --path", EXIT_USAGE)
        _unlink_if_still(path, left)
    ctx = multiprocessing.get_context("spawn")
    # The child stops when this pipe's write end closes: when we close it, or die, however.
    stop_r, stop_w = ctx.Pipe(duplex=False)
    writer = ctx.Process(target=_demo_writer, args=(path, rate_hz, stop_r),
                         name="seqshm-demo-writer", daemon=True)
    writer.start()
    stop_r.close()
    try:
        with _open_written_by(path, writer) as reader:
            first = reader.snapshot()
            prev_sample, prev = first, (time.monotonic(), reader.seq)
            start = time.monotonic()
            out = np.empty_like(first)
            live = Live(console=console, auto_refresh=False) if console.is_terminal else None
            if live:
                live.start()
            try:
                while duration <= 0 or time.monotonic() - start < duration:
                    # an interval longer than the time left ends at the duration
                    sleep_until(time.monotonic() + interval if duration <= 0
                                 else min(time.monotonic() + interval, start + duration))
                    # A burst of snapshots: the cost of one warm read, not of a cache miss.
                    t0 = time.perf_counter_ns()
                    for _ in range(_BURST):
                        reader.snapshot(out=out)
                    read_ns = (time.perf_counter_ns() - t0) / _BURST
                    now = time.monotonic()
                    hz = rate(prev, now, reader.seq)
                    prev = (now, reader.seq)
                    busy = cpu_busy_fraction(prev_sample, out)
                    prev_sample = out.copy()
                    table = _demo_table(reader, busy, out, hz, now - start, read_ns,
                                        console.width)
                    if live:
                        live.update(table, refresh=True)
                    else:
                        console.print(table)
            finally:
                if live:
                    live.stop()
            console.print(f"read {reader.stats.snapshots} consistent snapshots "
                          f"({reader.stats.retries} retries) of {reader.seq} writes")
    finally:
        stop_w.close()  # the writer sees the pipe close and stops
        writer.join(5)
        if writer.is_alive():
            writer.kill()
            writer.join(5)
        _remove_if_left_by(path, writer.pid)
    if writer.exitcode != 0:
        raise Failure(f"the demo writer failed (exit status {writer.exitcode})")
    return EXIT_OK
