"""Lifetimes: views outlive close(), close() is idempotent, context managers close, readers of
an empty channel see write 0, and a reader keeps the file it opened."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable

import numpy as np
import pytest

import seqshm


def test_view_outlives_reader_close(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 4) as w:
        w.write([1, 2, 3, 4])
        r = seqshm.open(w.path)
        v = r.view()
        r.close()
        gc.collect()
        assert v.tolist() == [1, 2, 3, 4]
        w.write([5, 6, 7, 8])
        assert v.tolist() == [5, 6, 7, 8]  # still the live mapping


def test_view_outlives_the_reader_object_writer_and_file(make_path: Callable[[], str]) -> None:
    path = make_path()
    w = seqshm.create(path, np.int64, 2)
    w.write([9, 9])
    r = seqshm.open(path)
    v = r.view()
    del r
    w.close(unlink=True)
    del w
    gc.collect()
    assert not os.path.exists(path)
    assert v.tolist() == [9, 9] and v.sum() == 18


def test_view_base_keeps_the_mapping_alive(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 2) as w, seqshm.open(w.path) as r:
        v = r.view()
        assert v.base is not None and not v.flags.owndata and not v.flags.writeable


# What a caller may still do to the array it got (deprecated from NumPy 2.5, not removed).
@pytest.mark.filterwarnings("ignore:Setting the (shape|dtype) on a NumPy array:DeprecationWarning")
def test_each_view_is_a_new_array_over_the_same_memory(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int64, 4) as w, seqshm.open(w.path) as r:
        a, b = r.view(), r.view()
        assert a is not b and np.shares_memory(a, b)
        a.shape = (2, 2)  # one caller's change of shape or dtype is nobody else's
        a.dtype = np.int32
        assert r.view().shape == (4,) and r.view().dtype == np.int64 and b.shape == (4,)


def test_snapshot_copies_survive_everything(make_path: Callable[[], str]) -> None:
    path = make_path()
    with seqshm.create(path, np.int16, 3) as w, seqshm.open(path) as r:
        w.write([1, 2, 3])
        snap = r.snapshot()
    os.unlink(path)
    gc.collect()
    assert snap.tolist() == [1, 2, 3] and snap.flags.owndata


def test_reader_close_is_idempotent(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int8, 1) as w:
        r = seqshm.open(w.path)
        r.close()
        r.close()
        assert r.closed and "closed" in repr(r)


def test_writer_close_is_idempotent(make_path: Callable[[], str]) -> None:
    w = seqshm.create(make_path(), np.int8, 1)
    w.close()
    w.close()
    w.close(unlink=True)
    assert w.closed and "closed" in repr(w)


def test_context_managers_close_reader_and_writer(make_path: Callable[[], str]) -> None:
    path = make_path()
    with seqshm.create(path, np.int8, 1) as w:
        with seqshm.open(path) as r:
            assert not r.closed
        assert r.closed and not w.closed
    assert w.closed
    assert os.path.exists(path)  # closing a writer keeps its channel file


def test_context_managers_close_on_exceptions(make_path: Callable[[], str]) -> None:
    path = make_path()
    with pytest.raises(KeyError), seqshm.create(path, np.int8, 1) as w, \
            seqshm.open(path) as r:
        raise KeyError
    assert w.closed and r.closed


def test_closing_the_writer_releases_the_channel(make_path: Callable[[], str]) -> None:
    path = make_path()
    seqshm.create(path, np.int8, 1).close()
    seqshm.create(path, np.int8, 1, overwrite=True).close()  # no WriterBusy


def test_close_unlink_removes_the_file(make_path: Callable[[], str]) -> None:
    path = make_path()
    w = seqshm.create(path, np.int8, 1)
    w.close(unlink=True)
    assert not os.path.exists(path)


def test_close_unlink_leaves_a_file_that_replaced_the_channel(
        make_path: Callable[[], str]) -> None:
    path = make_path()
    w = seqshm.create(path, np.int8, 1)
    os.unlink(path)
    with open(path, "w") as f:
        f.write("someone else's")
    w.close(unlink=True)
    with open(path) as f:
        assert f.read() == "someone else's"


def test_reader_opened_before_the_first_write_reads_write_0_of_zeros(
        make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.float64, (2, 3), nr_slots=4) as w, \
            seqshm.open(w.path) as r:
        snap = r.read()
        assert snap.seq == 0 and snap.timestamp_ns == 0
        assert snap.data.shape == (2, 3) and not snap.data.any()
        assert r.head == 0 and r.view().sum() == 0
        assert r.apply(lambda v: float(v.sum())) == 0.0
        w.write(np.ones((2, 3)))
        assert r.read().seq == 1 and r.head == 1


def test_writer_head_and_reader_head_agree(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int8, 1, nr_slots=2) as w, seqshm.open(w.path) as r:
        for k in range(5):
            w.write([k])
            assert r.head == w.head == w.seq == k + 1


def test_reader_keeps_reading_after_its_writer_closed(make_path: Callable[[], str]) -> None:
    path = make_path()
    w = seqshm.create(path, np.int32, 2)
    w.write([3, 4])
    with seqshm.open(path) as r:
        w.close(unlink=True)
        assert r.read().data.tolist() == [3, 4] and r.seq == 1


def test_reader_keeps_the_file_it_opened_when_the_path_is_replaced(
        make_path: Callable[[], str]) -> None:
    path = make_path()
    with seqshm.create(path, np.int32, 1) as old:
        old.write([1])
        r = seqshm.open(path)
    with seqshm.create(path, np.int32, 1, overwrite=True) as new:
        new.write([2])
        with r:
            assert r.snapshot().tolist() == [1]
        assert seqshm.snapshot(path).tolist() == [2]


def test_writer_begin_array_is_the_slot_of_the_next_write(make_path: Callable[[], str]) -> None:
    with seqshm.create(make_path(), np.int32, 1, nr_slots=2) as w, seqshm.open(w.path) as r:
        w.write([1])
        buf = w.begin()
        buf[0] = 2
        assert r.snapshot().tolist() == [1]  # the ring's newest complete slot is untouched
        w.end()
        assert r.snapshot().tolist() == [2]


def test_many_readers_and_reopens_leak_nothing(make_path: Callable[[], str]) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    with seqshm.create(make_path(), np.int8, 1) as w:
        w.write([1])
        before = open_fds()
        for _ in range(200):
            with seqshm.open(w.path) as r:
                r.snapshot()
                r.view()
        gc.collect()
        assert open_fds() == before
