"""seqshm.otel as an OpenTelemetry SDK sees it: observable instruments read by the SDK's
InMemoryMetricReader, cpustat as system.cpu.time, one snapshot per collection."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Sum

import seqshm
from seqshm._cpustat import CPUSTAT_DTYPE
from seqshm.otel import SeqshmInstruments


@pytest.fixture
def reader() -> Iterator[tuple[InMemoryMetricReader, MeterProvider]]:
    r = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[r])
    yield r, provider
    provider.shutdown()


def points(r: InMemoryMetricReader) -> dict[str, tuple[Any, list[Any]]]:
    """One collection: instrument name -> (its data, its points)."""
    data = r.get_metrics_data()
    assert data is not None
    out = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = (m, list(m.data.data_points))
    return out


def test_cpustat_is_system_cpu_time_a_monotonic_cumulative_sum_in_seconds(
        reader: tuple[InMemoryMetricReader, MeterProvider], shm_path: str) -> None:
    r, provider = reader
    rec = np.zeros(2, CPUSTAT_DTYPE)
    rec["online"] = 1
    rec["idle_ns"] = [5_000_000_000, 7_000_000_000]
    with seqshm.create(shm_path, CPUSTAT_DTYPE, 2, name="cpustat") as w:
        w.write(rec)
        SeqshmInstruments(provider.get_meter("t"), [shm_path])
        got = points(r)
    metric, pts = got["system.cpu.time"]
    assert isinstance(metric.data, Sum) and metric.data.is_monotonic and metric.unit == "s"
    idle = {p.attributes["cpu.logical_number"]: p.value for p in pts
            if p.attributes["cpu.mode"] == "idle"}
    assert idle == {0: 5.0, 1: 7.0}  # the CPU number is an int attribute, as semconv has it
    up = got["seqshm.channel.up"][1]
    assert [(p.attributes["seqshm.channel"], p.value) for p in up] == [(shm_path, 1)]


def test_all_instruments_of_a_collection_come_from_one_snapshot(
        reader: tuple[InMemoryMetricReader, MeterProvider], shm_path: str) -> None:
    """A writer fills write k with k; in each collection every instrument of the channel
    shows the same k, equal to seqshm.channel.writes, and the next collection a newer one."""
    r, provider = reader
    rec = np.dtype([("a_total", np.uint64), ("b", np.float64, (3,))])
    stop = threading.Event()
    with seqshm.create(shm_path, rec, 8, nr_slots=2, name="fast") as w:
        buf = np.zeros(8, rec)

        def hammer() -> None:
            while not stop.is_set():
                k = w.seq + 1
                buf["a_total"], buf["b"] = k, k
                w.write(buf)

        t = threading.Thread(target=hammer)
        t.start()
        try:
            bridge = SeqshmInstruments(provider.get_meter("t"), [shm_path])
            before = bridge.collections
            seen = []
            for _ in range(20):
                got = points(r)
                (writes,) = [p.value for p in got["seqshm.channel.writes"][1]]
                values = {p.value for name in ("seqshm.fast.a", "seqshm.fast.b")
                          for p in got[name][1]}
                assert values == {writes}
                seen.append(writes)
                time.sleep(0.01)  # the writer thread gets the GIL and moves on
        finally:
            stop.set()
            t.join()
    assert bridge.collections - before == 20  # one snapshot per collection, not per instrument
    assert seen == sorted(seen) and len(set(seen)) > 5


def test_a_closed_channel_reports_down_and_no_data_points(
        reader: tuple[InMemoryMetricReader, MeterProvider], shm_path: str) -> None:
    r, provider = reader
    w = seqshm.create(shm_path, np.float64, 2, name="gone")
    w.write([1.0, 2.0])
    SeqshmInstruments(provider.get_meter("t"), [shm_path])
    assert [p.value for p in points(r)["seqshm.gone"][1]] == [1.0, 2.0]
    w.close()
    got = points(r)
    assert [p.value for p in got["seqshm.channel.up"][1]] == [0]
    assert "seqshm.gone" not in got or not got["seqshm.gone"][1]


def test_refresh_adds_instruments_for_channels_that_appeared(
        reader: tuple[InMemoryMetricReader, MeterProvider], shm_path: str) -> None:
    r, provider = reader
    first, second = shm_path + "-a", shm_path + "-b"
    try:
        with seqshm.create(first, np.float64, 1, name="one") as w1:
            w1.write([1.0])
            bridge = SeqshmInstruments(provider.get_meter("t"), [shm_path + "-*"])
            with seqshm.create(second, np.float64, 1, name="two") as w2:
                w2.write([2.0])
                assert "seqshm.two" not in points(r)
                assert bridge.refresh() == ["seqshm.two"]
                assert [p.value for p in points(r)["seqshm.two"][1]] == [2.0]
    finally:
        for p in (first, second):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
