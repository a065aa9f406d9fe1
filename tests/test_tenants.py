"""What a second, unprivileged local user can and cannot do to a channel (docs/security.md, 2-3)."""

from __future__ import annotations

import fcntl
import mmap
import multiprocessing
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import seqshm
from seqshm import ChannelState
from seqshm._writer import waiters_path

#: Bound on every wait in these tests: a failure, not a hang.
HANG_GUARD_S = 10.0


@pytest.fixture
def shared_dir() -> Iterator[str]:
    """A sticky, world-writable directory, as /dev/shm is (a private one: tests may plant)."""
    d = tempfile.mkdtemp(prefix="seqshm-tenants-", dir="/dev/shm")
    os.chmod(d, 0o1777)
    try:
        yield d
    finally:
        subprocess.run(["rm", "-rf", d], check=False)


@pytest.fixture
def private_dir() -> Iterator[str]:
    """A root-owned directory others may read but not write (where a planted link points)."""
    d = tempfile.mkdtemp(prefix="seqshm-root-")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        subprocess.run(["rm", "-rf", d], check=False)


def _until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.005)


# -- what the other user runs ------------------------------------------------------------------

def _hold_locks(path: str, ready: Any) -> None:
    """A process that may only read the channel takes every lock a read-only descriptor can
    take, over and over (recipe 1 retried flock every 1 ms): flock exclusive, POSIX and OFD
    read locks over the whole file."""
    fd = os.open(path, os.O_RDONLY)
    whole = fcntl.F_RDLCK
    ready.set()
    while True:
        for take in (lambda: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB),
                     lambda: fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 0, 0),
                     lambda: fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(whole))):
            try:
                take()
            except OSError:
                pass
        time.sleep(0.001)


def _flock(kind: int, start: int = 0, length: int = 0) -> bytes:
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, start, length, 0)


def _try_write(path: str) -> list[str]:
    """Every way to write a channel a reader might try; what succeeded."""
    got = []
    try:
        os.close(os.open(path, os.O_RDWR))
        got.append("open O_RDWR")
    except PermissionError:
        pass
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE).close()
            got.append("mmap PROT_WRITE")
        except PermissionError:
            pass
    finally:
        os.close(fd)
    return got


def _symlink(target: str, link: str) -> None:
    os.symlink(target, link)


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _writer_until_killed(path: str, ready: Any) -> None:
    w = seqshm.create(path, "f8", 4, mode=0o644)
    w.write(np.arange(4.0))
    ready.set()
    time.sleep(HANG_GUARD_S * 3)


# -- a reader cannot hide the writer's death or hold back its restart (recipe 1) ---------------

def test_reader_flock_does_not_hide_writer_death(other_user: Any, shared_dir: str) -> None:
    ctx = multiprocessing.get_context("fork")
    path = os.path.join(shared_dir, "c")
    ready, locked = ctx.Event(), ctx.Event()
    writer = ctx.Process(target=_writer_until_killed, args=(path, ready))
    writer.start()
    assert ready.wait(HANG_GUARD_S)
    r = seqshm.open(path, timeout=0.5)
    r.snapshot()  # the last write read: a wait is for the next one
    other_user.start(_hold_locks, path, locked)
    assert locked.wait(HANG_GUARD_S)
    time.sleep(0.05)  # its locks taken
    assert r.state is ChannelState.OPEN
    os.kill(writer.pid, signal.SIGKILL)
    writer.join()
    _until(lambda: r.state is ChannelState.WRITER_DIED, "the reader sees the writer died")
    with pytest.raises(seqshm.ChannelEnded):
        r.wait(0.5)
    info = subprocess.run([sys.executable, "-m", "seqshm", "info", path], capture_output=True,
                          text=True, timeout=60)
    assert "writer-died" in info.stdout, info.stdout + info.stderr
    r.close()


def test_reader_locks_do_not_block_restart(other_user: Any, shared_dir: str) -> None:
    path = os.path.join(shared_dir, "c")
    w = seqshm.create(path, "f8", 4, mode=0o644)
    locked = multiprocessing.get_context("fork").Event()
    other_user.start(_hold_locks, path, locked)
    assert locked.wait(HANG_GUARD_S)
    time.sleep(0.05)
    with pytest.raises(seqshm.WriterBusy):  # the live writer still holds it
        seqshm.create(path, "f8", 4, overwrite=True)
    w.close()
    time.sleep(0.05)  # the other user's loop takes what a clean close let go of
    with seqshm.create(path, "f8", 4, overwrite=True) as w2:  # a restart, after a close
        assert w2.write(np.ones(4)) == 1
        r = seqshm.open(path)
        assert r.state is ChannelState.OPEN and r.snapshot()[0] == 1
        r.close()
        w2.close(unlink=True)


def test_reader_cannot_write_channel(other_user: Any, shared_dir: str) -> None:
    path = os.path.join(shared_dir, "c")
    with seqshm.create(path, "f8", 4, mode=0o644) as w:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
        assert other_user.run(_try_write, path) == []
        # the sidecar is writable by exactly those who may read the channel
        assert stat.S_IMODE(os.stat(waiters_path(path)).st_mode) == 0o666
        w.close(unlink=True)
    with seqshm.create(path, "f8", 4, mode=0o640) as w:
        assert stat.S_IMODE(os.stat(waiters_path(path)).st_mode) == 0o660
        with pytest.raises(PermissionError):
            other_user.run(os.open, waiters_path(path), os.O_RDWR)
        w.close(unlink=True)


def test_writer_registers_no_membarrier(shared_dir: str) -> None:
    """membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS) after create(): no registration for the
    global expedited command, which would let any local user interrupt this process's CPUs
    (MEMBARRIER_CMD_GLOBAL_EXPEDITED needs no privilege). Run in a fresh process: a
    registration lasts for the process's life."""
    code = ("import ctypes, sys, seqshm\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "w = seqshm.create(sys.argv[1], 'f8', 4)\n"
            "print(libc.syscall(324, 1 << 9, 0, 0), ctypes.get_errno())\n"
            "w.close(unlink=True)\n")
    out = subprocess.run([sys.executable, "-c", code, os.path.join(shared_dir, "m")],
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    mask, err = int(out[0]), int(out[1])
    if mask < 0:
        pytest.skip(f"this kernel has no MEMBARRIER_CMD_GET_REGISTRATIONS (errno {err})")
    assert not mask & (1 << 2), f"registered for GLOBAL_EXPEDITED (mask {mask:#x})"


# -- a planted link is never followed (recipe 2) -----------------------------------------------

def test_create_does_not_follow_planted_symlink(other_user: Any, shared_dir: str,
                                                private_dir: str) -> None:
    link = os.path.join(shared_dir, "x")
    other_user.run(_symlink, os.path.join(private_dir, "planted"), link)
    for overwrite in (False, True):
        with pytest.raises(FileExistsError) as e:
            seqshm.create(link, "f8", 4, overwrite=overwrite)
        assert e.value.filename == link
    assert os.listdir(private_dir) == []
    assert os.path.islink(link)


def test_overwrite_replaces_link_not_target(other_user: Any, shared_dir: str,
                                            private_dir: str) -> None:
    precious = os.path.join(private_dir, "precious")
    _write_file(precious, b"root's own data\n")
    link = os.path.join(shared_dir, "x")
    other_user.run(_symlink, precious, link)
    with pytest.raises(FileExistsError, match="symbolic link"):
        seqshm.create(link, "f8", 4, overwrite=True)
    with open(precious, "rb") as f:
        assert f.read() == b"root's own data\n"
    assert sorted(os.listdir(private_dir)) == ["precious"]


def test_sidecar_not_planted(other_user: Any, shared_dir: str, private_dir: str) -> None:
    """The other user plants the sidecar's name as a link: the creator's sidecar replaces the
    link (root) and nothing appears where it pointed; readers still sleep on the real one."""
    path = os.path.join(shared_dir, "c")
    other_user.run(_symlink, os.path.join(private_dir, "side"), waiters_path(path))
    with seqshm.create(path, "f8", 4) as w:
        assert os.listdir(private_dir) == []
        side = os.lstat(waiters_path(path))
        assert stat.S_ISREG(side.st_mode) and side.st_uid == 0
        w.close(unlink=True)


def test_reader_refuses_planted_symlink(other_user: Any, shared_dir: str) -> None:
    real = os.path.join(shared_dir, "real")
    link = os.path.join(shared_dir, "alias")
    with seqshm.create(real, "f8", 4) as w:
        other_user.run(_symlink, real, link)
        with pytest.raises(PermissionError, match=r"uid \d+ made") as e:
            seqshm.open(link)
        assert e.value.filename == link
        mine = os.path.join(shared_dir, "mine")
        os.symlink(real, mine)  # this user's own link is followed, as the kernel would
        with seqshm.open(mine) as r:
            assert r.snapshot().shape == (4,)
        w.close(unlink=True)


def test_overwrite_refuses_non_channel(other_user: Any, shared_dir: str) -> None:
    path = os.path.join(shared_dir, "z")
    other_user.run(_write_file, path, b"another user's notes\n")
    with pytest.raises(FileExistsError, match="not a seqshm channel"):
        seqshm.create(path, "f8", 4, overwrite=True)
    with open(path, "rb") as f:
        assert f.read() == b"another user's notes\n"


def test_non_root_creator_is_not_blocked_by_a_planted_sidecar(other_user: Any,
                                                               shared_dir: str) -> None:
    """In a sticky directory a user cannot replace another's file: a squatter on a channel's
    sidecar name must not stop the channel (its readers poll instead of sleeping)."""
    path = os.path.join(shared_dir, "c")
    _write_file(waiters_path(path), b"squat")  # root's file: the other user cannot replace it

    def create_and_read(p: str) -> float:
        with seqshm.create(p, "f8", 4) as w:
            w.write(np.full(4, 7.0))
            with seqshm.open(p) as r:
                v = float(r.snapshot()[0])
            w.close(unlink=True)
            return v

    assert other_user.run(create_and_read, path) == 7.0
    assert not os.path.exists(path)


# -- a writer in another pid namespace (a container) -------------------------------------------

_NS_WRITER = ("import sys, time, seqshm\n"
              "w = seqshm.create(sys.argv[1], 'f8', 2)\n"
              "print('ready', flush=True)\n"
              "time.sleep(60)\n")


def test_writer_in_another_pid_namespace(shared_dir: str) -> None:
    """A writer in a pid namespace of its own is pid 1 there: its readers here see it live
    (the lock, not the pid, says so), are told its pid is another namespace's, and see it die.
    Before: liveness came from this namespace's /proc (pid 1 here is init), and the message
    named this namespace's pid 1."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to start a writer in a new pid namespace")
    path = os.path.join(shared_dir, "ns")
    p = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
                          sys.executable, "-c", _NS_WRITER, path],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        with seqshm.open(path) as r:
            assert r.header["writer_pid"] == 1 and r.state is ChannelState.OPEN
            p.kill()
            p.wait()
            _until(lambda: r.state is ChannelState.WRITER_DIED, "the writer's death is seen")
            with pytest.raises(seqshm.ChannelEnded, match="pid 1 of another pid namespace"):
                r.wait(HANG_GUARD_S)
    finally:
        p.kill()
        p.wait()
        if p.stdout is not None:
            p.stdout.close()
