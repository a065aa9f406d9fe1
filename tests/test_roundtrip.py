"""What a writer publishes a reader gets back: every dtype and shape, with seq and timestamp,
in place or into a given array, from one slot or a ring."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import seqshm
from seqshm import _core

SCALARS = ["?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"]


def _sample(dtype: np.dtype, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Deterministic data filling every byte (so padding mistakes show)."""
    rng = np.random.default_rng(seed)
    a = np.zeros(shape, dtype)
    raw = a.reshape(-1).view(np.uint8)
    raw[:] = rng.integers(0, 256, raw.size, dtype=np.uint8)
    if dtype.names is None and dtype.kind == "b":
        a[...] = raw.reshape(shape) & 1 if shape else raw[0] & 1
    if dtype.names is None and dtype.kind in "fc":
        a[...] = rng.standard_normal(shape)  # no NaN: compare with ==
    return a


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", SCALARS)
def test_every_scalar_dtype_round_trips(make_path, dtype: str) -> None:
    dt = np.dtype(dtype)
    data = _sample(dt, (3, 5))
    with seqshm.create(make_path(), dt, (3, 5)) as w, seqshm.open(w.path) as r:
        w.write(data)
        out = r.snapshot()
    assert out.dtype == dt and out.shape == (3, 5)
    assert np.array_equal(out, data)


def test_zero_dimensional_channel_holds_one_scalar(make_path) -> None:
    with seqshm.create(make_path(), np.float64) as w, seqshm.open(w.path) as r:
        w.write(2.5)
        out = r.snapshot()
        w.write(np.array(3, np.int8))
        again = r.snapshot()
    assert out.shape == () and out.dtype == np.float64 and out[()] == 2.5
    assert again[()] == 3.0


def test_shape_given_as_int_is_one_dimensional(make_path) -> None:
    with seqshm.create(make_path(), np.int32, 7) as w, seqshm.open(w.path) as r:
        assert r.shape == w.shape == (7,)


@pytest.mark.parametrize("shape", [(1,), (4096,), (2, 3), (2, 1, 3), (1,) * 8,
                                   (2, 2, 2, 2, 2, 2, 2, 2)])
def test_multidimensional_shapes_round_trip(make_path, shape: tuple[int, ...]) -> None:
    data = _sample(np.dtype(np.int16), shape)
    with seqshm.create(make_path(), np.int16, shape) as w, seqshm.open(w.path) as r:
        w.write(data)
        out = r.snapshot()
    assert out.shape == shape and np.array_equal(out, data)


RECORDS = {
    "packed": np.dtype([("a", "u1"), ("b", "<i8"), ("c", "<f2")]),
    "aligned": np.dtype([("a", "u1"), ("b", "<i8"), ("c", "<f2")], align=True),
    "subarray": np.dtype([("t", "<u8"), ("xyz", "<f4", (3,)), ("ok", "?")]),
    "offsets": np.dtype({"names": ["y", "x"], "formats": ["<u4", "<c8"], "offsets": [40, 8],
                         "itemsize": 64}),
    "every kind": np.dtype([(f"f{i}", t) for i, t in enumerate(SCALARS)]),
    "32 fields": np.dtype([(f"n{i:02}", "<u2") for i in range(32)]),
    "31-char name": np.dtype([("x" * 31, "<u4")]),
}


@pytest.mark.parametrize("dtype", RECORDS.values(), ids=RECORDS.keys())
def test_structured_records_round_trip(make_path, dtype: np.dtype) -> None:
    data = _sample(dtype, (4,))
    with seqshm.create(make_path(), dtype, 4) as w, seqshm.open(w.path) as r:
        w.write(data)
        out = r.snapshot()
    assert r.dtype == dtype and out.dtype == dtype
    assert out.dtype.itemsize == dtype.itemsize and out.dtype.fields == dtype.fields
    assert _same_bytes(out, data)


def test_record_padding_bytes_are_copied_as_written(make_path) -> None:
    dt = RECORDS["offsets"]
    data = _sample(dt, (2,))
    with seqshm.create(make_path(), dt, 2) as w, seqshm.open(w.path) as r:
        w.write(data)
        assert r.snapshot().tobytes() == data.tobytes()


def test_one_element_subarray_field_round_trips(make_path) -> None:
    dt = np.dtype([("a", "<u4", (1,)), ("b", "<f8")])
    w = seqshm.create(make_path(), dt, 3)
    with w, seqshm.open(w.path) as r:
        assert r.dtype == dt


def test_snapshot_into_out_fills_and_returns_it(make_path) -> None:
    data = np.arange(6, dtype=np.uint32).reshape(2, 3)
    out = np.zeros((2, 3), np.uint32)
    with seqshm.create(make_path(), np.uint32, (2, 3)) as w, seqshm.open(w.path) as r:
        w.write(data)
        got = r.snapshot(out=out)
    assert got is out
    assert np.array_equal(out, data)


def test_snapshot_into_out_accepts_an_equivalent_dtype_object(make_path) -> None:
    dt = RECORDS["subarray"]
    out = np.zeros(2, np.dtype(dt.descr))  # equal, but not the reader's dtype object
    with seqshm.create(make_path(), dt, 2) as w, seqshm.open(w.path) as r:
        w.write(_sample(dt, (2,)))
        assert r.snapshot(out) is out


def test_snapshot_into_out_allocates_nothing(make_path) -> None:
    tracemalloc = pytest.importorskip("tracemalloc")
    out = np.zeros(1 << 16, np.uint8)
    with seqshm.create(make_path(), np.uint8, 1 << 16) as w, seqshm.open(w.path) as r:
        w.write(np.ones(1 << 16, np.uint8))
        r.snapshot(out)  # warm up
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(100):
                r.snapshot(out)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert grown < 1 << 16  # not one payload-sized buffer over 100 calls


def test_new_snapshots_are_independent_copies(make_path) -> None:
    with seqshm.create(make_path(), np.int64, 4) as w, seqshm.open(w.path) as r:
        w.write([1, 2, 3, 4])
        first = r.snapshot()
        w.write([5, 6, 7, 8])
        second = r.snapshot()
        assert first.flags.writeable and first.flags.owndata
    assert first.tolist() == [1, 2, 3, 4] and second.tolist() == [5, 6, 7, 8]


def test_read_returns_data_with_seq_and_timestamp(make_path) -> None:
    with seqshm.create(make_path(), np.int64, 2) as w, seqshm.open(w.path) as r:
        before = seqshm.monotonic_ns()
        w.write([1, 1])
        w.write([2, 2])
        after = seqshm.monotonic_ns()
        snap = r.read()
    assert isinstance(snap, seqshm.Snapshot)
    assert snap.data.tolist() == [2, 2] and snap.seq == 2 == r.seq
    assert before <= snap.timestamp_ns <= after and snap.timestamp_ns == r.timestamp_ns


def test_timestamps_are_monotonic_across_writes(make_path) -> None:
    stamps = []
    with seqshm.create(make_path(), np.int8, 1) as w, seqshm.open(w.path) as r:
        for k in range(50):
            w.write([k])
            stamps.append(r.read().timestamp_ns)
    assert stamps == sorted(stamps)


def test_monotonic_ns_is_clock_monotonic() -> None:
    import time
    a = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    b = seqshm.monotonic_ns()
    c = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    assert a <= b <= c


def test_explicit_timestamp_is_published(make_path) -> None:
    with seqshm.create(make_path(), np.int8, 1) as w, seqshm.open(w.path) as r:
        w.write([1], timestamp_ns=123456789)
        assert r.read().timestamp_ns == 123456789


def test_write_returns_the_write_number(make_path) -> None:
    with seqshm.create(make_path(), np.int8, 1) as w:
        assert w.seq == 0
        assert [w.write([k]) for k in range(3)] == [1, 2, 3]
        assert w.seq == 3


def test_write_converts_like_asarray(make_path) -> None:
    with seqshm.create(make_path(), np.float32, (2, 2)) as w, seqshm.open(w.path) as r:
        w.write([[1, 2], [3, 4]])
        assert r.snapshot().tolist() == [[1.0, 2.0], [3.0, 4.0]]
        w.write(np.arange(4, dtype=np.int64).reshape(2, 2).T)  # other dtype, not contiguous
        assert r.snapshot().tolist() == [[0.0, 2.0], [1.0, 3.0]]


def test_writing_block_publishes_in_place_on_exit(make_path) -> None:
    with seqshm.create(make_path(), np.int32, 3, nr_slots=2) as w, seqshm.open(w.path) as r:
        w.write([1, 2, 3])
        with w.writing(timestamp_ns=77) as buf:
            assert buf.tolist() == [1, 2, 3]  # starts from the last published payload
            buf[1] = 20
            assert r.read().seq == 1  # nothing visible before the block ends
        snap = r.read()
    assert snap.data.tolist() == [1, 20, 3] and snap.seq == 2 and snap.timestamp_ns == 77


def test_begin_end_publishes_the_buffer(make_path) -> None:
    with seqshm.create(make_path(), np.int32, 2) as w, seqshm.open(w.path) as r:
        t0 = seqshm.monotonic_ns()
        buf = w.begin()
        buf[:] = [4, 5]
        assert w.end() == 1
        snap = r.read()
    assert snap.data.tolist() == [4, 5] and snap.seq == 1
    assert snap.timestamp_ns >= t0  # defaults to the time of begin()


def test_ring_begin_starts_from_the_newest_payload(make_path) -> None:
    with seqshm.create(make_path(), np.int32, 2, nr_slots=4) as w, seqshm.open(w.path) as r:
        w.write([1, 2])
        buf = w.begin()
        assert buf.tolist() == [1, 2]
        buf[0] = 10
        w.end()
        assert r.snapshot().tolist() == [10, 2]


@pytest.mark.parametrize("nr_slots", [2, 4, 8, 1024])
def test_ring_snapshot_returns_the_newest_write(make_path, nr_slots: int) -> None:
    with seqshm.create(make_path(), np.uint64, 3, nr_slots=nr_slots) as w, \
            seqshm.open(w.path) as r:
        for k in range(1, nr_slots + 3):
            w.write([k, k, k])
            snap = r.read()
            assert snap.seq == k and snap.data.tolist() == [k, k, k]


def test_history_of_a_ring_is_every_held_write_oldest_first(make_path) -> None:
    with seqshm.create(make_path(), np.uint64, 2, nr_slots=4) as w, seqshm.open(w.path) as r:
        for k in range(1, 4):
            w.write([k, 10 * k], timestamp_ns=1000 + k)
        h = r.history()
    assert isinstance(h, seqshm.History)
    assert h.seq.tolist() == [1, 2, 3]
    assert h.data.tolist() == [[1, 10], [2, 20], [3, 30]]
    assert h.timestamp_ns.tolist() == [1001, 1002, 1003]


def test_history_after_laps_holds_the_last_n_writes(make_path) -> None:
    with seqshm.create(make_path(), np.uint64, 1, nr_slots=4) as w, seqshm.open(w.path) as r:
        for k in range(1, 11):
            w.write([k])
        h = r.history()
    assert h.seq.tolist() == [7, 8, 9, 10] and h.data[:, 0].tolist() == [7, 8, 9, 10]


@pytest.mark.parametrize("writes", [3, 8, 11, 21])  # not full, full, lapped (twice)
def test_history_copies_the_ring_once(make_path, writes: int) -> None:
    """history() copied every slot, then copied them all again to sort them by write (twice
    the ring's memory at its peak, and the second copy deaf to signals): the slots are now
    copied oldest first, so sorting them moves nothing."""
    import tracemalloc

    size = 1 << 20
    with seqshm.create(make_path(), np.uint8, size, nr_slots=8) as w, \
            seqshm.open(w.path) as r:
        for k in range(1, writes + 1):
            w.write(np.full(size, k, np.uint8))
        tracemalloc.start()
        try:
            h = r.history()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    held = min(writes, 8)
    assert h.seq.tolist() == list(range(writes - held + 1, writes + 1))
    assert h.data[:, ::4096].tolist() == [[k] * (size // 4096) for k in h.seq.tolist()]
    assert peak < 8 * size * 1.25, f"history() of 8 MiB allocated {peak} bytes at its peak"


def test_history_gap_shows_the_writes_the_reader_missed(make_path) -> None:
    with seqshm.create(make_path(), np.uint64, 1, nr_slots=4) as w, seqshm.open(w.path) as r:
        w.write([1])
        seen = int(r.history().seq[-1])
        for k in range(2, 12):
            w.write([k])
        h = r.history()
    missed = int(h.seq[0]) - seen - 1
    assert missed == 6  # writes 2..7 were overwritten before this reader looked
    assert np.all(np.diff(h.seq) == 1)


def test_history_of_an_empty_channel_is_empty(make_path) -> None:
    with seqshm.create(make_path(), np.float32, (2, 3), nr_slots=2) as w, \
            seqshm.open(w.path) as r:
        h = r.history()
    assert h.data.shape == (0, 2, 3) and h.seq.size == 0 and h.timestamp_ns.size == 0


def test_history_of_one_slot_is_the_newest_write(make_path) -> None:
    with seqshm.create(make_path(), np.int16, 2) as w, seqshm.open(w.path) as r:
        w.write([1, 2])
        w.write([3, 4])
        h = r.history()
    assert h.seq.tolist() == [2] and h.data.tolist() == [[3, 4]]


def test_snapshot_one_liner_opens_copies_and_closes(make_path) -> None:
    with seqshm.create(make_path(), np.int32, 3) as w:
        w.write([7, 8, 9])
        assert seqshm.snapshot(w.path).tolist() == [7, 8, 9]


def test_bare_name_resolves_to_dev_shm(shm_name: str) -> None:
    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("/dev/shm is not writable here")
    with seqshm.create(f"/dev/shm/{shm_name}", np.int32, 1) as w:
        w.write([5])
        assert seqshm.resolve(shm_name) == f"/dev/shm/{shm_name}"
        assert seqshm.snapshot(shm_name).tolist() == [5]
        with seqshm.open(shm_name) as r:
            assert r.path == f"/dev/shm/{shm_name}"


def test_default_channel_name_is_the_file_name(make_path) -> None:
    path = make_path()
    with seqshm.create(path, np.int8, 1) as w:
        assert w.name == os.path.basename(path)


def test_reader_stats_count_snapshots(make_path) -> None:
    with seqshm.create(make_path(), np.int8, 1) as w, seqshm.open(w.path) as r:
        w.write([1])
        for _ in range(5):
            r.snapshot()
        assert r.stats == seqshm.ReaderStats(snapshots=5, retries=0, timeouts=0)


def test_view_is_a_read_only_zero_copy_look_at_the_newest_payload(make_path) -> None:
    with seqshm.create(make_path(), np.int32, 3) as w, seqshm.open(w.path) as r:
        w.write([1, 2, 3])
        v = r.view()
        assert not v.flags.writeable and v.tolist() == [1, 2, 3]
        w.write([4, 5, 6])  # one slot: the same memory changes under the view
        assert v.tolist() == [4, 5, 6]
        with pytest.raises(ValueError):
            v[0] = 1


def test_begin_view_validate_reads_consistently_without_a_writer(make_path) -> None:
    with seqshm.create(make_path(), np.int32, 3) as w, seqshm.open(w.path) as r:
        w.write([1, 2, 3])
        token = r.begin()
        total = int(r.view(token).sum())
        assert r.validate(token)
    assert total == 6 and r.seq == 1


def test_validate_fails_after_a_write_since_begin(make_path) -> None:
    with seqshm.create(make_path(), np.int32, 3) as w, seqshm.open(w.path) as r:
        w.write([1, 2, 3])
        token = r.begin()
        w.write([4, 5, 6])
        assert not r.validate(token)


def test_apply_returns_fns_result_on_the_payload(make_path) -> None:
    with seqshm.create(make_path(), np.int32, 3) as w, seqshm.open(w.path) as r:
        w.write([1, 2, 3])
        assert r.apply(lambda v, k, *, m: int(v.sum()) * k + m, 2, m=1) == 13


def test_apply_propagates_an_exception_raised_on_a_consistent_read(make_path) -> None:
    with seqshm.create(make_path(), np.int32, 3) as w, seqshm.open(w.path) as r:
        w.write([1, 2, 3])
        with pytest.raises(ZeroDivisionError):
            r.apply(lambda v: 1 // 0)


def test_apply_refuses_to_return_a_view_of_shared_memory(make_path) -> None:
    with seqshm.create(make_path(), np.int32, 3) as w, seqshm.open(w.path) as r:
        w.write([1, 2, 3])
        with pytest.raises(ValueError, match="view of shared memory"):
            r.apply(lambda v: v[1:])
        assert r.apply(lambda v: v[1:].copy()).tolist() == [2, 3]


def test_writer_repr_and_reader_repr_name_the_channel(make_path) -> None:
    with seqshm.create(make_path(), np.int8, 1) as w, seqshm.open(w.path) as r:
        assert w.path in repr(w) and w.path in repr(r)


def test_a_bare_name_never_resolves_in_the_current_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    name = "seqshm-no-such-channel-here"
    with seqshm.create(tmp_path / name, np.int32, 1) as w:
        with pytest.raises(FileNotFoundError, match="looked for /dev/seqshm/.* and /dev/shm/"):
            seqshm.open(name)
        assert seqshm.open(f"./{name}").path == w.path  # a path says where
        w.close(unlink=True)


def test_slot_seqs_counts_two_per_write_in_each_slot_and_odd_mid_write(make_path) -> None:
    with seqshm.create(make_path(), np.uint64, 1, nr_slots=4) as w, seqshm.open(w.path) as r:
        assert r.slot_seqs() == [0, 0, 0, 0]
        for k in range(6):
            w.write([k])
        seqs = r.slot_seqs()
        assert len(seqs) == 4 and sum(seqs) == 2 * 6 and not any(s & 1 for s in seqs)
        # slot 1 mid-write, as a writer in it leaves it (a tmpfs file shares its mapping's pages)
        layout = _core.abi_layout()
        at = _core.SLOTS_OFFSET + layout["slot"]["size"] + layout["slot"]["seq"]
        fd = os.open(w.path, os.O_WRONLY)
        try:
            os.pwrite(fd, (seqs[1] + 1).to_bytes(4, sys.byteorder), at)
        finally:
            os.close(fd)
        assert r.slot_seqs() == [seqs[0], seqs[1] + 1, seqs[2], seqs[3]]
        r.close()
        with pytest.raises(seqshm.ClosedError):
            r.slot_seqs()


def test_slot_seqs_of_a_truncated_file_is_file_truncated(make_path) -> None:
    with seqshm.create(make_path(), np.uint64, 1, nr_slots=2) as w, seqshm.open(w.path) as r:
        w.write([1])
        os.truncate(w.path, 0)
        with pytest.raises(seqshm.FileTruncated):
            r.slot_seqs()
