"""What a second, unprivileged local user can and cannot do to a channel (docs/security.md, 2-3)."""

from __future__ import annotations

import ctypes
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
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_cli import run, writing

import seqshm
from seqshm import ChannelState, _api, _core, _sidecar
from seqshm.cli import info as cli_info
from seqshm.cli import list as cli_list

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
        assert stat.S_IMODE(os.stat(_sidecar.path_of(path)).st_mode) == 0o666
        w.close(unlink=True)
    with seqshm.create(path, "f8", 4, mode=0o640) as w:
        assert stat.S_IMODE(os.stat(_sidecar.path_of(path)).st_mode) == 0o660
        with pytest.raises(PermissionError):
            other_user.run(os.open, _sidecar.path_of(path), os.O_RDWR)
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
    other_user.run(_symlink, os.path.join(private_dir, "side"), _sidecar.path_of(path))
    with seqshm.create(path, "f8", 4) as w:
        assert os.listdir(private_dir) == []
        side = os.lstat(_sidecar.path_of(path))
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
    _write_file(_sidecar.path_of(path), b"squat")  # root's file: the other user cannot replace it

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


# == What a breaker found (branch breaker1): each test fails before its fix, or is a strict
# xfail that names the finding where the fix is a design change or lives on another branch ==

# -- finding 1: record -o writes through another user's link ----------------------------------


def test_record_output_does_not_follow_planted_symlink(other_user: Any, shared_dir: str,
                                                       private_dir: str) -> None:
    """docs/security.md (section 3) names this test. Another user plants out.npy -> a file of
    root's in a sticky directory (as /tmp is); root records to out.npy. Before: record
    resolved the output with realpath() and renamed the recording over the link's target
    (root's file became a .npy). Fixed on branch cli (1eada99), not yet on main."""
    precious = os.path.join(private_dir, "precious")
    _write_file(precious, b"root's own data\n")
    out = os.path.join(shared_dir, "out.npy")
    other_user.run(_symlink, precious, out)
    with seqshm.create(os.path.join(shared_dir, "ch"), np.int64, 2, nr_slots=16) as w:
        with writing(w):  # its thread stops before the channel closes
            run("record", w.path, "-o", out, "--count", "3")
        w.close(unlink=True)
    with open(precious, "rb") as f:
        assert f.read() == b"root's own data\n"
    assert sorted(os.listdir(private_dir)) == ["precious"]


# -- finding 2: a link another user planted at a directory component is followed -------------

def _mkdir(path: str) -> None:
    os.mkdir(path, 0o755)


def test_create_does_not_follow_planted_directory_link(other_user: Any, shared_dir: str,
                                                       private_dir: str) -> None:
    """The other user plants shared/app -> root's private directory; root creates
    shared/app/c (as a service started with `mkdir -p /dev/shm/app` would, which a link to a
    directory satisfies). Before: the kernel, with fs.protected_symlinks=0, followed the link:
    root's channel and a root-owned, world-writable sidecar appeared in the private
    directory, and the other user could write that root-owned file."""
    app = os.path.join(shared_dir, "app")
    other_user.run(_symlink, private_dir, app)
    for overwrite in (False, True):
        with pytest.raises(PermissionError, match=r"uid \d+ made") as e:
            seqshm.create(os.path.join(app, "c"), "f8", 4, overwrite=overwrite)
        assert e.value.filename == app
    assert os.listdir(private_dir) == []


def test_reader_refuses_planted_directory_link(other_user: Any, shared_dir: str) -> None:
    """A reader asked for shared/app/c must not read the other user's channel through the
    other user's link at shared/app; this user's own link to a directory is followed, as the
    kernel would."""
    theirs = os.path.join(shared_dir, "theirs")

    def plant() -> None:
        os.mkdir(theirs)
        with seqshm.create(os.path.join(theirs, "c"), "f8", 4) as w:
            w.write(np.full(4, 666.0))
        os.symlink(theirs, os.path.join(shared_dir, "app"))

    other_user.run(plant)
    with pytest.raises(PermissionError, match=r"uid \d+ made") as e:
        seqshm.open(os.path.join(shared_dir, "app", "c"))
    assert e.value.filename == os.path.join(shared_dir, "app")
    with pytest.raises(PermissionError):
        seqshm.snapshot(os.path.join(shared_dir, "app", "c"))
    mine = os.path.join(shared_dir, "mine")
    os.symlink(theirs, mine)  # this user's own link: followed
    with seqshm.open(os.path.join(mine, "c")) as r:
        assert r.snapshot()[0] == 666.0


def test_record_output_does_not_follow_planted_directory_link(
        other_user: Any, shared_dir: str, private_dir: str) -> None:
    app = os.path.join(shared_dir, "app")
    other_user.run(_symlink, private_dir, app)
    with seqshm.create(os.path.join(shared_dir, "ch"), np.int64, 2, nr_slots=16) as w:
        with writing(w):  # its thread stops before the channel closes
            run("record", w.path, "-o", os.path.join(app, "out.npy"), "--count", "3")
        w.close(unlink=True)
    assert os.listdir(private_dir) == []


# -- finding 3: the stale-sidecar sweep believes what a reader wrote ---------------------------

def _rewrite_line0(side: str) -> None:
    """What any reader may do: the sidecar is writable by those who may read the channel."""
    fd = os.open(side, os.O_RDWR)
    try:
        os.pwrite(fd, b"\x01" * 16, 8)  # the magic kept, (st_dev, st_ino) of no channel
    finally:
        os.close(fd)


def test_sweep_keeps_a_live_channels_sidecar_whatever_a_reader_writes(
        other_user: Any, shared_dir: str) -> None:
    """A reader rewrites line 0 of a live channel's sidecar; a minute later (aged here with
    utime) any create() in the directory swept it: the live channel lost its sidecar for
    good, so every reader that opened it afterwards polled. The sweep now asks the channel's
    header (which only its writer writes) whether the sidecar is its own."""
    path = os.path.join(shared_dir, "c")
    with seqshm.create(path, "f8", 4) as w:
        side = _sidecar.path_of(path)
        before = os.stat(side)
        other_user.run(_rewrite_line0, side)
        old = time.time() - 3600
        os.utime(side, (old, old))
        seqshm.create(os.path.join(shared_dir, "other"), "f8", 4).close(unlink=True)
        after = os.lstat(side)
        assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
        w.close(unlink=True)


def test_sweep_still_removes_a_dead_channels_sidecar(shared_dir: str) -> None:
    """The other side of the sweep (a guard): an old sidecar whose channel file is gone (rm),
    or whose name's file is not a channel naming it, is removed."""
    old = time.time() - 3600
    gone, other = os.path.join(shared_dir, "gone"), os.path.join(shared_dir, "plain")
    w = seqshm.create(gone, "f8", 4)
    os.unlink(gone)
    _write_file(other, b"not a channel")
    os.link(_sidecar.path_of(gone), _sidecar.path_of(other))
    for side in (_sidecar.path_of(gone), _sidecar.path_of(other)):
        os.utime(side, (old, old))
    seqshm.create(os.path.join(shared_dir, "next"), "f8", 4).close(unlink=True)
    assert not os.path.lexists(_sidecar.path_of(gone))
    assert not os.path.lexists(_sidecar.path_of(other))
    w.close()


# -- finding 4: a channel its creator may only read cannot be restarted ------------------------

def _restart_read_only(path: str, mode: int) -> str:
    w = seqshm.create(path, "f8", 4, mode=mode)
    w.write(np.ones(4))
    w.close()
    with seqshm.create(path, "f8", 4, mode=mode, overwrite=True) as w2:
        w2.write(np.full(4, 2.0))
        w2.close(unlink=True)
    return "restarted"


@pytest.mark.parametrize("mode", [0o444, 0o400], ids=["0444", "0400"])
def test_overwrite_restarts_a_channel_its_creator_may_only_read(other_user: Any,
                                                                shared_dir: str,
                                                                mode: int) -> None:
    """A non-root writer whose channel's mode lets it only read the file (0444: nobody may
    write it but through the writer's descriptor) restarts it with overwrite=True. Before:
    OSError(EBADF) without a file name (the takeover lock is a write lock, and the old file
    was open read-only)."""
    assert other_user.run(_restart_read_only, os.path.join(shared_dir, "ro"), mode) == \
        "restarted"


def _replace_theirs(path: str) -> str:
    try:
        seqshm.create(path, "f8", 4, overwrite=True).close(unlink=True)
    except OSError as e:
        return f"{type(e).__name__} {e.filename} {e}"
    return "replaced"


def test_overwrite_of_another_users_dead_channel_names_the_path(other_user: Any,
                                                                shared_dir: str) -> None:
    """In a sticky directory a user may not replace another's file: create(overwrite=True)
    over root's dead channel is an error naming the channel (not EBADF, not a temporary)."""
    path = os.path.join(shared_dir, "rootch")
    seqshm.create(path, "f8", 4).close()
    got = other_user.run(_replace_theirs, path)
    assert got.startswith("PermissionError " + path), got
    assert [n for n in os.listdir(shared_dir) if n.startswith(".rootch.")
            and not n.endswith(".waiters")] == []


# -- finding 5: seqshm list can be made to fail by another user's files ------------------------

def _churn(d: str, stop_after: float) -> None:
    """Another user's files that come and go under one name, as fast as it can: a channel
    file, a FIFO, nothing."""
    x = os.path.join(d, "x")
    w = seqshm.create(os.path.join(d, ".tmpl"), "f8", 4)
    w.close()
    with open(os.path.join(d, ".tmpl"), "rb") as f:
        data = f.read()
    end = time.monotonic() + stop_after
    i = 0
    while time.monotonic() < end:
        t = os.path.join(d, f".y{i % 2}")
        with open(t, "wb") as f:
            f.write(data)
        os.rename(t, x)
        os.mkfifo(t)
        os.rename(t, x)
        os.unlink(x)
        i += 1


def test_list_survives_another_users_racing_files(other_user: Any, shared_dir: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Another user swaps its own file under one name between a channel, a FIFO and nothing;
    `seqshm list` must list the other channels (docs/security.md, section 3: one bad channel
    never stops the others being listed). Before: it raised ESPIPE (pread of a FIFO that
    stat() had seen as a regular file) or FileNotFoundError (stat of the path after the
    channel had been opened) about once in 40 listings. (The same race, with a link to a
    device swapped in, had list open the device: once in ~700,000 probes here, too rare for
    a test; the fix opens the file once, never through another user's link.)"""
    good = os.path.join(shared_dir, "good")
    monkeypatch.setattr(_api, "SEARCH_DIRS", (shared_dir,))
    with seqshm.create(good, "f8", 4):
        churner = other_user.start(_churn, shared_dir, 60.0)
        try:
            deadline = time.monotonic() + 60
            while not os.path.lexists(os.path.join(shared_dir, ".tmpl")):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            for _ in range(400):
                rows = cli_list.list_channels(with_rate=False)
                assert good in [r["path"] for r in rows]
        finally:
            churner.kill()
            churner.join()


# -- finding 6: seqshm info opens the channel's path a second time -----------------------------

def _make_channel(path: str) -> None:
    with seqshm.create(path, "f8", 4, nr_slots=2) as w:
        w.write(np.ones(4))


def _swap_in_fifo(path: str) -> None:
    tmp = path + ".fifo"
    os.mkfifo(tmp)
    os.rename(tmp, path)


def _swap_in_link(target: str, path: str) -> None:
    tmp = path + ".link"
    os.symlink(target, tmp)
    os.rename(tmp, path)


@pytest.mark.parametrize("swap", ["fifo", "link"])
def test_info_reads_the_file_it_opened(other_user: Any, shared_dir: str, private_dir: str,
                                       swap: str) -> None:
    """`seqshm info` of another user's channel: after the reader opened it, that user swaps a
    FIFO or a link (to a file root may read and the other user may not) in at its name.
    Before: info opened the path again (following the link) for the slot words: ESPIPE on
    the FIFO, and root's own file read as the channel's slots."""
    path = os.path.join(shared_dir, "x")
    other_user.run(_make_channel, path)
    secret = os.path.join(private_dir, "secret")
    _write_file(secret, b"\xff" * 8192)  # every word odd: 'mid-write' if read as slots
    os.chmod(secret, 0o600)
    with seqshm.open(path) as r:
        if swap == "fifo":
            other_user.run(_swap_in_fifo, path)
        else:
            other_user.run(_swap_in_link, secret, path)
        j = cli_info.info_json(r)
    assert j["mid_write_slots"] == [] and j["writes"] == 1


# -- finding 7: long names: an error that leaves a closed channel behind -----------------------

@pytest.mark.parametrize("length", [247, 250, 255])
def test_a_name_too_long_for_its_sidecar_is_refused_up_front(shared_dir: str,
                                                             length: int) -> None:
    """A channel's sidecar is named .NAME.waiters: a NAME over 246 bytes leaves it no name.
    Before: create() linked the channel, then failed to name the sidecar (ENAMETOOLONG naming
    /proc/self/fd/N) and left the channel file, closed, at the path."""
    path = os.path.join(shared_dir, "n" * length)
    with pytest.raises(ValueError, match="246") as e:
        seqshm.create(path, "f8", 4)
    assert path in str(e.value)
    assert os.listdir(shared_dir) == []


def test_a_long_name_can_be_overwritten(shared_dir: str) -> None:
    """A 246-byte name: created, then replaced with overwrite=True. Before: the replacement's
    temporary name (.NAME.<12 hex>) was too long (ENAMETOOLONG naming /proc/self/fd/N)."""
    path = os.path.join(shared_dir, "é" * 123)  # 246 bytes
    seqshm.create(path, "f8", 4).close()
    with seqshm.create(path, "f8", 4, overwrite=True) as w:
        w.write(np.ones(4))
        with seqshm.open(path) as r:
            assert r.snapshot()[0] == 1.0
        w.close(unlink=True)
    assert os.listdir(shared_dir) == []


# -- finding 8: no free inode is an error naming '.' --------------------------------------------

@pytest.fixture
def tiny_tmpfs(tmp_path: Any) -> Iterator[str]:
    mnt = str(tmp_path / "tiny")
    os.mkdir(mnt)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M,nr_inodes=8,mode=1777", "tmpfs",
                       mnt], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", mnt], capture_output=True)


def test_no_free_inode_is_an_error_naming_the_channel(tiny_tmpfs: str) -> None:
    """Another user can use up a tmpfs's inodes (nr_inodes) as well as its bytes. Before:
    OSError(ENOSPC) whose file name was '.'."""
    i = 0
    while True:
        try:
            open(os.path.join(tiny_tmpfs, f"f{i}"), "w").close()
        except OSError:
            break
        i += 1
    path = os.path.join(tiny_tmpfs, "c")
    with pytest.raises(OSError) as e:
        seqshm.create(path, "f8", 4)
    assert e.value.errno == 28 and e.value.filename == path
    assert "df -i" in str(e.value)


# -- finding 9: another user's tasks parked on the head futex slow every write ----------------

def _park_waiters(path: str, n: int, wakes: Any, parked: Any, pids: Any) -> None:
    """What any process that may read the channel can do: count itself once in the sidecar,
    as a sleeping reader does, and park ``n`` tasks on the channel's head futex (FUTEX_WAIT on
    a read-only mapping), each parking again at once when woken."""
    side = os.open(_sidecar.path_of(path), os.O_RDWR)
    count = struct.unpack("=I", os.pread(side, 4, _sidecar._WAITERS["count"]))[0]
    os.pwrite(side, struct.pack("=I", count + 1), _sidecar._WAITERS["count"])
    fd = os.open(path, os.O_RDONLY)
    m = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED, mmap.PROT_READ)
    base = np.frombuffer(m, np.uint8).ctypes.data
    head = base + _core.abi_layout()["header"]["head"]
    libc = ctypes.CDLL(None, use_errno=True)
    ts = struct.pack("ql", int(HANG_GUARD_S), 0)
    for i in range(n):
        pid = os.fork()
        if pid:
            pids[i] = pid
        else:
            while True:
                v = ctypes.c_uint32.from_address(head).value
                with parked.get_lock():
                    parked.value += 1
                libc.syscall(202, ctypes.c_void_p(head), 0, ctypes.c_uint32(v),
                             ctypes.c_char_p(ts), None, 0)  # FUTEX_WAIT, shared
                with wakes.get_lock():
                    wakes.value += 1
    signal.pause()


def test_another_users_parked_tasks_do_not_multiply_the_writers_wakes(
        other_user: Any, shared_dir: str) -> None:
    """docs/security.md, section 2: a reader cannot slow the writer's process (a misbehaving
    one costs a FUTEX_WAKE, ~250 ns, per write). Another user parks 8 tasks on the head
    futex. Before: every write woke all 8 with FUTEX_WAKE(INT_MAX) (the writer paid per
    task: 10 parked tasks made a write take ~0.2 ms here, 100 ~2 ms, 400 ~6 ms, against
    0.1 us with none); now it wakes one, and woken readers pass the wake on. Asserted
    without timing: how many of its tasks 10 writes woke, at most 2 a write."""
    path = os.path.join(shared_dir, "c")
    ctx = multiprocessing.get_context("fork")
    nr_tasks, nr_writes = 8, 10
    wakes, parked, pids = ctx.Value("l", 0), ctx.Value("l", 0), ctx.Array("l", nr_tasks)
    with seqshm.create(path, "f8", 4) as w:
        p = other_user.start(_park_waiters, path, nr_tasks, wakes, parked, pids)
        try:
            deadline = time.monotonic() + HANG_GUARD_S
            while parked.value < nr_tasks:
                assert time.monotonic() < deadline, "the other user's tasks did not park"
                time.sleep(0.01)
            for _ in range(nr_writes):
                time.sleep(0.05)  # every task parked again
                w.write(np.ones(4))
            time.sleep(0.2)
            assert wakes.value <= 2 * nr_writes, \
                f"{nr_writes} writes woke {wakes.value} of the other user's tasks"
        finally:
            for pid in pids:
                if pid:
                    os.kill(pid, signal.SIGKILL)
            p.kill()
            p.join()
        w.close(unlink=True)


# -- finding 10: a directory at a channel's sidecar name stops create() -----------------------

def _plant_sidecar_dir(side: str, full: bool) -> None:
    os.mkdir(side)
    if full:
        _write_file(os.path.join(side, "f"), b"")


@pytest.mark.parametrize("full", [False, True], ids=["empty", "not empty"])
def test_a_directory_at_the_sidecar_name_does_not_stop_create(other_user: Any,
                                                               shared_dir: str,
                                                               full: bool) -> None:
    """docs/security.md, section 7: a squatter on a channel's sidecar name only makes its
    readers poll. Another user makes a directory at .c.waiters: root's create(c) (and a
    restart with overwrite=True) failed with IsADirectoryError naming a temporary (rename(2)
    of the new sidecar over a directory), so any local user could stop root's channel from
    ever being created. Now the channel is made without a sidecar, as for a name another
    user's file squats where the creator may not replace it."""
    path = os.path.join(shared_dir, "c")
    other_user.run(_plant_sidecar_dir, _sidecar.path_of(path), full)
    for overwrite in (False, True):
        with seqshm.create(path, "f8", 4, overwrite=overwrite) as w:
            w.write(np.full(4, 3.0))
            with seqshm.open(path) as r:
                assert r.snapshot()[0] == 3.0
                assert not r.wait(0.05)  # polls: no sidecar to sleep on
            w.close()
    assert sorted(os.listdir(shared_dir)) == [".c.waiters", "c"]


# -- finding 11: errors of a race with another user's files name no path ---------------------

def test_open_names_the_channel_when_a_link_is_swapped_for_a_file(
        shared_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another user's link at x is swapped for a FIFO between the reader's O_NOFOLLOW open
    (ELOOP) and its look at what x is (the race, made deterministic by swapping in that
    look). Before: OSError(ELOOP) naming 'x' alone. The reader looks again (and here refuses
    the FIFO with FormatError naming the whole path)."""
    from seqshm import _files
    x = os.path.join(shared_dir, "x")
    os.symlink("/nowhere", x)
    real_stat = os.stat

    def stat_then_swap(p: Any, *a: Any, **k: Any) -> os.stat_result:
        if p == "x" and os.path.islink(x):
            os.unlink(x)
            os.mkfifo(x)
        return real_stat(p, *a, **k)

    monkeypatch.setattr(_files.os, "stat", stat_then_swap)
    with pytest.raises((seqshm.FormatError, OSError)) as e:
        seqshm.open(x)
    assert getattr(e.value, "filename", None) == x or x in str(e.value), repr(e.value)


def test_create_names_the_channel_when_its_directory_is_removed(
        shared_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The directory (another user's, say) is removed while create() fills the new file.
    Before: FileNotFoundError naming /proc/self/fd/N."""
    from seqshm import _writer
    d = os.path.join(shared_dir, "d")
    os.mkdir(d)
    real = _writer._take_path

    def rmdir_first(*a: Any, **k: Any) -> None:
        os.rmdir(d)
        real(*a, **k)

    monkeypatch.setattr(_writer, "_take_path", rmdir_first)
    path = os.path.join(d, "c")
    with pytest.raises(FileNotFoundError) as e:
        seqshm.create(path, "f8", 4)
    assert e.value.filename == path and "removed" in str(e.value)


def _open_message(path: str) -> str:
    try:
        seqshm.open(path)
    except PermissionError as e:
        return str(e)
    return "opened"


def test_a_kernel_channel_this_user_may_not_read_gets_the_kernels_advice(
        other_user: Any, private_dir: str) -> None:
    """A user who may not open a kernel channel was told to have its writer call
    create(mode=0o644), a userspace writer's remedy: the device's mode is its producer's and
    its group the udev rule's, so that is what the message says. A file channel keeps its
    own advice, and the entry is looked at, never what a link there points to."""
    d = Path(private_dir)
    dev = d / "cpustat"
    os.mknod(dev, 0o400 | stat.S_IFCHR, os.makedev(1, 3))  # a root-only node, as 0400
    msg = other_user.run(_open_message, str(dev))
    assert str(dev) in msg and "kernel channel (mode 0400)" in msg and "udev" in msg, msg
    assert "create(mode=" not in msg, msg
    with seqshm.create(str(d / "file"), "f8", mode=0o600) as w:
        w.write(1.0)
        msg = other_user.run(_open_message, w.path)
        assert "create(mode=0o644)" in msg and "kernel" not in msg, msg
        assert "(mode 0600, owner root, group root)" in msg, msg  # whose file it is
