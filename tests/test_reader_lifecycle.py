"""How a reader sees its channel's life: the file truncated, shrunk or rewritten under it, the
writer closing, crashing or restarting, the file removed, and a reopening reader moving on (or
not). The first of a group is often issue 8's recipe, the rest other members of its kind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from children import HANG_GUARD_S, crashed, run_child

import seqshm
from seqshm import ChannelEnded, ChannelState, FileTruncated
from seqshm.testing import PatternWriter, StalledWriter

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
    p = run_child(TRUNCATE_CHILD, shm_path, size, what)
    assert p.returncode == 0, crashed(p)
    assert "FileTruncated" in p.stdout, crashed(p)



def test_truncated_ring_is_a_typed_error_not_sigbus(shm_path: str) -> None:
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(TRUNCATE_CHILD), shm_path, "0",
                        "snapshot"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "SLOTS": "8"})
    assert p.returncode == 0 and "FileTruncated" in p.stdout, crashed(p)



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
    p = run_child(code, shm_path)
    assert p.returncode == 0 and "['ok', 'ok', 'ok']" in p.stdout, crashed(p)



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
    p = run_child(code, shm_path)
    assert p.returncode == -signal.SIGBUS, crashed(p)



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



def test_a_follower_does_not_move_to_a_file_with_holes(
        shm_path: str, make_path: Callable[[], str], hostile_paths: list[str]) -> None:
    """A reopening reader opens what replaced its channel as a new reader would: a copy of
    another channel with a hole (only the last page of its payload missing; no writer's file
    has one) is not followed, and the reader keeps its channel, before anything reads the
    hole; the same bytes with every page allocated are followed."""
    other = make_path()
    with seqshm.create(other, np.float64, 4096) as w:
        w.write(np.full(4096, 2.0))
        data = Path(other).read_bytes()
    fake = shm_path + ".fake"  # beside it, to be renamed over it
    hostile_paths.append(fake)
    with seqshm.create(shm_path, np.float64, 4096) as w, seqshm.open(shm_path, reopen=True) as r:
        w.write(np.ones(4096))
        r.snapshot()
        w.close()
        with open(fake, "wb") as f:
            f.write(data[:-4096])
            f.truncate(len(data))
        assert os.stat(fake).st_blocks * 512 < len(data)
        os.rename(fake, shm_path)
        assert not r.wait(0.5)  # waits on for a channel to follow, as tail -F does
        assert r.snapshot().sum() == 4096  # the old channel, still this reader's
        Path(fake).write_bytes(data)  # the same bytes, every page allocated
        os.rename(fake, shm_path)
        assert r.wait(HANG_GUARD_S) and r.snapshot().sum() == 2 * 4096
    os.unlink(shm_path)



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


def test_the_readers_end_messages_are_lifecycles_words(shm_path: str) -> None:
    """Reader's ChannelEnded and the command line say who wrote a channel and why it ended in
    the same words: _lifecycle.writer_text() and end_reason(), one home for both."""
    from seqshm._lifecycle import end_reason, writer_text

    assert writer_text(0, 0, device=True) == "the kernel"
    assert writer_text(0, 0, device=False) == "writer pid 0"  # a file: never the kernel
    assert writer_text(42, 0, device=False) == "writer pid 42"
    assert end_reason(ChannelState.CLOSED, "writer pid 42") == (
        "the channel was closed by writer pid 42")
    assert end_reason(ChannelState.WRITER_DIED, "writer pid 42") == (
        "writer pid 42 ended without closing the channel")
    assert end_reason(ChannelState.REMOVED, "x") == "the channel's file was removed"
    assert end_reason(ChannelState.REPLACED, "x").startswith("a new channel replaced this one")
    assert end_reason(ChannelState.REPLACED, "x", "it is not ready").endswith(
        "cannot be followed: it is not ready")
    with pytest.raises(ValueError):
        end_reason(ChannelState.OPEN, "x")
    with seqshm.create(shm_path, np.int64, 1) as w, seqshm.open(shm_path) as r:
        r.snapshot()
        w.close(unlink=True)
        with pytest.raises(ChannelEnded) as e:
            r.wait(HANG_GUARD_S)
    assert str(e.value) == (f"{shm_path}: no more writes: the channel was closed by "
                            f"writer pid {os.getpid()}")
