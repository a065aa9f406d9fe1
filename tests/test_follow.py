"""follow(): every write once, in order, to the end, whatever the writer does (laps the ring, is
replaced, dies mid-write, leaves a head no write made); and history(), a read that follow()
and wait() start after."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from children import HANG_GUARD_S

import seqshm
from seqshm import ChannelState


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
