"""The protocol is written once: its steps are defined only in module/protocol/ (compiled into
both seqshm.ko and the extension, which the QEMU guests and every import exercise), neither
side stores a slot's seq or head by hand, and the kernel's producers are clients of the
public in-kernel API that the device core does not know."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODULE = REPO / "module"
SHARED = MODULE / "protocol"
USERSPACE_C = REPO / "seqshm" / "src"

# The shared protocol's functions: the layout, the check and every seqlock step.
SHARED_FUNCTIONS = [
    "seqshm_header_check", "seqshm_layout_init", "seqshm_geometry_init", "seqshm_head",
    "seqshm_state", "seqshm_read_begin", "seqshm_read_retry", "seqshm_read_meta",
    "seqshm_pick_slot", "seqshm_try_read_slot", "seqshm_write_slot_begin",
    "seqshm_write_slot_end", "seqshm_write_close", "seqshm_header_publish", "seqshm_follow_step",
    "seqshm_follow_once",
]
PRODUCERS = ["seqshm_cpustat.c", "seqshm_selftest.c", "seqshm_apitest.c", "seqshm_example.c"]
DEVICE_CORE = ["seqshm_main.c", "seqshm_channel.c", "seqshm_internal.h"]


def c_sources() -> list[Path]:
    files = [p for p in MODULE.rglob("*") if p.suffix in (".c", ".h") and "bench" not in p.parts]
    return files + [p for p in USERSPACE_C.iterdir() if p.suffix in (".c", ".h")]


def strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)


@pytest.mark.parametrize("name", SHARED_FUNCTIONS)
def test_each_protocol_step_is_defined_once_in_the_shared_source(name: str) -> None:
    definition = re.compile(rf"^[A-Za-z_][\w \t\*]*\b{name}\s*\([^;{{]*\)\s*\{{", re.M)
    where = [p.relative_to(REPO).as_posix() for p in c_sources()
             if definition.search(strip_comments(p.read_text()))]
    assert len(where) == 1 and where[0].startswith("module/protocol/"), where


def test_no_side_stores_a_slots_seq_or_head_by_hand() -> None:
    """Outside the shared source, seq and head are only read (and guard.c's private
    replacement memory is filled before anyone can see it)."""
    target = r"[\w\->\.\(\)]*(->seq|hdr->head|\bh->head)\b"
    store = re.compile(rf"{target}\s*=[^=]|"
                       rf"(WRITE_ONCE|smp_store_release|__atomic_store_n|seqshm_store_\w+)"
                       rf"\(\s*&?{target}")
    offenders = []
    for p in c_sources():
        if SHARED in p.parents or p.name == "guard.c":
            continue
        for n, line in enumerate(strip_comments(p.read_text()).splitlines(), 1):
            if store.search(line):
                offenders.append(f"{p.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("producer", PRODUCERS)
def test_producers_use_only_the_public_kernel_api(producer: str) -> None:
    text = (MODULE / producer).read_text()
    includes = re.findall(r'#include\s+[<"]([^>"]+)[>"]', text)
    ours = [i for i in includes if "seqshm" in i]
    assert set(ours) <= {"linux/seqshm.h", "seqshm_producers.h"}, ours
    assert "ch->" not in strip_comments(text), "a producer reaches into the channel object"


@pytest.mark.parametrize("core", DEVICE_CORE)
def test_the_device_core_does_not_know_the_producers(core: str) -> None:
    text = strip_comments((MODULE / core).read_text())
    assert not re.search(r"cpustat|selftest", text), core


def test_both_builds_compile_the_shared_source() -> None:
    """The extension's meson build and the module's Kbuild both list the one shared .c."""
    assert "module/protocol/seqshm_protocol.c" in (REPO / "meson.build").read_text()
    assert "protocol/seqshm_protocol.o" in (MODULE / "Kbuild").read_text()
