"""Snapshot latency and bandwidth by payload size, beside the limits measured in the same run.

Per payload size, one group: ``_hooks.copy_unlocked(r, out)`` (snapshot(out=)'s work doing a
plain memcpy with no seqlock) is the baseline; ``_hooks.noop(r)`` (the cost of calling into the
extension) and NumPy's own ``np.copyto`` are the other references. No writer runs here: this
is the cost of the read itself; contention is in test_bench_contention.py.

Small payloads are timed ``loop_count(nbytes)`` calls per timed loop (``benchutil.looped``),
whose own cost per call (~4 ns) the ``empty_loop`` case shows; every case in a group pays it.
"""

from __future__ import annotations

import numpy as np
import pytest
from benchutil import KiB, MiB, empty_loop, finish, loop_count, looped, setup, shm_path, size_id

import seqshm
from seqshm import _hooks

SIZES = [64, 256, 4 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 16 * MiB]

CASES = [
    "empty_loop",       # the timing loop alone (64 B and 4 KiB only): what every case includes
    "noop",             # _hooks.noop(r): a no-op method call into the extension
    "copy_unlocked",    # _hooks.copy_unlocked(r, out): memcpy on snapshot()'s call path (baseline)
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
            _hooks.write_pattern(w, 1)
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


# A group's cases run one after another, so they share the machine's state.
PARAMS = [pytest.param(case, nbytes, id=f"{case}-{size_id(nbytes)}")
          for nbytes in SIZES for case in CASES
          if not (case == "empty_loop" and nbytes > 4 * KiB)]  # the loop costs the same


@pytest.mark.parametrize(("case", "nbytes"), PARAMS)
def test_snapshot(benchmark, channels, case, nbytes):
    r = channels(nbytes)
    out = np.empty(r.shape, r.dtype)
    local = np.ones(r.shape, r.dtype)
    # Calls that copy nothing are looped 1000 times at every size, so the harness's cost stays
    # out of them; copies of 256 KiB and more take >= 2 us and need no loop.
    n = 1000 if case in ("empty_loop", "noop", "view_validate") else loop_count(nbytes)
    setup(benchmark, group=f"snapshot {size_id(nbytes)}", case=case, nbytes=nbytes,
          baseline=(case == "copy_unlocked"), ops_per_call=n, section="snapshot")
    fn, args = {
        "empty_loop": (None, ()),
        "noop": (_hooks.noop, (r,)),
        "copy_unlocked": (_hooks.copy_unlocked, (r, out)),
        "np_copyto": (np.copyto, (out, local)),
        "snapshot_out": (r.snapshot, (out,)),
        "snapshot": (r.snapshot, ()),
        "read_out": (r.read, (out,)),
        "view_validate": (_view_validate, (r,)),
        "apply_sum": (r.apply, (np.sum,)),
        "sum_local": (np.sum, (local,)),
    }[case]
    benchmark(empty_loop(n) if fn is None else looped(fn, *args, n=n))
    if fn is not None:  # what one call returns is right
        res = fn(*args)
        if case in ("snapshot_out", "snapshot", "copy_unlocked"):
            assert res.nbytes == nbytes and int(res[0]) == int(res[-1]) == 1
        elif case == "read_out":
            assert res.seq == 1
        elif case == "view_validate":
            assert res
        elif case in ("apply_sum", "sum_local"):
            assert res == nbytes // 8
    finish(benchmark)
