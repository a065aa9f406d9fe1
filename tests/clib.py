"""Builds libseqshm from this checkout with the project's meson (plain, or with AddressSanitizer
and UndefinedBehaviorSanitizer), installs it into a private prefix, and compiles C programs
against the installed library with cc and pkg-config, as a C user would. Shared by
tests/test_clib.py, tests/device/test_clib.py and benchmarks/test_bench_clib.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TOOL_SRC = REPO / "tests" / "c" / "seqshm_tool.c"
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
#: What a sanitized program runs with: any leak, or any error, fails it.
SANITIZER_ENV = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:exitcode=86",
                 "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:exitcode=87"}


def _tool_path(name: str) -> str:
    """meson or ninja: beside this Python (the venv's), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found (pip install meson ninja, or apt-get install {name})")
    return found


@dataclass(frozen=True)
class Lib:
    """An installed libseqshm: its prefix, and whether it was built with the sanitizers."""

    prefix: Path
    sanitize: bool

    @property
    def libdir(self) -> Path:
        return self.prefix / "lib"

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PKG_CONFIG_PATH=str(self.libdir / "pkgconfig"))
        if self.sanitize:
            env.update(SANITIZER_ENV)
        return env

    def pkg_config(self, *args: str) -> list[str]:
        out = subprocess.run(["pkg-config", *args, "seqshm"], env=self.env(), check=True,
                             capture_output=True, text=True).stdout
        return out.split()

    def compile(self, src: Path, out: Path, *extra: str, static: bool = False,
                link: tuple[str, ...] = ()) -> Path:
        """cc SRC against the installed library (pkg-config), warnings as errors; ``link``:
        more libraries, after it."""
        cflags = self.pkg_config("--cflags")
        if static:
            libs = [str(self.libdir / "libseqshm.a"), "-pthread"]
        else:
            libs = self.pkg_config("--libs") + [f"-Wl,-rpath,{self.libdir}"]
        cmd = ["cc", "-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", *cflags,
               *(SANITIZE if self.sanitize else []), *extra, str(src), "-o", str(out), *libs, *link]
        done = subprocess.run(cmd, env=self.env(), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)}\n{done.stderr}")
        return out


def build(work: Path, sanitize: bool, buildtype: str = "debugoptimized") -> Lib:
    """meson setup + compile + install of this checkout's libseqshm (no Python part) into
    WORK/prefix-(plain|asan); ``buildtype`` "release" (-O3, the project's default) for the
    benchmarks."""
    kind = "asan" if sanitize else "plain"
    bdir, prefix = work / f"build-{kind}", work / f"prefix-{kind}"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}"
               f"{os.environ.get('PATH', '')}")
    setup = [_tool_path("meson"), "setup", str(bdir), str(REPO), "-Dpython=disabled",
             "-Dlibseqshm=enabled", f"--prefix={prefix}", "--libdir=lib",
             f"-Dbuildtype={buildtype}", "-Dwerror=true"]
    if sanitize:
        setup += ["-Db_sanitize=address,undefined", "-Db_lundef=false"]
    for cmd in (setup, [_tool_path("meson"), "install", "-C", str(bdir), "--quiet"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"{' '.join(cmd)}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return Lib(prefix, sanitize)


def spec(dtype: np.dtype) -> str:
    """seqshm_tool's element spec of ``dtype`` (see tests/c/seqshm_tool.c)."""
    dt = np.dtype(dtype)
    if dt.fields is None:
        return f"{dt.kind}{dt.itemsize}"
    parts = [str(dt.itemsize)]
    for name in dt.names or ():
        sub, offset = dt.fields[name][:2]
        if sub.subdtype is not None:
            base, shape = sub.subdtype
            parts.append(f"{name}:{base.kind}{base.itemsize}:{offset}:{int(np.prod(shape))}")
        else:
            parts.append(f"{name}:{sub.kind}{sub.itemsize}:{offset}")
    return "|".join(parts)


def fields_text(dtype: np.dtype) -> str:
    """What seqshm_tool info prints as fields= for a channel of ``dtype``."""
    dt = np.dtype(dtype)
    if dt.fields is None:
        return f":{dt.kind}{dt.itemsize}:0:1:0"
    out = []
    for name in dt.names or ():
        sub, offset = dt.fields[name][:2]
        if sub.subdtype is not None:
            base, shape = sub.subdtype
            out.append(f"{name}:{base.kind}{base.itemsize}:{offset}:{int(np.prod(shape))}:1")
        else:
            out.append(f"{name}:{sub.kind}{sub.itemsize}:{offset}:1:0")
    return "|".join(out)


def parse(line: str) -> dict[str, str]:
    """key=value words of one line of seqshm_tool output (msg= takes the rest of the line)."""
    out: dict[str, str] = {}
    head, sep, msg = line.partition(" msg=")
    for word in head.split():
        k, _, v = word.partition("=")
        out[k] = v
    if sep:
        out["msg"] = msg
    return out


#: Set by tests/vm/test_vm.py for the QEMU guests: a directory (see build_tools) where the host
#: already built the library and the test program, so the guests (TCG: every compile ~10x
#: slower) only run them.
TOOLS_ENV = "SEQSHM_CLIB_TOOLS"


def build_tools(work: Path) -> Path:
    """Both builds of the library and of tests/c/seqshm_tool.c under ``work``, for tools()."""
    for sanitize in (False, True):
        lib = build(work, sanitize)
        lib.compile(TOOL_SRC, work / f"seqshm_tool-{'asan' if sanitize else 'plain'}")
    return work


def tools(work: Path, sanitize: bool) -> tuple[Lib, Path]:
    """(the installed library, seqshm_tool built against it): prebuilt in $SEQSHM_CLIB_TOOLS
    when the host made them (build_tools), else built now under ``work``."""
    kind = "asan" if sanitize else "plain"
    pre = os.environ.get(TOOLS_ENV)
    if pre and (Path(pre) / f"seqshm_tool-{kind}").is_file():
        return Lib(Path(pre) / f"prefix-{kind}", sanitize), Path(pre) / f"seqshm_tool-{kind}"
    lib = build(work, sanitize)
    return lib, lib.compile(TOOL_SRC, work / f"seqshm_tool-{kind}")
