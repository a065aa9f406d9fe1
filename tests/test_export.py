"""seqshm.export as a scraper sees it: which series a channel becomes (cpustat as node_exporter's
cpu collector, agreeing with /proc/stat; other records by the _total convention), one snapshot
per scrape, dead writers, --sum-over, errors, the HTTP endpoint and the ``seqshm export``
command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from exporting import Series, cpustat_publisher, parse, pick, proc_stat_seconds, seqshm_exporter
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

import seqshm
from seqshm import export
from seqshm._cpustat import CPUSTAT_DTYPE, CPUSTAT_FIELDS, USER_HZ
from seqshm._families import CPU_MODES
from seqshm.testing import StalledWriter


def types(text: bytes) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text.decode())}


def scrape(collector: export.SeqshmCollector) -> bytes:
    return export.exposition(export.registry_of(collector))


@pytest.fixture
def cpustat_channel(shm_path: str) -> Iterator[str]:
    """The demo's userspace cpustat channel, published at 100 Hz by seqshm.cli._procstat's
    publisher while the test runs."""
    with cpustat_publisher(shm_path) as path:
        yield path


def wait_writes(path: str, n: int) -> None:
    """Until ``n`` more writes were published to ``path``."""
    with seqshm.open(path) as r:
        target = r.head + n
        while r.head < target:
            r.wait(timeout=5)


# -- cpustat: node_exporter's cpu collector ------------------------------------------------------


def test_cpustat_becomes_node_cpu_seconds_total_per_online_cpu_and_mode(
        cpustat_channel: str) -> None:
    text = scrape(export.SeqshmCollector([cpustat_channel]))
    assert types(text)["node_cpu_seconds"] == "counter"
    series = parse(text)
    cpus = {c for c, _ in proc_stat_seconds()}
    got = pick(series, "node_cpu_seconds_total")
    assert {(dict(lbl)["cpu"], dict(lbl)["mode"]) for lbl in got} == {
        (c, m) for c in cpus for m in CPU_MODES}
    assert all(set(dict(lbl)) == {"cpu", "mode"} for lbl in got)  # no extra label: drop-in
    guest = pick(series, "node_cpu_guest_seconds_total")
    assert {dict(lbl)["mode"] for lbl in guest} == {"user", "nice"}


def test_node_cpu_seconds_agree_with_proc_stat_within_one_sampling_period(
        cpustat_channel: str) -> None:
    collector = export.SeqshmCollector([cpustat_channel])
    before = proc_stat_seconds()
    wait_writes(cpustat_channel, 2)  # a write sampled after `before`
    series = parse(scrape(collector))
    after = proc_stat_seconds()
    tick = 1 / USER_HZ
    for lbl, value in pick(series, "node_cpu_seconds_total").items():
        key = (dict(lbl)["cpu"], dict(lbl)["mode"])
        # idle and iowait of /proc/stat may go back a tick between reads (NO_HZ accounting)
        assert before[key] - tick <= value <= after[key] + tick, (key, before[key], after[key])
        assert abs(value * USER_HZ - round(value * USER_HZ)) < 1e-6  # whole ticks, as /proc/stat


def test_kernel_cpustat_ns_are_truncated_to_user_hz_ticks_as_proc_stat_prints_them(
        shm_path: str) -> None:
    rec = np.zeros(2, CPUSTAT_DTYPE)
    rec["online"] = [1, 0]
    tick_ns = 1_000_000_000 // USER_HZ
    for i, f in enumerate(CPUSTAT_FIELDS):
        rec[f][0] = (i + 1) * 1000 * tick_ns + tick_ns - 1  # just short of one more tick
    with seqshm.create(shm_path, CPUSTAT_DTYPE, 2, name="cpustat") as w:
        w.write(rec)
        series = parse(scrape(export.SeqshmCollector([shm_path])))
    got = pick(series, "node_cpu_seconds_total")
    assert {dict(lbl)["cpu"] for lbl in got} == {"0"}  # an offline CPU has no series
    for i, mode in enumerate(CPU_MODES):
        assert got[frozenset({("cpu", "0"), ("mode", mode)})] == (i + 1) * 1000 / USER_HZ
    guest = pick(series, "node_cpu_guest_seconds_total")
    assert guest[frozenset({("cpu", "0"), ("mode", "user")})] == 9000 / USER_HZ
    assert guest[frozenset({("cpu", "0"), ("mode", "nice")})] == 10000 / USER_HZ


def test_a_cpu_counter_that_goes_back_keeps_its_value_unless_idle_jumped_back_3_s(
        shm_path: str) -> None:
    """node_exporter's updateCPUStats: counters never decrease; a CPU whose idle went back by
    3 s or more was re-plugged, and its counters start over."""
    sec = 1_000_000_000
    rec = np.zeros(1, CPUSTAT_DTYPE)
    rec["online"] = 1
    with seqshm.create(shm_path, CPUSTAT_DTYPE, 1, name="cpustat") as w:
        collector = export.SeqshmCollector([shm_path])

        def value(mode: str) -> float:
            series = parse(scrape(collector))
            return series[("node_cpu_seconds_total",
                           frozenset({("cpu", "0"), ("mode", mode)}))]

        rec["idle_ns"], rec["iowait_ns"] = 100 * sec, 50 * sec
        w.write(rec)
        assert (value("idle"), value("iowait")) == (100.0, 50.0)
        rec["idle_ns"], rec["iowait_ns"] = 99 * sec, 49 * sec  # back 1 s: kept
        w.write(rec)
        assert (value("idle"), value("iowait")) == (100.0, 50.0)
        rec["idle_ns"], rec["iowait_ns"] = 10 * sec, 5 * sec  # back 90 s: re-plugged
        w.write(rec)
        assert (value("idle"), value("iowait")) == (10.0, 5.0)


def test_sum_over_cpu_leaves_one_series_per_mode(cpustat_channel: str) -> None:
    series = parse(scrape(export.SeqshmCollector([cpustat_channel], sum_over=["cpu"])))
    got = pick(series, "node_cpu_seconds_total")
    assert {lbl for lbl in got} == {frozenset({("mode", m)}) for m in CPU_MODES}
    # the sum of the CPUs' times, as /proc/stat's "cpu" line: about (CPUs x uptime) seconds
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    total = sum(got.values())
    assert 0.5 * uptime * len({c for c, _ in proc_stat_seconds()}) < total


# -- other records: the naming convention --------------------------------------------------------

REC = np.dtype([("temp", np.float64), ("bytes_total", np.uint64), ("lat_ns", np.uint64),
                ("busy_ns_total", np.uint64), ("xyz", np.float32, (3,)), ("ok", np.bool_),
                ("z", np.complex64)])


def test_fields_become_families_counters_by_the_total_suffix_and_ns_in_seconds(
        shm_path: str) -> None:
    data = np.zeros(2, REC)
    data["temp"] = [20.5, 21.5]
    data["bytes_total"] = [10, 20]
    data["lat_ns"] = [1_500_000, 2_500_000]
    data["busy_ns_total"] = [3_000_000_000, 4_000_000_000]
    data["xyz"] = [[1, 2, 3], [4, 5, 6]]
    data["ok"] = [True, False]
    with seqshm.create(shm_path, REC, 2, name="pose") as w:
        w.write(data)
        text = scrape(export.SeqshmCollector([shm_path]))
    kinds, series = types(text), parse(text)
    assert kinds["seqshm_pose_temp"] == "gauge"
    assert kinds["seqshm_pose_bytes"] == "counter"
    assert kinds["seqshm_pose_lat_seconds"] == "gauge"
    assert kinds["seqshm_pose_busy_seconds"] == "counter"
    ch = ("channel", shm_path)
    assert series[("seqshm_pose_temp", frozenset({ch, ("dim0", "1")}))] == 21.5
    assert series[("seqshm_pose_bytes_total", frozenset({ch, ("dim0", "0")}))] == 10
    assert series[("seqshm_pose_lat_seconds", frozenset({ch, ("dim0", "1")}))] == 0.0025
    assert series[("seqshm_pose_busy_seconds_total", frozenset({ch, ("dim0", "0")}))] == 3.0
    assert series[("seqshm_pose_xyz", frozenset({ch, ("dim0", "1"), ("elem0", "2")}))] == 6.0
    assert series[("seqshm_pose_ok", frozenset({ch, ("dim0", "0")}))] == 1.0
    # a complex number has no Prometheus value
    assert not [n for n, _ in series if n.startswith("seqshm_pose_z")]


def test_every_series_of_a_channel_comes_from_one_write(shm_path: str) -> None:
    """A writer fills every element of write k with k; each scrape's values all equal the
    scrape's seqshm_channel_writes_total, however fast the writer goes."""
    rec = np.dtype([("a_total", np.uint64), ("b", np.float64, (4,))])
    stop = threading.Event()
    with seqshm.create(shm_path, rec, 64, nr_slots=2, name="fast") as w:
        buf = np.zeros(64, rec)

        def hammer() -> None:
            while not stop.is_set():
                k = w.seq + 1
                buf["a_total"], buf["b"] = k, k
                w.write(buf)

        t = threading.Thread(target=hammer)
        t.start()
        try:
            collector = export.SeqshmCollector([shm_path])
            seqs = set()
            for _ in range(50):
                series = parse(scrape(collector))
                seq = series[("seqshm_channel_writes_total", frozenset({("channel", shm_path)}))]
                values = {v for (n, _), v in series.items() if n.startswith("seqshm_fast_")}
                assert values == {seq}
                seqs.add(seq)
                time.sleep(0.005)  # the writer thread gets the GIL and moves on
        finally:
            stop.set()
            t.join()
    assert len(seqs) > 10  # the writer did move between scrapes


def test_write_number_and_time_are_exported(shm_path: str) -> None:
    with seqshm.create(shm_path, np.float64, 3, name="plain") as w:
        for _ in range(5):
            w.write(np.arange(3.0))
        series = parse(scrape(export.SeqshmCollector([shm_path])))
    ch = frozenset({("channel", shm_path)})
    assert series[("seqshm_channel_writes_total", ch)] == 5
    assert abs(series[("seqshm_channel_last_write_timestamp_seconds", ch)] - time.time()) < 5
    assert 0 <= series[("seqshm_channel_last_write_age_seconds", ch)] < 5
    assert series[("seqshm_plain", frozenset({("channel", shm_path), ("dim0", "2")}))] == 2.0


# -- lifecycle: a gone writer is shown, not frozen -------------------------------------------------


def _state(series: Series, path: str) -> str:
    on = [dict(lbl)["state"] for lbl, v in pick(series, "seqshm_channel_state",
                                                 channel=path).items() if v == 1]
    assert len(on) == 1
    return on[0]


def test_a_closed_channel_is_down_without_data_series(shm_path: str) -> None:
    w = seqshm.create(shm_path, np.float64, 2, name="gone")
    w.write([1.0, 2.0])
    collector = export.SeqshmCollector([shm_path])
    live = parse(scrape(collector))
    assert live[("seqshm_channel_up", frozenset({("channel", shm_path)}))] == 1
    assert pick(live, "seqshm_gone")
    w.close()
    series = parse(scrape(collector))
    assert series[("seqshm_channel_up", frozenset({("channel", shm_path)}))] == 0
    assert _state(series, shm_path) == "closed"
    assert not pick(series, "seqshm_gone")
    assert series[("seqshm_channel_writes_total", frozenset({("channel", shm_path)}))] == 1


def test_a_dead_writer_shows_as_writer_died(shm_path: str) -> None:
    code = ("import sys, os, numpy as np, seqshm; "
            "w = seqshm.create(sys.argv[1], np.int64, 2, name='dead'); w.write([1, 2]); "
            "os._exit(0)")
    subprocess.run([sys.executable, "-c", code, shm_path], check=True, cwd="/")
    series = parse(scrape(export.SeqshmCollector([shm_path])))
    assert series[("seqshm_channel_up", frozenset({("channel", shm_path)}))] == 0
    assert _state(series, shm_path) == "writer-died"
    assert not pick(series, "seqshm_dead")


def test_a_writer_stuck_mid_write_is_down_after_the_timeout(shm_path: str) -> None:
    with StalledWriter(shm_path, 64):
        t0 = time.monotonic()
        series = parse(scrape(export.SeqshmCollector([shm_path], timeout=0.05)))
        assert time.monotonic() - t0 < 2
    assert series[("seqshm_channel_up", frozenset({("channel", shm_path)}))] == 0


def test_a_restarted_writer_is_followed(shm_path: str) -> None:
    with seqshm.create(shm_path, np.float64, 1, name="again") as w:
        w.write([1.0])
        collector = export.SeqshmCollector([shm_path])
        assert pick(parse(scrape(collector)), "seqshm_again")
    with seqshm.create(shm_path, np.float64, 1, name="again", overwrite=True) as w2:
        w2.write([7.0])
        series = parse(scrape(collector))
        assert series[("seqshm_channel_up", frozenset({("channel", shm_path)}))] == 1
        assert list(pick(series, "seqshm_again").values()) == [7.0]


# -- selection -----------------------------------------------------------------------------------


def test_a_glob_picks_up_channels_that_appear_and_drops_those_removed(
        shm_name: str) -> None:
    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("needs a writable /dev/shm")
    first, second = f"/dev/shm/{shm_name}-a", f"/dev/shm/{shm_name}-b"
    try:
        with seqshm.create(first, np.float64, 1, name="globbed") as w1:
            w1.write([1.0])
            collector = export.SeqshmCollector([f"{shm_name}-*"])
            assert len(pick(parse(scrape(collector)), "seqshm_channel_up")) == 1
            with open(f"/dev/shm/{shm_name}-c", "w") as f:  # not a channel: skipped
                f.write("hello")
            with seqshm.create(second, np.float64, 1, name="globbed") as w2:
                w2.write([2.0])
                series = parse(scrape(collector))
                assert set(pick(series, "seqshm_globbed").values()) == {1.0, 2.0}
                w2.close(unlink=True)
            series = parse(scrape(collector))
            assert set(pick(series, "seqshm_globbed").values()) == {1.0}
            assert {dict(lbl)["channel"] for lbl in pick(series, "seqshm_channel_up")} == {first}
    finally:
        for p in (first, second, f"/dev/shm/{shm_name}-c"):
            if os.path.exists(p):
                os.unlink(p)


def test_a_glob_that_matches_nothing_is_an_error_naming_it() -> None:
    with pytest.raises(export.ExportError, match="'no-such-channel-\\*' matches no channel"):
        export.SeqshmCollector(["no-such-channel-*"])


def test_a_channel_without_a_numeric_field_is_an_error_naming_the_file(shm_path: str) -> None:
    with seqshm.create(shm_path, np.dtype([("z", np.complex128)]), 1):
        with pytest.raises(export.ExportError, match=f"{shm_path}: .*no numeric field"):
            export.SeqshmCollector([shm_path])


def test_sum_over_a_label_no_channel_has_is_an_error(shm_path: str) -> None:
    with seqshm.create(shm_path, np.float64, 2):
        with pytest.raises(export.ExportError, match="--sum-over cpu: .*they have: dim0"):
            export.SeqshmCollector([shm_path], sum_over=["cpu"])


def test_sum_over_a_dimension_of_a_generic_channel(shm_path: str) -> None:
    with seqshm.create(shm_path, np.dtype([("n_total", np.uint64)]), 3, name="s") as w:
        w.write(np.array([(1,), (2,), (4,)], w.dtype))
        series = parse(scrape(export.SeqshmCollector([shm_path], sum_over=["dim0"])))
    assert series[("seqshm_s_n_total", frozenset({("channel", shm_path)}))] == 7


# -- embedding and serving -----------------------------------------------------------------------


def test_the_collector_registers_beside_other_metrics_and_once_only(shm_path: str) -> None:
    registry = CollectorRegistry()
    Gauge("app_temperature", "an application's own metric", registry=registry).set(3)
    with seqshm.create(shm_path, np.float64, 1, name="emb") as w:
        w.write([5.0])
        registry.register(export.SeqshmCollector([shm_path]))
        series = parse(export.exposition(registry))
        with pytest.raises(ValueError, match="Duplicated timeseries"):
            registry.register(export.SeqshmCollector([shm_path]))
    assert series[("app_temperature", frozenset())] == 3
    assert series[("seqshm_emb", frozenset({("channel", shm_path), ("dim0", "0")}))] == 5


def test_serve_answers_prometheus_text_and_openmetrics(shm_path: str) -> None:
    with seqshm.create(shm_path, np.float64, 1, name="http") as w:
        w.write([1.25])
        registry = export.registry_of(export.SeqshmCollector([shm_path]))
        server, thread = export.serve(registry, "127.0.0.1:0")
        try:
            url = f"http://127.0.0.1:{server.server_port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                line = f'seqshm_http{{channel="{shm_path}",dim0="0"}} 1.25'
                assert line in resp.read().decode()
            req = urllib.request.Request(
                url, headers={"Accept": "application/openmetrics-text; version=1.0.0"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
                assert resp.read().decode().endswith("# EOF\n")
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


def test_a_port_in_use_is_an_error_naming_the_address() -> None:
    registry = CollectorRegistry()
    server, thread = export.serve(registry, "127.0.0.1:0")
    try:
        taken = f"127.0.0.1:{server.server_port}"
        with pytest.raises(export.ExportError, match=f"cannot listen on {taken}: another"):
            export.serve(registry, taken)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("text", ["9464", "localhost:port", "127.0.0.1:70000"])
def test_a_malformed_listen_address_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        export.parse_listen(text)


def test_listen_address_forms() -> None:
    assert export.parse_listen("[::1]:9464") == ("::1", 9464)
    assert export.parse_listen(":0") == ("0.0.0.0", 0)
    assert export.parse_listen(export.DEFAULT_LISTEN) == ("127.0.0.1", 9464)


# -- the command ---------------------------------------------------------------------------------


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "seqshm", "export", *args],
                          capture_output=True, text=True, timeout=timeout, cwd="/")


def test_export_command_serves_until_sigterm_then_exits_143(cpustat_channel: str) -> None:
    with seqshm_exporter(cpustat_channel) as (proc, url):
        with urllib.request.urlopen(url, timeout=10) as resp:
            series = parse(resp.read())
        assert pick(series, "node_cpu_seconds_total", mode="idle")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 128 + signal.SIGTERM


def test_export_once_prints_one_scrape(cpustat_channel: str) -> None:
    out = run("--once", cpustat_channel)
    assert out.returncode == 0, out.stderr
    assert pick(parse(out.stdout), "seqshm_channel_up", channel=cpustat_channel)


@pytest.mark.parametrize("args, message", [
    (["no-such-channel-*"], "matches no channel"),
    (["no-such-channel"], "no channel 'no-such-channel'"),
    (["--listen", "nonsense"], "is not HOST:PORT"),
    (["--openmetrics", "no-such-channel"], "--openmetrics goes with --once"),
])
def test_export_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    out = run(*args) if "--openmetrics" in args else run("--once", *args)
    assert out.returncode == 2
    assert message in out.stderr and out.stdout == ""


def test_export_on_a_port_in_use_exits_1(cpustat_channel: str) -> None:
    with seqshm_exporter(cpustat_channel) as (_, url):
        taken = url.removeprefix("http://").removesuffix("/metrics")
        out = run("--listen", taken, cpustat_channel)
    assert out.returncode == 1
    assert f"cannot listen on {taken}: another program listens there" in out.stderr


def test_fields_whose_names_clash_are_left_out_not_doubled(tmp_path: os.PathLike[str]) -> None:
    """A channel named `channel` with fields `up` and `writes_total` would speak for
    seqshm_channel_up / seqshm_channel_writes_total; fields `a-b` and `a_b` map to one name; a
    gauge `c` and a counter `c_total` are one OpenMetrics family. The later of each clash is
    left out (with a warning), so no series appears twice and the OpenMetrics text parses;
    the channel's own up stays 1."""
    rec = np.dtype([("up", "<f8"), ("writes_total", "<u8"), ("a-b", "<f8"), ("a_b", "<f8"),
                    ("c", "<f8"), ("c_total", "<u8"), ("ok", "<f8")])
    path = os.path.join(tmp_path, "channel")
    data = np.zeros((), rec)
    data["up"], data["ok"] = 0.0, 7.0
    with seqshm.create(path, rec, (), name="channel") as w:
        w.write(data)
        collector = export.SeqshmCollector([path])
        text = scrape(collector)
        registry = CollectorRegistry()
        registry.register(collector)
        om = openmetrics.generate_latest(registry).decode()
    lines = [ln for ln in text.decode().splitlines() if ln and not ln.startswith("#")]
    keys = [ln.rsplit(" ", 1)[0] for ln in lines]
    assert len(keys) == len(set(keys)), "a series appears twice"
    series = parse(text)
    assert series[("seqshm_channel_up", frozenset({("channel", path)}))] == 1.0
    assert series[("seqshm_channel_ok", frozenset({("channel", path)}))] == 7.0
    names = [f.name for f in openmetrics_parser.text_string_to_metric_families(om)]
    assert len(names) == len(set(names))
