"""Mutated real channel files through the public Python reader (tests/fuzz/fuzzing.py): bit
flips, edge values in header words and slot lines, bytes copied from another channel (issue
16, recipe 3), truncation and growth, field-table and name edits. On each, open, snapshot,
read, history, view + validate, apply, follow, state and wait must end within their timeouts
(a worker process that stops answering is killed and reported), raise only seqshm's own errors
or an OSError naming the file, and never crash. Bounded for CI: SEQSHM_FUZZ_FILES_SECONDS
(default 45) of files from SEQSHM_FUZZ_SEED (default 16); a failure names the seed and file
that reproduce it (`python tests/fuzz/fuzzing.py files --seed S --start N --count 1`)."""

from __future__ import annotations

import os

import pytest
from fuzzing import run_files

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("SEQSHM_FUZZ_FILES_SECONDS", "45"))
SEED = int(os.environ.get("SEQSHM_FUZZ_SEED", "16"))


def test_mutated_channel_files_never_hang_crash_or_mislead_a_reader() -> None:
    report = run_files(SEED, 0, 10**9, seconds=SECONDS)
    assert not report.failures, "\n".join(report.failures[:20])
    assert report.files >= 1000
    # the mutations reach past the header check into every call, and are refused there too
    for call in ("snapshot", "history", "follow", "view+validate", "state", "wait"):
        assert report.outcomes.get((call, "ok"), 0) > 0, report.outcomes
    assert report.outcomes.get(("open", "FormatError"), 0) > 0
    assert report.outcomes.get(("follow", "FormatError"), 0) > 0


@pytest.mark.parametrize("inject,expected", [
    ("hang", "hung"), ("crash", "SIGSEGV"), ("untyped", "KeyError")])
def test_the_file_fuzzer_reports_a_hang_a_crash_and_an_untyped_error(
        monkeypatch: pytest.MonkeyPatch, inject: str, expected: str) -> None:
    monkeypatch.setenv("SEQSHM_FUZZ_INJECT", f"{inject}:3")
    report = run_files(SEED, 0, 6, hang_s=10)
    assert len(report.failures) == 1, report.failures
    assert "file 3" in report.failures[0] and expected in report.failures[0], report.failures
    assert report.files == (6 if inject == "untyped" else 5)  # it goes on after the bad one
