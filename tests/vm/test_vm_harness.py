"""The VM harness's own logic, without QEMU: how a guest run is judged, the guest's config file."""

from __future__ import annotations

import shlex
import struct
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vmharness  # noqa: E402
from vmharness import BootResult, GuestConfig, RunResult, judge  # noqa: E402

GOOD_MARKER = (
    "seqshm-vm: SEQSHM-VM-RESULT rc=0 unload=0 stage=done taint_before=0 taint=12288 uptime=9.1"
)
JUNIT = (
    '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" '
    'failures="0" skipped="{skipped}" tests="{tests}" time="1.0"/></testsuites>'
)


def _judge(
    tmp_path: Path,
    console: str = GOOD_MARKER,
    *,
    timed_out: bool = False,
    dmesg: str = "",
    tests: int = 3,
    skipped: int = 0,
    junit: bool = True,
    origin: str = "",
) -> RunResult:
    out = tmp_path / "guest"
    out.mkdir()
    if dmesg:
        (out / "dmesg.txt").write_text(dmesg)
    if junit:
        (out / "junit.xml").write_text(JUNIT.format(tests=tests, skipped=skipped))
    (out / "output.log").write_text(f"===== {tests - skipped} passed in 1.00s =====\n")
    if origin:
        (out / "seqshm_origin.txt").write_text(origin)
    booted = BootResult(console, timed_out, None if timed_out else 0, 1.0, {})
    return judge(RunResult("6.1"), booted, out, expect_junit=True, timeout=600)


def test_clean_run_passes(tmp_path):
    result = _judge(tmp_path)
    assert result.ok, result.problems
    assert result.summary_line == "3 passed in 1.00s"
    assert result.junit == {"tests": 3, "failures": 0, "errors": 0, "skipped": 0}


def test_missing_marker_fails(tmp_path):
    result = _judge(tmp_path, "[    2.2] Kernel panic - not syncing: boom")
    assert not result.ok
    assert any("no SEQSHM-VM-RESULT" in p for p in result.problems)


def test_marker_text_inside_the_echoed_command_does_not_count(tmp_path):
    console = "seqshm-vm: running in /repo: /bin/sh -c 'echo SEQSHM-VM-RESULT rc=0 stage=done'"
    assert not _judge(tmp_path, console).ok


def test_timeout_fails(tmp_path):
    result = _judge(tmp_path, "seqshm-vm: tests begin", timed_out=True)
    assert any("did not finish within 600 s" in p for p in result.problems)


@pytest.mark.parametrize(
    "line",
    [
        "[    3.1] WARNING: CPU: 0 PID: 168 at drivers/x.c:9 f+0x4a/0xff0 [seqshm]",
        "[    3.1] BUG: kernel NULL pointer dereference, address: 0000000000000000",
        "[    3.1] Oops: 0002 [#1] PREEMPT SMP NOPTI",
        "[    3.1] Call Trace:",
        "[   48.7] watchdog: BUG: soft lockup - CPU#1 stuck for 45s! [insmod:124]",
        "[   23.5] rcu: INFO: rcu_preempt self-detected stall on CPU",
        "[    2.2] Kernel panic - not syncing: boom",
    ],
)
def test_kernel_trouble_in_dmesg_fails(tmp_path, line):
    result = _judge(tmp_path, dmesg=f"[    1.0] ok\n{line}\n")
    assert not result.ok
    assert any(line in p for p in result.problems)


def test_kernel_command_line_panic_setting_is_not_trouble(tmp_path):
    dmesg = "[    0.0] Kernel command line: console=ttyS0 quiet panic=-1\n"
    assert _judge(tmp_path, dmesg=dmesg).ok


def test_guest_lines_are_not_scanned_as_kernel_trouble(tmp_path):
    console = f"seqshm-vm: running in /repo: pytest -k 'panic or WARNING:'\n{GOOD_MARKER}"
    assert _judge(tmp_path, console).ok


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ("rc=1 unload=0 stage=done", "exited with rc 1"),
        ("rc=255 unload=none stage=insmod", "stage 'insmod'"),
        ("rc=0 unload=1 stage=done", "rmmod"),
        ("rc=0 unload=0 stage=done taint_before=0 taint=12800", "W (warning)"),
        ("rc=0 unload=0 stage=done taint_before=0 taint=12416", "D (oops)"),
    ],
)
def test_bad_result_fields_fail(tmp_path, fields, problem):
    result = _judge(tmp_path, f"seqshm-vm: SEQSHM-VM-RESULT {fields}")
    assert not result.ok
    assert any(problem in p for p in result.problems), result.problems


def test_out_of_tree_and_unsigned_taints_are_expected(tmp_path):
    # 12288 = O (out-of-tree, bit 12) | E (unsigned, bit 13): what loading seqshm.ko does.
    assert _judge(tmp_path).ok


def test_all_tests_skipped_fails(tmp_path):
    result = _judge(tmp_path, tests=5, skipped=5)
    assert any("all 5 guest tests were skipped" in p for p in result.problems)


def test_no_tests_fails(tmp_path):
    assert any("no tests ran" in p for p in _judge(tmp_path, tests=0).problems)


def test_missing_junit_fails(tmp_path):
    assert any("no junit.xml" in p for p in _judge(tmp_path, junit=False).problems)


def test_seqshm_from_the_source_tree_fails(tmp_path):
    origin = f"seqshm: imported by the tests from {vmharness.REPO}/seqshm/__init__.py"
    assert any("source tree" in p for p in _judge(tmp_path, origin=origin).problems)


def test_seqshm_from_site_packages_passes(tmp_path):
    origin = "seqshm: imported by the tests from /venv/lib/python3.11/site-packages/seqshm/x.py"
    assert _judge(tmp_path, origin=origin).ok


def _conf(config: GuestConfig) -> dict[str, str]:
    values = {}
    for line in config.conf_text(["virtio.ko", "9p.ko"]).splitlines():
        name, _, value = line.partition("=")
        (values[name],) = shlex.split(value) or [""]
    return values


def test_guest_config_is_shell_quoted():
    cmd = ["/usr/bin/python3", "-P", "-m", "pytest", "-k", "a and not b's"]
    config = GuestConfig("6.1", Path("/repo"), Path("/repo/out"), None, cmd, env={"A": "x y"})
    values = _conf(config)
    assert shlex.split(values["VM_CMD"]) == cmd
    assert shlex.split(values["VM_ENV"]) == ["A=x y"]
    assert values["VM_MODULES"] == "virtio.ko 9p.ko"
    assert values["VM_KO"] == ""


def test_guest_keeps_host_tmp_entries_the_run_needs():
    cmd = ["/tmp/venv/bin/python", "/tmp/extra/tests"]
    config = GuestConfig("6.1", Path("/tmp/clone"), Path("/tmp/clone/out"), Path("/srv/m.ko"), cmd)
    keep = _conf(config)["VM_TMP_KEEP"].split()
    assert {"clone", "venv", "extra"} <= set(keep)


def _elf_with_modinfo(modinfo: bytes) -> bytes:
    """A minimal ELF64 with a .shstrtab and a .modinfo section, enough for modinfo()."""
    shstrtab = b"\0.shstrtab\0.modinfo\0"
    header_size, sh_size = 64, 64
    data_off = header_size
    shstr_off, mod_off = data_off, data_off + len(shstrtab)
    shoff = mod_off + len(modinfo)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr = ident + struct.pack(
        "<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, header_size, 0, 0, sh_size, 3, 1
    )
    null = bytes(sh_size)
    sh_shstr = struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, shstr_off, len(shstrtab), 0, 0, 1, 0)
    sh_mod = struct.pack("<IIQQQQIIQQ", 11, 1, 2, 0, mod_off, len(modinfo), 0, 0, 1, 0)
    return ehdr + shstrtab + modinfo + null + sh_shstr + sh_mod


def test_modinfo_reads_depends():
    info = vmharness.modinfo(_elf_with_modinfo(b"license=GPL\0depends=9pnet,netfs\0name=9p\0"))
    assert info["depends"] == "9pnet,netfs"
    assert info["name"] == "9p"


def test_guest_modules_come_after_their_dependencies(tmp_path):
    kernel = tmp_path / "kernel"
    kernel.mkdir()
    for name, deps in {
        "9p": "9pnet,netfs",
        "9pnet": "",
        "netfs": "",
        "9pnet_virtio": "9pnet",
    }.items():
        (kernel / f"{name}.ko").write_bytes(_elf_with_modinfo(f"depends={deps}\0".encode()))
    (tmp_path / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\n")
    order = [n for n, _ in vmharness.guest_kmods(tmp_path)]
    assert order.index("9pnet.ko") < order.index("9pnet_virtio.ko")
    assert order.index("9pnet.ko") < order.index("9p.ko")
    assert order.index("netfs.ko") < order.index("9p.ko")
    assert "virtio_pci.ko" not in order  # built in


def test_missing_guest_module_is_an_error(tmp_path):
    (tmp_path / "kernel").mkdir()
    with pytest.raises(vmharness.VMError, match="neither in"):
        vmharness.guest_kmods(tmp_path)


def test_guest_plugin_stays_on_a_user_pythonpath():
    env = vmharness.guest_env({"PYTHONPATH": "/site", "X": "1"})
    assert env["PYTHONPATH"] == f"/site:{vmharness.HERE / 'guest'}"
    assert env["X"] == "1"
    assert vmharness.guest_env({})["PYTHONPATH"] == str(vmharness.HERE / "guest")
