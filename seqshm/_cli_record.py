"""The files ``seqshm record`` writes: recorded writes (seq, timestamp_ns, lost, data) as a
file NumPy or pandas opens directly. Pure: no terminal, no channel."""

from __future__ import annotations

import importlib
import os
import stat
import tempfile
from typing import Any

import numpy as np

#: Extensions ``seqshm record -o`` writes, and whether they need pyarrow.
FORMATS = {".npy": False, ".npz": False, ".parquet": True, ".arrow": True}


class FormatUnavailable(ValueError):
    """An output file ``record`` cannot write (unknown extension, pyarrow missing)."""


def output_format(path: str) -> str:
    """The extension of ``path`` if ``record`` can write it, else FormatUnavailable."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise FormatUnavailable(
            f"{path}: cannot tell what to write from the extension {ext or '(none)'!r}: "
            f"use one of {', '.join(FORMATS)}")
    if FORMATS[ext]:
        try:
            importlib.import_module("pyarrow")
        except ImportError:
            pass
        else:
            return ext
        raise FormatUnavailable(
            f"{path}: writing {ext} files needs pyarrow, which is not installed: "
            "pip install pyarrow (or record to .npy or .npz)")
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
        raise DestinationUnwritable(f"{path} is a directory: give a file name, e.g. "
                                    f"{os.path.join(path, 'recording.npy')}")
    if os.path.exists(full) and not stat.S_ISREG(os.stat(full).st_mode):
        raise DestinationUnwritable(f"{path} exists and is not a regular file (a FIFO or a "
                                    "device): the recording is written whole, to a file")
    if not os.path.isdir(directory):
        raise DestinationUnwritable(f"{path}: the directory {directory} does not exist: "
                                    "create it first, or record to another place")
    try:
        fd, probe = _temporary(full)
    except OSError as e:
        raise DestinationUnwritable(f"{path}: cannot create a file in {directory} "
                                    f"({e.strerror}): record to another place") from None
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


def structured(seq: np.ndarray, timestamp_ns: np.ndarray, lost: np.ndarray, data: np.ndarray
               ) -> np.ndarray:
    """One structured array of the recording: fields seq, timestamp_ns, lost, data."""
    row = np.dtype([("seq", np.uint64), ("timestamp_ns", np.uint64), ("lost", np.uint64),
                    ("data", data.dtype, data.shape[1:])])
    out = np.empty(len(seq), row)
    out["seq"], out["timestamp_ns"], out["lost"] = seq, timestamp_ns, lost
    out["data"] = data
    return out


def _arrow_column(values: np.ndarray) -> Any:
    """A column of one value per write: a scalar, or nested fixed-size lists for an array."""
    pa = importlib.import_module("pyarrow")

    arr = pa.array(values.reshape(-1))
    for n in reversed(values.shape[1:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, n)
    return arr


def arrow_table(seq: np.ndarray, timestamp_ns: np.ndarray, lost: np.ndarray, data: np.ndarray
                ) -> Any:
    """The recording as a pyarrow Table: seq, timestamp_ns, lost, and data (a record's
    fields as data.NAME columns)."""
    pa = importlib.import_module("pyarrow")

    cols = {"seq": pa.array(seq), "timestamp_ns": pa.array(timestamp_ns),
            "lost": pa.array(lost)}
    if data.dtype.names:
        for name in data.dtype.names:
            cols[f"data.{name}"] = _arrow_column(np.ascontiguousarray(data[name]))
    else:
        cols["data"] = _arrow_column(data)
    return pa.table(cols)


def save(path: str, ext: str, seq: np.ndarray, timestamp_ns: np.ndarray, lost: np.ndarray,
         data: np.ndarray) -> None:
    """Write the recording to ``path`` atomically (a temporary file renamed over it)."""
    full = destination(path)
    fd, tmp = _temporary(full)
    mask = os.umask(0o022)  # mkstemp makes 0600: give the recording the usual 0666 & ~umask
    os.umask(mask)
    try:
        os.fchmod(fd, 0o666 & ~mask)
        if ext == ".npy":
            with open(fd, "wb") as f:
                np.save(f, structured(seq, timestamp_ns, lost, data))
        elif ext == ".npz":
            with open(fd, "wb") as f:
                np.savez(f, seq=seq, timestamp_ns=timestamp_ns, lost=lost, data=data)
        else:
            os.close(fd)  # pyarrow writes by name
            table = arrow_table(seq, timestamp_ns, lost, data)
            if ext == ".parquet":
                importlib.import_module("pyarrow.parquet").write_table(table, tmp)
            else:
                importlib.import_module("pyarrow.feather").write_feather(table, tmp)
        os.replace(tmp, full)
    except BaseException as e:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):  # name the file the user asked for, not our temporary
            raise OSError(e.errno, f"cannot write the recording: {e.strerror}", path) from e
        raise
