"""The seqshm-dkms package as a user installs it: built (scripts/build-deb), installed with
apt-get into a Debian 12 root that has the 6.1 and 6.12 kernels (DKMS builds for both), the
example producer built against the installed package with DKMS, then a PREEMPT_RT kernel
installed after both (DKMS's kernel hook builds seqshm, then the example, for that one); the root
is a fresh copy of a cached base each run. Each kernel booted in QEMU into that
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


def _wheel_for(run_dir: Path, log: Path) -> Path:
    """The repaired wheel for the root's Python (3.11 on bookworm): $SEQSHM_DKMS_WHEEL (.ci/run
    builds it first), or built now from the sdist by scripts/test-wheel into the run folder."""
    given = os.environ.get("SEQSHM_DKMS_WHEEL")
    if given:
        assert "-cp311-" in Path(given).name, f"SEQSHM_DKMS_WHEEL={given}: bookworm needs cp311"
        return Path(given)
    env = dict(os.environ, SEQSHM_PYTHON="python3.11", SEQSHM_DIST=str(run_dir))
    proc = subprocess.run(["bash", str(REPO / "scripts" / "test-wheel"), "--build-only"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          timeout=1800)
    with log.open("a") as f:
        f.write(f"$ scripts/test-wheel --build-only (rc {proc.returncode})\n{proc.stdout}")
    if proc.returncode != 0:
        pytest.fail(f"scripts/test-wheel --build-only -> rc {proc.returncode}:\n"
                    f"{proc.stdout[-5000:]}", pytrace=False)
    return Path(proc.stdout.strip().splitlines()[-1])


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
    wheel = _wheel_for(run_dir, log)
    timings["build deb+wheel"] = time.monotonic() - t

    base, root = cache / "dkms-root" / "base", cache / "dkms-root" / "run"
    t = time.monotonic()
    _run(["bash", str(ROOT_SCRIPT), "make", str(base), kenvs["6.1"]["KVER"],
          kenvs["6.12"]["KVER"]], log)
    timings["root"] = time.monotonic() - t

    rt = kenvs["6.12-rt"]
    debs, version = cache / "debs", rt["PKG_VERSION"]
    rt_debs = sorted(glob.glob(str(debs / f"linux-*-{rt['KVER']}_{version}_*.deb")))
    rt_debs += glob.glob(str(debs / f"linux-headers-*-common-rt_{version}_*.deb"))
    assert len(rt_debs) == 3, f"the 6.12-rt image, headers and common-rt headers: {rt_debs}"

    t = time.monotonic()
    install_log = _run(["bash", str(ROOT_SCRIPT), "install", str(base), str(root), str(deb),
                        str(wheel), *rt_debs], log)
    (run_dir / "install.log").write_text(install_log)
    timings["install"] = time.monotonic() - t
    for kernel, kenv in kenvs.items():
        # DKMS compresses a module as the kernel's own are: 6.12's .ko.xz, 6.1's .ko.
        dkms_dir = root / "lib" / "modules" / kenv["KVER"] / "updates" / "dkms"
        for module in ("seqshm", "seqshm_example"):
            assert list(dkms_dir.glob(f"{module}.ko*")), (
                f"no {module}.ko* in {dkms_dir} after the install ({kernel}); "
                f"{run_dir}/install.log")

    guest_dir = root / "usr" / "local" / "lib" / "seqshm-test"
    guest_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(GUEST_SCRIPT, guest_dir / "dkms_guest.sh")
    failed = []
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
            print(f"---- guest transcript, {kernel} ----\n{text}")
            if not result.ok:
                failed.append(f"{result.report()}\n{text[-3000:]}")
    finally:
        shutil.rmtree(guest_dir, ignore_errors=True)

    t = time.monotonic()
    remove_log = _run(["bash", str(ROOT_SCRIPT), "remove", str(root)], log)
    (run_dir / "remove.log").write_text(remove_log)
    timings["remove"] = time.monotonic() - t
    for kenv in kenvs.values():
        moddir = root / "lib" / "modules" / kenv["KVER"]
        left = list(moddir.rglob("seqshm*.ko*"))
        assert not left, f"{kenv['KVER']}: {left} after apt-get remove"
        dep = [ln for ln in (moddir / "modules.dep").read_text().splitlines() if "seqshm" in ln]
        assert not dep, f"{kenv['KVER']}: modules.dep still names {dep} after apt-get remove"

    summary = "dkms: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
    print(f"{summary}\ninstall:\n{install_log}\nremove:\n{remove_log}")
    vm_report(f"{summary}  (logs: {run_dir})" + ("  FAILED" if failed else ""))
    if failed:
        pytest.fail("\n\n".join(failed), pytrace=False)
    # 1.7 GB per run: the base stays cached, the installed copy goes once it has passed.
    shutil.rmtree(root)
