"""create(): racing and killed creators leave one channel or nothing behind; paths through
symbolic links and ".."; a full file system, non-ASCII names, errors that name the path."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from children import HANG_GUARD_S

import seqshm
from seqshm import ChannelState, WriterBusy


def _create_in_child(path: str, barrier: Any, results: Any, start: float) -> None:
    while time.monotonic() < start:  # both start within microseconds (a barrier is looser)
        pass
    try:
        w = seqshm.create(path, np.int64, 2, overwrite=True)
    except WriterBusy:
        results.put(("busy", os.getpid(), 0))
        barrier.wait()
        return
    st = os.stat(path)
    same = (st.st_dev, st.st_ino) == (os.fstat(w._fd).st_dev, os.fstat(w._fd).st_ino)
    results.put(("won", os.getpid(), int(same)))
    barrier.wait()  # both are done before the winner lets go
    w.close()



def test_of_two_racing_creators_exactly_one_wins(shm_path: str) -> None:
    ctx = multiprocessing.get_context("fork")
    for _ in range(40):  # before the fix both won in about 1 round of 7
        with seqshm.create(shm_path, np.int64, 2, overwrite=True):
            pass  # an existing, unlocked channel
        barrier = ctx.Barrier(2)
        results = ctx.SimpleQueue()
        start = time.monotonic() + 0.1
        procs = [ctx.Process(target=_create_in_child, args=(shm_path, barrier, results, start))
                 for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(HANG_GUARD_S * 4)
        outcome = sorted(results.get() for _ in procs)
        assert [o[0] for o in outcome] == ["busy", "won"], outcome
        assert outcome[1][2] == 1, "the winner's file is not the one at the path"
    os.unlink(shm_path)



def test_create_errors_name_the_path(tmp_path: Any) -> None:
    path = str(tmp_path / "c")
    for kwargs in ({"nr_slots": 3}, {"shape": (0,)}, {"shape": (1 << 40, 1 << 10)}):
        with pytest.raises(ValueError, match=path):
            seqshm.create(path, np.int64, **kwargs)
    with pytest.raises(FileNotFoundError) as e:
        seqshm.create(str(tmp_path / "no" / "c"), np.int64)
    assert e.value.filename == str(tmp_path / "no" / "c")
    os.mkdir(path)
    with pytest.raises(IsADirectoryError):
        seqshm.create(path, np.int64, overwrite=True)
    link = str(tmp_path / "dangling")
    os.symlink(str(tmp_path / "nowhere"), link)
    for overwrite in (False, True):
        # never written through (another user may have planted it: docs/security.md, 3)
        with pytest.raises(FileExistsError, match="symbolic link|channel exists") as e:
            seqshm.create(link, np.int64, overwrite=overwrite)
        assert e.value.filename == link
    assert os.path.islink(link) and not os.path.lexists(tmp_path / "nowhere")



_DIE_IN_CREATE = textwrap.dedent("""
import os, signal, sys
import numpy as np
import seqshm
path, sig, nth, overwrite = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
calls = [0]
fallocate = os.posix_fallocate

def dying(fd, offset, length):
    calls[0] += 1
    if calls[0] == nth:  # 1: the sidecar's, 2: the channel file's
        os.kill(os.getpid(), sig)  # default action: no Python cleanup runs
    fallocate(fd, offset, length)

os.posix_fallocate = dying
seqshm.create(path, np.uint64, (1024,), overwrite=overwrite)
""")



@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@pytest.mark.parametrize("nth", [1, 2], ids=["in-sidecar", "in-channel"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["new", "overwrite"])
def test_a_creator_killed_mid_create_leaves_no_file(make_path: Callable[[], str], sig: int,
                                                    nth: int, overwrite: bool) -> None:
    """Killed while it reserves a file's memory (the longest step for a large channel), a
    creator leaves neither a temporary channel file nor a temporary sidecar in the directory:
    both have no name until they are linked into place (O_TMPFILE)."""
    path = make_path()
    directory = os.path.dirname(path)
    if overwrite:  # a channel already there, whose writer is gone
        seqshm.create(path, np.uint64, (1024,)).close()
    before = set(os.listdir(directory))
    p = subprocess.run([sys.executable, "-c", _DIE_IN_CREATE, path, str(int(sig)), str(nth),
                        "1" if overwrite else "0"], capture_output=True, text=True, timeout=60)
    assert p.returncode == -sig, p.stderr
    assert set(os.listdir(directory)) == before



def test_a_full_file_system_is_an_error_that_names_the_channel(tmp_path: Any) -> None:
    """ENOSPC from a 1 MiB tmpfs: an OSError naming the channel and what to do, and nothing
    left in the directory."""
    mnt = str(tmp_path / "small")
    os.mkdir(mnt)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", mnt],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        path = os.path.join(mnt, "big")
        with pytest.raises(OSError) as e:
            seqshm.create(path, np.uint8, (4 << 20,))
        assert e.value.errno == 28 and e.value.filename == path
        assert "df -h" in str(e.value) and "smaller" in str(e.value)
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", mnt], capture_output=True)



def test_a_file_name_that_is_not_ascii_still_makes_a_channel(tmp_path: Any) -> None:
    path = str(tmp_path / "café\u2603")
    with seqshm.create(path, np.uint8, (4,)) as w, seqshm.open(path) as r:
        w.write(np.arange(4, dtype=np.uint8))
        assert r.name.isascii() and r.name.isprintable() and r.name.startswith("caf")
        assert list(r.snapshot()) == [0, 1, 2, 3]



def test_a_creator_killed_as_it_names_the_sidecar_leaves_no_temporary(
        make_path: Callable[[], str]) -> None:
    """The sidecar of a new channel is linked into place, never renamed from a temporary."""
    path = make_path()
    code = textwrap.dedent("""
        import os, signal, sys
        import numpy as np
        import seqshm
        os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        w = seqshm.create(sys.argv[1], np.uint64, (1024,))
        os.kill(os.getpid(), signal.SIGKILL)  # and the writer dies as soon as it exists
    """)
    p = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr
    left = sorted(os.listdir(os.path.dirname(path)))
    assert not [f for f in left if f.endswith(".tmp")], left



def test_overwriting_a_symlink_is_refused_and_strands_no_reader(tmp_path: Any) -> None:
    """create(LINK, overwrite=True) over a closed channel at the link's target: refused (a
    link at a channel's path may have been planted by another user to have the creator
    replace or write its target: docs/security.md, section 3); the link, the old channel
    and its reader are untouched, and create() at the target itself replaces the channel."""
    real, link = str(tmp_path / "real"), str(tmp_path / "link")
    w = seqshm.create(real, np.uint8, (4,))
    w.write(np.full(4, 1, np.uint8))
    os.symlink(real, link)
    with seqshm.open(real, reopen=True, timeout=5) as r:
        assert r.snapshot()[0] == 1
        w.close()
        with pytest.raises(FileExistsError, match="symbolic link"):
            seqshm.create(link, np.uint8, (4,), overwrite=True)
        assert os.path.islink(link) and r.state is ChannelState.CLOSED
        with seqshm.create(real, np.uint8, (4,), overwrite=True) as w2:
            w2.write(np.full(4, 2, np.uint8))
            assert r.wait(timeout=5)
            assert r.snapshot()[0] == 2



def test_dot_dot_after_a_symlink_is_resolved_as_the_os_does(tmp_path: Any) -> None:
    base = tmp_path / "real" / "sub"
    base.mkdir(parents=True)
    os.symlink(base, tmp_path / "link")
    with seqshm.create(str(tmp_path / "link" / ".." / "chan"), np.uint8, (4,)) as w:
        assert w.path == str(tmp_path / "real" / "chan")
        assert os.path.exists(tmp_path / "real" / "chan")
        assert not os.path.exists(tmp_path / "chan")



def test_open_resolves_dot_dot_after_a_symlink_as_the_os_does(tmp_path: Any) -> None:
    base = tmp_path / "real" / "sub"
    base.mkdir(parents=True)
    os.symlink(base, tmp_path / "link")
    with seqshm.create(str(tmp_path / "real" / "chan"), np.uint8, (4,)) as w:
        w.write(np.arange(4, dtype=np.uint8))
        with seqshm.open(str(tmp_path / "link" / ".." / "chan")) as r:
            assert r.path == str(tmp_path / "real" / "chan")
            assert r.state is ChannelState.OPEN and list(r.snapshot()) == [0, 1, 2, 3]
