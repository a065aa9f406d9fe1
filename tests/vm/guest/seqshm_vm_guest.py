"""pytest plugin loaded in the VM guest: which kernel ran the tests, where seqshm came from."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def pytest_report_header(config):
    return [f"seqshm-vm: kernel {os.uname().release}, python {sys.executable}"]


def _seqshm_origin() -> str:
    mod = sys.modules.get("seqshm")
    when = "imported by the tests"
    if mod is None:
        # Only now, after the tests, so that this check cannot change what the tests imported.
        when = "not imported by the tests; imported afterwards"
        try:
            import seqshm as mod  # noqa: PLC0415
        except Exception as exc:  # noqa: BLE001 - reported, never raised
            return f"seqshm: {when}: failed: {type(exc).__name__}: {exc}"
    return f"seqshm: {when} from {getattr(mod, '__file__', None)}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    line = _seqshm_origin()
    terminalreporter.write_line(f"seqshm-vm: {line}")
    out = os.environ.get("SEQSHM_VM_OUT")
    if out:
        Path(out, "seqshm_origin.txt").write_text(line + "\n")
