"""Cost of one scrape of per-CPU times: ``seqshm export`` serving a cpustat channel vs Debian's
prometheus-node-exporter (cpu collector alone) vs psutil.cpu_times(percpu=True), side by side
in one run: latency per scrape (median) and CPU time per scrape of the serving process.

Every HTTP case is measured twice, in two groups with node_exporter's figure as the baseline of
each (and the plain cases a third time over TLS with basic auth, both exporters serving the same
--web-config file, in a group of their own): over one kept HTTP/1.1 connection for every scrape,
as Prometheus scrapes (the headline:
Prometheus keeps one keep-alive connection per target, prometheus/prometheus#2498, the default
since 2.0; Debian's 2.42 scraped ``seqshm export`` 9 times over one connection here), and over
a new connection per scrape (urllib), which a scraper that closes pays.

    python benchmarks/test_bench_export.py   # full run: results/export.json and export.md

On the host, the cpustat channel is the demo's userspace one, written at 10 Hz (the kernel
module's default rate) by a publisher process whose own CPU time is reported beside (the
kernel channel has no such process: the kernel samples its counters itself). With 16 and 64
simulated CPUs, the channel has that many records and node_exporter and psutil read a procfs
whose stat file has that many CPU lines (a regular file: the kernel's cost of printing the
real one, which also grows with the CPUs, is left out of theirs). QEMU guests with that many
vCPUs are the issue's full measurement; this is the host-side approximation.
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

import numpy as np
import psutil
import pytest
from benchutil import shm_path
from prometheus_client import CollectorRegistry, generate_latest

# tests/exporting.py starts the programs; appended, so no tests/ folder shadows a module
sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
from exporting import (  # noqa: E402
    KeptConnection,
    client_context,
    get,
    node_exporter,
    seqshm_exporter,
    web_config,
)

import seqshm  # noqa: E402
from seqshm import export  # noqa: E402
from seqshm._cpustat import CPUSTAT_DTYPE, CPUSTAT_FIELDS  # noqa: E402
from seqshm.cli import _procstat  # noqa: E402

HERE = Path(__file__).resolve().parent
GROUP = "export: one scrape of per-CPU times"
READ_GROUP = "export: per-CPU times into Python"
PUBLISH_HZ = 10.0
#: Scrapes per HTTP case in a full run: enough CPU time for the exporters' 10 ms clock ticks
#: (/proc/PID/stat) to resolve it within a few percent (fewer in a slow TCG guest, where each
#: takes longer: SEQSHM_BENCH_EXPORT_ROUNDS).
HTTP_ROUNDS = int(os.environ.get("SEQSHM_BENCH_EXPORT_ROUNDS", "400"))
#: The kernel module's channel: used for the host scene where it exists (a QEMU guest with the
#: module loaded, benchmarks/guest_export.py), instead of the userspace publisher.
KERNEL_CPUSTAT = "/dev/seqshm/cpustat"
_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def process_cpu_ns(pid: int) -> int:
    """CPU time of process ``pid`` so far, every thread counted, those ended too (utime +
    stime of /proc/PID/stat, in clock ticks: a server's per-request threads end)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_NS  # fields 14 and 15


def fake_procfs(directory: str, cpus: int) -> str:
    """A procfs directory whose ``stat`` is this host's /proc/stat with ``cpus`` CPU lines
    (the host's first CPU's, repeated), for node_exporter's --path.procfs and psutil's
    PROCFS_PATH: their parsing and formatting at that many CPUs (not the kernel's cost of
    printing /proc/stat, which also grows with the CPUs: a lower bound of theirs)."""
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    cpu0 = next(line for line in lines if line.startswith("cpu0 "))
    rest = [line for line in lines if not line.startswith("cpu")]
    total = next(line for line in lines if line.startswith("cpu "))
    fake = [total] + [f"cpu{i} " + cpu0.split(" ", 1)[1] for i in range(cpus)] + rest
    path = os.path.join(directory, "stat")
    with open(path, "w") as f:
        f.write("\n".join(fake) + "\n")
    return directory


class Setup:
    """What one parametrization scrapes: a cpustat channel (``path``; ``publisher``: the pid
    of its publisher process, or None for a channel written once and held open by
    ``writer``), and the procfs directory that node_exporter and psutil read."""

    def __init__(self, label: str, path: str, procfs: str, publisher: int | None,
                 writer: seqshm.Writer | None = None) -> None:
        self.label, self.path, self.procfs = label, path, procfs
        self.publisher, self.writer = publisher, writer


@pytest.fixture(scope="module", params=[None, 16, 64], ids=["host", "16cpus", "64cpus"])
def scene(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Setup]:
    """The host's own CPUs (a cpustat channel written at PUBLISH_HZ by seqshm.cli._procstat in
    its own process; /proc), or N simulated CPUs (a cpustat channel of N records, the host's
    first CPU's times in each; a procfs with N CPU lines)."""
    cpus: int | None = request.param
    path = shm_path("cpustat")
    if cpus is not None:
        rec = np.zeros(cpus, CPUSTAT_DTYPE)
        rec[:] = _procstat.read_cpustat()[0]
        rec["online"] = 1
        with seqshm.create(path, CPUSTAT_DTYPE, cpus, name="cpustat") as w:
            w.write(rec)
            procfs = fake_procfs(str(tmp_path_factory.mktemp("procfs")), cpus)
            yield Setup(f"{cpus} CPUs (simulated)", path, procfs, None, w)
            w.close(unlink=True)
        return
    if os.path.exists(KERNEL_CPUSTAT):
        yield Setup(f"{os.cpu_count()} CPUs, kernel cpustat", KERNEL_CPUSTAT, "/proc", None)
        return
    code = ("import sys; from seqshm.cli import _procstat; "
            "_procstat.publish_cpustat(sys.argv[1], float(sys.argv[2]))")
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
        yield Setup(f"host, {os.cpu_count()} CPUs", path, "/proc", proc.pid)
    finally:
        proc.terminate()  # it removes its channel on SIGTERM
        proc.wait(10)


@pytest.fixture(scope="module")
def ours(scene: Setup) -> Iterator[tuple[int, str]]:
    with seqshm_exporter(scene.path) as (proc, url):
        yield proc.pid, url


@pytest.fixture(scope="module")
def ours_summed(scene: Setup) -> Iterator[tuple[int, str]]:
    with seqshm_exporter("--sum-over", "cpu", scene.path) as (proc, url):
        yield proc.pid, url


@pytest.fixture(scope="module")
def theirs(scene: Setup) -> Iterator[tuple[int, str]]:
    with node_exporter(f"--path.procfs={scene.procfs}") as (proc, url):
        yield proc.pid, url


#: The basic auth user of the TLS cases, and its password (bcrypt cost 10, the usual one:
#: both exporters cache a verified password, so a scrape pays bcrypt once, not per scrape).
TLS_USER = ("prometheus", "bench password")


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One web configuration file for both exporters: TLS (a self-signed certificate) and
    basic auth for TLS_USER."""
    directory = str(tmp_path_factory.mktemp("tls"))
    web_config(directory, dict([TLS_USER]), rounds=10)
    return directory


@pytest.fixture(scope="module")
def ours_tls(scene: Setup, tls_dir: str) -> Iterator[tuple[int, str]]:
    with seqshm_exporter("--web-config", os.path.join(tls_dir, "web.yml"), scene.path
                         ) as (proc, url):
        yield proc.pid, url


@pytest.fixture(scope="module")
def theirs_tls(scene: Setup, tls_dir: str) -> Iterator[tuple[int, str]]:
    with node_exporter(f"--path.procfs={scene.procfs}",
                       f"--web.config.file={os.path.join(tls_dir, 'web.yml')}",
                       probe=False) as (proc, url):
        url = url.replace("http://", "https://")
        deadline = time.monotonic() + 30
        while True:  # until it answers over TLS
            kept = KeptConnection(url, context=client_context(tls_dir), auth=TLS_USER)
            try:
                kept.get()
                break
            except OSError:
                assert time.monotonic() < deadline, "node_exporter did not serve TLS"
                time.sleep(0.1)
            finally:
                kept.close()
        yield proc.pid, url


@pytest.fixture
def psutil_procfs(scene: Setup) -> Iterator[None]:
    saved = psutil.PROCFS_PATH
    psutil.PROCFS_PATH = scene.procfs
    try:
        yield
    finally:
        psutil.PROCFS_PATH = saved


@pytest.fixture(params=["kept", "new"])
def connection(request: pytest.FixtureRequest) -> Iterator[str]:
    """How the HTTP cases connect: one kept HTTP/1.1 connection for every scrape, as
    Prometheus scrapes (one keep-alive connection per target: prometheus/prometheus#2498,
    keep-alive by default since 2.0), or a new connection per scrape (urllib)."""
    yield request.param


def scraper(url: str, connection: str, tls_dir: str | None = None
            ) -> Iterator[Callable[[], bytes]]:
    """A function that scrapes ``url`` over ``connection`` (see the fixture); over TLS with
    basic auth (TLS_USER) for an https URL, trusting ``tls_dir``'s certificate."""
    if connection == "new":
        yield lambda: get(url)
        return
    kept = (KeptConnection(url) if tls_dir is None else
            KeptConnection(url, context=client_context(tls_dir), auth=TLS_USER))
    try:
        yield kept.get
    finally:
        kept.close()


def http_group(connection: str) -> str:
    return f"{GROUP}, {connection} connection"


def measure(benchmark: Any, scene: Setup, fn: Callable[[], object], cpu: Callable[[], int], *,
            case: str, group: str = "", baseline: bool = False, rounds: int = HTTP_ROUNDS,
            iterations: int = 1, **extra: object) -> None:
    """Time ``fn`` (median latency) and the CPU time ``cpu()`` counts per call of it;
    ``iterations`` calls per timed round (so a sub-microsecond call is not its timer's)."""
    # in-process cases beside the kept connection's: the HTTP case Prometheus makes
    benchmark.group = f"{group or http_group('kept')}: {scene.label}"
    benchmark.extra_info.update(case=case, baseline=baseline, cpus=scene.label, **extra)
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


def test_scrape_node_exporter_cpu_collector(benchmark: Any, scene: Setup,
                                            theirs: tuple[int, str], connection: str) -> None:
    pid, url = theirs
    for scrape in scraper(url, connection):
        assert b'node_cpu_seconds_total{cpu="0",mode="idle"}' in scrape()
        measure(benchmark, scene, scrape, lambda: process_cpu_ns(pid),
                case="node_exporter --collector.cpu (HTTP)", baseline=True,
                group=http_group(connection), connection=connection)


def test_scrape_seqshm_export(benchmark: Any, scene: Setup, ours: tuple[int, str],
                              connection: str) -> None:
    pid, url = ours
    for scrape in scraper(url, connection):
        assert scrape().count(b'node_cpu_seconds_total{cpu="') == 8 * len(
            np.flatnonzero(seqshm.snapshot(scene.path)["online"]))
        publisher0, t0 = scene.publisher and process_cpu_ns(scene.publisher), time.monotonic()
        measure(benchmark, scene, scrape, lambda: process_cpu_ns(pid),
                case="seqshm export, cpustat (HTTP)", group=http_group(connection),
                connection=connection)
    if connection == "kept" and scene.publisher and not getattr(benchmark, "disabled", False):
        # the userspace publisher's own cost, whatever the scrapes (over >= 3 s: its CPU
        # time is counted in 10 ms ticks)
        time.sleep(max(0.0, 3 - (time.monotonic() - t0)))
        benchmark.extra_info["publisher_cpu_ns_per_s"] = (
            (process_cpu_ns(scene.publisher) - publisher0) / (time.monotonic() - t0))


def test_scrape_node_exporter_cpu_collector_over_tls(benchmark: Any, scene: Setup,
                                                     theirs_tls: tuple[int, str],
                                                     tls_dir: str) -> None:
    pid, url = theirs_tls
    for scrape in scraper(url, "kept", tls_dir):
        assert b'node_cpu_seconds_total{cpu="0",mode="idle"}' in scrape()
        measure(benchmark, scene, scrape, lambda: process_cpu_ns(pid),
                case="node_exporter --collector.cpu (HTTPS, basic auth)", baseline=True,
                group=http_group("kept TLS"), connection="kept TLS")


def test_scrape_seqshm_export_over_tls(benchmark: Any, scene: Setup,
                                       ours_tls: tuple[int, str], tls_dir: str) -> None:
    pid, url = ours_tls
    for scrape in scraper(url, "kept", tls_dir):
        assert b'node_cpu_seconds_total{cpu="' in scrape()
        measure(benchmark, scene, scrape, lambda: process_cpu_ns(pid),
                case="seqshm export, cpustat (HTTPS, basic auth)", group=http_group("kept TLS"),
                connection="kept TLS")


def test_scrape_seqshm_export_every_value_changed(benchmark: Any, scene: Setup,
                                                 ours: tuple[int, str],
                                                 connection: str) -> None:
    """The worst case of the exposition's kept value texts: every value of the channel changed
    since the last scrape (a simulated channel, rewritten before each scrape; the write's cost
    is this process's, not the exporter's)."""
    if scene.writer is None:
        pytest.skip("a channel this process writes (the simulated scenes)")
    pid, url = ours
    writer = scene.writer
    rec = seqshm.snapshot(scene.path)
    u64 = rec.view(np.uint64).reshape(len(rec), -1)[:, :len(CPUSTAT_FIELDS)]

    for get_url in scraper(url, connection):

        def scrape(get_url: Callable[[], bytes] = get_url) -> bytes:
            u64[...] += np.uint64(_TICK_NS)  # one tick more of every mode of every CPU
            writer.write(rec)
            return get_url()

        measure(benchmark, scene, scrape, lambda: process_cpu_ns(pid),
                case="seqshm export, cpustat, every value changed before each scrape (HTTP)",
                group=http_group(connection), connection=connection)


def test_scrape_seqshm_export_summed_over_cpus(benchmark: Any, scene: Setup,
                                               ours_summed: tuple[int, str],
                                               connection: str) -> None:
    pid, url = ours_summed
    for scrape in scraper(url, connection):
        assert b'node_cpu_seconds_total{mode="idle"}' in scrape()
        measure(benchmark, scene, scrape, lambda: process_cpu_ns(pid),
                case="seqshm export --sum-over cpu (HTTP)", group=http_group(connection),
                connection=connection)


def test_scrape_seqshm_collector_in_process(benchmark: Any, scene: Setup) -> None:
    registry = export.registry_of(export.SeqshmCollector([scene.path]))
    assert b"node_cpu_seconds_total" in export.exposition(registry)
    measure(benchmark, scene, lambda: export.exposition(registry), time.process_time_ns,
            case="seqshm export's exposition (templates), in process (no HTTP)",
            rounds=max(HTTP_ROUNDS, 50))


def test_scrape_seqshm_collector_by_prometheus_client_in_process(benchmark: Any,
                                                                 scene: Setup) -> None:
    """The same families rendered by prometheus_client's own per-sample formatter (what
    SeqshmCollector costs on a user's registry, and what seqshm export cost before its
    templates)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(export.SeqshmCollector([scene.path]))
    assert b"node_cpu_seconds_total" in generate_latest(registry)
    measure(benchmark, scene, lambda: generate_latest(registry), time.process_time_ns,
            case="SeqshmCollector + prometheus_client's generate_latest, in process (no HTTP)",
            rounds=max(HTTP_ROUNDS, 50))


def test_scrape_psutil_cpu_times_percpu(benchmark: Any, scene: Setup,
                                        psutil_procfs: None) -> None:
    assert len(psutil.cpu_times(percpu=True)) >= 1
    measure(benchmark, scene, lambda: psutil.cpu_times(percpu=True), time.process_time_ns,
            case="psutil.cpu_times(percpu=True), in process", rounds=max(HTTP_ROUNDS, 50))


def test_read_psutil_cpu_times_percpu(benchmark: Any, scene: Setup,
                                      psutil_procfs: None) -> None:
    measure(benchmark, scene, lambda: psutil.cpu_times(percpu=True), time.process_time_ns,
            case="psutil.cpu_times(percpu=True)", group=READ_GROUP, baseline=True,
            rounds=max(HTTP_ROUNDS // 2, 20), iterations=10)


def test_read_kept_cpustat_snapshot(benchmark: Any, scene: Setup) -> None:
    with seqshm.open(scene.path) as r:
        assert r.snapshot()["online"].any()
        measure(benchmark, scene, r.snapshot, time.process_time_ns,
                case="kept Reader.snapshot() of cpustat", group=READ_GROUP,
                rounds=max(HTTP_ROUNDS // 2, 20), iterations=1000)


def test_read_kept_cpustat_snapshot_out(benchmark: Any, scene: Setup) -> None:
    with seqshm.open(scene.path) as r:
        out = r.snapshot()
        measure(benchmark, scene, lambda: r.snapshot(out=out), time.process_time_ns,
                case="kept Reader.snapshot(out=) of cpustat", group=READ_GROUP,
                rounds=max(HTTP_ROUNDS // 2, 20), iterations=1000)


# -- report ----------------------------------------------------------------------------------


def _load_range(data: dict[str, Any]) -> tuple[float, float]:
    loads = [b["extra_info"].get("loadavg_1min", float("nan")) for b in data["benchmarks"]]
    return min(loads), max(loads)


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
        "- Load average (1 min) of the machine during the run: "
        + "{:.2f} to {:.2f}".format(*_load_range(data)),
        "- latency: median wall time of one call, client side (HTTP: GET of /metrics on "
        "loopback, no compression; kept connection: one HTTP/1.1 keep-alive connection for "
        "every scrape, as Prometheus scrapes, the headline; new connection: urllib, a "
        "connection per scrape; kept TLS: a kept connection over TLS with basic auth, both "
        "exporters serving one --web-config file); CPU/scrape: CPU time of the serving "
        "process (every thread) over all the calls / calls; ratio: the baseline's figure / "
        "this one's (> 1: cheaper than the baseline).",
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
