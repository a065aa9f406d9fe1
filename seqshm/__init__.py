"""seqshm: lock-free consistent snapshots of live data shared by a kernel or userspace writer."""

from seqshm._api import create, open, resolve, snapshot
from seqshm._core import ABI_VERSION, Reader, Writer, monotonic_ns
from seqshm._errors import FormatError, ReadTimeout, SeqshmError, VersionError, WriterBusy
from seqshm._types import History, ReaderStats, Snapshot

__version__ = "0.1.0"

__all__ = [
    "ABI_VERSION",
    "FormatError",
    "History",
    "ReadTimeout",
    "Reader",
    "ReaderStats",
    "SeqshmError",
    "Snapshot",
    "VersionError",
    "Writer",
    "WriterBusy",
    "create",
    "monotonic_ns",
    "open",
    "resolve",
    "snapshot",
]
