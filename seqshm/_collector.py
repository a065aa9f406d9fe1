"""seqshm export's prometheus_client side: SeqshmCollector (channels as metric families, one
snapshot per channel per scrape) and the registry whose scrape is rendered from templates
(seqshm._exposition). Imported through seqshm.export, which says what to install."""

from __future__ import annotations

import gzip
import logging
import threading
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import replace

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from seqshm._exposition import (
    Encoder,
    ExpositionCache,
    _Metrics,
    canonical_encoder,
    encoder_key,
    to_prometheus,
)
from seqshm._families import Family, meta_families
from seqshm._metrics import MAX_SERIES_PER_SCRAPE, ChannelMetrics

log = logging.getLogger("seqshm.export")


class SeqshmCollector(Collector):
    """A prometheus_client collector of seqshm channels: register it on any registry.

    ``channels``: names, paths and globs (None: every channel in /dev/seqshm and /dev/shm);
    ``sum_over``: labels to sum away at the source (``cpu``); ``timeout``: seconds a snapshot
    waits for a consistent copy; ``max_series``: data series a scrape may have over all
    channels (MAX_SERIES_PER_SCRAPE, 200,000), trusted channels first (ChannelMetrics).
    Raises ExportError (a glob that matches nothing, a channel
    without a numeric field, an unknown --sum-over label) or FileNotFoundError at once, never
    at a scrape: a channel that fails later is reported by ``seqshm_channel_up 0``.
    """

    def __init__(self, channels: Sequence[str] | None = None, *, sum_over: Iterable[str] = (),
                 timeout: float = 0.1,
                 max_series: int = MAX_SERIES_PER_SCRAPE) -> None:
        self.metrics = ChannelMetrics(channels, sum_over=sum_over, timeout=timeout,
                                      max_series=max_series)
        # each of the five outputs of seqshm's families (canonical_encoder) the templates of
        # a whole scrape's blocks and of the scrape, with room to spare: ~110 and ~90 bytes
        # a sample, ~240 MB at most (~370 MB if every scrape template kept outlived its
        # blocks)
        self._templates = ExpositionCache(max_samples=6 * max_series)
        self._render_warned: set[tuple[str, str]] = set()
        # scrapes take turns; one that arrives while another renders takes the answer of the
        # next render to start after it arrived (_Shared), so N concurrent scrapes cost two
        # renders, not N (a client sending requests and closing at once cannot queue renders)
        self._turn = threading.Condition()
        self._rendering = False
        self._started = 0  # renders started so far
        self._last: Answer | None = None  # the last render's

    def describe(self) -> Iterable[Metric]:
        """The families every scrape has, without samples, so that a registry refuses another
        collector of the same names; the data families depend on the channels found."""
        return [to_prometheus(f) for f in meta_families()]

    def collect(self) -> Iterable[Metric]:
        """One scrape: a snapshot of each channel, as metric families with samples."""
        return [to_prometheus(f) for f in self.metrics.collect() if f.size]

    def exposition(self, encoder: Encoder = generate_latest) -> bytes:
        """One scrape as ``encoder`` (prometheus_client's generate_latest, OpenMetrics'
        generate_latest, or a partial of either as choose_encoder gives them) renders it for
        this collector alone: the same bytes, from a template kept per shape of the channels
        (seqshm._exposition), so that a scrape formats only the values."""
        return self.answer(encoder).text

    def answer(self, encoder: Encoder = generate_latest,
               names: Iterable[str] | None = None) -> Answer:
        """One scrape's Answer as exposition() renders it, only the families named ``names``
        (prometheus_client's ``?name[]=`` filter: None, all). Scrapes take turns; one that
        arrives while another renders takes the answer of the next render of the same output
        (canonical_encoder) and names to start after it arrived, so N concurrent scrapes
        cost about two renders (and one compression), not N: a client that sends requests
        and closes at once cannot queue renders."""
        encoder = canonical_encoder(encoder)
        key = (encoder_key(encoder), None if names is None else frozenset(names))
        with self._turn:
            arrived = self._started
            while self._rendering:
                self._turn.wait()
                last = self._last
                # a render that started after this scrape arrived is as fresh as its own
                if last is not None and last.number > arrived and last.key == key:
                    return last
            self._rendering = True
            self._started += 1
            number = self._started
        done = None
        try:
            done = Answer(number, key, self._render(encoder, key[1]))
        finally:
            with self._turn:
                self._rendering = False
                self._last = done
                self._turn.notify_all()
        return done

    def _render(self, encoder: Encoder, names: frozenset[str] | None) -> bytes:
        """One collection rendered by ``encoder`` (answer() takes the turns)."""
        families = self.metrics.collect()
        if names is not None:  # as prometheus_client's restricted registry: by sample name
            families = [f for f in families if f.name in names]
        try:
            return self._templates.render(families, encoder)
        except Exception as e:  # one channel's series cannot be written: leave it out
            return self._templates.render(self._renderable(families, encoder, e), encoder)

    def _renderable(self, families: list[Family], encoder: Encoder, error: Exception
                    ) -> list[Family]:
        """``families`` less the blocks of samples (one channel's, in each family) that
        ``encoder`` cannot write, each left out with a warning once: a label value that is
        not text, a value the library cannot format. Nothing a channel holds should get
        here (label_value, numeric fields only); this is the net under that."""
        kept = []
        dropped = False
        for fam in families:
            parts = []
            for rows, values in fam.parts:
                try:
                    encoder(_Metrics([to_prometheus(replace(fam, parts=[(rows, values)]))]))
                except Exception as e:
                    key = (fam.name, repr(rows[:1]))
                    if key not in self._render_warned and len(self._render_warned) < 1024:
                        self._render_warned.add(key)
                        log.warning("series %s%s left out of the export: %r", fam.name,
                                    ascii(tuple(rows[:1])), e)
                    dropped = True
                    continue
                parts.append((rows, values))
            if parts:
                kept.append(replace(fam, parts=parts))
        if not dropped:  # not a channel's: the scrape fails (500), logged by the server
            raise error
        return kept

    def close(self) -> None:
        """Close the channels' readers (the next scrape opens them again)."""
        self.metrics.close()


class Answer:
    """One render's exposition (``text``), shared by the scrapes that take it, and its gzip
    compression, made once for all of them (``gzipped()``, as prometheus_client's level)."""

    def __init__(self, number: int, key: Hashable, text: bytes) -> None:
        self.number, self.key, self.text = number, key, text
        self._gzipped: bytes | None = None
        self._lock = threading.Lock()

    def gzipped(self) -> bytes:
        with self._lock:
            if self._gzipped is None:
                self._gzipped = gzip.compress(self.text)
            return self._gzipped


class _SeqshmRegistry(CollectorRegistry):
    """registry_of's registry: knows its SeqshmCollector while it has no other collector, so
    that the server renders it from templates (SeqshmCollector.exposition)."""

    def __init__(self, collector: SeqshmCollector) -> None:
        super().__init__(auto_describe=False)
        super().register(collector)
        self.seqshm: SeqshmCollector | None = collector

    def register(self, collector: Collector) -> None:
        self.seqshm = None  # another collector too: the library renders them all
        super().register(collector)

    def unregister(self, collector: Collector) -> None:
        self.seqshm = None
        super().unregister(collector)


def _seqshm_alone(registry: Collector) -> SeqshmCollector | None:
    """The SeqshmCollector that ``registry`` is or holds alone, if any."""
    if isinstance(registry, SeqshmCollector):
        return registry
    return registry.seqshm if isinstance(registry, _SeqshmRegistry) else None


def registry_of(collector: SeqshmCollector) -> CollectorRegistry:
    """A registry with ``collector`` alone (no process or Python metrics: a scrape costs what
    the channels cost). ``serve`` and ``exposition`` render it from templates while it has no
    other collector."""
    return _SeqshmRegistry(collector)


def exposition(registry: Collector, openmetrics: bool = False) -> bytes:
    """One scrape of ``registry`` as the Prometheus text format (or OpenMetrics)."""
    encoder = generate_openmetrics if openmetrics else generate_latest
    collector = _seqshm_alone(registry)
    return encoder(registry) if collector is None else collector.exposition(encoder)

