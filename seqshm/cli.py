"""The ``seqshm`` command line: a live demo, channel info, and a live view of any channel."""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.process
import os
import signal
import sys
import time
from collections.abc import Sequence

import numpy as np
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

import seqshm
from seqshm import telemetry
from seqshm._lifecycle import process_start_time, writer_holds

DEMO_PATH = "/dev/shm/seqshm-demo-cpustat"
_BURST = 1000
_BAR = 20


def _console() -> Console:
    return Console(highlight=False)


def _rate(prev: tuple[float, int] | None, now: float, seq: int) -> float:
    if prev is None or now <= prev[0]:
        return float("nan")
    return (seq - prev[1]) / (now - prev[0])


def _age_ms(timestamp_ns: int) -> float:
    if not timestamp_ns:
        return float("nan")
    return (seqshm.monotonic_ns() - timestamp_ns) / 1e6


def _writer_text(reader: seqshm.Reader) -> str:
    """Who writes the channel and whether that process still lives (pid and start time, so a
    reused pid is not taken for the writer)."""
    h = reader.header
    if not h["writer_pid"]:
        return "kernel"
    start = process_start_time(h["writer_pid"])
    alive = start is not None and (not h["writer_start"] or start == h["writer_start"])
    return f"pid {h['writer_pid']} ({'running' if alive else 'exited'})"


def info_text(reader: seqshm.Reader) -> str:
    """What ``seqshm info`` prints: the layout as validated, and the channel's state now."""
    h = reader.header
    try:
        data = reader.read()
        writes, age = str(data.seq), f"{_age_ms(data.timestamp_ns):.1f} ms"
    except seqshm.ReadTimeout as e:
        writes, age = f"{reader.head} (newest slot stuck mid-write: {e.reason})", "-"
    lines = [
        f"path            {reader.path}",
        f"name            {h['name']}",
        f"abi version     {h['abi_version']}",
        f"dtype           {reader.dtype}",
        f"shape           {reader.shape}",
        f"payload         {h['payload_size']} bytes at offset {h['payload_offset']}",
        f"slots           {h['nr_slots']} (stride {h['slot_stride']} bytes)",
        f"region          {h['region_size']} bytes",
        f"clock id        {h['clock_id']}",
        f"writer          {_writer_text(reader)}",
        f"state           {reader.state.value}",
        f"writes          {writes}",
        f"last write age  {age}",
    ]
    if reader.dtype.fields:
        lines.append("fields          " + ", ".join(
            f"{name}:{spec[0]}@{spec[1]}" for name, spec in reader.dtype.fields.items()))
    return "\n".join(lines)


def _summary_table(reader: seqshm.Reader, data: np.ndarray, rate: float, rows: int,
                   state: seqshm.ChannelState) -> Table:
    gone = "" if state is seqshm.ChannelState.OPEN else f"  [red]writer gone: {state.value}[/]"
    table = Table(title=f"{reader.name} ({reader.path})  seq {reader.seq}  "
                        f"{rate:,.0f} writes/s  age {_age_ms(reader.timestamp_ns):.1f} ms{gone}")
    flat = data.reshape(-1) if data.ndim else data.reshape(1)
    if reader.dtype.names:
        table.add_column("#", justify="right")
        for name in reader.dtype.names:
            table.add_column(name, justify="right")
        for i, rec in enumerate(flat[:rows]):
            table.add_row(str(i), *(np.array2string(np.asarray(rec[n]), separator=",")
                                    for n in reader.dtype.names))
    else:
        for col in ("elements", "min", "max", "mean", "first values"):
            table.add_column(col, justify="right")
        numeric = flat.astype(np.float64) if flat.dtype.kind != "c" else np.abs(flat)
        table.add_row(str(flat.size), f"{numeric.min():g}", f"{numeric.max():g}",
                      f"{numeric.mean():g}", np.array2string(flat[:8], separator=","))
    if flat.size > rows and reader.dtype.names:
        table.caption = f"{flat.size - rows} more elements not shown"
    return table


def watch(path: str, interval: float, count: int | None, timeout: float) -> int:
    """Show a channel live until Ctrl-C or ``count`` updates; plain lines when not a tty."""
    console = _console()
    # follow: a producer that restarts (create(..., overwrite=True)) is followed, as tail -F
    with seqshm.open(path, timeout=timeout, reopen=True) as reader:
        prev: tuple[float, int] | None = None
        shown = 0
        live = Live(console=console, auto_refresh=False) if console.is_terminal else None
        try:
            if live:
                live.start()
            while count is None or shown < count:
                before = reader.path, reader.header
                data = reader.snapshot()
                if (reader.path, reader.header) != before:
                    prev = None  # followed a restarted producer: its seq starts again
                now = time.monotonic()
                rate = _rate(prev, now, reader.seq)
                prev = (now, reader.seq)
                table = _summary_table(reader, data, rate, rows=max(console.height - 8, 4),
                                       state=reader.state)
                if live:
                    live.update(table, refresh=True)
                else:
                    console.print(table)
                shown += 1
                if count is None or shown < count:
                    time.sleep(interval)
        except KeyboardInterrupt:
            pass
        finally:
            if live:
                live.stop()
    return 0


def _demo_table(reader: seqshm.Reader, busy: np.ndarray, sample: np.ndarray, rate: float,
                elapsed: float, read_ns: float) -> Table:
    stats = reader.stats
    table = Table(title=(f"seqshm demo: per-CPU load from /proc/stat through {reader.path}\n"
                         f"writer pid {reader.header['writer_pid']}  {rate:,.0f} writes/s  "
                         f"seq {reader.seq}  snapshot {read_ns:,.0f} ns  "
                         f"retries {stats.retries}/{stats.snapshots}  t={elapsed:.0f}s"))
    for col in ("cpu", "busy", "", "user s", "system s", "idle s", "iowait s"):
        table.add_column(col, justify="right" if col != "" else "left")
    for cpu in range(sample.shape[0]):
        if not sample[cpu]["online"]:
            continue
        frac = float(busy[cpu])
        bar = "" if np.isnan(frac) else "#" * int(round(frac * _BAR))
        table.add_row(
            str(cpu), "-" if np.isnan(frac) else f"{frac:6.1%}", f"[green]{bar:<{_BAR}}[/]",
            *(f"{sample[cpu][f] / 1e9:,.1f}"
              for f in ("user_ns", "system_ns", "idle_ns", "iowait_ns")))
    return table


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _open_written_by(path: str, writer: multiprocessing.process.BaseProcess,
                     console: Console) -> seqshm.Reader | None:
    """The channel at ``path`` once ``writer`` has created it (not one left by another)."""
    deadline = time.monotonic() + 30  # the child imports NumPy and seqshm first
    while True:
        try:
            reader = seqshm.open(path)
            if reader.header["writer_pid"] == writer.pid:
                return reader
            reader.close()
        except FileNotFoundError:
            pass
        if not writer.is_alive() or time.monotonic() > deadline:
            console.print(f"[red]the demo writer did not create {escape(path)}[/]")
            return None
        time.sleep(0.02)


def demo(path: str, rate_hz: float, duration: float, interval: float) -> int:
    """Start a writer process publishing host telemetry and show it live from a reader."""
    console = _console()
    if os.path.lexists(path):
        # A channel left by a demo that was killed: remove it, unless a live writer holds it.
        if writer_holds(path):
            console.print(f"[red]another writer is publishing {escape(path)}: "
                          "pass --path to run a second demo[/]")
            return 1
        os.unlink(path)
    ctx = multiprocessing.get_context("spawn")
    # A shared flag, not an Event: a child killed while inside an Event's lock would make
    # the parent's set() wait forever.
    stop = ctx.RawValue("b", 0)
    writer = ctx.Process(target=telemetry.publish_cpustat, args=(path, rate_hz),
                         kwargs={"stop": stop}, name="seqshm-demo-writer", daemon=True)
    writer.start()
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        reader = _open_written_by(path, writer, console)
        if reader is None:
            return 1
        with reader:
            first = reader.snapshot()
            prev_sample, prev = first, (time.monotonic(), reader.seq)
            start = time.monotonic()
            out = np.empty_like(first)
            live = Live(console=console, auto_refresh=False) if console.is_terminal else None
            if live:
                live.start()
            try:
                while duration <= 0 or time.monotonic() - start < duration:
                    time.sleep(interval)
                    # A burst of snapshots: the cost of one warm read, not of a cache miss.
                    t0 = time.perf_counter_ns()
                    for _ in range(_BURST):
                        reader.snapshot(out=out)
                    read_ns = (time.perf_counter_ns() - t0) / _BURST
                    now = time.monotonic()
                    rate = _rate(prev, now, reader.seq)
                    prev = (now, reader.seq)
                    busy = telemetry.cpu_busy_fraction(prev_sample, out)
                    prev_sample = out.copy()
                    table = _demo_table(reader, busy, out, rate, now - start, read_ns)
                    if live:
                        live.update(table, refresh=True)
                    else:
                        console.print(table)
            except KeyboardInterrupt:
                pass
            finally:
                if live:
                    live.stop()
            console.print(f"read {reader.stats.snapshots} consistent snapshots "
                          f"({reader.stats.retries} retries) of {reader.seq} writes")
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stop.value = 1
        writer.join(5)
        if writer.is_alive():
            writer.terminate()
            writer.join(5)
    return 0 if writer.exitcode == 0 else 1


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not > 0")
    return value


def _nonnegative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqshm", description="Lock-free snapshots of live data shared by a seqlock.")
    parser.add_argument("--version", action="version", version=seqshm.__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="publish this host's per-CPU times and watch them live")
    p.add_argument("--rate", type=_positive, default=100.0, metavar="HZ",
                   help="writes per second of the demo writer (default 100)")
    p.add_argument("--duration", type=_nonnegative, default=10.0, metavar="S",
                   help="seconds to run, 0 for until Ctrl-C (default 10)")
    p.add_argument("--interval", type=_positive, default=0.5, metavar="S",
                   help="seconds between screen updates (default 0.5)")
    p.add_argument("--path", default=DEMO_PATH, help=f"channel file (default {DEMO_PATH})")

    p = sub.add_parser("info", help="print a channel's layout and state")
    p.add_argument("path", help="channel file, device, or bare name (/dev/seqshm, /dev/shm)")

    p = sub.add_parser("watch", help="show a channel live with its update rate")
    p.add_argument("path", help="channel file, device, or bare name (/dev/seqshm, /dev/shm)")
    p.add_argument("--interval", type=_positive, default=0.5, metavar="S")
    p.add_argument("--count", type=int, default=None, metavar="N",
                   help="stop after N updates (default: until Ctrl-C)")
    p.add_argument("--timeout", type=_nonnegative, default=1.0, metavar="S",
                   help="how long a read waits for a consistent copy (default 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = _console()
    try:
        if args.command == "demo":
            return demo(args.path, args.rate, args.duration, args.interval)
        if args.command == "info":
            with seqshm.open(args.path) as reader:
                console.print(info_text(reader))
            return 0
        return watch(args.path, args.interval, args.count, args.timeout)
    except (OSError, seqshm.SeqshmError) as e:
        console.print(f"[red]seqshm: {escape(str(e))}[/]")
        return 2


if __name__ == "__main__":
    sys.exit(main())
