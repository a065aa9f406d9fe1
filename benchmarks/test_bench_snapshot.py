"""Snapshot latency and bandwidth by payload size, beside the limits measured in the same run.

Per payload size, one group: ``_copy_unlocked(out)`` (the same call path as ``snapshot(out=)``
doing a plain memcpy with no seqlock) is the baseline; ``_noop()`` (the cost of calling into the
extension) and NumPy's own ``np.copyto`` are the other references. No writer runs here: this
is the cost of the read itself; contention is in test_contention.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from benchutil import KiB, MiB, finish, setup, shm_path, size_id

import seqshm

SIZES = [64, 256, 4 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 16 * MiB]

CASES = [
    "noop",             # r._noop(): a no-op method call into the extension
    "copy_unlocked",    # r._copy_unlocked(out): memcpy on snapshot()'s call path (baseline)
    "np_copyto",        # np.copyto(out, src) between two private arrays
    "snapshot_out",     # r.snapshot(out)
    "snapshot",         # r.snapshot(): a new array each call
    "read_out",         # r.read(out): snapshot with its seq and timestamp
    "view_validate",    # tok = r.begin(); r.view(tok); r.validate(tok): zero-copy, no read
    "apply_sum",        # r.apply(np.sum): a reduction over the zero-copy view, retried if torn
    "sum_local",        # np.sum(private array): the reduction's own cost
]


@pytest.fixture(scope="module")
def channels():
    """One idle channel per payload size (the writer lives in this process), made on demand."""
    made = {}

    def get(nbytes):
        if nbytes not in made:
            path = shm_path(size_id(nbytes))
            w = seqshm.create(path, np.uint64, nbytes // 8, overwrite=True)
            w._write_pattern(1)
            made[nbytes] = (w, seqshm.open(path))
        return made[nbytes][1]

    yield get
    for w, r in made.values():
        r.close()
        w.close(unlink=True)


def _view_validate(r):
    tok = r.begin()
    r.view(tok)
    return r.validate(tok)


@pytest.mark.parametrize("nbytes", SIZES, ids=size_id)
@pytest.mark.parametrize("case", CASES)
def test_snapshot(benchmark, channels, case, nbytes):
    r = channels(nbytes)
    out = np.empty(r.shape, r.dtype)
    local = np.ones(r.shape, r.dtype)
    setup(benchmark, group=f"snapshot {size_id(nbytes)}", case=case, nbytes=nbytes,
          baseline=(case == "copy_unlocked"), section="snapshot")
    if case == "noop":
        benchmark(r._noop)
    elif case == "copy_unlocked":
        benchmark(r._copy_unlocked, out)
    elif case == "np_copyto":
        benchmark(np.copyto, out, local)
    elif case == "snapshot_out":
        res = benchmark(r.snapshot, out)
        assert res is out and int(out[0]) == int(out[-1]) == 1
    elif case == "snapshot":
        res = benchmark(r.snapshot)
        assert res.nbytes == nbytes
    elif case == "read_out":
        res = benchmark(r.read, out)
        assert res.seq == 1
    elif case == "view_validate":
        assert benchmark(_view_validate, r)
    elif case == "apply_sum":
        assert benchmark(r.apply, np.sum) == nbytes // 8
    elif case == "sum_local":
        assert benchmark(np.sum, local) == nbytes // 8
    finish(benchmark)
