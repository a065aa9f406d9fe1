"""Shared memory never outlives its guard: a write's buffer is dead after its block, and apply()
refuses a result, a record or a view kept elsewhere that aliases the slot."""

from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest

import seqshm


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
