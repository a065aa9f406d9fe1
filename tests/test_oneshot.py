"""seqshm.snapshot(path), the one-shot: readers kept by path, bounded, safe across threads and
fork(), and never stale for longer than its documented bound."""

from __future__ import annotations

import gc
import multiprocessing
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np

import seqshm
from seqshm import _api


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_repeated_one_shots_return_each_new_write(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 3) as w:
        for i in range(1, 50):
            w.write([i] * 3)
            assert seqshm.snapshot(w.path).tolist() == [i] * 3


def test_a_channel_replaced_by_create_is_seen_at_once(make_path: Callable[[], str]) -> None:
    path = make_path()
    with seqshm.create(path, np.int64, 2) as a:
        a.write([1, 1])
        assert seqshm.snapshot(path).tolist() == [1, 1]
    with seqshm.create(path, np.int64, 2, overwrite=True) as b:
        b.write([2, 2])
        assert seqshm.snapshot(path).tolist() == [2, 2]  # no wait: the old one says REPLACED


def test_a_channel_replaced_behind_its_back_is_seen_within_the_bound(
        make_path: Callable[[], str]) -> None:
    path = make_path()
    a = seqshm.create(path, np.int64, 2)
    a.write([1, 1])
    assert seqshm.snapshot(path).tolist() == [1, 1]
    os.unlink(path)  # removed while its writer lives: nothing marks it
    with seqshm.create(path, np.int64, 2) as b:
        b.write([2, 2])
        time.sleep(_api.ONESHOT_MAX_AGE_S * 1.5)
        assert seqshm.snapshot(path).tolist() == [2, 2]
    a.close()


def test_a_closed_channel_still_gives_its_last_write(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 2) as w:
        w.write([3, 3])
    for _ in range(3):
        assert seqshm.snapshot(w.path).tolist() == [3, 3]


def test_a_removed_channel_is_file_not_found_within_the_bound(
        make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 2) as w:
        w.write([3, 3])
        seqshm.snapshot(w.path)
        w.close(unlink=True)
    time.sleep(_api.ONESHOT_MAX_AGE_S * 1.5)
    try:
        seqshm.snapshot(w.path)
    except FileNotFoundError as e:
        assert e.filename == w.path
    else:
        raise AssertionError("a removed channel still answered")


def test_kept_readers_are_bounded_and_leak_nothing(make_path: Callable[[], str]) -> None:
    writers = [seqshm.create(make_path(), np.int8, 1) for _ in range(_api.ONESHOT_CAPACITY + 20)]
    _api._oneshot.clear()
    gc.collect()
    before = _fds()
    try:
        for w in writers:
            seqshm.snapshot(w.path)
        assert len(_api._oneshot) == _api.ONESHOT_CAPACITY
        assert _fds() <= before + _api.ONESHOT_CAPACITY
    finally:
        for w in writers:
            w.close()
        _api._oneshot.clear()
        gc.collect()
    assert _fds() <= before


def test_one_shots_from_many_threads(make_path: Callable[[], str]) -> None:
    paths = [make_path() for _ in range(3)]
    writers = [seqshm.create(p, np.int64, 4) for p in paths]
    for i, w in enumerate(writers):
        w.write([i] * 4)
    bad: list[object] = []

    def loop() -> None:
        for k in range(2000):
            i = k % 3
            a = seqshm.snapshot(paths[i])
            if a.tolist() != [i] * 4:
                bad.append(a)

    threads = [threading.Thread(target=loop) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in writers:
        w.close()
    assert not bad


def _child_one_shot(path: str, q: multiprocessing.SimpleQueue) -> None:  # type: ignore[type-arg]
    q.put(seqshm.snapshot(path).tolist())


def test_one_shot_in_a_forked_child(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 2) as w:
        w.write([5, 5])
        assert seqshm.snapshot(w.path).tolist() == [5, 5]
        ctx = multiprocessing.get_context("fork")
        q = ctx.SimpleQueue()
        p = ctx.Process(target=_child_one_shot, args=(w.path, q))
        p.start()
        p.join(10)
        assert q.get() == [5, 5] and p.exitcode == 0


def test_one_shot_of_a_bare_name(shm_name: str, shm_path: str) -> None:
    if os.path.dirname(shm_path) != "/dev/shm":
        return  # bare names resolve in /dev/seqshm and /dev/shm only
    with seqshm.create(shm_path, np.int64, 2) as w:
        w.write([6, 6])
        assert seqshm.snapshot(shm_name).tolist() == [6, 6]
        w.close(unlink=True)


_SHRUNK_AND_RESTORED = """
import os, sys, time
import numpy as np
import seqshm
from seqshm import _api
path = sys.argv[1]
with seqshm.create(path, np.int64, 512) as w:
    w.write(np.arange(512))
print(seqshm.snapshot(path)[:2].tolist())
with open(path, "rb") as f:
    whole = f.read()
os.truncate(path, 0)  # the same inode, cut: the kept reader's pages are gone
try:
    seqshm.snapshot(path)
except seqshm.FormatError as e:  # FileTruncated, or a fresh open's "truncated"
    print("shrunk" if "truncated" in str(e) else e)
with open(path, "r+b") as f:  # and made whole again in place, as a restore from a copy does
    f.write(whole)
time.sleep(_api.ONESHOT_MAX_AGE_S * 1.5)
print(seqshm.snapshot(path)[:2].tolist())
os.unlink(path)
"""


def test_a_file_shrunk_and_restored_in_place_is_read_again_within_the_bound(
        make_path: Callable[[], str]) -> None:
    """The kept reader whose file shrank under it raised FileTruncated from then on, even
    once the file was whole again, while a new reader read it: the one-shot drops it."""
    p = subprocess.run([sys.executable, "-c", _SHRUNK_AND_RESTORED, make_path()],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["[0,", "1]", "shrunk", "[0,", "1]"], p.stdout
