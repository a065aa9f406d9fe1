"""seqshm as a user installs it: the sdist holds every file of the tree, the wheel built from it
is manylinux with no compiler needed, the install under test is that wheel, and the supported
Python range has one home. The sdist and wheel checks run against what scripts/test-wheel
built (SEQSHM_SDIST_UNDER_TEST, SEQSHM_WHEEL_UNDER_TEST) and skip, saying so, elsewhere."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import seqshm

REPO = Path(__file__).resolve().parent.parent
SDIST = os.environ.get("SEQSHM_SDIST_UNDER_TEST")
WHEEL = os.environ.get("SEQSHM_WHEEL_UNDER_TEST")
# The manylinux policy the wheel is built to (glibc 2.17: clock_gettime is the newest versioned
# symbol the extension needs; see seqshm/meson.build on fcntl64).
POLICY = "manylinux_2_17"

needs_sdist = pytest.mark.skipif(not SDIST, reason="no sdist under test: scripts/test-wheel "
                                 "builds one and sets SEQSHM_SDIST_UNDER_TEST")
needs_wheel = pytest.mark.skipif(not WHEEL, reason="no wheel under test: scripts/test-wheel "
                                 "builds one and sets SEQSHM_WHEEL_UNDER_TEST")


def _tracked_files() -> set[str]:
    """The files git has at HEAD (what `meson dist`, and so the sdist, is made of)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout (or git is missing): no tree to compare with")
    out = subprocess.run(["git", "-C", str(REPO), "ls-tree", "-r", "--name-only", "HEAD"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.splitlines())


@needs_sdist
def test_the_sdist_holds_exactly_the_tracked_tree() -> None:
    assert SDIST is not None
    with tarfile.open(SDIST) as tar:
        members = [m for m in tar.getmembers() if not m.isdir()]
    top = {m.name.split("/", 1)[0] for m in members}
    version = seqshm.__version__
    assert top == {f"seqshm-{version}"}, f"{SDIST}: top-level folders {top}"
    names = {m.name.split("/", 1)[1] for m in members}
    tracked = _tracked_files()
    # PKG-INFO is the sdist's own metadata (PEP 643); everything else must be the tree's.
    assert names - tracked == {"PKG-INFO"}, f"in the sdist, not in git: {names - tracked}"
    assert tracked - names == set(), f"in git, missing from the sdist: {tracked - names}"


@needs_sdist
def test_the_sdist_metadata_names_the_supported_pythons() -> None:
    assert SDIST is not None
    with tarfile.open(SDIST) as tar:
        f = tar.extractfile(f"seqshm-{seqshm.__version__}/PKG-INFO")
        assert f is not None
        pkg_info = f.read().decode()
    assert f"Requires-Python: {_requires_python()}" in pkg_info.splitlines()


@needs_wheel
def test_the_wheel_is_manylinux_for_this_python() -> None:
    assert WHEEL is not None
    name = Path(WHEEL).name
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert name.startswith(f"seqshm-{seqshm.__version__}-{tag}-{tag}-"), name
    assert f"{POLICY}_{platform.machine()}" in name, f"{name}: not the {POLICY} policy"
    with zipfile.ZipFile(WHEEL) as z:
        wheel_meta = z.read(f"seqshm-{seqshm.__version__}.dist-info/WHEEL").decode()
    assert "Root-Is-Purelib: false" in wheel_meta
    assert f"Tag: {tag}-{tag}-{POLICY}_{platform.machine()}" in wheel_meta


@needs_wheel
def test_the_extension_needs_no_newer_glibc_than_its_policy() -> None:
    # What auditwheel judged, seen directly: the newest GLIBC_x.y the extension links to.
    core = Path(seqshm._core.__file__)
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump (binutils) is not installed")
    out = subprocess.run([objdump, "-T", str(core)], capture_output=True, text=True, check=True)
    found = re.findall(r"GLIBC_([\d.]+)", out.stdout)
    versions = {tuple(int(x) for x in v.split(".")) for v in found}
    assert versions, out.stdout
    wanted = tuple(int(x) for x in POLICY.split("_")[1:3])
    assert max(versions) <= wanted, f"{core} needs GLIBC_{max(versions)} (> {wanted})"


@needs_wheel
def test_the_package_under_test_is_the_installed_wheel_without_a_compiler() -> None:
    site = Path(sysconfig.get_paths()["platlib"]).resolve()
    for module in (seqshm, seqshm._core):
        where = Path(module.__file__ or "").resolve()
        assert where.is_relative_to(site), f"{module.__name__} imported from {where}, not {site}"
    # every file the wheel put down is there, as recorded
    dist = importlib.metadata.distribution("seqshm")
    files = dist.files or []
    assert any(str(f).startswith("seqshm/_core.") for f in files)
    missing = [str(f) for f in files if not Path(str(f.locate())).exists()]
    assert not missing, missing
    # and nothing could have compiled it here
    for compiler in ("cc", "gcc", "clang", "c++"):
        assert shutil.which(compiler) is None, f"{compiler} is reachable: {shutil.which(compiler)}"
    assert os.environ.get("CC") == "/bin/false"


def _requires_python() -> str:
    text = (REPO / "pyproject.toml").read_text()
    found = re.search(r'^requires-python = "([^"]+)"$', text, re.MULTILINE)
    assert found, "pyproject.toml has no requires-python"
    return found.group(1)


def test_the_supported_python_range_has_one_home() -> None:
    """pyproject.toml's requires-python is the range; the installed metadata carries it, and
    the README states the same lower bound where it says what to install."""
    spec = _requires_python()
    assert importlib.metadata.metadata("seqshm")["Requires-Python"] == spec
    low = re.fullmatch(r">=(3\.\d+)", spec)
    assert low, spec
    readme = (REPO / "README.md").read_text()
    assert f"Python >= {low.group(1)}" in readme
    assert "requires-python" in readme
    # the running interpreter is inside it (the suite runs on every version CI names)
    assert sys.version_info[:2] >= tuple(int(x) for x in low.group(1).split("."))
