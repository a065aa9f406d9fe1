"""The kernel module tested for real: per kernel, provision, build, boot QEMU, run guest tests.

Each test is the whole flow of tests/vm/vmharness.py and fails, with the guest's pytest output
and console tail, if anything goes wrong: provisioning, the build, a hang, an oops or WARN,
a taint, a missing result, failing or all-skipped guest tests.
Environment:
  SEQSHM_SKIP_VM=1          skip these tests (the only way they are skipped on the host)
  SEQSHM_VM_PYTEST_ARGS     pytest arguments in the guest, shell-quoted (default:
                            vmharness.DEFAULT_PYTEST_ARGS, tests/device and the kernel
                            backend of the reader tests)
  SEQSHM_VM_TIMEOUT         wall-clock limit per boot, seconds (default: 600)
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vmharness  # noqa: E402

pytestmark = pytest.mark.vm


def _skip_reason() -> str | None:
    if os.environ.get("SEQSHM_IN_VM"):
        return "running inside the seqshm VM guest: the VM tests run on the host"
    if os.environ.get("SEQSHM_SKIP_VM", "") not in ("", "0"):
        return "SEQSHM_SKIP_VM is set: the kernel module's QEMU tests were opted out"
    return None


@pytest.fixture(autouse=True)
def _opt_out():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def clib_tools():
    """libseqshm and tests/device/test_clib.py's C program, built once on the host (both
    plain and with the sanitizers) in the VM cache, which the guests see: compiling them under
    TCG in every guest took ~3 minutes per kernel."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import clib

    work = vmharness.cache_dir() / "clib"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    return {clib.TOOLS_ENV: str(clib.build_tools(work))}


@pytest.mark.parametrize("kernel", vmharness.KERNELS)
def test_module_passes_guest_tests(kernel, vm_report, clib_tools):
    args = os.environ.get("SEQSHM_VM_PYTEST_ARGS")
    opts = vmharness.Options(
        pytest_args=shlex.split(args) if args is not None else list(vmharness.DEFAULT_PYTEST_ARGS),
        timeout=float(os.environ.get("SEQSHM_VM_TIMEOUT", vmharness.DEFAULT_TIMEOUT)),
        env=dict(clib_tools),
    )
    result = vmharness.run_kernel(kernel, opts)
    report = result.report()
    print(report)
    vm_report(
        report.splitlines()[0] + (f"  [{result.summary_line}]" if result.summary_line else "")
    )
    if not result.ok:
        pytest.fail(report, pytrace=False)


def test_module_compiles_without_warnings():
    """W=1 and sparse on all three kernels, and checkpatch --strict (module/check.sh)."""
    proc = subprocess.run(
        ["bash", str(vmharness.HERE / "check_module.sh")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    print(proc.stdout)
    if proc.returncode != 0:
        tail = proc.stdout[-6000:]
        pytest.fail(f"check_module.sh -> rc {proc.returncode}:\n{tail}", pytrace=False)
