"""Helper processes for the benchmarks: seqshm pattern writers at a set rate, busy readers, and
the writers of the peer mechanisms (shared_memory + Lock, file locks, a socket, plain pwrite).

Every helper runs in a child process pinned to the last CPU (the benchmark process pins itself
to the first, see ``benchutil.pinned_main``), signals ``ready`` once it has published or read
something, runs until ``stop`` is set, and reports its count of operations.

Seqshm pattern writers are ``seqshm.testing.PatternWriter`` (the tests' writer), except idle
and above 10 kHz: PatternWriter paces itself with ``Event.wait(delay)``, whose wake-up
granularity (~50-100 us) caps it far below 100 kHz, and it has no idle mode, so those use the
spin-paced writer here.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time

import numpy as np

STARTUP_TIMEOUT = 60.0
#: Above this rate a seqshm pattern writer spins to keep time (see the module docstring).
SPIN_PACED_ABOVE_HZ = 10_000


def context():
    """fork while this process runs one thread (starts in ms; no re-import of an editable
    seqshm), spawn otherwise (forking a threaded process is unsafe), as seqshm.testing does."""
    import threading

    return mp.get_context("fork" if threading.active_count() == 1 else "spawn")


CTX = context()


#: The CPUs this process may use, taken at import, before any pinning.
ALL_CPUS = sorted(os.sched_getaffinity(0))


def pin_to_last_cpu(pid: int) -> None:
    """Pin a helper to the last CPU (the benchmark process runs on the first)."""
    if len(ALL_CPUS) > 1:
        os.sched_setaffinity(pid, {ALL_CPUS[-1]})


def _run_paced(stop, rate_hz, write_one, write_batch) -> int:
    """Call ``write_one()`` ``rate_hz`` times a second (0: never; None: ``write_batch()``
    back to back, which returns how many writes it made) until ``stop`` is set."""
    if rate_hz == 0:
        stop.wait()
        return 0
    n = 0
    if rate_hz is None:
        while not stop.is_set():
            n += write_batch()
        return n
    period = 1.0 / rate_hz
    check_every = max(1, int(rate_hz) // 200)  # look at stop every ~5 ms
    next_t = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now < next_t:
            if next_t - now > 300e-6:
                time.sleep(next_t - now - 150e-6)  # sleep most of the wait, spin the rest
            continue
        write_one()
        n += 1
        next_t += period
        if next_t < now - period:  # fell behind (blocked): do not burst to catch up
            next_t = now + period
        if n % check_every == 0 and stop.is_set():
            return n


def _batch_of(write_one, k):
    def batch():
        for _ in range(k):
            write_one()
        return k

    return batch


# --- child-side bodies -------------------------------------------------------------------


def _seqshm_writer(path, nbytes, nr_slots, rate_hz, ready, stop, result):
    import seqshm
    from seqshm import _hooks

    w = seqshm.create(path, np.uint64, nbytes // 8, nr_slots=nr_slots, overwrite=True)
    _hooks.write_pattern(w, 1)
    ready.set()
    batch = max(1, 4_000_000 // (nbytes + 64))  # ~0.1-1 ms of writes between stop checks

    def write_batch():
        _hooks.write_pattern(w, batch)
        return batch

    try:
        _run_paced(stop, rate_hz, lambda: _hooks.write_pattern(w, 1), write_batch)
        result.value = w.seq
    finally:
        w.close(unlink=True)


def _busy_reader(path, ready, stop, result):
    import seqshm

    r = seqshm.open(path, timeout=0.05)
    out = np.empty(r.shape, r.dtype)
    r.snapshot(out)
    ready.set()
    while not stop.is_set():
        for _ in range(200):
            try:
                r.snapshot(out)
            except seqshm.ReadTimeout:
                pass
    result.value = r.stats.snapshots
    r.close()


def _shm_lock_writer(shm_name, nbytes, lock, rate_hz, ready, stop, result):
    from multiprocessing import resource_tracker, shared_memory

    shm = shared_memory.SharedMemory(name=shm_name)
    # The parent owns (and unlinks) the segment; do not let this process's tracker claim it.
    resource_tracker.unregister(shm._name, "shared_memory")
    arr = np.ndarray(nbytes // 8, np.uint64, buffer=shm.buf)
    k = [0]

    def write_one():
        k[0] += 1
        with lock:
            arr.fill(k[0])

    write_one()
    ready.set()
    try:
        result.value = _run_paced(stop, rate_hz, write_one, _batch_of(write_one, 100)) + 1
    finally:
        arr = None  # drop the buffer export before close()
        shm.close()


def _file_writer(kind, path, nbytes, rate_hz, ready, stop, result):
    """kind: 'flock', 'lockf' (exclusive lock around the pwrite) or 'none' (plain pwrite)."""
    import fcntl

    fd = os.open(path, os.O_RDWR)
    buf = np.zeros(nbytes // 8, np.uint64)
    k = [0]

    def write_one():
        k[0] += 1
        buf.fill(k[0])
        if kind == "flock":
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.pwrite(fd, buf, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        elif kind == "lockf":
            fcntl.lockf(fd, fcntl.LOCK_EX)
            os.pwrite(fd, buf, 0)
            fcntl.lockf(fd, fcntl.LOCK_UN)
        else:
            os.pwrite(fd, buf, 0)

    write_one()
    ready.set()
    try:
        result.value = _run_paced(stop, rate_hz, write_one, _batch_of(write_one, 100)) + 1
    finally:
        os.close(fd)


def _socket_writer(sock_path, nbytes, rate_hz, ready, stop, result):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock_path)
    buf = np.zeros(nbytes // 8, np.uint64)
    k = [0]

    def write_one():
        k[0] += 1
        buf.fill(k[0])
        s.sendall(buf)

    ready.set()  # before the first write: a large one blocks until the reader accepts
    write_one()
    try:
        result.value = _run_paced(stop, rate_hz, write_one, _batch_of(write_one, 100)) + 1
    except (BrokenPipeError, ConnectionResetError):
        result.value = k[0]
    finally:
        s.close()


def _cpustat_writer(path, rate_hz, ready, stop, result):
    """The demo's userspace cpustat publisher (seqshm._procstat.publish_cpustat)."""
    import threading

    import seqshm
    from seqshm.cli import _procstat

    def signal_ready():
        while not stop.is_set():
            try:
                seqshm.open(path).close()
            except (OSError, seqshm.SeqshmError):
                time.sleep(0.005)
            else:
                ready.set()
                return

    threading.Thread(target=signal_ready, daemon=True).start()
    result.value = _procstat.publish_cpustat(path, rate_hz, stop=stop)


# --- parent side ---------------------------------------------------------------------------


class Helper:
    """Context manager running ``target(*args, ready, stop, result)`` in a spawned process.

    ``.pid`` while it runs; ``.count`` (writes or reads it made) after exit.
    """

    def __init__(self, target, *args):
        self._ready = CTX.Event()
        self._stop = CTX.Event()
        self._result = CTX.Value("Q", 0, lock=False)
        self._proc = CTX.Process(target=target,
                                  args=(*args, self._ready, self._stop, self._result),
                                  daemon=True)
        self.pid = None
        self.count = None

    def __enter__(self):
        self._proc.start()
        self.pid = self._proc.pid
        pin_to_last_cpu(self.pid)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._ready.wait(0.05):
            if not self._proc.is_alive() or time.monotonic() > deadline:
                self._proc.kill()
                self._proc.join()
                raise RuntimeError(f"benchmark helper {self._proc.name} did not start "
                                   f"(exit code {self._proc.exitcode})")
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.seconds = time.perf_counter() - self._t0
        self._proc.join(30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()
        self.count = self._result.value
        return False

    @property
    def writes(self):
        return self.count

    @property
    def rate(self):
        """Operations per second over the helper's life (after ready)."""
        return self.count / self.seconds if self.count is not None and self.seconds > 0 else 0.0


class _PatternWriter:
    """seqshm.testing.PatternWriter pinned to the last CPU, with Helper's ``rate``."""

    def __init__(self, path, nbytes, nr_slots, rate_hz):
        from seqshm.testing import PatternWriter

        self._w = PatternWriter(path, nbytes, nr_slots=nr_slots, rate_hz=rate_hz)

    def __enter__(self):
        self._w.__enter__()
        pin_to_last_cpu(self._w.pid)
        self.pid = self._w.pid
        self._n0 = self._w.writes
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self._t0
        self._w.__exit__(*exc)
        self.count = self._w.writes
        return False

    @property
    def writes(self):
        return self._w.writes

    @property
    def rate(self):
        n = self.count - self._n0
        return n / self.seconds if self.seconds > 0 else 0.0


def pattern_writer(path, nbytes, *, nr_slots=1, rate_hz=None):
    """A seqshm pattern writer process on a new channel at ``path``: ``rate_hz`` writes a
    second, None for as fast as it goes, 0 for none after the first."""
    # PatternWriter has no idle mode either (a rate near 0 made it write ~180 times a second:
    # its Event.wait(huge delay) returns at once), so idle and fast rates use the helper here.
    if rate_hz == 0 or (rate_hz is not None and rate_hz > SPIN_PACED_ABOVE_HZ):
        return Helper(_seqshm_writer, os.fspath(path), nbytes, nr_slots, rate_hz)
    return _PatternWriter(os.fspath(path), nbytes, nr_slots, rate_hz)


def busy_reader(path):
    """A process spinning on ``snapshot(out)`` of the channel at ``path``."""
    return Helper(_busy_reader, os.fspath(path))


def shm_lock_writer(shm_name, nbytes, lock, rate_hz):
    return Helper(_shm_lock_writer, shm_name, nbytes, lock, rate_hz)


def file_writer(kind, path, nbytes, rate_hz):
    return Helper(_file_writer, kind, os.fspath(path), nbytes, rate_hz)


def socket_writer(sock_path, nbytes, rate_hz):
    return Helper(_socket_writer, os.fspath(sock_path), nbytes, rate_hz)


def cpustat_writer(path, rate_hz):
    return Helper(_cpustat_writer, os.fspath(path), rate_hz)
