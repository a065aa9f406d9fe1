"""What a channel's data becomes for a metrics sink: the Family record (no prometheus_client),
Prometheus names and label values made from what a channel holds, the naming convention of a
record's fields, and the families every channel has (seqshm._metrics fills them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["COUNTER", "CPU_MODES", "GAUGE", "Family", "family_key", "field_rule", "label_value",
           "meta_families", "metric_name", "numeric_fields"]

COUNTER, GAUGE = "counter", "gauge"

#: node_exporter's jumpBackSeconds (collector/cpu_linux.go): a CPU whose idle time goes back by
#: this much or more was unplugged and plugged again, and its counters start over.
JUMP_BACK_SECONDS = 3.0
#: node_exporter's cpu modes, in /proc/stat's column order; cpustat's first eight fields.
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
#: Suffixes of field names that give their unit (the convention below), and the factor to
#: Prometheus's base unit, seconds.
_TIME_SUFFIXES = {"_ns": 1e-9, "_us": 1e-6, "_ms": 1e-3}


@dataclass
class Family:
    """One metric family: Prometheus ``name`` (counters end in ``_total``) and ``kind``
    (COUNTER or GAUGE), the OpenTelemetry instrument name ``otel_name`` with its UCUM ``unit``
    ("s", "1", "{write}", ""), the label names (``otel_labels`` their OpenTelemetry attribute
    names; those in ``int_labels`` are array indices, integer attributes there), and the
    samples, every one from the same snapshot of its channel, in ``parts``: blocks of label
    values (a tuple of label-value tuples, kept by ChannelMetrics from scrape to scrape for a
    channel of the same geometry, so that seqshm export's exposition knows them again) with
    their values (a sequence of floats, or a float64 array of as many)."""

    name: str
    kind: str
    help: str
    otel_name: str
    unit: str
    labels: tuple[str, ...]
    otel_labels: tuple[str, ...]
    int_labels: frozenset[str] = frozenset()
    parts: list[tuple[Sequence[tuple[str, ...]], Sequence[float] | np.ndarray]] = field(
        default_factory=list)

    def add(self, rows: Sequence[tuple[str, ...]],
            values: Sequence[float] | np.ndarray) -> None:
        """Samples: the label values ``rows`` with ``values``, one each."""
        self.parts.append((rows, values))

    @property
    def size(self) -> int:
        """The number of samples."""
        return sum(len(rows) for rows, _ in self.parts)

    @property
    def samples(self) -> list[tuple[tuple[str, ...], float]]:
        """(label values, value) pairs, value a Python float."""
        out: list[tuple[tuple[str, ...], float]] = []
        for rows, values in self.parts:
            as_floats = values.tolist() if isinstance(values, np.ndarray) else values
            out.extend(zip(rows, as_floats, strict=True))
        return out

    @property
    def prometheus_unit(self) -> str:
        """The unit prometheus_client writes in OpenMetrics (only a name's own suffix)."""
        base = self.name.removesuffix("_total")
        return "seconds" if base.endswith("_seconds") else ""


def metric_name(text: str) -> str:
    """``text`` as a Prometheus metric name part: every character outside [a-zA-Z0-9_] becomes
    '_' (the data model's rule), and a leading digit gets a '_' before it."""
    out = "".join(c if c.isascii() and (c.isalnum() or c == "_") else "_" for c in text)
    return "_" + out if out[:1].isdigit() else out


def label_value(path: str) -> str:
    """``path`` as a label value: Prometheus's are UTF-8, and a file name is bytes that any
    local user may choose in /dev/shm. Bytes that are not UTF-8 (os.fsdecode made them lone
    surrogates) are written as ``\\xNN``: the same name gives the same label at every scrape,
    and valid UTF-8 is left as it is."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def numeric_fields(dtype: np.dtype[Any]) -> list[str | None]:
    """The fields exported of a record (None: the whole element of a plain dtype): booleans,
    integers and floats, alone or in subarrays. Complex numbers (the one other kind a channel
    holds) have no Prometheus value and are left out."""
    if dtype.names is None:
        return [None] if dtype.base.kind in "biuf" else []
    return [n for n in dtype.names
            if dtype.fields[n][0].base.kind in "biuf"]  # type: ignore[index]


def field_rule(channel_name: str, fname: str | None) -> tuple[str, str, str, float]:
    """The naming convention of a generic channel's field: (family name, kind, OpenTelemetry
    name, scale). The family is ``seqshm_<channel>_<field>``. A field named ``..._total`` is a
    counter, every other one a gauge: the record's field names are the only meaning a channel
    carries, and this is Prometheus's own naming rule (counters end in _total), so a producer
    says what a field is where it defines it and no mapping file can drift from the record. A
    time unit suffix before it (``_ns``, ``_us``, ``_ms``) is converted to seconds, the base
    unit, and named ``_seconds``: ``busy_ns_total`` becomes ``..._busy_seconds_total``."""
    base = metric_name(channel_name) or "channel"
    if fname is None:
        return f"seqshm_{base}", GAUGE, f"seqshm.{base}", 1.0
    name = metric_name(fname)
    kind = COUNTER if name.endswith("_total") else GAUGE
    stem = name.removesuffix("_total")
    scale = 1.0
    for suffix, factor in _TIME_SUFFIXES.items():
        if stem.endswith(suffix):
            stem, scale = stem.removesuffix(suffix) + "_seconds", factor
            break
    full = f"seqshm_{base}_{stem}" + ("_total" if kind == COUNTER else "")
    return full, kind, f"seqshm.{base}.{stem.removesuffix('_seconds')}", scale


def index_labels(shape: tuple[int, ...]) -> list[tuple[str, ...]]:
    """Every index of an array of ``shape`` as label values, in C order."""
    if not shape:
        return [()]
    grids = np.indices(shape).reshape(len(shape), -1).T
    return [tuple(map(str, row)) for row in grids.tolist()]


def family_key(fam: Family) -> str:
    """The name a family has in an OpenMetrics exposition: a counter's without ``_total``
    (prometheus_client strips it, and adds it back to the samples only)."""
    return fam.name.removesuffix("_total") if fam.kind == COUNTER else fam.name


def meta_families() -> list[Family]:
    """The families every channel has: up, state, writes, the time and age of its write."""
    ch, och = ("channel",), ("seqshm.channel",)
    return [
        Family("seqshm_channel_up", GAUGE,
               "1 if the channel's writer is alive and a consistent snapshot was taken, else 0 "
               "(closed, writer died, replaced, truncated, gone, or stuck mid-write).",
               "seqshm.channel.up", "1", ch, och),
        Family("seqshm_channel_state", GAUGE,
               "The channel's state (ChannelState): 1 for the current one, 0 for the others.",
               "seqshm.channel.state", "1", ("channel", "state"), (*och, "seqshm.state")),
        Family("seqshm_channel_writes_total", COUNTER,
               "Writes published to the channel: the write number (seq) of the snapshot the "
               "other series of this channel come from.",
               "seqshm.channel.writes", "{write}", ch, och),
        Family("seqshm_channel_last_write_timestamp_seconds", GAUGE,
               "Unix time of the snapshot's write (the writer's timestamp on the channel's "
               "clock, moved to the realtime clock at collection).",
               "seqshm.channel.last_write.timestamp", "s", ch, och),
        Family("seqshm_channel_last_write_age_seconds", GAUGE,
               "Seconds between the snapshot's write and the collection, on the channel's "
               "clock.", "seqshm.channel.last_write.age", "s", ch, och),
        Family("seqshm_export_channels_unread", GAUGE,
               "Channels selected but not read at this scrape for lack of a resource of the "
               "exporter (reason: EMFILE, ENFILE, ENOMEM), or past --max-series (reason: "
               "max-series): left out of the other series, not reported down.",
               "seqshm.export.channels_unread", "{channel}", ("reason",),
               ("error.type",)),
    ]
