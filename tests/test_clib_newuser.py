"""libseqshm as a new C user meets it: the quick start's C path run verbatim, the examples built
as strict C, and the library called the careless ways (a directory that resolves past
PATH_MAX, a full file system, a removed working directory, a file that reads short, a handle
used in a forked child), each with the documented errno, a message naming the file and no
sanitizer report."""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from clib import Lib, build

import seqshm

REPO = Path(__file__).resolve().parent.parent
MISUSE_SRC = REPO / "tests" / "c" / "seqshm_misuse.c"
QUICKSTART = REPO / "docs" / "quickstart.md"
EXAMPLES = REPO / "examples" / "c"
#: A bound for hangs only, never a speed check.
HANG_S = 60.0


@pytest.fixture(scope="session")
def newuser_libs(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Lib]:
    work = tmp_path_factory.mktemp("libseqshm-newuser")
    return {False: build(work, False), True: build(work, True)}


@pytest.fixture(scope="session", params=[False, True], ids=["plain", "asan+ubsan"])
def misuse(request: pytest.FixtureRequest, newuser_libs: dict[bool, Lib],
           tmp_path_factory: pytest.TempPathFactory) -> Misuse:
    lib = newuser_libs[request.param]
    out = tmp_path_factory.mktemp("misuse") / "seqshm_misuse"
    return Misuse(lib, lib.compile(MISUSE_SRC, out))


class Misuse:
    """tests/c/seqshm_misuse.c built against one build of the library."""

    def __init__(self, lib: Lib, path: Path) -> None:
        self.lib, self.path = lib, path

    def run(self, *args: str, cwd: str | None = None, shell_prefix: str = "") -> dict[str, str]:
        """{name: 'rc=RC msg=MESSAGE'} of the program's result lines; any sanitizer report or
        crash fails the test."""
        cmd = [str(self.path), *args]
        if shell_prefix:  # a shell step first (cd into a directory it then removes)
            cmd = ["sh", "-c", f'{shell_prefix} && exec "$@"', "sh", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_S, cwd=cwd,
                              env=self.lib.env())
        assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
        assert "Sanitizer" not in done.stderr and "runtime error" not in done.stderr, done.stderr
        return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def result(line: str) -> tuple[int, str]:
    m = re.fullmatch(r"rc=(-?\d+) msg=(.*)", line)
    assert m, line
    return int(m.group(1)), m.group(2)


# -- the documentation's C path, verbatim ----------------------------------------------------

def _c_section(text: str) -> str:
    start = text.find("\n## From C")
    assert start >= 0, "docs/quickstart.md has no C path (a section '## From C ...')"
    end = text.find("\n## ", start + 1)
    return text[start: end if end >= 0 else len(text)]


def test_quickstart_c_path_runs_verbatim(tmp_path: Path, shm_name: str) -> None:
    """Every sh block of the quick start's C section, in order, as written (only the demo
    channels' names made unique and HOME a fresh directory): build and install libseqshm
    into a private prefix, compile both examples with pkg-config, a C writer read by Python,
    a Python writer read by C."""
    section = _c_section(QUICKSTART.read_text())
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    assert blocks, "the C section of docs/quickstart.md has no sh blocks"
    script = "\n".join(blocks)
    for demo in ("c_demo", "py_demo"):
        assert demo in script, f"the quick start's C path no longer uses {demo}"
        script = re.sub(rf"\b{demo}\b", f"{shm_name}-{demo}", script)
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, HOME=str(home),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    for var in ("PKG_CONFIG_PATH", "LD_LIBRARY_PATH"):
        env.pop(var, None)
    try:
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
    finally:
        for demo in ("c_demo", "py_demo"):
            for name in (f"{shm_name}-{demo}", f".{shm_name}-{demo}.waiters"):
                Path("/dev/shm", name).unlink(missing_ok=True)
    assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    out = done.stdout
    assert "the writer closed the channel" in out, out  # read_c_writer.py followed to the end
    assert re.search(r"^write \d+: t=\S+ count=\d+ ", out, flags=re.M), out
    assert "closed by its writer" in out, out  # print_channel saw the Python writer's end
    assert (home / "seqshm-c" / "include" / "seqshm.h").is_file()


@pytest.mark.parametrize("std", ["c99", "c11", "c17"])
def test_examples_build_as_strict_iso_c(newuser_libs: dict[bool, Lib], tmp_path: Path,
                                        std: str) -> None:
    """A C programmer copies the examples into a project built with -std=c11 (not gnu11):
    they must say which POSIX functions they use (_POSIX_C_SOURCE), not lean on the
    compiler's GNU default."""
    lib = newuser_libs[False]
    for src in sorted(EXAMPLES.glob("*.c")):
        lib.compile(src, tmp_path / src.stem, f"-std={std}", "-pedantic", link=("-lm",))


def test_example_comments_give_a_command_that_links(newuser_libs: dict[bool, Lib],
                                                    tmp_path: Path) -> None:
    """Each example's header comment gives the cc command that builds it: that command, run
    as written (in the example's folder, against the installed library), links."""
    lib = newuser_libs[False]
    for src in sorted(EXAMPLES.glob("*.c")):
        cmds = re.findall(r"^\s*\*\s+(cc .*)$", src.read_text(), flags=re.M)
        assert cmds, f"{src.name}: no cc command in its comment"
        for cmd in cmds:
            cmd = cmd.replace(f"-o {src.stem}", f"-o {tmp_path / src.stem}")
            done = subprocess.run(["sh", "-c", cmd + f" -Wl,-rpath,{lib.libdir}"], cwd=EXAMPLES,
                                  env=lib.env(), capture_output=True, text=True, timeout=HANG_S)
            assert done.returncode == 0, f"{src.name}: {cmd}\n{done.stderr}"


# -- the library, misused ---------------------------------------------------------------------

def test_create_in_a_directory_that_resolves_past_path_max(misuse: Misuse, tmp_path: Path) -> None:
    """A channel path under a symbolic link whose target directory's full name is longer than
    PATH_MAX (the kernel cannot name it in /proc/self/fd): the create used a name it never
    got (an uninitialized buffer, strcpy onto itself: AddressSanitizer's
    strcpy-param-overlap). It must work, as the Python writer's does."""
    comp = "d" * 200
    half = tmp_path.joinpath("deep", *([comp] * 13))
    half.mkdir(parents=True)
    fd = os.open(half, os.O_DIRECTORY)
    for _ in range(13):  # past PATH_MAX: one directory at a time, each in the one before
        os.mkdir(comp, dir_fd=fd)
        nxt = os.open(comp, os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nxt
    os.close(fd)
    (tmp_path / "a").symlink_to(half)
    path = str(tmp_path / "a" / "/".join([comp] * 13) / "chan")
    assert len(path) < 4096 - 16
    rc, msg = result(misuse.run("create", path, "8")["create"])
    assert rc == 0, msg
    assert not os.path.lexists(path)  # closed with unlink


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of 16 inodes, for the file system full (root only: mount)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=16,mode=1777",
                           "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def _python_error(fn: object) -> OSError:
    with pytest.raises(OSError) as e:
        fn()  # type: ignore[operator]
    return e.value


def test_create_in_a_full_file_system_says_what_python_says(misuse: Misuse,
                                                            small_tmpfs: Path) -> None:
    """No room for the region, no inode for a new file: ENOSPC with the Python writer's very
    message (docs/faq.md quotes it), not "no room for reserve its N bytes"."""
    big = small_tmpfs / "big"
    rc, msg = result(misuse.run("create", str(big), "2000000")["create"])
    py = _python_error(lambda: seqshm.create(str(small_tmpfs / "big"), "u1", 2000000))
    assert rc == -errno.ENOSPC and py.errno == errno.ENOSPC
    assert msg == f"{big}: {py.strerror}", (msg, py.strerror)
    assert os.listdir(small_tmpfs) == []  # nothing half-made left
    # every inode taken: the new file itself cannot be made
    n = 0
    with pytest.raises(OSError):
        while n < 100:
            (small_tmpfs / f"f{n}").touch()
            n += 1
    rc, msg = result(misuse.run("create", str(small_tmpfs / "chan"), "8")["create"])
    py = _python_error(lambda: seqshm.create(str(small_tmpfs / "chan"), "u1", 8))
    assert rc == -errno.ENOSPC and py.errno == errno.ENOSPC
    assert msg == f"{small_tmpfs / 'chan'}: {py.strerror}", (msg, py.strerror)


def test_relative_path_from_a_removed_directory(misuse: Misuse, tmp_path: Path) -> None:
    """The working directory was removed: a relative channel path cannot be resolved.
    ENOENT, naming the path and saying why, not "the path is too long"."""
    gone = tmp_path / "gone"
    for cmd, expect in (("open", errno.ENOENT), ("create", errno.ENOENT)):
        gone.mkdir()
        args = (cmd, "./chan") if cmd == "open" else (cmd, "./chan", "8")
        rc, msg = result(misuse.run(*args, shell_prefix=f"cd {gone} && rmdir {gone}")[cmd])
        assert rc == -expect, msg
        assert msg.startswith("./chan: ") and "too long" not in msg, msg
        assert "current directory" in msg, msg


def _short_reading_file() -> Path | None:
    """A regular file whose size says 4096 bytes but whose read gives fewer: a sysfs
    attribute."""
    for p in ("/sys/devices/system/cpu/online", "/sys/kernel/mm/transparent_hugepage/enabled",
              "/sys/power/state", "/sys/kernel/uevent_seqnum"):
        try:
            st = os.stat(p)
            with open(p, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_size >= 2048 and len(data) < 2048:
            return Path(p)
    return None


def test_a_file_that_reads_short_is_reported_by_what_was_read(misuse: Misuse) -> None:
    """A file whose size covers a header but whose read does not (sysfs says 4096 bytes and
    gives a few): EPROTO saying how many bytes were read, as the Python reader does, not
    "truncated: 4096 bytes, a seqshm header alone has 2048"."""
    path = _short_reading_file()
    if path is None:
        pytest.skip("no sysfs attribute here to read")
    got = len(path.read_bytes())
    rc, msg = result(misuse.run("open", str(path))["open"])
    assert rc == -errno.EPROTO and msg.startswith(f"{path}: "), msg
    assert f"truncated: {got} bytes" in msg and "4096 bytes" not in msg, msg
    with pytest.raises(seqshm.FormatError, match=f"truncated: {got} bytes"):
        seqshm.open(str(path))


def test_every_reading_call_fails_in_a_forked_child(misuse: Misuse, shm_path: str) -> None:
    """seqshm.h: in a forked child "every call that reads, waits or writes fails with
    -ECHILD". seqshm_rd_end() of a view begun by the parent returned 0 there (a read the child
    was told it may not make, validated); the parent's own end still works."""
    got = misuse.run("fork", shm_path)
    for call in ("child-end", "child-begin", "child-snapshot", "child-follow", "child-wait",
                 "child-state", "child-reopen"):
        rc, msg = result(got[call])
        assert rc == -errno.ECHILD and msg.startswith(f"{shm_path}: ") and "forked" in msg, (
            call, rc, msg)
    assert result(got["parent-end"]) == (0, "")
    assert not os.path.exists(shm_path)


def test_a_second_write_begin_is_refused(misuse: Misuse, shm_path: str) -> None:
    """seqshm_wr_begin() while a write is begun returns NULL (documented in seqshm.h), and the
    begun write still ends as write 1."""
    done = subprocess.run([str(misuse.path), "begin2", shm_path], capture_output=True,
                          text=True, timeout=HANG_S, env=misuse.lib.env())
    assert done.returncode == 0 and "Sanitizer" not in done.stderr, done.stderr
    assert done.stdout.strip() == "first=1 second=0 end=1"
    assert "a write is already begun" in (REPO / "lib" / "include" / "seqshm.h").read_text()
