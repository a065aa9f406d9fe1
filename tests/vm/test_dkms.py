"""The seqshm-dkms package as a user installs it: built (scripts/build-deb), installed with
apt-get into a Debian 12 root that has the 6.1 and 6.12 kernels (DKMS builds for both), then a
PREEMPT_RT kernel installed after it (DKMS's kernel hook builds for that one), the example
producer built against the installed package with DKMS; each kernel booted in QEMU into that
root, where the module is loaded from /lib/modules/<kernel>/updates/dkms by modules-load.d and a
non-root user in the udev rule's group reads cpustat (tests/vm/dkms_guest.sh); then apt-get
remove, which must leave no module in any kernel. Logs and the guest transcripts are kept in
tests/vm/.cache/runs/dkms-<time>/ and printed.

What is not a stock boot: the guest runs tests/vm/init.sh as PID 1, which mounts the root over
9p read-only and runs, chrooted, the programs systemd runs at boot for these steps
(systemd-modules-load, systemd-udevd and udevadm trigger), not systemd itself; and the root is
installed on the host (chroot), not in the guest. Skipped like test_vm.py (SEQSHM_SKIP_VM=1).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vmharness  # noqa: E402

pytestmark = pytest.mark.vm
REPO = vmharness.REPO
ROOT_SCRIPT = vmharness.HERE / "dkms_root.sh"
GUEST_SCRIPT = vmharness.HERE / "dkms_guest.sh"


@pytest.fixture(autouse=True)
def _opt_out():
    if os.environ.get("SEQSHM_IN_VM"):
        pytest.skip("running inside the seqshm VM guest: the VM tests run on the host")
    if os.environ.get("SEQSHM_SKIP_VM", "") not in ("", "0"):
        pytest.skip("SEQSHM_SKIP_VM is set: the kernel module's QEMU tests were opted out")


def _run(cmd: list[str], log: Path, timeout: float = 1800) -> str:
    """Run `cmd`, append its output to `log`; fail the test with the tail if it fails."""
    started = time.monotonic()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout)
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}   ({time.monotonic() - started:.0f} s, rc {proc.returncode})\n")
        f.write(proc.stdout)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} -> rc {proc.returncode} (log: {log}):\n"
                    f"{proc.stdout[-5000:]}", pytrace=False)
    return proc.stdout


def _wheel_for(log: Path) -> Path:
    """The repaired wheel for the root's Python (3.11 on bookworm): dist/'s, or built now."""
    tag = "cp311"
    found = sorted(glob.glob(str(REPO / "dist" / f"seqshm-*-{tag}-{tag}-manylinux*.whl")))
    if found:
        return Path(found[-1])
    out = _run(["bash", str(REPO / "scripts" / "test-wheel"), "--build-only"], log)
    return Path(out.strip().splitlines()[-1])


def test_dkms_package_installs_on_every_kernel_loads_at_boot_and_removes(vm_report):
    cache = vmharness.cache_dir()
    run_dir = vmharness.new_run_dir(cache / "runs", "dkms")
    log = run_dir / "host.log"
    timings: dict[str, float] = {}
    t = time.monotonic()
    kenvs = vmharness.provision(vmharness.KERNELS)
    timings["provision"] = time.monotonic() - t

    t = time.monotonic()
    deb = Path(_run(["bash", str(REPO / "scripts" / "build-deb"), str(run_dir)], log)
               .strip().splitlines()[-1])
    wheel = _wheel_for(log)
    timings["build deb+wheel"] = time.monotonic() - t

    root = cache / "dkms-root" / "root"
    t = time.monotonic()
    _run(["bash", str(ROOT_SCRIPT), "make", str(root), kenvs["6.1"]["KVER"],
          kenvs["6.12"]["KVER"]], log)
    timings["root"] = time.monotonic() - t

    rt = kenvs["6.12-rt"]
    debs, version = cache / "debs", rt["PKG_VERSION"]
    rt_debs = sorted(glob.glob(str(debs / f"linux-*-{rt['KVER']}_{version}_*.deb")))
    rt_debs += glob.glob(str(debs / f"linux-headers-*-common-rt_{version}_*.deb"))
    assert len(rt_debs) == 3, f"the 6.12-rt image, headers and common-rt headers: {rt_debs}"
    rt_pkgs = [Path(d).name.split("_")[0] for d in rt_debs]

    t = time.monotonic()
    install_log = _run(["bash", str(ROOT_SCRIPT), "install", str(root), str(deb), str(wheel),
                        *rt_debs], log)
    (run_dir / "install.log").write_text(install_log)
    timings["install"] = time.monotonic() - t
    for kernel, kenv in kenvs.items():
        built = root / "lib" / "modules" / kenv["KVER"] / "updates" / "dkms" / "seqshm.ko"
        assert built.is_file(), f"no {built} after the install ({kernel}); {run_dir}/install.log"

    guest_dir = root / "usr" / "local" / "lib" / "seqshm-test"
    guest_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(GUEST_SCRIPT, guest_dir / "dkms_guest.sh")
    top = root / Path(str(run_dir)).parts[1]
    made_top = not top.exists()
    reports, failed = [], []
    try:
        for kernel in vmharness.KERNELS:
            t = time.monotonic()
            # The transcript and the guest script's status go to the results folder (the cwd).
            opts = vmharness.Options(
                guest_cmd="{ sh /usr/local/lib/seqshm-test/dkms_guest.sh; echo $? >rc; } "
                ">transcript.txt 2>&1; cat transcript.txt; exit $(cat rc)",
                module_dir=None, skip_provision=True, root=root,
                timeout=float(os.environ.get("SEQSHM_VM_TIMEOUT", vmharness.DEFAULT_TIMEOUT)),
            )
            result = vmharness.run_kernel(kernel, opts)
            timings[f"boot {kernel}"] = time.monotonic() - t
            transcript = (result.run_dir / "guest" / "transcript.txt") if result.run_dir else None
            text = transcript.read_text() if transcript and transcript.is_file() else ""
            (run_dir / f"guest-{kernel}.txt").write_text(text)
            reports.append(result.report())
            print(f"---- guest transcript, {kernel} ----\n{text}")
            if not result.ok:
                failed.append(f"{result.report()}\n{text[-3000:]}")
    finally:
        shutil.rmtree(guest_dir, ignore_errors=True)
        if made_top:
            shutil.rmtree(top, ignore_errors=True)

    t = time.monotonic()
    remove_log = _run(["bash", str(ROOT_SCRIPT), "remove", str(root), *rt_pkgs], log)
    (run_dir / "remove.log").write_text(remove_log)
    timings["remove"] = time.monotonic() - t
    for kenv in kenvs.values():
        left = list((root / "lib" / "modules" / kenv["KVER"]).rglob("seqshm*.ko*"))
        assert not left, f"{kenv['KVER']}: {left} after apt-get remove"

    summary = "dkms: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    print(f"{summary}\ninstall:\n{install_log}\nremove:\n{remove_log}")
    vm_report(f"{summary}  (logs: {run_dir})" + ("  FAILED" if failed else ""))
    if failed:
        pytest.fail("\n\n".join(failed), pytrace=False)
