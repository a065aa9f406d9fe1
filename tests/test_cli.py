"""The command line as a user runs it: list, info, watch, record and demo in a subprocess (no
terminal, unless a test gives it a pseudo-terminal), their output, exit status and stderr."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import pathlib
import pty
import re
import select
import signal
import stat
import struct
import subprocess
import sys
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest

import seqshm
from seqshm import _core
from seqshm._cpustat import CPUSTAT_DTYPE
from seqshm._lifecycle import process_start_time

REC = np.dtype([("a", np.uint32), ("b", np.float64, (2,))])
ENV = {**os.environ, "COLUMNS": "120"}


def run(*args: str, timeout: float = 60, cwd: str = "/") -> subprocess.CompletedProcess[str]:
    # cwd "/": the checkout's source folder must not shadow the installed package
    return subprocess.run([sys.executable, "-m", "seqshm", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=ENV)


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "seqshm", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd="/", env=ENV)


def wait_until(cond: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def has_mapped(pid: int, path: str) -> bool:
    """Whether process ``pid`` has the channel at ``path`` mapped (it opened it)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return path in f.read()
    except OSError:
        return False


@contextmanager
def writing(w: seqshm.Writer, hz: float = 200,
            data: Callable[[int], np.ndarray] | None = None) -> Iterator[None]:
    """``w`` written at about ``hz`` in a thread meanwhile: zeros, or ``data(k)`` as write k."""
    stop = threading.Event()

    def loop() -> None:
        k = 0
        while not stop.wait(1 / hz):
            k += 1
            w.write(np.zeros(w.shape, w.dtype) if data is None else data(k))

    t = threading.Thread(target=loop)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def left_by_a_dead_writer(path: str) -> None:
    """A channel at ``path`` with one write, whose writer process exited without closing it."""
    code = ("import sys, os, numpy as np, seqshm; "
            "w = seqshm.create(sys.argv[1], np.int64, 2); w.write([1, 2]); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, path], check=True, cwd="/")


@pytest.fixture
def in_dev_shm(shm_name: str) -> str:
    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("needs a writable /dev/shm")
    return shm_name


# -- info ----------------------------------------------------------------------------------------


def test_info_prints_the_layout_and_state(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), REC, (3,), nr_slots=4, name="pose") as w:
        w.write(np.zeros(3, REC))
        w.write(np.zeros(3, REC))
        out = run("info", w.path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "pose" in text and "(3,)" in text and "4 (stride" in text
    assert f"pid {os.getpid()}" in text
    assert "writes          2" in text
    assert "a:uint32@0, b:(2,)float64@4" in text
    assert "clock           CLOCK_MONOTONIC (1)" in text
    assert re.search(r"last write age  \d+\.\d+ s", text)
    assert out.stderr == ""


def test_info_json(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, (2,), nr_slots=2) as w:
        w.write([1, 2])
        out = run("info", "--json", w.path)
    assert out.returncode == 0, out.stderr
    j = json.loads(out.stdout)
    assert j["dtype"] == "int64" and j["descr"] == "<i8" and j["shape"] == [2]
    assert j["nr_slots"] == 2 and j["writes"] == 1 and j["clock"] == "CLOCK_MONOTONIC"
    assert j["writer_pid"] == os.getpid() and j["writer_alive"] is True
    assert j["state"] == "open" and j["stuck"] is False and j["mid_write_slots"] == []
    assert 0 <= j["age_s"] < 30


def test_info_marks_a_slot_stuck_mid_write(make_path: Callable[[], str]) -> None:
    w = seqshm.create(make_path(), np.int64, (2,), nr_slots=1)
    w.write([1, 1])
    _core._bench_stall_mid_write(w, 1)
    out = run("info", "--timeout", "0.2", w.path)
    assert out.returncode == 0, out.stderr
    assert "slot 0          stuck mid-write (write 2)" in out.stdout
    assert "dtype           int64" in out.stdout and "writes          1" in out.stdout
    j = json.loads(run("info", "--json", "--timeout", "0.2", w.path).stdout)
    assert j["stuck"] is True and j["mid_write_slots"] == [0] and "mid-write" in j["read_error"]
    os.unlink(w.path)


def test_info_of_a_missing_channel_exits_2_on_stderr() -> None:
    out = run("info", "/dev/shm/seqshm-no-such-channel")
    assert out.returncode == 2
    assert "seqshm-no-such-channel" in out.stderr and out.stdout == ""
    assert "Traceback" not in out.stderr


def test_a_bare_name_is_looked_up_in_the_search_dirs_not_the_cwd(
        make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 2) as w:
        name = os.path.basename(w.path)
        out = run("info", name, cwd=os.path.dirname(w.path))
        assert out.returncode == 0 or not os.path.exists(f"/dev/shm/{name}")
        if not os.path.exists(f"/dev/shm/{name}"):
            assert out.returncode == 2
            assert f"/dev/seqshm/{name}" in out.stderr and f"/dev/shm/{name}" in out.stderr
            if not os.path.isdir("/dev/seqshm"):
                assert "kernel module is not loaded" in out.stderr
        assert run("info", f"./{name}", cwd=os.path.dirname(w.path)).returncode == 0


def test_info_of_a_file_that_is_not_a_channel_exits_2(tmp_path: os.PathLike[str]) -> None:
    bogus = os.path.join(tmp_path, "bogus")
    with open(bogus, "wb") as f:
        f.write(b"x" * 4096)
    out = run("info", bogus)
    assert out.returncode == 2
    assert "not a seqshm region" in out.stderr


def test_info_says_when_the_writer_closed_the_channel(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 2) as w:
        w.write([1, 2])
    out = run("info", w.path)
    assert out.returncode == 0, out.stderr
    assert "state           closed" in out.stdout


def test_info_says_when_the_writer_process_is_gone(make_path: Callable[[], str]) -> None:
    path = make_path()
    left_by_a_dead_writer(path)
    out = run("info", path)
    assert out.returncode == 0, out.stderr
    assert "(exited)" in out.stdout and "state           writer-died" in out.stdout


# -- list ----------------------------------------------------------------------------------------


def test_list_json_shows_channels_and_skips_other_files(in_dev_shm: str) -> None:
    base = f"/dev/shm/{in_dev_shm}"
    others = [f"{base}-notachannel", f"/dev/shm/.{in_dev_shm}.tmp", f"{base}-broken"]
    try:
        with open(others[0], "wb") as f:
            f.write(b"x" * 4096)
        with open(others[1], "wb") as f:
            f.write(_core.MAGIC.to_bytes(8, sys.byteorder) + b"\0" * 4088)
        with open(others[2], "wb") as f:  # the magic, then nonsense: a broken channel
            f.write(_core.MAGIC.to_bytes(8, sys.byteorder) + b"\xff" * 4088)
        with seqshm.create(base, REC, (3,), nr_slots=4, name="pose") as w, writing(w):
            out = run("list", "--json")
    finally:
        for p in others:
            os.unlink(p)
    assert out.returncode == 0, out.stderr
    rows = {r["path"]: r for r in json.loads(out.stdout)}
    assert all(set(r) == set(rows[base]) for r in rows.values())  # stable keys
    r = rows[base]
    assert r["name"] == in_dev_shm and r["channel"] == "pose" and r["shape"] == [3]
    assert r["dtype"] == "a:uint32, b:(2,)float64" and r["nr_slots"] == 4
    assert r["writer_pid"] == os.getpid() and r["writer_alive"] is True
    assert r["state"] == "open" and r["error"] is None
    assert r["rate_hz"] > 20 and 0 <= r["age_s"] < 5
    assert others[0] not in rows and others[1] not in rows
    assert rows[others[2]]["error"] and rows[others[2]]["dtype"] is None


def test_list_text_without_rates(in_dev_shm: str) -> None:
    with seqshm.create(f"/dev/shm/{in_dev_shm}", np.int64, (2,)) as w:
        w.write([1, 2])
        w.close()
        out = run("list", "--no-rate")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].split() == [
        "PATH", "SHAPE", "SLOTS", "WRITER", "ALIVE", "STATE", "WRITES/S", "AGE", "DTYPE"]
    line = next(s for s in out.stdout.splitlines() if s.startswith(w.path + " "))
    assert line.split()[1:8] == ["(2,)", "1", "pid", str(os.getpid()), "no", "closed", "-"]
    assert line.endswith(" int64")


# -- watch ---------------------------------------------------------------------------------------


def test_watch_writes_json_lines_when_not_on_a_terminal(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), REC, (2,)) as w:
        w.write(np.zeros(2, REC))
        with writing(w, 100):
            out = run("watch", w.path, "--count", "3", "--interval", "0.05")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(s) for s in out.stdout.splitlines()]
    assert len(lines) == 3 and {r["event"] for r in lines} == {"update"}
    assert lines[0]["rate_hz"] is None and lines[2]["rate_hz"] > 0
    assert lines[0]["data"] == [{"a": 0, "b": [0.0, 0.0]}] * 2
    assert lines[0]["state"] == "open" and lines[0]["writer_pid"] == os.getpid()


def test_watch_csv_has_a_header_and_ends_with_the_channel(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), REC, (2,)) as w:
        w.write(np.ones(2, REC))
    out = run("watch", w.path, "--format", "csv", "--interval", "0.05")
    assert out.returncode == 0, out.stderr
    rows = list(csv.reader(io.StringIO(out.stdout)))
    assert rows[0] == ["event", "path", "seq", "timestamp_ns", "age_s", "rate_hz", "state",
                       "data[0].a", "data[0].b[0]", "data[0].b[1]",
                       "data[1].a", "data[1].b[0]", "data[1].b[1]"]
    assert rows[1][0] == "update" and rows[1][2] == "1" and rows[1][5] == ""
    assert rows[1][7:] == ["1", "1.0", "1.0"] * 2
    assert rows[2][0] == "ended" and rows[2][6] == "closed" and len(rows) == 3


def test_watch_ends_with_a_record_when_the_writer_dies(make_path: Callable[[], str]) -> None:
    path = make_path()
    left_by_a_dead_writer(path)
    out = run("watch", path)
    assert out.returncode == 0, out.stderr
    last = json.loads(out.stdout.splitlines()[-1])
    assert last["event"] == "ended" and last["state"] == "writer-died"
    assert "without closing" in last["reason"]


def test_watch_follows_a_restarted_producer(make_path: Callable[[], str]) -> None:
    path = make_path()
    with seqshm.create(path, np.int64, 2) as w:
        for i in range(5):
            w.write([i, i])
        p = start("watch", path, "--interval", "1")
        assert p.stdout is not None
        assert json.loads(p.stdout.readline())["seq"] == 5
    # a restart between two updates: the next one finds the new channel, not the end
    with seqshm.create(path, np.int64, 2, overwrite=True) as w2:
        w2.write([7, 7])
        line = json.loads(p.stdout.readline())
        assert line["event"] == "update" and line["seq"] == 1 and line["data"] == [7, 7]
    rest, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    last = json.loads(rest.splitlines()[-1])
    assert last["event"] == "ended" and last["state"] == "closed" and last["seq"] == 1


def test_watch_reports_a_stuck_channel_and_goes_on(make_path: Callable[[], str]) -> None:
    w = seqshm.create(make_path(), np.int64, 2)
    w.write([1, 1])
    _core._bench_stall_mid_write(w, 1)
    out = run("watch", w.path, "--count", "2", "--timeout", "0.1", "--interval", "0.05")
    os.unlink(w.path)
    assert out.returncode == 0, out.stderr
    first = json.loads(out.stdout.splitlines()[0])
    assert first["data"] is None and "mid-write" in first["error"]


def terminal_output(args: list[str], columns: int = 80, rows: int = 24,
                    raw: bool = False) -> tuple[int, bytes]:
    """Run the CLI with a pseudo-terminal of ``columns`` x ``rows`` as its stdio: its exit
    status and the bytes it wrote (``raw``: the terminal does no output processing, so every
    byte is one the program wrote, not a line feed turned into CR LF)."""
    master, slave = pty.openpty()
    if raw:
        tty.setraw(slave)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    p = subprocess.Popen([sys.executable, "-m", "seqshm", *args], stdin=slave, stdout=slave,
                         stderr=slave, cwd="/", env={**env, "TERM": "xterm-256color"})
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif p.poll() is not None:
            break
    os.close(master)
    return p.wait(10), b"".join(chunks)


def _run_in_terminal(args: list[str], columns: int = 80, rows: int = 24) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal of ``columns`` x ``rows`` as its stdio."""
    code, out = terminal_output(args, columns, rows)
    text = out.decode(errors="replace")
    # each cursor move (a redraw) as a line break, colours and carriage returns dropped
    text = re.sub(r"\x1b\[[0-9;?]*[A-HJKf]", "\n", text)
    return code, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", text)


def test_watch_on_a_terminal_fits_80_columns_without_nan(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), CPUSTAT_DTYPE, (6,)) as w:
        w.write(np.full(6, 123456789012345, CPUSTAT_DTYPE))
        code, text = _run_in_terminal(["watch", w.path, "--count", "1"])
    assert code == 0, text
    lines = text.splitlines()
    assert max(len(s) for s in lines) <= 80, text
    assert "nan" not in text and "- writes/s" in text
    assert "123456789012345" in text and "more" in text  # fields cut to the width, and said


# -- record --------------------------------------------------------------------------------------


def _ring_of_five(path: str) -> np.ndarray:
    """Five writes to a closed ring of 8 slots at ``path``; returns what was written."""
    data = np.zeros((5, 2), REC)
    data["a"] = np.arange(10).reshape(5, 2)
    data["b"] = np.arange(20.0).reshape(5, 2, 2)
    with seqshm.create(path, REC, (2,), nr_slots=8) as w:
        for d in data:
            w.write(d)
    return data


def test_record_npy_round_trip(make_path: Callable[[], str], tmp_path: os.PathLike[str]
                               ) -> None:
    path, out_file = make_path(), os.path.join(tmp_path, "rec.npy")
    data = _ring_of_five(path)
    out = run("record", path, "-o", out_file)  # ends when the channel does
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""
    a = np.load(out_file)
    assert a.dtype.names == ("seq", "timestamp_ns", "lost", "data")
    assert a["seq"].tolist() == [1, 2, 3, 4, 5] and a["lost"].tolist() == [0] * 5
    assert np.array_equal(a["data"], data) and np.all(np.diff(a["timestamp_ns"].astype(int)) > 0)


def test_record_npz_with_a_count(make_path: Callable[[], str], tmp_path: os.PathLike[str]
                                 ) -> None:
    path, out_file = make_path(), os.path.join(tmp_path, "rec.npz")
    data = _ring_of_five(path)
    out = run("record", path, "-o", out_file, "--count", "3")
    assert out.returncode == 0, out.stderr
    with np.load(out_file) as z:
        assert sorted(z.files) == ["data", "lost", "seq", "timestamp_ns"]
        assert z["seq"].tolist() == [1, 2, 3] and np.array_equal(z["data"], data[:3])


@pytest.mark.parametrize("ext", [".parquet", ".arrow"])
def test_record_arrow_formats(make_path: Callable[[], str], tmp_path: os.PathLike[str],
                              ext: str) -> None:
    pa = pytest.importorskip("pyarrow")
    path, out_file = make_path(), os.path.join(tmp_path, "rec" + ext)
    data = _ring_of_five(path)
    out = run("record", path, "-o", out_file)
    assert out.returncode == 0, out.stderr
    if ext == ".parquet":
        table = pytest.importorskip("pyarrow.parquet").read_table(out_file)
    else:
        table = pa.ipc.open_file(out_file).read_all()
    assert table.column("seq").to_pylist() == [1, 2, 3, 4, 5]
    assert table.column("data.a").to_pylist() == data["a"].tolist()
    assert table.column("data.b").to_pylist() == data["b"].tolist()


def test_record_refuses_an_unknown_extension_or_missing_pyarrow(
        make_path: Callable[[], str], tmp_path: os.PathLike[str]) -> None:
    out = run("record", "/dev/shm/whatever", "-o", os.path.join(tmp_path, "x.txt"))
    assert out.returncode == 2 and "'.txt'" in out.stderr and ".npy" in out.stderr
    code = ("import sys; sys.modules['pyarrow'] = None; from seqshm.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    out = subprocess.run([sys.executable, "-c", code, "record", "/dev/shm/whatever", "-o",
                          os.path.join(tmp_path, "x.parquet")],
                         capture_output=True, text=True, cwd="/")
    assert out.returncode == 2
    assert ".parquet" in out.stderr and "pip install pyarrow" in out.stderr


@pytest.mark.parametrize("where", ["missing dir", "a directory", "parent is a file"])
def test_record_refuses_an_unwritable_destination_before_recording(
        make_path: Callable[[], str], tmp_path: os.PathLike[str], where: str) -> None:
    """Said at once, naming the file asked for and what to do, before any write is taken (not
    after a recording that then has nowhere to go), even when writes keep coming."""
    plain = os.path.join(tmp_path, "plain")
    open(plain, "w").close()
    target = {"missing dir": os.path.join(tmp_path, "no", "such", "x.npy"),
              "a directory": os.path.join(tmp_path, "d.npy"),
              "parent is a file": os.path.join(plain, "x.npy")}[where]
    if where == "a directory":
        os.mkdir(target)
    with seqshm.create(make_path(), np.int64, 2) as w, writing(w):
        out = run("record", w.path, "-o", target)  # no --count: only a refusal returns
    assert out.returncode == 2, out.stderr
    assert target in out.stderr and ".tmp" not in out.stderr and "Traceback" not in out.stderr
    assert not os.path.isfile(target)


def test_record_writes_what_it_has_on_ctrl_c(make_path: Callable[[], str],
                                            tmp_path: os.PathLike[str]) -> None:
    out_file = os.path.join(tmp_path, "rec.npy")
    with seqshm.create(make_path(), np.int64, 2, nr_slots=16) as w, writing(w):
        p = start("record", w.path, "-o", out_file)
        wait_until(lambda: has_mapped(p.pid, w.path))
        wait_until(lambda: w.seq > 5)
        # Ctrl-C once a batch is in the spool (.FILE.recording beside FILE): on a loaded
        # machine a fixed sleep could send it before record had made the spool, and then
        # there is nothing to save (the intermittent failure this test had)
        spool = os.path.join(tmp_path, ".rec.npy.recording")
        wait_until(lambda: os.path.exists(spool) and os.path.getsize(spool) > 128 + 2 * 40)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=10)
    assert p.returncode == 130 and "Traceback" not in err, err
    a = np.load(out_file)
    assert len(a) >= 1 and np.all(np.diff(a["seq"].astype(int)) - 1 == a["lost"][1:])


# -- exit status, signals, arguments -------------------------------------------------------------


def test_ctrl_c_in_watch_exits_130_without_a_traceback(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 2) as w:
        w.write([1, 2])
        p = start("watch", w.path, "--interval", "0.05")
        wait_until(lambda: has_mapped(p.pid, w.path))
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=10)
    assert p.returncode == 130 and err == ""


def test_help_documents_the_exit_status() -> None:
    out = run("--help")
    assert out.returncode == 0
    for text in ("exit status", "130", "runtime error", "usage error", "/dev/seqshm"):
        assert text in out.stdout


@pytest.mark.parametrize("args, option", [
    (["demo", "--rate", "0"], "--rate"),
    (["demo", "--rate", "inf"], "--rate"),
    (["demo", "--rate", "nan"], "--rate"),
    (["demo", "--rate", "abc"], "--rate"),
    (["demo", "--duration", "-1"], "--duration"),
    (["watch", "x", "--count", "0"], "--count"),
    (["watch", "x", "--interval", "-0.5"], "--interval"),
    (["record", "x", "-o", "x.npy", "--duration", "-2"], "--duration"),
])
def test_bad_arguments_exit_2_naming_the_option(args: list[str], option: str) -> None:
    out = run(*args)
    assert out.returncode == 2
    assert f"argument {option}" in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == ""


# -- demo ----------------------------------------------------------------------------------------


def test_demo_runs_for_its_duration_and_removes_its_channel(make_path: Callable[[], str]) -> None:
    path = make_path()
    out = run("demo", "--duration", "1", "--interval", "0.25", "--path", path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "consistent snapshots" in out.stdout
    assert "per-CPU load" in out.stdout
    assert "nan" not in out.stdout
    assert not os.path.exists(path)


def test_demo_stops_within_an_interval_at_a_low_rate(make_path: Callable[[], str]) -> None:
    path = make_path()
    t0 = time.monotonic()
    out = run("demo", "--rate", "0.01", "--duration", "0.2", "--interval", "0.1",
              "--path", path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert time.monotonic() - t0 < 10  # not the 100 s the writer would sleep
    assert not os.path.exists(path)


def _demo_writer_pid(p: subprocess.Popen[str], path: str) -> int:
    """The pid of the writer process demo ``p`` started, once it has created ``path``."""
    pid = 0

    def created() -> bool:
        nonlocal pid
        try:
            with seqshm.open(path) as r:
                pid = r.header["writer_pid"]
        except (FileNotFoundError, seqshm.FormatError):
            return False
        return pid != p.pid

    wait_until(created)
    with open(f"/proc/{pid}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == p.pid  # our child
    return pid


def test_demo_writer_dies_with_a_killed_demo(make_path: Callable[[], str]) -> None:
    path = make_path()
    p = start("demo", "--duration", "0", "--path", path)
    try:
        writer = _demo_writer_pid(p, path)
        p.kill()
        p.wait(10)
        wait_until(lambda: process_start_time(writer) is None, timeout=5)
        wait_until(lambda: not os.path.exists(path), timeout=5)
    finally:
        p.kill()
        p.communicate()


def test_demo_ctrl_c_exits_130_and_cleans_up(make_path: Callable[[], str]) -> None:
    path = make_path()
    p = start("demo", "--duration", "0", "--interval", "0.1", "--path", path)
    writer = _demo_writer_pid(p, path)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=10)
    assert p.returncode == 130 and "Traceback" not in err, err
    wait_until(lambda: process_start_time(writer) is None, timeout=5)
    assert not os.path.exists(path)


def test_demo_replaces_a_channel_left_by_a_killed_demo(make_path: Callable[[], str]) -> None:
    path = make_path()
    # A writer that dies without cleaning up leaves its file behind.
    child = subprocess.run(
        [sys.executable, "-c",
         "import os, signal, numpy as np, seqshm\n"
         "from seqshm._cpustat import CPUSTAT_DTYPE\n"
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
        assert "another writer" in out.stderr and out.stdout == ""
        assert os.path.exists(w.path)


def test_record_refuses_a_symlink_or_a_fifo_at_the_output(
        make_path: Callable[[], str], tmp_path: os.PathLike[str]) -> None:
    """-o LINK is refused at once (a recording replaces its output, never writes through a
    link: the link's target and the link stay as they were); -o FIFO too (a recording is
    written whole, to a file), instead of the FIFO being replaced."""
    real = os.path.join(tmp_path, "real.npy")
    with open(real, "wb") as f:
        f.write(b"mine")
    link = os.path.join(tmp_path, "link.npy")
    os.symlink(real, link)
    fifo = os.path.join(tmp_path, "fifo.npy")
    os.mkfifo(fifo)
    with seqshm.create(make_path(), np.int64, 2, nr_slots=16) as w, writing(w):
        out = run("record", w.path, "-o", link, "--count", "3")
        refused = run("record", w.path, "-o", fifo)
    assert out.returncode == 2 and link in out.stderr and "symbolic link" in out.stderr
    assert os.path.islink(link) and pathlib.Path(real).read_bytes() == b"mine"
    assert refused.returncode == 2 and fifo in refused.stderr and "FIFO" in refused.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_record_is_not_stopped_by_a_stale_temporary(make_path: Callable[[], str],
                                                   tmp_path: os.PathLike[str]) -> None:
    """A temporary left by a killed earlier run (any name of that kind, any pid) is no
    obstacle."""
    target = os.path.join(tmp_path, "out.npy")
    for pid in range(1, 64):
        open(os.path.join(tmp_path, f".out.npy.{pid}.tmp"), "w").close()
    with seqshm.create(make_path(), np.int64, 2, nr_slots=16) as w, writing(w):
        out = run("record", w.path, "-o", target, "--count", "2")
    assert out.returncode == 0, out.stderr
    assert len(np.load(target)) == 2
