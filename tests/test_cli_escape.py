"""Everything the command line shows a person escapes what it did not write: a channel's file
name, its header's name, its field names, on a terminal and into a pipe, in messages too (issue
16, recipe 4). The raw bytes each command writes are checked, not a decoded or cleaned copy."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from test_cli import ENV, terminal_output, writing

import seqshm
from seqshm.cli._format import printable, shown

#: File names any local user may give a channel: the issue's terminal-title and line-erasing
#: name, and the other members of its kind. Each is (file name as bytes, what must not reach
#: the terminal raw, the escaped form a person sees).
HOSTILE = {
    "osc": (b"n-\x1b]0;PWNED\x07\x1b[2K\rfake", [b"\x1b]", b"\x07", b"\x1b[2K\rfake"],
            r"$'n-\e]0;PWNED\a\e[2K\rfake'"),
    "newline": (b"two\nlines", [b"two\nlines"], r"$'two\nlines'"),
    "c1 csi": ("c1-\u009b31mred".encode(), ["\u009b".encode()], r"$'c1-\u009b31mred'"),
    "not utf-8": (b"raw-\x9b31m\xffred", [b"\x9b", b"\xff"], r"$'raw-\x9b31m\xffred'"),
    "del": (b"del-\x7fx", [b"\x7f"], r"$'del-\x7fx'"),
    "bidi": ("bidi-\u202ecod.exe".encode(), ["\u202e".encode()], r"$'bidi-\u202ecod.exe'"),
}
NAMES = list(HOSTILE)


def hostile_channel(directory: str, kind: str, prefix: str = "") -> seqshm.Writer:
    """A channel of two float64 written once, whose file in ``directory`` has the name
    ``kind`` of HOSTILE (after ``prefix``)."""
    name = os.fsdecode(prefix.encode() + HOSTILE[kind][0])
    w = seqshm.create(os.path.join(directory, name), np.float64, (2,), name="x")
    w.write([1.5, 2.5])
    return w


@pytest.fixture
def in_shm(shm_name: str) -> Iterator[Callable[[str], seqshm.Writer]]:
    """hostile_channel() in /dev/shm (where `seqshm list` looks), removed afterwards."""
    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("needs a writable /dev/shm")
    made: list[seqshm.Writer] = []

    def make(kind: str) -> seqshm.Writer:
        made.append(hostile_channel("/dev/shm", kind, f"{shm_name}-"))
        return made[-1]

    yield make
    for w in made:
        w.close()
        os.unlink(w.path)


def pipe(*args: str, columns: int = 120) -> subprocess.CompletedProcess[bytes]:
    """The CLI run with its stdout and stderr into pipes: their raw bytes."""
    return subprocess.run([sys.executable, "-m", "seqshm", *args], capture_output=True,
                          timeout=60, cwd="/", env={**ENV, "COLUMNS": str(columns)})


def terminal(args: list[str], columns: int = 200, rows: int = 24) -> tuple[int, bytes]:
    """The CLI run on a pseudo-terminal in raw mode: every byte read is one it wrote."""
    return terminal_output(args, columns, rows, raw=True)


#: The control sequences rich itself writes on a terminal (colours, cursor moves, line erase,
#: cursor hiding) and carriage returns: taken out before the rest is checked character by
#: character. An OSC (ESC ]) or a BEL is never rich's.
_RICH_OWN = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\r")


def assert_safe(raw: bytes, kind: str, on_terminal: bool = False) -> None:
    """``raw`` is valid UTF-8 whose every character is printable or a line feed (on a terminal:
    after rich's own sequences), has none of the name's raw sequences, and shows the name
    escaped."""
    for bad in HOSTILE[kind][1]:
        assert bad not in raw, (bad, raw)
    text = (_RICH_OWN.sub(b"", raw) if on_terminal else raw).decode("utf-8")  # strict
    odd = {c for c in text if not (c == "\n" or c.isprintable())}
    assert not odd, (odd, raw)


# -- the escaping --------------------------------------------------------------------------------


def bash_reads(word: str) -> bytes:
    """The bytes bash makes of ``word`` (in a UTF-8 locale, where $'\\u...' is UTF-8)."""
    return subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, check=True,
                          env={**os.environ, "LC_ALL": "C.UTF-8"}).stdout


@pytest.mark.parametrize("kind", NAMES)
def test_shown_escapes_each_kind_as_a_bash_string(kind: str) -> None:
    """Each hostile name becomes one $'...' word that bash reads back as the very bytes."""
    name = os.fsdecode(HOSTILE[kind][0])
    assert shown(name) == HOSTILE[kind][2]
    assert shown(HOSTILE[kind][0]) == HOSTILE[kind][2]  # bytes as the file system gives them
    assert bash_reads(shown(name)) == HOSTILE[kind][0]


@pytest.mark.parametrize("name, expected", [
    ("plain-name_1.npy", "plain-name_1.npy"),
    ("/dev/shm/a%b+c,d:e@f]", "/dev/shm/a%b+c,d:e@f]"),
    ("caf\u00e9", "caf\u00e9"),  # printable: as is, as ls shows it
    ("a b", "'a b'"),
    ("[bold]x", "'[bold]x'"),
    ("it's", '"it\'s"'),
    ("it's \"x\"", "'it'\\''s \"x\"'"),
    ("#a", "'#a'"),
    ("a#", "a#"),
    ("", "''"),
    ("a'\x1b\\", r"$'a\'\e\\'"),
])
def test_shown_quotes_what_a_shell_would_read_otherwise(name: str, expected: str) -> None:
    assert shown(name) == expected
    assert bash_reads(shown(name)) == os.fsencode(name)


def test_printable_escapes_only_the_runs_a_terminal_would_act_on() -> None:
    assert printable("no channel /dev/shm/a b: not found") == "no channel /dev/shm/a b: not found"
    assert printable("x \x1b]0;t\x07 y\u202e") == r"x $'\e']0;t$'\a' y$'\u202e'"
    assert printable(printable("\x1b\x9b")) == printable("\x1b\x9b")


# -- list ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", NAMES)
def test_list_escapes_a_hostile_file_name_into_a_pipe(
        in_shm: Callable[[str], seqshm.Writer], kind: str) -> None:
    w = in_shm(kind)
    out = pipe("list", "--no-rate")
    assert out.returncode == 0, out.stderr
    assert_safe(out.stdout, kind)
    assert_safe(out.stderr, kind)
    assert shown(w.path).encode() in out.stdout


@pytest.mark.parametrize("kind", NAMES)
def test_list_escapes_a_hostile_file_name_on_a_terminal(
        in_shm: Callable[[str], seqshm.Writer], kind: str) -> None:
    w = in_shm(kind)
    code, raw = terminal(["list", "--no-rate"], columns=400)
    assert code == 0, raw
    assert_safe(raw, kind, on_terminal=True)
    assert shown(w.path).encode() in raw


@pytest.mark.parametrize("kind", NAMES)
def test_list_json_stays_json_and_keeps_the_name(
        in_shm: Callable[[str], seqshm.Writer], kind: str) -> None:
    """JSON escapes it as JSON does (\\u001b), every non-ASCII character too; a program gets
    the very name back."""
    w = in_shm(kind)
    out = pipe("list", "--json", "--no-rate")
    assert out.returncode == 0, out.stderr
    assert out.stdout.isascii() and all(b >= 0x20 or b == 0x0A for b in out.stdout)
    paths = [r["path"] for r in json.loads(out.stdout)]
    assert w.path in paths


# -- info ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", NAMES)
def test_info_escapes_a_hostile_file_name(tmp_path: Path, kind: str) -> None:
    with hostile_channel(str(tmp_path), kind) as w:
        out = pipe("info", w.path)
        code, raw = terminal(["info", w.path])
        js = pipe("info", "--json", w.path)
    assert out.returncode == 0 and code == 0, (out.stderr, raw)
    assert_safe(out.stdout, kind)
    assert_safe(raw, kind, on_terminal=True)
    assert f"path            {shown(w.path)}\n".encode() in out.stdout
    assert js.stdout.isascii() and json.loads(js.stdout)["path"] == w.path


@pytest.mark.parametrize("kind", ["osc", "not utf-8", "bidi"])
def test_an_error_message_escapes_the_name_it_gives(tmp_path: Path, kind: str) -> None:
    """No such channel; not a channel; a record -o nobody may write: each message names the
    file escaped."""
    name = str(tmp_path / os.fsdecode(HOSTILE[kind][0]))
    missing = pipe("info", name)
    Path(name).write_bytes(b"not a channel\n" * 100)
    garbage = pipe("info", name)
    below = os.path.join(name, "x.npy")
    with hostile_channel(str(tmp_path), kind, "ch-") as w:
        record = pipe("record", w.path, "-o", below)
    for out, named in ((missing, name), (garbage, name), (record, below)):
        assert out.returncode == 2, out.stderr
        assert out.stderr.startswith(b"seqshm: ") and out.stderr.count(b"\n") == 1, out.stderr
        assert_safe(out.stderr, kind)
        assert shown(named).encode() in out.stderr


# -- watch ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", NAMES)
def test_watch_escapes_a_hostile_file_name_on_a_terminal(tmp_path: Path, kind: str) -> None:
    with hostile_channel(str(tmp_path), kind) as w:
        code, raw = terminal(["watch", w.path, "--count", "2", "--interval", "0.05"])
    assert code == 0, raw
    assert_safe(raw, kind, on_terminal=True)
    assert shown(w.path).encode() in raw


@pytest.mark.parametrize("kind", NAMES)
def test_watch_lines_escape_a_hostile_file_name(tmp_path: Path, kind: str) -> None:
    """JSON Lines escape it as JSON does; CSV has it shown as a person reads it, and no raw
    control character anywhere."""
    with hostile_channel(str(tmp_path), kind) as w:
        jsonl = pipe("watch", w.path, "--count", "1")
        table = pipe("watch", w.path, "--count", "1", "--format", "table")
        w.close()
        out = pipe("watch", w.path, "--format", "csv")
    assert jsonl.returncode == 0 and out.returncode == 0 and table.returncode == 0
    assert jsonl.stdout.isascii() and json.loads(jsonl.stdout)["path"] == w.path
    assert_safe(table.stdout, kind)
    assert_safe(out.stdout, kind)
    rows = list(csv.reader(io.StringIO(out.stdout.decode())))
    assert rows[1][1] == shown(w.path) and rows[2][0] == "ended"


MARKUP = np.dtype([("[/]", np.float64), ("[blink]b", np.float64), ("c:d", np.float64)])


def test_watch_shows_markup_in_field_names_as_text(tmp_path: Path) -> None:
    """Field names, the header's name and the path are not rich markup: '[/]' (which rich
    refuses as a tag closing nothing) and '[blink]' are shown as written."""
    path = str(tmp_path / "[red]x[b]")
    with seqshm.create(path, MARKUP, (2,), name="[blink]n[/]") as w:
        w.write(np.ones(2, MARKUP))
        code, raw = terminal(["watch", w.path, "--count", "1"])
        out = pipe("info", w.path)
    assert code == 0, raw
    text = _RICH_OWN.sub(b"", raw).decode()
    assert "'[/]'" in text and "'[blink]b'" in text and "'[blink]n[/]'" in text
    assert shown(path) in text and "Traceback" not in text
    assert b"\x1b[5" not in raw  # no blink from a name
    assert b"fields          '[/]':float64@0, '[blink]b':float64@8, c:d:float64@16" in out.stdout


# -- record --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["osc", "not utf-8", "bidi"])
def test_record_escapes_the_channel_and_the_output_on_a_terminal(
        tmp_path: Path, kind: str) -> None:
    out_file = str(tmp_path / os.fsdecode(b"out-" + HOSTILE[kind][0] + b".npy"))
    with hostile_channel(str(tmp_path), kind) as w, writing(w, 200):
        code, raw = terminal(["record", w.path, "-o", out_file, "--count", "20"])
    assert code == 0, raw
    assert_safe(raw, kind, on_terminal=True)
    text = _RICH_OWN.sub(b"", raw).decode()
    assert shown(w.path) in text and shown(out_file) in text
    assert len(np.load(out_file)) == 20


def test_record_with_markup_in_its_paths_records(tmp_path: Path) -> None:
    (tmp_path / "[").mkdir()  # so that the paths hold "[/]", which rich takes for a tag
    out_file = str(tmp_path / "[" / "]out.npy")
    with seqshm.create(str(tmp_path / "[" / "]ch"), np.int64, 2, name="x") as w, writing(w, 200):
        code, raw = terminal(["record", w.path, "-o", out_file, "--count", "5"])
    assert code == 0, raw
    assert shown(out_file) in _RICH_OWN.sub(b"", raw).decode()
    assert len(np.load(out_file)) == 5


def test_demo_escapes_its_path(tmp_path: Path) -> None:
    path = str(tmp_path / os.fsdecode(HOSTILE["osc"][0]))
    out = pipe("demo", "--duration", "0.3", "--interval", "0.1", "--path", path, columns=400)
    assert out.returncode == 0, out.stderr
    assert_safe(out.stdout, "osc")
    assert rb"n-\e]0;PWNED\a\e[2K\rfake'" in out.stdout

