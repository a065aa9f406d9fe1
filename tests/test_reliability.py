"""What real programs do around a channel: files changing under a reader, objects shared by
threads, restarts, signals, huge timeouts, buffers kept too long. One test per behaviour; the
first of each group is the recipe of issue 8, the rest other members of its kind."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import seqshm
from seqshm import ChannelEnded, ChannelState, ClosedError, FileTruncated, WriterBusy
from seqshm.testing import PatternWriter, StalledWriter, torn

#: Not a speed limit: a call that takes this long has ignored a signal, a close or a timeout.
HANG_GUARD_S = 5.0


def _run_child(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (so a crash kills the child, not the suite)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout)


def _crashed(p: subprocess.CompletedProcess[str]) -> str:
    return f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"


# -- the file changes under a reader or writer -----------------------------------------------

TRUNCATE_CHILD = """
import os, subprocess, sys
import numpy as np
import seqshm
path, size, what = sys.argv[1], sys.argv[2], sys.argv[3]
w = seqshm.create(path, np.uint64, (512,), nr_slots=int(os.environ.get("SLOTS", "1")))
w.write(np.arange(512, dtype=np.uint64))
r = seqshm.open(path, timeout=0.5)
view = r.view()
subprocess.run(["truncate", "-s", size, path], check=True)
calls = {
    "snapshot": lambda: r.snapshot(),
    "read": lambda: r.read(),
    "history": lambda: r.history(),
    "apply": lambda: r.apply(np.sum),
    "validate": lambda: r.validate(tok) if r.view(tok := r.begin()).sum() >= 0 else None,
    "write": lambda: w.write(np.zeros(512, np.uint64)),
    "view": lambda: print("view", int(view.sum())) or r.validate(r.begin()),
    "begin_write": lambda: w.begin(),  # was: a buffer of zeros as "the last payload"
    "writing": lambda: w.writing().__enter__(),
    "follow": lambda: list(r.follow(timeout=0.5)),
}
try:
    calls[what]()
except seqshm.FileTruncated as e:
    assert path in str(e), e
    print("FileTruncated", e)
w.close(unlink=True)
r.close()
"""


@pytest.mark.parametrize("what", ["snapshot", "read", "history", "apply", "validate", "write",
                                  "view", "begin_write", "writing", "follow"])
@pytest.mark.parametrize("size", ["0", "4096"])
def test_truncated_file_is_a_typed_error_not_sigbus(shm_path: str, what: str, size: str) -> None:
    p = _run_child(TRUNCATE_CHILD, shm_path, size, what)
    assert p.returncode == 0, _crashed(p)
    assert "FileTruncated" in p.stdout, _crashed(p)


def test_truncated_ring_is_a_typed_error_not_sigbus(shm_path: str) -> None:
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(TRUNCATE_CHILD), shm_path, "0",
                        "snapshot"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "SLOTS": "8"})
    assert p.returncode == 0 and "FileTruncated" in p.stdout, _crashed(p)


def test_truncation_during_reads_in_threads_is_a_typed_error_in_each(shm_path: str) -> None:
    code = """
    import subprocess, sys, threading
    import numpy as np
    import seqshm
    path = sys.argv[1]
    w = seqshm.create(path, np.uint64, (1 << 16,), nr_slots=2)
    w.write(np.ones(1 << 16, np.uint64))
    r = seqshm.open(path)
    errors = []
    def reader():
        try:
            while True:
                r.snapshot()
        except seqshm.FileTruncated:
            errors.append("ok")
    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    subprocess.run(["truncate", "-s", "0", path], check=True)
    for t in threads:
        t.join(10)
    print(errors)
    w.close(unlink=True)
    """
    p = _run_child(code, shm_path)
    assert p.returncode == 0 and "['ok', 'ok', 'ok']" in p.stdout, _crashed(p)


def test_a_sigbus_that_is_not_ours_still_kills_the_process(shm_path: str) -> None:
    # The guard must not swallow faults outside seqshm's mappings.
    code = """
    import mmap, os, sys
    import numpy as np
    import seqshm
    w = seqshm.create(sys.argv[1], np.uint8, 8)
    with open(sys.argv[1] + ".other", "wb") as f:
        f.write(b"x" * 8192)
    fd = os.open(sys.argv[1] + ".other", os.O_RDWR)
    m = mmap.mmap(fd, 8192)
    os.ftruncate(fd, 0)
    os.unlink(sys.argv[1] + ".other")
    w.close(unlink=True)
    print(m[5000])
    """
    p = _run_child(code, shm_path)
    assert p.returncode == -signal.SIGBUS, _crashed(p)


# -- objects shared by threads ---------------------------------------------------------------

def test_close_from_another_thread_during_wait_raises_closed(shm_path: str) -> None:
    with seqshm.create(shm_path, np.uint64, 8) as w:
        w.write(np.ones(8, np.uint64))
        r = seqshm.open(shm_path)
        r.snapshot()
        result: list[Any] = []

        def waiter() -> None:
            try:
                result.append(r.wait(timeout=3))
            except BaseException as e:  # noqa: BLE001 - the test inspects it
                result.append(e)

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.2)
        r.close()
        t.join(HANG_GUARD_S)
        assert not t.is_alive()
        assert isinstance(result[0], ClosedError) and shm_path in str(result[0])


@pytest.mark.parametrize("call", ["snapshot", "begin", "apply", "history"])
def test_close_from_another_thread_during_a_blocked_read_raises_closed(
        shm_path: str, call: str) -> None:
    with StalledWriter(shm_path, 64, writes_before=1) as sw:
        sw.kill(signal.SIGSTOP)
        r = seqshm.open(shm_path, timeout=HANG_GUARD_S * 2)
        result: list[Any] = []

        def reader() -> None:
            try:
                result.append(getattr(r, call)(*([np.copy] if call == "apply" else [])))
            except BaseException as e:  # noqa: BLE001
                result.append(e)

        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.3)
        r.close()
        t.join(HANG_GUARD_S)
        sw.kill(signal.SIGCONT)
        assert not t.is_alive(), "close() did not end a blocked read"
        assert isinstance(result[0], ClosedError), result


def test_one_reader_shared_by_threads_labels_every_copy_with_its_own_seq(shm_path: str) -> None:
    nbytes = 1 << 20
    with PatternWriter(shm_path, nbytes, nr_slots=8) as pw, seqshm.open(shm_path) as r:
        bad: list[tuple[int, int]] = []
        counts = [0] * 4

        def reader(i: int) -> None:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                s = r.read()
                words = s.data.view(np.uint64)
                if torn(s.data) or int(words[0]) != s.seq:
                    bad.append((int(words[0]), s.seq))
                counts[i] += 1

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert pw.writes > 0
    assert sum(counts) > 100 and not bad, f"{len(bad)} mislabelled of {sum(counts)}: {bad[:5]}"


@pytest.mark.parametrize("nbytes", [256 * 1024, 4096])
def test_two_threads_writing_through_one_writer_never_tear(shm_path: str, nbytes: int) -> None:
    n = nbytes // 8
    with seqshm.create(shm_path, np.uint64, n, nr_slots=2) as w, seqshm.open(shm_path) as r:
        stop = threading.Event()
        errors: list[BaseException] = []

        def writer(value: int) -> None:
            data = np.full(n, value, np.uint64)
            try:
                while not stop.is_set():
                    w.write(data)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(v,)) for v in (1, 2)]
        for t in threads:
            t.start()
        torn_n = reads = 0
        out = np.empty(n, np.uint64)
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            r.snapshot(out)
            reads += 1
            torn_n += bool((out != out[0]).any())
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert reads > 0 and torn_n == 0, f"{torn_n} torn of {reads}"


def test_two_threads_writing_blocks_each_publish_their_own_buffer(shm_path: str) -> None:
    with seqshm.create(shm_path, np.int64, 4) as w, seqshm.open(shm_path) as r:
        seen = set()

        def block(v: int) -> None:
            for _ in range(200):
                with w.writing() as buf:
                    buf[:] = v
                    time.sleep(0)
                seen.add(tuple(r.snapshot().tolist()))

        ts = [threading.Thread(target=block, args=(v,)) for v in (1, 2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert seen <= {(1,) * 4, (2,) * 4}, seen
        assert w.seq == 400


def test_a_forked_child_cannot_write_through_its_parents_writer(shm_path: str) -> None:
    w = seqshm.create(shm_path, np.int64, 2)
    w.write([1, 1])
    ctx = multiprocessing.get_context("fork")
    q = ctx.SimpleQueue()

    def child() -> None:
        try:
            w.write([2, 2])
            q.put("wrote")
        except WriterBusy as e:
            q.put(f"busy: {e}")
        w.close()

    p = ctx.Process(target=child)
    p.start()
    p.join(HANG_GUARD_S)
    msg = q.get()
    assert msg.startswith("busy:") and str(os.getpid()) in msg, msg
    assert w.write([3, 3]) == 2  # the parent is still the writer, and its channel is open
    w.close(unlink=True)
    with pytest.raises(FileNotFoundError):
        seqshm.open(shm_path)


def test_after_fork_the_lock_stays_with_the_parent_only(shm_path: str) -> None:
    w = seqshm.create(shm_path, np.int64, 2)
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    p = ctx.Process(target=go.wait, args=(HANG_GUARD_S,))
    p.start()
    try:
        w.close()  # the child still runs: its copy of the file must not keep the channel locked
        with seqshm.create(shm_path, np.int64, 2, overwrite=True) as w2:
            assert w2.write([5, 5]) == 1
    finally:
        go.set()
        p.join()
        os.unlink(shm_path)


_FORK_WHILE_LOCKED = """
import os, signal, sys, threading, time
import numpy as np
import seqshm
w = seqshm.create(sys.argv[1], np.int64, 2, overwrite=True)
r = seqshm.open(sys.argv[1])
w.write([1, 1])
r.snapshot()
held = threading.Event()
def hold(lock):
    with lock:  # as a wait in another thread does for an instant while it looks at the state
        held.set()
        time.sleep(2)
for lock in (r._fd_lock, w._close_lock):
    held.clear()
    threading.Thread(target=hold, args=(lock,), daemon=True).start()
    held.wait()
pid = os.fork()
if pid == 0:
    signal.alarm(10)  # a hang dies of SIGALRM: exit status 14
    print(r.state.value, r.wait(0.05), r.snapshot().tolist(), flush=True)
    w.close()  # the child's copy: refuses nothing, waits for nothing
    os._exit(0)
_, status = os.waitpid(pid, 0)
print("child", os.waitstatus_to_exitcode(status))
w.close(unlink=True)
"""


def test_a_reader_and_writer_work_in_a_child_forked_while_a_thread_held_their_locks(
        shm_path: str) -> None:
    """A thread inside a call (a wait looking at the state, a close()) held a lock at the fork:
    in the child no thread would release it, and the child's first wait() or close() hung."""
    p = _run_child(_FORK_WHILE_LOCKED, shm_path)
    assert p.returncode == 0, _crashed(p)
    assert p.stdout.splitlines() == ["open False [1, 1]", "child 0"], _crashed(p)


def _create_in_child(path: str, barrier: Any, results: Any, start: float) -> None:
    while time.monotonic() < start:  # both start within microseconds (a barrier is looser)
        pass
    try:
        w = seqshm.create(path, np.int64, 2, overwrite=True)
    except WriterBusy:
        results.put(("busy", os.getpid(), 0))
        barrier.wait()
        return
    st = os.stat(path)
    same = (st.st_dev, st.st_ino) == (os.fstat(w._fd).st_dev, os.fstat(w._fd).st_ino)
    results.put(("won", os.getpid(), int(same)))
    barrier.wait()  # both are done before the winner lets go
    w.close()


def test_of_two_racing_creators_exactly_one_wins(shm_path: str) -> None:
    ctx = multiprocessing.get_context("fork")
    for _ in range(40):  # before the fix both won in about 1 round of 7
        with seqshm.create(shm_path, np.int64, 2, overwrite=True):
            pass  # an existing, unlocked channel
        barrier = ctx.Barrier(2)
        results = ctx.SimpleQueue()
        start = time.monotonic() + 0.1
        procs = [ctx.Process(target=_create_in_child, args=(shm_path, barrier, results, start))
                 for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(HANG_GUARD_S * 4)
        outcome = sorted(results.get() for _ in procs)
        assert [o[0] for o in outcome] == ["busy", "won"], outcome
        assert outcome[1][2] == 1, "the winner's file is not the one at the path"
    os.unlink(shm_path)


# -- restarts ----------------------------------------------------------------------------------

def test_a_clean_close_is_seen_by_readers_as_the_end(shm_path: str) -> None:
    w = seqshm.create(shm_path, np.int64, 2)
    w.write([1, 2])
    with seqshm.open(shm_path) as r:
        assert r.state is ChannelState.OPEN and not r.ended
        w.close()
        assert r.state is ChannelState.CLOSED and r.ended
        assert r.wait(0.5)  # write 1 was not read yet: the end comes after it
        assert r.snapshot().tolist() == [1, 2]  # the last write stays readable
        with pytest.raises(ChannelEnded) as e:
            r.wait(HANG_GUARD_S)
        assert e.value.state is ChannelState.CLOSED and shm_path in str(e.value)
    os.unlink(shm_path)


def test_a_restart_is_seen_by_readers_and_followed_on_request(shm_path: str) -> None:
    old = seqshm.create(shm_path, np.int64, 2)
    old.write([1, 1])
    plain, follower = seqshm.open(shm_path), seqshm.open(shm_path, reopen=True)
    for r in (plain, follower):
        r.snapshot()
    old.close()
    with seqshm.create(shm_path, np.int64, 2, overwrite=True) as new:
        assert plain.state is ChannelState.REPLACED
        with pytest.raises(ChannelEnded, match="replaced"):
            plain.wait(HANG_GUARD_S)
        new.write([7, 7])
        assert follower.snapshot().tolist() == [7, 7] and follower.seq == 1
        t = threading.Timer(0.1, new.write, ([8, 8],))
        t.start()
        assert follower.wait(HANG_GUARD_S) and follower.read().data.tolist() == [8, 8]
        t.join()
        new.close(unlink=True)
    plain.close()
    follower.close()


def test_a_crashed_writer_is_seen_by_readers_as_the_end(shm_path: str) -> None:
    pw = PatternWriter(shm_path, 64, rate_hz=1000, unlink=False)
    pw.start()
    with seqshm.open(shm_path) as r:
        r.wait(HANG_GUARD_S)
        pw.kill(signal.SIGKILL)
        pw.join()
        t0 = time.monotonic()
        with pytest.raises(ChannelEnded) as e:
            while True:
                r.snapshot()
                r.wait(HANG_GUARD_S)
        assert time.monotonic() - t0 < HANG_GUARD_S
        assert e.value.state is ChannelState.WRITER_DIED
        assert r.state is ChannelState.WRITER_DIED
    with seqshm.open(shm_path, reopen=True) as f:
        f.snapshot()
        with seqshm.create(shm_path, np.uint64, 8, overwrite=True) as w:
            w.write(np.full(8, 3, np.uint64))
            assert f.wait(HANG_GUARD_S) and f.snapshot().tolist() == [3] * 8
            w.close(unlink=True)


def test_a_removed_file_is_reported(shm_path: str) -> None:
    with seqshm.create(shm_path, np.int64, 2) as w, seqshm.open(shm_path) as r:
        os.unlink(shm_path)
        assert r.state is ChannelState.REMOVED
        w.write([1, 1])  # a writer that still publishes is still read
        assert r.wait(HANG_GUARD_S) and r.snapshot().tolist() == [1, 1]


def test_a_follower_does_not_move_to_a_channel_of_another_type(shm_path: str) -> None:
    with seqshm.create(shm_path, np.int64, 2) as w, seqshm.open(shm_path, reopen=True) as r:
        w.write([1, 1])
        r.snapshot()
        w.close()
        with seqshm.create(shm_path, np.float32, 3, overwrite=True) as other:
            other.write([1, 2, 3])
            with pytest.raises(ChannelEnded, match="float32|shape"):
                r.wait(HANG_GUARD_S)
            assert r.snapshot().tolist() == [1, 1]
            other.close(unlink=True)


def _write_into_place(src: str, dst: str) -> None:
    """Copy channel file ``src`` over ``dst`` in place, as cp does: the same inode, truncated
    and written again, so nothing but the header tells the old channel from the new."""
    ino = os.stat(dst).st_ino
    with open(src, "rb") as f, open(dst, "r+b") as g:
        g.truncate(0)
        g.write(f.read())
    assert os.stat(dst).st_ino == ino


def test_another_channel_written_into_the_same_file_is_seen_as_replaced(
        make_path: Callable[[], str]) -> None:
    path, other_path = make_path(), make_path()
    with seqshm.create(path, np.uint64, 4) as w:
        r = seqshm.open(path)
        w.write([1, 2, 3, 4])
        assert seqshm.snapshot(path).tolist() == [1, 2, 3, 4]
        r.snapshot()
    with seqshm.create(other_path, np.float64, 4) as other:
        other.write([1.5, 2.5, 3.5, 4.5])
        _write_into_place(other_path, path)
        # was: OPEN/WRITER_DIED, and the one-shot and waits read the floats' bits as uint64
        assert r.state is ChannelState.REPLACED
        with pytest.raises(ChannelEnded, match="replaced"):
            r.wait(HANG_GUARD_S)
        time.sleep(seqshm._api.ONESHOT_MAX_AGE_S * 1.5)
        got = seqshm.snapshot(path)
        assert got.dtype == np.float64 and got.tolist() == [1.5, 2.5, 3.5, 4.5]
        r.close()
        os.unlink(path)


def test_a_follower_moves_to_a_channel_written_into_its_file(
        make_path: Callable[[], str]) -> None:
    path, other_path = make_path(), make_path()
    with seqshm.create(path, np.int64, 2) as w:
        r = seqshm.open(path, reopen=True)
        w.write([1, 1])
        r.snapshot()
    with seqshm.create(other_path, np.int64, 2, nr_slots=2) as other:
        other.write([2, 2])
        _write_into_place(other_path, path)
        assert r.wait(HANG_GUARD_S)  # was: False at the timeout, on the old geometry
        assert r.nr_slots == 2 and r.snapshot().tolist() == [2, 2]
        r.close()
        os.unlink(path)


# -- signals and waits -------------------------------------------------------------------------

INTERRUPT_CHILD = """
import os, signal, sys, threading, time
import numpy as np
import seqshm
path, call = sys.argv[1], sys.argv[2]
r = seqshm.open(path, timeout=float(sys.argv[3]))
if call == "wait":
    r.snapshot()  # read the newest write: wait() then sleeps for the next one
threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
t0, c0 = time.monotonic(), time.process_time()
try:
    {"snapshot": r.snapshot, "begin": r.begin, "history": r.history,
     "apply": lambda: r.apply(np.copy), "wait": lambda: r.wait(10)}[call]()
    print("returned")
except KeyboardInterrupt:
    print("interrupted after %.3f s, cpu %.3f s" % (time.monotonic() - t0,
                                                   time.process_time() - c0))
"""


@pytest.mark.parametrize("call", ["snapshot", "begin", "history", "apply"])
def test_ctrl_c_interrupts_a_blocked_read_at_once(shm_path: str, call: str) -> None:
    with StalledWriter(shm_path, 64, writes_before=1) as sw:
        sw.kill(signal.SIGSTOP)
        p = _run_child(INTERRUPT_CHILD, shm_path, call, "5")
        sw.kill(signal.SIGCONT)
    assert "interrupted after" in p.stdout, _crashed(p)
    elapsed = float(p.stdout.split("after ")[1].split(" s")[0])
    assert elapsed < 2.0, p.stdout  # not the 5 s timeout


def test_ctrl_c_interrupts_a_wait_at_once(shm_path: str) -> None:
    with seqshm.create(shm_path, np.int64, 2) as w:  # a live writer that writes nothing more
        w.write([1, 1])
        p = _run_child(INTERRUPT_CHILD, shm_path, "wait", "5")
        w.close(unlink=True)
    assert "interrupted after" in p.stdout, _crashed(p)
    elapsed = float(p.stdout.split("after ")[1].split(" s")[0])
    assert elapsed < 2.0, p.stdout  # not the 5 s timeout


HISTORY_INTERRUPT_CHILD = """
import os, signal, sys, threading, time, traceback
import numpy as np
import seqshm
class Interrupted(Exception):
    pass
def handler(signum, frame):
    raise Interrupted()
signal.signal(signal.SIGTERM, handler)
r = seqshm.open(sys.argv[1])
for attempt in range(5):
    started = threading.Event()
    # the signal comes as soon as this thread runs, which is when history() releases the
    # GIL to copy its first slot (a large payload), or sooner
    killer = threading.Thread(target=lambda: (started.wait(), os.kill(os.getpid(),
                                                                    signal.SIGTERM)))
    killer.start()
    try:
        started.set()
        r.history()
        time.sleep(1)  # the handler runs here at the latest
        print("not interrupted")
    except Interrupted as e:
        inside = any(f.name.endswith("_read_slots") for f in traceback.extract_tb(e.__traceback__))
        print("inside" if inside else "outside")
    killer.join()
"""


def test_a_signal_interrupts_history_of_a_large_ring_between_slots(shm_path: str) -> None:
    """history() copied every slot of a ring before a signal's handler could run (64 slots
    of 1 MiB: the whole ring; a second on a slow machine for a large one); it looks at
    signals after each slot, as every wait does."""
    with seqshm.create(shm_path, np.float64, (1 << 17,), nr_slots=64) as w:
        for i in range(64):
            w.write(np.full(1 << 17, i, np.float64))
        p = _run_child(HISTORY_INTERRUPT_CHILD, shm_path)
        w.close(unlink=True)
    where = p.stdout.split()
    assert len(where) == 5, _crashed(p)
    assert "inside" in where, _crashed(p)  # was: always after history() returned


def test_a_blocked_read_does_not_spin_a_cpu(shm_path: str) -> None:
    code = """
    import sys, time
    import seqshm
    r = seqshm.open(sys.argv[1], timeout=1.0)
    c0 = time.process_time()
    try:
        r.snapshot()
    except seqshm.ReadTimeout:
        pass
    print(time.process_time() - c0)
    """
    with StalledWriter(shm_path, 64, writes_before=1) as sw:
        sw.kill(signal.SIGSTOP)
        p = _run_child(code, shm_path)
        sw.kill(signal.SIGCONT)
    assert p.returncode == 0, _crashed(p)
    assert float(p.stdout) < 0.5, f"{p.stdout} s of CPU in a 1 s blocked read"


def test_a_blocked_read_lets_other_threads_run(shm_path: str) -> None:
    with StalledWriter(shm_path, 64, writes_before=1) as sw:
        sw.kill(signal.SIGSTOP)
        ticks = 0
        done = threading.Event()

        def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                time.sleep(0.001)

        t = threading.Thread(target=ticker)
        t.start()
        with seqshm.open(shm_path, timeout=0.5) as r, pytest.raises(seqshm.ReadTimeout):
            before = ticks
            r.snapshot()
        during = ticks - before
        done.set()
        t.join()
        sw.kill(signal.SIGCONT)
    assert during > 20, f"the other thread ran {during} times in 0.5 s"



@pytest.mark.parametrize("call", ["history", "follow", "begin"])
def test_large_copies_of_history_follow_and_begin_let_other_threads_run(shm_path: str,
                                                                  call: str) -> None:
    """snapshot() copies a large payload with the GIL released; history() and follow() held
    it for every slot they copied (a 8 x 32 MiB history froze the other threads for 0.6 s).
    Another thread looks at where the main thread is, with forced GIL switches off (a switch
    interval of 100 s), so that it runs only when the main thread lets go of the GIL: inside
    the copies if they release it, never if they hold it."""
    import linecache

    n = 4 << 20  # 32 MiB of uint64 a slot
    main = threading.get_ident()
    inside = 0
    done = threading.Event()
    copy_calls = ("self._read_slots()", "self._follow_next(nxt", "self._copy_newest()")

    def sampler() -> None:
        nonlocal inside
        while not done.is_set():
            frame = sys._current_frames().get(main)
            if frame is not None and any(c in linecache.getline(
                    frame.f_code.co_filename, frame.f_lineno) for c in copy_calls):
                inside += 1
            time.sleep(1e-4)  # lets go of the GIL: the main thread takes it back at once

    with seqshm.create(shm_path, np.uint64, n, nr_slots=8) as w, seqshm.open(shm_path) as r:
        for i in range(8):
            w.write(np.full(n, i, np.uint64))
        t = threading.Thread(target=sampler)
        t.start()
        interval = sys.getswitchinterval()
        sys.setswitchinterval(100)
        try:
            if call == "history":
                assert r.history().seq.tolist() == list(range(1, 9))
            elif call == "follow":
                assert [s.seq for s in r.follow(timeout=0)] == list(range(1, 9))
            else:  # a writer's in-place write copies the last payload (was: GIL held)
                for _ in range(8):
                    w.begin()
                    w.end()
        finally:
            sys.setswitchinterval(interval)
            done.set()
            t.join()
        w.close(unlink=True)
    assert inside >= 8, f"the other thread ran {inside} times inside the copies"


@pytest.mark.parametrize("timeout", [1e11, 1e300, float("inf"), None, 2**70])
def test_a_huge_timeout_is_honoured(shm_path: str, timeout: Any) -> None:
    with seqshm.create(shm_path, np.int64, 2) as w:
        w.write([4, 4])
        with seqshm.open(shm_path, timeout=timeout) as r:
            assert r.timeout == (None if timeout is None else float(timeout))
            assert r.snapshot().tolist() == [4, 4]
            threading.Timer(0.1, w.write, ([5, 5],)).start()
            assert r.wait(timeout) is True
        w.close(unlink=True)
    with StalledWriter(shm_path, 64, writes_before=1) as sw:
        sw.kill(signal.SIGSTOP)
        _read_for(seqshm.open(sw.path, timeout=timeout), 0.3)
        sw.kill(signal.SIGCONT)


def _read_for(r: seqshm.Reader, seconds: float) -> None:
    """Run a blocked snapshot() in a thread for ``seconds``: it must still be waiting (a
    timeout that became 0 would have raised at once)."""
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(_try(r.snapshot)), daemon=True)
    t.start()
    t.join(seconds)
    assert t.is_alive() or not isinstance(out[0], seqshm.ReadTimeout), out
    r.close()  # ends the blocked read with ClosedError
    t.join(HANG_GUARD_S)
    assert not t.is_alive()


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except BaseException as e:  # noqa: BLE001
        return e


@pytest.mark.parametrize("timeout", [-1, float("nan"), "abc", [1]])
def test_a_bad_timeout_is_refused_with_a_clear_error(shm_path: str, timeout: Any) -> None:
    with seqshm.create(shm_path, np.int64, 2) as w:
        with pytest.raises((TypeError, ValueError), match="timeout"):
            seqshm.open(w.path, timeout=timeout)
        with seqshm.open(w.path) as r, pytest.raises((TypeError, ValueError), match="timeout"):
            r.wait(timeout)
        w.close(unlink=True)



@pytest.mark.parametrize("timeout", [-1, float("nan"), "abc", True])
def test_every_call_taking_a_timeout_refuses_a_bad_one_at_once(shm_path: str,
                                                                timeout: Any) -> None:
    """follow() and follow_async() checked theirs only at their first wait: with writes to
    read they yielded them, and a caller learnt of its mistake later or never."""
    with seqshm.create(shm_path, np.int64, 2, nr_slots=4) as w, seqshm.open(shm_path) as r:
        w.write([1, 1])
        with pytest.raises((TypeError, ValueError), match="timeout"):
            r.follow(timeout)
        with pytest.raises((TypeError, ValueError), match="timeout"):
            r.follow_async(timeout)
        with pytest.raises((TypeError, ValueError), match="timeout"):
            seqshm.snapshot(shm_path, timeout=timeout)
        w.close(unlink=True)


def test_a_one_shot_refuses_a_bad_timeout_equal_to_a_good_one(shm_path: str) -> None:
    """The one-shot's kept reader was reused for any timeout equal to its own, so a Decimal
    (which open() refuses) passed when a Fraction of the same value had been used before."""
    from decimal import Decimal
    from fractions import Fraction

    with seqshm.create(shm_path, np.int64, 2) as w:
        seqshm.snapshot(shm_path, timeout=Fraction(1, 100))
        with pytest.raises(TypeError, match="timeout"):
            seqshm.snapshot(shm_path, timeout=Decimal("0.01"))
        w.close(unlink=True)


@pytest.mark.parametrize(("ts", "error"), [(-1, ValueError), (2**64, ValueError),
                                           (1.5, TypeError), ("1", TypeError),
                                           (True, TypeError)])
def test_a_bad_write_timestamp_is_refused_naming_the_file(shm_path: str, ts: Any,
                                                          error: type) -> None:
    """write() gave a bare OverflowError for a negative or huge timestamp, and took 1.5 as 1:
    end() and writing() already refused these, naming the file."""
    with seqshm.create(shm_path, np.int64, 2) as w:
        with pytest.raises(error, match=f"{shm_path}.*timestamp_ns"):
            w.write([1, 1], timestamp_ns=ts)
        assert w.head == 0
        assert w.write([1, 1], timestamp_ns=np.uint64(2**64 - 1)) == 1
        w.close(unlink=True)


@pytest.mark.parametrize("data", ["abc", None, [2**70, 1]])
def test_data_a_write_cannot_convert_is_an_error_naming_the_file(shm_path: str,
                                                                 data: Any) -> None:
    with seqshm.create(shm_path, np.int64, 2) as w:
        with pytest.raises((TypeError, ValueError, OverflowError), match=f"{shm_path}.*int64"):
            w.write(data)
        w.close(unlink=True)


# -- shared memory escaping its guard ----------------------------------------------------------

def test_a_writing_buffer_is_dead_after_the_block(shm_path: str) -> None:
    w = seqshm.create(shm_path, np.int64, 4)
    with seqshm.open(shm_path) as r:
        with w.writing() as buf:
            buf[:] = 1
        with pytest.raises(ValueError, match="read-only"):
            buf[:2] = 99
        assert r.read().data.tolist() == [1] * 4 and r.seq == 1
        w.close()
        with pytest.raises(ValueError, match="read-only"):
            buf[:2] = 99
        # the buffer does not keep the channel: a new writer may take over at once
        with seqshm.create(shm_path, np.int64, 4, overwrite=True) as w2:
            w2.write([2] * 4)
            w2.close(unlink=True)
    del buf


def test_a_begin_buffer_is_dead_after_end_and_private_before(shm_path: str) -> None:
    with seqshm.create(shm_path, np.int64, 2) as w, seqshm.open(shm_path) as r:
        w.write([1, 1])
        buf = w.begin()
        buf[:] = 5
        assert r.snapshot().tolist() == [1, 1]  # nothing visible, not even a mid-write slot
        w.end()
        with pytest.raises(ValueError, match="read-only"):
            buf[0] = 6
        assert r.snapshot().tolist() == [5, 5]
        w.close(unlink=True)


def test_a_writing_block_that_raises_publishes_nothing(shm_path: str) -> None:
    with seqshm.create(shm_path, np.int64, 2) as w, seqshm.open(shm_path) as r:
        w.write([1, 1])
        with pytest.raises(KeyError), w.writing() as buf:
            buf[:] = 9
            raise KeyError("boom")
        assert r.read().data.tolist() == [1, 1] and w.seq == 1
        w.close(unlink=True)


@pytest.mark.parametrize("fn", [
    lambda v: v,
    lambda v: v[1:],
    lambda v: [v[0:1]],
    lambda v: {"a": v.reshape(-1)},
    lambda v: memoryview(v),
], ids=["view", "slice", "list of slices", "dict of reshapes", "memoryview"])
def test_apply_refuses_a_result_that_aliases_shared_memory(shm_path: str, fn: Any) -> None:
    with seqshm.create(shm_path, np.int64, 4) as w, seqshm.open(shm_path) as r:
        w.write([1, 2, 3, 4])
        with pytest.raises(ValueError, match="view of shared memory"):
            r.apply(fn)
        assert r.apply(lambda v: v.sum()) == 10
        assert r.apply(np.copy).tolist() == [1, 2, 3, 4]
        w.close(unlink=True)


def test_apply_refuses_a_record_that_aliases_shared_memory(shm_path: str) -> None:
    rec = np.dtype([("a", np.int64), ("b", np.float64)])
    with seqshm.create(shm_path, rec, 2) as w, seqshm.open(shm_path) as r:
        with pytest.raises(ValueError, match="view of shared memory"):
            r.apply(lambda v: v[0])  # a np.void record refers to the array's memory
        w.close(unlink=True)


def test_apply_refuses_a_view_kept_elsewhere(shm_path: str) -> None:
    kept: list[Any] = []
    with seqshm.create(shm_path, np.int64, 4) as w, seqshm.open(shm_path) as r:
        with pytest.raises(ValueError, match="view of shared memory"):
            r.apply(lambda v: kept.append(v[:2]) or 0)
        w.close(unlink=True)
    kept.clear()
    gc.collect()


# -- history() is a read -----------------------------------------------------------------------

def test_history_counts_as_a_read(shm_path: str) -> None:
    with seqshm.create(shm_path, np.int64, 2, nr_slots=4) as w, seqshm.open(shm_path) as r:
        for i in range(1, 4):
            w.write([i, i])
        h = r.history()
        assert list(h.seq) == [1, 2, 3] and r.seq == 3
        assert r.timestamp_ns == int(h.timestamp_ns[-1])
        t0, c0 = time.monotonic(), time.process_time()
        for _ in range(5):
            r.history()
            assert r.wait(0.04) is False  # nothing newer than what history() returned
        assert time.process_time() - c0 < 0.5 * (time.monotonic() - t0) + 0.05
        w.write([4, 4])
        assert r.wait(HANG_GUARD_S)
        w.close(unlink=True)


# -- follow(): every write once, to the end ----------------------------------------------------

def test_follow_ends_after_the_last_write_of_a_closed_channel(shm_path: str) -> None:
    with seqshm.create(shm_path, np.int64, 2, nr_slots=8) as w, seqshm.open(shm_path) as r:
        for i in range(1, 6):
            w.write([i, i])
        w.close()
        samples = list(r.follow(timeout=HANG_GUARD_S))
        assert [s.seq for s in samples] == [1, 2, 3, 4, 5]
        assert [int(s.data[0]) for s in samples] == [1, 2, 3, 4, 5]
    os.unlink(shm_path)


def test_follow_of_a_ring_lapped_before_it_started_counts_nothing_lost(shm_path: str) -> None:
    with seqshm.create(shm_path, np.int64, 2, nr_slots=4) as w, seqshm.open(shm_path) as r:
        for i in range(1, 11):
            w.write([i, i])
        w.close()
        samples = list(r.follow(timeout=HANG_GUARD_S))
        assert [s.seq for s in samples] == [7, 8, 9, 10]  # what the ring still holds
        assert [s.lost for s in samples] == [0, 0, 0, 0]
    os.unlink(shm_path)


def test_follow_moves_to_a_replacement_when_reopening(shm_path: str) -> None:
    w = seqshm.create(shm_path, np.int64, 2, nr_slots=8)
    w.write([1, 1])
    with seqshm.open(shm_path, reopen=True) as r:
        it = r.follow(timeout=HANG_GUARD_S)
        assert next(it).seq == 1
        w.close()
        w2 = seqshm.create(shm_path, np.int64, 2, nr_slots=8, overwrite=True)
        w2.write([7, 7])
        s = next(it)
        assert (s.seq, int(s.data[0])) == (1, 7)  # the new channel's first write
        w2.close(unlink=True)
        assert list(it) == []


# -- found by trying to break the above ------------------------------------------------------

CLOSE_DURING_COPY = """
import sys, threading
import numpy as np
import seqshm
path, n = sys.argv[1], 1 << 17  # 1 MiB: copies run with the GIL released
w = seqshm.create(path, np.uint64, n, nr_slots=2)
w.write(np.ones(n, np.uint64))
for _ in range(50):
    r = seqshm.open(path)
    out = np.empty(n, np.uint64)
    def loop():
        try:
            while True:
                r.snapshot(out)
        except seqshm.ClosedError:
            pass
    t = threading.Thread(target=loop)
    t.start()
    r.close()
    t.join()
w.close(unlink=True)
print("ok")
"""


def test_close_during_a_large_copy_in_another_thread_is_safe(shm_path: str) -> None:
    p = _run_child(CLOSE_DURING_COPY, shm_path)
    assert p.returncode == 0 and "ok" in p.stdout, _crashed(p)


REOPEN_DURING_COPIES = """
import sys, threading, time
import numpy as np
import seqshm
path, n = sys.argv[1], 1 << 17
w = seqshm.create(path, np.uint64, n, nr_slots=2)
w.write(np.ones(n, np.uint64))
r = seqshm.open(path, reopen=True, timeout=0.5)
stop = False
def loop():
    while not stop:
        try:
            r.snapshot()
        except (seqshm.ReadTimeout, seqshm.ChannelEnded):
            pass
ts = [threading.Thread(target=loop) for _ in range(2)]
[t.start() for t in ts]
for i in range(20):
    w.close()
    w = seqshm.create(path, np.uint64, n, nr_slots=2, overwrite=True)
    w.write(np.full(n, i, np.uint64))
    time.sleep(0.03)
stop = True
[t.join() for t in ts]
w.close(unlink=True)
r.close()
print("ok")
"""


def test_a_reopening_reader_shared_by_threads_survives_restarts(shm_path: str) -> None:
    p = _run_child(REOPEN_DURING_COPIES, shm_path)
    assert p.returncode == 0 and "ok" in p.stdout, _crashed(p)


FORKED_CHILD_CLOSES = """
import os, sys
import numpy as np
import seqshm
w = seqshm.create(sys.argv[1], np.uint8, 16 << 20)
pid = os.fork()
if pid == 0:
    blocks = [np.ones(16 << 20, np.uint8) for _ in range(6)]  # may land where w was mapped
    w.close()
    del w
    assert all(int(b[-1]) == 1 for b in blocks)
    os._exit(0)
_, status = os.waitpid(pid, 0)
w.close(unlink=True)
print("child", status)
"""


def test_a_forked_child_closing_its_parents_writer_keeps_its_own_memory(shm_path: str) -> None:
    p = _run_child(FORKED_CHILD_CLOSES, shm_path)
    assert p.returncode == 0 and "child 0" in p.stdout, _crashed(p)


def test_a_blocked_read_without_timeout_ends_when_the_writer_died(shm_path: str) -> None:
    with StalledWriter(shm_path, 64, writes_before=1) as sw:
        sw.kill(signal.SIGKILL)
        sw.join()
        with seqshm.open(shm_path, timeout=None) as r:
            for call in (r.snapshot, r.begin):
                t0 = time.monotonic()
                with pytest.raises(seqshm.ReadTimeout, match="died in the middle of a write"):
                    call()
                assert time.monotonic() - t0 < HANG_GUARD_S


def test_truncation_ends_a_wait(shm_path: str) -> None:
    with seqshm.create(shm_path, np.int64, 512) as w, seqshm.open(shm_path) as r:
        w.write(np.ones(512, np.int64))
        r.snapshot()
        threading.Timer(0.2, os.truncate, (shm_path, 0)).start()
        with pytest.raises(FileTruncated):
            r.wait(HANG_GUARD_S)
        assert r.state is ChannelState.TRUNCATED and r.ended
        w.close(unlink=True)


def test_a_file_shrunk_and_grown_again_is_not_read_as_new_data(shm_path: str) -> None:
    with seqshm.create(shm_path, np.int64, 4) as w, seqshm.open(shm_path) as r:
        w.write([1] * 4)
        w.write([2] * 4)
        assert r.read().seq == 2
        size = os.stat(shm_path).st_size
        os.truncate(shm_path, 0)
        os.truncate(shm_path, size)  # zeros: seq 0, "consistent"
        with pytest.raises(FileTruncated, match="went back"):
            r.read()
        w.close(unlink=True)


def test_a_reopening_reader_waits_through_a_restart_gap(shm_path: str) -> None:
    w = seqshm.create(shm_path, np.int64, 2)
    w.write([1, 1])
    with seqshm.open(shm_path, reopen=True) as r:
        r.snapshot()
        w.close()

        def restart() -> None:
            with seqshm.create(shm_path, np.int64, 2, overwrite=True) as w2:
                w2.write([2, 2])

        threading.Timer(0.5, restart).start()  # longer than the 0.1 s check interval
        assert r.wait(HANG_GUARD_S) and r.snapshot().tolist() == [2, 2]
    os.unlink(shm_path)


def test_closing_a_writer_from_many_threads_at_once_is_quiet(shm_path: str) -> None:
    w = seqshm.create(shm_path, np.uint8, 64 << 20)
    errors: list[BaseException] = []
    data = np.ones(64 << 20, np.uint8)
    writer = threading.Thread(target=lambda: w.write(data))
    writer.start()

    def close() -> None:
        try:
            w.close(unlink=True)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    closers = [threading.Thread(target=close) for _ in range(4)]
    for t in closers:
        t.start()
    for t in [writer, *closers]:
        t.join()
    assert not errors and w.closed and not os.path.exists(shm_path)


def test_apply_refuses_the_views_base_and_exceptions_holding_views(shm_path: str) -> None:
    with seqshm.create(shm_path, np.int64, 4) as w, seqshm.open(shm_path) as r:
        w.write([1, 2, 3, 4])
        for fn in (lambda v: v.base, lambda v: np.asarray(v.base)):
            with pytest.raises(ValueError, match="view of shared memory"):
                r.apply(fn)

        def raises_with_view(v: np.ndarray) -> None:
            raise KeyError(v[:2])

        with pytest.raises(ValueError, match="KeyError.*view of shared memory"):
            r.apply(raises_with_view)
        with pytest.raises(KeyError, match="plain"):
            r.apply(lambda v: {}["plain"])
        w.close(unlink=True)


@pytest.mark.parametrize("timeout", ["5", b"1", True, " 1e11 "])
def test_a_timeout_that_is_not_a_number_is_a_type_error(shm_path: str, timeout: Any) -> None:
    with seqshm.create(shm_path, np.int64, 2) as w:
        with pytest.raises(TypeError, match="timeout must be a number"):
            seqshm.open(shm_path, timeout=timeout)
        w.close(unlink=True)


def test_create_errors_name_the_path(tmp_path: Any) -> None:
    path = str(tmp_path / "c")
    for kwargs in ({"nr_slots": 3}, {"shape": (0,)}, {"shape": (1 << 40, 1 << 10)}):
        with pytest.raises(ValueError, match=path):
            seqshm.create(path, np.int64, **kwargs)
    with pytest.raises(FileNotFoundError) as e:
        seqshm.create(str(tmp_path / "no" / "c"), np.int64)
    assert e.value.filename == str(tmp_path / "no" / "c")
    os.mkdir(path)
    with pytest.raises(IsADirectoryError):
        seqshm.create(path, np.int64, overwrite=True)
    link = str(tmp_path / "dangling")
    os.symlink(str(tmp_path / "nowhere"), link)
    for overwrite in (False, True):
        # never written through (another user may have planted it: docs/security.md, 3)
        with pytest.raises(FileExistsError, match="symbolic link|channel exists") as e:
            seqshm.create(link, np.int64, overwrite=overwrite)
        assert e.value.filename == link
    assert os.path.islink(link) and not os.path.lexists(tmp_path / "nowhere")


def test_relative_paths_survive_a_chdir(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    w = seqshm.create("rel", np.int64, 2)
    r = seqshm.open("./rel")
    monkeypatch.chdir("/")
    assert r.state is ChannelState.OPEN
    w.close(unlink=True)
    assert not (tmp_path / "rel").exists()
    r.close()


@pytest.mark.parametrize("size", [100, 2048, 4096])
def test_a_wait_ends_when_the_file_is_cut_to_its_header(shm_path: str, size: int) -> None:
    with seqshm.create(shm_path, np.int64, 512) as w, seqshm.open(shm_path) as r:
        w.write(np.ones(512, np.int64))
        r.snapshot()
        os.truncate(shm_path, size)  # head may stay readable: only the size tells
        assert r.state is ChannelState.TRUNCATED
        t0 = time.monotonic()
        with pytest.raises(FileTruncated):
            r.wait(HANG_GUARD_S)
        with pytest.raises(FileTruncated):
            list(r.follow(timeout=HANG_GUARD_S))
        assert time.monotonic() - t0 < HANG_GUARD_S
        w.close(unlink=True)


def test_follow_counts_what_a_reopening_reader_missed_of_the_new_channel(shm_path: str) -> None:
    w = seqshm.create(shm_path, np.int64, 2, nr_slots=4)
    w.write([1, 1])
    with seqshm.open(shm_path, reopen=True) as r:
        it = r.follow(timeout=HANG_GUARD_S)
        assert next(it).seq == 1
        w.close()
        with seqshm.create(shm_path, np.int64, 2, nr_slots=4, overwrite=True) as w2:
            for i in range(1, 11):
                w2.write([i, i])  # the ring of 4 keeps writes 7-10 only
            s = next(it)
            assert (s.seq, s.lost) == (7, 6)
            w2.close(unlink=True)


# -- a creator killed mid-create leaves nothing behind -------------------------------------------

_DIE_IN_CREATE = textwrap.dedent("""
import os, signal, sys
import numpy as np
import seqshm
path, sig, nth, overwrite = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
calls = [0]
fallocate = os.posix_fallocate

def dying(fd, offset, length):
    calls[0] += 1
    if calls[0] == nth:  # 1: the sidecar's, 2: the channel file's
        os.kill(os.getpid(), sig)  # default action: no Python cleanup runs
    fallocate(fd, offset, length)

os.posix_fallocate = dying
seqshm.create(path, np.uint64, (1024,), overwrite=overwrite)
""")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("nth", [1, 2], ids=["in-sidecar", "in-channel"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
def test_a_creator_killed_mid_create_leaves_no_file(make_path: Callable[[], str], sig: int,
                                                    nth: int, overwrite: bool) -> None:
    """Killed while it reserves a file's memory (the longest step for a large channel), a
    creator leaves neither a temporary channel file nor a temporary sidecar in the directory:
    both have no name until they are linked into place (O_TMPFILE)."""
    path = make_path()
    directory = os.path.dirname(path)
    if overwrite:  # a channel already there, whose writer is gone
        seqshm.create(path, np.uint64, (1024,)).close()
    before = set(os.listdir(directory))
    p = subprocess.run([sys.executable, "-c", _DIE_IN_CREATE, path, str(int(sig)), str(nth),
                        "1" if overwrite else "0"], capture_output=True, text=True, timeout=60)
    assert p.returncode == -sig, p.stderr
    assert set(os.listdir(directory)) == before


# -- follow() over a slot a writer never finished, or a head no writer wrote ---------------------

_DIE_MID_WRITE = textwrap.dedent("""
import os, sys
import numpy as np
import seqshm
from seqshm import _core
path = sys.argv[1]
w = seqshm.create(path, np.uint64, (4,), nr_slots=4)
for k in range(1, 7):
    w.write(np.full(4, k, np.uint64))
# write 7 begun and never ended: slot 7 % 4 = 3 left with an odd seq, as by a writer killed
# between its begin and end (the engine's begin/end publish through a private buffer, so the
# word is set by hand, where a dying writer's begin would have left it)
layout = _core.abi_layout()
slot3 = layout["header"]["size"] + 3 * layout["slot"]["size"] + layout["slot"]["seq"]
with open(path, "r+b") as f:
    seq = int.from_bytes(os.pread(f.fileno(), 4, slot3), sys.byteorder)
    os.pwrite(f.fileno(), (seq + 1).to_bytes(4, sys.byteorder), slot3)
os._exit(0)  # dies holding the channel: no close()
""")


def test_follow_skips_the_slot_a_dead_writer_left_mid_write(shm_path: str) -> None:
    """Write 3's slot is being overwritten by write 7, whose writer died in it: write 3 is gone
    (counted lost), and 4, 5, 6 are still there to be read; then the end (WRITER_DIED). Before:
    follow() waited for that slot and raised ReadTimeout, and `seqshm record` saved nothing."""
    p = subprocess.run([sys.executable, "-c", _DIE_MID_WRITE, shm_path], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    with seqshm.open(shm_path, timeout=2) as r:
        got = [(s.seq, s.lost, int(s.data[0])) for s in r.follow(timeout=5)]
        assert r.state is ChannelState.WRITER_DIED
    assert got == [(4, 1, 4), (5, 0, 5), (6, 0, 6)]


_FOLLOW_BAD_HEAD = textwrap.dedent("""
import struct, sys
import numpy as np
import seqshm
from seqshm import _core
path = sys.argv[1]
w = seqshm.create(path, np.uint64, (4,), nr_slots=4)
for k in range(1, 8):
    w.write(np.full(4, k, np.uint64))
with open(path, "r+b") as f:  # a head no writer wrote: the ring holds writes 4 to 7
    f.seek(_core.abi_layout()["header"]["head"])
    f.write(struct.pack("=Q", 1000))
try:
    with seqshm.open(path, timeout=0.5) as r:
        for s in r.follow(timeout=1.0):
            print("sample", s.seq)
except seqshm.SeqshmError as e:
    print(type(e).__name__, e)
w.close()
""")


def test_follow_of_a_head_no_writer_wrote_raises_instead_of_spinning(shm_path: str) -> None:
    """A region scribbled on (head 1000 over a ring holding writes 4 to 7) is reported, naming
    the file; before, follow() spun at 100% CPU holding the GIL, deaf to its timeout and to
    Ctrl-C. In a child process, so that a regression fails by timeout instead of hanging."""
    p = subprocess.run([sys.executable, "-c", _FOLLOW_BAD_HEAD, shm_path], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    # damaged before it was opened: not "went back" (it had returned nothing), nor truncated
    assert "FormatError" in p.stdout and shm_path in p.stdout and "damaged" in p.stdout


_FOLLOW_BUSY_NEWEST = textwrap.dedent("""
import asyncio, sys, time
import numpy as np
import seqshm
from seqshm import _hooks
path, how = sys.argv[1], sys.argv[2]
w = seqshm.create(path, np.float64, (4,), nr_slots=1)
for k in range(1, 6):
    w.write(np.full(4, k))
_hooks.stall_mid_write(w, 1)  # write 6 stays mid-write in the only slot, over write 5
with seqshm.open(path, timeout=0.5) as r:
    cpu = time.process_time()
    if how == "async":
        async def main():
            return [s async for s in r.follow_async(timeout=0.3)]
        got = asyncio.run(main())
    else:
        got = [s.seq for s in r.follow(timeout=0.3)]
    print("samples", got, "state", r.state.name, "cpu", round(time.process_time() - cpu, 3))
""")


@pytest.mark.parametrize("how", ["sync", "async"])
def test_follow_waits_for_the_write_it_wants_not_any_newer_than_the_last_read(
        shm_path: str, how: str) -> None:
    """A reader that read nothing, on a one-slot channel whose write 6 stays mid-write over
    write 5 (write 5 lost, write 6 not there yet): follow(timeout=0.3) sleeps until its timeout
    and ends. Before, it waited past the last write it read (none: 0), which head (5) already
    was, so the wait returned at once and follow() spun at 100% CPU forever (so did `seqshm
    record`). In a child, so that a regression fails by timeout instead of hanging."""
    p = subprocess.run([sys.executable, "-c", _FOLLOW_BUSY_NEWEST, shm_path, how],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("samples [] state OPEN"), p.stdout


_DIE_WRITING_OVER_THE_NEWEST = textwrap.dedent("""
import os, sys
import numpy as np
import seqshm
from seqshm import _hooks
w = seqshm.create(sys.argv[1], np.float64, (4,), nr_slots=1)
for k in range(1, 6):
    w.write(np.full(4, k))
_hooks.stall_mid_write(w, 1)
os._exit(0)  # dies in write 6, over write 5
""")


def test_follow_ends_when_the_writer_died_writing_over_the_newest_write(shm_path: str) -> None:
    """Same, with the writer dead in write 6: follow() ends at once with the end of the
    channel (nothing left to read). Before: it spun forever, and `seqshm record` with it."""
    p = subprocess.run([sys.executable, "-c", _DIE_WRITING_OVER_THE_NEWEST, shm_path],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    with seqshm.open(shm_path, timeout=0.5) as r:
        done = threading.Event()
        got: list[int] = []

        def follow() -> None:
            got.extend(s.seq for s in r.follow(timeout=HANG_GUARD_S))
            done.set()

        t = threading.Thread(target=follow, daemon=True)
        t.start()
        assert done.wait(HANG_GUARD_S), "follow() did not end (spinning?)"
        assert got == [] and r.state is ChannelState.WRITER_DIED


def test_a_full_file_system_is_an_error_that_names_the_channel(tmp_path: Any) -> None:
    """ENOSPC from a 1 MiB tmpfs: an OSError naming the channel and what to do, and nothing
    left in the directory."""
    mnt = str(tmp_path / "small")
    os.mkdir(mnt)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", mnt],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        path = os.path.join(mnt, "big")
        with pytest.raises(OSError) as e:
            seqshm.create(path, np.uint8, (4 << 20,))
        assert e.value.errno == 28 and e.value.filename == path
        assert "df -h" in str(e.value) and "smaller" in str(e.value)
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", mnt], capture_output=True)


def test_a_file_name_that_is_not_ascii_still_makes_a_channel(tmp_path: Any) -> None:
    path = str(tmp_path / "café\u2603")
    with seqshm.create(path, np.uint8, (4,)) as w, seqshm.open(path) as r:
        w.write(np.arange(4, dtype=np.uint8))
        assert r.name.isascii() and r.name.isprintable() and r.name.startswith("caf")
        assert list(r.snapshot()) == [0, 1, 2, 3]


def test_a_creator_killed_as_it_names_the_sidecar_leaves_no_temporary(
        make_path: Callable[[], str]) -> None:
    """The sidecar of a new channel is linked into place, never renamed from a temporary."""
    path = make_path()
    code = textwrap.dedent("""
        import os, signal, sys
        import numpy as np
        import seqshm
        os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        w = seqshm.create(sys.argv[1], np.uint64, (1024,))
        os.kill(os.getpid(), signal.SIGKILL)  # and the writer dies as soon as it exists
    """)
    p = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr
    left = sorted(os.listdir(os.path.dirname(path)))
    assert not [f for f in left if f.endswith(".tmp")], left


def test_overwriting_a_symlink_is_refused_and_strands_no_reader(tmp_path: Any) -> None:
    """create(LINK, overwrite=True) over a closed channel at the link's target: refused (a
    link at a channel's path may have been planted by another user to have the creator
    replace or write its target: docs/security.md, section 3); the link, the old channel
    and its reader are untouched, and create() at the target itself replaces the channel."""
    real, link = str(tmp_path / "real"), str(tmp_path / "link")
    w = seqshm.create(real, np.uint8, (4,))
    w.write(np.full(4, 1, np.uint8))
    os.symlink(real, link)
    with seqshm.open(real, reopen=True, timeout=5) as r:
        assert r.snapshot()[0] == 1
        w.close()
        with pytest.raises(FileExistsError, match="symbolic link"):
            seqshm.create(link, np.uint8, (4,), overwrite=True)
        assert os.path.islink(link) and r.state is ChannelState.CLOSED
        with seqshm.create(real, np.uint8, (4,), overwrite=True) as w2:
            w2.write(np.full(4, 2, np.uint8))
            assert r.wait(timeout=5)
            assert r.snapshot()[0] == 2


def test_dot_dot_after_a_symlink_is_resolved_as_the_os_does(tmp_path: Any) -> None:
    base = tmp_path / "real" / "sub"
    base.mkdir(parents=True)
    os.symlink(base, tmp_path / "link")
    with seqshm.create(str(tmp_path / "link" / ".." / "chan"), np.uint8, (4,)) as w:
        assert w.path == str(tmp_path / "real" / "chan")
        assert os.path.exists(tmp_path / "real" / "chan")
        assert not os.path.exists(tmp_path / "chan")


def test_open_resolves_dot_dot_after_a_symlink_as_the_os_does(tmp_path: Any) -> None:
    base = tmp_path / "real" / "sub"
    base.mkdir(parents=True)
    os.symlink(base, tmp_path / "link")
    with seqshm.create(str(tmp_path / "real" / "chan"), np.uint8, (4,)) as w:
        w.write(np.arange(4, dtype=np.uint8))
        with seqshm.open(str(tmp_path / "link" / ".." / "chan")) as r:
            assert r.path == str(tmp_path / "real" / "chan")
            assert r.state is ChannelState.OPEN and list(r.snapshot()) == [0, 1, 2, 3]
