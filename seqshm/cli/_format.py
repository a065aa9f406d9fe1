"""Pure helpers of the command line: how names from outside are shown escaped, how dtypes,
clocks, ages, rates and data are written as text, JSON and CSV, and how a grid of cells is cut
to a terminal's width."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

# -- escaping ------------------------------------------------------------------------------------
#
# A file name is any bytes but '/' and NUL, and any local user may name a channel in /dev/shm:
# written raw, ESC ] 0 ; ... BEL retitles the operator's terminal, ESC [ 2 K CR erases the row,
# U+202E reverses what follows, U+009B (and the byte 0x9b, to a terminal in 8-bit mode) starts
# a control sequence. Everything the command line shows that it did not write itself goes
# through shown() (a name: quoted as GNU ls quotes it by default, with bash's $'...' for what
# is not printable) or printable() (free text that may hold a name, such as an error message).

#: Characters a shell reads as more than themselves: a name holding one is quoted. '#' and '~'
#: only at the start of a word, '{' and '}' only alone (as GNU quotearg's shell styles have it).
_SHELL_SPECIAL = frozenset(" !\"$&'()*;<=>?[\\^`|")
_NAMED = {"\a": "a", "\b": "b", "\t": "t", "\n": "n", "\v": "v", "\f": "f", "\r": "r",
          "\x1b": "e", "\\": "\\", "'": "'"}


def _escaped(c: str) -> str:
    """One character inside bash's $'...': itself if printable, else the escape that bash
    reads back as it (a byte that was not UTF-8, decoded by os.fsdecode() as a lone surrogate
    U+DC80..U+DCFF, as that byte again)."""
    if c in _NAMED:
        return "\\" + _NAMED[c]
    if c.isprintable():  # not Cc, Cf (bidi), Cs, Co, Cn, Zl, Zp, nor a space but ' '
        return c
    o = ord(c)
    if 0xDC80 <= o <= 0xDCFF:
        return f"\\x{o - 0xDC00:02x}"
    if o < 0x80:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}"


def _unprintable(c: str) -> bool:
    return not c.isprintable()


def _as_text(text: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    return os.fsdecode(text)


def shown(name: str | bytes | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """A name from outside (a path, a channel's or a field's name) as a person is shown it:
    as is when it is printable and a shell reads it as itself; else quoted, as GNU ls's
    default shell-escape quoting does: in '...' (or "..." for a name with a single quote in
    it), and as one $'...' word (\\e, \\a, \\n, \\xNN, \\uNNNN) when anything in it is
    not printable. Either way bash reads the word back as the very name; no character of it
    acts on a terminal; rich never sees markup in it (render it as Text, or with
    markup=False)."""
    s = _as_text(name)
    if any(map(_unprintable, s)):
        return "$'" + "".join(map(_escaped, s)) + "'"
    special = bool(_SHELL_SPECIAL.intersection(s)) or s[:1] in ("#", "~") or s in ("{", "}")
    if s and not special:
        return s
    if "'" not in s:
        return f"'{s}'"
    if not set('"$`\\!').intersection(s):
        return f'"{s}"'
    return "'" + s.replace("'", "'\\''") + "'"


def printable(text: str) -> str:
    """Free text that may hold names from outside (an error message a library built), each
    run of characters that are not printable written as one $'...' (as shown() writes them):
    what is printable is left as it is. Applying it twice changes nothing."""
    if not any(map(_unprintable, text)):
        return text
    out, run = [], []
    for c in text:
        if _unprintable(c):
            run.append(_escaped(c))
            continue
        if run:
            out.append("$'" + "".join(run) + "'")
            run = []
        out.append(c)
    if run:
        out.append("$'" + "".join(run) + "'")
    return "".join(out)


#: The quoting of names in text a person reads; JSON passes str (json escapes by itself).
Quote = Callable[[str], str]

#: Linux clock ids (include/uapi/linux/time.h) by the name a user knows them.
CLOCK_NAMES = {
    0: "CLOCK_REALTIME",
    1: "CLOCK_MONOTONIC",
    2: "CLOCK_PROCESS_CPUTIME_ID",
    3: "CLOCK_THREAD_CPUTIME_ID",
    4: "CLOCK_MONOTONIC_RAW",
    5: "CLOCK_REALTIME_COARSE",
    6: "CLOCK_MONOTONIC_COARSE",
    7: "CLOCK_BOOTTIME",
    8: "CLOCK_REALTIME_ALARM",
    9: "CLOCK_BOOTTIME_ALARM",
    11: "CLOCK_TAI",
}


def clock_name(clock_id: int) -> str:
    return CLOCK_NAMES.get(clock_id, f"clock {clock_id}")


def dtype_text(dt: np.dtype[Any], quote: Quote = shown) -> str:
    """A dtype as NumPy names it: ``int64``, ``(2,)float64`` for a subarray, a record's
    fields as ``name:type`` separated by commas, each name through ``quote`` (``str`` for
    JSON)."""
    if dt.names:
        return ", ".join(f"{quote(name)}:{dtype_text(dt.fields[name][0])}"  # type: ignore[index]
                         for name in dt.names)
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        return f"{shape}{dtype_text(base)}"
    return str(dt.name if dt.isnative else dt.str)


def fields_text(dt: np.dtype[Any]) -> str:
    """A record's fields with their byte offsets: ``a:uint32@0, b:(2,)float64@4``."""
    assert dt.fields is not None
    return ", ".join(f"{shown(name)}:{dtype_text(spec[0])}@{spec[1]}"
                     for name, spec in dt.fields.items())


def fields_json(dt: np.dtype[Any]) -> list[dict[str, Any]] | None:
    """A record's fields as JSON objects (None for a plain dtype)."""
    if dt.fields is None:
        return None
    out = []
    for name, spec in dt.fields.items():
        sub: np.dtype[Any] = spec[0]
        base = sub.base if sub.subdtype is not None else sub
        out.append({"name": name, "dtype": dtype_text(base), "shape": list(sub.shape),
                    "offset": int(spec[1])})
    return out


def age_s(clock_id: int, timestamp_ns: int) -> float | None:
    """Seconds since ``timestamp_ns`` on the channel's clock; None if there was no write."""
    if not timestamp_ns:
        return None
    try:
        now = time.clock_gettime_ns(clock_id)
    except OSError:
        return None
    return (now - timestamp_ns) / 1e9


def seconds_text(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    if abs(s) < 10:
        return f"{s:.3f} s"
    if abs(s) < 1000:
        return f"{s:.1f} s"
    return f"{s:,.0f} s"


def rate_text(hz: float | None) -> str:
    if hz is None or not math.isfinite(hz):
        return "-"
    return f"{hz:.2f}" if hz < 10 else f"{hz:,.0f}"


def rate(prev: tuple[float, int] | None, now: float, count: int) -> float | None:
    """Writes per second since ``prev`` = (time, count); None until it is known."""
    if prev is None or now <= prev[0] or count < prev[1]:
        return None
    return (count - prev[1]) / (now - prev[0])


def _clean(value: Any) -> Any:
    """tolist() output made valid JSON: NaN and infinities as null, complex as [re, im]."""
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, complex):
        return [_clean(value.real), _clean(value.imag)]
    return value


def to_json(a: np.ndarray) -> Any:
    """An array as JSON values: nested lists, a record as an object of its fields."""
    if a.dtype.names:
        if a.ndim:
            return [to_json(np.asarray(x)) for x in a]
        return {name: to_json(np.asarray(a[name])) for name in a.dtype.names}
    return _clean(a.tolist())


def flat_names(dt: np.dtype[Any], shape: tuple[int, ...], prefix: str = "data") -> list[str]:
    """CSV column names of every scalar of an array: ``data[0]``, ``data[1].xyz[2]``."""
    names: list[str] = []
    for idx in np.ndindex(*shape):
        base = prefix + "".join(f"[{i}]" for i in idx)
        if dt.names:
            for name in dt.names:
                sub: np.dtype[Any] = dt.fields[name][0]  # type: ignore[index]
                names += flat_names(sub.base, sub.shape, f"{base}.{shown(name)}")
        else:
            names.append(base)
    return names


def flat_values(a: np.ndarray) -> list[Any]:
    """Every scalar of ``a`` in the order of :func:`flat_names`."""
    if not a.dtype.names:
        return list(a.reshape(-1).tolist())
    out: list[Any] = []
    for rec in a.reshape(-1):
        for name in a.dtype.names:
            out += flat_values(np.asarray(rec[name]))
    return out


def cell(value: Any) -> str:
    """One value as a table cell: a scalar as Python writes it, a subarray in brackets."""
    a = np.asarray(value)
    if a.ndim:
        return np.array2string(a, separator=",", threshold=8, max_line_width=10**6)
    return str(a.item())


def fit_columns(header: list[str], rows: list[list[str]], width: int,
                overhead: int = 2) -> int:
    """How many leading columns of a grid fit in ``width`` characters (at least one), each
    taking its widest cell plus ``overhead``."""
    used = keep = 0
    for c, title in enumerate(header):
        w = max([len(title)] + [len(r[c]) for r in rows]) + overhead
        if keep and used + w > width:
            break
        used += w
        keep += 1
    return keep


def record_grid(data: np.ndarray, width: int, max_rows: int
                ) -> tuple[list[str], list[list[str]], str | None]:
    """A record array as (header, rows, note of what is not shown), cut to ``width`` and
    ``max_rows``: elements as rows and fields as columns, or the transpose when that shows
    more of it."""
    assert data.dtype.names is not None
    flat = data.reshape(-1)
    names = list(data.dtype.names)
    titles = [shown(f) for f in names]  # a field's name as a person is shown it
    n = min(len(flat), max_rows)
    natural = (["#"] + titles,
               [[str(i)] + [cell(rec[f]) for f in names] for i, rec in enumerate(flat[:n])])
    m = min(len(names), max_rows)
    cols = flat[: max(1, width // 3)]
    transposed = (["field"] + [str(i) for i in range(len(cols))],
                  [[t] + [cell(rec[f]) for rec in cols] for f, t in zip(names[:m], titles,
                                                                        strict=False)])
    best: tuple[int, list[str], list[list[str]], str | None] | None = None
    for (header, rows), total_rows, total_cols, what in (
            (natural, len(flat), len(names), ("elements", "fields")),
            (transposed, len(names), len(flat), ("fields", "elements"))):
        keep = fit_columns(header, rows, width)
        visible = len(rows) * (keep - 1)
        hidden = []
        if total_rows > len(rows):
            hidden.append(f"{total_rows - len(rows)} more {what[0]}")
        if total_cols > keep - 1:
            hidden.append(f"{total_cols - keep + 1} more {what[1]}")
        if best is None or visible > best[0]:
            best = (visible, header[:keep], [r[:keep] for r in rows],
                    " and ".join(hidden) + " not shown" if hidden else None)
    assert best is not None
    return best[1], best[2], best[3]
