"""`python -m tests.vm ...` from the repository root: the same command line as tests/vm/run.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vmharness import main  # noqa: E402

sys.exit(main())
