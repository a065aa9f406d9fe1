"""Files in shared directories: the kernel resolves paths, and planted links are not followed."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat

__all__ = ["NAME_MAX", "Directory", "NewFile", "PlantedLink", "describe_owner", "new_file",
           "open_dir", "open_in", "reserve", "split"]

_O_PATH = getattr(os, "O_PATH", 0)
#: How many times open_in looks again at a name whose link was swapped for another file
#: between two of its system calls (another user racing it) before it gives up.
_SWAPS = 8
#: The longest file name, in bytes, of every Linux file system seqshm's channels live on.
NAME_MAX = 255


def split(path: str | os.PathLike[str] | bytes) -> tuple[str, str]:
    """(directory, name) of ``path`` as given, made absolute from the current directory but
    not resolved (no realpath: the directory is opened one component at a time, each looked
    up by the kernel in the one before: see Directory). The name is never empty, "." or
    ".."."""
    p = os.fsdecode(os.fspath(path))
    if not os.path.isabs(p):
        try:
            cwd = os.getcwd()
        except FileNotFoundError:  # the current directory was removed: it has no name now
            raise FileNotFoundError(errno.ENOENT, "a relative path, and the current directory "
                                    "was removed (it has no name): give an absolute path",
                                    p) from None
        p = os.path.join(cwd, p)
    # "." and empty components go (that changes nothing the kernel would resolve); ".." stays:
    # after a symlink it means the link target's parent, which only the kernel knows
    p = "/" + "/".join(c for c in p.split("/") if c not in ("", "."))
    directory, name = os.path.split(p)
    if name in ("", ".", ".."):
        raise IsADirectoryError(errno.EISDIR, "a directory, not a channel: name a file in it",
                                p)
    return directory or "/", name


def describe_owner(st: os.stat_result) -> str:
    """"mode 0640, owner alice, group telemetry" of a file's stat, for messages that say who may
    read it (a user or group name the system no longer knows is its number)."""
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"mode {stat.S_IMODE(st.st_mode):04o}, owner {owner}, group {group}"


def _fd_path(fd: int) -> str | None:
    """The kernel's name for what ``fd`` is open on (None without /proc)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


class PlantedLink(PermissionError):
    """A symbolic link another user planted in a directory every user may write, which seqshm
    does not follow (see _check_link)."""


def _check_link(dir_fd: int, name: str, link: os.stat_result) -> None:
    """Refuse to follow the symbolic link ``name`` (lstat ``link``) in the directory open as
    ``dir_fd`` where the kernel with fs.protected_symlinks=1 would: in a sticky world-writable
    directory, a link that belongs neither to this user nor to the directory's owner (another
    user planted it, to have this process open or create files where that user chose).
    PlantedLink (a PermissionError) naming the link and its owner, whatever
    fs.protected_symlinks says: seqshm does not rely on it being on."""
    st = os.fstat(dir_fd)
    if not (st.st_mode & stat.S_ISVTX and st.st_mode & stat.S_IWOTH):
        return
    if link.st_uid in (os.geteuid(), st.st_uid):
        return
    where = _fd_path(dir_fd) or "its directory"
    raise PlantedLink(
        errno.EACCES, f"a symbolic link that uid {link.st_uid} made in {where}, a directory "
        "every user may write: not followed (as fs.protected_symlinks does); give the real path",
        os.path.join(where, name))


def _open_directory(path: str) -> int:
    """An O_PATH descriptor of the directory ``path`` (absolute), opened one component at a
    time, each looked up by the kernel in the directory opened before it (so nothing can be
    swapped between a check and a use), a symbolic link among them followed only where
    _check_link allows (then by the kernel, as open(2) follows it). Planted at a directory
    component, a link would otherwise have a creator make its files, or a reader open a
    channel, in a directory another user chose, wherever fs.protected_symlinks is 0."""
    flags = _O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
    fd = os.open("/", flags)
    try:
        for c in path.split("/"):
            if c in ("", "."):
                continue
            try:
                nxt = os.open(c, flags | os.O_NOFOLLOW, dir_fd=fd)
            except NotADirectoryError:  # a link (O_NOFOLLOW) or not a directory at all
                link = os.stat(c, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(link.st_mode):
                    raise
                _check_link(fd, c, link)
                nxt = os.open(c, flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


class Directory:
    """A directory held open (O_PATH) by descriptor, so that every later lookup of a name in
    it happens in that very directory, whatever is renamed or planted above it."""

    def __init__(self, path: str, for_file: str | None = None) -> None:
        """Open the directory ``path`` (see _open_directory); errors name ``for_file``, the
        file asked for in it, or the planted link that was not followed."""
        self.fd = -1
        self.path = path
        named = for_file or path
        try:
            self.fd = _open_directory(path)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, f"no directory {path}", named) from None
        except NotADirectoryError:
            raise NotADirectoryError(errno.ENOTDIR, f"{path} is not a directory",
                                     named) from None
        except PlantedLink:
            raise  # it names the link itself
        except PermissionError:
            raise PermissionError(errno.EACCES, f"this user may not search {path}",
                                  named) from None
        # The directory's name as the kernel resolved it (".." after a symlink is the link
        # target's parent), for messages and for paths handed to users
        self.path = _fd_path(self.fd) or path

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


def open_dir(path: str | os.PathLike[str] | bytes) -> tuple[Directory, str]:
    """(the directory of ``path`` held open, the file name in it)."""
    directory, name = split(path)
    return Directory(directory, os.path.join(directory, name)), name


def open_in(d: Directory, name: str, flags: int, mode: int = 0o600) -> tuple[int, bool]:
    """open(2) ``name`` in ``d`` without following a symbolic link another user planted:
    (fd, whether a link was followed). A link at ``name`` is followed only where _check_link
    allows (as the kernel with fs.protected_symlinks=1 would); otherwise PlantedLink naming
    the link and its owner."""
    for _ in range(_SWAPS):
        try:
            return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=d.fd), False
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
        try:
            link = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "removed as it was opened", d.join(name)
                                    ) from None
        if not stat.S_ISLNK(link.st_mode):
            continue  # the link was swapped for something else meanwhile: look again
        _check_link(d.fd, name, link)
        # O_NOFOLLOW is off only here, for a link this user or the directory's owner made
        return os.open(name, flags | os.O_CLOEXEC, mode, dir_fd=d.fd), True
    raise OSError(errno.ELOOP, "the file at this name kept changing between a link and "
                  "another file as it was opened", d.join(name))


class NewFile:
    """A new file in directory ``d`` that has no name until it is linked into place
    (O_TMPFILE), so a creator killed before then (SIGKILL, or SIGTERM's default action, which
    runs no Python cleanup) leaves nothing behind; every name is made with linkat(2) and
    renameat(2) relative to ``d``, which never follow a link at the destination. Where
    O_TMPFILE or /proc is missing, a file with a unique hidden name (O_EXCL) stands in and is
    renamed into place."""

    def __init__(self, d: Directory, prefix: str, mode: int = 0o600) -> None:
        self.d = d
        # a temporary name is the prefix and 12 hex digits: the prefix is cut so that it fits
        # in NAME_MAX bytes (a channel's own name may take nearly all of them)
        self._prefix = os.fsdecode(os.fsencode(prefix)[:NAME_MAX - 12])
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


def new_file(d: Directory, prefix: str, path: str) -> NewFile:
    """NewFile(d, prefix) for the file meant for ``path``; its errors name ``path`` and, when
    the file system has no room for a new file (no free inode counts: another user may use
    them all up), what to do."""
    try:
        return NewFile(d, prefix)
    except OSError as e:
        why = (f"no room for a new file in {d.path} (see `df -i {d.path}` and `df -h "
               f"{d.path}`): free some" if e.errno == errno.ENOSPC else
               f"cannot create a file in {d.path}: {e.strerror}")
        raise OSError(e.errno, why, path) from None


def reserve(fd: int, size: int, path: str) -> None:
    """posix_fallocate() ``size`` bytes of the new file meant for ``path``; its errors name
    ``path`` and, for a full file system, what to do."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        directory = os.path.dirname(path)
        why = (f"no room for its {size} bytes in {directory} (see `df -h {directory}`): "
               "free some, or make the channel smaller (shape, nr_slots)"
               if e.errno == errno.ENOSPC else f"cannot reserve its {size} bytes: {e.strerror}")
        raise OSError(e.errno, why, path) from None
