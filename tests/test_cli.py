"""The command line: demo, info and watch as a user runs them (a subprocess, no terminal)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable

import numpy as np

import seqshm
from seqshm.telemetry import CPUSTAT_DTYPE


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # cwd "/": the checkout's source folder must not shadow the installed package
    return subprocess.run([sys.executable, "-m", "seqshm", *args], capture_output=True,
                          text=True, timeout=timeout, cwd="/",
                          env={**os.environ, "COLUMNS": "120"})


def test_info_prints_the_layout_and_state(make_path: Callable[[], str]) -> None:
    rec = np.dtype([("a", np.uint32), ("b", np.float64, (2,))])
    with seqshm.create(make_path(), rec, (3,), nr_slots=4, name="pose") as w:
        w.write(np.zeros(3, rec))
        w.write(np.zeros(3, rec))
        out = run("info", w.path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "pose" in text and "(3,)" in text and "4 (stride" in text
    assert f"pid {os.getpid()}" in text
    assert "writes          2" in text
    assert "a:uint32@0" in text


def test_watch_shows_updates_with_their_rate(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.float64, (4,)) as w:
        w.write(np.arange(4.0))
        out = run("watch", w.path, "--count", "2", "--interval", "0.05")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("writes/s") == 2
    assert "min" in out.stdout and "max" in out.stdout


def test_info_of_a_missing_channel_exits_2_naming_it() -> None:
    out = run("info", "/dev/shm/seqshm-no-such-channel")
    assert out.returncode == 2
    assert "seqshm-no-such-channel" in out.stdout


def test_info_of_a_file_that_is_not_a_channel_exits_2(tmp_path: os.PathLike[str]) -> None:
    bogus = os.path.join(tmp_path, "bogus")
    with open(bogus, "wb") as f:
        f.write(b"x" * 4096)
    out = run("info", bogus)
    assert out.returncode == 2
    assert "not a seqshm region" in out.stdout


def test_demo_runs_for_its_duration_and_removes_its_channel(make_path: Callable[[], str]) -> None:
    path = make_path()
    out = run("demo", "--duration", "1", "--interval", "0.25", "--path", path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "consistent snapshots" in out.stdout
    assert "per-CPU load" in out.stdout
    assert not os.path.exists(path)


def test_demo_replaces_a_channel_left_by_a_killed_demo(make_path: Callable[[], str]) -> None:
    path = make_path()
    # A writer that dies without cleaning up leaves its file behind.
    child = subprocess.run(
        [sys.executable, "-c",
         "import os, signal, numpy as np, seqshm\n"
         "from seqshm.telemetry import CPUSTAT_DTYPE\n"
         f"w = seqshm.create({path!r}, CPUSTAT_DTYPE, 2)\n"
         "w.write(np.zeros(2, CPUSTAT_DTYPE))\n"
         "os.kill(os.getpid(), signal.SIGKILL)\n"],
        cwd="/", capture_output=True)
    assert child.returncode == -signal.SIGKILL and os.path.exists(path)
    out = run("demo", "--duration", "1", "--interval", "0.25", "--path", path)
    assert out.returncode == 0, out.stdout + out.stderr
    writes = int(out.stdout.rsplit(" of ", 1)[1].split()[0])
    assert writes > 1  # the reader followed the new writer, not the dead one's single write
    assert not os.path.exists(path)


def test_demo_refuses_a_channel_a_live_writer_holds(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), CPUSTAT_DTYPE, 2) as w:
        out = run("demo", "--duration", "1", "--path", w.path)
        assert out.returncode == 1
        assert "another writer" in out.stdout
        assert os.path.exists(w.path)


def test_bad_arguments_exit_2_with_usage() -> None:
    out = run("demo", "--rate", "0")
    assert out.returncode == 2
    assert "not > 0" in out.stderr


def test_info_says_when_the_writer_closed_the_channel(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 2) as w:
        w.write([1, 2])
    out = run("info", w.path)
    assert out.returncode == 0, out.stderr
    assert "state           closed" in out.stdout


def test_info_says_when_the_writer_process_is_gone(make_path: Callable[[], str]) -> None:
    path = make_path()
    code = ("import sys, os, numpy as np, seqshm; "
            "w = seqshm.create(sys.argv[1], np.int64, 2); w.write([1, 2]); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, path], check=True, cwd="/")
    out = run("info", path)
    assert out.returncode == 0, out.stderr
    assert "(exited)" in out.stdout and "state           writer-died" in out.stdout


def test_watch_says_when_the_writer_has_gone(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 2) as w:
        w.write([1, 2])
    out = run("watch", w.path, "--count", "1")
    assert out.returncode == 0, out.stderr
    assert "writer gone: closed" in " ".join(out.stdout.split())
