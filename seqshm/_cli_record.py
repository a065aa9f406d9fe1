"""The files ``seqshm record`` writes: recorded writes (seq, timestamp_ns, lost, data), spooled
to disk as they come (memory stays bounded however long the recording), then written as a file
NumPy or pandas opens directly. Pure: no terminal, no channel."""

from __future__ import annotations

import errno
import importlib
import io
import os
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np
from numpy.lib import format as npy_format

from seqshm._cli_format import shown
from seqshm._types import Sample

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


class DestinationUnwritable(ValueError):
    """``record -o FILE`` cannot create FILE: said before recording starts, not after."""


def check_destination(path: str) -> None:
    """Raise DestinationUnwritable unless a file can be created at ``path``: its directory
    exists and takes a new file (tried for real, with a temporary name of the kind save()
    uses: access() answers yes to root on a read-only mount), and ``path`` is nothing but a
    regular file, if anything. A symlink is written through (save() writes its target)."""
    full = destination(path)
    directory = os.path.dirname(full)
    if os.path.isdir(full):
        raise DestinationUnwritable(
            f"{shown(path)} is a directory: give a file name, e.g. "
            f"{shown(os.path.join(path, 'recording.npy'))}"
        )
    if os.path.exists(full) and not stat.S_ISREG(os.stat(full).st_mode):
        raise DestinationUnwritable(
            f"{shown(path)} exists and is not a regular file (a FIFO or a "
            "device): the recording is written whole, to a file"
        )
    if not os.path.isdir(directory):
        raise DestinationUnwritable(
            f"{shown(path)}: the directory {shown(directory)} does not exist: "
            "create it first, or record to another place"
        )
    try:
        fd, probe = _temporary(full)
    except OSError as e:
        raise DestinationUnwritable(
            f"{shown(path)}: cannot create a file in {shown(directory)} ({e.strerror}): "
            "record to another place"
        ) from None
    os.close(fd)
    os.unlink(probe)


def destination(path: str) -> str:
    """The file a recording to ``path`` ends up in: through a symlink, its target."""
    return os.path.realpath(path)


def _temporary(full: str) -> tuple[int, str]:
    """A new, unique temporary file beside ``full`` (a stale one of an earlier run, even of
    a process that had this pid, is never in the way)."""
    directory, base = os.path.split(full)
    return tempfile.mkstemp(dir=directory, prefix=f".{base}.", suffix=".tmp")


def check_dtype(ext: str, dtype: np.dtype[Any]) -> None:
    """FormatUnavailable if ``ext`` cannot hold ``dtype`` (Arrow has no complex numbers)."""
    fields = dtype.fields or {"": (dtype, 0)}
    kinds = {spec[0].base.kind for spec in fields.values()}
    if FORMATS[ext] and "c" in kinds:
        raise FormatUnavailable(f"{ext} cannot hold complex numbers: record to .npy or .npz")


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


def _spool_file(full: str) -> tuple[int, str | None]:
    """A new file for the spool in ``full``'s directory (the same filesystem, so saving it is
    a rename, not a copy): unnamed (O_TMPFILE: nothing is left behind even on kill -9) where
    the filesystem can, and where /proc lets it be given a name at the end; else a named
    temporary, which the caller removes on every way out. Returns (fd, name or None)."""
    directory = os.path.dirname(full)
    if hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd"):
        try:
            return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o666), None
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                raise
    fd, name = _temporary(full)
    mask = os.umask(0o022)  # mkstemp makes 0600: give the recording the usual 0666 & ~umask
    os.umask(mask)
    os.fchmod(fd, 0o666 & ~mask)
    return fd, name


def _link_unnamed(fd: int, name: str) -> None:
    """Give the O_TMPFILE file ``fd`` the name ``name`` (FileExistsError if taken):
    linkat(AT_SYMLINK_FOLLOW) of its /proc/self/fd entry, as open(2) shows. os.link()
    calls plain link(), which does not follow that symlink, unless given a dir_fd."""
    directory, base = os.path.split(name)
    dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.link(f"/proc/self/fd/{fd}", base, dst_dir_fd=dir_fd, follow_symlinks=True)
    finally:
        os.close(dir_fd)


class Spool:
    """The writes of a recording on disk as they arrive, in batches: a ``.npy`` file being
    built beside the destination, rows of :func:`row_dtype` after a header whose count is
    rewritten in place when it is saved (a ``.npy`` recording is then only renamed into place).

    ``append()`` copies a write into the batch in memory (at most BATCH_BYTES, one row at
    least) and writes the batch out when it is full; it raises RecordingStopped when the disk
    refuses it (``stopped`` keeps that error), keeping every whole row already written.
    ``save()`` writes the destination, streaming from the spool; ``close()`` discards it.
    """

    def __init__(self, path: str, dtype: np.dtype[Any], shape: tuple[int, ...]) -> None:
        self.path = path  # as the user wrote it: what messages name
        self.full = destination(path)
        self.row = row_dtype(dtype, shape)
        self.count = 0  # rows on disk
        self.received = 0  # rows given to append()
        self.stopped: RecordingStopped | None = None
        self.kept: str | None = None  # where save() kept the rows when it could not convert
        self._header = npy_header(self.row, (0,))
        rows = max(1, BATCH_BYTES // max(1, self.row.itemsize))
        self._raw = np.zeros(rows * self.row.itemsize, np.uint8)
        batch = self._raw.view(self.row)
        # field views made once: filling a row is then four item assignments
        self._cols = [batch[name] for name in COLUMNS]
        self._filled = 0
        self._fd, self._name = _spool_file(self.full)
        self._closed = False
        try:
            self._write_at(memoryview(self._header), 0)
        except RecordingStopped:
            self.close()
            raise

    @property
    def _end(self) -> int:
        return len(self._header) + self.count * self.row.itemsize

    def append(self, sample: Sample) -> None:
        """Add one write; RecordingStopped if the spool cannot take it (nor more)."""
        if self.stopped is not None:
            raise self.stopped
        i = self._filled
        seq, timestamp_ns, lost, data = self._cols
        seq[i], timestamp_ns[i], lost[i] = sample.seq, sample.timestamp_ns, sample.lost
        data[i] = sample.data
        self._filled = i + 1
        self.received += 1
        if self._filled == len(seq):
            self.flush()

    def flush(self) -> None:
        """Write the batch out (RecordingStopped if the disk refuses it)."""
        if self.stopped is not None:
            raise self.stopped
        if self._filled:
            n, self._filled = self._filled, 0
            self._write_at(self._raw.data[: n * self.row.itemsize], self._end, rows=True)
            self.count += n

    def _write_at(self, buf: memoryview, offset: int, rows: bool = False) -> None:
        """pwrite all of ``buf`` at ``offset``. On an error the recording stops: of ``rows``
        (whole rows appended at the end), those that made it stay and a partial one is cut
        off; RecordingStopped is raised, naming the destination."""
        done = 0
        try:
            while done < len(buf):
                done += os.pwrite(self._fd, buf[done:], offset + done)
        except OSError as e:
            if rows:
                self.count += done // self.row.itemsize
                try:
                    os.ftruncate(self._fd, self._end)  # a partial row is no row
                except OSError:
                    pass
            what = {
                errno.ENOSPC: "the disk is full",
                errno.EDQUOT: "the disk quota is used up",
                errno.EFBIG: "the file is as large as it may be",
            }.get(e.errno or 0, f"cannot write it ({e.strerror})")
            self.stopped = RecordingStopped(e.errno, what, self.path)
            raise self.stopped from e

    # -- saving ----------------------------------------------------------------------------

    def save(self, ext: str) -> None:
        """Write the recording to the destination as ``ext`` (every write that reached the
        spool; the batch in memory is written out first, as far as the disk takes it), and
        close the spool. A .npy is finished in place (its header's count rewritten) and
        renamed over the destination; other formats stream from the spool through a temporary
        renamed over it, at CHUNK_BYTES at a time. If that fails (a full disk, a signal), the
        rows are kept as a .npy beside the destination when possible, and the OSError raised
        names the destination and where they are."""
        try:
            try:
                self.flush()
            except RecordingStopped:
                pass  # kept in self.stopped: the caller says so
            if ext == ".npy":
                self._finish_npy()
                self._link(self.full, replace=True)
                return
            try:
                self._convert(ext)
            except BaseException as e:
                self.kept = self._keep_as_npy()
                if not isinstance(e, OSError):
                    raise
                where = (
                    f"; the {self.count:,} writes recorded are kept in {self.kept}"
                    if self.kept
                    else ""
                )
                raise OSError(
                    e.errno, f"cannot write the recording: {e.strerror}{where}", self.path
                ) from e
        except OSError as e:
            if e.filename == self.path:
                raise
            raise OSError(e.errno, f"cannot write the recording: {e.strerror}", self.path) from e
        finally:
            self.close()

    def close(self) -> None:
        """Discard the spool (what save() did not link into place is gone)."""
        if self._closed:
            return
        self._closed = True
        os.close(self._fd)
        if self._name is not None:
            try:
                os.unlink(self._name)
            except FileNotFoundError:
                pass

    def _finish_npy(self) -> None:
        header = npy_header(self.row, (self.count,))
        if len(header) != len(self._header):  # NumPy >= 1.23 leaves room: cannot happen
            raise OSError(errno.EINVAL, "the .npy header of the recording would move")
        self._write_at(memoryview(header), 0)
        os.ftruncate(self._fd, self._end)  # rows written after a failed batch are not data

    def _link(self, name: str, replace: bool) -> None:
        """Give the spool the name ``name``: over whatever is there (``replace``), else only
        if nothing is (FileExistsError)."""
        if self._name is None:  # unnamed: linkat through /proc, then renamed over the target
            if not replace:
                _link_unnamed(self._fd, name)
                return
            directory, base = os.path.split(name)
            while True:  # a fresh name of _temporary()'s kind
                tmp = os.path.join(directory, f".{base}.{os.urandom(6).hex()}.tmp")
                try:
                    _link_unnamed(self._fd, tmp)
                    break
                except FileExistsError:
                    continue
            try:
                os.replace(tmp, name)
            except BaseException:
                os.unlink(tmp)
                raise
        elif replace:
            os.replace(self._name, name)
            self._name = None
        else:
            os.link(self._name, name)

    def _keep_as_npy(self) -> str | None:
        """After a failed save to another format: the spool finished as a .npy of a new name
        beside the destination (never over a file); its name, or None if even that failed."""
        try:
            self._finish_npy()
        except OSError:
            return None
        for k in range(100):
            name = f"{self.full}.npy" if k == 0 else f"{self.full}.{k}.npy"
            try:
                self._link(name, replace=False)
            except FileExistsError:
                continue
            except OSError:
                return None
            return name
        return None

    def _chunks(self) -> Iterator[np.ndarray]:
        """The rows on disk, CHUNK_BYTES at a time (each chunk is valid until the next)."""
        size = self.row.itemsize
        rows = max(1, CHUNK_BYTES // max(1, size))
        buf = np.empty(min(rows, max(1, self.count)) * size, np.uint8)
        for start in range(0, self.count, rows):
            n = min(rows, self.count - start)
            view, offset = buf.data[: n * size], len(self._header) + start * size
            got = 0
            while got < len(view):
                k = os.preadv(self._fd, [view[got:]], offset + got)
                if k == 0:
                    raise OSError(errno.EIO, "the recording's spool file shrank")
                got += k
            yield buf[: n * size].view(self.row)

    def _convert(self, ext: str) -> None:
        fd, tmp = _temporary(self.full)
        mask = os.umask(0o022)  # mkstemp makes 0600: give the recording the usual 0666 & ~umask
        os.umask(mask)
        try:
            os.fchmod(fd, 0o666 & ~mask)
            with open(fd, "wb") as f:
                if ext == ".npz":
                    self._write_npz(f)
                elif ext == ".parquet":
                    self._write_arrow(f, parquet=True)
                else:
                    self._write_arrow(f, parquet=False)
            os.replace(tmp, self.full)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise

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
