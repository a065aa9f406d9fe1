"""The exceptions seqshm raises: each names the file and says what was wrong with it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from seqshm._lifecycle import ChannelState

__all__ = [
    "SeqshmError",
    "FormatError",
    "VersionError",
    "FileTruncated",
    "ReadTimeout",
    "WriterBusy",
    "ClosedError",
    "ChannelEnded",
]


class SeqshmError(Exception):
    """Base class of seqshm's own errors. ``path`` is the channel's file, when there is one."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.reason = message


class FormatError(SeqshmError, ValueError):
    """The file is not a usable seqshm region: wrong magic, truncated or inconsistent header,
    payload beyond the region, or an element type NumPy cannot represent."""


class VersionError(FormatError):
    """A seqshm region written for another ABI version."""


class FileTruncated(FormatError):
    """The channel's file shrank under this process's mapping (another process truncated it):
    its data is gone. Reading or writing through this object raises this from then on; close
    it and reopen the channel."""


class ReadTimeout(SeqshmError, TimeoutError):
    """No consistent snapshot within the reader's timeout: the writer stayed mid-write
    (stopped or died while writing) or overwrote the slot faster than a copy takes.

    ``stuck``: True when the slot kept the same odd sequence count throughout the read (a
    writer stopped or dead in its write), False when the writer moved on meanwhile (it
    overwrote the slot during every copy: use more slots), None when the reader cannot say."""

    def __init__(self, message: str, path: str | None = None, stuck: bool | None = None
                 ) -> None:
        super().__init__(message, path)
        self.stuck = stuck


class WriterBusy(SeqshmError, BlockingIOError):
    """Another writer holds the channel: one writer per channel (across threads, processes and
    fork()); also what a creator that lost a race to another creator gets."""


class ClosedError(SeqshmError, ValueError):
    """A call on a Reader or Writer after its ``close()`` (also from another thread while the
    call waited)."""


class ChannelEnded(SeqshmError, EOFError):
    """The channel will get no more writes: ``state`` says why (its writer closed it, died, or
    a new channel replaced it at its path). Raised by waits; snapshots still return the last
    write."""

    def __init__(self, message: str, path: str | None, state: ChannelState) -> None:
        super().__init__(message, path)
        self.state = state
