"""``seqshm list``: every channel in /dev/seqshm and /dev/shm, its shape, writer, state and write
rate, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from typing import Any

import seqshm
from seqshm import _api
from seqshm.cli._base import EXIT_OK, fstat, make_console, newest_write, writer_alive
from seqshm.cli._format import age_s, dtype_text, printable, rate, rate_text, seconds_text, shown

#: How long ``list`` watches the heads to tell each channel's write rate.
LIST_RATE_WINDOW_S = 0.1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.add_argument("--no-rate", action="store_true",
                   help=f"do not watch the channels {LIST_RATE_WINDOW_S:g} s for their rates")


def run(args: argparse.Namespace) -> int:
    rows = list_channels(with_rate=not args.no_rate)
    if args.json:
        print(json.dumps(rows, indent=2, allow_nan=False, ensure_ascii=True))
    elif rows:
        # on a terminal each row fits its width (the long DTYPE, last, is cut with '…'); into
        # a pipe or file, whole rows
        con = make_console()
        print(list_text(rows, con.width if con.is_terminal else None))
    else:
        print(f"seqshm: no channels in {' or '.join(_api.SEARCH_DIRS)}", file=sys.stderr)
    return EXIT_OK


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


def _heads() -> dict[str, tuple[int, int, int]]:
    """Each readable channel's (st_dev, st_ino, head) now, each reader closed at once."""
    heads = {}
    for path in _api.channel_paths():
        probe = _probe(path)
        if isinstance(probe, seqshm.Reader):
            with probe as r:
                st = fstat(r)
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
    for path in _api.channel_paths():
        probe = _probe(path)
        if probe is None:
            continue
        row: dict[str, Any] = dict.fromkeys(
            ("path", "name", "channel", "kernel", "dtype", "shape", "nr_slots", "writer_pid",
             "writer_alive", "state", "writes", "rate_hz", "age_s", "stuck", "error"))
        row["path"], row["name"] = path, os.path.basename(path)
        if isinstance(probe, str):
            row["error"] = probe
            rows.append(row)
            continue
        with probe as r:
            head = r.head
            st = fstat(r)
            before = heads.get(path)
            if with_rate and before and before[:2] == (st.st_dev, st.st_ino):
                row["rate_hz"] = rate((t0, before[2]), time.monotonic(), head)
            try:
                try:
                    timestamp, row["stuck"] = newest_write(r)[1], False
                except seqshm.ReadTimeout:
                    timestamp, row["stuck"] = 0, True
                state = r.state
                # only a device is the kernel's: a file's header saying writer_pid 0 is a
                # file someone made by hand (_lifecycle.writer_text)
                row.update(channel=r.name, kernel=stat.S_ISCHR(st.st_mode),
                           dtype=dtype_text(r.dtype, str), shape=list(r.shape),
                           nr_slots=r.nr_slots, writer_pid=r.header["writer_pid"] or None,
                           writer_alive=writer_alive(state), state=state.value, writes=head,
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
            str(r["nr_slots"]), "kernel" if r["kernel"] else f"pid {r['writer_pid'] or 0}",
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
