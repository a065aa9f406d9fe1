"""Converts between NumPy dtypes and the seqshm field table (no eval: plain kind/size/offset)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numpy.typing import DTypeLike

# The engine's limits, restated so that _core may import this module (tests/test_layout.py
# ties them to _core.FIELD_NAME_MAX and _core.MAX_FIELDS)
FIELD_NAME_MAX = 31  # SEQSHM_FIELD_NAME_LEN - 1 (the NUL)
MAX_FIELDS = 32  # SEQSHM_MAX_FIELDS
_SIZES = {"b": (1,), "i": (1, 2, 4, 8), "u": (1, 2, 4, 8), "f": (2, 4, 8), "c": (8, 16)}


@dataclass(frozen=True)
class Field:
    """One entry of the field table: what struct seqshm_field holds."""

    name: str
    offset: int
    count: int
    kind: str
    size: int
    array: bool = False  # a 1-d array field (a NumPy subarray), even of one element


class ElementType(NamedTuple):
    """The element type as the header stores it."""

    itemsize: int
    record: bool
    fields: tuple[Field, ...]


def _scalar(dt: np.dtype, what: str) -> tuple[str, int]:
    if dt.kind not in _SIZES or dt.itemsize not in _SIZES[dt.kind]:
        raise TypeError(
            f"{what} has dtype {dt}: seqshm holds bool, int, uint, float and complex scalars"
        )
    if not dt.isnative:
        raise TypeError(
            f"{what} has dtype {dt.str} in foreign byte order: seqshm channels are native-endian"
            " (use dtype.newbyteorder('='))"
        )
    return dt.kind, dt.itemsize


def element_type(dtype: DTypeLike) -> ElementType:
    """The field table for ``dtype``; TypeError if the header cannot describe it."""
    dt = np.dtype(dtype)
    if dt.names is None:
        if dt.subdtype is not None:
            raise TypeError(
                f"dtype {dt} is a subarray type: put its shape into the channel's shape instead"
            )
        kind, size = _scalar(dt, "the element")
        return ElementType(size, False, (Field("", 0, 1, kind, size),))
    if not dt.names:
        raise TypeError(f"dtype {dt} is a record with no fields")
    if len(dt.names) > MAX_FIELDS:
        raise TypeError(f"dtype has {len(dt.names)} fields, seqshm holds at most {MAX_FIELDS}")
    fields = []
    table = dt.fields
    assert table is not None
    for name in dt.names:
        if len(table[name]) > 2:
            raise TypeError(f"field {name!r} has a title: the field table has no place for titles")
        fdt, offset = table[name][:2]
        if not name or len(name.encode("ascii", "replace")) > FIELD_NAME_MAX or not (
            name.isascii() and name.isprintable()
        ):
            raise TypeError(
                f"field name {name!r}: names are 1 to {FIELD_NAME_MAX} printable ASCII characters"
            )
        count, array = 1, False
        if fdt.subdtype is not None:
            base, shape = fdt.subdtype
            if len(shape) != 1:
                raise TypeError(
                    f"field {name!r} is a {len(shape)}-d subarray: seqshm fields hold a scalar or"
                    " a 1-d array"
                )
            fdt, count, array = base, shape[0], True
        if fdt.names is not None:
            raise TypeError(f"field {name!r} is a nested record: seqshm records are flat")
        kind, size = _scalar(fdt, f"field {name!r}")
        fields.append(Field(name, offset, count, kind, size, array))
    return ElementType(dt.itemsize, True, tuple(fields))


def to_dtype(element: ElementType) -> np.dtype:
    """The NumPy dtype a field table describes (already validated by the C header check)."""
    if not element.record:
        f = element.fields[0]
        return np.dtype(f"{f.kind}{f.size}")
    return np.dtype(
        {
            "names": [f.name for f in element.fields],
            "formats": [
                (f"{f.kind}{f.size}", (f.count,)) if f.array else np.dtype(f"{f.kind}{f.size}")
                for f in element.fields
            ],
            "offsets": [f.offset for f in element.fields],
            "itemsize": element.itemsize,
        }
    )
