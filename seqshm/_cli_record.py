"""The files ``seqshm record`` writes: recorded writes (seq, timestamp_ns, lost, data) as a
file NumPy or pandas opens directly. Pure: no terminal, no channel."""

from __future__ import annotations

import importlib
import os
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
    exists and takes a new file (tried for real, with the temporary name save() will use:
    access() answers yes to root on a read-only mount), and ``path`` is not a directory."""
    full = os.path.abspath(path)
    directory = os.path.dirname(full)
    if os.path.isdir(full):
        raise DestinationUnwritable(f"{path} is a directory: give a file name, e.g. "
                                    f"{os.path.join(path, 'recording.npy')}")
    if not os.path.isdir(directory):
        raise DestinationUnwritable(f"{path}: the directory {directory} does not exist: "
                                    "create it first, or record to another place")
    probe = _temporary(full)
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as e:
        raise DestinationUnwritable(f"{path}: cannot create a file in {directory} "
                                    f"({e.strerror}): record to another place") from None
    os.unlink(probe)


def _temporary(full: str) -> str:
    directory, base = os.path.split(full)
    return os.path.join(directory, f".{base}.{os.getpid()}.tmp")


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
    tmp = _temporary(os.path.abspath(path))
    try:
        if ext == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, structured(seq, timestamp_ns, lost, data))
        elif ext == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, seq=seq, timestamp_ns=timestamp_ns, lost=lost, data=data)
        else:
            table = arrow_table(seq, timestamp_ns, lost, data)
            if ext == ".parquet":
                importlib.import_module("pyarrow.parquet").write_table(table, tmp)
            else:
                importlib.import_module("pyarrow.feather").write_feather(table, tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):  # name the file the user asked for, not our temporary
            raise OSError(e.errno, f"cannot write the recording: {e.strerror}", path) from e
        raise
