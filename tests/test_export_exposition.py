"""seqshm export's own exposition (seqshm._exposition: templates rendered by prometheus_client,
values formatted per scrape) gives the bytes prometheus_client's generate_latest and
OpenMetrics' generate_latest give for the same snapshot, whatever the channels' geometry,
dtype and values, in every format the server negotiates; and the server answers as
prometheus_client's MetricsHandler does (content type, gzip), plus HEAD."""

from __future__ import annotations

import functools
import gzip
import itertools
import math
import os
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from exporting import parse
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.utils import floatToGoString

import seqshm
from seqshm import export
from seqshm._cpustat import CPUSTAT_DTYPE
from seqshm._exposition import (
    Encoder,
    ExpositionCache,
    _Metrics,
    canonical_encoder,
    format_values,
    to_prometheus,
)
from seqshm._families import COUNTER, Family

#: Accept headers of scrapers: none (curl), Prometheus's own (it prefers OpenMetrics), and
#: each format and escaping prometheus_client's choose_encoder tells apart.
ACCEPTS = [
    None,
    "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;"
    "escaping=underscores;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
    "application/openmetrics-text",
    "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
    "application/openmetrics-text; version=1.0.0; escaping=dots",
    "text/plain; version=1.0.0; escaping=values",
    "text/plain; version=0.0.4",
]
ENCODERS = [choose_encoder(a or "")[0] for a in ACCEPTS]

_paths = itertools.count()


def library(families: list[Family], encoder: Encoder) -> bytes:
    """What prometheus_client renders for these families (SeqshmCollector.collect's way)."""
    return encoder(_Metrics([to_prometheus(f) for f in families if f.size]))


def check_same(collector: export.SeqshmCollector, cache: ExpositionCache) -> list[bytes]:
    """One collection, rendered from templates and by the library in each format: the same."""
    families = collector.metrics.collect()
    out = []
    for encoder in ENCODERS:
        fast = cache.render(families, encoder)
        assert fast == library(families, encoder)
        out.append(fast)
    return out


@pytest.fixture
def new_path(shm_path: str) -> Iterator[Callable[[], str]]:
    """new_path(): another channel path beside shm_path, all removed after the test."""
    made: list[str] = []

    def make() -> str:
        made.append(f"{shm_path}-{next(_paths)}")
        return made[-1]

    yield make
    for p in made:
        if os.path.exists(p):
            os.unlink(p)


# -- the value formatter ----------------------------------------------------------------------

SPECIAL = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    999999.9999999999,
    1e6,
    1e6 + 0.5,
    123456789.0,
    1e15,
    1e16,
    1e17,
    2.0**64,
    -1e300,
    1e300,
    5e-324,
    1e-5,
    math.inf,
    -math.inf,
    math.nan,
    -math.nan,
]


@given(st.lists(st.floats() | st.sampled_from(SPECIAL), max_size=50))
def test_values_are_formatted_as_float_to_go_string_does(values: list[float]) -> None:
    assert format_values(np.array(values, np.float64)) == [floatToGoString(v) for v in values]


def test_values_around_where_go_switches_to_exponents() -> None:
    edge = np.nextafter(1e6, [0.0, math.inf, -math.inf])
    values = np.concatenate([edge, -edge, np.arange(999990.0, 1000010.0, 0.25)])
    assert format_values(values) == [floatToGoString(v) for v in values.tolist()]


@given(
    st.lists(
        st.lists(st.sampled_from(SPECIAL[:6] + SPECIAL[-4:]), min_size=6, max_size=6),
        min_size=2,
        max_size=8,
    )
)
def test_scrape_after_scrape_each_value_is_formatted_anew_or_kept_as_it_was(
    scrapes: list[list[float]],
) -> None:
    """Values that are those of the last scrape keep their text: bit for bit (0.0 then -0.0,
    NaN then NaN, a value then another), each exposition is still the library's."""
    rows = tuple((str(i),) for i in range(6))
    cache = ExpositionCache()
    for values in scrapes:
        family = Family("x_total", COUNTER, "help", "x", "", ("i",), ("i",))
        family.add(rows, np.array(values, np.float64))
        for encoder in ENCODERS[:3]:
            assert cache.render([family], encoder) == library([family], encoder)


# -- generic channels: random geometry, dtype and values ---------------------------------------

FIELD_NAMES = ["value", "hits_total", "busy_ns_total", "lat_us", "t_ms", "x-y", "2nd", "up"]
NUMERIC = ["?", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"]
KINDS = [*NUMERIC, "c8"]  # complex fields are left out of the exposition


@st.composite
def channel_specs(draw: st.DrawFn) -> tuple[np.dtype[Any], tuple[int, ...], str]:
    plain = draw(st.booleans())
    if plain:
        dtype = np.dtype(draw(st.sampled_from(NUMERIC)))
    else:  # the first field numeric: a channel named alone must have one
        names = draw(st.lists(st.sampled_from(FIELD_NAMES), min_size=1, max_size=3, unique=True))
        dtype = np.dtype(
            [
                (
                    n,
                    draw(st.sampled_from(KINDS if i else NUMERIC)),
                    draw(st.sampled_from([(), (2,), (3,)])),
                )
                for i, n in enumerate(names)
            ]
        )
    shape = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    name = draw(
        st.sampled_from(["demo", "channel", "a b", 'q"uote', "back\\slash", "{x}", "9lives"])
    )
    return dtype, shape, name


def random_payload(
    dtype: np.dtype[Any], shape: tuple[int, ...], raw: bytes, special: list[float]
) -> np.ndarray:
    """``raw`` bytes as a payload (any bit pattern: NaNs, infinities, huge and negative
    values), with ``special`` values written into its float fields."""
    data = np.frombuffer(raw, np.uint8, count=dtype.itemsize * math.prod(shape))
    arr = data.view(dtype).reshape(shape).copy()
    fields = [None] if dtype.names is None else list(dtype.names)
    for f in fields:
        sub = arr if f is None else arr[f]
        if sub.dtype.base.kind == "b":
            sub[...] = sub.view(np.uint8) & 1  # a bool byte is 0 or 1
        if sub.dtype.base.kind == "f" and special:
            flat = sub.reshape(-1)
            with np.errstate(over="ignore"):
                flat[: len(special)] = np.array(special[: flat.size], np.float64)
    return arr


@given(
    specs=st.lists(channel_specs(), min_size=1, max_size=3), data=st.data(), sum_dims=st.booleans()
)
def test_generic_channels_render_as_prometheus_client_renders_them(
    new_path: Callable[[], str],
    specs: list[tuple[np.dtype[Any], tuple[int, ...], str]],
    data: st.DataObject,
    sum_dims: bool,
) -> None:
    writers = []
    try:
        for dtype, shape, name in specs:
            writers.append(seqshm.create(new_path(), dtype, shape, name=name))
        has_dim0 = any(len(s) for _, s, _ in specs)
        collector = export.SeqshmCollector(
            [w.path for w in writers], sum_over=["dim0"] if sum_dims and has_dim0 else []
        )
        cache = ExpositionCache()
        for _ in range(2):  # a new template, then the same one with other values
            for w, (dtype, shape, _) in zip(writers, specs, strict=True):
                n = dtype.itemsize * math.prod(shape)
                raw = data.draw(st.binary(min_size=n, max_size=n))
                special = data.draw(st.lists(st.sampled_from(SPECIAL), max_size=4))
                w.write(random_payload(dtype, shape, raw, special))
            check_same(collector, cache)
        writers.pop().close()  # a channel that ends: up 0, no data series, a new template
        check_same(collector, cache)
        collector.close()
    finally:
        for w in writers:
            w.close()


# -- cpustat ---------------------------------------------------------------------------------


@given(cpus=st.integers(1, 70), data=st.data(), sum_over_cpu=st.booleans())
def test_cpustat_renders_as_prometheus_client_renders_it(
    new_path: Callable[[], str], cpus: int, data: st.DataObject, sum_over_cpu: bool
) -> None:
    with seqshm.create(new_path(), CPUSTAT_DTYPE, cpus, name="cpustat") as w:
        collector = export.SeqshmCollector([w.path], sum_over=["cpu"] if sum_over_cpu else [])
        cache = ExpositionCache()
        for _ in range(3):  # values and the set of online CPUs change from write to write
            rec = np.zeros(cpus, CPUSTAT_DTYPE)
            u64 = rec.view(np.uint64).reshape(cpus, -1)
            u64[:] = np.array(
                data.draw(
                    st.lists(
                        st.integers(0, 2**64 - 1) | st.sampled_from([0, 10**7, 10**16, 2**63]),
                        min_size=u64.size,
                        max_size=u64.size,
                    )
                ),
                np.uint64,
            ).reshape(u64.shape)
            rec["online"] = data.draw(st.lists(st.booleans(), min_size=cpus, max_size=cpus))
            w.write(rec)
            check_same(collector, cache)
        collector.close()


def test_a_replaced_channel_with_more_cpus_gets_a_new_template(new_path: Callable[[], str]) -> None:
    path = new_path()
    cache = ExpositionCache()
    collector = None
    for cpus in (2, 4):
        rec = np.zeros(cpus, CPUSTAT_DTYPE)
        rec["user_ns"] = np.arange(cpus) * 10**9
        rec["online"] = 1
        with seqshm.create(path, CPUSTAT_DTYPE, cpus, name="cpustat", overwrite=True) as w:
            w.write(rec)
            collector = collector or export.SeqshmCollector([path])
            text = check_same(collector, cache)[0]
            assert text.count(b'node_cpu_seconds_total{cpu="') == 8 * cpus
            assert (
                f'node_cpu_seconds_total{{cpu="{cpus - 1}",mode="user"}} {cpus - 1}.0'.encode()
                in text
            )
    assert collector is not None
    collector.close()


# -- templates per block: channels renamed, added, removed, reordered between scrapes ----------

#: every format choose_encoder offers (text 0.0.4 and 1.0.0, OpenMetrics, each escaping), by
#: the output it gives seqshm's families: the canonical encoders the server renders with
FORMATS = ["", "application/openmetrics-text",
           *(f"{kind}; version=1.0.0; escaping={e}"
             for kind in ("text/plain", "application/openmetrics-text")
             for e in ("allow-utf-8", "underscores", "dots", "values"))]
OUTPUTS = list({id(e): e for e in (canonical_encoder(choose_encoder(a)[0])
                                   for a in FORMATS)}.values())


class CountingCache(ExpositionCache):
    """An ExpositionCache that records the samples of each template built (by the library)."""

    def __init__(self, max_samples: int = 400_000) -> None:
        super().__init__(max_samples)
        self.built: list[int] = []

    def _build(self, families: Any, encoder: Encoder) -> Any:  # type: ignore[override]
        self.built.append(sum(f.size for f in families))
        return ExpositionCache._build(families, encoder)


class FakeChannel:
    """A channel's label blocks as ChannelMetrics keeps them (the same objects from scrape to
    scrape), in the meta family and data families some of which other channels share."""

    def __init__(self, label: str, fields: dict[str, int]) -> None:
        self.label, self.fields = label, fields
        self.rows = ((label,),)
        self.blocks = {name: tuple((label, str(i)) for i in range(n))
                       for name, n in fields.items()}


#: data families: (name, kind), shared by the channels that have them
DATA = [("seqshm_x_value", "gauge"), ("seqshm_x_hits_total", COUNTER),
        ("seqshm_x_busy_seconds_total", COUNTER), ("seqshm_y", "gauge")]
LABELS = ["/dev/shm/a", 'q"uote', "back\\slash", "new\nline", "ünï", "{x}", "a b"]


def scrape_families(channels: list[FakeChannel], values: Callable[[int], list[float]]
                    ) -> list[Family]:
    """A collection of ``channels`` as ChannelMetrics._collect makes it: the up family with
    each channel's row, then each data family where it first appears, its channels' blocks
    in their order."""
    up = Family("seqshm_channel_up", "gauge", "1 if up", "", "", ("channel",), ("channel",))
    out = [up]
    by_name: dict[str, Family] = {}
    for ch in channels:
        up.add(ch.rows, values(1))
        for name, block in ch.blocks.items():
            fam = by_name.get(name)
            if fam is None:
                kind = dict(DATA)[name]
                fam = by_name[name] = Family(name, kind, f"field {name}", "", "",
                                             ("channel", "dim0"), ("channel", "dim0"))
                out.append(fam)
            fam.add(block, values(len(block)))
    return out


def repeat(value: float, n: int) -> list[float]:
    return [value] * n


@st.composite
def fake_channels(draw: st.DrawFn) -> FakeChannel:
    label = draw(st.sampled_from(LABELS)) + str(next(_paths))
    names = draw(st.lists(st.sampled_from([n for n, _ in DATA]), max_size=3, unique=True))
    return FakeChannel(label, {n: draw(st.integers(1, 4)) for n in names})


STEPS = st.sampled_from(["values", "rename", "add", "remove", "reorder", "layout"])


@given(first=st.lists(fake_channels(), min_size=1, max_size=5),
       steps=st.lists(STEPS, min_size=1, max_size=6), data=st.data())
def test_scrapes_as_channels_come_go_and_are_renamed_are_the_librarys_and_cost_their_blocks(
    first: list[FakeChannel], steps: list[str], data: st.DataObject
) -> None:
    """Scrape after scrape, with a channel renamed (new label blocks), added, removed, moved,
    or its layout changed between two, each canonical output is the library's byte for byte,
    and the library renders only the blocks not seen before in that output (a channel's
    change costs that channel's samples, not the scrape's)."""
    values = st.floats() | st.sampled_from(SPECIAL)
    cache = CountingCache()
    channels = list(first)
    kept = list(first)  # every block ever made stays alive: their ids are not reused
    seen: dict[int, set[tuple[str, int]]] = {i: set() for i in range(len(OUTPUTS))}
    for step in ["values", *steps]:
        i = data.draw(st.integers(0, len(channels) - 1)) if channels else 0
        if step == "rename" and channels:
            old = channels[i]
            channels[i] = FakeChannel(data.draw(st.sampled_from(LABELS)) + str(next(_paths)),
                                      old.fields)
        elif step == "add" or not channels:
            channels.insert(i, data.draw(fake_channels()))
        elif step == "remove":
            channels.pop(i)
        elif step == "reorder":
            channels = data.draw(st.permutations(channels))
        elif step == "layout":
            channels[i] = FakeChannel(channels[i].label, data.draw(fake_channels()).fields)
        kept.extend(channels)
        families = scrape_families(
            channels, lambda n: [data.draw(values) for _ in range(n)])
        for out, encoder in enumerate(OUTPUTS):
            cache.built.clear()
            assert cache.render(families, encoder) == library(families, encoder)
            new = {(f.name, id(rows)): len(rows) for f in families for rows, _ in f.parts
                   if (f.name, id(rows)) not in seen[out]}
            assert sum(cache.built) == sum(new.values()), (step, cache.built, new)
            seen[out].update(new)


def test_each_format_is_one_of_five_outputs_each_put_together_from_blocks() -> None:
    from seqshm._exposition import _stitchable

    assert len(OUTPUTS) == 5
    assert [_stitchable(e) for e in OUTPUTS].count("# EOF\n") == 3  # OpenMetrics'
    assert [_stitchable(e) for e in OUTPUTS].count("") == 2  # the text format's


def test_an_encoder_that_writes_families_otherwise_is_rendered_by_itself() -> None:
    """An encoder whose scrape is not its families one after the other (here: its lines
    sorted) gets no templates: each scrape is its own, whatever the channels do."""
    def sorted_lines(collector: Any) -> bytes:
        return b"".join(sorted(generate_latest(collector).splitlines(keepends=True)))

    cache = CountingCache()
    channels = [FakeChannel(f"/dev/shm/c{i}", {"seqshm_x_value": 3}) for i in range(3)]
    for value in (1.0, 2.0):
        families = scrape_families(channels, functools.partial(repeat, value))
        assert cache.render(families, sorted_lines) == library(families, sorted_lines)
        channels[0] = FakeChannel("/dev/shm/renamed", {"seqshm_x_value": 3})
    assert not cache.built


@pytest.mark.parametrize("encoder", OUTPUTS)
def test_a_scrape_with_no_samples_is_the_librarys(encoder: Encoder) -> None:
    assert ExpositionCache().render([], encoder) == library([], encoder)


def test_a_channel_renamed_at_every_scrape_does_not_grow_the_cache_nor_evict_the_others() -> None:
    """breaker3 finding 4's kind: blocks that come and go are dropped least recently used
    first past max_samples, so the kept templates stay bounded, and the blocks every scrape
    has stay: a rename costs the renamed channel's samples only, scrape after scrape."""
    cache = CountingCache(max_samples=2_000)
    big = FakeChannel("/dev/shm/big", {"seqshm_x_value": 500})
    kept = []  # (blocks' samples, scrapes' samples, scrapes) kept after each scrape
    for n in range(300):
        tiny = FakeChannel(f"/dev/shm/tiny{n}", {"seqshm_x_value": 1, "seqshm_y": 2})
        families = scrape_families([big, tiny], functools.partial(repeat, float(n)))
        assert cache.render(families, generate_latest) == library(families, generate_latest)
        kept.append((getattr(cache, "_block_samples", 0), getattr(cache, "_scrape_samples", 0),
                     len(getattr(cache, "_scrapes", ()))))
    # the first scrape renders both channels, each after it the renamed one's 4 samples
    assert cache.built == [505] + [4] * 299, f"renders of {cache.built} samples"
    assert max(blocks for blocks, _, _ in kept) <= cache.max_samples
    assert max(samples for _, samples, _ in kept) <= cache.max_samples
    assert max(scrapes for _, _, scrapes in kept) <= cache.MAX_TEMPLATES


def test_real_channels_renamed_added_and_removed_cost_their_own_blocks(
        new_path: Callable[[], str], shm_path: str) -> None:
    """The same through ChannelMetrics: a glob's channels, one renamed, one added, one
    removed between scrapes; each scrape the library's in every output, and each change
    rendered by the library for the changed channel's series alone (its data, its 11 own
    series: up, 7 states, writes, time and age of its write)."""
    cache = CountingCache()
    big, small, gone = new_path(), new_path(), new_path()
    writers = [seqshm.create(big, "<f8", 300, name="big"),
               seqshm.create(small, "<f8", 2, name="small"),
               seqshm.create(gone, "<f8", 1, name="gone")]
    try:
        for w in writers:
            w.write(np.arange(float(w.shape[0])) / 3)
        collector = export.SeqshmCollector([f"{os.path.basename(shm_path)}-*"])
        check_same(collector, cache)
        renamed = new_path()
        os.rename(small, renamed)
        added = seqshm.create(new_path(), "<f8", 3, name="added")
        writers.append(added)
        added.write(np.ones(3))
        writers.pop(2).close()
        os.unlink(gone)
        cache.built.clear()
        check_same(collector, cache)
        assert cache.built, "nothing rendered for the new channels"
        assert max(cache.built) <= (2 + 11) + (3 + 11), f"renders of {cache.built} samples"
        collector.close()
    finally:
        for w in writers:
            w.close()


# -- the server ------------------------------------------------------------------------------


@pytest.fixture
def served(new_path: Callable[[], str]) -> Iterator[str]:
    """seqshm export's server of a 3-CPU cpustat channel, and its URL."""
    rec = np.zeros(3, CPUSTAT_DTYPE)
    rec["idle_ns"] = 10**15
    rec["online"] = 1
    with seqshm.create(new_path(), CPUSTAT_DTYPE, 3, name="cpustat") as w:
        w.write(rec)
        collector = export.SeqshmCollector([w.path])
        server, thread = export.serve(export.registry_of(collector), "127.0.0.1:0")
        try:
            yield f"http://127.0.0.1:{server.server_port}/metrics"
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
            collector.close()


def request(url: str, method: str = "GET", **headers: str) -> tuple[dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return dict(resp.headers), resp.read()


@pytest.mark.parametrize("accept", ACCEPTS)
def test_the_server_negotiates_the_format_as_prometheus_client_does(
    served: str, accept: str | None
) -> None:
    headers, body = request(served, **({"Accept": accept} if accept else {}))
    assert headers["Content-Type"] == choose_encoder(accept or "")[1]
    assert int(headers["Content-Length"]) == len(body)
    if "openmetrics" in headers["Content-Type"]:
        assert body.endswith(b"# EOF\n")
    else:
        assert (
            parse(body)[("node_cpu_seconds_total", frozenset({("cpu", "2"), ("mode", "idle")}))]
            == 1e15 / 1e9
        )


def test_the_server_compresses_when_asked(served: str) -> None:
    headers, body = request(served, **{"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"
    assert b'node_cpu_seconds_total{cpu="0",mode="idle"} 1e+06' in gzip.decompress(body)
    headers, body = request(served)
    assert "Content-Encoding" not in headers
    assert b'node_cpu_seconds_total{cpu="0",mode="idle"} 1e+06' in body


def test_the_server_answers_head_with_the_headers_of_a_get(served: str) -> None:
    get_headers, body = request(served)
    head_headers, nothing = request(served, "HEAD")
    assert nothing == b""
    assert head_headers["Content-Type"] == get_headers["Content-Type"]
    assert abs(int(head_headers["Content-Length"]) - len(body)) < 100  # the age's digits vary


def test_the_server_hands_name_selection_to_prometheus_client(served: str) -> None:
    _, body = request(served + "?name[]=seqshm_channel_up")
    assert [name for name, _ in parse(body)] == ["seqshm_channel_up"]


def test_a_cpustat_channel_with_no_cpu_online_has_no_cpu_series(shm_path: str) -> None:
    """Every CPU offline (or a writer that never set ``online``): was a ValueError at every
    scrape (its label cache took it for the --sum-over cpu case, one row per mode)."""
    with seqshm.create(shm_path, CPUSTAT_DTYPE, 2, name="cpustat") as w:
        w.write(np.zeros(2, CPUSTAT_DTYPE))
        collector = export.SeqshmCollector([shm_path])
        for _ in range(2):
            series = parse(export.exposition(export.registry_of(collector)))
            assert series[("seqshm_channel_up", frozenset({("channel", shm_path)}))] == 1.0
            assert not [n for n, _ in series if n.startswith("node_cpu")]
        assert [m.name for m in collector.collect()] == [
            "seqshm_channel_up",
            "seqshm_channel_state",
            "seqshm_channel_writes",
            "seqshm_channel_last_write_timestamp_seconds",
            "seqshm_channel_last_write_age_seconds",
        ]
        collector.close()
