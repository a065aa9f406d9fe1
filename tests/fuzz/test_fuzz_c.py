"""libFuzzer with AddressSanitizer and UndefinedBehaviorSanitizer over the shared C steps every
reader takes (tests/fuzz/fuzz_*.c): the header check, the layout, and a reader's snapshot and
follow steps over any region the check accepts. Bounded for CI: each target runs
SEQSHM_FUZZ_SECONDS (default 30) from the kept corpus (tests/fuzz/corpus/, never written to).
Without clang (scripts/test installs clang-15 as root) these tests fail; they never skip."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from fuzzing import CORPUS, TARGETS, build, run_libfuzzer

pytestmark = pytest.mark.slow

SECONDS = int(os.environ.get("SEQSHM_FUZZ_SECONDS", "30"))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("libfuzzer")


@pytest.mark.parametrize("target", TARGETS)
def test_libfuzzer_finds_no_crash_leak_hang_or_broken_invariant(work: Path, target: str) -> None:
    run = run_libfuzzer(build(target, work), target, SECONDS, work)
    assert run.returncode == 0, f"fuzz_{target} found a failing input (saved in {work}):\n{run.log}"
    assert run.executions > 10_000, run.log


@pytest.mark.parametrize("target", TARGETS)
def test_kept_corpus_is_real_channels(target: str) -> None:
    seeds = sorted((CORPUS / target).iterdir())
    assert len(seeds) >= 4 and all(0 < p.stat().st_size <= 64 * 1024 for p in seeds)


def test_region_target_catches_the_old_follow_step(work: Path) -> None:
    """The follow step before issue 16 spins over the kept seed of a writer stopped between its
    slot's even seq and its store of head: the target's progress check must fail on it."""
    binary = build("region", work, old_follow_step=True)
    done = subprocess.run([str(binary), str(CORPUS / "region" / "stopped-before-head")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Assertion" in done.stderr and "next > before" in done.stderr, done.stderr[-3000:]
