"""``seqshm watch``: a channel live with its update rate, as a table on a terminal or one JSON or
CSV line per update."""

from __future__ import annotations

import argparse
import csv
import json
import math
import stat
import sys
import time
from typing import Any, TextIO

import numpy as np
from rich import box
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

import seqshm
from seqshm._lifecycle import end_reason
from seqshm._lifecycle import writer_text as library_writer_text
from seqshm.cli._base import (
    CHANNEL_HELP,
    EXIT_OK,
    EXIT_USAGE,
    Failure,
    at_least_one,
    fstat,
    make_console,
    nonnegative,
    open_channel,
    positive,
    sleep_until,
    writer_text,
)
from seqshm.cli._format import (
    age_s,
    flat_names,
    flat_values,
    printable,
    rate,
    rate_text,
    record_grid,
    seconds_text,
    shown,
    to_json,
)
from seqshm.cli._spool import FormatUnavailable, check_shape

#: Values (scalars) a JSON or CSV line may hold: each write is one line, built in memory
#: (~100 bytes of Python objects per value), so a channel of 2^31 bytes would need hundreds of
#: gigabytes for one line. Past it, watch refuses the channel and says what else to use.
MAX_LINE_VALUES = 1_000_000
#: Payload bytes the table shows a summary of: each frame copies the payload (a snapshot).
MAX_TABLE_BYTES = 256 << 20


def check_size(reader: seqshm.Reader, fmt: str) -> None:
    """Refuse (Failure, exit 2) a channel too large to watch in ``fmt``, naming it and what to
    use instead; checked at the start and again when watch follows a restarted producer."""
    count = math.prod(reader.shape)
    if fmt == "table":
        size = count * reader.dtype.itemsize
        if size <= MAX_TABLE_BYTES:
            return
        what = f"{size:,} bytes a write: watch's table copies at most {MAX_TABLE_BYTES:,}"
    else:
        values = count * _values_per_element(reader.dtype)
        if values <= MAX_LINE_VALUES:
            return
        what = f"{values:,} values a write: watch writes at most {MAX_LINE_VALUES:,} a line"
    try:
        check_shape(reader.dtype, reader.shape)
        instead = f"record it (seqshm record {shown(reader.path)} -o FILE.npy), or read it "
    except FormatUnavailable:  # too large for a recording's rows too
        instead = "read it "
    raise Failure(f"{shown(reader.path)}: {what}; {instead}from Python (seqshm.open)",
                  EXIT_USAGE)


def _values_per_element(dt: np.dtype[Any]) -> int:
    """Scalars in one element of ``dt``, as flat_values() lists them (subarrays unrolled)."""
    if dt.names is None:
        return math.prod(dt.shape)
    total = 0
    for name in dt.names:
        sub: np.dtype[Any] = dt.fields[name][0]  # type: ignore[index]
        total += math.prod(sub.shape) * _values_per_element(sub.base)
    return total


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="CHANNEL", help=CHANNEL_HELP)
    p.add_argument("--interval", type=positive, default=0.5, metavar="S",
                   help="seconds between updates (default 0.5)")
    p.add_argument("--count", type=at_least_one, default=None, metavar="N",
                   help="stop after N updates (default: until Ctrl-C or the channel ends)")
    p.add_argument("--timeout", type=nonnegative, default=1.0, metavar="S",
                   help="how long a read waits for a consistent copy (default 1)")
    p.add_argument("--format", choices=("table", "jsonl", "csv"), default=None,
                   help="a live table (the default on a terminal), or one JSON or CSV line "
                        "per update (jsonl: the default otherwise)")


def run(args: argparse.Namespace) -> int:
    return watch(args.path, args.interval, args.count, args.timeout, args.format)


def _plain_summary(data: np.ndarray) -> str:
    flat = data.reshape(-1)
    if not flat.size:
        return "no elements"
    # no float64 copy of the payload (8 bytes a value of a 1-byte dtype): reductions in place
    numeric = np.abs(flat) if flat.dtype.kind == "c" else flat
    with np.errstate(all="ignore"):
        return (f"{flat.size} elements  min {float(numeric.min()):g}  "
                f"max {float(numeric.max()):g}  mean {float(numeric.mean(dtype=np.float64)):g}")


def line(text: str, style: str = "") -> Text:
    """One line of a live screen: cut with '…' at the width, never wrapped."""
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def watch_frame(reader: seqshm.Reader, snap: seqshm.Snapshot | None, rate_hz: float | None,
                state: seqshm.ChannelState, width: int, height: int,
                error: str | None = None) -> RenderableType:
    """One screen of ``seqshm watch``, built for a terminal ``width`` x ``height``."""
    gone = "" if state is seqshm.ChannelState.OPEN else f"  writer gone: {state.value}"
    age = seconds_text(age_s(reader.header["clock_id"], snap.timestamp_ns) if snap else None)
    seq = snap.seq if snap else reader.head
    status = line(f"seq {seq:,}  {rate_text(rate_hz)} writes/s  age {age}{gone}")
    if gone:
        status.stylize("red", len(status.plain) - len(gone))
    parts: list[RenderableType] = [
        line(f"{shown(reader.name)}  {shown(reader.path)}  {writer_text(reader)}"), status]
    if error is not None or snap is None:
        parts.append(line(f"no consistent read: {printable(str(error))}", style="red"))
        return Group(*parts)
    data = snap.data
    if data.dtype.names:
        header, rows, note = record_grid(data, width - 1, max(height - 7, 3))
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1))
        for title in header:  # Text: a field named "[/]" is a name, not markup
            table.add_column(Text(title), justify="right", no_wrap=True, overflow="ellipsis")
        for row in rows:
            table.add_row(*map(Text, row))  # Text: "[1,2]" is data, not markup
        parts.append(table)
        if note:
            parts.append(line(note))
    else:
        parts.append(line(_plain_summary(data)))
        parts.append(line(np.array2string(data.reshape(-1)[:256], separator=",",
                                           max_line_width=10**6, threshold=64)))
    return Group(*parts)


class _LineWriter:
    """JSON Lines or CSV records of ``seqshm watch``, one per update, flushed at once."""

    def __init__(self, fmt: str, reader: seqshm.Reader, out: TextIO) -> None:
        self.fmt, self.out = fmt, out
        self.csv = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        self.width = 0
        if self.csv:
            names = flat_names(reader.dtype, reader.shape)
            self.width = len(names)
            self.csv.writerow(["event", "path", "seq", "timestamp_ns", "age_s", "rate_hz",
                               "state", *names])
            out.flush()

    def emit(self, event: str, reader: seqshm.Reader, seq: int, timestamp_ns: int | None,
             rate_hz: float | None, state: seqshm.ChannelState, data: np.ndarray | None,
             reason: str | None = None) -> None:
        age = age_s(reader.header["clock_id"], timestamp_ns or 0)
        if self.csv is not None:
            values = flat_values(data) if data is not None else [""] * self.width
            self.csv.writerow([event, shown(reader.path), seq, timestamp_ns or "",
                               "" if age is None else f"{age:.6f}",
                               "" if rate_hz is None else f"{rate_hz:.3f}", state.value,
                               *values])
        else:
            record: dict[str, Any] = {
                "event": event, "path": reader.path, "seq": seq, "timestamp_ns": timestamp_ns,
                "age_s": age, "rate_hz": rate_hz, "state": state.value,
                "writer_pid": reader.header["writer_pid"] or None}
            if event == "ended":
                record["reason"] = reason
            else:
                record["data"] = None if data is None else to_json(data)
                record["error"] = reason
            self.out.write(json.dumps(record, allow_nan=False, ensure_ascii=True) + "\n")
        self.out.flush()


def _ended_reason(reader: seqshm.Reader, state: seqshm.ChannelState) -> str:
    """Why no more writes will come, in the words of the Reader's ChannelEnded (end_reason);
    watch reopens, so a replacement it does not move to says why it cannot."""
    h = reader.header
    no_follow = reader._no_follow if state is seqshm.ChannelState.REPLACED else None
    device = stat.S_ISCHR(fstat(reader).st_mode)
    return end_reason(state, library_writer_text(h["writer_pid"], h["writer_pidns"], device),
                      no_follow)


_ENDED = (seqshm.ChannelState.CLOSED, seqshm.ChannelState.WRITER_DIED)


def watch(path: str, interval: float, count: int | None, timeout: float,
          fmt: str | None = None) -> int:
    """Show a channel live until Ctrl-C or ``count`` updates: a table on a terminal, else one
    JSON or CSV line per update and a last one when the channel ends."""
    console = make_console()
    fmt = fmt or ("table" if console.is_terminal else "jsonl")
    # reopen: a producer that restarts (create(..., overwrite=True)) is followed, as tail -F
    with open_channel(path, timeout=timeout, reopen=True) as reader:
        check_size(reader, fmt)
        lines = _LineWriter(fmt, reader, sys.stdout) if fmt != "table" else None
        # a live table redraws in place on a terminal; asked for into a pipe, each frame is
        # printed after the last (a Live there showed only the final frame, unterminated)
        live = (Live(console=console, auto_refresh=False)
                if fmt == "table" and console.is_terminal else None)
        prev: tuple[float, int] | None = None
        updates = 0
        next_at = time.monotonic()
        state = seqshm.ChannelState.OPEN
        if live:
            live.start()
        try:
            while count is None or updates < count:
                before = reader.path, reader.header
                snap: seqshm.Snapshot | None
                error = None
                try:
                    snap = reader.read()
                except seqshm.ReadTimeout as e:
                    snap, error = None, e.reason
                if (reader.path, reader.header) != before:
                    prev = None  # followed a restarted producer: its seq starts again
                    check_size(reader, fmt)
                now = time.monotonic()
                seq = snap.seq if snap else reader.head
                hz = rate(prev, now, seq)
                prev = (now, seq)
                replaced = state is seqshm.ChannelState.REPLACED
                state = reader.state
                if fmt == "table":
                    frame = watch_frame(reader, snap, hz, state, console.width, console.height,
                                        error)
                    if live:
                        live.update(frame, refresh=True)
                    else:
                        console.print(frame)
                elif lines:
                    lines.emit("update", reader, seq, snap.timestamp_ns if snap else None, hz,
                               state, snap.data if snap else None, error)
                    # ended: no write will come; a replacement is followed at the next read
                    # (if it cannot be, REPLACED is seen twice)
                    if state in _ENDED or (state is seqshm.ChannelState.REPLACED and replaced):
                        lines.emit("ended", reader, seq, snap.timestamp_ns if snap else None,
                                   None, state, None, _ended_reason(reader, state))
                        return EXIT_OK
                updates += 1
                if count is None or updates < count:
                    next_at = max(next_at + interval, time.monotonic())
                    sleep_until(next_at)
        finally:
            if live:
                live.stop()
    return EXIT_OK
