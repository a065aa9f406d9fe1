"""Channels as metric families: which channels a selection names, one snapshot per channel per
collection, and each channel's values made into the families of seqshm._families (no
prometheus_client: seqshm.export and seqshm.otel share it)."""

from __future__ import annotations

import errno
import logging
import os
import resource
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqshm._api import SEARCH_DIRS, channel_paths, resolve
from seqshm._cpustat import CPUSTAT_FIELDS, NS_PER_TICK, USER_HZ, is_cpustat
from seqshm._errors import FileTruncated, ReadTimeout, SeqshmError
from seqshm._exported import (
    Channel,
    Layout,
    copy_fields_alone,
    count_series,
    read_needed,
    trusted_entry,
)
from seqshm._families import (
    COUNTER,
    CPU_MODES,
    JUMP_BACK_SECONDS,
    Family,
    family_key,
    field_rule,
    index_labels,
    label_value,
    meta_families,
    numeric_fields,
)
from seqshm._lifecycle import ChannelState
from seqshm._reader import Reader

__all__ = ["ChannelMetrics", "ExportError"]

log = logging.getLogger("seqshm.export")

_GLOB_CHARS = frozenset("*?[")


class ExportError(SeqshmError):
    """A selection that cannot be exported as asked: a glob that matches no channel, a channel
    with no numeric field, a --sum-over dimension that no selected channel has, an address
    that cannot be listened on. The message says which and what to do."""


#: Data series one channel may make (a 1024-CPU cpustat makes 10240): a channel of more, e.g.
#: one a local user made with millions of elements, would cost the exporter its memory and
#: every scrape its time; its data is left out with a warning, its state still exported.
MAX_SERIES_PER_CHANNEL = 100_000

#: Values one channel may have read at a scrape, before --sum-over sums them (a channel summed
#: to one series still costs a copy of every value it sums: 1,000,000 is 8 MB as float64).
MAX_VALUES_PER_CHANNEL = 1_000_000
#: Values a scrape may read over all channels, per series it may have (--max-series): what
#: --sum-over channels may read in all, so that many channels summed to a series each cannot
#: cost a scrape more than 10 values a series.
VALUES_PER_SERIES = 10

#: Data series one scrape may have, over all channels (Prometheus's sample_limit at the source):
#: MAX_SERIES_PER_CHANNEL bounds a channel, and this bounds how many such channels any local
#: user can add to every scrape. A scrape's exposition costs ~1 KB of memory per series while
#: its template is built (prometheus_client's samples) and ~5 us per series on the host, so
#: 200,000 series (20 cpustat channels of 1024 CPUs) is ~200 MB and ~1 s at worst. Channels
#: are taken trusted first (ChannelMetrics), so another user's channels cannot use it up.
MAX_SERIES_PER_SCRAPE = 200_000

#: File descriptors kept for everything but the channels' readers: the server's listening
#: socket and its connections (at most 64), the spare descriptor, stdio, Python's own.
FD_RESERVE = 128


def reader_budget() -> int:
    """How many channels may keep a reader (a descriptor each) open between collections: the
    open-file limit (RLIMIT_NOFILE's soft one) less FD_RESERVE. Channels beyond it are opened
    and closed at each collection, so they are still read."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(0, soft - FD_RESERVE)


#: Seconds a collection waits in all for channels mid-write (each at most its own timeout):
#: past it, a channel is read with no wait, so a scrape does not grow with the number of
#: channels stuck mid-write (any local user can make such files) past Prometheus's 10 s
#: scrape_timeout, which would lose every channel's series.
SCRAPE_WAIT_S = 1.0


#: errno values of an open or a map that failed for lack of a resource of this process or
#: the system, not because of the channel: such a channel is reported unread, not down.
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


class ChannelMetrics:
    """The metric families of the channels that ``patterns`` name, each collection from one
    snapshot per channel (every series of a channel comes from the same write).

    ``patterns``: channel paths or bare names (seqshm.resolve: /dev/seqshm, then /dev/shm), and
    globs (``*``, ``?``, ``[...]``): a glob with a '/' matches paths, one without matches the
    names in /dev/seqshm and /dev/shm. None or empty: every channel there. Globs are looked at
    again at every collection, so channels that appear later are exported; at construction
    each glob must match at least one channel, each name must exist and each channel named
    must have a numeric field, else ExportError (FileNotFoundError for a missing name).

    ``sum_over``: label names (``cpu`` of cpustat, ``dim0``... of a channel's array dimensions,
    ``elem0``... of a field's subarray) summed away at the source, for whoever cannot afford a
    series per CPU. ``timeout``: seconds a snapshot waits for a consistent copy (a writer
    stuck mid-write shows as ``seqshm_channel_up 0`` after it).

    Families: cpustat channels (the kernel module's and ``seqshm demo``'s) become
    node_exporter's ``node_cpu_seconds_total{cpu,mode}`` and
    ``node_cpu_guest_seconds_total{cpu,mode}`` (with node_exporter's labels only, so the
    first trusted cpustat channel of the selection gives them: /dev/seqshm's before
    /dev/shm's; any other one has its state series only); other channels ``seqshm_<name>_<field>``
    (see the naming convention in ``_field_rule``); every channel also gets
    ``seqshm_channel_up``, ``seqshm_channel_state``, ``seqshm_channel_writes_total`` and the
    time of its write. A channel whose writer is gone (closed, died, replaced, truncated) has
    ``seqshm_channel_up 0`` and no data series, so its last values go stale in Prometheus
    instead of staying frozen.

    Trust (docs/security.md, "the exporter"): any local user can create channels in /dev/shm
    that a glob matches. A channel is *trusted* when it is a kernel channel (a character
    device), or a file no one but its owner may write whose owner is root, this process's
    user, or (for a channel the operator named by its path, not a glob or a bare name) the
    owner it had at start (_exported.trusted_owner). Channels are taken trusted first, then
    in the patterns' order, so that another user's channels cannot take a family name (they
    are left out on a clash), nor the scrape's series (``max_series``, MAX_SERIES_PER_SCRAPE,
    and VALUES_PER_SERIES values read a series, beyond which channels have their state series
    only, warned once); node_cpu_* come only from a trusted cpustat channel (another user's
    has its state series only: it could say anything of the host).
    """

    def __init__(self, patterns: Sequence[str] | None = None, *,
                 sum_over: Iterable[str] = (), timeout: float = 0.1,
                 max_series: int = MAX_SERIES_PER_SCRAPE) -> None:
        self.patterns = list(patterns or ["*"])
        self.sum_over = frozenset(sum_over)
        self.timeout = timeout
        self.max_series = max_series
        self._lock = threading.Lock()  # collections from concurrent scrapes take turns
        self._channels: dict[str, Channel] = {}
        self._layouts: dict[tuple[Any, ...], Layout] = {}
        # blocks of label values, the same objects for the same geometry (see Family.parts)
        self._label_cache: dict[tuple[Any, ...], tuple[tuple[str, ...], ...]] = {}
        self._label_rows = 0  # rows in _label_cache
        self._cpu_labels: dict[bytes | None, tuple[tuple[tuple[str, ...], ...],
                                            tuple[tuple[str, ...], ...]]] = {}
        self._fixed: list[str] = []  # names the user gave: exported even when they vanish
        #: channels the last collection could not read for lack of a resource of this process,
        #: by reason (errno name: EMFILE, ENFILE, ENOMEM; max-series past --max-series): left
        #: out, not reported down
        self.unread: dict[str, list[str]] = {}
        self._unread_logged: set[tuple[str, int]] = set()
        self._node_cpu_from: str | None = None
        self._matched: dict[str, list[str]] = {}  # each glob's last matches
        self._glob_failed: set[str] = set()
        dims_seen: set[str] = set()
        budget, opened = reader_budget(), 0
        for pattern in self.patterns:
            if _GLOB_CHARS.intersection(pattern):
                try:
                    found = self._matched[pattern] = channel_paths(pattern)
                except OSError as e:
                    raise ExportError(f"{pattern!r}: cannot list its directory: "
                                      f"{e.strerror}") from e
                if not found and patterns:
                    raise ExportError(
                        f"{pattern!r} matches no channel (looked in "
                        f"{'the given path' if '/' in pattern else ' and '.join(SEARCH_DIRS)});"
                        " check the pattern with 'seqshm list'")
            else:
                found = [resolve(pattern)]
                self._fixed.append(found[0])
            for path in found:
                ch = self._channel(path)
                try:
                    reader = ch.open()
                    if "/" in pattern and not _GLOB_CHARS.intersection(pattern):
                        ch.vouched = reader._fstat().st_uid  # named by its path: its owner's
                except (OSError, SeqshmError) as e:
                    if not _GLOB_CHARS.intersection(pattern):
                        raise  # a channel named alone must be readable
                    if getattr(e, "errno", None) not in _RESOURCE_ERRNOS:
                        ch.warn(f"read:{type(e).__name__}", "%s", e)  # one of a glob's:
                    continue  # shown as down (or unread) at collections
                opened += 1
                layout = self._layout_of(reader)
                if opened > budget:  # kept open only up to the budget (_collect)
                    ch.close()
                if not _GLOB_CHARS.intersection(pattern) and not layout.fields:
                    raise ExportError(
                        f"its element type {reader.dtype} has no numeric field: nothing to "
                        "export (bool, integer and float fields are exported)", path)
                dims_seen.update(layout.dims)
        missing = self.sum_over - dims_seen
        if missing and self._channels:
            raise ExportError(
                f"--sum-over {', '.join(sorted(missing))}: no selected channel has such a "
                f"dimension (they have: {', '.join(sorted(dims_seen)) or 'none'})")

    # -- selection ---------------------------------------------------------------------------

    def paths(self) -> list[str]:
        """The channels selected now, in the order of the patterns, each once. A glob whose
        directory cannot be listed now (out of descriptors) keeps its last matches."""
        out: dict[str, None] = {}
        for pattern in self.patterns:
            if _GLOB_CHARS.intersection(pattern):
                try:
                    found = channel_paths(pattern)
                except OSError as e:
                    found = self._matched.get(pattern, [])
                    if pattern not in self._glob_failed:
                        self._glob_failed.add(pattern)
                        log.warning("%r: cannot list its directory (%s): the channels it "
                                    "matched before are exported", pattern, e)
                else:
                    self._glob_failed.discard(pattern)
                    self._matched[pattern] = found
                out.update(dict.fromkeys(found))
            else:
                try:
                    out[resolve(pattern)] = None
                except FileNotFoundError:
                    pass  # a named channel that is gone: reported below as down
        out.update(dict.fromkeys(p for p in self._fixed if p not in out))
        return list(out)

    def _channel(self, path: str) -> Channel:
        ch = self._channels.get(path)
        if ch is None:
            ch = self._channels[path] = Channel(path, self.timeout)
        return ch

    def _layout_of(self, reader: Reader) -> Layout:
        key = (reader.dtype, reader.shape)
        layout = self._layouts.get(key)
        if layout is None:
            cpustat = is_cpustat(reader.dtype, reader.shape)
            dims = tuple(f"dim{i}" for i in range(len(reader.shape)))
            fields = numeric_fields(reader.dtype)
            sub = max((len(reader.dtype.fields[f][0].shape)  # type: ignore[index]
                       for f in fields if f is not None), default=0)
            dims += tuple(f"elem{i}" for i in range(sub))
            layout = Layout(cpustat, fields, ("cpu",) if cpustat else dims)
            layout.series = count_series(reader.dtype, reader.shape, layout, self.sum_over)
            layout.values = count_series(reader.dtype, reader.shape, layout, frozenset())
            layout.copy_fields = copy_fields_alone(reader.dtype, reader.shape, fields)
            if len(self._layouts) >= 4096:  # shapes come and go with other users' channels
                self._layouts.clear()
            self._layouts[key] = layout
        return layout

    # -- collection --------------------------------------------------------------------------

    def close(self) -> None:
        """Close every reader (a later collection opens them again)."""
        with self._lock:
            for ch in self._channels.values():
                ch.close()

    def collect(self) -> list[Family]:
        """One collection: a snapshot of each selected channel, as metric families."""
        with self._lock:
            return self._collect()

    def _collect(self) -> list[Family]:
        meta = meta_families()
        # keyed by the family's name as OpenMetrics sees it (a counter's without _total), so
        # that a gauge `x` and a counter `x_total` count as the same name
        by_name: dict[str, Family] = {family_key(f): f for f in meta}
        reserved = set(by_name)
        out = list(meta)
        up, state_f, writes, stamp, age, unread_f = meta
        self._node_cpu_from = None
        paths = self.paths()
        for path in list(self._channels):
            if path not in paths:  # no longer selected (its file went away): forget it
                self._channels.pop(path).close()
        budget = reader_budget()
        unread: dict[str, list[str]] = {}
        wait_until = time.monotonic() + max(self.timeout, SCRAPE_WAIT_S)
        room = _Room(self.max_series, self.max_series * VALUES_PER_SERIES)
        # trusted channels first (a stable sort: then the patterns' order), so that the
        # channels of another user come after the operator's in every contest: family
        # names, the scrape's series, node_cpu_*
        channels = sorted((self._channel(p) for p in paths),
                          key=lambda ch: not trusted_entry(ch.path, ch.vouched))
        for i, ch in enumerate(channels):
            path = ch.path
            # the wait this channel may have: none once it was found stuck or the scrape's
            # wait is spent (then a slot mid-write right now is reported down, not waited on)
            wait = 0.0 if ch.stuck else min(self.timeout,
                                             max(0.0, wait_until - time.monotonic()))
            if room.series < _OWN_SERIES:  # not even its own series: not opened, nor read
                unread.setdefault("max-series", []).append(path)
                ch.close()
                continue
            room.series -= _OWN_SERIES
            try:
                fams = self._collect_channel(ch, meta, wait, room)
            except _Unread as e:
                unread.setdefault(e.reason, []).append(path)
                fams = []
            except Exception as e:  # a bug: this channel's loss, not the scrape's
                ch.warn(f"read:bug:{type(e).__name__}", "%s: left out of the export: %r",
                        path, e)
                ch.close()
                fams = []
            if i >= budget:  # more channels than descriptors to keep: read, then close
                ch.close()
            mine: set[str] = set()
            for fam in fams:
                key = family_key(fam)
                known = by_name.get(key)
                if key in reserved:  # a field must not speak for every channel's state
                    ch.warn(f"name:{key}", "%s: %s would be named %s, which seqshm keeps for "
                            "every channel's own series; left out (rename the field or the "
                            "channel)", path, fam.help, fam.name)
                elif key in mine:  # two fields of this channel, one metric name
                    ch.warn(f"name:{key}", "%s: %s would be named %s like another field of "
                            "the channel; left out (rename one of them)", path, fam.help,
                            fam.name)
                elif known is None:
                    by_name[key] = fam
                    out.append(fam)
                    room.series -= fam.size
                elif known.name == fam.name and known.labels == fam.labels \
                        and known.kind == fam.kind:
                    known.parts.extend(fam.parts)  # the same field of another channel
                    room.series -= fam.size
                else:
                    ch.warn(f"name:{key}", "%s: family %s (%s, labels %s) clashes with %s (%s, "
                            "labels %s) of another channel; left out", path, fam.name,
                            fam.kind, fam.labels, known.name, known.kind, known.labels)
                mine.add(key)
        self.unread = unread
        now_unread = {(reason, len(missed)) for reason, missed in unread.items()}
        for reason, missed in sorted(unread.items()):
            unread_f.add(((reason,),), (float(len(missed)),))
            if (reason, len(missed)) not in self._unread_logged:  # once per count, not scrape
                log.warning("%d of %d channels not read at this scrape (%s): %s%s; they are "
                            "left out, not reported down (%s)", len(missed), len(paths),
                            reason, ", ".join(map(label_value, missed[:5])),
                            ", ..." if len(missed) > 5 else "", _RESOURCE_HINTS[reason])
        self._unread_logged = now_unread
        return out

    def _collect_channel(self, ch: Channel, meta: list[Family], wait: float, room: _Room
                         ) -> list[Family]:
        """One channel's series: its own ones added to ``meta``'s families, its data families
        returned (within ``room``, else none; the values it read taken from it); a read waits
        at most ``wait`` seconds for a slot mid-write. Raises _Unread when this process lacks
        what reading it needs."""
        up, state_f, writes, stamp, age, _ = meta
        path, lbl = ch.path, ch.rows
        try:
            reader = ch.open()
            state = reader.state
            if state not in (ChannelState.OPEN, ChannelState.REMOVED):
                ch.reopen_if_replaced()
                reader = ch.open()
                state = reader.state
            layout = self._layout_of(reader)
            series, values = layout.series, layout.values  # values: what reading it costs
            wanted = bool(layout.fields)
            if values > MAX_VALUES_PER_CHANNEL and series <= MAX_SERIES_PER_CHANNEL:
                ch.warn("values", "%s: %d values (%s %s) to read for its %d series, more than "
                        "the %d a channel may have read: its data is left out (select other "
                        "channels)", path, values, reader.dtype, reader.shape, series,
                        MAX_VALUES_PER_CHANNEL)
                wanted = False
            elif series > MAX_SERIES_PER_CHANNEL:  # not copied, nor made series: state only
                ch.warn("size", "%s: %d series (%s %s), more than the %d a channel may have: "
                        "its data is left out (sum dimensions away with --sum-over, or "
                        "select other channels)", path, series, reader.dtype, reader.shape,
                        MAX_SERIES_PER_CHANNEL)
                wanted = False
            elif series > room.series or values > room.values:
                ch.warn("room", "%s: its %d series (%d values read) would take the scrape "
                        "past its %d series (%d values; --max-series): its data is left out, "
                        "its state exported (raise --max-series, or select fewer channels)",
                        path, series, values, self.max_series,
                        self.max_series * VALUES_PER_SERIES)
                wanted = False
            elif layout.cpustat and self._node_cpu_from is not None:
                ch.warn("cpustat", "%s: node_cpu_* already come from %s; exporting its "
                        "state only", path, self._node_cpu_from)
                wanted = False
            elif layout.cpustat:
                wanted = ch.may_speak_for_host()
            reader.timeout = wait
            seq, stamp_ns, data = read_needed(reader, layout, wanted)
            if data is not None:
                room.values -= values
        except FileNotFoundError:
            ch.close()
            up.add(lbl, _DOWN)
            return []
        except ReadTimeout as e:
            ch.warn("read:timeout", "%s", e)
            ch.stuck = bool(e.stuck)
            up.add(lbl, _DOWN)
            state_f.add(ch.state_rows, _STATE_VALUES[reader.state])
            return []
        except FileTruncated as e:
            ch.warn("read:truncated", "%s", e)
            ch.close()
            up.add(lbl, _DOWN)
            state_f.add(ch.state_rows, _STATE_VALUES[ChannelState.TRUNCATED])
            return []
        except OSError as e:
            ch.close()
            if e.errno in _RESOURCE_ERRNOS:
                raise _Unread(errno.errorcode[e.errno or 0]) from e
            ch.warn(f"read:{e.errno}", "%s", e)
            up.add(lbl, _DOWN)
            return []
        except SeqshmError as e:
            ch.close()
            ch.warn(f"read:{type(e).__name__}", "%s", e)
            up.add(lbl, _DOWN)
            return []
        ch.read_ok()
        ch.stuck = False
        alive = state in (ChannelState.OPEN, ChannelState.REMOVED)
        up.add(lbl, _UP if alive else _DOWN)
        state_f.add(ch.state_rows, _STATE_VALUES[state])
        writes.add(lbl, (float(seq),))
        if seq:
            clock = int(reader.header["clock_id"])
            try:
                ago = time.clock_gettime_ns(clock) - stamp_ns
            except OSError:
                ago = None
            if ago is not None:
                stamp.add(lbl, ((time.time_ns() - ago) / 1e9,))
                age.add(lbl, (ago / 1e9,))
        if not alive or not seq or data is None:
            return []  # no frozen values of a dead writer, nor the zeros before a write
        try:
            if layout.cpustat:
                self._node_cpu_from = path
                return self._cpustat_families(ch, data[None])
            return self._generic_families(ch, reader, layout, data)
        except Exception as e:  # values that cannot be made series: its state is still told
            ch.warn(f"data:{type(e).__name__}", "%s: its data left out of the export: %r",
                    path, e)
            return []

    def _labels(self, fixed: tuple[str, ...], shape: tuple[int, ...]
                ) -> tuple[tuple[str, ...], ...]:
        key = (fixed, shape)
        cached = self._label_cache.get(key)
        if cached is None:
            cached = tuple(fixed + idx for idx in index_labels(shape))
            # bounded by the rows kept, not the blocks: a block may have 100,000 rows, and a
            # channel renamed again and again (its label is its path) makes a new one each time
            self._label_rows += len(cached)
            if self._label_rows > 2 * self.max_series or len(self._label_cache) > 4096:
                self._label_cache.clear()
                self._label_rows = len(cached)
            self._label_cache[key] = cached
        return cached

    def _reduce(self, values: np.ndarray, names: tuple[str, ...]
                ) -> tuple[np.ndarray, tuple[str, ...]]:
        """``values`` (one axis per label in ``names``) with the --sum-over axes summed away."""
        axes = tuple(i for i, n in enumerate(names) if n in self.sum_over)
        if not axes:
            return values.astype(np.float64), names
        # summed in float64 without a float64 copy of the values first
        return (values.sum(axis=axes, dtype=np.float64),
                tuple(n for n in names if n not in self.sum_over))

    def _generic_families(self, ch: Channel, reader: Reader, layout: Layout,
                          data: dict[str | None, np.ndarray]) -> list[Family]:
        fams = []
        dims = layout.dims[:len(reader.shape)]
        for fname in layout.fields:
            name, kind, otel_name, scale = field_rule(reader.name or
                                                       os.path.basename(reader.path), fname)
            raw = data[fname]
            sub = raw.shape[len(reader.shape):]
            names = dims + tuple(f"elem{i}" for i in range(len(sub)))
            # NaN and infinities are values to export as they are (+Inf - +Inf summed is NaN),
            # not reasons for NumPy's RuntimeWarnings on the server's stderr
            with np.errstate(invalid="ignore", over="ignore"):
                values, kept = self._reduce(raw, names)
                if scale != 1.0:
                    values = values * scale
            rows = self._labels((ch.label,), values.shape)
            fams.append(Family(
                name, kind, f"field {fname or '(element)'} of seqshm channel "
                f"{reader.name!r}" + (" in seconds" if scale != 1.0 else ""),
                otel_name, "s" if scale != 1.0 else "", ("channel", *kept),
                ("seqshm.channel", *kept),
                frozenset(kept), [(rows, values.ravel())]))
        return fams

    def _cpustat_families(self, ch: Channel, data: np.ndarray) -> list[Family]:
        """node_exporter's cpu collector from a cpustat snapshot: seconds per CPU and mode as
        /proc/stat shows them (ns truncated to USER_HZ ticks, then ticks / USER_HZ, as
        node_exporter, through prometheus/procfs, converts them), never below what an earlier
        collection exported
        (node_exporter's updateCPUStats: a counter that goes back keeps its old value, and a
        CPU whose idle time went back 3 s or more was re-plugged and starts over). Only online
        CPUs get series, as /proc/stat lists only those; a sum over cpu adds every CPU, as
        /proc/stat's "cpu" line does."""
        # cpustat is all u64: one (cpus, fields) matrix, the 8 modes then guest, guest_nice
        raw = data.view(np.uint64).reshape(len(data), -1)
        seconds = (raw[:, :len(CPUSTAT_FIELDS)] // np.uint64(NS_PER_TICK)) / USER_HZ
        seen = ch.cpu_seen
        if seen is not None and seen.shape == seconds.shape:
            idle = CPU_MODES.index("idle")
            replugged = (seen[:, idle] - seconds[:, idle]) >= JUMP_BACK_SECONDS
            seconds = np.where(replugged[:, None], seconds, np.maximum(seen, seconds))
        ch.cpu_seen = seconds
        if "cpu" in self.sum_over:
            block = seconds.sum(axis=0, keepdims=True)
            labels: tuple[str, ...] = ("mode",)
            key = None
        else:
            online = np.flatnonzero(data["online"])
            block = seconds[online]
            labels = ("cpu", "mode")
            # (no CPU online, b"", is a key of its own: no series, not the sum's)
            key = online.tobytes()
        names = self._cpu_labels.get(key)
        if names is None:  # the label values of each sample, the same scrape after scrape
            rows = [()] if key is None else [
                (str(i),) for i in np.frombuffer(key, np.intp).tolist()]
            names = (tuple(row + (m,) for row in rows for m in CPU_MODES),
                     tuple(row + (m,) for row in rows for m in ("user", "nice")))
            if len(self._cpu_labels) > 64:
                self._cpu_labels.clear()
            self._cpu_labels[key] = names
        otel = tuple({"cpu": "cpu.logical_number", "mode": "cpu.mode"}[n] for n in labels)
        cpu = Family("node_cpu_seconds_total", COUNTER, "Seconds the CPUs spent in each mode.",
                     "system.cpu.time", "s", labels, otel, frozenset({"cpu"}),
                     [(names[0], block[:, :len(CPU_MODES)].ravel())])
        guest = Family("node_cpu_guest_seconds_total", COUNTER,
                       "Seconds the CPUs spent in guests (VMs) for each mode.",
                       "system.cpu.guest_time", "s", labels, otel, frozenset({"cpu"}),
                       [(names[1], block[:, len(CPU_MODES):].ravel())])
        return [cpu, guest]


@dataclass
class _Room:
    """What a collection may still take: data series, and values read (before --sum-over)."""

    series: int
    values: int


class _Unread(Exception):
    """A channel this process could not read for lack of a resource (``reason``, an errno
    name), not because of the channel."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_RESOURCE_HINTS = {
    "max-series": "their own series would take the scrape past --max-series: raise it, or "
                  "select fewer channels (another user's come after root's and this user's)",
    "EMFILE": "out of file descriptors: raise the open-file limit (ulimit -n, LimitNOFILE=) or "
              "export fewer channels",
    "ENFILE": "the system is out of file descriptors (fs.file-max)",
    "ENOMEM": "out of memory maps or memory (vm.max_map_count)",
}

_UP, _DOWN = (1.0,), (0.0,)
#: Series every channel has of its own (up, one per state, writes, and its write's time and
#: age): counted in --max-series too, so that channels without data (another user's hard
#: links to one closed channel: 20,000 cost nothing to make) cannot grow a scrape past it.
_OWN_SERIES = len(ChannelState) + 4
#: seqshm_channel_state's values for each state, in ChannelState's order (Channel.state_rows)
_STATE_VALUES = {state: tuple(1.0 if s is state else 0.0 for s in ChannelState)
                 for state in ChannelState}
