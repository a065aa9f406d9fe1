"""OpenTelemetry bridge: seqshm channels as observable instruments of an opentelemetry-sdk meter,
one snapshot per channel per collection (needs ``seqshm[export]``).

    from opentelemetry.sdk.metrics import MeterProvider
    from seqshm.otel import SeqshmInstruments
    provider = MeterProvider(metric_readers=[reader])
    SeqshmInstruments(provider.get_meter("seqshm"), ["cpustat"])

The families are those of ``seqshm export`` (seqshm._metrics.ChannelMetrics) under
OpenTelemetry names: cpustat as the semantic conventions' ``system.cpu.time`` (attributes
``cpu.logical_number``, an int, and ``cpu.mode``; unit s), other records as
``seqshm.<channel>.<field>``, counters (fields named ``..._total``) as ObservableCounters of
cumulative values, the rest as ObservableGauges.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

try:
    from opentelemetry.metrics import CallbackOptions, Meter, Observation
except ImportError as e:  # the core needs no extra; this module does
    raise ImportError(f"seqshm.otel needs opentelemetry-sdk: pip install 'seqshm[export]' "
                      f"({e})") from e

from seqshm._families import COUNTER, Family
from seqshm._metrics import MAX_SERIES_PER_SCRAPE, ChannelMetrics

__all__ = ["SeqshmInstruments"]


class SeqshmInstruments:
    """Observable instruments on ``meter`` for the channels ``channels`` names (names, paths,
    globs; None: every channel), as ``seqshm export`` selects them (``sum_over``, ``timeout``,
    ``max_series`` the same too; errors the same: ExportError, FileNotFoundError).

    One collection takes one snapshot per channel, shared by all its instruments: the SDK
    calls each instrument's callback once per collection, so the snapshot is taken anew when
    an instrument asks a second time, i.e. at the next collection (whatever order the SDK
    calls them in). Instruments are made for the families found now; ``refresh()`` adds those
    of channels that appeared since.
    """

    def __init__(self, meter: Meter, channels: Sequence[str] | None = None, *,
                 sum_over: Iterable[str] = (), timeout: float = 0.1,
                 max_series: int = MAX_SERIES_PER_SCRAPE) -> None:
        self.meter = meter
        self.metrics = ChannelMetrics(channels, sum_over=sum_over, timeout=timeout,
                                      max_series=max_series)
        self._lock = threading.Lock()
        self._current: dict[str, Family] = {}
        self._served: set[str] = set()
        self._instruments: dict[str, Any] = {}
        self.collections = 0  # snapshots taken of the selection: one per SDK collection
        self.refresh()

    def refresh(self) -> list[str]:
        """Make instruments for the families of a collection taken now that have none yet;
        returns the OpenTelemetry names of the new ones."""
        with self._lock:
            families = self._collect()
        new = []
        for fam in families:
            if fam.name in self._instruments:
                continue
            make = (self.meter.create_observable_counter if fam.kind == COUNTER
                    else self.meter.create_observable_gauge)
            self._instruments[fam.name] = make(fam.otel_name, callbacks=[self._callback(fam.name)],
                                               unit=fam.unit, description=fam.help)
            new.append(fam.otel_name)
        with self._lock:
            self._current = {}  # that collection named the families: the SDK's takes its own
            self._served.clear()
        return new

    def close(self) -> None:
        """Close the channels' readers (a later collection opens them again)."""
        self.metrics.close()

    def _collect(self) -> list[Family]:
        families = self.metrics.collect()
        self._current = {f.name: f for f in families}
        self.collections += 1
        return families

    def _callback(self, name: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return self.observe(name)
        return observe

    def observe(self, name: str) -> list[Observation]:
        """The observations of family ``name`` (its Prometheus name) for this collection."""
        with self._lock:
            if name in self._served or not self._current:
                self._collect()
                self._served = set()
            self._served.add(name)
            fam = self._current.get(name)
        if fam is None:
            return []  # the channel is gone or its writer is: no value, not a frozen one
        keys, ints = fam.otel_labels, fam.int_labels
        conv = [n in ints for n in fam.labels]
        return [Observation(value, {k: int(v) if c else v
                                    for k, v, c in zip(keys, values, conv, strict=True)})
                for values, value in fam.samples]
