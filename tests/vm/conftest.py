"""pytest wiring for the VM tests: a closing summary of each guest run (`vm` is in setup.cfg)."""

from __future__ import annotations

import pytest

# Reports of the guest runs made in this session, printed at the end (test_vm.py appends).
VM_REPORTS: list[str] = []


@pytest.fixture
def vm_report():
    """Call with a report string to have it printed in the session's closing summary."""
    return VM_REPORTS.append


def pytest_terminal_summary(terminalreporter):
    if VM_REPORTS:
        terminalreporter.section("seqshm VM runs")
        for report in VM_REPORTS:
            terminalreporter.write_line(report)
