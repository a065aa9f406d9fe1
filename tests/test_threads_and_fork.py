"""Objects shared by threads, and processes forked with them: a close from another thread, copies
labelled with their own seq, a writer shared by threads, other threads running during long
copies, forked children that inherit a reader or writer (and the locks a thread held)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any

import numpy as np
import pytest
from children import HANG_GUARD_S, crashed, run_child

import seqshm
from seqshm import ClosedError, WriterBusy
from seqshm.testing import PatternWriter, StalledWriter, torn


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
    p = run_child(_FORK_WHILE_LOCKED, shm_path)
    assert p.returncode == 0, crashed(p)
    assert p.stdout.splitlines() == ["open False [1, 1]", "child 0"], crashed(p)



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
    p = run_child(CLOSE_DURING_COPY, shm_path)
    assert p.returncode == 0 and "ok" in p.stdout, crashed(p)



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
    p = run_child(REOPEN_DURING_COPIES, shm_path)
    assert p.returncode == 0 and "ok" in p.stdout, crashed(p)



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
    p = run_child(FORKED_CHILD_CLOSES, shm_path)
    assert p.returncode == 0 and "child 0" in p.stdout, crashed(p)



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
