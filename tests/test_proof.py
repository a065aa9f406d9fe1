"""The protocol proved: GenMC checks every harness in proof/ under RC11 and IMM, and every
mutant (a barrier or acquire/release of the shared source weakened, a reader wrong on purpose)
must show a violation. GenMC is built through the shared build script (cached outside the
clone, see proof/run.py); a missing toolchain fails these tests, it never skips them."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
RUNNER = REPO / "proof" / "run.py"


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("seqshm_proof_run", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


run = _runner()
SITES = run.find_sites()


@pytest.fixture(scope="module")
def genmc() -> Path:
    """GenMC's binary, built by the shared script on first use (a failure here fails)."""
    binary = Path(run.find_genmc())
    assert binary.is_file(), f"the GenMC build printed {binary}, which is not a file"
    return binary


@pytest.fixture(scope="module")
def results(genmc: Path) -> Iterator[dict[str, Any]]:
    """One run of proof/run.py over everything: its JSON results."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "proof.json"
        done = subprocess.run([sys.executable, str(RUNNER), "--genmc", str(genmc),
                               "--json", str(out)], capture_output=True, text=True,
                              timeout=3600)
        assert out.exists(), f"proof/run.py wrote no results:\n{done.stdout}\n{done.stderr}"
        data = json.loads(out.read_text())
        data["exit"] = done.returncode
        data["report"] = done.stdout + done.stderr
        yield data


def _one(rows: list[dict[str, Any]], **match: str) -> dict[str, Any]:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, f"{match}: {len(found)} results"
    return found[0]


def test_runner_reports_nothing_unexpected(results: dict[str, Any]) -> None:
    assert results["exit"] == 0, results["report"]


def test_the_shared_source_has_barrier_sites_for_every_pair() -> None:
    # [A] seq release/acquire, [B] the writer's smp_wmb and the reader's smp_rmb, [C] head
    macros = {s.macro for s in SITES}
    assert {"seqshm_smp_wmb", "seqshm_smp_rmb", "seqshm_load_acquire",
            "seqshm_store_release"} <= macros
    assert {"seqshm_head", "seqshm_read_begin", "seqshm_read_retry", "seqshm_write_slot_begin",
            "seqshm_write_slot_end"} <= {s.function for s in SITES}


@pytest.mark.parametrize("model", run.MODELS)
@pytest.mark.parametrize("harness", [h.name for h in run.HARNESSES])
def test_harness_finds_no_error_in_any_execution(results: dict[str, Any], harness: str,
                                                 model: str) -> None:
    row = _one(results["harnesses"], harness=harness, model=model)
    assert row["verdict"] == "ok", row["message"]
    assert row["executions"] > 0


@pytest.mark.parametrize("model", run.MODELS)
@pytest.mark.parametrize("site", SITES, ids=lambda s: f"{s.path.name}:{s.line}:{s.macro}")
def test_weakening_any_barrier_or_acquire_release_is_caught(results: dict[str, Any],
                                                            site: Any, model: str) -> None:
    label = f"{site.path.name}:{site.line} {site.function}(): {run.SITE_MACROS[site.macro][1]}"
    row = _one(results["mutants"], mutant=label, model=model)
    assert row["verdict"] == "violation", f"{label}: {row['message']}"


@pytest.mark.parametrize("model", run.MODELS)
@pytest.mark.parametrize("macro,harness", [(m, h) for m, h, _ in run.HARNESS_MUTANTS])
def test_wrong_reader_is_caught(results: dict[str, Any], macro: str, harness: str,
                                model: str) -> None:
    rows = [r for r in results["mutants"] if r["model"] == model and r["caught_by"] == harness
            and r["mutant"].startswith(macro.removeprefix("SEQSHM_MUTANT_") + ":")]
    assert rows, f"{macro} on {harness} under {model}: no result"
    assert all(r["verdict"] == "violation" for r in rows), rows
