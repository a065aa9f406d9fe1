"""breaker2's findings against docs/security.md: each test fails on main 42e89ab (xfail strict)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
from channel_dir import SHM_DIR
from exporting import live_channels, parse, pick

from seqshm import _core
from seqshm._dtype import element_type

_MAGIC_OFFSET = _core.abi_layout()["header"]["magic"]
_HEAD_OFFSET = _core.abi_layout()["header"]["head"]


def hostile_channel(path: str, dtype: object, shape: tuple[int, ...], *, head: int = 1) -> int:
    """A channel file as any local user can make one by hand in /dev/shm: a valid header for
    ``dtype`` and ``shape`` over a sparse file (it costs its maker one page of tmpfs whatever
    payload it claims), ``head`` writes claimed, no writer. Its region size."""
    header, size = _core.build_header("hostile", 1, shape, element_type(dtype), 0, 0)
    header = bytearray(header)
    struct.pack_into("=Q", header, _MAGIC_OFFSET, 0x00216d6873716573)  # SEQSHM_MAGIC
    struct.pack_into("=Q", header, _HEAD_OFFSET, head)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.ftruncate(fd, size)  # sparse: no page of the payload is allocated
        os.pwrite(fd, bytes(header), 0)
    finally:
        os.close(fd)
    return int(size)


def allocated(path: str) -> int:
    """Bytes of tmpfs the file holds (a read through a shared mapping of a hole in a tmpfs
    file allocates the page: what a reader copied shows here)."""
    return os.stat(path).st_blocks * 512


@pytest.fixture
def hostile_paths(shm_name: str) -> Iterator[list[str]]:
    """Paths for hostile files next to this test's channel, removed afterwards."""
    made: list[str] = []
    yield made
    for p in made:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


# -- finding 1 -------------------------------------------------------------------------------

_MIB = 1 << 20
#: A payload no exported series needs to be copied for: 256 MiB.
_BIG = 256 * _MIB


@pytest.mark.xfail(strict=True, reason=(
    "breaker2 finding 1: export copies a channel's whole payload whatever series it makes: "
    "MAX_SERIES_PER_CHANNEL counts series, not bytes, so a sparse channel of complex numbers "
    "(0 series) or of one padded record (1 series) costs every scrape its whole payload "
    "(a 2 GiB file OOM-kills `export --once` in a 1 GiB cgroup; on a host, the OOM killer)"))
@pytest.mark.parametrize("dtype, shape", [
    ("<c16", (_BIG // 16,)),                                                  # 0 series
    (np.dtype({"names": ["x"], "formats": ["<f8"], "itemsize": _BIG}), (1,)),  # 1 series
], ids=["complex-0-series", "padded-record-1-series"])
def test_export_does_not_copy_a_hostile_channels_payload_it_makes_no_series_of(
        shm_name: str, hostile_paths: list[str], dtype: object, shape: tuple[int, ...]) -> None:
    good = os.path.join(SHM_DIR, f"{shm_name}-good")
    bad = os.path.join(SHM_DIR, f"{shm_name}-bad")
    hostile_paths.append(bad)
    hostile_channel(bad, dtype, shape)
    with live_channels((good, "good", [7.0])):
        done = subprocess.run([sys.executable, "-m", "seqshm", "export", "--once",
                               f"{shm_name}-*"], capture_output=True, timeout=120, cwd="/")
    assert pick(parse(done.stdout), "seqshm_channel_up", channel=good)
    # the exporter faulted the whole payload in (and copied it into a new array of as much)
    assert allocated(bad) < 16 * _MIB, (
        f"export --once copied {allocated(bad) // _MIB} MiB of a channel that makes "
        f"{'no' if np.dtype(dtype).kind == 'c' else 'one'} series")


# -- finding 2 -------------------------------------------------------------------------------

@pytest.mark.xfail(strict=True, reason=(
    "breaker2 finding 2: `seqshm info` copies the whole payload (reader.read()) only to show "
    "the write number and time: a sparse 512 GiB channel is a MemoryError traceback, one "
    "under RAM is copied whole (8 GiB: OOM-killed in a 1 GiB cgroup)"))
def test_info_of_a_huge_sparse_channel_is_its_header_not_a_memory_error(
        shm_name: str, hostile_paths: list[str]) -> None:
    bad = os.path.join(SHM_DIR, f"{shm_name}-huge")
    hostile_paths.append(bad)
    hostile_channel(bad, "<u1", (1 << 39,))  # 512 GiB claimed, one page held
    done = subprocess.run([sys.executable, "-m", "seqshm", "info", bad], capture_output=True,
                          timeout=120, cwd="/")
    err = done.stderr.decode(errors="replace")
    assert "Traceback" not in err and "MemoryError" not in err, err
    assert done.returncode == 0, err  # the header is valid: info shows it
    assert b"549755813888" in done.stdout  # its payload size


@pytest.mark.xfail(strict=True, reason=(
    "breaker2 finding 2: `seqshm info` copies the whole payload only to show the write number"))
def test_info_does_not_copy_the_payload(shm_name: str, hostile_paths: list[str]) -> None:
    bad = os.path.join(SHM_DIR, f"{shm_name}-big")
    hostile_paths.append(bad)
    hostile_channel(bad, "<u1", (_BIG,))
    done = subprocess.run([sys.executable, "-m", "seqshm", "info", bad], capture_output=True,
                          timeout=120, cwd="/")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert allocated(bad) < 16 * _MIB, f"info copied {allocated(bad) // _MIB} MiB"
