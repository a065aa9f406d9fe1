"""One channel as seqshm export reads it: its kept reader, what was warned about it, whether it
may be trusted (docs/security.md, the exporter's part), and a read that copies only what its
series need (seqshm._metrics makes the series)."""

from __future__ import annotations

import logging
import math
import os
import stat
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqshm._errors import SeqshmError
from seqshm._families import CPU_MODES, label_value
from seqshm._lifecycle import ChannelState
from seqshm._reader import Reader

__all__ = ["COPY_WHOLE_UP_TO", "Channel", "Layout", "copy_fields_alone", "count_series",
           "read_needed", "trusted_entry", "trusted_owner"]

log = logging.getLogger("seqshm.export")

#: Bytes of a channel's element copied as a whole per exported value at most: a channel whose
#: payload is larger than this many times the values it exports (a record padded to megabytes,
#: a field of complex numbers, which make no series) has only its exported fields copied out
#: of the slot, under the seqlock (Reader.apply), so that a scrape copies what its series need,
#: not what a local user's channel claims.
COPY_WHOLE_UP_TO = 4

#: A payload this small is copied whole whatever it exports: one copy beats a copy per field.
_SMALL_PAYLOAD = 64 * 1024


def _nothing(view: np.ndarray) -> None:
    """Reader.apply's function when only the write's number and time are wanted."""


def _copy_fields(view: np.ndarray, fields: list[str | None]) -> dict[str | None, np.ndarray]:
    """Copies of ``fields`` of ``view`` (None: the whole element), each a new array."""
    return {f: np.array(view if f is None else view[f]) for f in fields}


def trusted_owner(st: os.stat_result, vouched: int | None = None) -> bool:
    """Whether a channel's file may speak for the host and come before other users' channels
    (docs/security.md, the exporter): a kernel channel (a character device: only root makes
    device nodes that open), or a file that no one but its owner may write (no group or other
    write bit: a world-writable file of root's, such as a sidecar, is anyone's to fill) whose
    owner is root, this process's user, or ``vouched``: the owner, as it was at start, of a
    channel the operator named by its path."""
    if stat.S_ISCHR(st.st_mode):
        return True
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return False
    return st.st_uid in (0, os.geteuid()) or st.st_uid == vouched


def trusted_entry(path: str, vouched: int | None = None) -> bool:
    """trusted_owner of the entry at ``path`` (lstat: a link is its maker's), for the order
    of a collection only; what a channel may say is decided on the file it has open."""
    try:
        return trusted_owner(os.lstat(path), vouched)
    except OSError:
        return False


@dataclass
class Layout:
    """What a channel's families look like, worked out once per (dtype, shape)."""

    cpustat: bool
    fields: list[str | None]
    dims: tuple[str, ...]
    series: int = 0  # data series it makes (after --sum-over)
    values: int = 0  # values a scrape reads of it (before --sum-over)
    copy_fields: bool = False  # copy_fields_alone()


class Channel:
    """One selected channel: its reader (kept open between collections, so a collection costs
    a snapshot, not an open) and, for cpustat, node_exporter's per-CPU high-water marks."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.reader: Reader | None = None
        self.cpu_seen: np.ndarray | None = None  # seconds, (cpus, modes + guest modes)
        # the label values of its own series, the same objects at every collection
        self.label = label_value(path)
        self.rows = ((self.label,),)
        self.state_rows = tuple((self.label, s.value) for s in ChannelState)
        self.warned: set[str] = set()  # what was logged about it (once, not per collection)
        # its last read found a slot stuck mid-write: read with no wait until it moves, so a
        # writer stopped mid-write costs later scrapes nothing
        self.stuck = False
        # the uid the operator vouched for by naming this channel's path (its file's owner
        # at start): trusted_owner() trusts that owner's file at this path, not another's
        self.vouched: int | None = None

    def warn(self, key: str, msg: str, *args: Any) -> None:
        """Log ``msg`` once for ``key`` (keys "read:..." again after the channel was read)."""
        if key not in self.warned:
            self.warned.add(key)
            log.warning(msg, *args)

    def read_ok(self) -> None:
        """Read fine: a read error after this is logged again."""
        if self.warned:
            self.warned = {k for k in self.warned if not k.startswith("read:")}

    def open(self) -> Reader:
        if self.reader is None:
            self.reader = Reader(self.path, timeout=self.timeout, reopen=True)
            self.cpu_seen = None
        return self.reader

    def reopen_if_replaced(self) -> None:
        """A channel that ended and whose path now holds another live channel (a writer that
        closed and a new one that created the file again, which ``reopen=True`` does not
        follow: only create(overwrite=True) marks the old one REPLACED) is opened anew."""
        try:
            fresh = Reader(self.path, timeout=self.timeout, reopen=True)
        except (OSError, SeqshmError):
            return
        if fresh.state is ChannelState.OPEN:
            self.close()
            self.reader = fresh
        else:
            fresh.close()

    def may_speak_for_host(self) -> bool:
        """Whether this cpustat channel may give node_cpu_*, which carry no channel label and
        so speak for the host: trusted_owner() of the file open. Another's has its state only,
        warned once: it could say anything."""
        assert self.reader is not None
        st = self.reader._fstat()
        if trusted_owner(st, self.vouched):
            return True
        self.warn("cpustat:owner", "%s: a cpustat channel of uid %d, mode %04o: node_cpu_* "
                  "come only from a kernel channel, or a file of root, of this exporter's "
                  "user or of the owner of a channel named by its path, that no one else may "
                  "write; exporting its state only", self.path, st.st_uid,
                  stat.S_IMODE(st.st_mode))
        return False

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None



def count_series(dtype: np.dtype[Any], shape: tuple[int, ...], layout: Layout,
                 summed: frozenset[str]) -> int:
    """How many data series a channel of ``dtype`` and ``shape`` makes with the labels in
    ``summed`` summed away (--sum-over; none: the values a scrape reads of it)."""
    if layout.cpustat:
        return (len(CPU_MODES) + 2) * (1 if "cpu" in summed else shape[0])
    count = 0
    for fname in layout.fields:
        sub = () if fname is None else dtype.fields[fname][0].shape  # type: ignore[index]
        names = layout.dims[:len(shape)] + tuple(f"elem{i}" for i in range(len(sub)))
        count += math.prod(n for name, n in zip(names, shape + sub, strict=True)
                           if name not in summed)
    return count


def copy_fields_alone(dtype: np.dtype[Any], shape: tuple[int, ...],
                      fields: list[str | None]) -> bool:
    """Whether a scrape copies ``fields`` alone out of the slot rather than the whole payload:
    when the payload holds more than COPY_WHOLE_UP_TO times their bytes (and is past
    _SMALL_PAYLOAD)."""
    count = math.prod(shape)
    table: Any = dtype.fields or {}
    needed = count * sum(int(dtype.itemsize if f is None else table[f][0].itemsize)
                         for f in fields)
    return dtype.itemsize * count > max(COPY_WHOLE_UP_TO * needed, _SMALL_PAYLOAD)


def read_needed(reader: Reader, layout: Layout, wanted: bool
          ) -> tuple[int, int, dict[str | None, np.ndarray] | None]:
    """(write number, timestamp in ns, the exported fields' values by field name, or None
    without ``wanted``) of one consistent read of the newest slot. Only what the series
    need is copied: nothing but the write's number and time without ``wanted``; the
    exported fields alone, out of the mapping under the seqlock, when ``layout.copy_fields``
    (a local user's channel may claim a payload of gigabytes and export one value, or
    none); else the whole payload, in one copy."""
    if not wanted:
        reader.apply(_nothing)
        return reader.seq, reader.timestamp_ns, None
    if layout.cpustat:  # all of it is exported (the series bound bounds its size)
        snap = reader.read()
        return snap.seq, snap.timestamp_ns, {None: snap.data}
    if layout.copy_fields:
        copied = reader.apply(_copy_fields, layout.fields)
        return reader.seq, reader.timestamp_ns, copied
    snap = reader.read()
    return snap.seq, snap.timestamp_ns, {f: snap.data if f is None else snap.data[f]
                                         for f in layout.fields}
