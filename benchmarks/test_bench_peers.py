"""seqshm beside what a Python user would write instead, same payload, same writer rate.

Each peer gets a writer process publishing the same pattern at the same rate (1 kHz) through
its own mechanism; the benchmark is the reader's call that yields the latest consistent copy
in a preallocated array (or a new one, for the allocating forms). Baseline of each group:
seqshm's ``snapshot(out)``. Peers:

- shared_memory + multiprocessing.Lock, the best-written forms (a memoryview slice copy, or
  ``np.copyto``, into a preallocated array under the lock) and the naive one (``.copy()``);
- a file in /dev/shm with ``fcntl.flock`` or ``fcntl.lockf`` around ``os.preadv``;
- a Unix stream socket carrying every update, the reader draining it and keeping the latest;
- ``os.preadv`` of a /dev/shm file with no lock at all (a syscall per read; may tear).

And per-CPU telemetry: ``psutil.cpu_times(percpu=True)`` and the demo's own /proc/stat parse
(``_procstat.read_cpustat``) beside snapshots of the demo's userspace cpustat channel
(``_procstat.publish_cpustat``).
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from multiprocessing import shared_memory

import benchprocs
import numpy as np
import pytest
from benchutil import (
    KiB,
    MiB,
    finish,
    loop_count,
    looped,
    pinned_main,
    setup,
    shm_path,
    size_id,
)

import seqshm
from seqshm.cli import _procstat

try:
    import psutil
except ImportError:  # a benchmark-only dependency (the bench extra)
    psutil = None

SIZES = [64, 4 * KiB, 1 * MiB]
RATE_HZ = 1_000

PEERS = [
    "seqshm_snapshot_out",   # r.snapshot(out)  (baseline)
    "seqshm_snapshot",       # r.snapshot(): a new array
    "shm_lock_memoryview",   # lock.acquire(); dst[:] = src (memoryviews); lock.release()
    "shm_lock_copyto",       # with lock: np.copyto(out, arr)
    "shm_lock_copy",         # with lock: arr.copy()  (naive)
    "flock_preadv",          # flock(LOCK_SH); os.preadv(fd, [out], 0); flock(LOCK_UN)
    "lockf_preadv",          # lockf(LOCK_SH); os.preadv(fd, [out], 0); lockf(LOCK_UN)
    "socket_latest",         # drain a stream socket of updates, keep the newest in out
    "preadv_unlocked",       # os.preadv(fd, [out], 0) of a /dev/shm file, no lock
]


class LatestFromStream:
    """A reader of a stream of fixed-size updates that keeps only the newest one."""

    def __init__(self, sock: socket.socket, nbytes: int):
        self.sock = sock
        self.n = nbytes
        self.buf = bytearray(max(4 * nbytes, 64 * KiB))
        self.mv = memoryview(self.buf)
        self.fill = 0

    def __call__(self, out: np.ndarray) -> np.ndarray:
        n, mv = self.n, self.mv
        dst = memoryview(out).cast("B")
        while True:
            try:
                k = self.sock.recv_into(mv[self.fill:])
            except BlockingIOError:
                return out
            if k == 0:
                return out
            self.fill += k
            if self.fill >= n:
                whole = self.fill // n * n
                dst[:] = mv[whole - n:whole]
                rest = self.fill - whole
                mv[:rest] = mv[whole:self.fill]
                self.fill = rest


def _seqshm(nbytes, peer):
    path = shm_path(f"peer{size_id(nbytes)}")
    writer = benchprocs.pattern_writer(path, nbytes, rate_hz=RATE_HZ)
    with writer:
        r = seqshm.open(path)
        out = np.empty(r.shape, r.dtype)
        fn, args = (r.snapshot, (out,)) if peer == "seqshm_snapshot_out" else (r.snapshot, ())
        try:
            yield writer, fn, args
        finally:
            r.close()


def _shm_lock(nbytes, peer):
    shm = shared_memory.SharedMemory(create=True, size=nbytes)
    lock = benchprocs.CTX.Lock()
    arr = np.ndarray(nbytes // 8, np.uint64, buffer=shm.buf)
    out = np.empty_like(arr)
    try:
        with benchprocs.shm_lock_writer(shm.name, nbytes, lock, RATE_HZ) as writer:
            if peer == "shm_lock_memoryview":
                src = shm.buf[:nbytes]
                dst = memoryview(out).cast("B")
                acquire, release = lock.acquire, lock.release

                def read():
                    acquire()
                    dst[:] = src
                    release()
                    return out
            elif peer == "shm_lock_copyto":
                def read():
                    with lock:
                        np.copyto(out, arr)
                    return out
            else:
                def read():
                    with lock:
                        return arr.copy()
            try:
                yield writer, read, ()
            finally:
                if peer == "shm_lock_memoryview":
                    src.release()
    finally:
        arr = None  # drop the buffer export before close()
        shm.close()
        shm.unlink()


def _file(nbytes, peer):
    path = shm_path(f"file{size_id(nbytes)}")
    with open(path, "wb") as f:
        f.truncate(nbytes)
    kind = {"flock_preadv": "flock", "lockf_preadv": "lockf"}.get(peer, "none")
    fd = os.open(path, os.O_RDONLY)
    out = np.empty(nbytes // 8, np.uint64)
    bufs = [out]
    try:
        with benchprocs.file_writer(kind, path, nbytes, RATE_HZ) as writer:
            if kind == "flock":
                def read():
                    fcntl.flock(fd, fcntl.LOCK_SH)
                    os.preadv(fd, bufs, 0)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    return out
            elif kind == "lockf":
                # lockf's shared lock is a read lock (F_RDLCK): fine on an O_RDONLY fd.
                def read():
                    fcntl.lockf(fd, fcntl.LOCK_SH)
                    os.preadv(fd, bufs, 0)
                    fcntl.lockf(fd, fcntl.LOCK_UN)
                    return out
            else:
                def read():
                    os.preadv(fd, bufs, 0)
                    return out
            yield writer, read, ()
    finally:
        os.close(fd)
        os.unlink(path)


def _socket(nbytes, peer):
    d = tempfile.mkdtemp(prefix="seqshm-bench-")
    sock_path = os.path.join(d, "s")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock_path)
    listener.listen(1)
    out = np.empty(nbytes // 8, np.uint64)
    try:
        with benchprocs.socket_writer(sock_path, nbytes, RATE_HZ) as writer:
            conn, _ = listener.accept()
            conn.setblocking(False)
            try:
                yield writer, LatestFromStream(conn, nbytes), (out,)
            finally:
                conn.close()  # before the writer is stopped: unblocks a sendall in progress
    finally:
        listener.close()
        os.unlink(sock_path)
        os.rmdir(d)


SETUPS = {
    "seqshm_snapshot_out": _seqshm, "seqshm_snapshot": _seqshm,
    "shm_lock_memoryview": _shm_lock, "shm_lock_copyto": _shm_lock, "shm_lock_copy": _shm_lock,
    "flock_preadv": _file, "lockf_preadv": _file, "preadv_unlocked": _file,
    "socket_latest": _socket,
}


@pytest.mark.parametrize(("peer", "nbytes"), [  # a group's cases one after another
    pytest.param(peer, nbytes, id=f"{peer}-{size_id(nbytes)}")
    for nbytes in SIZES for peer in PEERS])
def test_peer(benchmark, peer, nbytes):
    n = loop_count(nbytes)
    setup(benchmark, group=f"peers {size_id(nbytes)}", case=peer, nbytes=nbytes,
          baseline=(peer == "seqshm_snapshot_out"), ops_per_call=n, section="peers",
          writer_rate_hz=RATE_HZ)
    gen = SETUPS[peer](nbytes, peer)
    with pinned_main():
        writer, fn, args = next(gen)
        try:
            benchmark(looped(fn, *args, n=n))
            res = fn(*args)
        finally:
            gen.close()
    assert res.nbytes == nbytes
    finish(benchmark, writer_writes_per_s=writer.rate)


TELEMETRY = ["seqshm_snapshot", "seqshm_snapshot_out", "seqshm_oneshot",
             "psutil_cpu_times_percpu", "proc_stat_parse"]


@pytest.fixture(scope="module")
def cpustat_channel():
    """A userspace cpustat channel like the demo's, published at 100 Hz by another process."""
    path = shm_path("cpustat")
    with benchprocs.cpustat_writer(path, 100) as writer:
        yield path, writer


@pytest.mark.parametrize("case", TELEMETRY)
def test_telemetry(benchmark, cpustat_channel, case):
    if case.startswith("psutil") and psutil is None:
        pytest.skip("psutil is not installed")
    path, writer = cpustat_channel
    r = seqshm.open(path)
    nbytes = r.payload_size
    setup(benchmark, group="telemetry per-CPU times", case=case, nbytes=nbytes,
          baseline=(case == "seqshm_snapshot"), ops_per_call=10, section="telemetry",
          ncpu=r.shape[0], writer_rate_hz=100, channel_dtype=str(r.dtype))
    fn, args = {
        "seqshm_snapshot": (r.snapshot, ()),
        "seqshm_snapshot_out": (r.snapshot, (np.empty(r.shape, r.dtype),)),
        "seqshm_oneshot": (seqshm.snapshot, (path,)),
        "psutil_cpu_times_percpu": (psutil and psutil.cpu_times, (True,)),
        "proc_stat_parse": (_procstat.read_cpustat, (np.zeros(r.shape, r.dtype),)),
    }[case]
    try:
        benchmark(looped(fn, *args, n=10))
    finally:
        r.close()
    finish(benchmark)
