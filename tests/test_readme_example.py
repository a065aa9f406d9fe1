"""The README's Python example, as written, runs twice in a row: it removes what it made."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_readme_example_runs_twice_and_leaves_nothing(shm_name: str) -> None:
    text = README.read_text()
    start = text.index("```python", text.index("## Using it")) + len("```python")
    code = text[start : text.index("```", start)]
    assert '"/dev/shm/pose"' in code
    path = f"/dev/shm/{shm_name}"  # the example's channel, under a name no one else uses
    code = code.replace('"/dev/shm/pose"', repr(path))
    for run in (1, 2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, cwd="/")
        assert out.returncode == 0, f"run {run}: {out.stderr}"
        assert not os.path.exists(path), f"run {run} left {path}"
