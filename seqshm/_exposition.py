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
    if _join(pieces, format_values(np.array(order, np.float64))) != text:
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
    """One family's samples as an encoder writes them, split: ``head`` (its header lines: #
    HELP, # TYPE, # UNIT), ``pieces`` (the text before each value, as samples follow one
    another: the newline that ended the line before, then the sample's name and labels), and
    ``order`` (as _Template's). So a block that follows another of its family is its pieces
    as they are, and _assemble makes a new text only where a family starts."""

    __slots__ = ("head", "order", "pieces")

    def __init__(self, head: str, pieces: list[str], order: np.ndarray | None) -> None:
        self.head, self.pieces, self.order = head, pieces, order


def _blocks_of(text: str, counts: Sequence[Sequence[int]]) -> tuple[list[_Block], str]:
    """``text``, an exposition of families whose blocks have ``counts`` samples (each at
    least one), whose value i was float(i), as a _Block per block in sample order, and the
    tail of the exposition (the lines after the last sample's: OpenMetrics' # EOF). Raises
    ValueError when it does not split so: into exactly those values, each family's samples
    after its header, each block's together."""
    pieces, order = _split(text, sum(map(sum, counts)))
    blocks = []
    start = 0
    for family in counts:
        head = ""
        for i, count in enumerate(family):
            own = order[start:start + count]
            if not count or sorted(own) != list(range(start, start + count)):
                raise ValueError("a block's samples are not written together")
            lead = pieces[start]
            cut = lead.rfind("\n") + 1  # a sample line has no newline (escaped as \\n)
            if i == 0:  # after the newline that ends the line before: the family's header
                head = lead[1 if start else 0:cut]
                if not head.startswith("#"):
                    raise ValueError("a family without its header")
            elif cut != 1:
                raise ValueError("a block's samples are not its family's")
            mine = pieces[start:start + count]
            mine[0] = "\n" + lead[cut:]
            moved = own != list(range(start, start + count))
            blocks.append(_Block(head, mine, np.array(own, np.intp) - start if moved else None))
            start += count
    return blocks, pieces[-1][1:]  # the last piece starts with its "\n"


def _assemble(blocks: Sequence[tuple[_Block, bool]], tail: str) -> _Template:
    """The template of an exposition made of ``blocks`` (at least one), in sample order, each
    with whether it starts its family (its head written before it), then ``tail``: what the
    encoder writes for a collector of those families (_stitchable). Shares the blocks' texts
    but for a piece per family."""
    pieces: list[str] = []
    for block, first in blocks:
        if first:  # the newline that ends the line before, the family's header, the sample
            lead = block.pieces[0]
            pieces.append((lead[0] + block.head + lead[1:]) if pieces else block.head + lead[1:])
        else:
            pieces.append(block.pieces[0])
        pieces.extend(itertools.islice(block.pieces, 1, None))
    pieces.append("\n" + tail)
    if all(block.order is None for block, _ in blocks):
        return _Template(pieces, None)
    orders, start = [], 0
    for block, _ in blocks:
        orders.append((np.arange(len(block.pieces)) if block.order is None else block.order)
                      + start)
        start += len(block.pieces)
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


def _stitchable(encoder: Encoder) -> str | None:
    """Whether ``encoder`` writes a collector's families as ExpositionCache puts them
    together: each family's header and samples after the last family's, whatever the
    families before, its samples in the order added and each block's as they are whatever
    the blocks before; then the exposition's tail (prometheus_client's text and OpenMetrics
    encoders do: generate_latest writes family after family, sample after sample). Checked
    on _probe_families, each block built in another exposition than the whole's and put
    together: the tail if so, else None (the library renders every scrape)."""
    gauge, counter = _probe_families()
    try:
        whole = encoder(_Metrics(_placeholders([gauge, counter]))).decode("utf-8")
        later = replace(counter, parts=counter.parts[1:])  # first of its family when built
        text = encoder(_Metrics(_placeholders([later]))).decode("utf-8")
        [second], tail = _blocks_of(text, [[later.size]])
        first = replace(counter, parts=counter.parts[:1])
        text = encoder(_Metrics(_placeholders([gauge, first]))).decode("utf-8")
        blocks, _ = _blocks_of(text, [[len(r) for r, _ in gauge.parts], [first.size]])
    except Exception:  # any failure: not writing families so, whatever the reason
        return None
    template = _assemble([(blocks[0], True), (blocks[1], False), (blocks[2], True),
                          (second, False)], tail)
    order = range(len(template.pieces) - 1) if template.order is None else template.order
    same = _join(template.pieces, [floatToGoString(float(i)) for i in order]) == whole
    return tail if same else None


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
    #: objects: ~400 bytes), so that many blocks of one sample count for what they hold
    BLOCK_COST = 4

    def __init__(self, max_samples: int = 400_000) -> None:
        """``max_samples``: samples the kept block templates may have in all (~110 bytes a
        sample: its text; a block costs BLOCK_COST samples more), and the kept scrape
        templates too (~90 bytes a sample: references to the blocks' texts, the last values
        and their text; and the texts of blocks since dropped): past it the least recently
        used are dropped, so that blocks that come and go (another user's channel renamed
        at every scrape) cost no more. A whole-scrape template was ~195 bytes a sample."""
        # (encoder key, family name, kind, help, label names, id(rows)) -> (template; rows,
        # kept alive so that their id in the key is not reused), least recently used first
        self._blocks: OrderedDict[Hashable, tuple[_Block, Any]] = OrderedDict()
        self._block_samples = 0  # in the kept blocks, BLOCK_COST each included
        # scrape shape -> (template or None, the label blocks), least recently used first
        self._scrapes: OrderedDict[Hashable, tuple[_Template | None, list[Any]]] = OrderedDict()
        self._scrape_samples = 0
        self._tails: dict[Hashable, str | None] = {}  # encoder key -> _stitchable(encoder)
        self._texts: dict[str, str] = {}  # the blocks' heads, each text once
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
        """The template of a scrape shape not kept (kept from now on): put together from its
        blocks' templates, those not kept built in one exposition by the library; None (the
        library renders each scrape of this shape) for an encoder that is not _stitchable
        or blocks that do not split around their values."""
        if ekey not in self._tails:
            if len(self._tails) >= 64:  # a few: canonical_encoder's outputs
                self._tails.clear()
            self._tails[ekey] = _stitchable(encoder)
        tail = self._tails[ekey]
        template = None
        if tail is not None:
            blocks = self._blocks_of(ekey, families, encoder, tail)
            if blocks is not None:
                template = _assemble(blocks, tail)
        entry = (template, [rows for f in families for rows, _ in f.parts])
        self._scrapes[key] = entry
        self._scrape_samples += sum(f.size for f in families)
        while len(self._scrapes) > 1 and (len(self._scrapes) > self.MAX_TEMPLATES or
                                          self._scrape_samples > self.max_samples):
            _, (_, dropped) = self._scrapes.popitem(last=False)
            self._scrape_samples -= sum(len(rows) for rows in dropped)
        return entry

    def _blocks_of(self, ekey: Hashable, families: Sequence[Family], encoder: Encoder,
                   tail: str) -> list[tuple[_Block, bool]] | None:
        """The template of each block of ``families`` with samples, in sample order, and
        whether it is the first of its family: those kept, and the others built in one
        exposition and kept (least recently used dropped past max_samples); None if those do
        not split around their values, or end otherwise than ``tail``."""
        kept, move = self._blocks.get, self._blocks.move_to_end
        blocks: list[tuple[_Block | None, bool]] = []
        # the blocks to build, by family (their keys, and the family of those alone), and
        # where each goes (a block twice in a scrape is built once)
        missing: dict[Hashable, tuple[dict[Hashable, None], Family]] = {}
        pending: list[tuple[int, Hashable]] = []
        for f in families:
            sig = (ekey, f.name, f.kind, f.help, f.labels)
            first = True
            for rows, values in f.parts:
                if not len(rows):
                    continue
                key: Hashable = (sig, id(rows))
                entry = kept(key)
                if entry is not None:
                    move(key)
                    blocks.append((entry[0], first))
                else:
                    if sig not in missing:
                        missing[sig] = ({}, replace(f, parts=[]))
                    keys, alone = missing[sig]
                    if key not in keys:
                        keys[key] = None
                        alone.parts.append((rows, values))
                    pending.append((len(blocks), key))
                    blocks.append((None, first))
                first = False
        if missing:
            built = self._build([alone for _, alone in missing.values()], encoder)
            if built is None or built[1] != tail:
                return None
            built_keys = [key for keys, _ in missing.values() for key in keys]
            rows_of = [rows for _, alone in missing.values() for rows, _ in alone.parts]
            new = dict(zip(built_keys, built[0], strict=True))
            texts = self._texts
            for key, rows in zip(built_keys, rows_of, strict=True):
                block = new[key]
                if len(texts) >= 4096:  # bounded: family names and help come from channels
                    texts.clear()
                block.head = texts.setdefault(block.head, block.head)  # one per family
                self._blocks[key] = (block, rows)
                self._block_samples += len(rows) + self.BLOCK_COST
            for i, key in pending:
                blocks[i] = (new[key], blocks[i][1])
            while len(self._blocks) > 1 and self._block_samples > self.max_samples:
                _, (_, dropped) = self._blocks.popitem(last=False)
                self._block_samples -= len(dropped) + self.BLOCK_COST
        return cast(list[tuple[_Block, bool]], blocks)

    @staticmethod
    def _build(families: Sequence[Family], encoder: Encoder
               ) -> tuple[list[_Block], str] | None:
        """The templates of the blocks of ``families`` (a _Block each, in sample order) from
        their exposition by ``encoder`` with placeholder values, and its tail; None if the
        text cannot be split around them (the library renders each scrape with them)."""
        try:
            text = encoder(_Metrics(_placeholders(families))).decode("utf-8")
            return _blocks_of(text, [[len(rows) for rows, _ in f.parts] for f in families])
        except ValueError:
            return None
