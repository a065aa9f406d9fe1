"""Files in shared directories: the kernel resolves paths, and planted links are not followed."""

from __future__ import annotations

import errno
import os
import stat

__all__ = ["Directory", "NewFile", "open_dir", "open_in", "split"]

_O_PATH = getattr(os, "O_PATH", 0)


def split(path: str | os.PathLike[str] | bytes) -> tuple[str, str]:
    """(directory, name) of ``path`` as given, made absolute from the current directory but
    not resolved (no realpath: the kernel, which applies fs.protected_symlinks, resolves the
    directory when it is opened). The name is never empty, "." or ".."."""
    p = os.fsdecode(os.fspath(path))
    if not os.path.isabs(p):
        p = os.path.join(os.getcwd(), p)
    # "." and empty components go (that changes nothing the kernel would resolve); ".." stays:
    # after a symlink it means the link target's parent, which only the kernel knows
    p = "/" + "/".join(c for c in p.split("/") if c not in ("", "."))
    directory, name = os.path.split(p)
    if name in ("", ".", ".."):
        raise IsADirectoryError(errno.EISDIR, "a directory, not a channel: name a file in it",
                                p)
    return directory or "/", name


class Directory:
    """A directory held open (O_PATH) by descriptor, so that every later lookup of a name in
    it happens in that very directory, whatever is renamed or planted above it."""

    def __init__(self, path: str, for_file: str | None = None) -> None:
        """Open the directory ``path``; errors name ``for_file``, the file asked for in it."""
        self.fd = -1
        self.path = path
        named = for_file or path
        try:
            self.fd = os.open(path, _O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, f"no directory {path}", named) from None
        except NotADirectoryError:
            raise NotADirectoryError(errno.ENOTDIR, f"{path} is not a directory",
                                     named) from None
        except PermissionError:
            raise PermissionError(errno.EACCES, f"this user may not search {path}",
                                  named) from None
        # The directory's name as the kernel resolved it (".." after a symlink is the link
        # target's parent), for messages and for paths handed to users
        try:
            self.path = os.readlink(f"/proc/self/fd/{self.fd}")
        except OSError:
            pass

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self) -> None:
        self.close()

    def listdir(self) -> list[str]:
        """The names in the directory (an O_PATH descriptor cannot be read: a readable one is
        opened relative to it, so it is the same directory)."""
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.fd)
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def join(self, name: str) -> str:
        return os.path.join(self.path, name)

    def shared(self) -> bool:
        """Whether others may plant files here: world-writable and sticky, as /dev/shm and /tmp
        are (where fs.protected_symlinks and glibc's shm_open refuse others' links)."""
        st = os.fstat(self.fd)
        return bool(st.st_mode & stat.S_ISVTX and st.st_mode & stat.S_IWOTH)


def open_dir(path: str | os.PathLike[str] | bytes) -> tuple[Directory, str]:
    """(the directory of ``path`` held open, the file name in it)."""
    directory, name = split(path)
    return Directory(directory, os.path.join(directory, name)), name


def open_in(d: Directory, name: str, flags: int, mode: int = 0o600) -> tuple[int, bool]:
    """open(2) ``name`` in ``d`` without following a symbolic link another user planted:
    (fd, whether a link was followed). A link at ``name`` is followed only where the kernel
    with fs.protected_symlinks=1 would follow it: outside a sticky world-writable directory,
    or when the link belongs to this user or to the directory's owner. Otherwise
    PermissionError naming the link and its owner (whatever fs.protected_symlinks says: seqshm
    does not rely on it being on)."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=d.fd), False
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        try:
            link = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
        except OSError:
            raise e from None
        if not stat.S_ISLNK(link.st_mode):
            raise
        if d.shared() and link.st_uid not in (os.geteuid(), os.fstat(d.fd).st_uid):
            raise PermissionError(
                errno.EACCES, f"a symbolic link that uid {link.st_uid} made in {d.path}, a "
                "directory every user may write: not followed (as fs.protected_symlinks does); "
                "open the channel by its own path", d.join(name)) from None
        # O_NOFOLLOW is off only here, for a link this user or the directory's owner made
        return os.open(name, flags | os.O_CLOEXEC, mode, dir_fd=d.fd), True


class NewFile:
    """A new file in directory ``d`` that has no name until it is linked into place
    (O_TMPFILE), so a creator killed before then (SIGKILL, or SIGTERM's default action, which
    runs no Python cleanup) leaves nothing behind; every name is made with linkat(2) and
    renameat(2) relative to ``d``, which never follow a link at the destination. Where
    O_TMPFILE or /proc is missing, a file with a unique hidden name (O_EXCL) stands in and is
    renamed into place."""

    def __init__(self, d: Directory, prefix: str, mode: int = 0o600) -> None:
        self.d = d
        self._prefix = prefix
        self._name: str | None = None
        try:
            self.fd = os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, mode, dir_fd=d.fd)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
        else:
            if os.path.exists(self._proc()):  # linkable through /proc (see link())
                return
            os.close(self.fd)
        self.fd, self._name = self._named(mode)

    def _named(self, mode: int) -> tuple[int, str]:
        for _ in range(100):
            name = f"{self._prefix}{os.urandom(6).hex()}"
            try:
                return os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                               | os.O_CLOEXEC, mode, dir_fd=self.d.fd), name
            except FileExistsError:
                continue
        raise FileExistsError(errno.EEXIST, "no free temporary name", self.d.join(self._prefix))

    def _proc(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def link(self, name: str) -> None:
        """Give the file ``name``; FileExistsError if anything (a link included) has it."""
        if self._name is None:
            # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N names an O_TMPFILE file (without
            # CAP_DAC_READ_SEARCH, which AT_EMPTY_PATH needs); the destination is never followed
            os.link(self._proc(), name, dst_dir_fd=self.d.fd, follow_symlinks=True)
        else:
            os.link(self._name, name, src_dir_fd=self.d.fd, dst_dir_fd=self.d.fd,
                    follow_symlinks=False)

    def named(self) -> str:
        """A temporary name for the file in its directory (made once), for renaming over an
        existing one."""
        if self._name is None:
            for _ in range(100):
                name = f"{self._prefix}{os.urandom(6).hex()}"
                try:
                    self.link(name)
                except FileExistsError:
                    continue
                self._name = name
                break
            else:
                raise FileExistsError(errno.EEXIST, "no free temporary name",
                                      self.d.join(self._prefix))
        return self._name

    def replace(self, name: str) -> None:
        """Put the file at ``name``, replacing whatever entry is there (a link is replaced,
        never followed: rename(2))."""
        os.replace(self.named(), name, src_dir_fd=self.d.fd, dst_dir_fd=self.d.fd)
        self._name = None

    def discard_name(self) -> None:
        """Remove the temporary name, if the file still has one."""
        name, self._name = self._name, None
        if name is not None:
            try:
                os.unlink(name, dir_fd=self.d.fd)
            except FileNotFoundError:
                pass
