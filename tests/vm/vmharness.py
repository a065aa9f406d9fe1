"""Runs seqshm's guest tests in QEMU booting stock Debian kernels: provision, build, boot, judge.

The stages, each usable on its own (see tests/vm/README.md):
  provision()        tests/vm/provision.sh: host packages, kernel images and headers in .cache
  build_module()     module/ built against one kernel's headers, in the run directory
  build_initramfs()  busybox + virtio/9p modules + tests/vm/init.sh + a config file
  boot()             qemu-system-x86_64 under TCG with a hard wall-clock timeout
  judge()            result marker, exit codes, kernel log (oops, WARN, panic, taint), junit
run_kernel() chains them; main() is the command line (tests/vm/run.py, python -m tests.vm).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import lzma
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
KERNELS = ("6.1", "6.12", "6.12-rt")
# The module's own tests, and the reader tests that run one body on two backends, here on the
# kernel's (the userspace backend of those runs on the host, faster than under TCG).
DEFAULT_PYTEST_ARGS = (
    "tests/device",
    "tests/test_pattern_backends.py",
    "tests/test_wait.py",
    "-k",
    "not userspace",
)
DEFAULT_TIMEOUT = 600.0
DEFAULT_MODULE_DIR = REPO / "module"
RESULT_MARKER = "SEQSHM-VM-RESULT"
GUEST_PREFIX = "seqshm-vm: "
# In-tree modules the guest needs for the 9p host mounts; their dependencies are added from
# their .modinfo (Debian's packages ship no modules.dep). Built-in ones are skipped.
GUEST_KMODS = ("virtio_pci", "9pnet_virtio", "9p")
# Kernel log lines that fail a run.
BAD_KERNEL_LINE = re.compile(
    r"Oops|BUG:|Call Trace|WARNING:|general protection fault|Kernel panic|"
    r"(?<![\w=])panic(?![\w=])|soft lockup|hard LOCKUP|blocked for more than|"
    r"rcu: .*stall|UBSAN:|KASAN:|list_(add|del) corruption|refcount_t:"
)
# Taint flags that mean the kernel itself went wrong (O and E, out-of-tree and unsigned, are
# expected from loading seqshm.ko).
BAD_TAINTS = {
    4: "M (machine check)",
    5: "B (bad page)",
    7: "D (oops)",
    9: "W (warning)",
    14: "L (soft lockup)",
}
_BUILD_JUNK = (
    "*.o",
    "*.ko",
    "*.mod",
    "*.mod.c",
    ".*.cmd",
    "*.cmd",
    "modules.order",
    "Module.symvers",
    ".tmp_versions",
    "*.a",
    ".cache.mk",
)


_TERMINAL_ESCAPE = re.compile(r"\x1b(\[[0-9;?]*[A-Za-z]|c)")


def cache_dir() -> Path:
    return Path(os.environ.get("SEQSHM_VM_CACHE", HERE / ".cache")).resolve()


class VMError(Exception):
    """A stage before or around the guest run failed (provisioning, build, QEMU itself)."""


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _log(msg: str) -> None:
    print(f"vm: {msg}", file=sys.stderr, flush=True)


# ---- provision -------------------------------------------------------------------------------


def provision(kernels=KERNELS) -> dict[str, dict[str, str]]:
    """Run provision.sh for `kernels`; return each kernel's kernel.env as a dict."""
    cmd = ["bash", str(HERE / "provision.sh"), *kernels]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise VMError(
            f"provisioning failed ({shlex.join(cmd)} -> rc {proc.returncode}):\n"
            f"{_tail(proc.stdout, 40)}"
        )
    return {k: kernel_env(k) for k in kernels}


def kernel_env(kernel: str) -> dict[str, str]:
    path = cache_dir() / "kernels" / kernel / "kernel.env"
    if not path.is_file():
        raise VMError(f"{path} missing: run tests/vm/provision.sh {kernel}")
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            env[name] = value
    for name in ("VMLINUZ", "MODDIR", "KDIR"):
        if not Path(env.get(name, "")).exists():
            raise VMError(
                f"{path}: {name}={env.get(name)!r} does not exist; "
                f"run tests/vm/provision.sh {kernel}"
            )
    return env


# ---- module build ------------------------------------------------------------------------------


def make_args(kenv: dict[str, str], module_build_dir: Path, *extra: str) -> list[str]:
    """The kbuild command line for an external module against a provisioned kernel."""
    # BTF for modules needs pahole and the headers' vmlinux; it is irrelevant to the tests.
    return [
        "make",
        "-C",
        kenv["KDIR"],
        f"M={module_build_dir}",
        "CONFIG_DEBUG_INFO_BTF_MODULES=",
        *extra,
    ]


def build_module(
    kenv: dict[str, str], src: Path, build_dir: Path, log_path: Path | None = None
) -> Path:
    """Copy `src` (a kbuild external module) into `build_dir`, build it, return the .ko.

    A copy per kernel keeps the two kernels' objects apart and leaves module/ untouched.
    """
    src = src.resolve()
    if not (src / "Kbuild").is_file() and not (src / "Makefile").is_file():
        raise VMError(
            f"no Kbuild or Makefile in {src}: nothing to build (module/ not written yet?)"
        )
    if build_dir.exists():
        shutil.rmtree(build_dir)
    shutil.copytree(src, build_dir, ignore=shutil.ignore_patterns(*_BUILD_JUNK), symlinks=True)
    jobs = str(os.cpu_count() or 1)
    cmd = make_args(kenv, build_dir, f"-j{jobs}", "modules")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if log_path:
        log_path.write_text(f"$ {shlex.join(cmd)}\n{proc.stdout}")
    if proc.returncode != 0:
        raise VMError(
            f"module build failed for {kenv['KVER']} ({shlex.join(cmd)}):\n{_tail(proc.stdout, 40)}"
        )
    kos = sorted(build_dir.glob("*.ko"))
    named = [k for k in kos if k.name == "seqshm.ko"]
    if named:
        return named[0]
    if len(kos) == 1:
        return kos[0]
    raise VMError(f"expected one .ko in {build_dir} after the build, found {[k.name for k in kos]}")


# ---- initramfs ---------------------------------------------------------------------------------


def _read_kmod(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".zst":
        raise VMError(f"{path}: zstd-compressed modules are not supported")
    if path.suffix == ".gz":
        return gzip.decompress(data)
    return data


def modinfo(data: bytes) -> dict[str, str]:
    """The .modinfo section of an ELF64 little-endian kernel module, as a dict."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise VMError("not an ELF64 little-endian kernel module")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, off, size = struct.unpack_from(
            "<IIQQQQ", data, shoff + i * shentsize
        )
        return name, off, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name, off, size = section(i)
        end = data.index(b"\0", stroff + name)
        if data[stroff + name : end] == b".modinfo":
            info = {}
            for item in data[off : off + size].split(b"\0"):
                key, sep, value = item.decode("utf-8", "replace").partition("=")
                if sep:
                    info.setdefault(key, value)
            return info
    return {}


def guest_kmods(moddir: Path, roots=GUEST_KMODS) -> list[tuple[str, bytes]]:
    """`roots` and their dependencies as (file name, uncompressed .ko), dependencies first."""
    index = {}
    for p in (moddir / "kernel").rglob("*.ko*"):
        index[p.name.split(".ko")[0].replace("-", "_")] = p
    builtin = set()
    builtin_list = moddir / "modules.builtin"
    if builtin_list.is_file():
        for line in builtin_list.read_text().split():
            builtin.add(Path(line).name.split(".ko")[0].replace("-", "_"))
    ordered: list[tuple[str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        if name in chain:
            raise VMError(f"module dependency cycle: {' -> '.join(chain + (name,))}")
        if name not in index:
            if name in builtin:
                seen.add(name)
                return
            raise VMError(f"kernel module {name} is neither in {moddir}/kernel nor built in")
        data = _read_kmod(index[name])
        for dep in filter(None, modinfo(data).get("depends", "").split(",")):
            visit(dep, chain + (name,))
        seen.add(name)
        ordered.append((f"{name}.ko", data))

    for root in roots:
        visit(root, ())
    return ordered


@dataclasses.dataclass
class GuestConfig:
    """What the guest's /init does (see tests/vm/init.sh)."""

    kernel: str
    repo: Path
    out: Path
    ko: Path | None
    command: list[str]
    ko_args: str = ""
    env: dict[str, str] = dataclasses.field(default_factory=dict)

    def conf_text(self, kmods: list[str]) -> str:
        # Host paths under /tmp the guest must still see over its own tmpfs /tmp: the repo,
        # the results, the module, the Python, and any /tmp path named in the command.
        paths = [self.repo, self.out, self.ko, Path(sys.prefix), Path(sys.base_prefix)]
        paths += [Path(w[w.index("/tmp/") :]) for w in self.command if "/tmp/" in w]
        keep = sorted(
            {
                p.parts[2]
                for p in paths
                if p is not None and len(p.parts) > 2 and p.parts[:2] == ("/", "tmp")
            }
        )
        values = {
            "VM_KERNEL": self.kernel,
            "VM_MODULES": " ".join(kmods),
            "VM_TMP_KEEP": " ".join(keep),
            "VM_REPO": str(self.repo),
            "VM_OUT": str(self.out),
            "VM_KO": str(self.ko) if self.ko else "",
            "VM_KO_ARGS": self.ko_args,
            "VM_PYTHON": self.command[0],
            "VM_CMD": shlex.join(self.command),
            "VM_ENV": shlex.join(f"{k}={v}" for k, v in self.env.items()),
        }
        return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def build_initramfs(kenv: dict[str, str], config: GuestConfig, path: Path) -> Path:
    """Write a gzipped newc initramfs for `config` to `path` (built with busybox cpio)."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.isfile(busybox):
        raise VMError("busybox not found: run tests/vm/provision.sh (busybox-static)")
    staging = path.with_suffix(".d")
    if staging.exists():
        shutil.rmtree(staging)
    for d in ("bin", "dev", "etc", "lib/modules", "proc", "sys", "host", "tmp"):
        (staging / d).mkdir(parents=True)
    shutil.copy2(busybox, staging / "bin" / "busybox")
    shutil.copy2(HERE / "init.sh", staging / "init")
    (staging / "init").chmod(0o755)
    kmods = guest_kmods(Path(kenv["MODDIR"]))
    for name, data in kmods:
        (staging / "lib" / "modules" / name).write_bytes(data)
    (staging / "etc" / "seqshm-vm.conf").write_text(config.conf_text([n for n, _ in kmods]))
    names = []
    for root, dirs, files in os.walk(staging):
        dirs.sort()
        for n in sorted(dirs + files):
            names.append(os.path.relpath(os.path.join(root, n), staging))
    proc = subprocess.run(
        [busybox, "cpio", "-o", "-H", "newc"],
        cwd=staging,
        input="\n".join(names).encode() + b"\n",
        capture_output=True,
    )
    if proc.returncode != 0:
        raise VMError(f"busybox cpio failed: {proc.stderr.decode(errors='replace')}")
    path.write_bytes(gzip.compress(proc.stdout, compresslevel=1))
    return path


# ---- boot --------------------------------------------------------------------------------------


@dataclasses.dataclass
class BootResult:
    console: str
    timed_out: bool
    qemu_rc: int | None
    seconds: float
    # host seconds since QEMU started at which guest lines containing these words appeared
    marks: dict[str, float]


def qemu_command(
    kenv: dict[str, str],
    initrd: Path,
    out: Path,
    smp: int = 2,
    memory: int = 1024,
    append: str = "",
    root: Path = Path("/"),
) -> list[str]:
    cmdline = "console=ttyS0 quiet panic=-1"
    return [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        str(smp),
        "-m",
        str(memory),
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
        "-kernel",
        kenv["VMLINUZ"],
        "-initrd",
        str(initrd),
        "-append",
        f"{cmdline} {append}".strip(),
        "-virtfs",
        f"local,path={root},mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={out},mount_tag=results,security_model=none,multidevs=remap",
    ]


def boot(cmd: list[str], console_path: Path, timeout: float, echo: bool = False) -> BootResult:
    """Run QEMU, copy its console to `console_path`, kill it after `timeout` seconds."""
    if shutil.which(cmd[0]) is None:
        raise VMError(f"{cmd[0]} not found: run tests/vm/provision.sh (qemu-system-x86)")
    marks: dict[str, float] = {}
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    chunks: list[bytes] = []

    def pump() -> None:
        assert proc.stdout is not None
        with open(console_path, "wb") as f:
            for line in iter(proc.stdout.readline, b""):
                f.write(line)
                f.flush()
                chunks.append(line)
                if echo:
                    sys.stderr.buffer.write(line)
                    sys.stderr.flush()
                text = line.decode("utf-8", "replace")
                if GUEST_PREFIX in text:
                    for word in ("init start", "tests begin", "tests end", RESULT_MARKER):
                        if word in text and word not in marks:
                            marks[word] = time.monotonic() - start

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
    reader.join(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()
    seconds = time.monotonic() - start
    console = b"".join(chunks).decode("utf-8", "replace").replace("\r", "")
    console = _TERMINAL_ESCAPE.sub("", console)  # SeaBIOS clears the screen
    return BootResult(console, timed_out, None if timed_out else proc.returncode, seconds, marks)


# ---- judge -------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    kernel: str
    ok: bool = False
    problems: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    marker: dict[str, str] = dataclasses.field(default_factory=dict)
    junit: dict[str, int] = dataclasses.field(default_factory=dict)
    summary_line: str = ""
    seqshm_origin: str = ""
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    run_dir: Path | None = None
    console_tail: str = ""
    output_tail: str = ""

    def report(self) -> str:
        lines = [f"kernel {self.kernel}: {'PASS' if self.ok else 'FAIL'}  (logs: {self.run_dir})"]
        if self.summary_line:
            lines.append(f"  guest pytest: {self.summary_line}")
        if self.junit:
            lines.append("  junit: " + ", ".join(f"{k}={v}" for k, v in self.junit.items()))
        if self.seqshm_origin:
            lines.append(f"  {self.seqshm_origin}")
        if self.timings:
            lines.append(
                "  timings (s): " + ", ".join(f"{k}={v:.1f}" for k, v in self.timings.items())
            )
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        if not self.ok:
            if self.output_tail:
                lines += ["  ---- guest output (tail) ----", self.output_tail]
            if self.console_tail:
                lines += ["  ---- console (tail) ----", self.console_tail]
        return "\n".join(lines)


def _bad_taints(value: str) -> list[str]:
    try:
        t = int(value)
    except ValueError:
        return []
    return [name for bit, name in BAD_TAINTS.items() if t >> bit & 1]


def _kernel_lines(console: str) -> list[str]:
    return [ln for ln in console.splitlines() if GUEST_PREFIX not in ln]


def judge(
    result: RunResult, booted: BootResult, out: Path, expect_junit: bool, timeout: float
) -> RunResult:
    """Decide pass/fail from everything the guest left behind. Anything unexplained fails."""
    problems = result.problems
    console = booted.console
    result.console_tail = _tail(console, 60)
    output = out / "output.log"
    if output.is_file():
        text = output.read_text(errors="replace")
        result.output_tail = _tail(text, 80)
        summaries = [
            ln
            for ln in text.splitlines()
            if re.match(
                r"^=+ .*\b(passed|failed|error|errors|skipped|no tests ran)\b"
                r".* in [\d.]+s.*=+$",
                ln,
            )
        ]
        if summaries:
            result.summary_line = summaries[-1].strip("= ")
    if (out / "seqshm_origin.txt").is_file():
        result.seqshm_origin = (out / "seqshm_origin.txt").read_text().strip()

    if booted.timed_out:
        problems.append(f"guest did not finish within {timeout:.0f} s (hang?); QEMU killed")
    elif booted.qemu_rc not in (0, None):
        problems.append(f"QEMU exited with rc {booted.qemu_rc}")

    markers = [ln for ln in console.splitlines() if f"{GUEST_PREFIX}{RESULT_MARKER} " in ln]
    if not markers:
        problems.append(
            f"no {RESULT_MARKER} line on the console (guest crashed, hung or never reached /init)"
        )
    else:
        fields = dict(
            f.split("=", 1) for f in markers[-1].split(RESULT_MARKER, 1)[1].split() if "=" in f
        )
        result.marker = fields
        if fields.get("stage") != "done":
            errors = [ln for ln in console.splitlines() if f"{GUEST_PREFIX}error:" in ln]
            problems.append(
                f"guest stopped at stage '{fields.get('stage')}': "
                + (errors[-1].split(GUEST_PREFIX, 1)[1] if errors else "see the console")
            )
        elif fields.get("rc") != "0":
            problems.append(f"guest command exited with rc {fields.get('rc')}")
        if fields.get("unload") not in ("0", "none"):
            problems.append(f"rmmod of the module failed (rc {fields.get('unload')})")
        elif fields.get("unload") == "none" and fields.get("stage") == "done":
            result.notes.append("module was not loaded at the end of the run (not unloaded)")
        new_bad = set(_bad_taints(fields.get("taint", ""))) - set(
            _bad_taints(fields.get("taint_before", ""))
        )
        if new_bad:
            problems.append(f"kernel tainted during the tests: {', '.join(sorted(new_bad))}")
        if _bad_taints(fields.get("taint_before", "")):
            problems.append(
                "kernel already tainted before the tests: "
                + ", ".join(_bad_taints(fields.get("taint_before", "")))
            )

    bad = [ln for ln in _kernel_lines(console) if BAD_KERNEL_LINE.search(ln)]
    dmesg = out / "dmesg.txt"
    if dmesg.is_file():
        bad += [
            ln
            for ln in dmesg.read_text(errors="replace").splitlines()
            if BAD_KERNEL_LINE.search(ln) and ln not in bad
        ]
    if bad:
        problems.append("kernel log reports trouble:\n    " + "\n    ".join(bad[:30]))

    if expect_junit and result.marker.get("stage") == "done":
        junit = out / "junit.xml"
        if not junit.is_file():
            problems.append("pytest wrote no junit.xml")
        else:
            try:
                root = ET.parse(junit).getroot()
                suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
                counts = {
                    k: sum(int(s.get(k, 0)) for s in suites)
                    for k in ("tests", "failures", "errors", "skipped")
                }
                result.junit = counts
                if counts["tests"] == 0:
                    problems.append("no tests ran in the guest")
                elif counts["skipped"] == counts["tests"]:
                    problems.append(
                        f"all {counts['tests']} guest tests were skipped: the "
                        f"module tests did not actually run"
                    )
            except ET.ParseError as exc:
                problems.append(f"junit.xml unreadable: {exc}")
    if "_editable_loader" in result.output_tail + result.seqshm_origin and (
        "Read-only file system" in result.output_tail + result.seqshm_origin
    ):
        problems.append(
            "seqshm is installed editable (pip install -e): meson-python rebuilds it on import, "
            "which cannot work on the guest's read-only view of the host; "
            "use `pip install .` (as scripts/test does)"
        )
    if f"from {REPO / 'seqshm'}{os.sep}" in result.seqshm_origin:
        problems.append(
            "the tests imported seqshm from the source tree, not the installed "
            "package (pip install . first; check sys.path/conftest)"
        )
    result.ok = not problems
    return result


# ---- the whole flow ------------------------------------------------------------------------------


@dataclasses.dataclass
class Options:
    pytest_args: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_PYTEST_ARGS))
    guest_cmd: str | None = None  # a shell command instead of pytest
    module_dir: Path | None = DEFAULT_MODULE_DIR  # None: load no module
    ko: Path | None = None  # a prebuilt .ko instead of building module_dir
    ko_args: str = ""
    timeout: float = DEFAULT_TIMEOUT
    python: str = sys.executable
    run_root: Path | None = None  # default .cache/runs
    echo: bool = False
    skip_provision: bool = False
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    append: str = ""
    # The guest's root (mounted read-only at /host, the command chrooted into it): the host's
    # own by default; another tree (tests/vm/dkms_root.sh's Debian root) runs the command with
    # the results folder as its cwd.
    root: Path = Path("/")


def guest_python_flags(python: str) -> list[str]:
    """Flags so that `python -m pytest` does not put the cwd (the repo root) on sys.path."""
    out = subprocess.run(
        [python, "-c", "import sys; print(sys.version_info >= (3, 11))"],
        capture_output=True,
        text=True,
    )
    if out.stdout.strip() == "True":
        return ["-P"]
    # Before 3.11: drop sys.path[0] ('' for -c) by hand.
    return [
        "-c",
        "import sys; del sys.path[0]; import pytest; raise SystemExit(pytest.console_main())",
    ]


def guest_env(extra: dict[str, str]) -> dict[str, str]:
    """The guest command's extra environment: `extra`, with the guest plugin on PYTHONPATH."""
    env = dict(extra)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(HERE / "guest") not in paths:
        paths.append(str(HERE / "guest"))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


KEEP_RUNS = 5


def new_run_dir(run_root: Path, kernel: str) -> Path:
    """A fresh runs/<kernel>-<time>-<pid> (runs may overlap), runs/<kernel>-latest pointing at it.

    Only the newest KEEP_RUNS runs per kernel are kept.
    """
    run_root.mkdir(parents=True, exist_ok=True)
    base = f"{kernel}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run_dir = run_root / base
    n = 1
    while True:
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            n += 1
            run_dir = run_root / f"{base}.{n}"
    latest = run_root / f"{kernel}-latest"
    tmp = run_root / f".{kernel}-latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_dir.name)
    tmp.replace(latest)
    old = sorted(
        (p for p in run_root.glob(f"{kernel}-2*") if p.is_dir()), key=lambda p: p.stat().st_mtime
    )
    for p in old[:-KEEP_RUNS]:
        shutil.rmtree(p, ignore_errors=True)
    return run_dir


def run_kernel(kernel: str, opts: Options) -> RunResult:
    """Provision, build, boot, run the guest tests on one kernel; failures are in the result."""
    result = RunResult(kernel)
    run_root = opts.run_root or cache_dir() / "runs"
    run_dir = new_run_dir(run_root, kernel)
    result.run_dir = run_dir
    t = time.monotonic()
    try:
        if opts.skip_provision:
            kenv = kernel_env(kernel)
        else:
            kenv = provision([kernel])[kernel]
        result.timings["provision"] = time.monotonic() - t
        out = run_dir / "guest"
        out.mkdir(parents=True)
        result.notes.append(f"kernel {kenv['KVER']} ({kenv['PKG_VERSION']})")

        t = time.monotonic()
        ko = opts.ko.resolve() if opts.ko else None
        if ko is None and opts.module_dir is not None:
            ko = build_module(kenv, opts.module_dir, run_dir / "module", run_dir / "build.log")
        result.timings["build"] = time.monotonic() - t

        if opts.guest_cmd is not None:
            command = ["/bin/sh", "-c", opts.guest_cmd]
        else:
            flags = guest_python_flags(opts.python)
            pytest = [opts.python, *flags] + (["-m", "pytest"] if flags == ["-P"] else [])
            command = [
                *pytest,
                "-p",
                "no:cacheprovider",
                "-p",
                "seqshm_vm_guest",
                f"--rootdir={REPO}",
                f"--junitxml={out / 'junit.xml'}",
                "-o",
                "junit_family=xunit2",
                "-ra",
                *opts.pytest_args,
            ]
        env = guest_env(opts.env)
        cwd = REPO
        if opts.root != Path("/"):
            # init.sh makes the results' mount point inside the (read-only) root: make it here.
            (opts.root / str(out).lstrip("/")).mkdir(parents=True, exist_ok=True)
            cwd = out
        config = GuestConfig(kernel, cwd, out, ko, command, opts.ko_args, env)
        t = time.monotonic()
        initrd = build_initramfs(kenv, config, run_dir / "initramfs.cpio.gz")
        result.timings["initramfs"] = time.monotonic() - t

        cmd = qemu_command(kenv, initrd, out, append=opts.append, root=opts.root)
        (run_dir / "qemu.sh").write_text(
            f"#!/bin/sh\n# How this run booted the guest.\nexec {shlex.join(cmd)}\n"
        )
        _log(
            f"{kernel}: booting {kenv['KVER']} (console: {run_dir / 'console.log'}, "
            f"guest output: {out / 'output.log'}, timeout {opts.timeout:.0f} s)"
        )
        booted = boot(cmd, run_dir / "console.log", opts.timeout, echo=opts.echo)
    except VMError as exc:
        result.problems.append(str(exc))
        result.ok = False
        return result
    m = booted.marks
    if "tests begin" in m:
        result.timings["boot"] = m["tests begin"]
        if "tests end" in m:
            result.timings["tests"] = m["tests end"] - m["tests begin"]
    result.timings["qemu_total"] = booted.seconds
    judge(result, booted, out, expect_junit=opts.guest_cmd is None, timeout=opts.timeout)
    summary = dataclasses.asdict(result)
    summary["run_dir"] = str(run_dir)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result


# ---- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="tests/vm/run.py",
        description="Build seqshm.ko and run the guest tests in QEMU on Debian's 6.1, 6.12 and "
        "6.12-rt (PREEMPT_RT) kernels.",
    )
    ap.add_argument(
        "--kernel",
        action="append",
        choices=KERNELS,
        help="kernel to test (repeatable; default: all)",
    )
    ap.add_argument(
        "--pytest-args",
        default=None,
        help=f"pytest arguments in the guest, one shell-quoted string "
        f"(default: {shlex.join(DEFAULT_PYTEST_ARGS)})",
    )
    ap.add_argument(
        "--guest-cmd",
        default=None,
        help="run this shell command in the guest (cwd: repo root) instead of pytest",
    )
    ap.add_argument(
        "--module-dir",
        type=Path,
        default=DEFAULT_MODULE_DIR,
        help="kbuild directory of the module to build and load (default: module/)",
    )
    ap.add_argument("--ko", type=Path, default=None, help="load this prebuilt .ko instead")
    ap.add_argument("--no-module", action="store_true", help="load no module")
    ap.add_argument("--ko-args", default="", help="module parameters for insmod")
    ap.add_argument(
        "--timeout",
        type=float,
        default=float(os.environ.get("SEQSHM_VM_TIMEOUT", DEFAULT_TIMEOUT)),
        help="wall-clock limit per boot in seconds (default: %(default)s)",
    )
    ap.add_argument(
        "--python",
        default=sys.executable,
        help="Python to run in the guest (default: this one, %(default)s)",
    )
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the guest command (repeatable)",
    )
    ap.add_argument("--append", default="", help="extra kernel command line")
    ap.add_argument("--echo", action="store_true", help="copy the guest console to stderr live")
    ap.add_argument(
        "--skip-provision", action="store_true", help="use the cache as it is (no apt at all)"
    )
    ap.add_argument("--provision-only", action="store_true", help="provision and stop")
    args = ap.parse_args(argv)
    kernels = args.kernel or list(KERNELS)
    if args.provision_only:
        try:
            for k, env in provision(kernels).items():
                print(f"{k}: {env['KVER']} ({env['PKG_VERSION']})")
        except VMError as exc:
            print(exc, file=sys.stderr)
            return 1
        return 0
    opts = Options(
        pytest_args=(
            shlex.split(args.pytest_args)
            if args.pytest_args is not None
            else list(DEFAULT_PYTEST_ARGS)
        ),
        guest_cmd=args.guest_cmd,
        module_dir=None if args.no_module else args.module_dir,
        ko=args.ko,
        ko_args=args.ko_args,
        timeout=args.timeout,
        python=args.python,
        echo=args.echo,
        skip_provision=args.skip_provision,
        env=dict(e.split("=", 1) for e in args.env),
        append=args.append,
    )
    failed = 0
    for k in kernels:
        res = run_kernel(k, opts)
        print(res.report(), flush=True)
        failed += not res.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
