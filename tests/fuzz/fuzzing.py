#!/usr/bin/env python3
"""Fuzzing seqshm's trust boundary: libFuzzer over the shared C steps, and mutated channel files
through the public Python reader. Used by tests/fuzz/test_fuzz_*.py (bounded, in CI) and
from the command line for long campaigns:

    python tests/fuzz/fuzzing.py c --seconds 600            # each libFuzzer target for 600 s
    python tests/fuzz/fuzzing.py files --count 100000       # 100000 mutated files, 2 workers
    python tests/fuzz/fuzzing.py seeds                      # rewrite tests/fuzz/corpus/

C: each target (fuzz_*.c here) is built with clang -fsanitize=fuzzer,address,undefined with the
shared protocol source and run over a fresh output corpus plus the kept one (tests/fuzz/corpus/
<target>/, never written to). Files: real channels are written, mutated (bit flips, words set
to edge values, bytes copied from another channel, truncation and growth, field-table edits),
and each mutated file goes through open, snapshot, read, history, view + validate, follow,
state and wait in a worker process; every call must end within its timeout plus a slack and
raise nothing but seqshm's own errors or an OSError naming the file. A worker that dies of a
signal or stops answering (a crash, a hang) is a failure, reported with the seed that
reproduces the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CORPUS = HERE / "corpus"
TARGETS = ("header", "layout", "region")
#: clang binaries tried in turn; scripts/test installs clang-15 (the one GenMC uses too).
CLANGS = ("clang-15", "clang")
CFLAGS = ("-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all",
          "-Wall", "-Wextra", "-Werror")
INCLUDES = (REPO / "seqshm" / "src", REPO / "module" / "protocol",
            REPO / "module" / "include" / "uapi")
SOURCES = (REPO / "module" / "protocol" / "seqshm_protocol.c",)
#: Largest input: a region of up to 32 slot lines and its payloads fits.
MAX_LEN = 64 * 1024


# -- libFuzzer ---------------------------------------------------------------------------------

def find_clang() -> str:
    """A clang that links libFuzzer; RuntimeError naming what to install if there is none."""
    for name in CLANGS:
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("no clang: install clang-15 (apt-get install clang-15), which "
                       "scripts/test does when it runs as root")


def build(target: str, out_dir: Path, *, old_follow_step: bool = False) -> Path:
    """Build fuzz_<target>.c into out_dir; returns the binary. ``old_follow_step``: with the
    follow step before issue 16 (proof/follow_old_step.h), a mutant the fuzzer must catch."""
    binary = out_dir / f"fuzz_{target}{'_old_follow_step' if old_follow_step else ''}"
    mutant = ["-DSEQSHM_FUZZ_OLD_FOLLOW_STEP", f"-I{REPO / 'proof'}"] if old_follow_step else []
    cmd = [find_clang(), *CFLAGS, *mutant, *(f"-I{p}" for p in INCLUDES),
           str(HERE / f"fuzz_{target}.c"), *map(str, SOURCES), "-o", str(binary)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"building fuzz_{target} failed:\n{' '.join(cmd)}\n{done.stderr}")
    return binary


@dataclasses.dataclass
class FuzzRun:
    """One libFuzzer run: its exit status, executions, and the tail of its log."""

    target: str
    returncode: int
    executions: int
    seconds: float
    log: str


def run_libfuzzer(binary: Path, target: str, seconds: int, work: Path,
                  extra: tuple[str, ...] = ()) -> FuzzRun:
    """Run ``binary`` for ``seconds`` over a new corpus in ``work`` and the kept one (read
    only); crashes, leaks and inputs slower than 10 s (hangs) are saved in ``work``."""
    new = work / f"corpus-{target}"
    new.mkdir(parents=True, exist_ok=True)
    cmd = [str(binary), str(new), str(CORPUS / target), f"-max_total_time={seconds}",
           "-timeout=10", "-rss_limit_mb=2048", f"-max_len={MAX_LEN}", "-print_final_stats=1",
           f"-artifact_prefix={work}/", *extra]
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300)
    out = done.stdout + done.stderr
    m = re.search(r"stat::number_of_executed_units:\s*(\d+)", out)
    return FuzzRun(target, done.returncode, int(m.group(1)) if m else 0,
                   time.monotonic() - t0, out[-6000:])


# -- real channels and their mutations ---------------------------------------------------------

def seed_channels(directory: Path) -> dict[str, bytes]:
    """Real channel files of several kinds, written by seqshm itself: their bytes by name."""
    import numpy as np

    import seqshm
    from seqshm import _core

    record = np.dtype([("t", "<u8"), ("xyz", "<f4", (3,)), ("ok", "?"), ("n", "<i2")])
    kinds: list[tuple[str, Any, tuple[int, ...], int, int]] = [
        ("f8-one-slot", np.float64, (4,), 1, 3),
        ("i4-4x5-ring8", np.int32, (4, 5), 8, 9),
        ("u8-3000-ring2", np.uint8, (3000,), 2, 3),
        ("record-ring4", record, (3,), 4, 6),
        ("c16-ring16", np.complex128, (2, 2), 16, 40),
        ("u2-scalar-empty", np.uint16, (), 2, 0),
    ]
    out = {}
    for name, dtype, shape, slots, writes in kinds:
        path = directory / name
        with seqshm.create(str(path), dtype, shape, nr_slots=slots, overwrite=True) as w:
            for k in range(1, writes + 1):
                data = np.zeros(shape, dtype)
                if dtype is not record:
                    data[...] = k
                w.write(data)
        out[name] = path.read_bytes()
        path.unlink()
    # a writer stopped in the middle of a write (its slot stays odd), and one stopped between
    # its slot's even seq and its store of head
    from seqshm import _hooks
    path = directory / "stalled"
    w = seqshm.create(str(path), np.int64, (8,), nr_slots=4)
    for k in range(1, 6):
        w.write(np.full(8, k))
    _hooks.stall_mid_write(w, 3)
    out["stalled-mid-write"] = path.read_bytes()
    w.close(unlink=True)
    head = _core.abi_layout()["header"]["head"]
    before_head = bytearray(out["i4-4x5-ring8"])
    before_head[head:head + 8] = (8).to_bytes(8, sys.byteorder)
    out["stopped-before-head"] = bytes(before_head)
    return out


#: Values that break arithmetic when a word takes them.
EDGES = (0, 1, 2, 3, 63, 64, 65, 255, 256, 4095, 4096, 4097, 2**16, 2**31 - 1, 2**31, 2**32 - 1,
         2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 64, 2**64 - 1)


class Mutator:
    """Deterministic mutations of real channel files: file ``i`` of seed ``s`` is always the
    same, so a failure is reproduced from its numbers."""

    def __init__(self, seeds: dict[str, bytes]) -> None:
        from seqshm import _core

        self.seeds = seeds
        self.names = sorted(seeds)
        layout = _core.abi_layout()
        self.header = layout["header"]
        self.slot = layout["slot"]
        self.field = layout["field"]
        self.slots_offset = int(_core.SLOTS_OFFSET)
        self.header_size = int(_core.HEADER_SIZE)
        # (offset, size) of every word of the header a reader looks at
        sizes = {"magic": 8, "abi_version": 4, "header_size": 4, "region_size": 8,
                 "payload_offset": 8, "payload_size": 8, "slot_stride": 8, "nr_slots": 4,
                 "flags": 4, "itemsize": 4, "nr_fields": 4, "ndim": 4, "head": 8, "state": 4,
                 "writer_pid": 4, "writer_start": 8, "waiters_dev": 8, "waiters_ino": 8,
                 "wake_flags": 4}
        self.words = [(self.header[k], n) for k, n in sizes.items()]
        self.words += [(self.header["shape"] + 8 * i, 8) for i in range(8)]

    def _set(self, buf: bytearray, offset: int, size: int, value: int) -> None:
        if offset + size <= len(buf):
            buf[offset:offset + size] = (value % 2**(8 * size)).to_bytes(size, sys.byteorder)

    def _control_end(self, buf: bytes | bytearray) -> int:
        nr = int.from_bytes(buf[self.header["nr_slots"]:self.header["nr_slots"] + 4],
                            sys.byteorder) if len(buf) >= self.header_size else 0
        return min(len(buf), self.slots_offset + min(nr, 1024) * self.slot["size"])

    def mutate(self, rng: random.Random, buf: bytearray) -> str:
        """One mutation of ``buf`` in place; returns what it did."""
        op = rng.randrange(8)
        if op == 0:  # bit flips, mostly in the header and slot lines
            end = self._control_end(buf) if rng.random() < 0.8 else len(buf)
            for _ in range(rng.randint(1, 8)):
                if end:
                    i = rng.randrange(end)
                    buf[i] ^= 1 << rng.randrange(8)
            return "bits"
        if op == 1:  # a header word set to an edge value, or moved a little
            offset, size = rng.choice(self.words)
            old = int.from_bytes(buf[offset:offset + size], sys.byteorder)
            value = rng.choice(EDGES) if rng.random() < 0.6 else old + rng.randint(-70, 70)
            self._set(buf, offset, size, value)
            return f"word@{offset}={value}"
        if op == 2:  # a slot line's seq, write number or timestamp
            nr = max(1, (self._control_end(buf) - self.slots_offset) // self.slot["size"])
            i = rng.randrange(nr)
            field = rng.choice(("seq", "write_seq", "timestamp_ns"))
            size = 4 if field == "seq" else 8
            offset = self.slots_offset + i * self.slot["size"] + self.slot[field]
            self._set(buf, offset, size, rng.choice(EDGES) if rng.random() < 0.5
                      else rng.randrange(2**(8 * size)))
            return f"slot{i}.{field}"
        if op == 3:  # bytes of another channel copied over this one (issue 16, recipe 3)
            other = self.seeds[rng.choice(self.names)]
            n = rng.choice((rng.randint(1, 64), 300, self.header_size, len(other)))
            src = rng.randrange(max(1, len(other) - n + 1)) if rng.random() < 0.5 else 0
            dst = src if rng.random() < 0.7 else rng.randrange(max(1, len(buf)))
            chunk = other[src:src + n]
            buf[dst:dst + len(chunk)] = chunk
            return f"copy{n}@{dst}"
        if op == 4:  # truncated, or grown
            if rng.random() < 0.7:
                del buf[rng.randrange(len(buf) + 1):]
                return "truncated"
            buf.extend(bytes(rng.choice((1, 64, 4096, 8192))))
            return "grown"
        if op == 5:  # the field table: a field's kind, size, offset, count, flags or name
            i = rng.randrange(32)
            base = self.header["fields"] + i * self.field["size"]
            key = rng.choice(("kind", "size_", "flags", "offset", "count", "name"))
            size = 4 if key in ("offset", "count") else 1
            if key == "name":
                self._set(buf, base + rng.randrange(32), 1, rng.choice((0, 0x1b, ord("x"), 0xff)))
            else:
                self._set(buf, base + self.field[key], size,
                          rng.choice(EDGES) if size == 4 else rng.randrange(256))
            return f"field{i}.{key}"
        if op == 6:  # the channel's name: unterminated, control characters
            offset = self.header["name"] + rng.randrange(64)
            self._set(buf, offset, 1, rng.choice((0x1b, 0x07, 0x7f, 0xff, ord("a"))))
            return "name"
        # a whole payload of random bytes (what a reader copies is the writer's business)
        if len(buf) > 4096:
            i = rng.randrange(4096, len(buf))
            buf[i:i + 64] = rng.randbytes(min(64, len(buf) - i))
        return "payload"

    def file(self, seed: int, i: int) -> tuple[bytes, bool, str]:
        """Mutated file ``i`` of ``seed``: its bytes, whether a live writer holds it (its
        state word is set open first, and the worker holds the writer's lock while it reads:
        waits then wait), and what was done."""
        rng = random.Random(seed * 1_000_003 + i)
        name = rng.choice(self.names)
        buf = bytearray(self.seeds[name])
        live = rng.random() < 0.5
        if live:
            self._set(buf, self.header["state"], 4, 0)
        done = [self.mutate(rng, buf) for _ in range(rng.choice((1, 1, 2, 3, 5)))]
        return bytes(buf), live, f"{name}{' (live)' if live else ''}: {', '.join(done)}"


# -- the worker: every public read call on each mutated file ----------------------------------

#: Seconds each call may take beyond the timeouts it was given, before it counts as a hang.
SLACK_S = 2.0
TIMEOUT_S = 0.002


def _calls(path: str) -> list[tuple[str, Callable[[Any], Any]]]:
    def view_validate(r: Any) -> Any:
        token = r.begin()
        r.view(token).tobytes()
        return r.validate(token)

    def follow_one(r: Any) -> Any:
        for sample in r.follow(timeout=TIMEOUT_S):
            return sample.seq
        return None

    return [
        ("snapshot", lambda r: r.snapshot()),
        ("read", lambda r: r.read()),
        ("history", lambda r: r.history()),
        ("view+validate", view_validate),
        ("apply", lambda r: r.apply(lambda v: v.tobytes())),
        ("follow", follow_one),
        ("state", lambda r: r.state),
        ("wait", lambda r: r.wait(TIMEOUT_S)),
    ]


def _allowed(e: BaseException, path: str) -> bool:
    """seqshm's own errors, or an OSError naming the file."""
    import seqshm

    if isinstance(e, seqshm.SeqshmError):
        return path in str(e)
    return isinstance(e, OSError) and (e.filename == path or path in str(e))


def _hold_as_writer(path: str) -> int:
    """A descriptor holding the locks a live writer holds on its file (an exclusive flock(2)
    and a POSIX write lock, which OFD lock queries see too): readers then take the channel
    for open. Closing the descriptor lets both go."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def worker(seed: int, start: int, count: int, directory: str) -> None:
    """Write mutated files start..start+count-1 of ``seed`` in turn at one path in
    ``directory`` and make every call on each; one JSON line per file on stdout ("start" before
    it, "done" after, with any misbehaviour)."""
    import seqshm

    seeds_dir = Path(tempfile.mkdtemp(dir=directory, prefix="seeds-"))
    mutator = Mutator(seed_channels(seeds_dir))
    seeds_dir.rmdir()
    path = os.path.join(directory, "channel")
    # a misbehaviour injected on purpose ("hang:N", "crash:N", "untyped:N": at file N), to show
    # that run_files() reports each (tests/fuzz/test_fuzz_files.py)
    inject, _, at = os.environ.get("SEQSHM_FUZZ_INJECT", "").partition(":")
    for i in range(start, start + count):
        data, live, what = mutator.file(seed, i)
        print(json.dumps({"start": i}), flush=True)
        if inject and int(at) == i:
            if inject == "hang":
                time.sleep(3600)
            elif inject == "crash":
                os.kill(os.getpid(), signal.SIGSEGV)
        with open(path, "wb") as f:
            f.write(data)
        writer = _hold_as_writer(path) if live else None
        bad = []
        outcomes = {}  # call: "ok" or the name of the error it raised
        t0 = time.monotonic()
        try:
            if inject == "untyped" and int(at) == i:
                raise KeyError("an untyped error")
            r = seqshm.open(path, timeout=TIMEOUT_S)
            outcomes["open"] = "ok"
        except BaseException as e:  # noqa: BLE001 - what is not allowed is reported
            r = None
            outcomes["open"] = type(e).__name__
            if not _allowed(e, path):
                bad.append(f"open: {type(e).__name__}: {e}")
        if time.monotonic() - t0 > SLACK_S:
            bad.append(f"open took {time.monotonic() - t0:.2f} s")
        if r is not None:
            with r:
                for name, call in _calls(path):
                    t0 = time.monotonic()
                    try:
                        call(r)
                        outcomes[name] = "ok"
                    except BaseException as e:  # noqa: BLE001
                        outcomes[name] = type(e).__name__
                        if not _allowed(e, path):
                            bad.append(f"{name}: {type(e).__name__}: {e}")
                    took = time.monotonic() - t0
                    if took > 2 * TIMEOUT_S + SLACK_S:
                        bad.append(f"{name} took {took:.2f} s")
        if writer is not None:
            os.close(writer)
        print(json.dumps({"done": i, "what": what, "bad": bad, "outcomes": outcomes}),
              flush=True)
    os.unlink(path)


@dataclasses.dataclass
class FileReport:
    """What a run of mutated files found: files done, and each misbehaving one."""

    files: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)
    #: (call, outcome) -> how many times: what the files exercised
    outcomes: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)


def _lines(proc: subprocess.Popen[bytes], deadline_s: float) -> Iterator[str | None]:
    """The worker's stdout lines; None when none came for ``deadline_s`` (it hangs). Read
    from the descriptor itself: a buffered reader could hold a line that select() then
    waits for in vain."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    pending = b""
    while True:
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            yield line.decode()
        ready, _, _ = select.select([fd], [], [], deadline_s)
        if not ready:
            yield None
            return
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        pending += chunk


def run_files(seed: int, start: int, count: int, *, hang_s: float = 30.0,
              seconds: float | None = None) -> FileReport:
    """Files start..start+count-1 of ``seed`` through worker processes, one after another;
    a worker that crashes or hangs is a failure, and the next one goes on after its file.
    ``seconds``: stop starting files after that long (the files done are counted)."""
    report = FileReport()
    end = start + count
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None,
                                     prefix="seqshm-fuzz-") as directory:
        nxt = start
        while nxt < end and (seconds is None or time.monotonic() - t0 < seconds):
            batch = min(end - nxt, 2000)
            if seconds is not None:
                batch = min(batch, 200)  # look at the clock between batches
            current = None
            with tempfile.TemporaryFile("w+") as errors, subprocess.Popen(
                    [sys.executable, __file__, "worker", str(seed), str(nxt), str(batch),
                     directory], stdout=subprocess.PIPE, stderr=errors, bufsize=0) as proc:
                for line in _lines(proc, hang_s):
                    if line is None:
                        proc.kill()
                        report.failures.append(f"seed {seed} file {current}: hung (no answer "
                                               f"in {hang_s} s)")
                        break
                    msg = json.loads(line)
                    if "start" in msg:
                        current = msg["start"]
                        continue
                    report.files += 1
                    nxt = msg["done"] + 1
                    for key in msg["outcomes"].items():
                        report.outcomes[key] = report.outcomes.get(key, 0) + 1
                    if msg["bad"]:
                        report.failures.append(f"seed {seed} file {msg['done']} "
                                               f"({msg['what']}): " + "; ".join(msg["bad"]))
                proc.wait()
                errors.seek(0)
                stderr = errors.read()
            if proc.returncode and current is not None and current >= nxt:
                how = (signal.Signals(-proc.returncode).name if proc.returncode < 0
                       else f"exit {proc.returncode}")
                if not any(f"file {current}:" in f for f in report.failures):
                    report.failures.append(f"seed {seed} file {current}: the worker died "
                                           f"({how}): {stderr[-2000:]}")
                nxt = current + 1
            elif proc.returncode:
                report.failures.append(f"seed {seed}: the worker failed: {stderr[-2000:]}")
                break
    return report


# -- the command line --------------------------------------------------------------------------

def write_seeds() -> None:
    """Rewrite tests/fuzz/corpus/ from real channels (run by hand when the layout changes)."""
    from seqshm import _core

    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        seeds = seed_channels(Path(d))
    for target in TARGETS:
        shutil.rmtree(CORPUS / target, ignore_errors=True)
        (CORPUS / target).mkdir(parents=True)
    header = int(_core.HEADER_SIZE)
    for name, data in seeds.items():
        (CORPUS / "region" / name).write_bytes(data)
        (CORPUS / "header" / name).write_bytes(len(data).to_bytes(8, sys.byteorder)
                                               + data[:header])
    # layout requests: nr_slots, ndim, itemsize, flags, nr_fields, 8 dims, shifts, name
    for name, (slots, shape, itemsize, nfields) in {
            "one-slot": (1, (4,), 8, 1), "ring8": (8, (4, 5), 4, 1),
            "ring1024": (1024, (1,), 1, 1), "scalar": (2, (), 2, 1)}.items():
        dims = list(shape) + [0] * (8 - len(shape))
        req = b"".join(v.to_bytes(4, sys.byteorder)
                       for v in (slots, len(shape), itemsize, 0, nfields))
        req += b"".join(d.to_bytes(8, sys.byteorder) for d in dims)
        req += bytes([12, 40]) + name.encode().ljust(71, b"\0")
        field = bytearray(_core.abi_layout()["field"]["size"])
        field[_core.abi_layout()["field"]["kind"]] = ord("u")
        field[_core.abi_layout()["field"]["size_"]] = itemsize
        field[_core.abi_layout()["field"]["count"]] = 1
        (CORPUS / "layout" / name).write_bytes(req + bytes(field))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("c", help="run every libFuzzer target")
    c.add_argument("--seconds", type=int, default=60, help="per target")
    c.add_argument("--work", type=Path, help="keep the build, corpora and crashes here")
    c.add_argument("--jobs", type=int, default=1, help="libFuzzer -jobs/-workers")
    f = sub.add_parser("files", help="mutated channel files through the Python reader")
    f.add_argument("--seed", type=int, default=1)
    f.add_argument("--start", type=int, default=0)
    f.add_argument("--count", type=int, default=1000)
    f.add_argument("--workers", type=int, default=1, help="processes, each a share of files")
    w = sub.add_parser("worker")
    w.add_argument("seed", type=int)
    w.add_argument("start", type=int)
    w.add_argument("count", type=int)
    w.add_argument("directory")
    sub.add_parser("seeds", help="rewrite tests/fuzz/corpus/ from real channels")
    args = parser.parse_args(argv)

    if args.cmd == "worker":
        worker(args.seed, args.start, args.count, args.directory)
        return 0
    if args.cmd == "seeds":
        write_seeds()
        return 0
    if args.cmd == "c":
        work = args.work or Path(tempfile.mkdtemp(prefix="seqshm-libfuzzer-"))
        work.mkdir(parents=True, exist_ok=True)
        bad = 0
        for target in TARGETS:
            extra = (f"-jobs={args.jobs}", f"-workers={args.jobs}") if args.jobs > 1 else ()
            run = run_libfuzzer(build(target, work), target, args.seconds, work, extra)
            print(f"fuzz_{target}: exit {run.returncode}, {run.executions} executions in "
                  f"{run.seconds:.0f} s", flush=True)
            if run.returncode:
                bad += 1
                print(run.log, file=sys.stderr)
        print(f"work directory (builds, corpora, crashes): {work}")
        return 1 if bad else 0
    # files, in args.workers processes at once, each a contiguous share
    from concurrent.futures import ThreadPoolExecutor

    share = -(-args.count // args.workers)
    t0 = time.monotonic()
    with ThreadPoolExecutor(args.workers) as pool:
        reports = list(pool.map(
            lambda k: run_files(args.seed, args.start + k * share,
                                max(0, min(share, args.count - k * share))),
            range(args.workers)))
    files = sum(r.files for r in reports)
    failures = [f for r in reports for f in r.failures]
    outcomes: dict[tuple[str, str], int] = {}
    for r in reports:
        for key, n in r.outcomes.items():
            outcomes[key] = outcomes.get(key, 0) + n
    for (call, outcome), n in sorted(outcomes.items()):
        print(f"  {call:14} {outcome:14} {n}")
    for line in failures:
        print(line)
    print(f"{files} mutated files (seed {args.seed}, from {args.start}) in "
          f"{time.monotonic() - t0:.0f} s: {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
