"""``seqshm record`` over long recordings: memory that does not grow with the recording, a full
disk, signals, nothing left behind; and the spool it writes through, against NumPy's and
pyarrow's own writers."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
from test_cli import _run_in_terminal, has_mapped, start, wait_until
from test_cli import writing as cli_writing

import seqshm
from seqshm import _cli_record
from seqshm._types import Sample

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


def _o_tmpfile_works(directory: Path) -> bool:
    try:
        os.close(os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600))
    except (AttributeError, OSError):
        return False
    return True


def test_record_leaves_no_file_while_recording_nor_after_kill_9(
    make_path: Callable[[], str], tmp_path: Path
) -> None:
    """The spool has no name until it is saved (O_TMPFILE), so a recording killed outright
    leaves nothing behind."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if not _o_tmpfile_works(out_dir):
        pytest.skip("the filesystem has no O_TMPFILE")
    with seqshm.create(make_path(), np.float64, (4096,), nr_slots=16) as w, writing(w):
        p = start("record", w.path, "-o", str(out_dir / "rec.npy"))
        wait_until(lambda: has_mapped(p.pid, w.path))
        wait_until(lambda: w.seq > 2000)  # more than a batch (4 MiB): the spool has data
        assert os.listdir(out_dir) == []
        p.kill()
        p.communicate(timeout=20)
    assert os.listdir(out_dir) == []


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
    row = _cli_record.row_dtype(REC, (2,)).itemsize
    monkeypatch.setattr(_cli_record, "BATCH_BYTES", 3 * row)
    monkeypatch.setattr(_cli_record, "CHUNK_BYTES", 5 * row)
    out_file = str(tmp_path / f"rec{ext}")
    spool = _cli_record.Spool(out_file, REC, (2,))
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
    expected = np.empty(n, _cli_record.row_dtype(REC, (2,)))
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
    expected = _cli_record.arrow_table(*_columns(n))
    assert table.schema == expected.schema and table.equals(expected)
    assert os.listdir(tmp_path) == [f"rec{ext}"]


def test_a_spool_without_o_tmpfile_is_a_named_temporary_removed_on_every_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(os, "O_TMPFILE", raising=False)
    spool = _cli_record.Spool(str(tmp_path / "a.npy"), REC, (2,))
    [temporary] = os.listdir(tmp_path)
    assert temporary.startswith(".a.npy.") and temporary.endswith(".tmp")
    spool.append(_samples(1)[0])
    spool.close()  # given up (an error before saving)
    assert os.listdir(tmp_path) == []
    spool = _cli_record.Spool(str(tmp_path / "b.npy"), REC, (2,))
    spool.append(_samples(1)[0])
    spool.save(".npy")
    assert os.listdir(tmp_path) == ["b.npy"] and len(np.load(tmp_path / "b.npy")) == 1


def test_record_on_a_terminal_shows_progress_and_a_summary(
    make_path: Callable[[], str], tmp_path: Path
) -> None:
    out_file = str(tmp_path / "rec.npy")
    with seqshm.create(make_path(), np.int64, 2, nr_slots=64) as w, writing(w):
        code, text = _run_in_terminal(["record", w.path, "-o", out_file, "--count", "50"])
    assert code == 0, text
    assert "recording " in text and re.search(r"50 writes \([\d,]+ lost\) written to ", text)
    assert len(np.load(out_file)) == 50
