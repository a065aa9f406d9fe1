"""The files ``seqshm record`` writes: recorded writes (seq, timestamp_ns, lost, data), spooled
as they come to a named .npy beside the output whose header counts only rows already on disk
(memory stays bounded; a recording killed at any point, by kill -9, the OOM killer or a power
cut, leaves a file np.load() reads, at most the last batch short), then written as the file
asked for. Every file is made relative to the output's directory, opened once by the kernel:
no path is resolved here, and no link at the output's or the spool's name is followed. Pure:
no terminal, no channel."""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import os
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy_format

from seqshm._types import Sample
from seqshm.cli._destination import Destination, DestinationUnwritable
from seqshm.cli._format import shown

#: Extensions ``seqshm record -o`` writes, and whether they need pyarrow.
FORMATS = {".npy": False, ".npz": False, ".parquet": True, ".arrow": True}


class FormatUnavailable(ValueError):
    """An output file ``record`` cannot write (unknown extension, pyarrow missing)."""


def output_format(path: str) -> str:
    """The extension of ``path`` if ``record`` can write it, else FormatUnavailable."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise FormatUnavailable(
            f"{shown(path)}: cannot tell what to write from the extension {ext or '(none)'!r}: "
            f"use one of {', '.join(FORMATS)}"
        )
    if FORMATS[ext]:
        try:
            importlib.import_module("pyarrow")
        except ImportError:
            pass
        else:
            return ext
        raise FormatUnavailable(
            f"{shown(path)}: writing {ext} files needs pyarrow, which is not installed: "
            "pip install pyarrow (or record to .npy or .npz)"
        )
    return ext


def check_dtype(ext: str, dtype: np.dtype[Any]) -> None:
    """FormatUnavailable if ``ext`` cannot hold ``dtype`` (Arrow has no complex numbers)."""
    fields = dtype.fields or {"": (dtype, 0)}
    kinds = {spec[0].base.kind for spec in fields.values()}
    if FORMATS[ext] and "c" in kinds:
        raise FormatUnavailable(f"{ext} cannot hold complex numbers: record to .npy or .npz")


def check_shape(dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
    """FormatUnavailable if a write of ``shape`` cannot be a row of a recording (row_dtype):
    NumPy takes a record field's dimensions as C ints, so one of 2^31 or more is refused."""
    try:
        row_dtype(dtype, shape)
    except ValueError as e:
        raise FormatUnavailable(
            f"a write of shape {shape} cannot be a row of a recording (NumPy: {e}): read it "
            "from Python (seqshm.open) and save the part you need") from None


def _arrow_column(values: np.ndarray) -> Any:
    """A column of one value per write: a scalar, or nested fixed-size lists for an array."""
    pa = importlib.import_module("pyarrow")

    arr = pa.array(values.reshape(-1))
    for n in reversed(values.shape[1:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, n)
    return arr


def arrow_table(
    seq: np.ndarray, timestamp_ns: np.ndarray, lost: np.ndarray, data: np.ndarray
) -> Any:
    """The recording as a pyarrow Table: seq, timestamp_ns, lost, and data (a record's
    fields as data.NAME columns)."""
    pa = importlib.import_module("pyarrow")

    cols = {"seq": pa.array(seq), "timestamp_ns": pa.array(timestamp_ns), "lost": pa.array(lost)}
    if data.dtype.names:
        for name in data.dtype.names:
            cols[f"data.{name}"] = _arrow_column(np.ascontiguousarray(data[name]))
    else:
        cols["data"] = _arrow_column(data)
    return pa.table(cols)



#: A spool keeps at most about this many bytes of rows in memory before writing them out: a
#: write costs one row copy, and the disk sees few large writes.
BATCH_BYTES = 4 << 20
#: ... and its rows at most this long: what a recording killed outright loses at most.
BATCH_SECONDS = 0.5
#: The final file is written from the spool this many bytes of rows at a time.
CHUNK_BYTES = 4 << 20
#: The columns of a recording, in the order of its rows.
COLUMNS = ("seq", "timestamp_ns", "lost", "data")


class RecordingStopped(OSError):
    """The spool could not take more writes (a full disk, a quota, a file size limit, an I/O
    error): the recording stops; the writes already on disk are still saved."""


def row_dtype(dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.dtype[Any]:
    """One recorded write: fields seq, timestamp_ns, lost (uint64) and data (``dtype`` of
    ``shape``); the dtype of a ``.npy`` recording."""
    return np.dtype(
        [
            ("seq", np.uint64),
            ("timestamp_ns", np.uint64),
            ("lost", np.uint64),
            ("data", dtype, shape),
        ]
    )


def npy_header(dtype: np.dtype[Any], shape: tuple[int, ...]) -> bytes:
    """The .npy header np.save writes for a C-ordered array of ``dtype`` and ``shape``: format
    1.0, or 2.0 when the header does not fit (a very wide record). NumPy leaves room in it for
    the first axis to grow to 21 digits, so its length does not depend on ``shape[0]``."""
    d = {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    out = io.BytesIO()
    try:
        npy_format.write_array_header_1_0(out, d)
    except ValueError:
        out = io.BytesIO()
        npy_format.write_array_header_2_0(out, d)
    return out.getvalue()


def _byte_view(a: np.ndarray) -> np.ndarray:
    """The bytes of ``a`` in C order, as uint8 (a copy only if ``a`` is not contiguous)."""
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


def _pwrite_all(fd: int, buf: memoryview, offset: int) -> int:
    """pwrite all of ``buf`` at ``offset``; on an OSError, its ``written`` attribute says
    how many bytes made it."""
    done = 0
    try:
        while done < len(buf):
            done += os.pwrite(fd, buf[done:], offset + done)
    except OSError as e:
        e.written = done  # type: ignore[attr-defined]
        raise
    return done


def _read_spool_header(fd: int) -> tuple[np.dtype[Any], int, int]:
    """(row dtype, header length, rows it claims) of a spool; ValueError if it is not one."""
    head = os.pread(fd, 16, 0)
    f = io.BytesIO(head)
    version = npy_format.read_magic(f)  # ValueError if not a .npy
    length = len(head) + (int.from_bytes(head[8:10], "little") if version == (1, 0)
                          else int.from_bytes(head[8:12], "little"))
    f = io.BytesIO(os.pread(fd, length, 0))
    npy_format.read_magic(f)
    read = (npy_format.read_array_header_1_0 if version == (1, 0)
            else npy_format.read_array_header_2_0)
    shape, fortran, dtype = read(f)
    if (fortran or len(shape) != 1 or dtype.names != COLUMNS
            or any(dtype.fields[c][0] != np.uint64 for c in COLUMNS[:3])):  # type: ignore[index]
        raise ValueError("not a recording: its rows are not (seq, timestamp_ns, lost, data)")
    return dtype, f.tell(), int(shape[0])


class Spool:
    """The writes of a recording on disk as they arrive: a valid ``.npy`` file named
    ``.FILE.recording`` beside the output FILE, rows of :func:`row_dtype` after a header whose
    count is rewritten in place (it keeps its length) each time a batch is on disk.

    ``append()`` copies a write into the batch in memory (at most BATCH_BYTES, and
    BATCH_SECONDS old) and hands a full batch to a thread of its own, which writes it,
    fdatasync()s it, then rewrites the header's count and fdatasync()s that: the header never
    claims a row that is not on disk, so the spool is a consistent .npy however the process
    ends (kill -9, the OOM killer, a power cut), short of at most the batch in memory and the
    one being written. Meanwhile the next batch fills (two buffers: memory stays bounded, and
    the recording does not wait on the disk unless the disk is slower than the channel).
    ``append()`` raises RecordingStopped when the disk refuses a batch (``stopped`` keeps that
    error), keeping every whole row already written.

    ``save()`` makes the output: a ``.npy`` is the spool, renamed into place; other formats
    are written from it and renamed into place, and only then is the spool removed. Until
    then, and if saving fails, the spool keeps the writes (``record --recover`` saves them).
    """

    def __init__(self, dest: Destination, row: np.dtype[Any], fd: int, header_len: int,
                 count: int) -> None:
        """Use :meth:`create` or :meth:`recover`."""
        self.dest, self.path = dest, dest.path
        self.row = row
        self.count = count  # rows on disk, which the header claims
        self.received = count  # rows given to append(), and those a recovered spool has
        self.stopped: RecordingStopped | None = None
        self.kept: str | None = None  # where save() kept the rows when it could not convert
        self._fd = fd
        self._header_len = header_len
        self._closed = False
        rows = max(1, BATCH_BYTES // max(1, row.itemsize))
        # two batches: one filling, one being written; zeros() maps pages only as used
        self._bufs = [np.zeros(rows * row.itemsize, np.uint8) for _ in range(2)]
        # field views made once: filling a row is then four item assignments
        self._cols_of = [[b.view(row)[name] for name in COLUMNS] for b in self._bufs]
        self._rows = rows
        self._cur = 0
        self._cols = self._cols_of[0]
        self._filled = 0
        self._batch_start = 0.0
        self._taken = count  # rows (numbered as received) handed to the disk so far
        self._io: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    @classmethod
    def create(cls, dest: Destination, dtype: np.dtype[Any], shape: tuple[int, ...]) -> Spool:
        """A new, empty spool beside ``dest`` (DestinationUnwritable if it cannot be made,
        RecordingStopped if its header cannot be written)."""
        row = row_dtype(dtype, shape)
        header = npy_header(row, (0,))
        fd = dest.create_spool()
        try:
            _pwrite_all(fd, memoryview(header), 0)
            os.fdatasync(fd)
            os.fsync(dest.dir_fd)  # its name too survives a power cut
        except OSError as e:
            os.close(fd)
            dest.unlink(dest.spool)
            raise RecordingStopped(e.errno, e.strerror, dest.path) from e
        return cls(dest, row, fd, len(header), 0)

    @classmethod
    def recover(cls, dest: Destination) -> Spool:
        """The spool a recording to ``dest`` left (killed, or its output could not be made):
        the rows its header claims (fewer if the file is shorter: a power cut between a
        header's write and its sync). DestinationUnwritable if there is none or it is not a
        recording's."""
        fd = dest.open_spool()
        try:
            row, header_len, count = _read_spool_header(fd)
            size = os.fstat(fd).st_size
        except (ValueError, OSError) as e:
            os.close(fd)
            raise DestinationUnwritable(
                f"{dest.shown_spool()} is not a recording seqshm record left "
                f"({e.strerror if isinstance(e, OSError) else e}): np.load() it to see "
                "what it holds") from None
        count = min(count, max(0, size - header_len) // row.itemsize)
        return cls(dest, row, fd, header_len, count)

    @property
    def data_dtype(self) -> np.dtype[Any]:
        """The dtype of one write's data (with its shape)."""
        return self.row.fields["data"][0]  # type: ignore[index]

    @property
    def _end(self) -> int:
        return self._header_len + self.count * self.row.itemsize

    # -- recording ---------------------------------------------------------------------------

    def append(self, sample: Sample) -> None:
        """Add one write; RecordingStopped if the spool cannot take it (nor more)."""
        if self.stopped is not None:
            raise self.stopped
        i = self._filled
        if i == 0:
            self._batch_start = time.monotonic()
        seq, timestamp_ns, lost, data = self._cols
        seq[i], timestamp_ns[i], lost[i] = sample.seq, sample.timestamp_ns, sample.lost
        data[i] = sample.data
        self._filled = i + 1
        self.received += 1
        if self._filled == self._rows or time.monotonic() - self._batch_start >= BATCH_SECONDS:
            self._submit()

    def tick(self) -> None:
        """Hand the batch to the disk if it is BATCH_SECONDS old (call when writes pause)."""
        if self._filled and time.monotonic() - self._batch_start >= BATCH_SECONDS:
            self._submit()

    def flush(self) -> None:
        """Put every row given so far on disk, and wait for it (RecordingStopped if the disk
        refuses them)."""
        self._submit()
        self._wait()

    def _submit(self) -> None:
        """Hand the batch to the writing thread once the batch before it is on disk. An
        interrupt (Ctrl-C) anywhere in here may have the batch handed over twice, never
        lost: the writing thread skips rows it has already taken."""
        if self.stopped is not None:
            raise self.stopped
        n = self._filled
        if not n:
            return
        self._wait()
        if self._io is None:
            self._io = ThreadPoolExecutor(1, thread_name_prefix="seqshm-record")
        view = self._bufs[self._cur].data[: n * self.row.itemsize]
        self._pending = self._io.submit(self._write_batch, view, n, self.received - n)
        self._cur ^= 1
        self._cols = self._cols_of[self._cur]
        self._filled = 0

    def _wait(self) -> None:
        """Wait for the batch being written (its RecordingStopped, if the disk refused it)."""
        pending = self._pending
        if pending is None:
            return
        try:
            pending.result()
        finally:
            if pending.done():  # not on an interrupt: the batch is still being written
                self._pending = None

    def _write_batch(self, view: memoryview, n: int, first: int) -> None:
        """(In the writing thread, one batch at a time.) Write the ``n`` rows of ``view``,
        received as rows ``first`` on, after those on disk (less any already taken), make
        them durable, then have the header claim them."""
        skip = max(0, self._taken - first)
        if skip >= n:
            return
        view, n = view[skip * self.row.itemsize :], n - skip
        self._taken = first + skip + n
        try:
            _pwrite_all(self._fd, view, self._end)
            os.fdatasync(self._fd)  # the rows are on disk before the header says so
        except OSError as e:
            self._stop(e, getattr(e, "written", 0) // self.row.itemsize)
        self.count += n
        try:
            self._claim()
        except OSError as e:
            self._stop(e, 0)

    def _claim(self) -> None:
        """Rewrite the header's count in place (same length) and make it durable."""
        header = npy_header(self.row, (self.count,))
        if len(header) != self._header_len:  # NumPy >= 1.23 leaves room: cannot happen
            raise OSError(errno.EINVAL, "the .npy header of the recording would move")
        _pwrite_all(self._fd, memoryview(header), 0)
        os.fdatasync(self._fd)

    def _stop(self, e: OSError, rows: int) -> None:
        """The disk refused a batch: keep the ``rows`` of it that made it whole (if they can
        be made durable), cut a partial row off, and stop with RecordingStopped naming the
        destination."""
        with contextlib.suppress(OSError):
            if rows:
                os.fdatasync(self._fd)
                self.count += rows
            os.ftruncate(self._fd, self._end)  # a partial row is no row
            self._claim()
        what = {
            errno.ENOSPC: "the disk is full",
            errno.EDQUOT: "the disk quota is used up",
            errno.EFBIG: "the file is as large as it may be",
        }.get(e.errno or 0, f"cannot write it ({e.strerror})")
        self.stopped = RecordingStopped(e.errno, what, self.path)
        raise self.stopped from e

    # -- saving ------------------------------------------------------------------------------

    def save(self, ext: str) -> None:
        """Write the recording to the destination as ``ext`` (every write that reached the
        spool; the batch in memory is written out first, as far as the disk takes it), and
        close the spool. A .npy is the spool itself, its count final, renamed over the
        destination; other formats stream from the spool, CHUNK_BYTES at a time, into a new
        file renamed over the destination, and the spool is removed only then. If that fails
        (a full disk, a signal), the rows are kept as a .npy beside the destination, and the
        OSError raised names the destination and where they are."""
        try:
            with contextlib.suppress(RecordingStopped):  # kept in self.stopped: said later
                self.flush()
            self._shutdown()
            try:
                self._finish()
            except OSError as e:
                raise OSError(e.errno, f"cannot write the recording: {e.strerror}; "
                              f"{self._where()}", self.path) from e
            if ext == ".npy":
                try:
                    self.dest.replace(self.dest.spool)
                except OSError as e:
                    raise OSError(e.errno, f"cannot put the recording in place: {e.strerror}; "
                                  f"{self._where()}", self.path) from e
                return
            try:
                self._convert(ext)
            except BaseException as e:
                self.kept = self._keep_as_npy()
                if not isinstance(e, OSError):
                    raise
                raise OSError(e.errno, f"cannot write the recording: {e.strerror}; "
                              f"{self._where()}", self.path) from e
            self.dest.unlink(self.dest.spool)
        finally:
            self.close()

    def _where(self) -> str:
        kept = shown(self.kept) if self.kept else self.dest.shown_spool()
        return f"the {self.count:,} writes recorded are kept in {kept}"

    def close(self) -> None:
        """Let go of the spool (and its lock); what save() did not move stays where it is."""
        if self._closed:
            return
        self._closed = True
        self._shutdown()
        os.close(self._fd)

    def _shutdown(self) -> None:
        if self._io is not None:
            self._io.shutdown(wait=True)
            self._io = None
            self._pending = None

    def _finish(self) -> None:
        """The spool as a complete .npy: its header's final count, nothing after its rows
        (rows written after a failed batch are not data), all of it durable."""
        self._claim()
        os.ftruncate(self._fd, self._end)
        os.fdatasync(self._fd)

    def _keep_as_npy(self) -> str | None:
        """After a failed save to another format: the spool given a name that says what it is,
        ``FILE.npy`` (or ``FILE.1.npy``...) beside the destination, never over a file (a hard
        link, then the spool's name removed). Its path, or None if it keeps the spool's."""
        for k in range(100):
            name = f"{self.dest.base}.npy" if k == 0 else f"{self.dest.base}.{k}.npy"
            try:
                os.link(self.dest.spool, name, src_dir_fd=self.dest.dir_fd,
                        dst_dir_fd=self.dest.dir_fd, follow_symlinks=False)
            except FileExistsError:
                continue
            except OSError:
                return None
            self.dest.unlink(self.dest.spool)
            with contextlib.suppress(OSError):
                os.fsync(self.dest.dir_fd)
            return os.path.join(os.path.dirname(self.path), name)
        return None

    def _chunks(self) -> Iterator[np.ndarray]:
        """The rows on disk, CHUNK_BYTES at a time (each chunk is valid until the next)."""
        size = self.row.itemsize
        rows = max(1, CHUNK_BYTES // max(1, size))
        buf = np.empty(min(rows, max(1, self.count)) * size, np.uint8)
        for start in range(0, self.count, rows):
            n = min(rows, self.count - start)
            view, offset = buf.data[: n * size], self._header_len + start * size
            got = 0
            while got < len(view):
                k = os.preadv(self._fd, [view[got:]], offset + got)
                if k == 0:
                    raise OSError(errno.EIO, "the recording's spool file shrank")
                got += k
            yield buf[: n * size].view(self.row)

    def _convert(self, ext: str) -> None:
        """Write the output as ``ext`` into a new file, durable, then rename it into place."""
        new = self.dest.new_file()
        try:
            with open(new.fd, "wb", closefd=False) as f:
                if ext == ".npz":
                    self._write_npz(f)
                elif ext == ".parquet":
                    self._write_arrow(f, parquet=True)
                else:
                    self._write_arrow(f, parquet=False)
            os.fsync(new.fd)
            self.dest.put(new)
        finally:
            os.close(new.fd)
            new.discard_name()

    def _write_npz(self, f: IO[bytes]) -> None:
        """As np.savez(seq=, timestamp_ns=, lost=, data=): a zip of stored (uncompressed)
        .npy members, each streamed in."""
        with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
            for name in COLUMNS:
                field = self.row.fields[name][0]  # type: ignore[index]
                with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                    member.write(npy_header(field.base, (self.count, *field.shape)))
                    for chunk in self._chunks():
                        member.write(_byte_view(chunk[name]).data)

    def _write_arrow(self, f: IO[bytes], parquet: bool) -> None:
        """As write_table / write_feather of arrow_table(): one record batch (a row group)
        per chunk; Arrow IPC compressed with lz4 as write_feather does when it can."""
        pa = importlib.import_module("pyarrow")
        writer: Any = None
        try:
            for chunk in self._chunks() if self.count else [np.empty(0, self.row)]:
                table = arrow_table(*(np.ascontiguousarray(chunk[name]) for name in COLUMNS))
                if writer is None:
                    if parquet:
                        pq = importlib.import_module("pyarrow.parquet")
                        writer = pq.ParquetWriter(f, table.schema)
                    else:
                        codec = "lz4" if pa.Codec.is_available("lz4_frame") else None
                        writer = pa.ipc.new_file(
                            f, table.schema, options=pa.ipc.IpcWriteOptions(compression=codec)
                        )
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
