"""The export benchmark (test_bench_export.py, its host scene) in QEMU guests with 2, 16 and 64
vCPUs (TCG: emulated, so ratios only), over the kernel module's cpustat channel and the guest's
real /proc/stat; JSON to results/export-guest-<N>cpus.json, tables appended to export.md.

    python benchmarks/guest_export.py [--cpus 2 16 64] [--kernel 6.1 [6.12 ...]]
                                      [--python VENV/bin/python]

Results of kernel 6.1 go to export-guest-<N>cpus.json, of another kernel K to
export-guest-<N>cpus-<K>.json.

The guest runs the host's Python over tests/vm's read-only 9p share: ``--python`` must have a
non-editable install of seqshm with the ``test`` extra (prometheus_client, psutil,
pytest-benchmark), and the host Debian's prometheus-node-exporter (the guest sees /usr/bin).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "vm"))
import vmharness  # noqa: E402
from test_bench_export import render  # noqa: E402

#: Scrapes per HTTP case in a guest: a scrape there takes tens of ms.
GUEST_ROUNDS = 60


def run_guest(cpus: int, kernel: str, python: str, timeout: float) -> dict[str, Any]:
    """Boot ``kernel`` with ``cpus`` vCPUs and seqshm.ko, run the benchmark's host scene."""
    qemu_command = vmharness.qemu_command

    def with_cpus(*args: Any, **kwargs: Any) -> list[str]:
        # more vCPUs want more memory for their per-CPU areas; the harness boots 2 with 1 GiB
        return qemu_command(*args, smp=cpus, memory=1024 + 32 * cpus, **kwargs)

    vmharness.qemu_command = with_cpus  # type: ignore[assignment]
    out_name = f"export-guest-{cpus}cpus{'' if kernel == '6.1' else '-' + kernel}.json"
    pytest = [python, "-P", "-m", "pytest", "benchmarks/test_bench_export.py", "-k", "host",
              "-p", "no:cacheprovider", "-q", "--benchmark-json=$SEQSHM_VM_OUT/" + out_name]
    # the guest has no network but loopback, which its init leaves down
    cmd = ("(ip link set lo up || busybox ifconfig lo 127.0.0.1 up) && "
           f"SEQSHM_BENCH_EXPORT_ROUNDS={GUEST_ROUNDS} " + " ".join(
               shlex.quote(w) if "$" not in w else w for w in pytest))
    try:
        result = vmharness.run_kernel(kernel, vmharness.Options(
            guest_cmd=cmd, python=python, timeout=timeout, skip_provision=False))
    finally:
        vmharness.qemu_command = qemu_command  # type: ignore[assignment]
    print(result.report(), flush=True)
    assert result.run_dir is not None
    produced = result.run_dir / "guest" / out_name
    if not result.ok or not produced.exists():
        log = result.run_dir / "guest" / "output.log"
        raise SystemExit(f"{cpus} vCPUs: no results; see {log}:\n"
                         + (log.read_text()[-3000:] if log.exists() else ""))
    data: dict[str, Any] = json.loads(produced.read_text())
    (HERE / "results" / out_name).write_text(json.dumps(data, indent=2) + "\n")
    return data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpus", type=int, nargs="+", default=[2, 16, 64])
    ap.add_argument("--kernel", nargs="+", default=["6.1"], choices=vmharness.KERNELS)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    report = HERE / "results" / "export.md"
    for kernel in args.kernel:
        for cpus in args.cpus:
            before = os.getloadavg()[0]
            data = run_guest(cpus, kernel, args.python, args.timeout)
            after = os.getloadavg()[0]
            text = render(data).split("\n## ", 1)[1]  # the tables, without the run's header
            with report.open("a") as f:
                f.write(f"\n# QEMU guest, {cpus} vCPUs (TCG), kernel {kernel}, kernel cpustat "
                        f"channel\n\nHost load average (1 min) before and after the guest run: "
                        f"{before:.2f}, {after:.2f}.\n\n## {text}")
            print(f"{cpus} vCPUs, kernel {kernel}: appended to {report}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
