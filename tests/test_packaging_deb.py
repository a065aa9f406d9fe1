"""The seqshm-dkms Debian package as built by scripts/build-deb: one version everywhere, the
sources DKMS needs all in /usr/src, the boot-time and udev files where the system looks for
them. (Installing it, on three kernels, is tests/vm/test_dkms.py.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODULE = REPO / "module"


def _meson_version() -> str:
    found = re.search(r"version: '([^']+)'", (REPO / "meson.build").read_text())
    assert found
    return found.group(1)


def test_the_module_package_has_the_project_version() -> None:
    version = _meson_version()
    conf = (MODULE / "dkms.conf").read_text()
    assert f'PACKAGE_VERSION="{version}"' in conf
    changelog = (MODULE / "debian" / "changelog").read_text().splitlines()[0]
    assert changelog.startswith(f"seqshm ({version}-"), changelog


@pytest.fixture(scope="module")
def deb_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tarfile.TarInfo]:
    """The files of the .deb scripts/build-deb makes, by path."""
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("scripts/build-deb builds from git's files: not a git checkout")
    if os.geteuid() != 0 and not all(shutil.which(t) for t in ("dh", "dh_dkms", "fakeroot")):
        pytest.skip("debhelper, dh-dkms and fakeroot are missing and apt-get needs root")
    out = tmp_path_factory.mktemp("deb")
    built = subprocess.run(["bash", str(REPO / "scripts" / "build-deb"), str(out)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    deb = Path(built.stdout.strip().splitlines()[-1])
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                          check=True).stdout
    path = out / "data.tar"
    path.write_bytes(data)
    with tarfile.open(path) as tar:
        return {m.name.removeprefix("./"): m for m in tar.getmembers() if not m.isdir()}


def test_the_package_ships_every_source_dkms_builds(deb_files: dict[str, tarfile.TarInfo]) -> None:
    src = f"usr/src/seqshm-{_meson_version()}/"
    shipped = {p.removeprefix(src) for p in deb_files if p.startswith(src)}
    tracked = subprocess.run(["git", "-C", str(MODULE), "ls-files"], capture_output=True,
                             text=True, check=True).stdout.split()
    # Everything git has in module/ but the packaging itself, the checks, the benchmark module
    # and the docs (and .gitignore).
    wanted = {p for p in tracked if not p.startswith(("debian/", "bench/"))
              and p not in ("check.sh", "README.md", ".gitignore")}
    assert shipped == wanted
    assert deb_files[src + "dkms-post-build.sh"].mode & 0o111


def test_the_package_loads_at_boot_and_names_a_group(deb_files: dict[str, tarfile.TarInfo]) -> None:
    assert "usr/lib/modules-load.d/seqshm.conf" in deb_files
    assert "lib/udev/rules.d/60-seqshm.rules" in deb_files
    examples = "usr/share/doc/seqshm-dkms/examples/producer/"
    assert {p.removeprefix(examples) for p in deb_files if p.startswith(examples)} == {
        "Kbuild", "Makefile", "README", "dkms.conf", "seqshm_example.c"}


def test_the_udev_rule_gives_every_channel_to_the_group_and_keeps_its_mode() -> None:
    rules = [ln for ln in (MODULE / "debian" / "seqshm-dkms.seqshm.udev").read_text().splitlines()
             if ln and not ln.startswith("#")]
    assert rules == ['SUBSYSTEM=="misc", KERNEL=="seqshm-*", GROUP="seqshm"']
    postinst = (MODULE / "debian" / "seqshm-dkms.postinst").read_text()
    assert "addgroup --system --quiet seqshm" in postinst
