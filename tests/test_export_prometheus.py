"""seqshm export against the real programs, started by the tests on loopback: Debian's
prometheus scrapes it and is queried through its HTTP API, promtool lints the exposition, and
prometheus-node-exporter's cpu collector reports the same CPU seconds. Without the programs
these tests fail: scripts/test installs them (apt-get, as root)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from exporting import (
    binary,
    by_cpu_mode,
    cpustat_publisher,
    get,
    node_exporter,
    parse,
    pick,
    prometheus,
    seqshm_exporter,
)

import seqshm
from seqshm import export
from seqshm._cpustat import USER_HZ
from seqshm._families import CPU_MODES

RATE_HZ = 100.0


@pytest.fixture
def cpustat_channel(shm_path: str) -> Iterator[str]:
    with cpustat_publisher(shm_path, RATE_HZ) as path:
        yield path


def test_promtool_check_metrics_finds_no_problem_in_the_exposition(
        cpustat_channel: str, make_path: Callable[[], str]) -> None:
    promtool = binary("promtool")
    rec = np.dtype([("temp", np.float64), ("sent_bytes_total", np.uint64),
                    ("busy_ns_total", np.uint64), ("xyz", np.float32, (3,))])
    other = make_path()
    with seqshm.create(other, rec, 4, name="robot") as w:
        w.write(np.ones(4, rec))
        text = export.exposition(export.registry_of(
            export.SeqshmCollector([cpustat_channel, other])))
    assert b"node_cpu_seconds_total" in text and b"seqshm_robot_sent_bytes_total" in text
    lint = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          timeout=60)
    assert (lint.returncode, lint.stdout, lint.stderr) == (0, b"", b"")


def test_prometheus_scrapes_node_cpu_seconds_with_sane_rates(cpustat_channel: str) -> None:
    with seqshm_exporter(cpustat_channel) as (_, url), prometheus({"seqshm": url}) as prom:
        cpus = sorted({c for c, _ in by_cpu_mode(
            pick(parse(get(url)), "node_cpu_seconds_total"))})
        # the series exist, per CPU and mode, with node_exporter's labels and the target's
        series = prom.wait_for('node_cpu_seconds_total{job="seqshm"}', len(cpus) * 8)
        labels = {(s["metric"]["cpu"], s["metric"]["mode"]) for s in series}
        assert labels == {(c, m) for c in cpus for m in CPU_MODES}
        assert all(set(s["metric"]) == {"__name__", "cpu", "mode", "instance", "job"}
                   for s in series)
        up = prom.query('seqshm_channel_up{job="seqshm"}')
        assert [(s["metric"]["channel"], s["value"][1]) for s in up] == [(cpustat_channel, "1")]
        # every CPU spends one second per second in some mode: the rates add up to ~1 (once
        # the window holds 4 scrapes: rate() extrapolates a window it does not cover)
        prom.wait_for('count_over_time(node_cpu_seconds_total{job="seqshm",mode="idle"}[4s])'
                      ' >= 4', len(cpus))
        rates = prom.query('sum by (cpu) (rate(node_cpu_seconds_total{job="seqshm"}[4s]))')
        assert len(rates) == len(cpus)
        for s in rates:
            assert 0.6 < float(s["value"][1]) < 1.4, s
        busy = prom.query('rate(node_cpu_seconds_total{job="seqshm",mode="idle"}[4s])')
        assert all(0 <= float(s["value"][1]) <= 1.2 for s in busy)


def test_in_prometheus_a_closed_channel_goes_down_and_its_series_go_stale(
        shm_path: str) -> None:
    w = seqshm.create(shm_path, np.float64, 2, name="gone")
    try:
        w.write([1.0, 2.0])
        with seqshm_exporter(shm_path) as (_, url), prometheus({"seqshm": url}) as prom:
            prom.wait_for('seqshm_gone{job="seqshm"}', 2)
            w.close()
            prom.wait_for(f'seqshm_channel_up{{channel="{shm_path}"}} == 0')
            assert prom.query(f'seqshm_channel_state{{channel="{shm_path}",state="closed"}}'
                              ' == 1')
            # the data series ended with the writer: no frozen last value in queries
            assert prom.query('seqshm_gone{job="seqshm"}') == []
    finally:
        w.close()


def test_seqshm_and_node_exporter_report_the_same_cpu_seconds(cpustat_channel: str) -> None:
    with seqshm_exporter(cpustat_channel) as (_, ours), node_exporter() as (_, theirs):
        for _attempt in range(3):
            t0 = time.monotonic()
            a = by_cpu_mode(pick(parse(get(ours)), "node_cpu_seconds_total"))
            b = by_cpu_mode(pick(parse(get(theirs)), "node_cpu_seconds_total"))
            elapsed = time.monotonic() - t0
            assert a.keys() == b.keys()
            # each counter moves at most 1 s/s: the scrapes' distance in time, the sampling
            # period of the channel, and a tick of rounding on either side
            bound = elapsed + 1 / RATE_HZ + 2 / USER_HZ
            worst = max(abs(a[k] - b[k]) for k in a)
            if worst <= bound:
                break
        assert worst <= bound, (worst, bound)
