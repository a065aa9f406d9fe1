"""Run the seqshm benchmarks and write their report: pytest-benchmark JSON, a Markdown table of
medians and ratios to each group's baseline with the issue's targets checked, and a PNG plot.

    python benchmarks/report.py            # full run (~5 min), writes benchmarks/results/
    python benchmarks/report.py --quick    # a few rounds each (~1 min), for a smoke test
    python benchmarks/report.py --json benchmarks/results/bench.json   # re-render only
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

FULL_OPTS = ["--benchmark-warmup=on", "--benchmark-warmup-iterations=2000",
             "--benchmark-min-time=0.00002", "--benchmark-max-time=0.3",
             "--benchmark-min-rounds=5"]
QUICK_OPTS = ["--benchmark-min-time=0.00002", "--benchmark-max-time=0.02",
              "--benchmark-min-rounds=3"]

SECTIONS = [
    ("snapshot", "Snapshot latency and bandwidth (no writer); baseline: `_copy_unlocked(out)`, "
                 "a plain memcpy on snapshot()'s own call path"),
    ("contention", "Reader under a writer process (other core); baseline: idle writer. "
                   "snapshots/s = share of calls that returned a consistent copy / mean call "
                   "time; retries come from the reader's counters (r.stats) over the run"),
    ("publish", "Writer publishes/s with 0 or 1 busy reader process; baseline: no reader"),
    ("wake", "Waking a reader that waits for the next write, between two processes: a "
             "ping-pong (ns/op: half a round trip), one-way p50/p99 from a sleeping reader, "
             "the waiting reader's idle wake-ups and CPU; baseline: a pipe. And the writer's "
             "cost per write with the wake-up check; baseline: no sidecar (or nobody waiting)"),
    ("peers", "seqshm beside what a Python user would write instead (writer at 1 kHz); "
              "baseline: seqshm `snapshot(out)`. ratio = times slower than seqshm"),
    ("telemetry", "Per-CPU times: demo's cpustat channel (published at 100 Hz) vs psutil; "
                  "baseline: seqshm `snapshot()`"),
    ("kernel", "Kernel module in the QEMU guest (TCG: emulated, ratios only); selftest "
               "hrtimer writing every 100 us; baseline: seqshm `snapshot(out)` through the mmap. "
               "'failed calls': no consistent copy within 50 ms (ReadTimeout, or EAGAIN from "
               "read()); 'seqshm writer writes/s': the selftest hrtimer's writes per second "
               "while that reader ran (nominal 10 k/s; TCG slows it, readers do not); "
               "'writer ticks lost': hrtimer ticks the ioctl-mutex model skipped "
               "because a reader held its lock (seqshm's writer never waits on readers)"),
]


# --- running -----------------------------------------------------------------------------

def run_suite(json_path: Path, quick: bool, extra: list[str]) -> int:
    cmd = [sys.executable, "-m", "pytest", str(HERE), "-q", "-p", "no:cacheprovider",
           f"--benchmark-json={json_path}", "--benchmark-columns=median,iqr,ops,rounds",
           "--benchmark-sort=name", *(QUICK_OPTS if quick else FULL_OPTS), *extra]
    # As scripts/test does: keep the checkout's seqshm/ source folder off sys.path.
    env = dict(os.environ, PYTHONSAFEPATH="1")
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT, env=env)


def _cmd(*args: str) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, check=False,
                              cwd=ROOT).stdout.strip()
    except OSError:
        return ""


def strip_rounds(data: dict) -> None:
    """Drop every round's time (tens of MB), keeping the statistics."""
    for b in data["benchmarks"]:
        b["stats"].pop("data", None)


def machine() -> dict:
    lscpu = dict(line.split(":", 1) for line in _cmd("lscpu").splitlines() if ":" in line)
    import numpy

    commit = _cmd("git", "rev-parse", "--short", "HEAD")
    dirty = _cmd("git", "status", "--porcelain", "--", "seqshm")
    return {
        "cpu": lscpu.get("Model name", platform.processor()).strip(),
        "cpus": os.cpu_count(),
        "hypervisor": lscpu.get("Hypervisor vendor", "").strip(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "seqshm_commit": commit + (" (seqshm/ modified)" if dirty else ""),
        "loadavg": os.getloadavg(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --- reading -----------------------------------------------------------------------------

class Result:
    def __init__(self, b: dict):
        self.name = b["name"]
        self.group = b["group"]
        self.info = b.get("extra_info", {})
        ops = self.info.get("ops_per_call", 1)
        self.median = b["stats"]["median"] / ops  # seconds per operation
        self.iqr = b["stats"]["iqr"] / ops
        self.rounds = b["stats"]["rounds"]

    @property
    def case(self) -> str:
        return self.info.get("case", self.name)

    @property
    def nbytes(self) -> int:
        return self.info.get("payload_bytes", 0)

    @property
    def bytes_per_s(self) -> float:
        return self.nbytes / self.median if self.median > 0 else float("nan")


def load(json_path: Path, guest_jsons=()):
    """The run's results by group, plus those of guest runs (benchmarks/guest.sh), whose
    groups are named after their kernel."""
    data = json.loads(json_path.read_text())
    groups: dict[str, list[Result]] = defaultdict(list)
    for b in data["benchmarks"]:
        r = Result(b)
        groups[r.group].append(r)
    for path in guest_jsons:
        for b in json.loads(Path(path).read_text())["benchmarks"]:
            r = Result(b)
            r.group = f"{r.group} (guest {r.info.get('kernel', '?')})"
            groups[r.group].append(r)
    return data, groups


def baseline(rows: list[Result]) -> Result | None:
    return next((r for r in rows if r.info.get("baseline")), None)


def find(groups, group: str, case: str) -> Result | None:
    return next((r for r in groups.get(group, []) if r.case == case), None)


# --- formatting --------------------------------------------------------------------------

def fmt_time(s: float) -> str:
    if s != s:
        return "-"
    for unit, f in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        if s >= f:
            return f"{s / f:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


def fmt_rate(x) -> str:
    if x is None or x != x:
        return "-"
    for unit, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= f:
            return f"{x / f:.3g} {unit}"
    return f"{x:.3g}"


def fmt_bytes_rate(x: float) -> str:
    return "-" if x != x else f"{x / 1e9:.3g} GB/s"


def size_name(n: int) -> str:
    for unit, f in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= f and n % f == 0:
            return f"{n // f} {unit}"
    return f"{n} B"


def group_key(group: str, rows: list[Result]):
    sec = rows[0].info.get("section", "")
    order = [s for s, _ in SECTIONS]
    return (order.index(sec) if sec in order else 99, rows[0].nbytes, group)


def table(rows: list[Result], section: str) -> list[str]:
    base = baseline(rows)
    cols = ["case", "median / op", "IQR", "ops/s", "bytes/s", "ratio to baseline"]
    if section == "contention":
        cols += ["snapshots/s", "retries / snapshot", "attempt success", "calls w/o timeout",
                 "writer writes/s"]
    if section == "publish":
        cols += ["publishes/s", "reader snapshots/s"]
    if section in ("peers", "telemetry"):
        cols += ["writer writes/s"]
    if section == "wake":
        cols += ["one-way p50", "one-way p99", "idle wake-ups/s", "idle CPU", "wakes / write"]
    if section == "kernel":
        cols += ["failed calls", "seqshm writer writes/s", "writer ticks lost"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        ratio = r.median / base.median if base else float("nan")
        mark = " (baseline)" if r is base else ""
        cells = [f"`{r.case}`{mark}", fmt_time(r.median), fmt_time(r.iqr),
                 fmt_rate(1 / r.median if r.median else None), fmt_bytes_rate(r.bytes_per_s),
                 f"{ratio:.2f}x"]
        i = r.info
        if section == "contention":
            cells += [fmt_rate(i.get("snapshots_per_s")),
                      _num(i.get("retries_per_snapshot"), "{:.3g}"),
                      _num(i.get("attempt_success_rate"), "{:.1%}"),
                      _num(i.get("call_success_rate"), "{:.1%}"),
                      fmt_rate(i.get("writer_writes_per_s"))]
        if section == "publish":
            rs = i.get("reader_snapshots_per_s") or []
            cells += [fmt_rate(i.get("publishes_per_s")),
                      ", ".join(fmt_rate(x) for x in rs) or "-"]
        if section in ("peers", "telemetry"):
            cells += [fmt_rate(i.get("writer_writes_per_s"))]
        if section == "wake":
            cells += [_num(i.get("p50_us"), "{:.1f} us"), _num(i.get("p99_us"), "{:.1f} us"),
                      _num(i.get("idle_wakeups_per_s"), "{:.0f}"),
                      _num(i.get("idle_cpu_percent"), "{:.2f}%"),
                      _num(i.get("wake_calls_per_write"), "{:.2f}")]
        if section == "kernel":
            calls, bad = i.get("calls"), i.get("failed_calls")
            cells += [f"{bad / calls:.1%}" if calls else "-",
                      fmt_rate(i.get("writer_writes_per_s")),
                      _num(i.get("writer_ticks_lost"), "{:.1%}")]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _num(x, f: str) -> str:
    return "-" if x is None else f.format(x)


# --- targets -----------------------------------------------------------------------------

def targets(groups) -> list[tuple[str, str, bool | None, str]]:
    """(target, measured, met, how) for each target of the issue, from the JSON alone."""
    out = []

    def ratio(g, a, b):
        ra, rb = find(groups, g, a), find(groups, g, b)
        return ra.median / rb.median if ra and rb else None

    x = ratio("snapshot 64B", "snapshot_out", "noop")
    out.append(("64 B `snapshot(out=)` within 1.5x a no-op extension call", x, 1.5, "le",
                "median snapshot_out / median noop"))
    x = ratio("snapshot 4KiB", "snapshot_out", "copy_unlocked")
    out.append(("4 KiB `snapshot(out=)` within 1.3x the plain-copy helper", x, 1.3, "le",
                "median snapshot_out / median _copy_unlocked"))
    x = ratio("snapshot 64B", "snapshot", "noop")
    out.append(("64 B allocating `snapshot()` within 5x a no-op call", x, 5.0, "le",
                "median snapshot / median noop"))
    for g in ("snapshot 1MiB", "snapshot 16MiB"):
        x = ratio(g, "copy_unlocked", "snapshot_out")  # bandwidth ratio = inverse time ratio
        out.append((f"{g.split()[1]}: `snapshot(out=)` >= 90% of copy bandwidth", x, 0.9, "ge",
                    "bytes/s snapshot_out / bytes/s _copy_unlocked"))
    for g, need in (("peers 64B", 15.0), ("peers 4KiB", 8.0)):
        seq = find(groups, g, "seqshm_snapshot_out")
        locks = [r for r in groups.get(g, []) if r.case in ("shm_lock_memoryview",
                                                             "shm_lock_copyto")]
        best = min(locks, key=lambda r: r.median) if locks else None
        x = best.median / seq.median if best and seq else None
        out.append((f"{g.split()[1]}: >= {need:g}x the snapshots/s of the best-written "
                    "shared_memory + Lock reader", x, need, "ge",
                    f"median of the fastest lock form (`{best.case if best else '?'}`) / "
                    "median seqshm snapshot(out)"))
        cp = find(groups, g, "shm_lock_copyto")
        if cp and seq and best is not cp:
            out.append((f"{g.split()[1]}: same, against the `np.copyto` lock form",
                        cp.median / seq.median, need, "ge",
                        "median shm_lock_copyto / median seqshm snapshot(out)"))
    for api, slots in (("write_pattern", 1), ("write_pattern", 8), ("write", 1)):
        for size in ("64B", "4KiB", "1MiB"):
            g = f"writer publish {api} {size} nr_slots={slots}"
            r0 = find(groups, g, "no reader")
            r1 = find(groups, g, "1 busy reader")
            x = r0.median / r1.median if r0 and r1 else None
            out.append((f"{size} `{api}`, nr_slots={slots}: publish rate with 1 busy reader "
                        "within 5% of none", x, 0.95, "ge",
                        "publishes/s with 1 reader / with none (medians)"))
    for size in ("1MiB", "4KiB"):
        idle = find(groups, f"contention {size} nr_slots=8", "writer idle")
        busy = find(groups, f"contention {size} nr_slots=8", "writer max")
        x = None
        if idle and busy and idle.info.get("snapshots_per_s"):
            x = busy.info["snapshots_per_s"] / idle.info["snapshots_per_s"]
        out.append((f"{size}, ring of 8: reader keeps >= 50% of its idle-writer rate under a "
                    "continuous writer", x, 0.5, "ge",
                    "snapshots/s (writer max) / snapshots/s (writer idle); snapshots/s = "
                    "successful calls / mean call time"))
        idle1 = find(groups, f"contention {size} nr_slots=1", "writer idle")
        busy1 = find(groups, f"contention {size} nr_slots=1", "writer max")
        if idle1 and busy1 and idle1.info.get("snapshots_per_s"):
            y = (busy1.info.get("snapshots_per_s") or 0) / idle1.info["snapshots_per_s"]
            out.append((f"{size}, one slot (for contrast, no target): same ratio", y, None, "",
                        "snapshots/s (writer max) / snapshots/s (writer idle)"))
    for g in sorted(groups):  # the kernel side, no targets: the ratios the issue asks for
        if not g.startswith("kernel ") or "nr_slots=1" not in g or "64KiB" in g:
            continue
        base = find(groups, g, "mmap_snapshot_out")
        for case, what in (("read_into", "device read() into an array"),
                           ("ioctl_mutex", "ioctl-mutex model (seed answer)")):
            r = find(groups, g, case)
            if base and r:
                lost = r.info.get("writer_ticks_lost")
                extra = f"; writer ticks lost {lost:.0%}" if lost is not None else ""
                out.append((f"{g}: {what} time / mmap `snapshot(out)` time", r.median /
                            base.median, None, "", f"medians, emulated (TCG){extra}"))
    for g in sorted(groups):  # the module's cpustat channel beside psutil, same guest run
        if not g.startswith("kernel cpustat"):
            continue
        base = find(groups, g, "cpustat_snapshot")
        ps = find(groups, g, "psutil_cpu_times_percpu")
        if base and ps:
            out.append((f"{g}: a `cpustat` `snapshot()` >= 50x `psutil.cpu_times(percpu=True)`",
                        ps.median / base.median, 50, "ge",
                        "median psutil / median snapshot(), same guest run (TCG)"))
    return out


def targets_md(groups) -> list[str]:
    lines = ["| target | measured | met? | computed as |", "|---|---|---|---|"]
    for name, x, need, op, how in targets(groups):
        if x is None:
            met, val = "not measured", "-"
        else:
            val = f"{x:.2f}x" if op != "ge" or need is None or need > 1 else f"{x:.1%}"
            if need is None:
                met = "(info)"
            else:
                ok = x <= need if op == "le" else x >= need
                met = "**met**" if ok else "**missed**"
        out_need = "" if need is None else (f" (need {'<=' if op == 'le' else '>='} "
                                            f"{need:g}{'x' if need > 1 else ''})")
        lines.append(f"| {name}{out_need} | {val} | {met} | {how} |")
    return lines


# --- plot --------------------------------------------------------------------------------

def plot(groups, png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, Result]]] = defaultdict(list)
    for g, rows in groups.items():
        if g.startswith("snapshot "):
            for r in rows:
                series[r.case].append((r.nbytes, r))
    for v in series.values():
        v.sort(key=lambda t: t[0])
    style = {
        "copy_unlocked": dict(color="black", ls="--", lw=2.2, marker="",
                              label="memcpy limit: _copy_unlocked(out)"),
        "np_copyto": dict(color="grey", ls=":", marker="x", label="np.copyto(out, src)"),
        "snapshot_out": dict(color="C0", marker="o", label="snapshot(out)"),
        "snapshot": dict(color="C1", marker="s", label="snapshot() (allocating)"),
        "read_out": dict(color="C4", marker="^", ms=4, label="read(out)"),
        "view_validate": dict(color="C2", marker="D", ms=4, label="begin/view/validate (no copy)"),
        "apply_sum": dict(color="C3", marker="v", label="apply(np.sum)"),
        "sum_local": dict(color="C3", ls=":", marker="", label="np.sum(private array)"),
        "noop": dict(color="C7", ls="-.", marker="", label="r._noop() call (no copy)"),
    }
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    for case, st in style.items():
        pts = series.get(case)
        if not pts:
            continue
        xs = [n for n, _ in pts]
        ax1.plot(xs, [r.median * 1e9 for _, r in pts], **st)
        if case in ("copy_unlocked", "np_copyto", "snapshot_out", "snapshot", "read_out"):
            ax2.plot(xs, [r.bytes_per_s / 1e9 for _, r in pts], **st)
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("payload size")
        ticks = sorted({n for pts in series.values() for n, _ in pts})
        ax.set_xticks(ticks, [size_name(n) for n in ticks], rotation=30)
        ax.grid(True, which="major", alpha=0.3)
    ax1.set_yscale("log")
    ax1.set_ylabel("median time per call (ns, log)")
    ax1.set_title("latency")
    ax1.legend(fontsize=8, loc="upper left")
    ax2.set_ylabel("bandwidth (GB/s)")
    ax2.set_title("bandwidth (copying forms)")
    ax2.legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


# --- report ------------------------------------------------------------------------------

def write_report(json_path: Path, out_dir: Path, mach: dict | None, command: str,
                 guest_jsons=()) -> Path:
    data, groups = load(json_path, guest_jsons)
    mach = mach or data.get("seqshm_machine") or {}
    header = (f"{mach.get('cpu', '?')}, {mach.get('cpus', '?')} CPUs"
              f"{' (' + mach['hypervisor'] + ' guest)' if mach.get('hypervisor') else ''}, "
              f"Linux {mach.get('kernel', '?')}, Python {mach.get('python', '?')}, "
              f"NumPy {mach.get('numpy', '?')}")
    png = out_dir / "snapshot.png"
    plot(groups, png, f"seqshm snapshot by payload size - {header}")
    la = mach.get("loadavg")
    lines = [
        "# seqshm benchmark results",
        "",
        f"- Machine: {header}",
        f"- seqshm commit: {mach.get('seqshm_commit', '?')}; run {mach.get('date', '?')}; "
        f"load average at start: {', '.join(f'{x:.2f}' for x in la) if la else '?'}",
        f"- Command: `{command}`; raw data: [`{json_path.name}`]({json_path.name}) "
        "(pytest-benchmark JSON)",
        "- Times are medians per operation; ratios divide by the group's baseline measured in "
        "the same run. Absolute numbers drift between runs and machines: read the ratios.",
        *([f"- Kernel groups: from `benchmarks/guest.sh` in the QEMU guest (TCG, emulated): "
           f"{', '.join(f'[`{Path(p).name}`]({Path(p).name})' for p in guest_jsons)}"]
          if guest_jsons else []),
        *(["- What the figures mean for the issue's targets, and why the misses happened: "
            "[analysis.md](analysis.md); where a small snapshot's time goes: "
            "[hotpath.md](hotpath.md)"] if (out_dir / "analysis.md").exists() else []),
        "",
        f"![latency and bandwidth by payload size]({png.name})",
        "",
        "## Targets (issue 5)",
        "",
        *targets_md(groups),
        "",
    ]
    by_section: dict[str, list[str]] = defaultdict(list)
    for g, rows in groups.items():
        by_section[rows[0].info.get("section", "")].append(g)
    for sec, blurb in SECTIONS:
        gs = sorted(by_section.get(sec, []), key=lambda g: group_key(g, groups[g]))
        if not gs:
            continue
        lines += [f"## {sec}", "", blurb + ".", ""]
        for g in gs:
            lines += [f"### {g}", "", *table(groups[g], sec), ""]
    md = out_dir / "report.md"
    md.write_text("\n".join(lines))
    return md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few rounds per benchmark")
    ap.add_argument("--json", type=Path, help="render this JSON only, do not run")
    ap.add_argument("--out", type=Path, default=RESULTS, help="output directory")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/report.py" + (" --quick" if a.quick else "")
    if a.json:
        json_path, mach = a.json, None
    else:
        json_path = a.out / "bench.json"
        mach = machine()
        if mach["loadavg"][0] > 0.5 * (mach["cpus"] or 1):
            print(f"warning: load average {mach['loadavg'][0]:.2f}: other work on this "
                  "machine will skew the numbers", file=sys.stderr)
        rc = run_suite(json_path, a.quick, a.pytest_args)
        if rc != 0:
            print(f"pytest exited with {rc}", file=sys.stderr)
            if not json_path.exists():
                return rc
        data = json.loads(json_path.read_text())
        mach["loadavg_end"] = os.getloadavg()
        data["seqshm_machine"] = mach
        strip_rounds(data)
        json_path.write_text(json.dumps(data, indent=1))
    guest = sorted(a.out.glob("kernel-*.json"))
    md = write_report(json_path, a.out, mach, command, guest)
    print(f"wrote {md}, {a.out / 'snapshot.png'}, {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
