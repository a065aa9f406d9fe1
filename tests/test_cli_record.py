"""``seqshm record`` over long recordings: memory that does not grow with the recording, a full
disk, signals, nothing left behind; and the spool it writes through, against NumPy's and
pyarrow's own writers."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
from test_cli import _run_in_terminal, has_mapped, run, start, wait_until
from test_cli import writing as cli_writing

import seqshm
from seqshm._types import Sample
from seqshm.cli import _destination, _spool

REC = np.dtype([("a", np.uint32), ("b", np.float64, (2,))])
MIB = 1 << 20


def writing(w: seqshm.Writer, random: bool = False) -> AbstractContextManager[None]:
    """``w`` written about every 0.5 ms in a thread meanwhile: write k (seq k) has k in its
    first and last element (and random bytes between, if ``random``: nothing compresses)."""
    bufs = [np.zeros(w.shape, w.dtype) for _ in range(4)]
    if random:
        rng = np.random.default_rng(1)
        for b in bufs:
            b.view(np.uint8)[...] = rng.integers(0, 256, b.nbytes, np.uint8).reshape(
                b.view(np.uint8).shape
            )

    def stamped(k: int) -> np.ndarray:
        buf = bufs[k % len(bufs)]
        buf.flat[0] = buf.flat[-1] = np.array(k).astype(w.dtype)  # uint8: k mod 256
        return buf

    return cli_writing(w, hz=2000, data=stamped)


def _rows(out_file: str, ext: str) -> int:
    """How many writes a recording holds, read without loading it whole."""
    if ext == ".npy":
        return len(np.load(out_file, mmap_mode="r"))
    if ext == ".npz":
        with zipfile.ZipFile(out_file) as z, z.open("seq.npy") as f:
            version = np.lib.format.read_magic(f)
            shape = (
                np.lib.format.read_array_header_1_0(f)
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0(f)
            )[0]
            return int(shape[0])
    if ext == ".parquet":
        return int(pytest.importorskip("pyarrow.parquet").ParquetFile(out_file).metadata.num_rows)
    pa = pytest.importorskip("pyarrow")
    with pa.ipc.open_file(out_file) as r:
        return sum(r.get_batch(i).num_rows for i in range(r.num_record_batches))


# -- memory --------------------------------------------------------------------------------------

# The child's own peak: VmHWM of its address space. Not getrusage()'s ru_maxrss, which Linux
# carries over exec from the process forked (a copy of this test process, however large).
PEAK_RSS = (
    "import re, sys; from seqshm.cli import main; code = main(sys.argv[1:]); "
    "status = open('/proc/self/status').read(); "
    "print(int(re.search(r'VmHWM:\\s*(\\d+) kB', status)[1]) * 1024); sys.exit(code)"
)


def _peak_rss(channel: str, out_file: str, count: int) -> int:
    """The peak resident memory (bytes) of a ``seqshm record --count`` run in a child."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, "record", channel, "-o", out_file, "--count", str(count)],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


@pytest.mark.parametrize("ext", [".npy", ".npz", ".parquet", ".arrow"])
def test_record_memory_does_not_grow_with_the_recording(
    make_path: Callable[[], str], tmp_path: Path, ext: str
) -> None:
    """200 writes of a 1 MiB channel (200 MiB recorded) peak at most 48 MiB above 4 writes of
    it (the interpreter, NumPy, pyarrow and the buffers of the final write, whatever the
    length); a recording kept in memory peaks at twice its size. For .npy and .npz, the whole
    process also stays under 100 MiB."""
    if ext in (".parquet", ".arrow"):
        pytest.importorskip("pyarrow")
    with seqshm.create(make_path(), np.float64, (MIB // 8,), nr_slots=4) as w, writing(w):
        small = _peak_rss(w.path, str(tmp_path / f"small{ext}"), 4)
        big_file = str(tmp_path / f"big{ext}")
        big = _peak_rss(w.path, big_file, 200)
    assert big < small + 48 * MIB, (small / MIB, big / MIB)
    if ext in (".npy", ".npz"):
        assert big < 100 * MIB, big / MIB
    assert _rows(big_file, ext) == 200
    if ext == ".npy":
        a = np.load(big_file, mmap_mode="r")
        seq = a["seq"].astype(np.int64)
        assert np.all(np.diff(seq) == 1 + a["lost"][1:].astype(np.int64))
        assert np.array_equal(a["data"][:, 0], seq) and np.array_equal(a["data"][:, -1], seq)


# -- a full disk ---------------------------------------------------------------------------------


def _private_tmpfs_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    args = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        args.insert(1, "--map-root-user")
    try:
        probe = subprocess.run(
            [*args, "sh", "-c", "mount -t tmpfs -o size=1m none /mnt"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not _private_tmpfs_works(), reason="needs unshare --mount and tmpfs")
@pytest.mark.parametrize("ext", [".npy", ".parquet"])
def test_a_full_disk_stops_the_recording_and_keeps_what_it_has(
    make_path: Callable[[], str], tmp_path: Path, ext: str
) -> None:
    """Recording to an 8 MiB tmpfs (in a private mount namespace) until it is full: exit 1
    with one line naming the file and the full disk, no traceback, and every write the disk
    took kept: a .npy in place; a .parquet, which then has no room to be written, as a .npy
    beside it. No temporary is left."""
    if ext == ".parquet":
        pytest.importorskip("pyarrow")
    small, after = tmp_path / "small", tmp_path / "after"
    small.mkdir()
    after.mkdir()
    target = str(small / f"rec{ext}")
    args = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        args.insert(1, "--map-root-user")
    script = (
        'mount -t tmpfs -o size=8m none "$0" || exit 99; cd /; '
        '"$1" -m seqshm record "$2" -o "$3" --count 1000000; rc=$?; '
        'cp -a "$0/." "$4/"; exit $rc'
    )
    with (
        seqshm.create(make_path(), np.uint8, (64 << 10,), nr_slots=8) as w,
        writing(w, random=True),
    ):
        out = subprocess.run(
            [*args, "sh", "-c", script, str(small), sys.executable, w.path, target, str(after)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.startswith(f"seqshm: {target}")
    if ext == ".npy":
        assert out.stderr.count("\n") == 1 and "the disk is full" in out.stderr
        assert sorted(os.listdir(after)) == ["rec.npy"]
        kept = after / "rec.npy"
    else:
        assert f"kept in {target}.npy" in out.stderr and "No space left" in out.stderr
        assert sorted(os.listdir(after)) == ["rec.parquet.npy"]
        kept = after / "rec.parquet.npy"
    a = np.load(kept)
    assert 64 <= len(a) <= 128  # what 8 MiB holds, less a row cut short
    seq = a["seq"].astype(np.int64)
    assert np.all(np.diff(seq) == 1 + a["lost"][1:].astype(np.int64))
    assert np.all(a["data"][:, 0] == (seq & 0xFF))


# -- signals and leftovers -----------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_record_saves_what_it_has_on_sigterm_and_sighup(
    make_path: Callable[[], str], tmp_path: Path, sig: signal.Signals
) -> None:
    out_file = str(tmp_path / "rec.npz")
    with seqshm.create(make_path(), np.int64, 2, nr_slots=16) as w, writing(w):
        p = start("record", w.path, "-o", out_file)
        wait_until(lambda: has_mapped(p.pid, w.path))
        wait_until(lambda: w.seq > 20)
        time.sleep(0.2)
        p.send_signal(sig)
        _, err = p.communicate(timeout=20)
    assert p.returncode == 128 + sig and "Traceback" not in err, err
    with np.load(out_file) as z:
        seq = z["seq"].astype(np.int64)
        assert len(seq) >= 1 and np.all(np.diff(seq) - 1 == z["lost"][1:])
        assert np.array_equal(z["data"][:, 0], seq)


# -- the spool ------------------------------------------------------------------------------------


def _samples(n: int) -> list[Sample]:
    out = []
    for k in range(n):
        data = np.zeros(2, REC)
        data["a"] = [k, k + 1]
        data["b"] = k / 2
        out.append(Sample(data, 2 * k + 1, 1_000_000 + 10 * k, 1 if k else 0))
    return out


def _spooled(tmp_path: Path, ext: str, n: int, monkeypatch: pytest.MonkeyPatch) -> str:
    """``n`` writes saved through a Spool whose batches are 3 rows and chunks 5 (so every
    boundary is crossed)."""
    row = _spool.row_dtype(REC, (2,)).itemsize
    monkeypatch.setattr(_spool, "BATCH_BYTES", 3 * row)
    monkeypatch.setattr(_spool, "CHUNK_BYTES", 5 * row)
    out_file = str(tmp_path / f"rec{ext}")
    with _destination.Destination(out_file) as dest:
        spool = _spool.Spool.create(dest, REC, (2,))
        for s in _samples(n):
            spool.append(s)
        spool.save(ext)
    return out_file


def _columns(n: int) -> tuple[np.ndarray, ...]:
    samples = _samples(n)
    return (
        np.array([s.seq for s in samples], np.uint64),
        np.array([s.timestamp_ns for s in samples], np.uint64),
        np.array([s.lost for s in samples], np.uint64),
        np.stack([s.data for s in samples]) if n else np.empty((0, 2), REC),
    )


@pytest.mark.parametrize("n", [0, 1, 3, 14])
def test_a_spooled_npy_is_what_np_save_writes(
    tmp_path: Path, n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_file = _spooled(tmp_path, ".npy", n, monkeypatch)
    seq, timestamp_ns, lost, data = _columns(n)
    expected = np.empty(n, _spool.row_dtype(REC, (2,)))
    expected["seq"], expected["timestamp_ns"], expected["lost"], expected["data"] = (
        seq,
        timestamp_ns,
        lost,
        data,
    )
    np.save(tmp_path / "expected.npy", expected)
    assert Path(out_file).read_bytes() == (tmp_path / "expected.npy").read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["expected.npy", "rec.npy"]


@pytest.mark.parametrize("n", [0, 1, 14])
def test_a_spooled_npz_is_what_np_savez_writes(
    tmp_path: Path, n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    out_file = _spooled(tmp_path, ".npz", n, monkeypatch)
    seq, timestamp_ns, lost, data = _columns(n)
    np.savez(tmp_path / "expected.npz", seq=seq, timestamp_ns=timestamp_ns, lost=lost, data=data)
    with zipfile.ZipFile(out_file) as z, zipfile.ZipFile(tmp_path / "expected.npz") as e:
        assert z.namelist() == e.namelist()
        for name in e.namelist():
            assert z.read(name) == e.read(name), name
    assert sorted(os.listdir(tmp_path)) == ["expected.npz", "rec.npz"]


@pytest.mark.parametrize("ext", [".parquet", ".arrow"])
@pytest.mark.parametrize("n", [0, 14])
def test_a_spooled_arrow_file_holds_the_table_of_the_recording(
    tmp_path: Path, n: int, ext: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pa = pytest.importorskip("pyarrow")
    out_file = _spooled(tmp_path, ext, n, monkeypatch)
    if ext == ".parquet":
        table = pytest.importorskip("pyarrow.parquet").read_table(out_file)
    else:
        table = pa.ipc.open_file(out_file).read_all()
    expected = _spool.arrow_table(*_columns(n))
    assert table.schema == expected.schema and table.equals(expected)
    assert os.listdir(tmp_path) == [f"rec{ext}"]


def test_record_on_a_terminal_shows_progress_and_a_summary(
    make_path: Callable[[], str], tmp_path: Path
) -> None:
    out_file = str(tmp_path / "rec.npy")
    with seqshm.create(make_path(), np.int64, 2, nr_slots=64) as w, writing(w):
        code, text = _run_in_terminal(["record", w.path, "-o", out_file, "--count", "50"])
    assert code == 0, text
    assert "recording " in text and re.search(r"50 writes \([\d,]+ lost\) written to ", text)
    assert len(np.load(out_file)) == 50


# -- a recording that does not end: kill -9, a power cut (issue 16, recipe 5) -------------------

FORMATS = [".npy", ".npz", ".parquet", ".arrow"]


def _needs(ext: str) -> None:
    if ext in (".parquet", ".arrow"):
        pytest.importorskip("pyarrow")


def _assert_a_prefix_of_the_writes(a: np.ndarray) -> None:
    """Rows of a recording of writing(): seq increasing by 1 + lost, each row's data the
    write its seq names (no garbage, no row twice)."""
    seq = a["seq"].astype(np.int64)
    assert len(a) >= 1
    assert np.all(np.diff(seq) == 1 + a["lost"][1:].astype(np.int64))
    assert np.array_equal(a["data"][:, 0], seq) and np.array_equal(a["data"][:, -1], seq)
    assert np.all(a["timestamp_ns"] > 0)


def _as_npy(out_file: str, ext: str) -> np.ndarray:
    """A recording in any format as the structured array of a .npy recording."""
    if ext == ".npy":
        return np.load(out_file)
    if ext == ".npz":
        with np.load(out_file) as z:
            cols = [z[c] for c in _spool.COLUMNS]
    else:
        pa = pytest.importorskip("pyarrow")
        if ext == ".parquet":
            table = pytest.importorskip("pyarrow.parquet").read_table(out_file)
        else:
            table = pa.ipc.open_file(out_file).read_all()
        cols = [table.column(c).to_numpy() for c in _spool.COLUMNS[:3]]
        cols.append(np.array(table.column("data").to_pylist()))
    out = np.empty(len(cols[0]), _spool.row_dtype(cols[3].dtype, cols[3].shape[1:]))
    for name, col in zip(_spool.COLUMNS, cols, strict=True):
        out[name] = col
    return out


@pytest.mark.parametrize("ext", FORMATS)
def test_a_recording_killed_outright_keeps_what_reached_the_disk(
    make_path: Callable[[], str], tmp_path: Path, ext: str
) -> None:
    """The issue's recipe: `seqshm record CH -o DIR/x.EXT` on a channel written ~2000 times a
    second, kill -9 after 3 s. What reached the disk is a .npy named .x.EXT.recording beside
    the output, a prefix of the writes; `seqshm record --recover DIR/x.EXT` writes x.EXT from
    it (the rows it holds, nothing else) and removes it. Before: nothing was left."""
    _needs(ext)
    out_dir = tmp_path / "d"
    out_dir.mkdir()
    out_file = str(out_dir / f"x{ext}")
    spool = out_dir / f".x{ext}.recording"
    with seqshm.create(make_path(), np.float64, (8,), nr_slots=64) as w, writing(w):
        p = start("record", w.path, "-o", out_file)
        wait_until(lambda: has_mapped(p.pid, w.path))
        time.sleep(1)
        written_2s_before = w.seq
        time.sleep(2)
        p.kill()
        p.communicate(timeout=20)
    assert sorted(os.listdir(out_dir)) == [spool.name]
    kept = np.load(spool)
    _assert_a_prefix_of_the_writes(kept)
    # at most the batches of the last BATCH_SECONDS (in memory, being written) are lost: a
    # write 2 s old is on disk (a bound for a hang, with room for a loaded machine)
    assert kept["seq"][-1] >= written_2s_before > 0
    out = run("record", "--recover", out_file)
    assert out.returncode == 0, out.stderr
    assert out.stderr == f"{len(kept):,} writes recovered into {out_file}\n"
    assert sorted(os.listdir(out_dir)) == [f"x{ext}"]
    recovered = _as_npy(out_file, ext)
    assert np.array_equal(recovered, kept)


def test_a_spool_is_a_valid_npy_after_every_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While recording, np.load() of the spool gives every row of the batches handed to the
    disk: each batch is on disk and claimed by the header before the next is taken."""
    row = _spool.row_dtype(REC, (2,)).itemsize
    monkeypatch.setattr(_spool, "BATCH_BYTES", 3 * row)
    samples = _samples(10)
    with _destination.Destination(str(tmp_path / "r.npz")) as dest:
        spool = _spool.Spool.create(dest, REC, (2,))
        try:
            assert len(np.load(tmp_path / ".r.npz.recording")) == 0
            for k, s in enumerate(samples, 1):
                spool.append(s)
                spool._wait()  # the batch handed over, if any, is on disk
                on_disk = np.load(tmp_path / ".r.npz.recording")
                assert len(on_disk) == k - k % 3 == spool.count
                assert on_disk["seq"].tolist() == [s.seq for s in samples[: len(on_disk)]]
        finally:
            spool.close()
    assert os.listdir(tmp_path) == [".r.npz.recording"]  # not saved: kept


def test_a_batch_is_on_disk_before_the_header_claims_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a power cut needs: every pwrite of the header's count comes after an
    fdatasync() of the rows it claims, and is itself followed by one; so the disk never holds
    a header that claims rows it does not hold."""
    row = _spool.row_dtype(REC, (2,)).itemsize
    monkeypatch.setattr(_spool, "BATCH_BYTES", 3 * row)
    calls: list[tuple[str, int, int]] = []  # (what, offset, end or rows claimed)
    real_pwrite, real_sync = os.pwrite, os.fdatasync
    header_len = len(_spool.npy_header(_spool.row_dtype(REC, (2,)), (0,)))

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        n = real_pwrite(fd, data, offset)
        if offset == 0:
            claimed = re.search(rb"'shape': \((\d+),", bytes(data))
            assert claimed is not None and n == len(data) == header_len
            calls.append(("header", 0, int(claimed[1])))
        else:
            calls.append(("rows", offset, offset + n))
        return n

    def fdatasync(fd: int) -> None:
        real_sync(fd)
        calls.append(("sync", 0, 0))

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    with _destination.Destination(str(tmp_path / "r.npy")) as dest:
        spool = _spool.Spool.create(dest, REC, (2,))
        for s in _samples(10):
            spool.append(s)
        spool.save(".npy")
    written = durable = header_len  # the end of the rows written, and of those synced
    claims = []
    for k, (what, _offset, end) in enumerate(calls):
        if what == "sync":
            durable = written
        elif what == "rows":
            written = max(written, end)
        else:
            assert header_len + end * row <= durable, calls[: k + 1]
            assert calls[k + 1][0] == "sync", calls  # and the claim itself made durable
            claims.append(end)
    assert claims[0] == 0 and claims[-1] == 10 and len(claims) >= 5, claims
    assert len(np.load(tmp_path / "r.npy")) == 10


_KILLED_MID_CONVERSION = """
import os, signal, sys
import numpy as np
from seqshm.cli import _destination, _spool
from seqshm._types import Sample

chunks = _spool.Spool._chunks

def dying(self):
    for k, chunk in enumerate(chunks(self)):
        if k == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        yield chunk

_spool.Spool._chunks = dying
_spool.CHUNK_BYTES = 1000 * _spool.row_dtype(np.dtype(np.int64), (2,)).itemsize
with _destination.Destination(sys.argv[1]) as dest:
    spool = _spool.Spool.create(dest, np.dtype(np.int64), (2,))
    for k in range(1, 5001):
        spool.append(Sample(np.array([k, k]), k, 1000 + k, 0))
    spool.save(os.path.splitext(sys.argv[1])[1])
"""


@pytest.mark.parametrize("ext", [".npz", ".parquet", ".arrow"])
def test_sigkill_during_the_final_conversion_leaves_the_spool(tmp_path: Path, ext: str) -> None:
    """Killed while it writes the output from the spool: no output, no temporary, and the
    spool whole (all 5000 writes, its count final), which --recover then saves."""
    _needs(ext)
    out_file = str(tmp_path / f"x{ext}")
    p = subprocess.run([sys.executable, "-c", _KILLED_MID_CONVERSION, out_file], cwd="/",
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert os.listdir(tmp_path) == [f".x{ext}.recording"]
    kept = np.load(tmp_path / f".x{ext}.recording")
    assert kept["seq"].tolist() == list(range(1, 5001))
    out = run("record", "--recover", str(tmp_path / f".x{ext}.recording"))  # the spool named
    assert out.returncode == 0, out.stderr
    assert os.listdir(tmp_path) == [f"x{ext}"]
    assert np.array_equal(_as_npy(out_file, ext), kept)


def test_a_second_recording_to_the_same_file_is_refused_and_a_left_spool_kept(
    make_path: Callable[[], str], tmp_path: Path
) -> None:
    """While one recording runs, another to its file is refused (it would take its spool);
    once it is killed, a new one is refused too until what it left is recovered or removed:
    no recording throws another's writes away."""
    (tmp_path / "o").mkdir()
    out_file = str(tmp_path / "o" / "x.npy")
    with seqshm.create(make_path(), np.float64, (8,), nr_slots=64) as w, writing(w):
        p = start("record", w.path, "-o", out_file)
        wait_until(lambda: has_mapped(p.pid, w.path))
        busy = run("record", w.path, "-o", out_file, "--count", "1")
        p.kill()
        p.communicate(timeout=20)
        left = run("record", w.path, "-o", out_file, "--count", "1")
        assert run("record", "--recover", out_file).returncode == 0
        again = run("record", w.path, "-o", out_file, "--count", "3")
    assert busy.returncode == 2 and "another seqshm record is recording to it" in busy.stderr
    assert left.returncode == 2 and f"record --recover {out_file}" in left.stderr
    assert again.returncode == 0, again.stderr
    assert len(np.load(out_file)) == 3 and os.listdir(tmp_path / "o") == ["x.npy"]


@pytest.mark.parametrize("what", ["missing", "not a recording"])
def test_recover_says_when_there_is_nothing_to_recover(tmp_path: Path, what: str) -> None:
    if what == "not a recording":
        with open(tmp_path / ".x.npy.recording", "wb") as f:
            np.save(f, np.arange(3))
    out = run("record", "--recover", str(tmp_path / "x.npy"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert str(tmp_path / ".x.npy.recording") in out.stderr
    assert ("is not there" if what == "missing" else "is not a recording") in out.stderr


@pytest.mark.parametrize("ext", [".npy", ".npz"])
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o000])
def test_the_output_honours_the_umask(
    make_path: Callable[[], str], tmp_path: Path, ext: str, umask: int
) -> None:
    """A recording is a new file like any other: mode 0666 less the umask (the spool, and the
    output it becomes or is converted into)."""
    out_file = str(tmp_path / f"x{ext}")
    with seqshm.create(make_path(), np.float64, (8,), nr_slots=64) as w, writing(w):
        out = subprocess.run(
            [sys.executable, "-m", "seqshm", "record", w.path, "-o", out_file, "--count", "5"],
            capture_output=True, text=True, cwd="/", timeout=60,
            preexec_fn=lambda: os.umask(umask))
    assert out.returncode == 0, out.stderr
    assert stat.S_IMODE(os.stat(out_file).st_mode) == 0o666 & ~umask


# -- links planted at the output's names (issue 16, recipe 2 for record -o) -----------------------


def _plant(link: Path, target: Path) -> str:
    """``link`` -> ``target`` planted by another user (nobody, when this is root: the
    suite's other_user fixture is not there yet), in a sticky world-writable directory as
    /tmp is; returns who planted it."""
    if os.geteuid() == 0 and shutil.which("runuser"):
        subprocess.run(["runuser", "-u", "nobody", "--", "ln", "-s", str(target), str(link)],
                       check=True, timeout=30)
        return "nobody"
    os.symlink(target, link)  # not root: planted by this user, which shows the same
    return "self"


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A sticky, world-writable directory (as /tmp is) beside a 'precious' file of this
    user's, both where another user can reach them (not under pytest's private tmp_path)."""
    base = Path(tempfile.mkdtemp(prefix="seqshm-test-shared-"))
    try:
        os.chmod(base, 0o755)
        d = base / "shared"
        d.mkdir()
        os.chmod(d, 0o1777)
        (base / "precious").write_bytes(b"precious\n")
        yield d
    finally:
        shutil.rmtree(base)


@pytest.mark.parametrize("name", ["x.npy", ".x.npy.recording"])
def test_record_refuses_a_link_planted_at_the_output_or_its_spool(
    make_path: Callable[[], str], shared_dir: Path, name: str
) -> None:
    """A link at -o, or at the spool's name, pointing at another file: refused before
    recording, naming it; the file it points at is untouched, the link too."""
    precious = shared_dir.parent / "precious"
    _plant(shared_dir / name, precious)
    with seqshm.create(make_path(), np.float64, (8,), nr_slots=64) as w, writing(w):
        out = run("record", w.path, "-o", str(shared_dir / "x.npy"), "--count", "3")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert str(shared_dir / name) in out.stderr or str(shared_dir / "x.npy") in out.stderr
    assert precious.read_bytes() == b"precious\n"
    assert os.path.islink(shared_dir / name)


@pytest.mark.parametrize("ext", [".npy", ".npz"])
def test_a_link_planted_during_the_recording_is_replaced_not_followed(
    make_path: Callable[[], str], shared_dir: Path, ext: str
) -> None:
    """A link planted at -o once the recording has started (after every check) is replaced
    by the recording when it ends (renameat), never written through."""
    precious = shared_dir.parent / "precious"
    out_file = shared_dir / f"x{ext}"
    with seqshm.create(make_path(), np.float64, (8,), nr_slots=64) as w, writing(w):
        p = start("record", w.path, "-o", str(out_file))
        wait_until(lambda: (shared_dir / f".x{ext}.recording").exists())
        wait_until(lambda: w.seq > 100)
        _plant(out_file, precious)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=20)
    assert p.returncode == 130, err
    assert precious.read_bytes() == b"precious\n"
    assert not os.path.islink(out_file) and stat.S_ISREG(os.lstat(out_file).st_mode)
    _assert_a_prefix_of_the_writes(_as_npy(str(out_file), ext))


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser"),
                    reason="needs root, to plant the file as another user (nobody)")
def test_another_users_file_at_the_spool_name_is_refused_not_taken(
    make_path: Callable[[], str], shared_dir: Path
) -> None:
    subprocess.run(["runuser", "-u", "nobody", "--", "touch", str(shared_dir / ".x.npy.recording")],
                   check=True, timeout=30)
    with seqshm.create(make_path(), np.float64, (8,), nr_slots=64) as w, writing(w):
        out = run("record", w.path, "-o", str(shared_dir / "x.npy"), "--count", "3")
    assert out.returncode == 2 and "another user's file" in out.stderr, out.stderr
    assert os.path.getsize(shared_dir / ".x.npy.recording") == 0
    assert not os.path.exists(shared_dir / "x.npy")
