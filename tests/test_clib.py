"""libseqshm across languages: the C library built by meson and installed (shared, static,
seqshm.h, seqshm.pc), its programs built with cc and pkg-config, plain and with AddressSanitizer
and UndefinedBehaviorSanitizer; C writer -> Python reader and Python writer -> C reader over
every dtype kind the field table allows, rings, follow, waits, the lifecycle signals (closed,
writer died by SIGKILL, replaced, removed), the file safety of open and create, and a torn-read
check that fails when the test program bypasses the retry."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from clib import TOOL_SRC, Lib, build, fields_text, parse, spec

import seqshm
from seqshm import _core
from seqshm._lifecycle import ChannelState

#: A bound for hangs only, never a speed check.
HANG_S = 30.0

DTYPES = [np.dtype(c) for c in ("?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2",
                                "f4", "f8", "c8", "c16")] + [
    np.dtype([("t", "f8"), ("n", "i4"), ("ok", "?")]),  # packed record
    np.dtype([("t", "f8"), ("n", "i4"), ("ok", "?")], align=True),  # record with padding
    np.dtype([("xy", "f4", (3,)), ("id", "u2"), ("c", "c8"), ("one", "i1", (1,))]),
]
SHAPES = [(), (3,), (2, 3)]


@pytest.fixture(scope="session")
def libs(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Lib]:
    work = tmp_path_factory.mktemp("libseqshm")
    return {False: build(work, False), True: build(work, True)}


@pytest.fixture(scope="session", params=[False, True], ids=["plain", "asan+ubsan"])
def lib(request: pytest.FixtureRequest, libs: dict[bool, Lib]) -> Lib:
    return libs[request.param]


@pytest.fixture(scope="session")
def tools(libs: dict[bool, Lib], tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    work = tmp_path_factory.mktemp("tools")
    return {s: lib.compile(TOOL_SRC, work / f"seqshm_tool-{int(s)}") for s, lib in libs.items()}


class Tool:
    """seqshm_tool of one build: run(...) for one result line, writer(...) for a C writer."""

    def __init__(self, lib: Lib, path: Path) -> None:
        self.lib, self.path = lib, path

    def run(self, *args: str, ok: bool = True) -> dict[str, str]:
        done = subprocess.run([str(self.path), *args], capture_output=True, text=True,
                              timeout=HANG_S, env=self.lib.env())
        # a sanitizer's report (or a crash) fails every test, expected error or not
        assert done.returncode in ((0,) if ok else (0, 1)), (done.returncode, done.stdout,
                                                               done.stderr)
        assert "Sanitizer" not in done.stderr and "runtime error" not in done.stderr, done.stderr
        return parse(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}

    def lines(self, *args: str) -> list[dict[str, str]]:
        done = subprocess.run([str(self.path), *args], capture_output=True, text=True,
                              timeout=HANG_S, env=self.lib.env())
        assert done.returncode == 0 and "Sanitizer" not in done.stderr, (done.stdout,
                                                                          done.stderr)
        return [parse(line) for line in done.stdout.splitlines()]

    def error(self, *args: str) -> tuple[int, str]:
        """(errno, message) of a command that must fail."""
        done = subprocess.run([str(self.path), *args], capture_output=True, text=True,
                              timeout=HANG_S, env=self.lib.env())
        assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
        assert "Sanitizer" not in done.stderr, done.stderr
        word, num, msg = done.stdout.strip().split(" ", 2)
        assert word == "err"
        return int(num), msg

    def writer(self, path: str, dtype: np.dtype, shape: tuple[int, ...] = (), nr_slots: int = 1,
               overwrite: bool = False) -> CWriter:
        return CWriter(self, path, dtype, shape, nr_slots, overwrite)


class CWriter:
    """A C writer process (seqshm_tool wr), driven line by line."""

    def __init__(self, tool: Tool, path: str, dtype: np.dtype, shape: tuple[int, ...],
                 nr_slots: int, overwrite: bool) -> None:
        args = [str(tool.path), "wr", path, spec(dtype),
                ",".join(map(str, shape)) or "-", str(nr_slots)]
        if overwrite:
            args.append("overwrite")
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=tool.lib.env())
        first = self._line()
        assert first.startswith("ready"), first + self.p.stderr.read()

    def _line(self) -> str:
        assert self.p.stdout is not None
        return self.p.stdout.readline().strip()

    def cmd(self, line: str) -> str:
        assert self.p.stdin is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        out = self._line()
        assert out.startswith("ok"), out
        return out

    def write(self, payload: bytes, in_place: bool = False) -> int:
        return int(self.cmd(("wb " if in_place else "w ") + payload.hex()).split()[1])

    def close(self, unlink: bool = False) -> None:
        self.cmd("unlink" if unlink else "close")
        self.finish()

    def kill(self) -> None:
        self.p.send_signal(signal.SIGKILL)
        self.p.communicate(timeout=HANG_S)

    def finish(self) -> None:
        _, err = self.p.communicate(timeout=HANG_S)
        assert self.p.returncode == 0, err
        assert "Sanitizer" not in err and "runtime error" not in err, err


class CReader:
    """A C reader process (seqshm_tool rd) kept open across commands, driven line by line:
    cmd() returns the parsed "ok ..." answer, error() the (errno, message) of an "err ...".
    """

    def __init__(self, tool: Tool, path: str) -> None:
        self.p = subprocess.Popen([str(tool.path), "rd", path], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=tool.lib.env())
        assert self.p.stdout is not None
        first = self.p.stdout.readline().strip()
        assert first == "ready", first + self.p.stderr.read()  # type: ignore[union-attr]

    def _ask(self, line: str) -> str:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def cmd(self, line: str) -> dict[str, str]:
        out = self._ask(line)
        assert out.startswith("ok "), out
        return parse(out[3:])

    def error(self, line: str) -> tuple[int, str]:
        out = self._ask(line)
        word, num, msg = out.split(" ", 2)
        assert word == "err", out
        return int(num), msg

    def close(self) -> None:
        _, err = self.p.communicate(timeout=HANG_S)  # stdin closed: the reader closes
        assert self.p.returncode == 0, err
        assert "Sanitizer" not in err and "runtime error" not in err, err


@pytest.fixture
def tool(lib: Lib, tools: dict[bool, Path]) -> Tool:
    return Tool(lib, tools[lib.sanitize])


def _random(dtype: np.dtype, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random values of every byte of ``dtype``'s fields (bools 0 or 1, padding zero)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, dtype)
    raw = out.reshape(-1).view(np.uint8).reshape(-1, dtype.itemsize)

    def fill(dt: np.dtype, offset: int) -> None:
        if dt.fields is not None:
            for name in dt.names or ():
                sub, off = dt.fields[name][:2]
                fill(sub, offset + off)
            return
        base, n = (dt.subdtype[0], int(np.prod(dt.subdtype[1]))) if dt.subdtype else (dt, 1)
        for k in range(n):
            at = offset + k * base.itemsize
            if base.kind == "b":
                raw[:, at] = rng.integers(0, 2, raw.shape[0])
            else:
                raw[:, at:at + base.itemsize] = rng.integers(0, 256, (raw.shape[0],
                                                                     base.itemsize))
    fill(dtype, 0)
    return out


# -- the library as installed ----------------------------------------------------------------

def test_installs_shared_static_header_and_pkg_config(lib: Lib, tmp_path: Path) -> None:
    """`meson install` puts libseqshm.so and .a, the one header and seqshm.pc in the prefix;
    a program links both ways; the shared library exports only the API's functions."""
    assert (lib.prefix / "include" / "seqshm.h").is_file()
    assert (lib.libdir / "libseqshm.a").is_file()
    assert (lib.libdir / "libseqshm.so").exists()
    assert sorted(os.listdir(lib.prefix / "include")) == ["seqshm.h"]
    assert lib.pkg_config("--modversion") == [seqshm.__version__]
    exported = subprocess.run(["nm", "-D", "--defined-only", str(lib.libdir / "libseqshm.so")],
                              capture_output=True, text=True, check=True).stdout.split("\n")
    names = {line.split()[-1] for line in exported if line.strip() and " T " in line}
    assert names and all(n.startswith(("seqshm_rd_", "seqshm_wr_", "seqshm_strstate"))
                         for n in names), names
    static = lib.compile(TOOL_SRC, tmp_path / "tool-static", static=True)
    done = subprocess.run([str(static), "info", "/nonexistent/x"], capture_output=True,
                          text=True, env=lib.env())
    assert done.returncode == 1 and done.stdout.startswith(f"err {errno.ENOENT} ")


def test_wheel_build_installs_no_c_library(tmp_path: Path) -> None:
    """meson-python's setup arguments (pyproject.toml) leave libseqshm, its header and
    seqshm.pc out of what the wheel installs; a plain setup installs them."""
    import json
    import re

    from clib import REPO, _tool_path

    # [tool.meson-python.args] setup = [...] (no tomllib before Python 3.11)
    text = (REPO / "pyproject.toml").read_text().split("[tool.meson-python.args]", 1)[1]
    found = re.search(r"^setup = (\[.*\])$", text, re.M)
    assert found, "pyproject.toml: no [tool.meson-python.args] setup"
    args = {"setup": json.loads(found.group(1))}
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}"
               f"{os.environ.get('PATH', '')}")

    def installed(*setup: str) -> list[str]:
        bdir = tmp_path / f"b{len(setup)}"
        subprocess.run([_tool_path("meson"), "setup", str(bdir), str(REPO), *setup],
                       check=True, capture_output=True, env=env)
        out = subprocess.run([_tool_path("meson"), "introspect", "--installed", str(bdir)],
                             check=True, capture_output=True, text=True, env=env).stdout
        return list(json.loads(out).values())

    wheel = installed(*args["setup"])
    assert any(p.endswith("_core" + p[p.rfind("."):]) or "_core." in p for p in wheel)
    assert not [p for p in wheel if "libseqshm" in p or p.endswith((".h", ".pc"))], wheel
    plain = installed("-Dpython=disabled")
    assert {os.path.basename(p) for p in plain} >= {"seqshm.h", "seqshm.pc", "libseqshm.a",
                                                    "libseqshm.so"}


def test_every_public_function_is_documented() -> None:
    """Each function seqshm.h declares has a kernel-doc comment of its own name, with every
    argument described, a Context: (its thread and fork rules) and a Return: line."""
    import re

    text = (Path(__file__).parent.parent / "lib" / "include" / "seqshm.h").read_text()
    decls = re.findall(r"SEQSHM_API [^;]*?\b(seqshm_\w+)\(([^)]*)\);", text, re.S)
    assert len(decls) >= 18
    for name, args in decls:
        doc = re.search(r"/\*\*\n \* " + name + r"\(\) - (.*?)\*/", text, re.S)
        assert doc, f"{name} has no kernel-doc comment"
        for arg in re.findall(r"(\w+)\s*(?:,|$)", args.replace("\n", " ")):
            if arg != "void":
                assert f"@{arg}:" in doc.group(1), f"{name}: @{arg} undocumented"
        assert "Return:" in doc.group(1) or re.search(r"\bvoid " + name + r"\(", text), name
        assert "Context:" in doc.group(1), f"{name}: no Context: (threads, fork)"


#: The C++ check of seqshm.h: the oldest standard the header promises, warnings as errors.
CXXFLAGS = ["-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic"]


def test_header_compiles_and_links_as_cxx11(libs: dict[bool, Lib], tmp_path: Path,
                                            shm_path: str) -> None:
    """seqshm.h used from C++11 (g++ -std=c++11 -Wall -Wextra -Werror -pedantic): a program
    that reads, reopens, writes and reads back through the installed library compiles,
    links and runs; the same program fails to compile when the header has a C-only construct,
    so the check can fail."""
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ is not installed (apt-get install g++; scripts/test installs it)")
    lib = libs[False]
    src = Path(__file__).parent / "c" / "seqshm_cxx.cpp"

    def build(include: Path, out: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cxx, *CXXFLAGS, f"-I{include}", str(src), "-o", str(out),
                               *lib.pkg_config("--libs"), f"-Wl,-rpath,{lib.libdir}"],
                              capture_output=True, text=True, env=lib.env())

    done = build(lib.prefix / "include", tmp_path / "cxx")
    assert done.returncode == 0 and not done.stderr, done.stderr
    with seqshm.create(shm_path, "f8") as w:
        w.write(1.5)
        run = subprocess.run([str(tmp_path / "cxx"), shm_path, str(tmp_path / "cxx-chan")],
                             capture_output=True, text=True, timeout=HANG_S, env=lib.env())
    assert run.returncode == 0, (run.stdout, run.stderr)
    assert run.stdout.splitlines() == ["read seq=1 value=1.5 state=open reopen=0",
                                       "wrote seq=2 value=2.5"]
    assert not (tmp_path / "cxx-chan").exists()
    # the check can fail: a C99 compound literal in the header is refused by -pedantic C++
    bad = tmp_path / "bad"
    bad.mkdir()
    text = (lib.prefix / "include" / "seqshm.h").read_text()
    (bad / "seqshm.h").write_text(text.replace(
        "#endif /* SEQSHM_H */",
        "static inline struct seqshm_sample seqshm_zero(void)\n"
        "{ return (struct seqshm_sample){ 0, 0, 0 }; }\n#endif /* SEQSHM_H */"))
    done = build(bad, tmp_path / "cxx-bad")
    assert done.returncode != 0 and "compound-literals" in done.stderr, done.stderr


# -- Python writer -> C reader ----------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_python_writer_c_reader_every_kind(tool: Tool, shm_path: str, dtype: np.dtype) -> None:
    for i, shape in enumerate(SHAPES):
        value = _random(dtype, shape, i)
        with seqshm.create(shm_path, dtype, shape, overwrite=True) as w:
            w.write(value)
            w.write(value)
            info = tool.run("info", shm_path)
            assert info["fields"] == fields_text(dtype)
            assert info["shape"] == ",".join(map(str, shape))
            assert int(info["itemsize"]) == dtype.itemsize
            assert info["record"] == str(int(dtype.fields is not None))
            assert int(info["pid"]) == os.getpid()
            for how in ("snap", "zc"):
                got = tool.run(how, shm_path)
                assert bytes.fromhex(got["data"]) == value.tobytes()
                assert got["seq"] == "2"


def test_python_ring_c_follower(tool: Tool, shm_path: str) -> None:
    """A C follower of a Python ring gets every write it holds, in order, with lost counts
    that add up, while the writer writes in bursts that lap it."""
    with seqshm.create(shm_path, "u8", (4,), nr_slots=4) as w:
        for k in range(1, 11):
            w.write(np.full(4, k, "u8"))
        # a new reader starts from the oldest write the ring holds
        got = tool.lines("follow", shm_path, "4", "200")
        assert [g["seq"] for g in got[:4]] == ["7", "8", "9", "10"]
        p = subprocess.Popen([str(tool.path), "follow", shm_path, "1000", "2000"],
                             stdout=subprocess.PIPE, text=True, env=tool.lib.env())
        time.sleep(0.3)
        for k in range(11, 411):
            w.write(np.full(4, k, "u8"))
            if k % 50 == 0:
                time.sleep(0.05)
        out, _ = p.communicate(timeout=HANG_S)
    lines = [parse(line) for line in out.splitlines()]
    assert lines[-1]["end"] == "" or "end" in lines[-1]
    seen = [(int(x["seq"]), int(x["lost"])) for x in lines if "seq" in x]
    assert seen, out
    prev = seen[0][0] - 1 - seen[0][1]
    for seq, lost in seen:
        assert seq == prev + 1 + lost, (seq, lost, prev)
        prev = seq
    assert seen[-1][0] == 410
    for x in lines:
        if "data" in x:
            assert np.frombuffer(bytes.fromhex(x["data"]), "u8").tolist() == [int(x["seq"])] * 4


def test_c_reader_wakes_on_python_write(tool: Tool, shm_path: str) -> None:
    """seqshm_rd_wait() sleeps until the Python writer's next write (futex, via the sidecar)."""
    with seqshm.create(shm_path, "f8") as w:
        w.write(1.0)
        p = subprocess.Popen([str(tool.path), "wait", shm_path, "20000"],
                             stdout=subprocess.PIPE, text=True, env=tool.lib.env())
        time.sleep(0.5)
        assert p.poll() is None  # asleep
        w.write(2.0)
        out, _ = p.communicate(timeout=HANG_S)
    assert parse(out.strip())["wait"] == "1"


# -- lifecycle, as the C reader sees it ---------------------------------------------------------

_PY_WRITER = textwrap.dedent("""
    import sys, time, seqshm
    w = seqshm.create(sys.argv[1], "f8", overwrite=True)
    w.write(1.0)
    print("ready", flush=True)
    time.sleep(60)
""")


def _python_writer_process(path: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", _PY_WRITER, path], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def test_c_reader_lifecycle_closed(tool: Tool, shm_path: str) -> None:
    w = seqshm.create(shm_path, "f8")
    w.write(1.0)
    p = subprocess.Popen([str(tool.path), "wait", shm_path, "20000"], stdout=subprocess.PIPE,
                         text=True, env=tool.lib.env())
    time.sleep(0.3)
    w.close()
    got = parse(p.communicate(timeout=HANG_S)[0].strip())
    assert got["wait"] == str(-errno.EPIPE) and got["state"] == "closed", got
    assert "closed by its writer" in got["msg"]
    assert tool.run("state", shm_path)["state"] == "closed"


def test_c_reader_lifecycle_writer_died_replaced_removed(tool: Tool, shm_path: str) -> None:
    p = _python_writer_process(shm_path)
    assert tool.run("state", shm_path)["state"] == "open"
    waiter = subprocess.Popen([str(tool.path), "wait", shm_path, "20000"],
                              stdout=subprocess.PIPE, text=True, env=tool.lib.env())
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=HANG_S)
    got = parse(waiter.communicate(timeout=HANG_S)[0].strip())
    assert got["wait"] == str(-errno.EPIPE) and got["state"] == "writer-died", got
    assert tool.run("state", shm_path)["state"] == "writer-died"
    # replaced: a reader of the dead channel, then a new channel at its path
    old = subprocess.Popen([str(tool.path), "wait", shm_path, "20000"], stdout=subprocess.PIPE,
                           text=True, env=tool.lib.env())
    time.sleep(0.3)
    with seqshm.create(shm_path, "f8", overwrite=True) as w:
        w.write(5.0)
        got = parse(old.communicate(timeout=HANG_S)[0].strip())
        assert got["state"] in ("replaced", "writer-died"), got
        assert got["wait"] == str(-errno.EPIPE)
        # removed: the file unlinked under a reader, the writer alive
        with seqshm.open(shm_path) as r:
            r.snapshot()
        reader = subprocess.Popen([str(tool.path), "wait", shm_path, "1500"],
                                  stdout=subprocess.PIPE, text=True, env=tool.lib.env())
        time.sleep(0.3)
        os.unlink(shm_path)
        got = parse(reader.communicate(timeout=HANG_S)[0].strip())
        assert got["wait"] == "0" and got["state"] == "removed", got


def test_c_reader_sees_replaced_mark(tool: Tool, shm_path: str) -> None:
    """A channel whose dead writer's path a new create() takes is marked REPLACED in its
    region: a C reader holding the old channel sees that state, not just a dead writer."""
    p = _python_writer_process(shm_path)
    holder = subprocess.Popen([str(tool.path), "hold", shm_path, "1500"],
                              stdout=subprocess.PIPE, text=True, env=tool.lib.env())
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=HANG_S)
    with seqshm.create(shm_path, "f8", overwrite=True):
        out = holder.communicate(timeout=HANG_S)[0]
    assert parse(out.strip())["state"] == "replaced", out


# -- a C reader moving to a replacement (seqshm_rd_reopen(), tail -F) --------------------------

def _f8(value: float) -> str:
    return np.float64(value).tobytes().hex()


@pytest.mark.parametrize("first_writer", ["closed", "killed"])
def test_c_reader_reopens_a_replaced_channel(tool: Tool, shm_path: str,
                                             first_writer: str) -> None:
    """A Python writer that closes (or is killed) and a new create(overwrite=True) at its
    path: the C reader's seqshm_rd_reopen() answers 0 while the old file is still there, the
    old channel's wait ends (-EPIPE, naming seqshm_rd_reopen()), then 1, and the reader reads
    the new writer's data, its writes numbered from 1 again (a follow starts at the new
    ring's oldest write, not after the old channel's newest)."""
    if first_writer == "closed":
        w1 = seqshm.create(shm_path, "f8")
        w1.write(1.0)
        p = None
    else:
        p = _python_writer_process(shm_path)  # wrote 1.0
    r = CReader(tool, shm_path)
    try:
        assert r.cmd("snap") == {"seq": "1", "lost": "0", "data": _f8(1.0)}
        assert r.cmd("reopen") == {"reopen": "0"}  # nothing replaced it
        if p is None:
            w1.close()
        else:
            p.send_signal(signal.SIGKILL)
            p.communicate(timeout=HANG_S)
        assert r.cmd("reopen") == {"reopen": "0"}  # ended, but still the file at the path
        with seqshm.create(shm_path, "f8", nr_slots=4, overwrite=True) as w2:
            w2.write(7.0)
            w2.write(8.0)
            num, msg = r.error("wait 5000")
            assert num == errno.EPIPE and "seqshm_rd_reopen()" in msg and shm_path in msg, msg
            assert r.cmd("reopen") == {"reopen": "1"}
            assert r.cmd("state") == {"state": "open"}
            assert r.cmd("info")["slots"] == "4"
            assert r.cmd("follow 1000") == {"seq": "1", "lost": "0", "data": _f8(7.0)}
            assert r.cmd("follow 1000") == {"seq": "2", "lost": "0", "data": _f8(8.0)}
            w2.write(9.0)
            assert r.cmd("snap") == {"seq": "3", "lost": "0", "data": _f8(9.0)}
            assert r.cmd("reopen") == {"reopen": "0"}
    finally:
        r.close()
        if p is not None and p.poll() is None:
            p.kill()
            p.communicate(timeout=HANG_S)


_REPLACEMENTS = ["planted-link", "sparse", "bad-magic", "other-element", "missing"]


@pytest.mark.parametrize("replacement", _REPLACEMENTS)
def test_c_reopen_refuses_a_bad_replacement_and_keeps_the_old_channel(
        tool: Tool, tmp_path: Path, shm_path: str, replacement: str) -> None:
    """What is at a reader's path after its channel ended is opened as seqshm_rd_open()
    opens: a link another user planted in the sticky directory (-EACCES), a sparse file or
    one with the wrong magic (-EPROTO), a channel of another element type (-ENOTSUP), or
    nothing (-ENOENT) is refused with a message naming the file, and the reader still reads
    its old channel; once a real channel is there, it moves to it."""
    if replacement == "planted-link" and os.geteuid() != 0:
        pytest.skip("needs root to make a link owned by another user")
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    chan = str(sticky / "chan")
    old = np.arange(4096, dtype="f8")
    with seqshm.create(chan, "f8", (4096,)) as w:
        w.write(old)
    # a good channel elsewhere: its bytes, or a link to it, make the bad replacements
    with seqshm.create(shm_path, "f8", (4096,)) as good:
        good.write(np.ones(4096))
    data = bytearray(Path(shm_path).read_bytes())
    r = CReader(tool, chan)
    try:
        assert r.cmd("snap")["data"] == old.tobytes().hex()
        os.unlink(chan)
        fake = sticky / "fake"
        if replacement == "planted-link":
            os.symlink(shm_path, chan)
            os.lchown(chan, 65534, 65534)
            want, words = errno.EACCES, ["uid 65534", "not followed"]
        elif replacement == "sparse":
            with open(fake, "wb") as f:
                f.write(data[:_core.ALIGN * 2])  # the header and the slot lines, then holes
                f.truncate(len(data))
            os.rename(fake, chan)
            want, words = errno.EPROTO, ["a sparse file"]
        elif replacement == "bad-magic":
            data[0] ^= 0xFF
            fake.write_bytes(bytes(data))
            os.rename(fake, chan)
            want, words = errno.EPROTO, ["not a seqshm region"]
        elif replacement == "other-element":
            seqshm.create(chan, "i8", (4096,)).close()
            want, words = errno.ENOTSUP, ["another element type or shape"]
        else:
            want, words = errno.ENOENT, ["no channel file there"]
        num, msg = r.error("reopen")
        assert num == want and chan in msg and all(w in msg for w in words), (num, msg)
        # the old channel, still mapped and still this reader's
        assert r.cmd("snap") == {"seq": "1", "lost": "0", "data": old.tobytes().hex()}
        assert r.cmd("info")["shape"] == "4096"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(chan)
        with seqshm.create(chan, "f8", (4096,)) as w:
            w.write(np.full(4096, 5.0))
            assert r.cmd("reopen") == {"reopen": "1"}
            assert r.cmd("snap")["data"] == np.full(4096, 5.0).tobytes().hex()
    finally:
        r.close()


# -- C writer -> Python reader ----------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_c_writer_python_reader_every_kind(tool: Tool, shm_path: str, dtype: np.dtype) -> None:
    for i, shape in enumerate(SHAPES):
        w = tool.writer(shm_path, dtype, shape, overwrite=True)
        try:
            with seqshm.open(shm_path) as r:
                assert r.dtype == dtype and r.shape == shape
                for k, in_place in ((1, False), (2, True)):
                    value = _random(dtype, shape, 10 * i + k)
                    assert w.write(value.tobytes(), in_place) == k
                    got = r.snapshot()
                    assert got.tobytes() == value.tobytes() and r.seq == k
                assert r.state is ChannelState.OPEN
                w.close()
                assert r.state is ChannelState.CLOSED
        finally:
            if w.p.poll() is None:
                w.kill()


def test_c_ring_python_follower_and_waits(tool: Tool, shm_path: str) -> None:
    """A Python follower of a C ring writer gets every write in order (or counts it lost,
    lapped), woken by the C writer's futex wakes; the C writer's close ends the follow."""
    w = tool.writer(shm_path, np.dtype("u8"), (2,), nr_slots=8)
    got: list[tuple[int, int]] = []
    with seqshm.open(shm_path) as r:
        assert r.nr_slots == 8
        import threading

        def follow() -> None:
            for s in r.follow(timeout=HANG_S):
                assert s.data.tolist() == [s.seq] * 2
                got.append((int(s.seq), int(s.lost)))

        t = threading.Thread(target=follow)
        t.start()
        time.sleep(0.2)
        for k in range(1, 51):
            w.write(np.full(2, k, "u8").tobytes())
            if k % 5 == 0:
                time.sleep(0.05)
        time.sleep(0.3)
        w.close()
        t.join(HANG_S)
        assert not t.is_alive()
    prev = 0
    for seq, lost in got:
        assert seq == prev + 1 + lost
        prev = seq
    assert prev == 50 and len(got) > 25


def test_c_writer_lifecycle_for_python_reader(tool: Tool, shm_path: str) -> None:
    """Writer died (SIGKILL), replaced (a C create over the dead one), removed: each as a
    Python reader's state."""
    w = tool.writer(shm_path, np.dtype("f8"))
    w.write(np.float64(1).tobytes())
    r = seqshm.open(shm_path)
    try:
        assert r.state is ChannelState.OPEN and r.header["writer_pid"] == w.p.pid
        assert r.snapshot() == 1.0
        w.kill()
        assert r.state is ChannelState.WRITER_DIED
        with pytest.raises(seqshm.ChannelEnded):
            r.wait(5)
        w2 = tool.writer(shm_path, np.dtype("f8"), overwrite=True)
        assert r.state is ChannelState.REPLACED
        with seqshm.open(shm_path) as r2:
            w2.write(np.float64(2).tobytes())
            assert r2.snapshot() == 2.0
            assert r2.wait(0.01) is False
            os.unlink(shm_path)
            assert r2.state is ChannelState.REMOVED
        w2.close()
    finally:
        r.close()
        for p in (w, locals().get("w2")):
            if p is not None and p.p.poll() is None:
                p.kill()


# -- create's rules and file safety ---------------------------------------------------------

def test_c_create_rules(tool: Tool, shm_path: str, tmp_path: Path) -> None:
    with seqshm.create(shm_path, "f8"):
        num, msg = tool.error("wr", shm_path, "f8", "-", "1")
        assert num == errno.EEXIST and shm_path in msg and "overwrite" in msg
        num, msg = tool.error("wr", shm_path, "f8", "-", "1", "overwrite")
        assert num == errno.EBUSY and "another writer holds" in msg
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "target")
    num, msg = tool.error("wr", str(link), "f8", "-", "1", "overwrite")
    assert num == errno.EEXIST and "symbolic link" in msg
    assert not (tmp_path / "target").exists()
    num, msg = tool.error("wr", str(tmp_path / "nodir" / "x"), "f8", "-", "1")
    assert num == errno.ENOENT and "no directory" in msg
    num, msg = tool.error("wr", str(tmp_path / "x"), "f8", "-", "3")
    assert num == errno.EINVAL and "nr_slots" in msg
    assert sorted(os.listdir(tmp_path)) == ["link"]  # nothing half-made left


def test_c_create_leaves_nothing_when_killed_and_sets_modes(tool: Tool, tmp_path: Path) -> None:
    path = str(tmp_path / "chan")
    w = tool.writer(path, np.dtype("f8"))
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o644
    side = tmp_path / ".chan.waiters"
    assert stat.S_IMODE(side.stat().st_mode) == 0o666
    w.close(unlink=True)
    assert os.listdir(tmp_path) == []


def test_c_open_errors(tool: Tool, tmp_path: Path, shm_path: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    num, msg = tool.error("info", str(fifo))  # returns: a FIFO cannot hang it
    assert num == errno.EPROTO and "neither a regular file" in msg and str(fifo) in msg
    (tmp_path / "junk").write_bytes(b"x" * 4096)
    num, msg = tool.error("info", str(tmp_path / "junk"))
    assert num == errno.EPROTO and "not a seqshm region" in msg
    num, msg = tool.error("info", "seqshm-test-no-such-channel")
    assert num == errno.ENOENT and "/dev/shm/seqshm-test-no-such-channel" in msg
    for name in (".", ".."):  # was EPROTO for /dev/shm ("neither a regular file ...")
        num, msg = tool.error("info", name)
        assert num == errno.ENOENT and "a directory's name, not a channel's" in msg, msg
    with seqshm.create(shm_path, "f8") as w:
        w.write(1.0)
        data = bytearray(Path(shm_path).read_bytes())
    data[8] = 9  # abi_version
    (tmp_path / "v9").write_bytes(bytes(data))
    num, msg = tool.error("info", str(tmp_path / "v9"))
    assert num == errno.EPROTONOSUPPORT and "version 9" in msg


def test_c_open_refuses_planted_link(tool: Tool, tmp_path: Path, shm_path: str) -> None:
    """A symbolic link another user made in a sticky world-writable directory is not followed
    (as fs.protected_symlinks=1), at the file and at a directory of the path."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a link owned by another user")
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    with seqshm.create(shm_path, "f8") as w:
        w.write(1.0)
        (sticky / "chan").symlink_to(shm_path)
        (sticky / "dir").symlink_to(os.path.dirname(shm_path))
        assert tool.run("info", str(sticky / "chan"))["name"]  # root's own link: followed
        for link in ("chan", "dir"):
            os.lchown(sticky / link, 65534, 65534)
        num, msg = tool.error("info", str(sticky / "chan"))
        assert num == errno.EACCES and "uid 65534" in msg and "not followed" in msg
        num, msg = tool.error("info", str(sticky / "dir" / os.path.basename(shm_path)))
        assert num == errno.EACCES and "uid 65534" in msg


# -- torn reads --------------------------------------------------------------------------------

def test_torn_read_check_fails_when_the_retry_is_bypassed(tool: Tool, shm_path: str) -> None:
    """Under a C writer filling every 64-bit word of a 4 KiB payload with its write number
    (paced: a flat-out writer of a one-slot channel starves readers, which is what rings are
    for), snapshots are never torn; the same check over copies taken without seqshm_rd_end() (the
    test program's bypass hook) finds torn ones, so the check can fail."""
    w = tool.writer(shm_path, np.dtype("u8"), (512,))
    try:
        assert w.p.stdin is not None
        w.p.stdin.write("pattern 1000000000 2000\n")  # runs until killed
        w.p.stdin.flush()
        time.sleep(0.1)
        good = tool.run("torn", shm_path, "1.0")
        assert int(good["torn"]) == 0 and int(good["distinct"]) > 10, good
        # into a buffer off a cache line: the rep movsb copy's first line and rest apart
        good = tool.run("torn", shm_path, "1.0", "dst+16")
        assert int(good["torn"]) == 0 and int(good["distinct"]) > 10, good
        # the snapshot's inlined copies of small payloads (8 to 128 bytes) too, of one slot
        # and of a ring (the fast paths of each, and the 32-byte moves of 32, 64 and 128 B)
        for words, slots in [(1, 1), (2, 1), (4, 1), (8, 1), (16, 1), (3, 1), (4, 2), (8, 2),
                             (16, 2)]:
            small = tool.writer(f"{shm_path}-{words}", np.dtype("u8"), (words,), slots)
            try:
                assert small.p.stdin is not None
                small.p.stdin.write("pattern 1000000000 200\n")
                small.p.stdin.flush()
                got = tool.run("torn", f"{shm_path}-{words}", "0.3")
                assert int(got["torn"]) == 0 and int(got["distinct"]) > 10, (words, slots, got)
            finally:
                small.kill()
                for n in (f"{shm_path}-{words}", f".{os.path.basename(shm_path)}-{words}.waiters"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(os.path.dirname(shm_path), n))
        torn = 0
        for _ in range(10):  # bounded: a 2-core machine shared with other jobs
            torn += int(tool.run("torn", shm_path, "1.0", "bypass")["torn"])
            if torn:
                break
        assert torn > 0
    finally:
        w.kill()



# -- the examples ------------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "c"


def test_example_c_writer_read_by_python(lib: Lib, tmp_path: Path, shm_name: str) -> None:
    """examples/c/c_writer.c publishes C structs; examples/c/read_c_writer.py follows them as
    NumPy records until the writer closes the channel (which also removes its file)."""
    writer = lib.compile(EXAMPLES / "c_writer.c", tmp_path / "c_writer", link=("-lm",))
    reader = subprocess.Popen([sys.executable, str(EXAMPLES / "read_c_writer.py"), shm_name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = subprocess.run([str(writer), shm_name, "60"], capture_output=True, text=True,
                          timeout=HANG_S, env=lib.env())
    assert done.returncode == 0 and not done.stderr, done.stderr
    out, err = reader.communicate(timeout=HANG_S)
    assert reader.returncode == 0, err
    lines = out.splitlines()
    assert "(\'t\', \'<f8\'), (\'count\', \'<i4\'), (\'xyz\', \'<f4\', (3,))" in lines[0]
    assert lines[-1] == "the writer closed the channel"
    writes = [line for line in lines if line.startswith("write ")]
    assert writes[-1].startswith("write 60: t=0.59 count=60 ")
    for line in writes:
        seq = line.split()[1].rstrip(":")
        assert f"count={seq} " in line
    assert not os.path.exists(f"/dev/shm/{shm_name}")


def test_example_print_channel(lib: Lib, tmp_path: Path, shm_path: str) -> None:
    """examples/c/print_channel.c prints a message channel as text and a record channel field
    by field, then follows the next writes until the channel ends."""
    prog = lib.compile(EXAMPLES / "print_channel.c", tmp_path / "print_channel")
    with seqshm.create(shm_path, "u1", 64) as w:
        msg = np.zeros(64, "u1")
        msg[:25] = np.frombuffer(b"hello from seqshm, whole!", "u1")
        w.write(msg)
        out = subprocess.run([str(prog), shm_path], capture_output=True, text=True,
                             timeout=HANG_S, env=lib.env(), check=True).stdout
    assert 'write 1 at ' in out and '"hello from seqshm, whole!"' in out
    rec = np.dtype([("temp_mc", "i8"), ("raw", "u4"), ("ok", "?"), ("v", "f4", (2,))])
    w = seqshm.create(shm_path, rec, 2, nr_slots=4, overwrite=True)
    value = np.zeros(2, rec)
    value["temp_mc"] = [-40000, 125000]
    value["raw"] = [0, 4095]
    value["ok"] = [True, False]
    value["v"] = [[0.5, 1.5], [2.5, 3.5]]
    w.write(value)
    p = subprocess.Popen([str(prog), shm_path, "5"], stdout=subprocess.PIPE, text=True,
                         env=lib.env())
    time.sleep(0.3)
    w.write(value)
    w.close()
    out = p.communicate(timeout=HANG_S)[0]
    assert p.returncode == 0, out
    assert "[0] temp_mc=-40000 raw=0 ok=true v=[0.5 1.5]" in out
    assert "[1] temp_mc=125000 raw=4095 ok=false v=[2.5 3.5]" in out
    assert "write 2 at " in out and "closed by its writer" in out


def test_c_create_sweeps_stale_sidecars(tool: Tool, tmp_path: Path) -> None:
    """A sidecar left by a writer killed by SIGKILL is removed by the next C create in its
    directory once it is old; a live channel's is kept."""
    dead = tool.writer(str(tmp_path / "dead"), np.dtype("f8"))
    dead.kill()
    os.unlink(tmp_path / "dead")
    live = tool.writer(str(tmp_path / "live"), np.dtype("f8"))
    old = time.time() - 3600
    for n in (".dead.waiters", ".live.waiters"):
        os.utime(tmp_path / n, (old, old))
    tool.writer(str(tmp_path / "new"), np.dtype("f8")).close(unlink=True)
    assert sorted(os.listdir(tmp_path)) == [".live.waiters", "live"]
    live.close(unlink=True)


def test_fork_rules(tool: Tool, shm_path: str) -> None:
    """A forked child may not read, wait or write through its parent's handles (-ECHILD) and
    its close ends nothing: the parent's writer and reader go on."""
    w = tool.writer(shm_path, np.dtype("u8"), (2,))
    try:
        w.write(np.arange(2, dtype="u8").tobytes())
        assert w.cmd("fork") == "ok fork 0"
        assert w.write(np.arange(2, dtype="u8").tobytes()) == 2
        got = tool.run("fork", shm_path)
        assert got == {"child": "0", "state": "open"}, got
        assert os.path.exists(shm_path)  # the child's close(unlink) removed nothing
        with seqshm.open(shm_path) as r:
            assert r.state is ChannelState.OPEN and r.snapshot().tolist() == [0, 1]
        w.close()
    finally:
        if w.p.poll() is None:
            w.kill()


def test_writer_stuck_or_dead_mid_write(tool: Tool, shm_path: str) -> None:
    """A C writer stopped inside a write of a one-slot channel: a C snapshot times out saying
    the writer is alive but not finishing; once it is killed there, saying it died mid-write
    (found by its lock, without waiting out the whole timeout); Python readers agree."""
    w = tool.writer(shm_path, np.dtype("u8"), (4,))
    try:
        w.write(bytes(32))
        w.cmd("hang")
        num, msg = tool.error("snap", shm_path)
        assert num == errno.ETIMEDOUT and "alive but not finishing" in msg, msg
        w.kill()
        num, msg = tool.error("snap", shm_path)
        assert num == errno.ETIMEDOUT and "died in the middle of a write" in msg, msg
        assert tool.run("state", shm_path)["state"] == "writer-died"
        with seqshm.open(shm_path, timeout=5) as r, pytest.raises(seqshm.ReadTimeout) as e:
            r.snapshot()
        assert e.value.stuck
    finally:
        if w.p.poll() is None:
            w.kill()


def test_c_and_python_readers_refuse_a_sparse_region(tool: Tool, tmp_path: Path,
                                                     shm_path: str) -> None:
    """A region with holes is no writer's file (create() and seqshm_wr_create() reserve every
    page): reading them would fill the file system (on tmpfs, memory), and a full one would
    fault the reader as if the file had shrunk (breaker2 finding 14). Both readers refuse it
    at open, by name, with the same reason."""
    with seqshm.create(shm_path, "f8", (4096,)) as w:
        w.write(np.ones(4096))
        data = Path(shm_path).read_bytes()
    holed = tmp_path / "holed"
    with open(holed, "wb") as f:
        f.write(data[:_core.ALIGN * 2])  # the header and the slot lines, then holes
        f.truncate(len(data))
    num, msg = tool.error("info", str(holed))
    assert num == errno.EPROTO and "a sparse file" in msg and str(holed) in msg
    with pytest.raises(seqshm.FormatError, match="a sparse file") as e:
        seqshm.open(str(holed))
    assert str(holed) in str(e.value)
    holed.write_bytes(data)  # the same bytes, every page allocated: a channel again
    with seqshm.open(str(holed)) as r:
        assert r.snapshot().sum() == 4096


def _with_holes(path: str, data: bytes, holes: str) -> None:
    """The channel file ``data`` written to ``path`` with holes: only in the last page of its
    payload ("payload-end"), or everywhere past its header and slot lines with as many bytes
    allocated past the region's end ("made-up-past-the-region": the file's allocated bytes
    add up to its region, which still has its holes)."""
    with open(path, "wb") as f:
        if holes == "payload-end":
            f.write(data[:-_core.ALIGN])
            f.truncate(len(data))
        else:
            f.write(data[:_core.ALIGN * 2])
            f.truncate(len(data))
            os.posix_fallocate(f.fileno(), len(data), len(data) - _core.ALIGN * 2)
    st = os.stat(path)
    assert st.st_blocks * 512 < st.st_size, st  # holes, as meant (st_blocks is exact on tmpfs)
    if holes != "payload-end":
        assert st.st_blocks * 512 >= len(data), st


@pytest.mark.parametrize("holes", ["payload-end", "made-up-past-the-region"])
def test_c_and_python_readers_refuse_every_hole_in_a_channel_file(
        tool: Tool, shm_path: str, hostile_paths: list[str], holes: str) -> None:
    """Other members of the sparse kind, for both readers through their one check
    (seqshm_refuse_holes()): one page missing at the payload's end, and a region with holes
    whose file makes up their bytes with data past the region (it passed a count of the
    allocated bytes against the region alone). Both refuse it at open, naming the file, with
    the same sentence."""
    with seqshm.create(shm_path, "f8", (4096,)) as w:
        w.write(np.ones(4096))
        data = Path(shm_path).read_bytes()
    holed = shm_path + ".holed"
    hostile_paths.append(holed)
    _with_holes(holed, data, holes)
    num, msg = tool.error("info", holed)
    assert num == errno.EPROTO and "a sparse file" in msg and holed in msg, msg
    with pytest.raises(seqshm.FormatError, match="a sparse file") as e:
        seqshm.open(holed)
    assert holed in str(e.value) and e.value.reason in msg, (str(e.value), msg)
