"""Where ``seqshm record`` writes: the output's directory, opened by the kernel and held as a
descriptor, the spool's name beside the output and its lock, and every new file made, linked
or renamed relative to that descriptor. Pure: no terminal, no channel."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat

from seqshm._files import Directory, NewFile, PlantedLink
from seqshm.cli._format import printable, shown


class DestinationUnwritable(ValueError):
    """``record -o FILE`` cannot create FILE: said before recording starts, not after. Also
    what ``record --recover FILE`` says when there is nothing it can recover."""


#: What a recording's spool is called beside its output FILE: ``.FILE.recording``.
SPOOL_SUFFIX = ".recording"


def spool_name(base: str) -> str:
    """The name of the spool of a recording to the file ``base`` (in the same directory)."""
    return f".{base}{SPOOL_SUFFIX}"


def _try_lock(fd: int) -> bool:
    """Take the write lock that says a recording is writing this spool (a POSIX record lock:
    only a descriptor open for writing can take it, and the kernel drops it when the process
    ends, however it ends); False if another process holds it. A process holds it through
    its one descriptor of the spool: closing any other descriptor of that file would drop it,
    so a recording opens its spool once."""
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise
    return True


class Destination:
    """The file a recording goes to: its directory, opened by the kernel and kept as a
    descriptor, and its name there. Every file of the recording (the spool, a temporary of the
    conversion, the output) is created with O_CREAT | O_EXCL | O_NOFOLLOW, linked or renamed
    relative to that descriptor: whatever link another user plants at one of those names is
    refused or replaced, never followed. ``path`` is as the user wrote it (what messages
    name)."""

    def __init__(self, path: str) -> None:
        self.path = path
        directory, self.base = os.path.split(path)
        self.directory = directory or "."
        if self.base in ("", ".", ".."):
            raise DestinationUnwritable(
                f"{shown(path)} is a directory: give a file name, e.g. "
                f"{shown(os.path.join(path, 'recording.npy'))}")
        try:
            # Each component looked up by the kernel, a link another user planted in a
            # sticky directory not followed (seqshm._files); a readable descriptor of that
            # very directory then, for fsync()
            self._dir = Directory(self.directory, path)
            try:
                self.dir_fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                                      dir_fd=self._dir.fd)
            except BaseException:
                self._dir.close()
                raise
        except PlantedLink as e:
            why = printable(e.strerror or str(e))
            raise DestinationUnwritable(f"{shown(path)}: {why}: record to another place") from None
        except FileNotFoundError:
            raise DestinationUnwritable(
                f"{shown(path)}: the directory {shown(self.directory)} does not exist: "
                "create it first, or record to another place") from None
        except NotADirectoryError:
            raise DestinationUnwritable(
                f"{shown(path)}: {shown(self.directory)} is not a directory: record to "
                "another place") from None
        except OSError as e:
            raise DestinationUnwritable(
                f"{shown(path)}: cannot open the directory {shown(self.directory)} "
                f"({e.strerror}): record to another place") from None
        self.spool = spool_name(self.base)

    def close(self) -> None:
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1
            self._dir.close()

    def __enter__(self) -> Destination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def shown_spool(self) -> str:
        """The spool's path as messages give it."""
        return shown(os.path.join(os.path.dirname(self.path), self.spool))

    def _lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def check(self) -> None:
        """DestinationUnwritable unless a recording may start: the output is nothing or a
        regular file (not a directory, a FIFO, a device, nor a symbolic link, which a
        recording would replace rather than write through: said now rather than done), and
        no spool of another recording to it is there (one running, or left by one killed:
        its writes are not thrown away)."""
        st = self._lstat(self.base)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise DestinationUnwritable(
                f"{shown(self.path)} is a directory: give a file name, e.g. "
                f"{shown(os.path.join(self.path, 'recording.npy'))}")
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise DestinationUnwritable(
                f"{shown(self.path)} is a symbolic link: a recording replaces its output, "
                "never writes through a link: give the file it points to, or remove the link")
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise DestinationUnwritable(
                f"{shown(self.path)} exists and is not a regular file (a FIFO or a "
                "device): the recording is written whole, to a file")
        if self._lstat(self.spool) is not None:
            raise self._spool_taken()

    def _spool_taken(self) -> DestinationUnwritable:
        """What to say when the spool's name is taken."""
        st = self._lstat(self.spool)
        if st is not None and (not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid()):
            what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else (
                "not a regular file" if not stat.S_ISREG(st.st_mode) else "another user's file")
            return DestinationUnwritable(
                f"{shown(self.path)}: {self.shown_spool()}, where the recording would go as it "
                f"comes, is {what}: remove it, or record to another place")
        try:
            fd = os.open(self.spool, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=self.dir_fd)
        except OSError:
            busy = False  # not ours to open (another user's, a link): not a live recording
        else:
            try:
                busy = not _try_lock(fd)
            finally:
                os.close(fd)  # drops the lock just taken, if it was
        if busy:
            return DestinationUnwritable(
                f"{shown(self.path)}: another seqshm record is recording to it now (into "
                f"{self.shown_spool()}): record to another file")
        return DestinationUnwritable(
            f"{shown(self.path)}: a recording to it that was stopped before it ended (kill -9, "
            f"a crash, a power cut) left its writes in {self.shown_spool()}: "
            f"`seqshm record --recover {shown(self.path)}` saves them as {shown(self.path)} "
            "(or np.load() that file); remove it to record anew")

    def create_spool(self) -> int:
        """The spool, new, open for reading and writing, and locked (DestinationUnwritable
        if it cannot be made). Its mode is 0666 less the umask, as any new file's; the output
        that it becomes keeps it."""
        try:
            fd = os.open(self.spool, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o666, dir_fd=self.dir_fd)
        except FileExistsError:
            raise self._spool_taken() from None
        except OSError as e:
            raise DestinationUnwritable(
                f"{shown(self.path)}: cannot create a file in {shown(self.directory)} "
                f"({e.strerror}): record to another place") from None
        if not _try_lock(fd):  # cannot be: the file is new; but never write a locked spool
            os.close(fd)
            raise self._spool_taken()
        return fd

    def open_spool(self) -> int:
        """The spool a recording left, open for reading and writing and locked, for
        ``record --recover`` (DestinationUnwritable if there is none, or it is in use)."""
        try:
            fd = os.open(self.spool, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=self.dir_fd)
        except FileNotFoundError:
            raise DestinationUnwritable(
                f"{shown(self.path)}: there is no recording to recover ({self.shown_spool()} "
                "is not there)") from None
        except OSError as e:
            raise DestinationUnwritable(
                f"{self.shown_spool()}: cannot open it ({e.strerror})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode) or not _try_lock(fd):
            os.close(fd)
            raise DestinationUnwritable(
                f"{self.shown_spool()} is not a recording that ended early: either another "
                "seqshm record is writing it now, or it is not a regular file")
        return fd

    def new_file(self) -> NewFile:
        """A new file in the directory for the converted output, with no name until it is put
        in place (put()): a conversion killed halfway leaves nothing behind (seqshm._files's
        NewFile, as create() makes a channel). Its mode is 0666 less the umask."""
        return NewFile(self._dir, f".{self.base}.", 0o666)

    def put(self, new: NewFile) -> None:
        """Rename the file ``new`` over the output (renameat: a link there is replaced, not
        followed), and make the rename durable."""
        new.replace(self.base)
        os.fsync(self.dir_fd)

    def replace(self, name: str) -> None:
        """Rename ``name`` over the output (renameat: a link there is replaced, not
        followed), and make the rename durable."""
        os.replace(name, self.base, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        os.fsync(self.dir_fd)

    def unlink(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.dir_fd)


def recovery_target(path: str) -> str:
    """The output ``record --recover PATH`` writes: PATH, or, when PATH is a spool itself
    (``.FILE.recording``), the FILE it was recording to."""
    directory, base = os.path.split(path)
    if base.startswith(".") and base.endswith(SPOOL_SUFFIX) and len(base) > 1 + len(
            SPOOL_SUFFIX):
        return os.path.join(directory, base[1 : -len(SPOOL_SUFFIX)])
    return path
