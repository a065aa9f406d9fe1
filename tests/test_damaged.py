"""A damaged or hostile region, or a writer stopped between two of its stores, never hangs,
crashes or misleads a reader: every call ends within its timeout with the truth or a typed
error naming the file (docs/security.md, section 1; issue 16, recipe 3).

Each case runs in a child process with a hard deadline, so that a regression (a reader spinning
forever, a crash) fails its test instead of hanging or killing the suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import seqshm
from seqshm import _core

LAYOUT = _core.abi_layout()
HEAD = LAYOUT["header"]["head"]
STATE = LAYOUT["header"]["state"]
SLOT_SIZE = LAYOUT["slot"]["size"]
#: A child that has not finished by then is stuck (every call in it asks for <= 1 s).
HARD_DEADLINE_S = 20.0


def make_channel(path: str | Path, dtype: Any, shape: tuple[int, ...], nr_slots: int,
                 writes: int) -> None:
    """A closed channel at ``path`` whose write k (1..writes) holds k in every element."""
    with seqshm.create(str(path), dtype, shape, nr_slots=nr_slots, overwrite=True) as w:
        for k in range(1, writes + 1):
            w.write(np.full(shape, k % 251, dtype))


def poke(path: str | Path, offset: int, value: int, size: int = 8) -> None:
    """Store ``value`` (native byte order) at ``offset`` of the file, as a writer scribbling on
    its mapping would (a tmpfs file and its mappings share their pages)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, value.to_bytes(size, sys.byteorder), offset)
    finally:
        os.close(fd)


def slot_field(i: int, field: str) -> int:
    """Offset in the region of ``field`` (seq, write_seq, timestamp_ns) of slot ``i``."""
    return int(_core.SLOTS_OFFSET) + i * SLOT_SIZE + LAYOUT["slot"][field]


# The child's side: it runs one named scenario and prints one JSON line of what happened.
CHILD = textwrap.dedent('''
    import json, sys, time
    import numpy as np
    import seqshm

    def failure(e, t0):
        return {"error": type(e).__name__, "typed": isinstance(e, seqshm.SeqshmError),
                "names_file": PATH in str(e), "message": str(e),
                "seconds": time.monotonic() - t0}

    def outcome(fn):
        t0 = time.monotonic()
        try:
            value = fn()
        except BaseException as e:
            return failure(e, t0)
        return {"value": value, "seconds": time.monotonic() - t0}

    def samples(r, timeout):
        return [[int(s.seq), int(s.lost)] for s in r.follow(timeout=timeout)]

    def view_validate(r):
        token = r.begin()
        r.view(token).tobytes()
        return r.validate(token)

    CALLS = {
        "snapshot": lambda r: int(r.read().seq),
        "read": lambda r: int(r.read().seq),
        "history": lambda r: [int(s) for s in r.history().seq],
        "view": view_validate,
        "follow_next": lambda r: int(next(r.follow(timeout=FOLLOW_TIMEOUT)).seq),
        "follow_all": lambda r: samples(r, FOLLOW_TIMEOUT),
        "state": lambda r: r.state.value,
        "wait": lambda r: r.wait(FOLLOW_TIMEOUT),
    }
    PATH, WHAT = sys.argv[1], sys.argv[2]
    TIMEOUT, FOLLOW_TIMEOUT = json.loads(sys.argv[3]), json.loads(sys.argv[4])
    SETUP = sys.argv[5] if len(sys.argv) > 5 else ""
    t0 = time.monotonic()
    try:
        r = seqshm.open(PATH, timeout=TIMEOUT)
    except BaseException as e:
        print(json.dumps(dict(failure(e, t0), during="open")), flush=True)
        sys.exit(0)
    exec(SETUP)
    print(json.dumps(outcome(lambda: CALLS[WHAT](r))), flush=True)
''')


def run_child(path: str | Path, what: str, timeout: float | None = 0.002,
              follow_timeout: float | None = 0.002, setup: str = "") -> dict[str, Any]:
    """Open ``path`` in a child process (reader timeout ``timeout``) and make the call ``what``
    (follow's and wait's timeout ``follow_timeout``), after running ``setup`` there. Fails the
    test if the child hangs past HARD_DEADLINE_S or dies of a signal."""
    args = [sys.executable, "-c", CHILD, str(path), what, json.dumps(timeout),
            json.dumps(follow_timeout), setup]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=HARD_DEADLINE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} on {path} hung: the child was killed after {HARD_DEADLINE_S} s")
    assert done.returncode >= 0, (f"{what} on {path} crashed the reader "
                                  f"({signal.Signals(-done.returncode).name}):\n{done.stderr}")
    assert done.returncode == 0, f"{what} on {path}: the child failed:\n{done.stderr}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def assert_typed(result: dict[str, Any], error: str) -> None:
    """The call raised ``error`` (a seqshm error naming the file)."""
    assert result.get("error") == error, result
    assert result["typed"] and result["names_file"], result


# -- issue 16, recipe 3: one channel's header copied over another's --------------------------

@pytest.fixture
def overwritten(shm_path: str) -> str:
    """Channel B (uint8 (3000,), 2 slots, 3 writes) with the first 300 bytes of channel A
    (int32 (4, 5), 8 slots, 9 writes) copied over its start: A's header, B's slots."""
    a = shm_path + "-a"
    try:
        make_channel(a, np.int32, (4, 5), 8, 9)
        make_channel(shm_path, np.uint8, (3000,), 2, 3)
        head = Path(a).read_bytes()[:300]
    finally:
        os.unlink(a)
    with open(shm_path, "r+b") as f:
        f.write(head)
    return shm_path


def test_follow_on_a_region_copied_over_another_ends_in_its_timeout(overwritten: str) -> None:
    # Slot 1 of the 8 A's header describes holds B's write 3 (which belongs in slot 3):
    # follow() wanted write 1 there, found "a later write" and spun forever.
    result = run_child(overwritten, "follow_next")
    assert_typed(result, "FormatError")
    assert "damaged" in result["message"]
    assert result["seconds"] < 1.0, result  # it asked for 2 ms: a bound on hanging, not speed


@pytest.mark.parametrize("call", ["snapshot", "read", "history", "view"])
def test_reads_of_a_region_copied_over_another_are_refused(overwritten: str, call: str) -> None:
    # Head (3) sends a snapshot to slot 3, never written in B's file: its zeros came back as
    # "write 0" in A's dtype; history() returned B's writes 2 and 3 from slots 0 and 1 of 8.
    assert_typed(run_child(overwritten, call), "FormatError")


def test_state_and_wait_of_a_region_copied_over_another_tell_the_truth(overwritten: str) -> None:
    assert run_child(overwritten, "state").get("value") == "closed"  # B was closed
    assert run_child(overwritten, "wait").get("value") is True  # head (3) is past 0


# -- a writer stopped between its last two stores (slot's even seq, then head) -----------------

@pytest.mark.parametrize("nr_slots,writes,expected", [
    # one slot: it holds write 3 while head says 2; a follower wants write 2, which 3
    # overwrote: write 3 with write 2 counted lost
    (1, 3, [[3, 1]]),
    # a ring of 4: slot 1 holds write 9 while head says 8; a new follower starts at the
    # oldest write head says the ring holds (5), which 9 overwrote
    (4, 9, [[6, 1], [7, 0], [8, 0]]),
])
def test_follow_progresses_when_writer_stopped_between_slot_and_head(
        shm_path: str, nr_slots: int, writes: int, expected: list[list[int]]) -> None:
    make_channel(shm_path, np.int64, (4,), nr_slots, writes)
    poke(shm_path, HEAD, writes - 1)  # the store of head the writer never made
    result = run_child(shm_path, "follow_all", timeout=0.05, follow_timeout=0.05)
    assert result.get("value") == expected, result


def test_snapshot_takes_the_write_a_stopped_writer_left_complete(shm_path: str) -> None:
    make_channel(shm_path, np.int64, (4,), 4, 9)
    poke(shm_path, HEAD, 8)
    assert run_child(shm_path, "snapshot").get("value") in (8, 9)


POKE = textwrap.dedent('''
    import os
    def poke(path, offset, value):
        fd = os.open(path, os.O_WRONLY)
        os.pwrite(fd, value.to_bytes(4, sys.byteorder), offset)
        os.close(fd)
''')


# -- other members: every value of the region bounded, every loop bounded by the timeout ------

def test_history_ends_within_one_timeout_however_many_slots_are_stuck(shm_path: str) -> None:
    # Every slot of 1024 left mid-write: history() waited the whole timeout for each (20 s).
    make_channel(shm_path, np.uint8, (1,), 1024, 1024)
    for i in range(1024):
        poke(shm_path, slot_field(i, "seq"), 3, size=4)
    result = run_child(shm_path, "history", timeout=0.02)
    assert_typed(result, "ReadTimeout")
    assert result["seconds"] < 2.0, result  # one timeout (plus one attempt per slot), not 1024


def test_history_refuses_writes_head_never_published(shm_path: str) -> None:
    make_channel(shm_path, np.int64, (2,), 4, 4)
    poke(shm_path, HEAD, 1)  # slots hold writes 1 to 4; no writer begins 3 before head is 2
    result = run_child(shm_path, "history")
    assert_typed(result, "FormatError")
    assert "damaged" in result["message"]


def test_a_state_word_no_writer_stores_is_a_format_error(shm_path: str) -> None:
    # It read as "writer-died" (the word is not CLOSED, and the writer's lock is free).
    make_channel(shm_path, np.int64, (2,), 1, 1)
    after_open = f"poke({shm_path!r}, {STATE}, 7)"
    result = run_child(shm_path, "state", setup=POKE + after_open)
    assert_typed(result, "FormatError")
    assert "state word" in result["message"]
    poke(shm_path, STATE, 7, size=4)
    result = run_child(shm_path, "state")
    assert result.get("during") == "open", result  # refused by the header check at open
    assert_typed(result, "FormatError")


@pytest.mark.parametrize("call", ["snapshot", "follow_next", "history"])
def test_write_numbers_past_2_63_are_refused(shm_path: str, call: str) -> None:
    # Write 2**64 - 1 (2**63 writes take 292 years at one a nanosecond): follow() computed
    # its next write number, 2**64, and raised OverflowError.
    make_channel(shm_path, np.int64, (2,), 1, 1)
    poke(shm_path, slot_field(0, "write_seq"), 2**64 - 1)
    poke(shm_path, HEAD, 2**64 - 1)
    assert_typed(run_child(shm_path, call), "FormatError")


# A process that moves head on and keeps the slot mid-write, as fast as it can, for as long as
# the reader's process lives: writes keep "coming" and none can be taken.
LAPPER = textwrap.dedent('''
    import atexit, mmap, os, signal
    from seqshm import _core
    _parent = os.getpid()
    _pid = os.fork()
    if _pid == 0:
        _f = os.open(PATH, os.O_RDWR)
        _m = mmap.mmap(_f, os.fstat(_f).st_size)
        _head = np.frombuffer(_m, np.uint64, 1, _core.abi_layout()["header"]["head"])
        _seq = np.frombuffer(_m, np.uint32, 1, _core.SLOTS_OFFSET)
        while os.getppid() == _parent:
            for _ in range(1000):
                _seq[0] = 1
                _head[0] += 1
        os._exit(0)
    atexit.register(os.kill, _pid, signal.SIGKILL)
    while r.head < 1000:  # it runs
        time.sleep(0.001)
''')


def test_follow_gives_up_after_its_read_timeout_when_every_write_is_lapped(
        shm_path: str) -> None:
    with seqshm.create(shm_path, np.int64, (2,)) as w:  # alive: its channel stays open
        w.write([1, 1])
        result = run_child(shm_path, "follow_next", timeout=0.2, follow_timeout=5.0,
                           setup=LAPPER)
        w.close(unlink=True)
    assert_typed(result, "ReadTimeout")
    assert result["seconds"] < 5.0, result


# -- signals work throughout ---------------------------------------------------------------------

ALARM = textwrap.dedent('''
    import signal
    class Alarm(Exception):
        pass
    def _ring(signum, frame):
        raise Alarm()
    signal.signal(signal.SIGALRM, _ring)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
''')


@pytest.mark.parametrize("call", ["history", "follow_next", "snapshot"])
def test_a_signal_handler_interrupts_a_read_of_a_stuck_ring_without_a_timeout(
        shm_path: str, call: str) -> None:
    # The writer lives (its lock held here) with every slot mid-write: with no timeout, only a
    # signal ends these calls, and its handler's exception must come out of them.
    with seqshm.create(shm_path, np.uint8, (1,), nr_slots=1024) as w:
        for k in range(1024):
            w.write([k % 251])
        for i in range(1024):
            poke(shm_path, slot_field(i, "seq"), 3, size=4)
        result = run_child(shm_path, call, timeout=None, follow_timeout=None, setup=ALARM)
        w.close(unlink=True)
    assert result.get("error") == "Alarm", result


# -- the command line: one damaged channel is reported, never a traceback, a hang or the end of
# the others (docs/security.md, section 3) ------------------------------------------------------

def _seqshm(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([sys.executable, "-m", "seqshm", *args], capture_output=True,
                              text=True, timeout=HARD_DEADLINE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"seqshm {' '.join(args)} hung: killed after {HARD_DEADLINE_S} s")


def test_list_reports_a_damaged_channel_and_lists_the_others(overwritten: str) -> None:
    # the snapshot of the damaged channel raised FormatError, which took the whole list down
    good = overwritten + "-good"
    make_channel(good, np.float64, (2,), 1, 1)
    try:
        done = _seqshm("list", "--json")
    finally:
        os.unlink(good)
    assert done.returncode == 0, done.stderr
    rows = {row["path"]: row for row in json.loads(done.stdout)}
    assert "damaged" in rows[overwritten]["error"]
    assert rows[good]["error"] is None and rows[good]["writes"] == 1


@pytest.mark.parametrize("command", ["info", "watch", "record"])
def test_commands_on_a_damaged_channel_say_so(overwritten: str, command: str,
                                              tmp_path: Path) -> None:
    extra = ["-o", str(tmp_path / "out.npy")] if command == "record" else []
    done = _seqshm(command, overwritten, *extra)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "damaged" in done.stderr and overwritten in done.stderr
    assert "Traceback" not in done.stderr
