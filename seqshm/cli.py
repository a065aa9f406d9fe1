"""The ``seqshm`` command line: list channels, show one's layout and state, watch it live,
record every write to a file, serve channels to Prometheus, and a live demo."""

from __future__ import annotations

import argparse
import csv
import errno
import grp
import json
import math
import mmap
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import pwd
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

import numpy as np
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

import seqshm
from seqshm import _cli_record, _core, _cpustat, telemetry
from seqshm._api import SEARCH_DIRS, channel_paths
from seqshm._cli_format import (
    age_s,
    clock_name,
    dtype_text,
    fields_json,
    fields_text,
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
from seqshm._files import open_dir
from seqshm._lifecycle import lock_is_free, process_start_time, same_file, writer_holds

DEMO_PATH = "/dev/shm/seqshm-demo-cpustat"
_BURST = 1000
#: How long ``list`` watches the heads to tell each channel's write rate.
LIST_RATE_WINDOW_S = 0.1

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EPILOG = """\
A channel is a path (a /dev/seqshm device or a file) or a bare NAME, looked up in /dev/seqshm,
then /dev/shm (never in the current directory: write ./NAME for a file here).

exit status:
  0    success (watch and record: also when the channel ended)
  1    runtime error: a read timed out (a writer stuck mid-write), another writer holds
       the channel, an I/O error
  2    usage error, no such channel, permission denied, not a seqshm channel
  130  interrupted by Ctrl-C (record still writes what it recorded); 128+N on signal N
       (SIGTERM 143, SIGHUP 129, 141 when the output pipe closed)
"""


class Failure(Exception):
    """An error the command line reports as one line on stderr, with its exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP: stop as on Ctrl-C (every cleanup runs), exit 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_signalled(signum: int, frame: object) -> None:
    raise Signalled(signum)


def _console() -> Console:
    # no emoji: a channel named ":fire:" is shown as written (markup: channel text is given
    # to rich as Text, or with markup=False)
    return Console(highlight=False, emoji=False)


# -- finding channels ----------------------------------------------------------------------------


def resolve(name: str) -> str:
    """The file a channel argument names (seqshm.resolve: never the current directory)."""
    try:
        return seqshm.resolve(name)
    except FileNotFoundError as e:
        raise Failure(e.strerror or str(e), EXIT_USAGE) from None


def _open(name: str, **kwargs: Any) -> seqshm.Reader:
    return seqshm.open(resolve(name), **kwargs)


# -- what a channel is and how it is doing -------------------------------------------------------


def _writer_alive(state: seqshm.ChannelState) -> bool:
    return state in (seqshm.ChannelState.OPEN, seqshm.ChannelState.REMOVED)


def _writer_text(reader: seqshm.Reader) -> str:
    """Who writes the channel and whether that process still lives (pid and start time, so a
    reused pid is not taken for the writer)."""
    h = reader.header
    if not h["writer_pid"]:
        return "kernel"
    start = process_start_time(h["writer_pid"])
    alive = start is not None and (not h["writer_start"] or start == h["writer_start"])
    return f"pid {h['writer_pid']} ({'running' if alive else 'exited'})"


def _slot_words(reader: seqshm.Reader) -> np.ndarray:
    """Each slot's (sequence count, write number, timestamp_ns) as the header area holds them
    now, read without the seqlock (for display: an odd count is a slot mid-write)."""
    h = reader.header
    end = _core.SLOTS_OFFSET + 64 * h["nr_slots"]
    fd = reader._dup()  # the file the reader checked, not what has its name now
    try:
        if stat.S_ISCHR(os.fstat(fd).st_mode):
            length = -(-end // mmap.PAGESIZE) * mmap.PAGESIZE
            with mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ) as m:
                raw = m[:end]
        else:
            raw = os.pread(fd, end, 0)  # not a mapping: a file that shrinks gives no SIGBUS
    finally:
        os.close(fd)
    if len(raw) < end:
        raise seqshm.FileTruncated("the file shrank while it was read", reader.path)
    words = np.frombuffer(raw, np.uint64, offset=_core.SLOTS_OFFSET).reshape(-1, 8)
    out: np.ndarray = words[:, :3].copy()
    return out


def info_json(reader: seqshm.Reader) -> dict[str, Any]:
    """What ``seqshm info --json`` prints: the layout as validated, and the channel's state."""
    h = reader.header
    error = None
    try:
        snap = reader.read()
        writes, timestamp = snap.seq, snap.timestamp_ns
    except seqshm.ReadTimeout as e:
        writes, timestamp, error = reader.head, 0, e.reason
    state = reader.state
    words = _slot_words(reader)
    mid = [int(i) for i in np.flatnonzero(words[:, 0] & 1)]
    age = age_s(h["clock_id"], timestamp)
    return {
        "path": reader.path,
        "name": h["name"],
        "abi_version": h["abi_version"],
        "dtype": dtype_text(reader.dtype, str),  # raw: json.dumps escapes it
        "descr": np.lib.format.dtype_to_descr(reader.dtype),
        "itemsize": reader.dtype.itemsize,
        "fields": fields_json(reader.dtype),
        "shape": list(reader.shape),
        "payload_size": h["payload_size"],
        "payload_offset": h["payload_offset"],
        "nr_slots": h["nr_slots"],
        "slot_stride": h["slot_stride"],
        "region_size": h["region_size"],
        "clock_id": h["clock_id"],
        "clock": clock_name(h["clock_id"]),
        "writer_pid": h["writer_pid"] or None,
        "writer_start": h["writer_start"] or None,
        "writer_alive": _writer_alive(state),
        "state": state.value,
        "head": reader.head,
        "writes": writes,
        "timestamp_ns": timestamp or None,
        "age_s": age,
        "mid_write_slots": mid,
        "stuck": error is not None or (bool(mid) and not _writer_alive(state)),
        "read_error": error,
    }


def info_text(reader: seqshm.Reader) -> str:
    """What ``seqshm info`` prints: the layout as validated, and the channel's state now (every
    name in it escaped: shown())."""
    j = info_json(reader)
    dt = reader.dtype
    lines = [
        f"path            {shown(j['path'])}",
        f"name            {shown(j['name'])}",
        f"abi version     {j['abi_version']}",
        "dtype           " + (f"record of {len(dt.names)} fields, {dt.itemsize} bytes"
                              if dt.names else dtype_text(dt)),
        f"shape           {reader.shape}",
        f"payload         {j['payload_size']} bytes at offset {j['payload_offset']}",
        f"slots           {j['nr_slots']} (stride {j['slot_stride']} bytes)",
        f"region          {j['region_size']} bytes",
        f"clock           {j['clock']} ({j['clock_id']})",
        f"writer          {_writer_text(reader)}",
        f"state           {j['state']}",
        f"writes          {j['writes']}",
        f"last write age  {seconds_text(j['age_s'])}",
    ]
    if dt.names:
        lines.append(f"fields          {fields_text(dt)}")
    for slot in j["mid_write_slots"]:
        pending = j["head"] + 1
        which = f" (write {pending})" if pending % j["nr_slots"] == slot else ""
        what = "stuck mid-write" if j["stuck"] else "mid-write"
        lines.append(f"slot {slot:<10} {what}{which}")
    if j["read_error"]:
        lines.append(f"read            {printable(j['read_error'])}")
    return "\n".join(lines)


# -- list ----------------------------------------------------------------------------------------


def _probe(path: str) -> seqshm.Reader | str | None:
    """A reader of the channel at ``path`` (one of channel_paths()), the reason it cannot be
    read, or None if it is gone meanwhile."""
    try:
        return seqshm.open(path, timeout=0.1)
    except seqshm.SeqshmError as e:
        return e.reason
    except FileNotFoundError:
        return None  # gone meanwhile
    except OSError as e:
        return e.strerror or str(e)


def _fstat(reader: seqshm.Reader) -> os.stat_result:
    """The stat of the file ``reader`` has open (not of its path: another user's file may be
    gone, or another one, by now)."""
    fd = reader._dup()
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _heads() -> dict[str, tuple[int, int, int]]:
    """Each readable channel's (st_dev, st_ino, head) now, each reader closed at once."""
    heads = {}
    for path in channel_paths():
        probe = _probe(path)
        if isinstance(probe, seqshm.Reader):
            with probe as r:
                st = _fstat(r)
                heads[path] = (st.st_dev, st.st_ino, r.head)
    return heads


def list_channels(with_rate: bool = True) -> list[dict[str, Any]]:
    """Every channel in the search directories, as ``seqshm list --json`` prints them.

    One channel is open at a time (a thousand channels must not take a thousand file
    descriptors): the rate comes from each channel's head read in a first pass and again,
    LIST_RATE_WINDOW_S later, in the second, if the file is still the same one."""
    heads: dict[str, tuple[int, int, int]] = {}
    t0 = time.monotonic()
    if with_rate:
        heads = _heads()
        t0 = time.monotonic()
        if heads:
            time.sleep(LIST_RATE_WINDOW_S)
    rows = []
    for path in channel_paths():
        probe = _probe(path)
        if probe is None:
            continue
        row: dict[str, Any] = dict.fromkeys(
            ("path", "name", "channel", "dtype", "shape", "nr_slots", "writer_pid",
             "writer_alive", "state", "writes", "rate_hz", "age_s", "stuck", "error"))
        row["path"], row["name"] = path, os.path.basename(path)
        if isinstance(probe, str):
            row["error"] = probe
            rows.append(row)
            continue
        with probe as r:
            head = r.head
            st = _fstat(r)
            before = heads.get(path)
            if with_rate and before and before[:2] == (st.st_dev, st.st_ino):
                row["rate_hz"] = rate((t0, before[2]), time.monotonic(), head)
            try:
                try:
                    timestamp, row["stuck"] = r.read().timestamp_ns, False
                except seqshm.ReadTimeout:
                    timestamp, row["stuck"] = 0, True
                state = r.state
                row.update(channel=r.name, dtype=dtype_text(r.dtype, str), shape=list(r.shape),
                           nr_slots=r.nr_slots, writer_pid=r.header["writer_pid"] or None,
                           writer_alive=_writer_alive(state), state=state.value, writes=head,
                           age_s=age_s(r.header["clock_id"], timestamp))
            except seqshm.SeqshmError as e:  # damaged past its header: reported, not fatal
                row["error"] = e.reason
        rows.append(row)
    return rows


def list_text(rows: list[dict[str, Any]], width: int | None = None) -> str:
    """The table ``seqshm list`` prints; each line cut to ``width`` if given. Paths are shown
    escaped (shown()), and any text from a channel has nothing a terminal acts on."""
    header = ["PATH", "SHAPE", "SLOTS", "WRITER", "ALIVE", "STATE", "WRITES/S", "AGE", "DTYPE"]
    table = [header]
    for r in rows:
        if r["error"]:
            table.append([shown(r["path"])] + ["-"] * 7
                         + [f"(unreadable: {printable(r['error'])})"])
            continue
        table.append([
            shown(r["path"]), "(" + ",".join(map(str, r["shape"])) + ("," if len(r["shape"]) == 1
                                                               else "") + ")",
            str(r["nr_slots"]), f"pid {r['writer_pid']}" if r["writer_pid"] else "kernel",
            "yes" if r["writer_alive"] else "no", r["state"] + (", stuck" if r["stuck"] else ""),
            rate_text(r["rate_hz"]), seconds_text(r["age_s"]), printable(r["dtype"])])
    widths = [max(len(row[c]) for row in table) for c in range(len(header) - 1)]
    if width is not None:
        # a terminal: the PATH column gives up what the row lacks (down to 10, its start
        # elided: the name stays), then STATE (down to 8, its end elided: "writer-died,
        # stuck" of another channel must not push WRITES/S and AGE off the screen), then
        # the DTYPE, last, is cut with '…'
        for c, least, keep_end in ((0, 10, True), (5, 8, False)):
            over = sum(widths) + 2 * len(widths) + len("DTYPE") - width
            if over <= 0:
                break
            widths[c] = max(least, widths[c] - over)
            for row in table[1:]:
                if len(row[c]) > widths[c]:
                    row[c] = ("…" + row[c][len(row[c]) - widths[c] + 1 :] if keep_end
                              else row[c][: widths[c] - 1] + "…")
    right = {1, 2, 6, 7}
    text = "\n".join(
        "  ".join([(cell.rjust(w) if c in right else cell.ljust(w))
                   for c, (cell, w) in enumerate(zip(row, widths, strict=False))] + [row[-1]])
        for row in table)
    if width is None:
        return text
    return "\n".join(line if len(line) <= width else line[: max(width - 1, 0)] + "…"
                     for line in text.split("\n"))


# -- watch ---------------------------------------------------------------------------------------


def _plain_summary(data: np.ndarray) -> str:
    flat = data.reshape(-1)
    if not flat.size:
        return "no elements"
    numeric = np.abs(flat) if flat.dtype.kind == "c" else flat.astype(np.float64)
    with np.errstate(all="ignore"):
        return (f"{flat.size} elements  min {numeric.min():g}  max {numeric.max():g}  "
                f"mean {numeric.mean():g}")


def _line(text: str, style: str = "") -> Text:
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def watch_frame(reader: seqshm.Reader, snap: seqshm.Snapshot | None, rate_hz: float | None,
                state: seqshm.ChannelState, width: int, height: int,
                error: str | None = None) -> RenderableType:
    """One screen of ``seqshm watch``, built for a terminal ``width`` x ``height``."""
    gone = "" if state is seqshm.ChannelState.OPEN else f"  writer gone: {state.value}"
    age = seconds_text(age_s(reader.header["clock_id"], snap.timestamp_ns) if snap else None)
    seq = snap.seq if snap else reader.head
    status = _line(f"seq {seq:,}  {rate_text(rate_hz)} writes/s  age {age}{gone}")
    if gone:
        status.stylize("red", len(status.plain) - len(gone))
    parts: list[RenderableType] = [
        _line(f"{shown(reader.name)}  {shown(reader.path)}  {_writer_text(reader)}"), status]
    if error is not None or snap is None:
        parts.append(_line(f"no consistent read: {printable(str(error))}", style="red"))
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
            parts.append(_line(note))
    else:
        parts.append(_line(_plain_summary(data)))
        parts.append(_line(np.array2string(data.reshape(-1)[:256], separator=",",
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
    return {
        seqshm.ChannelState.CLOSED: "the writer closed the channel",
        seqshm.ChannelState.WRITER_DIED: "the writer process ended without closing it",
        seqshm.ChannelState.REPLACED: "a channel of another dtype or shape replaced it",
        seqshm.ChannelState.REMOVED: "the channel's file was removed",
    }.get(state, state.value)


_ENDED = (seqshm.ChannelState.CLOSED, seqshm.ChannelState.WRITER_DIED)


def watch(path: str, interval: float, count: int | None, timeout: float,
          fmt: str | None = None) -> int:
    """Show a channel live until Ctrl-C or ``count`` updates: a table on a terminal, else one
    JSON or CSV line per update and a last one when the channel ends."""
    console = _console()
    fmt = fmt or ("table" if console.is_terminal else "jsonl")
    # reopen: a producer that restarts (create(..., overwrite=True)) is followed, as tail -F
    with _open(path, timeout=timeout, reopen=True) as reader:
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
                    telemetry.sleep_until(next_at)
        finally:
            if live:
                live.stop()
    return EXIT_OK


# -- record --------------------------------------------------------------------------------------


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


def _usage(call: Callable[[], Any]) -> Any:
    """``call()``, its refusals of the file asked for turned into usage errors (exit 2)."""
    try:
        return call()
    except (_cli_record.FormatUnavailable, _cli_record.DestinationUnwritable) as e:
        raise Failure(str(e), EXIT_USAGE) from None


def record(path: str, output: str, count: int | None, duration: float | None,
           timeout: float) -> int:
    """Record every write of a channel (Reader.follow()) to ``output`` until ``count``
    writes, ``duration`` seconds, the channel's end or Ctrl-C; the file is written in every
    case. Each write goes to the spool beside ``output`` (``.FILE.recording``, a .npy) as it
    comes, so memory does not grow with the recording and a recording killed outright leaves
    what reached the disk (``record --recover``); a full disk stops the recording, saves what
    the spool holds and exits 1 saying so."""
    ext = _usage(lambda: _cli_record.output_format(output))
    err = Console(stderr=True, highlight=False, emoji=False)
    with _usage(lambda: _cli_record.Destination(output)) as dest:
        _usage(dest.check)
        with _open(path, timeout=timeout) as reader:
            _usage(lambda: _cli_record.check_dtype(ext, reader.dtype))
            try:
                spool = _usage(lambda: _cli_record.Spool.create(dest, reader.dtype,
                                                                reader.shape))
            except _cli_record.RecordingStopped as e:
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


def _record_into(spool: _cli_record.Spool, ext: str, reader: seqshm.Reader, err: Console,
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
    except _cli_record.RecordingStopped:
        pass  # spool.stopped says why, after saving
    except BaseException:
        _save(spool, ext)  # Ctrl-C, SIGTERM: what was recorded is saved, then it goes on
        raise
    return lost


def _save(spool: _cli_record.Spool, ext: str) -> None:
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
    target = _cli_record.recovery_target(output)
    ext = _usage(lambda: _cli_record.output_format(target))
    with _usage(lambda: _cli_record.Destination(target)) as dest:
        spool = _usage(lambda: _cli_record.Spool.recover(dest))
        try:
            _usage(lambda: _cli_record.check_dtype(ext, spool.data_dtype.base))
        except BaseException:
            spool.close()
            raise
        _save(spool, ext)
    print(f"{spool.count:,} writes recovered into {shown(target)}", file=sys.stderr)
    return EXIT_OK


# -- demo ----------------------------------------------------------------------------------------


def _demo_table(reader: seqshm.Reader, busy: np.ndarray, sample: np.ndarray,
                rate_hz: float | None, elapsed: float, read_ns: float,
                width: int) -> RenderableType:
    stats = reader.stats
    title = [
        _line(f"seqshm demo: per-CPU load from /proc/stat through {shown(reader.path)}"),
        _line(f"writer pid {reader.header['writer_pid']}  {rate_text(rate_hz)} writes/s  "
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
    process's files. Removes its channel on the way out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_signalled)
    sample = np.zeros(telemetry.possible_cpus(), _cpustat.CPUSTAT_DTYPE)
    period = 1.0 / rate_hz
    try:
        with seqshm.create(path, _cpustat.CPUSTAT_DTYPE, sample.shape,
                           nr_slots=_cpustat.CPUSTAT_SLOTS, name="cpustat",
                           overwrite=True) as writer:
            try:
                next_at = checked = time.monotonic()
                while True:
                    telemetry.read_cpustat(sample)
                    writer.write(sample)
                    next_at += period
                    now = time.monotonic()
                    if next_at > now:
                        # wakes at once when the parent goes; a period past what poll()
                        # takes (--rate 1e-300) is waited in pieces
                        while (left := next_at - time.monotonic()) > 0:
                            if parent.poll(min(left, telemetry.MAX_SLEEP_S)):
                                return
                    else:
                        next_at = now  # fell behind: do not burst to catch up
                        if now - checked > 0.01:
                            checked = now
                            if parent.poll(0):
                                break
            finally:
                writer.close(unlink=True)
    except KeyboardInterrupt:
        pass


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
            return _fstat(r) if r.dtype == _cpustat.CPUSTAT_DTYPE else None
    except (OSError, seqshm.SeqshmError):
        return None


def demo(path: str, rate_hz: float, duration: float, interval: float) -> int:
    """Start a writer process publishing host telemetry and show it live from a reader."""
    console = _console()
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
                    telemetry.sleep_until(time.monotonic() + interval if duration <= 0
                                 else min(time.monotonic() + interval, start + duration))
                    # A burst of snapshots: the cost of one warm read, not of a cache miss.
                    t0 = time.perf_counter_ns()
                    for _ in range(_BURST):
                        reader.snapshot(out=out)
                    read_ns = (time.perf_counter_ns() - t0) / _BURST
                    now = time.monotonic()
                    hz = rate(prev, now, reader.seq)
                    prev = (now, reader.seq)
                    busy = telemetry.cpu_busy_fraction(prev_sample, out)
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


# -- export --------------------------------------------------------------------------------------

#: seqshm.export.DEFAULT_LISTEN, written here too so that the parser needs no prometheus_client.
EXPORT_LISTEN = "127.0.0.1:9464"


def export(patterns: list[str], listen: str, sum_over: list[str], timeout: float,
           once: bool, openmetrics: bool, web_config: str | None = None) -> int:
    """Serve the channels ``patterns`` name as Prometheus metrics at ``listen`` until Ctrl-C or
    SIGTERM (``once``: print one scrape to stdout and exit; ``web_config``: TLS and basic auth
    from an exporter-toolkit web configuration file)."""
    if openmetrics and not once:
        raise Failure("--openmetrics goes with --once (the server answers OpenMetrics to a "
                      "scraper that asks for it)", EXIT_USAGE)
    try:
        from seqshm import export as exp
    except ImportError as e:
        raise Failure(str(e), EXIT_USAGE) from None
    exp.raise_fd_limit()
    try:
        config = exp.load_web_config(web_config) if web_config and not once else None
        collector = exp.SeqshmCollector(patterns, sum_over=sum_over, timeout=timeout)
    except exp.ExportError as e:
        raise Failure(str(e), EXIT_USAGE) from None
    try:
        registry = exp.registry_of(collector)
        if once:
            sys.stdout.buffer.write(exp.exposition(registry, openmetrics))
            sys.stdout.flush()
            unread = sum(len(p) for p in collector.metrics.unread.values())
            if unread:  # the others were printed; the log said which and why
                raise Failure(f"{unread} channel{'s' if unread != 1 else ''} could not be "
                              f"read ({', '.join(sorted(collector.metrics.unread))})")
            return EXIT_OK
        try:
            server, thread = exp.serve(registry, listen, config)
        except exp.ExportError as e:
            raise Failure(str(e)) from None
        try:
            host, port = str(server.server_address[0]), server.server_address[1]
            shown = f"[{host}]" if ":" in host else host
            paths = collector.metrics.paths()
            scheme = "https" if config and config.ssl_context else "http"
            print(f"seqshm: serving {len(paths)} channel{'s' if len(paths) != 1 else ''} at "
                  f"{scheme}://{shown}:{port}/metrics"
                  + (" (basic auth)" if config and config.auth else ""),
                  file=sys.stderr, flush=True)
            # The server runs in its thread; this one waits for Ctrl-C, SIGTERM or SIGHUP,
            # which main() turns into exit status 130, 143 and 129.
            threading.Event().wait()
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
    finally:
        collector.close()
    return EXIT_OK  # not reached: only a signal ends the wait


# -- arguments -----------------------------------------------------------------------------------


def _number(minimum: float, strict: bool) -> Callable[[str], float]:
    """An argparse type: a finite number > (or >=) ``minimum``; argparse names the option."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(
                f"{text} is not {'>' if strict else '>='} {minimum:g}")
        return value
    return parse


_positive = _number(0, strict=True)
_nonnegative = _number(0, strict=False)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not >= 1")
    return value


def _listen(text: str) -> str:
    """An argparse type: HOST:PORT as seqshm.export.parse_listen takes it."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. {EXPORT_LISTEN})")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqshm", description="Lock-free snapshots of live data shared by a seqlock.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {seqshm.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    channel = "channel: a path, or a NAME in /dev/seqshm or /dev/shm"

    # each command's --help ends with what a CHANNEL is and the exit statuses
    described: dict[str, Any] = {
        "epilog": EPILOG, "formatter_class": argparse.RawDescriptionHelpFormatter}
    p = sub.add_parser("list", help="list the channels in /dev/seqshm and /dev/shm", **described)
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.add_argument("--no-rate", action="store_true",
                   help=f"do not watch the channels {LIST_RATE_WINDOW_S:g} s for their rates")

    p = sub.add_parser("info", help="print a channel's layout and state", **described)
    p.add_argument("path", metavar="CHANNEL", help=channel)
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--timeout", type=_nonnegative, default=1.0, metavar="S",
                   help="how long a read waits for a consistent copy (default 1)")

    p = sub.add_parser("watch", help="show a channel live with its update rate", **described)
    p.add_argument("path", metavar="CHANNEL", help=channel)
    p.add_argument("--interval", type=_positive, default=0.5, metavar="S",
                   help="seconds between updates (default 0.5)")
    p.add_argument("--count", type=_count, default=None, metavar="N",
                   help="stop after N updates (default: until Ctrl-C or the channel ends)")
    p.add_argument("--timeout", type=_nonnegative, default=1.0, metavar="S",
                   help="how long a read waits for a consistent copy (default 1)")
    p.add_argument("--format", choices=("table", "jsonl", "csv"), default=None,
                   help="a live table (the default on a terminal), or one JSON or CSV line "
                        "per update (jsonl: the default otherwise)")

    p = sub.add_parser("record", help="record every write of a channel to a file",
                       usage="%(prog)s CHANNEL -o FILE [--count N | --duration S] [--timeout S]"
                             "\n       %(prog)s --recover FILE", **described)
    p.add_argument("path", nargs="?", metavar="CHANNEL", help=channel)
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
    stop.add_argument("--count", type=_count, default=None, metavar="N",
                      help="stop after N writes")
    stop.add_argument("--duration", type=_positive, default=None, metavar="S",
                      help="stop after S seconds")
    p.add_argument("--timeout", type=_nonnegative, default=1.0, metavar="S",
                   help="how long a read waits for a consistent copy (default 1)")

    p = sub.add_parser(
        "export", help="serve channels as Prometheus metrics (pip install 'seqshm[export]')",
        description="Serve channels over HTTP as Prometheus/OpenMetrics metrics, one snapshot per\n"
                    "channel per scrape. cpustat channels become node_exporter's\n"
                    "node_cpu_seconds_total{cpu,mode}; other records seqshm_<name>_<field>, a\n"
                    "counter if the field's name ends in _total, else a gauge (_ns, _us, _ms\n"
                    "fields in seconds); every channel has seqshm_channel_up, _state,\n"
                    "_writes_total and the time of its write. Needs pip install 'seqshm[export]'.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("patterns", nargs="*", metavar="CHANNEL|GLOB",
                   help="channels to export: names, paths or globs ('*' matches names in "
                        "/dev/seqshm and /dev/shm); default: every channel")
    p.add_argument("--listen", type=_listen, default=EXPORT_LISTEN, metavar="HOST:PORT",
                   help=f"address to serve on (default {EXPORT_LISTEN}; port 0 picks a free "
                        "one, printed on stderr)")
    p.add_argument("--sum-over", action="append", default=[], metavar="LABEL",
                   help="sum the series over this label at the source (cpu for cpustat; "
                        "dim0... for other channels' dimensions); repeatable")
    p.add_argument("--timeout", type=_nonnegative, default=0.1, metavar="S",
                   help="how long a snapshot waits for a consistent copy (default 0.1)")
    p.add_argument("--once", action="store_true",
                   help="print one scrape to stdout and exit instead of serving")
    p.add_argument("--openmetrics", action="store_true",
                   help="with --once: the OpenMetrics format instead of Prometheus text")
    p.add_argument("--web-config", metavar="FILE",
                   help="TLS and basic auth from FILE, in the Prometheus exporter-toolkit "
                        "format (node_exporter's --web.config.file): tls_server_config "
                        "cert_file, key_file; basic_auth_users with bcrypt hashes")

    p = sub.add_parser("demo", help="publish this host's per-CPU times and watch them live",
                       **described)
    p.add_argument("--rate", type=_positive, default=100.0, metavar="HZ",
                   help="writes per second of the demo writer (default 100)")
    p.add_argument("--duration", type=_nonnegative, default=10.0, metavar="S",
                   help="seconds to run, 0 for until Ctrl-C (default 10)")
    p.add_argument("--interval", type=_positive, default=0.5, metavar="S",
                   help="seconds between screen updates (default 0.5)")
    p.add_argument("--path", default=DEMO_PATH, help=f"channel file (default {DEMO_PATH})")
    return parser


def _run(args: argparse.Namespace) -> int:
    console = _console()
    if args.command == "list":
        rows = list_channels(with_rate=not args.no_rate)
        if args.json:
            print(json.dumps(rows, indent=2, allow_nan=False, ensure_ascii=True))
        elif rows:
            # on a terminal each row fits its width (the long DTYPE, last, is cut with '…');
            # into a pipe or file, whole rows
            print(list_text(rows, console.width if console.is_terminal else None))
        else:
            print(f"seqshm: no channels in {' or '.join(SEARCH_DIRS)}", file=sys.stderr)
        return EXIT_OK
    if args.command == "info":
        with _open(args.path, timeout=args.timeout) as reader:
            if args.json:
                print(json.dumps(info_json(reader), indent=2, allow_nan=False,
                                 ensure_ascii=True))
            else:
                console.print(info_text(reader), markup=False)
        return EXIT_OK
    if args.command == "watch":
        return watch(args.path, args.interval, args.count, args.timeout, args.format)
    if args.command == "record":
        if args.recover is not None:
            if args.path or args.output or args.count or args.duration:
                raise Failure("record --recover FILE takes no CHANNEL, -o, --count or "
                              "--duration", EXIT_USAGE)
            return recover(args.recover)
        if not args.path or not args.output:
            raise Failure("record needs a CHANNEL and -o FILE (or --recover FILE)", EXIT_USAGE)
        return record(args.path, args.output, args.count, args.duration, args.timeout)
    if args.command == "export":
        return export(args.patterns, args.listen, args.sum_over, args.timeout, args.once,
                      args.openmetrics, args.web_config)
    return demo(args.path, args.rate, args.duration, args.interval)


def _who_may_read(path: str) -> str:
    """What to do about a channel this user may not read: whose it is and its mode."""
    try:
        st = os.stat(path)
    except OSError:
        return "(run as a user who may read it)"
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return (f"(mode {stat.S_IMODE(st.st_mode):04o}, owner {owner}, group {group}): run as a "
            "user who may read it, or have its writer make it readable (chmod, or a umask)")


#: Errors of a write that names no file: the standard output's (print() says no name).
_OUTPUT_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO))


def _error_text(e: BaseException) -> str:
    """The one line that says what went wrong, the file it names escaped (shown()); main()
    passes it through printable() too, for a name a library put into its message."""
    if isinstance(e, seqshm.SeqshmError) and e.path:
        return f"{shown(e.path)}: {e.reason}"
    if isinstance(e, OSError) and not isinstance(e, seqshm.SeqshmError):
        if isinstance(e, PermissionError) and e.filename:
            name = os.fsdecode(e.filename)
            return f"{shown(name)}: {e.strerror} {_who_may_read(name)}"
        if e.filename:
            return f"{shown(os.fsdecode(e.filename))}: {e.strerror}"
        if e.errno in _OUTPUT_ERRNOS:  # no file named: our stdout (> /dev/full, a full disk)
            return f"cannot write the output: {e.strerror}"
        if e.strerror:
            return e.strerror
    return str(e)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _raise_signalled)
                    for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return _run(args)
    except KeyboardInterrupt as e:
        return 128 + (e.signum if isinstance(e, Signalled) else signal.SIGINT)
    except BrokenPipeError:
        # the reader of our output went away (| head): say nothing more, as C tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Failure as e:
        code, text = e.code, str(e)
    except seqshm.FileTruncated as e:
        code, text = EXIT_FAILED, _error_text(e)
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
            seqshm.FormatError) as e:
        code, text = EXIT_USAGE, _error_text(e)
    except (OSError, seqshm.SeqshmError) as e:
        code, text = EXIT_FAILED, _error_text(e)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"seqshm: {printable(text)}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
