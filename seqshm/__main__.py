"""``python -m seqshm``: the same command line as ``seqshm``."""

import sys

from seqshm.cli import main

sys.exit(main())
