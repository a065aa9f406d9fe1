"""The type stubs and inline annotations stay usable: mypy --strict accepts typed API uses."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import seqshm

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def _mypy(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    package_parent = Path(seqshm.__file__).resolve().parent.parent
    if package_parent.name != "site-packages":
        # An editable install: mypy cannot follow meson-python's import hook, point it at the
        # source tree, where the stubs of the compiled core live beside it.
        env["MYPYPATH"] = str(package_parent)
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(cache),
         *args],
        capture_output=True, text=True, cwd="/", env=env,
    )


def test_mypy_strict_accepts_the_typed_examples(mypy_cache: Path) -> None:
    pytest.importorskip("mypy")
    result = _mypy(mypy_cache, str(HERE / "examples.py"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_rejects_a_misuse(mypy_cache: Path) -> None:
    """The check can fail: a wrong argument type is reported."""
    pytest.importorskip("mypy")
    bad = "import seqshm\nseqshm.open('/x').snapshot(out=3)\n"
    result = _mypy(mypy_cache, "-c", bad)
    assert result.returncode == 1 and "snapshot" in result.stdout, result.stdout
