"""libseqshm in the guest: the C reader (tests/c/seqshm_tool.c over the library built by meson
and installed) opens the kernel's selftest channel by its bare name, checks its header as the
Python side does, and takes snapshots no torn copy gets through, while the same check over
copies that bypass the retry (the test program's hook) finds torn ones; its waits sleep in
poll() until the kernel's next write."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

if not os.path.isdir("/dev/seqshm"):
    pytest.skip("no /dev/seqshm: the seqshm module is not loaded here (runs in the VM)",
                allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from clib import parse, tools  # noqa: E402

#: A bound for hangs (TCG is slow), never a speed check.
HANG_S = 300.0


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "asan+ubsan"])
def tool(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[Path, dict[str, str]]:
    # built by the host before the boot (tests/vm/test_vm.py), or here (tests/vm/run.py)
    lib, path = tools(tmp_path_factory.mktemp("libseqshm"), request.param)
    return path, lib.env()


def _run(tool: tuple[Path, dict[str, str]], *args: str) -> dict[str, str]:
    done = subprocess.run([str(tool[0]), *args], capture_output=True, text=True,
                          timeout=HANG_S, env=tool[1])
    assert done.returncode == 0 and "Sanitizer" not in done.stderr, (done.stdout, done.stderr)
    return parse(done.stdout.strip().splitlines()[-1])


def test_c_reader_opens_the_selftest_device_by_name(tool: tuple[Path, dict[str, str]]) -> None:
    info = _run(tool, "info", "selftest")  # a bare name: /dev/seqshm/selftest first
    assert info["device"] == "1" and info["name"] == "selftest" and info["pid"] == "0"
    assert info["fields"] == ":u8:0:1:0"
    assert _run(tool, "state", "selftest")["state"] == "open"


def test_c_reader_waits_in_poll_for_the_kernels_next_write(tool: tuple[Path, dict[str, str]]
                                                          ) -> None:
    got = _run(tool, "wait", "/dev/seqshm/selftest", "10000")
    assert got["wait"] == "1" and got["state"] == "open", got


def test_c_snapshots_never_torn_and_the_check_fails_without_the_retry(
        tool: tuple[Path, dict[str, str]]) -> None:
    """Write k fills every word of the selftest payload with k: a snapshot whose words differ
    (or differ from its write number) is torn. None is, with the retry; without it (copies
    straight from the zero-copy view, not validated) some are: back-to-back copies for a few
    seconds, then copies whose halves are 2 ms apart, which a running writer always tears."""
    good = _run(tool, "torn", "/dev/seqshm/selftest", "3")
    assert int(good["torn"]) == 0 and int(good["distinct"]) > 10, good
    fast = _run(tool, "torn", "/dev/seqshm/selftest", "3", "bypass")
    split = fast if int(fast["torn"]) else _run(tool, "torn", "/dev/seqshm/selftest", "0.2",
                                                "bypass-split")
    print(f"libseqshm torn check: retry {good}; bypassed {fast}; split {split}")
    assert int(split["torn"]) > 0, "no torn copy without the retry: the check cannot fail"
