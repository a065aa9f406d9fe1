"""Signals and blocked calls: Ctrl-C interrupts a blocked read, a wait or a long history() at
once, and a blocked read sleeps rather than spins."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from children import crashed, run_child

import seqshm
from seqshm.testing import StalledWriter

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
        p = run_child(INTERRUPT_CHILD, shm_path, call, "5")
        sw.kill(signal.SIGCONT)
    assert "interrupted after" in p.stdout, crashed(p)
    elapsed = float(p.stdout.split("after ")[1].split(" s")[0])
    assert elapsed < 2.0, p.stdout  # not the 5 s timeout



def test_ctrl_c_interrupts_a_wait_at_once(shm_path: str) -> None:
    with seqshm.create(shm_path, np.int64, 2) as w:  # a live writer that writes nothing more
        w.write([1, 1])
        p = run_child(INTERRUPT_CHILD, shm_path, "wait", "5")
        w.close(unlink=True)
    assert "interrupted after" in p.stdout, crashed(p)
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
        p = run_child(HISTORY_INTERRUPT_CHILD, shm_path)
        w.close(unlink=True)
    where = p.stdout.split()
    assert len(where) == 5, crashed(p)
    assert "inside" in where, crashed(p)  # was: always after history() returned



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
        p = run_child(code, shm_path)
        sw.kill(signal.SIGCONT)
    assert p.returncode == 0, crashed(p)
    assert float(p.stdout) < 0.5, f"{p.stdout} s of CPU in a 1 s blocked read"
