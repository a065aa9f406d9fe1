"""The exposition of ``seqshm export``'s own server: prometheus_client's text, rendered by the
library once per shape of the families and reused, with only the sample values formatted anew.

prometheus_client formats each sample in Python (label escaping and validation, sorting,
float formatting): ~5 us per series on the host, ~0.3 ms under TCG, which made a 64-CPU
cpustat scrape (640 series) cost more than node_exporter's. But the label sets of a channel do
not change from scrape to scrape; only its values do. So the library renders the families once
with placeholder values (a "template"), the text is split around the values, and a scrape
formats the values as the library does (its floatToGoString) and joins. The output is the
library's byte for byte (tests/test_export_exposition.py checks it against generate_latest and
OpenMetrics' generate_latest for random channels); whatever the template cannot be built for
is rendered by the library itself.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, cast

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _float_to_go_string

from seqshm._families import COUNTER, Family

__all__ = ["Encoder", "ExpositionCache", "canonical_encoder", "encoder_key", "format_values",
           "to_prometheus"]

#: An exposition function of prometheus_client (generate_latest, or a partial of it or of the
#: OpenMetrics one, as choose_encoder returns them): a collector's metrics as bytes.
Encoder = Callable[[Collector], bytes]

#: prometheus_client's float formatting (untyped there)
floatToGoString = cast(Callable[[float], str], _float_to_go_string)

#: Below this, a finite float is written by floatToGoString as Python's repr() writes it: the
#: library switches to Go's exponent form only for positive values with more than 6 integer
#: digits (repr's shortest round-trip form of a float below 1e6 has at most 6).
_REPR_BELOW = 1e6


def to_prometheus(
    family: Family, samples: Iterable[tuple[Sequence[str], float]] | None = None
) -> Metric:
    """A metric family as prometheus_client's CounterMetricFamily or GaugeMetricFamily, with
    its samples (or ``samples``: label values and value pairs)."""
    cls = CounterMetricFamily if family.kind == COUNTER else GaugeMetricFamily
    metric = cls(family.name, family.help, labels=family.labels, unit=family.prometheus_unit)
    add = metric.add_metric
    for labels, value in family.samples if samples is None else samples:
        add(labels, value)
    return metric


class _Metrics(Collector):
    """Metric families already made, as a collector for an encoder."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


def format_values(values: np.ndarray) -> list[str]:
    """Float64 ``values`` as prometheus_client's floatToGoString writes each: repr() for the
    finite ones below 1e6 (checked in one NumPy pass), the library's function for the others
    (+Inf, -Inf, NaN, and the Go exponent form of large positive values)."""
    as_floats = values.tolist()
    out = list(map(float.__repr__, as_floats))
    # NaN fails both comparisons
    for i in np.flatnonzero(~((values < _REPR_BELOW) & (values > -math.inf))).tolist():
        out[i] = floatToGoString(as_floats[i])
    return out


class _Template:
    """An exposition split around its sample values: ``pieces[0] v[order[0]] pieces[1] ...
    v[order[-1]] pieces[-1]``, with v the families' values in sample order."""

    def __init__(self, text: str, count: int) -> None:
        """``text``: the exposition of ``count`` samples whose value i was float(i). Raises
        ValueError when the text does not split into exactly those values."""
        pieces: list[str] = []
        order: list[int] = []
        pending: list[str] = []
        lines = text.split("\n")
        if lines[-1]:
            raise ValueError("the exposition does not end with a newline")
        for line in lines[:-1]:
            if line.startswith("#"):  # HELP, TYPE, UNIT, EOF
                pending.append(line + "\n")
                continue
            head, space, value = line.rpartition(" ")  # the value is a line's last word
            try:
                index = int(float(value))
            except OverflowError:  # +Inf, -Inf (NaN raises ValueError)
                index = -1
            if not space or float(index) != float(value) or not 0 <= index < count:
                raise ValueError(f"sample line {line!r} does not end with a placeholder")
            pending.append(head + " ")
            pieces.append("".join(pending))
            pending = ["\n"]
            order.append(index)
        pieces.append("".join(pending))
        if sorted(order) != list(range(count)):
            raise ValueError("the exposition does not have each sample once")
        self.pieces = pieces
        self._last_bits: np.ndarray | None = None  # the values of the last render, as bits
        self._last_text: list[str] = []  # and their text
        self.order: np.ndarray | None = (
            None if order == list(range(count)) else np.array(order, np.intp)
        )
        if self.join([floatToGoString(float(i)) for i in order]) != text:
            raise ValueError("the template does not give the exposition back")

    def join(self, formatted: Sequence[str]) -> str:
        out = [""] * (2 * len(self.pieces) - 1)
        out[0::2] = self.pieces
        out[1::2] = formatted
        return "".join(out)

    def render(self, values: np.ndarray) -> bytes:
        if self.order is not None:
            values = values[self.order]
        # Formatting is most of a scrape's cost (repr() is ~0.15 us a float on the host), and
        # many values are those of the last scrape (a CPU's nice, irq, steal, guest seconds;
        # all of them when the channel was not written since): their text is kept. Compared
        # bit for bit, so -0.0 is not 0.0, and a NaN is formatted as any other change.
        bits = values.view(np.uint64)
        last = self._last_bits
        if last is None or len(last) != len(bits):
            formatted = format_values(values)
        else:
            formatted = self._last_text
            changed = np.flatnonzero(bits != last)
            if len(changed) > len(bits) // 2:
                formatted = format_values(values)
            elif len(changed):
                for i, text in zip(changed.tolist(), format_values(values[changed]), strict=True):
                    formatted[i] = text
        self._last_bits, self._last_text = bits.copy(), formatted
        return self.join(formatted).encode("utf-8")


def encoder_key(encoder: Encoder) -> Hashable:
    """What an encoder renders with: a function, or a partial's function and arguments (as
    choose_encoder makes a new partial for each request)."""
    func = getattr(encoder, "func", None)
    if func is None:
        return encoder
    return (
        func,
        getattr(encoder, "args", ()),
        tuple(sorted(getattr(encoder, "keywords", {}).items())),
    )


def _probe() -> Collector:
    """A registry whose exposition tells apart every output an encoder may give seqshm's
    families: a gauge and a counter with seqshm's kind of names (underscores, _total; never
    a '.' or a character outside [a-zA-Z0-9_], see metric_name), which the escapings
    'dots' and 'values' change and the others do not."""
    gauge = GaugeMetricFamily("seqshm_probe_up", "h", labels=["channel"])
    gauge.add_metric(["/dev/shm/a.b"], 1.0)
    counter = CounterMetricFamily("seqshm_probe_busy_seconds", "h", labels=["channel"])
    counter.add_metric(["/dev/shm/a.b"], 1.0)
    return _Metrics([gauge, counter])


_PROBE = _probe()
#: encoder_key -> the canonical encoder of its output (bounded: a client chooses the key)
_canonical: dict[Hashable, Encoder] = {}
#: the probe's exposition -> the first encoder that gave it (a handful: the outputs differ)
_by_output: dict[bytes, Encoder] = {}
_canonical_lock = threading.Lock()


def canonical_encoder(encoder: Encoder) -> Encoder:
    """The encoder whose output ``encoder``'s is for seqshm's families, one per distinct
    output: choose_encoder makes an encoder of whatever version string a client sends
    (``version=1.0.7``) and ten of the formats it knows, but they write seqshm's families in
    five ways, so templates and shared renders are kept per output, not per request (a client
    rotating version strings or formats made every render cold, breaker4 findings 4 and 5).
    Costs the probe's exposition (~50 us) for an encoder not seen lately."""
    key = encoder_key(encoder)
    with _canonical_lock:
        known = _canonical.get(key)
    if known is not None:
        return known
    output = encoder(_PROBE)
    with _canonical_lock:
        same = _by_output.setdefault(output, encoder)
        if len(_canonical) >= 64:
            _canonical.clear()
        _canonical[key] = same
    return same


class ExpositionCache:
    """Expositions of metric families by ``encoder``, from templates kept per shape of the
    families: names, kinds, help, units, label names, and the identity of each block of label
    values (ChannelMetrics keeps those blocks from scrape to scrape, per channel and geometry;
    a new block, e.g. of a replaced channel or another set of online CPUs, is a new shape).
    Not thread-safe: one per server, which renders one scrape at a time."""

    #: Shapes kept: a few formats times a few states of the channels (up, down, CPUs plugged)
    MAX_TEMPLATES = 32

    def __init__(self, max_samples: int = 400_000) -> None:
        """``max_samples``: samples the kept templates may have in all (a template and its
        label blocks cost ~150 bytes a sample): past it they are dropped, so that shapes that
        come and go (another user's channel renamed at every scrape) cost no more."""
        # key -> (template or None: the library renders that shape; the label blocks, kept
        # alive so that their ids in the key are not reused)
        self._templates: dict[Hashable, tuple[_Template | None, list[Any]]] = {}
        self.max_samples = max_samples
        self._samples = 0  # in the templates kept

    def render(self, families: Sequence[Family], encoder: Encoder) -> bytes:
        """``encoder``'s exposition of ``families`` (those without samples left out), the
        same bytes as ``encoder`` gives for their prometheus_client metric families."""
        families = [f for f in families if f.size]
        blocks = [rows for f in families for rows, _ in f.parts]
        key = (
            encoder_key(encoder),
            tuple(
                (f.name, f.kind, f.help, f.labels, tuple(id(rows) for rows, _ in f.parts))
                for f in families
            ),
        )
        entry = self._templates.get(key)
        if entry is None:
            entry = (self._build(families, encoder), blocks)
            samples = sum(len(rows) for rows in blocks)
            if len(self._templates) >= self.MAX_TEMPLATES or \
                    self._samples + samples > self.max_samples:
                self._templates.clear()
                self._samples = 0
            self._templates[key] = entry
            self._samples += samples
        template = entry[0]
        if template is None:
            return encoder(_Metrics([to_prometheus(f) for f in families]))
        parts = [values for f in families for _, values in f.parts]
        values = (
            np.concatenate([np.asarray(v, np.float64).reshape(-1) for v in parts])
            if parts
            else np.empty(0)
        )
        return template.render(values)

    @staticmethod
    def _build(families: Sequence[Family], encoder: Encoder) -> _Template | None:
        """The template of ``families`` rendered by ``encoder`` with placeholder values, or
        None if the text cannot be split around them (the library renders each scrape)."""
        metrics = []
        count = 0
        for f in families:
            rows = [labels for block, _ in f.parts for labels in block]
            placeholders = map(float, range(count, count + len(rows)))
            metrics.append(to_prometheus(f, zip(rows, placeholders, strict=True)))
            count += len(rows)
        try:
            return _Template(encoder(_Metrics(metrics)).decode("utf-8"), count)
        except ValueError:
            return None
