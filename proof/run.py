#!/usr/bin/env python3
"""Runs the GenMC proof of the seqshm protocol: every harness under RC11 and IMM, every mutant.

Usage: proof/run.py [--genmc PATH] [--json FILE] [--markdown]

Without --genmc it builds GenMC with the shared build script (see find_genmc()). Prints the
table of harnesses x models (executions explored, time) and the table of mutants (the
violation each produced), and exits nonzero on any unexpected result: a harness with an error,
a mutant that GenMC finds nothing wrong with, a run that does not compile or times out.

Mutants of the shared source are found, not listed: every use of a barrier or an acquire or
release in module/protocol/ (seqshm_smp_wmb/rmb/mb, seqshm_load_acquire,
seqshm_store_release) becomes one mutant that weakens that use alone (proof/seqshm_env.h says
how), so a barrier added to the protocol gets its mutant without anyone writing one. Each
must be caught under both models by at least one harness. The harness mutants below are
readers (and a wake-up protocol) that are wrong on purpose, to show the checks bite.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

PROOF = Path(__file__).resolve().parent
REPO = PROOF.parent
PROTOCOL = REPO / "module" / "protocol"
MODELS = ("rc11", "imm")
TIMEOUT_S = 600
INCLUDES = [PROOF, PROTOCOL, REPO / "module" / "include" / "uapi"]
WAKE_INCLUDES = [REPO / "seqshm" / "src"]  # after the proof's: its seqshm_env.h is userspace's


@dataclasses.dataclass(frozen=True)
class Harness:
    name: str
    source: str
    defines: tuple[str, ...]
    what: str
    includes: tuple[Path, ...] = ()


# Cheapest first: a site mutant is tried on each in turn until one catches it.
HARNESSES = (
    Harness("publish", "harness_publish.c", (),
            "the header's magic published last"),
    Harness("wake", "harness_wake.c", (),
            "wake-up after a write: no lost wake-up", tuple(WAKE_INCLUDES)),
    Harness("wake_close", "harness_wake.c", ("CLOSE",),
            "wake-up at the channel's end", tuple(WAKE_INCLUDES)),
    Harness("ring4", "harness_snapshot.c", ("NR_SLOTS=4", "PREFILL=2", "WRITES=3", "SNAPSHOTS=3"),
            "snapshots, ring of 4, writes 3-5 (5 laps slot 1)"),
    Harness("history", "harness_follow.c",
            ("NR_SLOTS=2", "FOLLOW_AFTER_HISTORY", "PREFILL=2", "WRITES=1"),
            "history() then follow() to the end, ring of 2"),
    Harness("ring2", "harness_snapshot.c", ("NR_SLOTS=2", "WRITES=3"),
            "snapshots, ring of 2, 3 writes (write 3 laps slot 1)"),
    Harness("one_slot", "harness_snapshot.c", ("NR_SLOTS=1", "WRITES=2"),
            "snapshots, one slot (the classic seqlock), 2 writes"),
    Harness("closed", "harness_closed.c", ("NR_SLOTS=1", "WRITES=2"),
            "snapshots around the close: the end after the last write"),
    Harness("follow", "harness_follow.c", ("NR_SLOTS=2", "PREFILL=1", "WRITES=2"),
            "follow() to the end, ring of 2, lapped: lost writes counted"),
    Harness("follow_stop", "harness_follow_stop.c", ("NR_SLOTS=2", "PREFILL=1", "WRITES=2"),
            "a writer stopped between any two stores, ring of 2: each follow step progresses"),
    Harness("follow_stop_one_slot", "harness_follow_stop.c",
            ("NR_SLOTS=1", "PREFILL=1", "WRITES=1"),
            "the same on one slot (it holds write k + 1 while head says k)"),
)
BY_NAME = {h.name: h for h in HARNESSES}

# Harness mutants: (macro, harness, what it breaks).
HARNESS_MUTANTS = (
    ("SEQSHM_MUTANT_TRUST_COPY", "one_slot",
     "a reader that uses its copy without the seq re-check"),
    ("SEQSHM_MUTANT_FORGET_NEWEST", "ring2",
     "a reader that picks its slot from head alone, not from its newest write too"),
    ("SEQSHM_MUTANT_FOLLOW_TAKE_LAPPED", "follow",
     "follow() taking the copy seqshm_follow_once() refused as lapped"),
    ("SEQSHM_MUTANT_FOLLOW_DROP_LOST", "follow",
     "follow() forgetting the writes seqshm_follow_once() counted as lost"),
    ("SEQSHM_MUTANT_FOLLOW_OLD_STEP", "follow_stop",
     "the follow step before issue 16: a later write in the slot left *next where it was"),
    ("SEQSHM_MUTANT_FOLLOW_OLD_STEP", "follow_stop_one_slot",
     "the same on one slot"),
    ("SEQSHM_MUTANT_WAKE_NO_COUNT", "wake",
     "a sleeper that does not count itself in the sidecar"),
    ("SEQSHM_MUTANT_WAKE_NO_READER_FENCE", "wake",
     "a sleeper without its fence (membarrier()) between its count and its look at head"),
    ("SEQSHM_MUTANT_WAKE_WRITER_NO_FENCE", "wake",
     "a writer with only its compiler barrier, and no membarrier() from the sleeper"),
    ("SEQSHM_MUTANT_WAKE_SLEEP_NO_COMPARE", "wake",
     "a sleep without the futex's compare of head (a plain wait queue)"),
    ("SEQSHM_MUTANT_WAKE_SLEEP_NO_COMPARE", "wake_close",
     "the same at the end: a sleep without the compare of the state"),
)

# Where to look first for a site mutant in these functions (the rest follow in HARNESSES order).
SITE_HINTS = {
    "seqshm_state": ("follow",),
    "seqshm_write_close": ("follow",),
    "seqshm_header_publish": ("publish",),
}

SITE_MACROS = {
    "seqshm_smp_wmb": ("WMB", "smp_wmb() removed"),
    "seqshm_smp_rmb": ("RMB", "smp_rmb() removed"),
    "seqshm_smp_mb": ("MB", "smp_mb() removed"),
    "seqshm_load_acquire": ("ACQUIRE", "load-acquire made relaxed"),
    "seqshm_store_release": ("RELEASE", "store-release made relaxed"),
}


@dataclasses.dataclass
class Run:
    """One GenMC run: verdict 'ok', 'violation' or 'failed' (did not compile, crashed...)."""

    verdict: str
    executions: int
    blocked: int
    seconds: float
    message: str


@dataclasses.dataclass(frozen=True)
class Site:
    path: Path
    line: int
    macro: str
    function: str
    code: str


def find_genmc() -> Path:
    """GenMC's binary: $SEQSHM_GENMC, else built (once, then reused) by build-genmc.sh into
    $SEQSHM_GENMC_CACHE (default ~/.cache/seqshm/genmc, outside the clone). The script is
    $SEQSHM_GENMC_BUILD, else ../shared/tools/build-genmc.sh beside the repository, else
    /work/shared/tools/build-genmc.sh. Raises RuntimeError when it cannot have one."""
    given = os.environ.get("SEQSHM_GENMC")
    if given:
        return Path(given)
    candidates = [os.environ.get("SEQSHM_GENMC_BUILD", ""),
                  str(REPO.parent / "shared" / "tools" / "build-genmc.sh"),
                  "/work/shared/tools/build-genmc.sh"]
    script = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
    if script is None:
        raise RuntimeError("no GenMC build script (set SEQSHM_GENMC_BUILD or SEQSHM_GENMC)")
    cache = Path(os.environ.get("SEQSHM_GENMC_CACHE")
                 or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                 / "seqshm" / "genmc")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; the others reuse it
        done = subprocess.run(["bash", str(script), str(cache)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"GenMC build failed ({script}):\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def _strip_comments(text: str) -> str:
    """The C source with its comments blanked, line breaks kept (so line numbers hold)."""
    return re.sub(r"/\*.*?\*/|//[^\n]*",
                  lambda m: re.sub(r"[^\n]", " ", m.group(0)), text, flags=re.S)


_FUNCTION = re.compile(r"^[A-Za-z_].*?\b(seqshm_\w+)\s*\(")


def find_sites() -> list[Site]:
    """Every use of a barrier or an acquire/release macro in the shared protocol source."""
    sites = []
    for path in sorted(PROTOCOL.glob("*.[ch]")):
        raw = path.read_text().splitlines()
        code = _strip_comments(path.read_text()).splitlines()
        function = "?"
        for n, line in enumerate(code, 1):
            head = _FUNCTION.match(line)
            if head and not line.startswith(("#", "static_assert")):
                function = head.group(1)
            for macro in SITE_MACROS:
                if re.search(rf"\b{macro}\s*\(", line):
                    sites.append(Site(path, n, macro, function, raw[n - 1].strip()))
    return sites


def genmc(binary: Path, harness: Harness, model: str, defines: tuple[str, ...] = ()) -> Run:
    """Run @harness under @model with extra -D @defines."""
    flags = [f"-I{p}" for p in (*INCLUDES, *harness.includes)]
    flags += [f"-D{d}" for d in (*harness.defines, *defines)]
    cmd = [str(binary), f"--{model}", "--disable-estimation", "--", *flags,
           str(PROOF / harness.source)]
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Run("failed", 0, 0, TIMEOUT_S, f"timed out after {TIMEOUT_S} s")
    wall = time.monotonic() - start
    out = done.stdout + done.stderr

    def number(pattern: str) -> int:
        m = re.search(pattern, out)
        return int(m.group(1)) if m else 0

    seconds = float(m.group(1)) if (m := re.search(r"wall-clock time: ([\d.]+)s", out)) else wall
    executions = number(r"complete executions explored: (\d+)")
    blocked = number(r"blocked executions seen: (\d+)")
    error = re.search(r"^Error: (.*)$", out, re.M)
    if done.returncode == 0 and "No errors were detected" in out:
        return Run("ok", executions, blocked, seconds, "")
    if error and re.search(r"violation|race", error.group(1), re.I):
        detail = re.search(r"^(Assertion violation: .*)$", out, re.M)
        return Run("violation", executions, blocked, seconds,
                   (detail.group(1) if detail else error.group(1)).strip())
    return Run("failed", executions, blocked, seconds, out.strip()[-2000:])


def site_mutant(binary: Path, site: Site, model: str) -> tuple[str, Run]:
    """The first harness (hinted ones first) in which weakening @site shows a violation."""
    kind = SITE_MACROS[site.macro][0]
    defines = (f"SEQSHM_MUTANT_FILE={site.path.name}", f"SEQSHM_MUTANT_{kind}_LINE={site.line}")
    order = [BY_NAME[n] for n in SITE_HINTS.get(site.function, ())]
    order += [h for h in HARNESSES if h not in order]
    last = ("", Run("ok", 0, 0, 0.0, "no harness found a violation"))
    for harness in order:
        run = genmc(binary, harness, model, defines)
        if run.verdict != "ok":
            return harness.name, run
        last = (harness.name, run)
    return "(none)", Run("ok", 0, 0, last[1].seconds, "no harness found a violation")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genmc", type=Path, help="GenMC binary (default: build it)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    binary = args.genmc or find_genmc()
    if not shutil.which(str(binary)) and not binary.is_file():
        print(f"no GenMC at {binary}", file=sys.stderr)
        return 2
    bad: list[str] = []
    results: dict[str, list[dict[str, object]]] = {"harnesses": [], "mutants": []}

    print("| harness | checks | model | executions | blocked | time (s) | result |")
    print("|---|---|---|---:|---:|---:|---|")
    for harness in HARNESSES:
        for model in MODELS:
            run = genmc(binary, harness, model)
            if run.verdict != "ok":
                bad.append(f"harness {harness.name} under {model}: {run.message}")
            results["harnesses"].append({"harness": harness.name, "model": model,
                                         **dataclasses.asdict(run)})
            print(f"| {harness.name} | {harness.what} | {model} | {run.executions} | "
                  f"{run.blocked} | {run.seconds:.2f} | {run.verdict} |", flush=True)

    sites = find_sites()
    if not sites:
        bad.append(f"no barrier or acquire/release found in {PROTOCOL}")
    print()
    print("| mutant | model | caught by | executions | time (s) | violation |")
    print("|---|---|---|---:|---:|---|")
    mutants: list[tuple[str, str, Harness | None, Site | None]] = [
        (f"{s.path.name}:{s.line} {s.function}(): {SITE_MACROS[s.macro][1]}", "", None, s)
        for s in sites]
    mutants += [(f"{macro.removeprefix('SEQSHM_MUTANT_')}: {what}", macro, BY_NAME[name], None)
                for macro, name, what in HARNESS_MUTANTS]
    for label, macro, target, site in mutants:
        for model in MODELS:
            if site is not None:
                caught, run = site_mutant(binary, site, model)
            else:
                assert target is not None
                caught, run = target.name, genmc(binary, target, model, (macro,))
            if run.verdict != "violation":
                bad.append(f"mutant {label} under {model}: {run.verdict}: {run.message}")
                caught = "(none)" if run.verdict == "ok" else caught
            results["mutants"].append({"mutant": label, "model": model, "caught_by": caught,
                                       **dataclasses.asdict(run)})
            message = run.message.replace("|", "\\|").splitlines()[0] if run.message else ""
            print(f"| {label} | {model} | {caught} | {run.executions} | {run.seconds:.2f} | "
                  f"{message if run.verdict == 'violation' else run.verdict.upper()} |",
                  flush=True)

    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    for line in bad:
        print(f"UNEXPECTED: {line}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
