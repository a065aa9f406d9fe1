"""Where the host suite's userspace channels live and their name prefix (conftest removes them)."""

from __future__ import annotations

import os
import tempfile


def _shm_dir() -> str:
    """Where userspace channels of the tests live: /dev/shm if usable, else the temp dir."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK | os.X_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


SHM_DIR = _shm_dir()
#: Every channel a test makes in SHM_DIR starts with this; what is left at the end is an error.
PREFIX = f"seqshm-test-{os.getpid()}-"
