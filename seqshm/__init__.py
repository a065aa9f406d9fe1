"""seqshm: lock-free consistent snapshots of live data shared by a kernel or userspace writer."""

from seqshm._api import open, resolve, snapshot
from seqshm._core import ABI_VERSION, monotonic_ns
from seqshm._errors import (
    ChannelEnded,
    ClosedError,
    FileTruncated,
    FormatError,
    ReadTimeout,
    SeqshmError,
    VersionError,
    WriterBusy,
)
from seqshm._lifecycle import ChannelState
from seqshm._reader import Reader
from seqshm._types import History, ReaderStats, Sample, Snapshot
from seqshm._version import __version__  # written by Meson from meson.build
from seqshm._writer import Writer, create

__all__ = [
    "ABI_VERSION",
    "__version__",
    "ChannelEnded",
    "ChannelState",
    "ClosedError",
    "FileTruncated",
    "FormatError",
    "History",
    "ReadTimeout",
    "Reader",
    "ReaderStats",
    "Sample",
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
