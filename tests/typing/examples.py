"""Type-checked uses of the public API: mypy --strict must accept this file as it is."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import numpy.typing as npt

import seqshm


def reader_examples(path: str) -> float:
    with seqshm.open(path, timeout=0.5) as r:
        a: npt.NDArray[Any] = r.snapshot()
        r.snapshot(out=a)
        s: seqshm.Snapshot = r.read()
        seq: int = s.seq + r.seq
        tok: int = r.begin()
        total = float(np.sum(r.view(tok)))
        ok: bool = r.validate(tok)
        mean: float = r.apply(lambda v: float(v.mean()))
        h: seqshm.History = r.history()
        stats: seqshm.ReaderStats = r.stats
        woke: bool = r.wait(0.01)
        woke_async: bool = asyncio.run(r.wait_async(0.01))
        shape: tuple[int, ...] = r.shape
        dtype: np.dtype[Any] = r.dtype
        return total + mean + seq + int(ok) + len(h.seq) + stats.retries + woke + woke_async + (
            len(shape) + dtype.itemsize
        )


def writer_examples(path: str) -> int:
    rec = np.dtype([("a", np.uint64), ("b", np.float32, (3,))])
    with seqshm.create(path, rec, (4,), nr_slots=2, overwrite=True) as w:
        n: int = w.write(np.zeros(4, rec))
        with w.writing() as buf:
            buf["a"] = 1
        w.begin()["a"] = 2
        n += w.end()
        w.close(unlink=True)
    one: npt.NDArray[Any] = seqshm.snapshot("/nonexistent") if n < 0 else np.zeros(1)
    return n + len(one)


def errors_example() -> str:
    try:
        seqshm.open("/nonexistent")
    except seqshm.FormatError as e:
        return str(e.path)
    except seqshm.ReadTimeout as e:
        return e.reason
    except FileNotFoundError:
        return "missing"
    return ""
