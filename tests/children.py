"""Running a test's scenario in a fresh interpreter: a crash kills the child, not the suite."""

from __future__ import annotations

import subprocess
import sys
import textwrap

#: Not a speed limit: a call that takes this long has ignored a signal, a close or a timeout.
HANG_GUARD_S = 5.0


def run_child(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (so a crash kills the child, not the suite)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout)


def crashed(p: subprocess.CompletedProcess[str]) -> str:
    return f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
