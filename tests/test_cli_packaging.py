"""The installed package's metadata as pip shows it: the version from its one home
(meson.build), the license declared and its text shipped, the classifiers a user filters on."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import seqshm

REPO = Path(__file__).resolve().parent.parent


def _meson_project(key: str) -> str:
    text = (REPO / "meson.build").read_text()
    project = text[text.index("project(") :]
    found = re.search(rf"\b{key}:\s*'([^']*)'", project)
    assert found, f"meson.build's project() has no {key}"
    return found.group(1)


def test_the_version_has_one_home() -> None:
    version = _meson_project("version")
    assert seqshm.__version__ == version
    assert importlib.metadata.version("seqshm") == version


def test_the_declared_license_is_the_shipped_one() -> None:
    dist = importlib.metadata.distribution("seqshm")
    # an SPDX expression (PEP 639), the same as meson.build's
    assert dist.metadata["License-Expression"] == _meson_project("license") == "GPL-2.0-only"
    # and its text in the wheel, as the GPL asks of whoever distributes the binary
    assert dist.metadata.get_all("License-File") == ["LICENSE"]
    shipped = dist.read_text("licenses/LICENSE")
    assert shipped is not None and shipped == (REPO / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE\n                       Version 2, June 1991" in shipped


def test_classifiers_and_python_versions() -> None:
    md = importlib.metadata.metadata("seqshm")
    classifiers = set(md.get_all("Classifier") or [])
    assert "Typing :: Typed" in classifiers
    assert "Operating System :: POSIX :: Linux" in classifiers
    minimum = md["Requires-Python"]
    assert minimum == ">=3.10"
    for minor in (10, 11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    # PEP 639: a license expression goes without the deprecated License :: classifiers
    assert not any(c.startswith("License ::") for c in classifiers)
