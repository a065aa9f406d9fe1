#!/usr/bin/env python3
"""Command line for the VM tests: tests/vm/run.py --kernel 6.1 --pytest-args '-k mmap'."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vmharness import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
