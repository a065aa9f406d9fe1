"""The command line at its limits: times too long for time.sleep(), and more channels than the
process may hold open files."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_cli import ENV, _run_in_terminal, has_mapped, run, start, wait_until

import seqshm
from seqshm import _sidecar


@pytest.mark.parametrize(
    "args",
    [
        ["--interval", "1e300"],  # a screen update past what time.sleep() takes
        ["--rate", "1e-300"],  # a writer period past what Connection.poll() takes
    ],
)
def test_demo_with_a_period_too_long_to_sleep_still_runs_and_stops(
    make_path: Callable[[], str], args: list[str]
) -> None:
    path = make_path()
    out = run("demo", *args, "--duration", "0.5", "--path", path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "consistent snapshots" in out.stdout
    assert not os.path.exists(path)


_PUBLISH_SLOWLY = ("import sys; from seqshm.cli._procstat import publish_cpustat; "
                   "print(publish_cpustat(sys.argv[1], 1e-300), flush=True)")


def test_the_cpustat_publisher_at_a_rate_too_low_to_sleep_stops_at_once(
    make_path: Callable[[], str],
) -> None:
    """The one publish loop (the demo's writer, the exporter's tests) ends a pause when told,
    whatever its period: an Event set, SIGTERM, SIGHUP. Before, publish_cpustat checked both
    only between writes, after a sleep of up to a day (MAX_SLEEP_S) at --rate 1e-300."""
    import threading

    from seqshm.cli._procstat import publish_cpustat

    path = make_path()
    stop = threading.Event()
    done: list[int] = []
    t = threading.Thread(target=lambda: done.append(publish_cpustat(path, 1e-300, stop=stop)))
    t.start()
    wait_until(lambda: os.path.exists(path))
    stop.set()
    t.join(10)
    assert not t.is_alive() and done == [1] and not os.path.exists(path)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        p = subprocess.Popen([sys.executable, "-c", _PUBLISH_SLOWLY, path], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: os.path.exists(path))
        p.send_signal(sig)
        out, err = p.communicate(timeout=10)
        assert p.returncode == 0 and out.strip() == "1", err
        assert not os.path.exists(path)


def test_watch_with_an_interval_too_long_to_sleep_waits_for_ctrl_c(
    make_path: Callable[[], str],
) -> None:
    with seqshm.create(make_path(), np.int64, 2) as w:
        w.write([1, 2])
        p = start("watch", w.path, "--interval", "1e300", "--count", "2")
        assert p.stdout is not None
        assert '"event": "update"' in p.stdout.readline()
        wait_until(lambda: has_mapped(p.pid, w.path))
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=10)
    assert p.returncode == 130, err
    assert "Traceback" not in err


def test_list_reads_more_channels_than_it_may_open_files(shm_name: str) -> None:
    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("needs a writable /dev/shm")
    # 40 channels, and a limit of 32 open files: list opens one channel at a time
    paths = [f"/dev/shm/{shm_name}-{i:02d}" for i in range(40)]
    try:
        for path in paths:
            with seqshm.create(path, np.int64, 2) as w:
                w.write([1, 2])

        def few_files() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))

        out = subprocess.run(
            [sys.executable, "-m", "seqshm", "list", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
            env=ENV,
            preexec_fn=few_files,
        )
        assert out.returncode == 0, out.stderr
        rows = {r["path"]: r for r in json.loads(out.stdout)}
        assert all(rows[p]["error"] is None and rows[p]["state"] == "closed" for p in paths), [
            rows[p]["error"] for p in paths if rows[p]["error"]
        ]
    finally:
        for path in paths:
            if os.path.exists(path):
                os.unlink(path)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["list", "--json", "--no-rate"], ["info", "--json", "CHANNEL"]])
def test_output_that_cannot_be_written_says_so(
    make_path: Callable[[], str], args: list[str]
) -> None:
    with seqshm.create(make_path(), np.int64, 2) as w, open("/dev/full", "w") as full:
        w.write([1, 2])
        argv = [w.path if a == "CHANNEL" else a for a in args]
        out = subprocess.run(
            [sys.executable, "-m", "seqshm", *argv],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd="/",
            env=ENV,
        )
    assert out.returncode == 1
    assert out.stderr == "seqshm: cannot write the output: No space left on device\n"


def test_list_on_an_80_column_terminal_fits_and_keeps_rate_and_age(shm_name: str) -> None:
    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("needs a writable /dev/shm")
    path = f"/dev/shm/{shm_name}-with-a-rather-long-name-zq9"
    # beside it, a channel whose writer died mid-write: its STATE "writer-died, stuck" is the
    # longest there is, and pushed WRITES/S and AGE off the screen
    stuck = f"/dev/shm/{shm_name}-stuck"
    subprocess.run([sys.executable, "-c", "import os, sys, numpy as np, seqshm\n"
                    "from seqshm import _hooks\n"
                    "w = seqshm.create(sys.argv[1], np.float64, (8192,), nr_slots=4)\n"
                    "w.write(np.zeros(8192))\n_hooks.stall_mid_write(w, 1)\nos._exit(0)\n",
                    stuck], check=True, timeout=60)
    rec = np.dtype([(f"field_{i}", np.float64) for i in range(12)])
    try:
        with seqshm.create(path, rec, (3,)) as w:
            w.write(np.zeros(3, rec))
            code, screen = _run_in_terminal(["list"], columns=80)
    finally:
        os.unlink(path)
        os.unlink(stuck)
        os.unlink(_sidecar.path_of(stuck))  # its writer died: nobody else removes it
    assert code == 0, screen
    lines = [line for line in screen.splitlines() if line.strip()]
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split()[:8] == [
        "PATH",
        "SHAPE",
        "SLOTS",
        "WRITER",
        "ALIVE",
        "STATE",
        "WRITES/S",
        "AGE",
    ]
    row = next(line for line in lines if "zq9 " in line)  # the end of the name stays
    assert re.search(r"open\s+0\.00\s+\d+\.\d+ s", row), row


def test_permission_denied_says_whose_the_channel_is_and_what_to_do(
    make_path: Callable[[], str],
) -> None:
    from seqshm.cli import _base

    with seqshm.create(make_path(), np.int64, 2) as w:
        os.chmod(w.path, 0o600)
        text = _base.error_text(PermissionError(13, "Permission denied", w.path))
    assert text.startswith(f"{w.path}: Permission denied (mode 0600, owner ")
    assert "run as a user who may open it" in text


def test_the_librarys_advice_on_a_channel_is_not_given_twice(
    make_path: Callable[[], str],
) -> None:
    """A PermissionError the library made already says whose channel it is and what to do:
    the CLI adds nothing (it appended its own hint after the library's, two remedies)."""
    from seqshm.cli import _base

    with seqshm.create(make_path(), np.int64, 2) as w:
        advice = ("this user may not read the channel file (mode 0600, owner x, group x): "
                  "run as one its mode lets read")
        text = _base.error_text(PermissionError(13, advice, w.path))
    assert text == f"{w.path}: {advice}"


@pytest.mark.parametrize("command", ["list", "info", "watch", "record", "export", "demo"])
def test_every_commands_help_gives_the_exit_statuses(command: str) -> None:
    out = run(command, "--help")
    assert out.returncode == 0 and out.stderr == ""
    assert "exit status:" in out.stdout and "130" in out.stdout and "/dev/seqshm" in out.stdout


def test_version_names_the_program() -> None:
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout == f"seqshm {seqshm.__version__}\n"


@pytest.mark.parametrize("kind", ["text", "another channel"])
def test_demo_never_removes_a_file_that_is_not_a_demo_channel(
    make_path: Callable[[], str], kind: str
) -> None:
    path = make_path()
    if kind == "text":
        with open(path, "w") as f:
            f.write("precious\n")
    else:  # a channel of someone else's, its writer gone: its last write is still readable
        with seqshm.create(path, np.int64, 2) as w:
            w.write([1, 2])
    before = Path(path).read_bytes()
    out = run("demo", "--duration", "0.2", "--path", path)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"{path} exists and is not a channel an earlier demo left" in out.stderr
    assert Path(path).read_bytes() == before


def test_watch_table_into_a_pipe_prints_every_frame(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 2) as w:
        w.write([1, 2])
        out = run("watch", w.path, "--format", "table", "--count", "3", "--interval", "0.05")
    assert out.returncode == 0, out.stderr
    assert len(re.findall(r"^seq 1  ", out.stdout, re.M)) == 3, out.stdout
    assert out.stdout.endswith("\n") and "\x1b[" not in out.stdout
