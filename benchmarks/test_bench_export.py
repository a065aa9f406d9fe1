"""Cost of one scrape of per-CPU times: ``seqshm export`` serving a cpustat channel vs Debian's
prometheus-node-exporter (cpu collector alone) vs psutil.cpu_times(percpu=True), side by side
in one run: latency per scrape (median) and CPU time per scrape of the serving process.

    python benchmarks/test_bench_export.py   # full run: results/export.json and export.md

The cpustat channel is the demo's userspace one, written at 10 Hz (the kernel module's default
rate) by a publisher process whose own CPU time is reported beside (the kernel channel has no
such process: the kernel samples its counters itself).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from benchutil import shm_path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from exporting import get, node_exporter, seqshm_exporter  # noqa: E402

import seqshm  # noqa: E402
from seqshm import export  # noqa: E402

HERE = Path(__file__).resolve().parent
GROUP = "export: one scrape of per-CPU times"
READ_GROUP = "export: per-CPU times into Python"
PUBLISH_HZ = 10.0
#: Scrapes per HTTP case in a full run: enough CPU time for the exporters' 10 ms clock ticks
#: (/proc/PID/stat) to resolve it within a few percent.
HTTP_ROUNDS = 400
_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def process_cpu_ns(pid: int) -> int:
    """CPU time of process ``pid`` so far, every thread counted, those ended too (utime +
    stime of /proc/PID/stat, in clock ticks: a server's per-request threads end)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_NS  # fields 14 and 15


@pytest.fixture(scope="module")
def cpustat() -> Iterator[tuple[str, int]]:
    """A cpustat channel written at PUBLISH_HZ by seqshm.telemetry in its own process."""
    path = shm_path("cpustat")
    code = ("import sys; from seqshm import telemetry; "
            "telemetry.publish_cpustat(sys.argv[1], float(sys.argv[2]))")
    proc = subprocess.Popen([sys.executable, "-c", code, path, str(PUBLISH_HZ)], cwd="/")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with seqshm.open(path) as r:
                    if r.head:
                        break
            except (FileNotFoundError, seqshm.FormatError):
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "publisher failed"
            time.sleep(0.02)
        yield path, proc.pid
    finally:
        proc.terminate()  # it removes its channel on SIGTERM
        proc.wait(10)


@pytest.fixture(scope="module")
def ours(cpustat: tuple[str, int]) -> Iterator[tuple[int, str]]:
    with seqshm_exporter(cpustat[0]) as (proc, url):
        yield proc.pid, url


@pytest.fixture(scope="module")
def ours_summed(cpustat: tuple[str, int]) -> Iterator[tuple[int, str]]:
    with seqshm_exporter("--sum-over", "cpu", cpustat[0]) as (proc, url):
        yield proc.pid, url


@pytest.fixture(scope="module")
def theirs() -> Iterator[tuple[int, str]]:
    with node_exporter() as (proc, url):
        yield proc.pid, url


def measure(benchmark: Any, fn: Callable[[], object], cpu: Callable[[], int], *, case: str,
            group: str = GROUP, baseline: bool = False, rounds: int = HTTP_ROUNDS,
            iterations: int = 1, **extra: object) -> None:
    """Time ``fn`` (median latency) and the CPU time ``cpu()`` counts per call of it;
    ``iterations`` calls per timed round (so a sub-microsecond call is not its timer's)."""
    benchmark.group = group
    benchmark.extra_info.update(case=case, baseline=baseline, cpus=os.cpu_count(), **extra)
    calls = 0

    def call() -> None:
        nonlocal calls
        calls += 1
        fn()

    for _ in range(5):  # warm: connections, caches, the exporters' first parse
        fn()
    cpu0 = cpu()
    if getattr(benchmark, "disabled", False):
        benchmark(call)
    else:
        benchmark.pedantic(call, rounds=rounds, iterations=iterations)
    benchmark.extra_info["cpu_ns_per_scrape"] = (cpu() - cpu0) / max(calls, 1)
    benchmark.extra_info["loadavg_1min"] = os.getloadavg()[0]


def test_scrape_node_exporter_cpu_collector(benchmark: Any, theirs: tuple[int, str]) -> None:
    pid, url = theirs
    body = get(url)
    assert b'node_cpu_seconds_total{cpu="0",mode="idle"}' in body
    measure(benchmark, lambda: get(url), lambda: process_cpu_ns(pid),
            case="node_exporter --collector.cpu (HTTP)", baseline=True)


def test_scrape_seqshm_export(benchmark: Any, ours: tuple[int, str],
                              cpustat: tuple[str, int]) -> None:
    pid, url = ours
    body = get(url)
    assert b'node_cpu_seconds_total{cpu="0",mode="idle"}' in body
    publisher0 = process_cpu_ns(cpustat[1])
    t0 = time.monotonic()
    measure(benchmark, lambda: get(url), lambda: process_cpu_ns(pid),
            case="seqshm export, cpustat (HTTP)")
    # the userspace publisher's own cost, per second, whatever the scrapes
    benchmark.extra_info["publisher_cpu_ns_per_s"] = (
        (process_cpu_ns(cpustat[1]) - publisher0) / max(time.monotonic() - t0, 1e-9))


def test_scrape_seqshm_export_summed_over_cpus(benchmark: Any,
                                               ours_summed: tuple[int, str]) -> None:
    pid, url = ours_summed
    assert b'node_cpu_seconds_total{mode="idle"}' in get(url)
    measure(benchmark, lambda: get(url), lambda: process_cpu_ns(pid),
            case="seqshm export --sum-over cpu (HTTP)")


def test_scrape_seqshm_collector_in_process(benchmark: Any, cpustat: tuple[str, int]) -> None:
    registry = export.registry_of(export.SeqshmCollector([cpustat[0]]))
    assert b"node_cpu_seconds_total" in export.exposition(registry)
    measure(benchmark, lambda: export.exposition(registry), time.process_time_ns,
            case="SeqshmCollector + exposition, in process (no HTTP)", rounds=2000)


def test_scrape_psutil_cpu_times_percpu(benchmark: Any) -> None:
    assert len(psutil.cpu_times(percpu=True)) >= 1
    measure(benchmark, lambda: psutil.cpu_times(percpu=True), time.process_time_ns,
            case="psutil.cpu_times(percpu=True), in process", rounds=2000)


def test_read_psutil_cpu_times_percpu(benchmark: Any) -> None:
    measure(benchmark, lambda: psutil.cpu_times(percpu=True), time.process_time_ns,
            case="psutil.cpu_times(percpu=True)", group=READ_GROUP, baseline=True,
            rounds=200, iterations=10)


def test_read_kept_cpustat_snapshot(benchmark: Any, cpustat: tuple[str, int]) -> None:
    with seqshm.open(cpustat[0]) as r:
        assert r.snapshot()["online"].any()
        measure(benchmark, r.snapshot, time.process_time_ns,
                case="kept Reader.snapshot() of cpustat", group=READ_GROUP, rounds=200,
                iterations=1000)


def test_read_kept_cpustat_snapshot_out(benchmark: Any, cpustat: tuple[str, int]) -> None:
    with seqshm.open(cpustat[0]) as r:
        out = r.snapshot()
        measure(benchmark, lambda: r.snapshot(out=out), time.process_time_ns,
                case="kept Reader.snapshot(out=) of cpustat", group=READ_GROUP, rounds=200,
                iterations=1000)


# -- report ----------------------------------------------------------------------------------


def render(data: dict[str, Any]) -> str:
    """A Markdown table of a run: median latency and CPU per scrape, as ratios to the group's
    baseline measured in the same run."""
    info = data["machine_info"]
    lines = [
        "# Export benchmark (issue 10): one scrape of per-CPU times", "",
        f"- Machine: {info.get('cpu', {}).get('brand_raw', '?')}, {os.cpu_count()} CPUs, "
        f"Linux {platform.release()}, Python {platform.python_version()}",
        f"- seqshm commit: {data.get('commit_info', {}).get('id', '?')[:7]}; run "
        f"{data['datetime'][:16].replace('T', ' ')} UTC",
        "- Command: `python benchmarks/test_bench_export.py` (raw: [export.json](export.json))",
        "- latency: median wall time of one call, client side (HTTP: urllib GET of /metrics "
        "on loopback, no compression); CPU/scrape: CPU time of the serving process (every "
        "thread) over all the calls / calls; ratio: the baseline's figure / this one's "
        "(> 1: cheaper than the baseline).",
        "",
    ]
    groups: dict[str, list[dict[str, Any]]] = {}
    for b in data["benchmarks"]:
        groups.setdefault(b["group"], []).append(b)
    for group, rows in groups.items():
        base = next(r for r in rows if r["extra_info"]["baseline"])
        b_lat, b_cpu = base["stats"]["median"], base["extra_info"]["cpu_ns_per_scrape"]
        lines += [f"## {group}", "",
                  "| case | latency | ratio | CPU/call | ratio | rounds |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in rows:
            lat, cpu = r["stats"]["median"], r["extra_info"]["cpu_ns_per_scrape"]
            lines.append(
                f"| {r['extra_info']['case']}{' (baseline)' if r is base else ''} | "
                f"{lat * 1e6:,.1f} us | {b_lat / lat:,.2f}x | {cpu / 1e3:,.1f} us | "
                f"{(b_cpu / cpu if cpu else float('inf')):,.2f}x | {r['stats']['rounds']} |")
            if "publisher_cpu_ns_per_s" in r["extra_info"]:
                pub = r["extra_info"]["publisher_cpu_ns_per_s"]
                lines.append(f"| (its userspace publisher at {PUBLISH_HZ:g} Hz, whatever "
                             f"the scrapes: {pub / 1e6:,.2f} ms CPU per second) | | | | | |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    out = HERE / "results"
    json_path = out / "export.json"
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    rc = subprocess.call([sys.executable, "-m", "pytest", __file__, "-q", "-p",
                          "no:cacheprovider", f"--benchmark-json={json_path}",
                          "--benchmark-columns=median,iqr,rounds"], cwd=HERE.parent, env=env)
    if rc:
        return rc
    data = json.loads(json_path.read_text())
    (out / "export.md").write_text(render(data))
    print(render(data))
    print(f"written {out / 'export.md'} at {datetime.datetime.now():%H:%M}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
