"""``seqshm info``: a channel's layout as validated and its state now, as text or JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

import seqshm
from seqshm.cli._base import (
    CHANNEL_HELP,
    EXIT_OK,
    make_console,
    newest_write,
    nonnegative,
    open_channel,
    writer_alive,
    writer_text,
)
from seqshm.cli._format import (
    age_s,
    clock_name,
    dtype_text,
    fields_json,
    fields_text,
    printable,
    seconds_text,
    shown,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="CHANNEL", help=CHANNEL_HELP)
    p.add_argument("--json", action="store_true", help="print a JSON object")
    p.add_argument("--timeout", type=nonnegative, default=1.0, metavar="S",
                   help="how long a read waits for a consistent copy (default 1)")


def run(args: argparse.Namespace) -> int:
    with open_channel(args.path, timeout=args.timeout) as reader:
        if args.json:
            print(json.dumps(info_json(reader), indent=2, allow_nan=False, ensure_ascii=True))
        else:
            make_console().print(info_text(reader), markup=False)
    return EXIT_OK


def info_json(reader: seqshm.Reader) -> dict[str, Any]:
    """What ``seqshm info --json`` prints: the layout as validated, and the channel's state."""
    h = reader.header
    error = None
    try:
        writes, timestamp = newest_write(reader)
    except seqshm.ReadTimeout as e:
        writes, timestamp, error = reader.head, 0, e.reason
    state = reader.state
    # each slot's count as the engine reads it, without the seqlock: odd is mid-write
    mid = [i for i, seq in enumerate(reader.slot_seqs()) if seq & 1]
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
        "writer_alive": writer_alive(state),
        "state": state.value,
        "head": reader.head,
        "writes": writes,
        "timestamp_ns": timestamp or None,
        "age_s": age,
        "mid_write_slots": mid,
        "stuck": error is not None or (bool(mid) and not writer_alive(state)),
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
        f"writer          {writer_text(reader)}",
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
