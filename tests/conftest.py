"""Fixtures of the host test suite: channel paths that never leak, the pattern sources of the
two backends (userspace writer, kernel selftest channel), hypothesis settings."""

from __future__ import annotations

import contextlib
import gc
import itertools
import multiprocessing
import multiprocessing.process
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

REPO = Path(__file__).resolve().parent.parent


def _source_folder_shadows() -> str | None:
    """Why `import seqshm`, here or in a test's child process, would take the checkout's
    seqshm/ source folder (which has no compiled core) instead of the installed package, if it
    would: the cwd or the checkout is on sys.path ahead of site-packages (`python -m pytest`
    from the checkout; Python < 3.11 has no -P/PYTHONSAFEPATH to prevent it)."""
    import importlib.machinery  # noqa: PLC0415

    for finder in sys.meta_path:
        spec = finder.find_spec("seqshm", None) if hasattr(finder, "find_spec") else None
        if spec is not None:
            break
    else:
        return None  # not installed at all: the import below says so
    # An editable install's import hook (meson-python's, ahead of the path finder) serves the
    # source folder together with its built core: nothing shadows anything.
    if finder is not importlib.machinery.PathFinder:
        return None
    if spec.origin and Path(spec.origin).resolve().parent == REPO / "seqshm":
        return f"sys.path puts {REPO} (the checkout) ahead of the installed package"
    # (-P alone is not inherited: only the variable protects the children, and from 3.11 on.)
    if Path.cwd().resolve() == REPO and not (
        sys.version_info >= (3, 11) and os.environ.get("PYTHONSAFEPATH")
    ):
        return (f"the cwd is the checkout {REPO}, and the tests' child processes "
                "(python -c/-m) put their cwd first on sys.path")
    return None


if (_why := _source_folder_shadows()) is not None:
    raise pytest.UsageError(
        f"seqshm: the tests would import the checkout's source folder {REPO / 'seqshm'} (no "
        f"compiled core) instead of the installed package: {_why}. Run `bash scripts/test`, "
        f"or pytest from outside the checkout (cd /tmp && python -m pytest {REPO / 'tests'}), "
        "or install editable (pip install --no-build-isolation -e .)")

from channel_dir import PREFIX, SHM_DIR  # noqa: E402

import seqshm  # noqa: E402
from seqshm.testing import PatternWriter  # noqa: E402

# Hypothesis never writes its example database (the repository may be a read-only mount, and
# the suite must not leave files behind); no deadlines (a loaded 2-core box is not a timing rig).
settings.register_profile(
    "seqshm", database=None, deadline=None, max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "thorough", parent=settings.get_profile("seqshm"), max_examples=2000,
)
settings.load_profile(os.environ.get("SEQSHM_HYPOTHESIS_PROFILE", "seqshm"))
# Its other caches (constants, unicode data) go to the temp dir, not a .hypothesis/ in the cwd.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), f"seqshm-hypothesis-{os.getuid()}"))

UAPI_HEADER = REPO / "module" / "include" / "uapi" / "linux" / "seqshm.h"
SELFTEST = "/dev/seqshm/selftest"
SELFTEST_PARAMS = Path("/sys/module/seqshm/parameters")
IN_VM = bool(os.environ.get("SEQSHM_IN_VM"))


_names = itertools.count()


def _leftovers() -> list[str]:
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX)
                  or (n.startswith(f".{PREFIX}") and n.endswith((".tmp", ".waiters"))))


@pytest.fixture(scope="session", autouse=True)
def no_leaked_channels() -> Iterator[None]:
    """The suite leaves no channel files behind in /dev/shm."""
    yield
    leaked = _leftovers()
    for n in leaked:
        os.unlink(os.path.join(SHM_DIR, n))
    assert not leaked, f"tests left channel files in {SHM_DIR}: {leaked}"


@pytest.fixture
def shm_name() -> Iterator[str]:
    """A fresh channel name whose file (SHM_DIR/name) is removed after the test."""
    name = f"{PREFIX}{next(_names)}"
    yield name
    # and its sidecar of sleeping readers, which a writer that died leaves behind
    for n in (name, f".{name}.waiters"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM_DIR, n))


@pytest.fixture
def shm_path(shm_name: str) -> str:
    """A fresh channel path in /dev/shm (or the temp dir), removed after the test."""
    return os.path.join(SHM_DIR, shm_name)


@pytest.fixture
def hostile_paths(shm_name: str) -> Iterator[list[str]]:
    """Paths for files another user (or a test acting as one) makes next to this test's
    channel: the test appends them, and they are removed afterwards."""
    made: list[str] = []
    yield made
    for p in made:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


@pytest.fixture
def make_path(tmp_path: Path) -> Callable[[], str]:
    """make_path(): another fresh channel path (in the test's tmp_path)."""
    counter = itertools.count()
    return lambda: str(tmp_path / f"chan{next(counter)}")


# ---------------------------------------------------------------------------------------------
# Pattern sources: one test body, two backends.

BACKENDS = ["userspace", "device"]


@dataclass
class PatternSource:
    """A live channel at ``path`` whose every write k fills each 64-bit word with k."""

    backend: str
    path: str
    nbytes: int
    nr_slots: int
    writer: PatternWriter | None = None  # the userspace backend's writer process


class _Selftest:
    """The kernel module's selftest channel, reconfigured when a test needs another payload
    size or slot count (through its run-time parameters, or by reloading the module with
    SEQSHM_KO), and put back as it was afterwards."""

    def __init__(self) -> None:
        self.original: dict[str, str] | None = None

    @staticmethod
    def params() -> dict[str, str]:
        return {p.name: p.read_text().strip() for p in SELFTEST_PARAMS.iterdir()
                if os.access(p, os.R_OK)}

    @staticmethod
    def layout() -> tuple[int, int]:
        with seqshm.open(SELFTEST) as r:
            return int(r.payload_size), int(r.nr_slots)

    def _reload(self, params: dict[str, str]) -> None:
        gc.collect()  # unmap views still waiting for the collector: a mapping pins the module
        ko = os.environ.get("SEQSHM_KO")
        args = [f"{k}={v}" for k, v in params.items()]
        for tool, extra in (("rmmod", ["seqshm"]), ("insmod", [str(ko), *args])):
            cmd = [tool] if shutil.which(tool) else ["busybox", tool]
            r = subprocess.run(cmd + extra, capture_output=True, text=True, check=False)
            if r.returncode:
                raise RuntimeError(f"{' '.join(cmd + extra)}: {r.stdout}{r.stderr}")
        deadline = time.monotonic() + 5
        while not os.path.exists(SELFTEST):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{SELFTEST} did not appear after insmod")
            time.sleep(0.02)

    def _set_geometry(self, params: dict[str, str]) -> bool:
        """Set selftest_bytes/selftest_slots at run time (the module recreates the channel);
        False where the parameters are read-only (an older module)."""
        files = [SELFTEST_PARAMS / k for k in ("selftest_bytes", "selftest_slots")]
        if not all(f.stat().st_mode & 0o222 for f in files):  # root passes access(W_OK)
            return False
        gc.collect()  # old mappings keep the old region alive; let them go first
        for f in files:
            f.write_text(f"{params[f.name]}\n")
        want = (int(params["selftest_bytes"]), int(params["selftest_slots"]))
        deadline = time.monotonic() + 5
        while True:
            try:
                if self.layout() == want:
                    return True
            except (FileNotFoundError, seqshm.FormatError):
                pass  # being recreated
            if time.monotonic() > deadline:
                raise RuntimeError(f"{SELFTEST} did not take (payload, slots) {want}")
            time.sleep(0.01)

    def configure(self, nbytes: int, nr_slots: int) -> None:
        if self.layout() == (nbytes, nr_slots):
            return
        if self.original is None:
            self.original = self.params()
        wanted = dict(self.original, selftest_bytes=str(nbytes), selftest_slots=str(nr_slots))
        if self._set_geometry(wanted):
            return
        ko = os.environ.get("SEQSHM_KO")
        if not ko or not os.path.exists(ko) or os.geteuid() != 0:
            pytest.skip(f"{SELFTEST} has (payload, slots) {self.layout()}, the test needs "
                        f"{(nbytes, nr_slots)}, and SEQSHM_KO (as root) is not there to reload "
                        "the module with selftest_bytes/selftest_slots")
        self._reload(wanted)

    def restore(self) -> None:
        if self.original is not None and self.params() != self.original:
            if not self._set_geometry(self.original):
                self._reload(self.original)
        self.original = None


@pytest.fixture(scope="module")
def selftest_module() -> Iterator[_Selftest]:
    """The selftest channel's configuration, put back after the module's tests (so that the
    device tests that follow see the parameters the harness loaded)."""
    st = _Selftest()
    yield st
    if os.path.exists(SELFTEST):
        st.restore()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The pattern source's backend: a userspace writer process, or the kernel's selftest."""
    if request.param == "device" and not os.path.exists(SELFTEST):
        pytest.skip(f"no {SELFTEST}: the kernel backend runs in the QEMU guest (tests/vm) "
                    "with seqshm.ko loaded")
    return str(request.param)


@contextlib.contextmanager
def _device_source(st: _Selftest, nbytes: int, nr_slots: int,
                   rate_hz: float | None) -> Iterator[PatternSource]:
    st.configure(nbytes, nr_slots)
    period = SELFTEST_PARAMS / "selftest_period_us"
    old = period.read_text().strip()
    # The module's fastest period stands in for "as fast as it can".
    us = 10 if rate_hz is None else max(10, min(10_000_000, round(1e6 / rate_hz)))
    period.write_text(f"{us}\n")
    try:
        deadline = time.monotonic() + 5
        with seqshm.open(SELFTEST) as r:  # wait for the first write after a reload
            while r.head == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{SELFTEST}: no write within 5 s")
                time.sleep(0.001)
        yield PatternSource("device", SELFTEST, nbytes, nr_slots)
    finally:
        if os.path.exists(period):
            period.write_text(f"{old}\n")


@pytest.fixture
def pattern_channel(backend: str, shm_path: str, request: pytest.FixtureRequest
                    ) -> Callable[..., contextlib.AbstractContextManager[PatternSource]]:
    """pattern_channel(nbytes, nr_slots=1, rate_hz=None): a context manager giving a live
    PatternSource of this test's backend: writes as fast as the backend goes (rate_hz=None)
    or about rate_hz a second."""

    def make(nbytes: int, nr_slots: int = 1, rate_hz: float | None = None
             ) -> contextlib.AbstractContextManager[PatternSource]:
        if backend == "device":
            return _device_source(request.getfixturevalue("selftest_module"), nbytes, nr_slots,
                                  rate_hz)
        return _userspace_source(shm_path, nbytes, nr_slots, rate_hz)

    return make


@contextlib.contextmanager
def _userspace_source(path: str, nbytes: int, nr_slots: int,
                      rate_hz: float | None) -> Iterator[PatternSource]:
    with PatternWriter(path, nbytes, nr_slots=nr_slots, rate_hz=rate_hz) as w:
        # Wait for the first write, as for the device, so no reader sees the empty channel.
        deadline = time.monotonic() + 5
        with seqshm.open(path) as r:
            while r.head == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{path}: no write within 5 s")
                time.sleep(0.001)
        yield PatternSource("userspace", path, nbytes, nr_slots, w)


# ---------------------------------------------------------------------------------------------
# Numbers worth reading in the summary (torn copies found by the bypass tests, and the like).

_REPORT: list[str] = []


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """report(text): a line for the end-of-run summary, tagged with the test's id."""
    def add(text: str) -> None:
        _REPORT.append(f"{request.node.nodeid}: {text}")
        request.node.user_properties.append(("report", text))
    return add


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _REPORT:
        terminalreporter.section("seqshm concurrency figures")
        for line in _REPORT:
            terminalreporter.write_line(line)



# -- a second, unprivileged user (tests of the boundary between tenants) ---------------------

#: The account the suite makes for a second local user when it runs as root (CI does).
TENANT = "seqshm-tenant"


class Tenant:
    """A second, unprivileged local user: ``run(fn, *args)`` calls ``fn`` in a child forked
    from this process that has dropped to that user's uid and gid (no supplementary groups)
    and returns its result; ``start(fn, *args)`` leaves such a child running (``stop()``).
    Forked, not exec'd, so that it needs no access to this interpreter's files (a venv under
    /root is not the other user's to run)."""

    def __init__(self, uid: int, gid: int) -> None:
        self.uid, self.gid = uid, gid
        self._ctx = multiprocessing.get_context("fork")
        self._running: list[multiprocessing.process.BaseProcess] = []

    def _child(self, fn: Callable[..., Any], args: tuple[Any, ...], out: Any) -> None:
        os.setgroups([])
        os.setgid(self.gid)
        os.setuid(self.uid)
        try:
            out.send((True, fn(*args)))
        except BaseException as e:  # the parent re-raises it
            out.send((False, e))

    def run(self, fn: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Any:
        mine, theirs = self._ctx.Pipe(duplex=False)
        p = self._ctx.Process(target=self._child, args=(fn, args, theirs))
        p.start()
        theirs.close()  # the child's end: closed here now, not whenever the GC gets to it
        try:
            if not mine.poll(timeout):
                raise TimeoutError(f"{fn.__name__} as {TENANT} did not return in {timeout} s")
            ok, value = mine.recv()
        finally:
            mine.close()
            p.kill()
            p.join()
            p.close()
        if not ok:
            raise value
        return value

    def start(self, fn: Callable[..., Any], *args: Any) -> multiprocessing.process.BaseProcess:
        mine, theirs = self._ctx.Pipe(duplex=False)
        p = self._ctx.Process(target=self._child, args=(fn, args, theirs), daemon=True)
        p.start()
        mine.close()  # nothing is read from a long-running child: no descriptor left to the GC
        theirs.close()
        self._running.append(p)
        return p

    def stop(self) -> None:
        for p in self._running:
            p.kill()
            p.join()
            p.close()
        self._running.clear()


@pytest.fixture(scope="session")
def tenant_account() -> tuple[int, int]:
    """(uid, gid) of the second user, made with useradd when the suite runs as root."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to make a second, unprivileged user (CI runs as root): run "
                    "the suite as root to test what one local user can do to another's channel")
    try:
        pw = pwd.getpwnam(TENANT)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        if not os.path.exists(useradd):
            pytest.skip("no useradd here to make the second user " + TENANT)
        subprocess.run([useradd, "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", TENANT], check=True, capture_output=True)
        pw = pwd.getpwnam(TENANT)
    return pw.pw_uid, pw.pw_gid


@pytest.fixture
def other_user(tenant_account: tuple[int, int]) -> Iterator[Tenant]:
    """A second, unprivileged local user (see Tenant); its children end with the test."""
    t = Tenant(*tenant_account)
    yield t
    t.stop()
