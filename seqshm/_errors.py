"""The exceptions seqshm raises: each names the file and says what was wrong with it."""

from __future__ import annotations

__all__ = ["SeqshmError", "FormatError", "VersionError", "ReadTimeout", "WriterBusy"]


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


class ReadTimeout(SeqshmError, TimeoutError):
    """No consistent snapshot within the reader's timeout: the writer stayed mid-write
    (stopped or died while writing) or overwrote the slot faster than a copy takes."""


class WriterBusy(SeqshmError, BlockingIOError):
    """Another writer holds the channel: one writer per channel."""
