"""The exposition of ``seqshm export``'s own server: prometheus_client's text, rendered by the
library once per block of label values and reused, with only the sample values formatted anew.

prometheus_client formats each sample in Python (label escaping and validation, sorting,
float formatting): ~5 us per series on the host, ~0.3 ms under TCG, which made a 64-CPU
cpustat scrape (640 series) cost more than node_exporter's. But the label sets of a channel do
not change from scrape to scrape; only its values do. So the library renders each channel's
block of samples in each family once with placeholder values (a "template"), the text is split
around the values, the blocks' texts are put together as the library writes a scrape (each
family's header once, then its blocks in order, then the end: _stitchable checks the encoder
does so), and a scrape formats the values as the library does (its floatToGoString) and joins.
A channel renamed, added or gone costs its own blocks' templates, not every series'. The
output is the library's byte for byte (tests/test_export_exposition.py checks it against
generate_latest and OpenMetrics' generate_latest for random channels and scrapes); whatever a
template cannot be built for is rendered by the library itself.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import replace
from typing import Any, cast

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _float_to_go_string

from seqshm._families import COUNTER, GAUGE, Family

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


def _split(text: str, count: int) -> tuple[list[str], list[int]]:
    """``text``, an exposition of ``count`` samples whose value i was float(i), split around
    its values: (pieces, order), ``pieces[0] v[order[0]] pieces[1] ... v[order[-1]]
    pieces[-1]`` giving ``text`` back. Raises ValueError when the text does not split into
    exactly those values."""
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
    if _join(pieces, [floatToGoString(float(i)) for i in order]) != text:
        raise ValueError("the template does not give the exposition back")
    return pieces, order


def _join(pieces: Sequence[str], formatted: Sequence[str]) -> str:
    out = [""] * (2 * len(pieces) - 1)
    out[0::2] = pieces
    out[1::2] = formatted
    return "".join(out)


class _Template:
    """An exposition split around its sample values: ``pieces[0] v[order[0]] pieces[1] ...
    v[order[-1]] pieces[-1]``, with v the families' values in sample order (order None: in
    that order)."""

    def __init__(self, pieces: list[str], order: np.ndarray | None) -> None:
        self.pieces = pieces
        self.order = order
        self._last_bits: np.ndarray | None = None  # the values of the last render, as bits
        self._last_text: list[str] = []  # and their text

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
        return _join(self.pieces, formatted).encode("utf-8")


class _Block:
    """Samples as an encoder writes them, split: ``head`` (the header lines before the first
    sample: # HELP, # TYPE, # UNIT of its family), ``pieces`` and ``order`` as _Template's
    from the first sample line to the newline that ends the last, and ``tail`` (the lines
    after it: OpenMetrics' # EOF). Made of one family's block of label values alone (one
    channel's samples in that family), or of a whole scrape when the encoder does not write
    families as _stitchable expects."""

    __slots__ = ("head", "order", "pieces", "tail")

    def __init__(self, text: str, count: int) -> None:
        """``text``: the exposition of ``count`` (at least one) samples whose value i was
        float(i). Raises ValueError when it does not split into exactly those values."""
        if not count:
            raise ValueError("an exposition without samples")
        pieces, order = _split(text, count)
        cut = pieces[0].rfind("\n") + 1  # a sample line has no newline (escaped as \\n)
        self.head, pieces[0] = pieces[0][:cut], pieces[0][cut:]
        self.tail, pieces[-1] = pieces[-1][1:], "\n"  # the last piece starts with its "\n"
        self.pieces = pieces
        self.order = None if order == list(range(count)) else np.array(order, np.intp)


def _assemble(blocks: Sequence[tuple[_Block, bool]]) -> _Template:
    """The template of an exposition made of ``blocks`` (at least one), in sample order, each
    with whether it starts its family (its head written before it), then the last one's tail:
    what the encoder writes for a collector of those families (_stitchable)."""
    pieces: list[str] = []
    carry = ""  # the piece that ends the last block, joined to the first of the next
    for block, first in blocks:
        pieces.append(carry + block.head + block.pieces[0] if first else carry + block.pieces[0])
        pieces.extend(itertools.islice(block.pieces, 1, len(block.pieces) - 1))
        carry = block.pieces[-1]
    pieces.append(carry + blocks[-1][0].tail)
    if all(block.order is None for block, _ in blocks):
        return _Template(pieces, None)
    orders, start = [], 0
    for block, _ in blocks:
        count = len(block.pieces) - 1
        orders.append((np.arange(count) if block.order is None else block.order) + start)
        start += count
    return _Template(pieces, np.concatenate(orders))


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


def _probe_families() -> list[Family]:
    """Families of seqshm's kinds (a gauge; a counter in seconds, which OpenMetrics gives a
    # UNIT line), each of two blocks of label values, for _stitchable."""
    gauge = Family("seqshm_probe_up", GAUGE, "h", "", "", ("channel",), ("channel",))
    gauge.add((("/dev/shm/a",), ("/dev/shm/b",)), (0.0, 0.0))
    gauge.add((("/dev/shm/c",),), (0.0,))
    counter = Family("seqshm_probe_busy_seconds_total", COUNTER, "h\\n", "", "",
                     ("channel", "cpu"), ("channel", "cpu"))
    counter.add((("/dev/shm/a", "0"),), (0.0,))
    counter.add((("/dev/shm/c", "0"), ("/dev/shm/c", "1")), (0.0, 0.0))
    return [gauge, counter]


def _placeholders(families: Sequence[Family]) -> list[Metric]:
    """``families`` as prometheus_client's metric families whose sample i has the value
    float(i), numbered in sample order over all of them."""
    metrics = []
    count = 0
    for f in families:
        rows = [labels for block, _ in f.parts for labels in block]
        metrics.append(to_prometheus(f, zip(rows, map(float, range(count, count + len(rows))),
                                            strict=True)))
        count += len(rows)
    return metrics


def _stitchable(encoder: Encoder) -> bool:
    """Whether ``encoder`` writes a collector's families as _assemble puts them together:
    each family's header, then its samples block after block as each block alone gives
    them, then the exposition's tail (prometheus_client's text and OpenMetrics encoders
    do: generate_latest writes family after family), checked on _probe_families. If not,
    templates are kept per scrape, as a whole."""
    families = _probe_families()
    try:
        whole = encoder(_Metrics(_placeholders(families))).decode("utf-8")
        blocks = []
        for f in families:
            for i, part in enumerate(f.parts):
                text = encoder(_Metrics(_placeholders([replace(f, parts=[part])])))
                blocks.append((_Block(text.decode("utf-8"), len(part[0])), i == 0))
    except Exception:  # any failure: not writing families so, whatever the reason
        return False
    template = _assemble(blocks)
    order = range(len(template.pieces) - 1) if template.order is None else template.order
    return _join(template.pieces, [floatToGoString(float(i)) for i in order]) == whole


class ExpositionCache:
    """Expositions of metric families by ``encoder``, from templates of each block of label
    values (one channel's samples in one family: ChannelMetrics keeps those blocks from
    scrape to scrape, per channel and geometry; a new block, e.g. of a renamed or replaced
    channel or another set of online CPUs, is a new template), put together per shape of the
    scrape: names, kinds, help, units, label names, and the identity of each block. A shape
    that changes in one channel costs that channel's templates through prometheus_client,
    and the others' texts joined anew: not every series rendered again (breaker4 finding 3).
    Not thread-safe: one per server, which renders one scrape at a time."""

    #: Scrape shapes kept: a few formats times a few states of the channels (up, down, CPUs
    #: plugged), times the ?name[]= filters scrapers ask for
    MAX_TEMPLATES = 32
    #: What a block's template costs besides its samples' text, in samples (its key, its
    #: objects: ~600 bytes), so that many blocks of one sample count for what they hold
    BLOCK_COST = 4

    def __init__(self, max_samples: int = 400_000) -> None:
        """``max_samples``: samples the kept block templates may have in all (a sample's
        text and its label values cost ~150 bytes; a block costs BLOCK_COST samples more),
        and the kept scrape templates too (~80 bytes a sample: references to the blocks'
        texts, the last values and their text): past it the least recently used are
        dropped, so that blocks that come and go (another user's channel renamed at every
        scrape) cost no more."""
        # (encoder key, family name, kind, help, label names, id(rows)) -> (template or None:
        # the library renders scrapes with this block; rows, kept alive so that their id in
        # the key is not reused), least recently used first
        self._blocks: OrderedDict[Hashable, tuple[_Block | None, Any]] = OrderedDict()
        self._block_samples = 0  # in the kept blocks, BLOCK_COST each included
        # scrape shape -> (template or None, the label blocks), least recently used first
        self._scrapes: OrderedDict[Hashable, tuple[_Template | None, list[Any]]] = OrderedDict()
        self._scrape_samples = 0
        self._stitchable: dict[Hashable, bool] = {}  # encoder key -> _stitchable(encoder)
        self.max_samples = max_samples

    def render(self, families: Sequence[Family], encoder: Encoder) -> bytes:
        """``encoder``'s exposition of ``families`` (those without samples left out), the
        same bytes as ``encoder`` gives for their prometheus_client metric families."""
        families = [f for f in families if f.size]
        if not families:
            return encoder(_Metrics([]))
        ekey = encoder_key(encoder)
        key = (
            ekey,
            tuple(
                (f.name, f.kind, f.help, f.labels, tuple(id(rows) for rows, _ in f.parts))
                for f in families
            ),
        )
        entry = self._scrapes.get(key)
        if entry is None:
            entry = self._new_scrape(key, ekey, families, encoder)
        else:
            self._scrapes.move_to_end(key)
        template = entry[0]
        if template is None:
            return encoder(_Metrics([to_prometheus(f) for f in families]))
        parts = [values for f in families for _, values in f.parts]
        values = np.concatenate([np.asarray(v, np.float64).reshape(-1) for v in parts])
        return template.render(values)

    def _new_scrape(self, key: Hashable, ekey: Hashable, families: Sequence[Family],
                    encoder: Encoder) -> tuple[_Template | None, list[Any]]:
        """The template of a scrape shape not kept: put together from its blocks'
        templates (those not kept built), or one of the whole scrape for an encoder that is
        not _stitchable; kept."""
        stitchable = self._stitchable.get(ekey)
        if stitchable is None:
            if len(self._stitchable) >= 64:  # a few: canonical_encoder's outputs
                self._stitchable.clear()
            stitchable = self._stitchable[ekey] = _stitchable(encoder)
        if stitchable:
            blocks = [(self._block(ekey, f, rows, values, encoder), i == 0)
                      for f in families
                      for i, (rows, values) in enumerate((r, v) for r, v in f.parts if len(r))]
        else:
            blocks = [(self._build(families, encoder), True)]
        known = [(block, first) for block, first in blocks if block is not None]
        # a block the library writes otherwise than a template: it renders every scrape
        template = _assemble(known) if len(known) == len(blocks) else None
        entry = (template, [rows for f in families for rows, _ in f.parts])
        samples = sum(f.size for f in families)
        self._scrapes[key] = entry
        self._scrape_samples += samples
        while len(self._scrapes) > 1 and (len(self._scrapes) > self.MAX_TEMPLATES or
                                          self._scrape_samples > self.max_samples):
            _, (_, dropped) = self._scrapes.popitem(last=False)
            self._scrape_samples -= sum(len(rows) for rows in dropped)
        return entry

    def _block(self, ekey: Hashable, family: Family, rows: Sequence[tuple[str, ...]],
               values: Any, encoder: Encoder) -> _Block | None:
        """The template of ``family``'s block ``rows`` alone, kept or built (and kept)."""
        key = (ekey, family.name, family.kind, family.help, family.labels, id(rows))
        entry = self._blocks.get(key)
        if entry is not None:
            self._blocks.move_to_end(key)
            return entry[0]
        block = self._build([replace(family, parts=[(rows, values)])], encoder)
        self._blocks[key] = (block, rows)
        self._block_samples += len(rows) + self.BLOCK_COST
        while len(self._blocks) > 1 and self._block_samples > self.max_samples:
            _, (_, dropped) = self._blocks.popitem(last=False)
            self._block_samples -= len(dropped) + self.BLOCK_COST
        return block

    @staticmethod
    def _build(families: Sequence[Family], encoder: Encoder) -> _Block | None:
        """The template of ``families`` rendered by ``encoder`` with placeholder values, or
        None if the text cannot be split around them (the library renders each scrape with
        them)."""
        count = sum(f.size for f in families)
        try:
            return _Block(encoder(_Metrics(_placeholders(families))).decode("utf-8"), count)
        except ValueError:
            return None
