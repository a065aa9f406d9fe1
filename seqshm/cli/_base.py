"""What every command shares: exit statuses, the errors they report and how, opening a channel
argument, argparse's number types, and sleeping until a deadline however far."""

from __future__ import annotations

import argparse
import errno
import math
import os
import pwd
import stat
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import seqshm
from seqshm._files import PlantedLink, describe_owner
from seqshm._lifecycle import describe_writer
from seqshm.cli._format import shown

if TYPE_CHECKING:
    from rich.console import Console

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EPILOG = """\
A channel is a path (a /dev/seqshm device or a file) or a bare NAME, looked up in /dev/seqshm,
then /dev/shm (never in the current directory: write ./NAME for a file here).

exit status:
  0    success (watch and record: also when the channel ended)
  1    runtime error: a read timed out (a writer stuck mid-write), another writer holds
       the channel, an I/O error
  2    usage error, no such channel, permission denied, not a seqshm channel
  130  interrupted by Ctrl-C (record still writes what it recorded); 128+N on signal N
       (SIGTERM 143, SIGHUP 129, 141 when the output pipe closed)
"""

#: What a CHANNEL argument is, as each command's --help says it.
CHANNEL_HELP = "channel: a path, or a NAME in /dev/seqshm or /dev/shm"


class Failure(Exception):
    """An error the command line reports as one line on stderr, with its exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP: stop as on Ctrl-C (every cleanup runs), exit 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def raise_signalled(signum: int, frame: object) -> None:
    raise Signalled(signum)


def make_console() -> Console:
    from rich.console import Console  # the command's, when it prints: not at import

    # no emoji: a channel named ":fire:" is shown as written (markup: channel text is given
    # to rich as Text, or with markup=False)
    return Console(highlight=False, emoji=False)


# -- channels ------------------------------------------------------------------------------------


def resolve(name: str) -> str:
    """The file a channel argument names (seqshm.resolve: never the current directory)."""
    try:
        return seqshm.resolve(name)
    except FileNotFoundError as e:
        raise Failure(e.strerror or str(e), EXIT_USAGE) from None


def open_channel(name: str, **kwargs: Any) -> seqshm.Reader:
    return seqshm.open(resolve(name), **kwargs)


def fstat(reader: seqshm.Reader) -> os.stat_result:
    """The stat of the file ``reader`` has open (not of its path: another user's file may be
    gone, or another one, by now)."""
    return reader._fstat()


def newest_write(reader: seqshm.Reader) -> tuple[int, int]:
    """The newest write's number and CLOCK_MONOTONIC timestamp (ns), read under the seqlock
    through begin()/validate() without copying the payload (a channel may hold gigabytes,
    and a command that shows a write number must not cost a copy of them). Raises ReadTimeout
    as read() does when the newest slot stays mid-write; a writer that overwrote the slot
    at every one of 1000 looks gives (head, 0): no timestamp to show."""
    for _ in range(1000):
        token = reader.begin()
        if reader.validate(token):
            return reader.seq, reader.timestamp_ns
    return reader.head, 0


def writer_alive(state: seqshm.ChannelState) -> bool:
    return state in (seqshm.ChannelState.OPEN, seqshm.ChannelState.REMOVED)


def writer_text(reader: seqshm.Reader) -> str:
    """Who writes the channel: the kernel for a device; for a file, the writer's pid in the
    library's words (describe_writer) as the file's header claims it, whether a writer lives
    as its liveness lock says (the channel's state, never a lookup of that pid: any process
    that may write the file may write any pid there), and the file's owner, who made it."""
    st = fstat(reader)
    if stat.S_ISCHR(st.st_mode):
        return "kernel"
    h = reader.header
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    return (f"{describe_writer(h['writer_pid'], h['writer_pidns'])} as the file says (owner "
            f"{owner}) ({'running' if writer_alive(reader.state) else 'exited'})")


# -- errors --------------------------------------------------------------------------------------


def _who_may_read(path: str) -> str:
    """What to do about a file this user may not open, for an OSError that says no more than
    "Permission denied" (the library's own say whose channel it is and what to do). The entry
    at ``path`` is described (lstat), never what a link there points to: a link another user
    planted is refused, not followed, and its target is none of this user's business."""
    try:
        st = os.lstat(path)
    except OSError:
        return "(run as a user who may open it)"
    if stat.S_ISLNK(st.st_mode):
        return "(a symbolic link: give the real path)"
    return (f"({describe_owner(st)}): run as a user who may open it, or have its owner "
            "change its mode")


#: Errors of a write that names no file: the standard output's (print() says no name).
_OUTPUT_ERRNOS = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO))


def error_text(e: BaseException) -> str:
    """The one line that says what went wrong, the file it names escaped (shown()); main()
    passes it through printable() too, for a name a library put into its message."""
    if isinstance(e, seqshm.SeqshmError) and e.path:
        return f"{shown(e.path)}: {e.reason}"
    if isinstance(e, OSError) and not isinstance(e, seqshm.SeqshmError):
        if isinstance(e, PlantedLink) and e.filename:  # its message says why and what to do
            return f"{shown(os.fsdecode(e.filename))}: {e.strerror}"
        if isinstance(e, PermissionError) and e.filename and e.strerror == os.strerror(
                e.errno or errno.EACCES):  # the system's words alone: say whose file it is
            name = os.fsdecode(e.filename)
            return f"{shown(name)}: {e.strerror} {_who_may_read(name)}"
        if e.filename:
            return f"{shown(os.fsdecode(e.filename))}: {e.strerror}"
        if e.errno in _OUTPUT_ERRNOS:  # no file named: our stdout (> /dev/full, a full disk)
            return f"cannot write the output: {e.strerror}"
        if e.strerror:
            return e.strerror
    return str(e)


# -- arguments -----------------------------------------------------------------------------------


def _number(minimum: float, strict: bool) -> Callable[[str], float]:
    """An argparse type: a finite number > (or >=) ``minimum``; argparse names the option."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(
                f"{text} is not {'>' if strict else '>='} {minimum:g}")
        return value
    return parse


positive = _number(0, strict=True)
nonnegative = _number(0, strict=False)


def at_least_one(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not >= 1")
    return value


# -- time ----------------------------------------------------------------------------------------

#: The longest single sleep: time.sleep() and Connection.poll() raise OverflowError past about
#: 292 years, which a rate of 1e-300 Hz or an interval of 1e300 s would ask for.
MAX_SLEEP_S = 86400.0


def sleep_until(deadline: float) -> None:
    """Sleep until time.monotonic() reaches ``deadline``, however far away."""
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, MAX_SLEEP_S))
