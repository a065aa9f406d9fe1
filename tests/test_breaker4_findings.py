"""breaker4's findings against docs/security.md: each test fails on main 5c7f130 (xfail,
strict, until fixed)."""

from __future__ import annotations

import gzip
import socket
import threading
import time
import types
from typing import Any

import numpy as np
import pytest
from exporting import collections_during, parse, pick, responses, server_of
from test_breaker2_findings import _get_closing

import seqshm
from seqshm import _server, export


def _scrape_closing(port: int, extra: bytes = b"") -> bytes:
    """One GET with header lines ``extra`` on a new connection (Connection: close), given 20 s
    (a cold render of 99,999 series takes about one): what the server sent."""
    return _get_closing(port, extra=extra, timeout=20)


def template_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The samples of each exposition template built from now on (ExpositionCache._build:
    a cold render through prometheus_client), a list the test reads."""
    from seqshm._exposition import ExpositionCache

    built: list[int] = []
    real_build = ExpositionCache._build

    def counting_build(families: Any, encoder: Any) -> Any:
        built.append(sum(len(rows) for f in families for rows, _ in f.parts))
        return real_build(families, encoder)

    monkeypatch.setattr(ExpositionCache, "_build", staticmethod(counting_build))
    return built


def _concurrent_collections(shm_path: str, monkeypatch: pytest.MonkeyPatch, target: bytes,
                            extra: bytes = b"", clients: int = 8, elements: int = 2_000
                            ) -> tuple[int, list[bytes]]:
    """``clients`` concurrent GETs of ``target`` (with header lines ``extra``) to a server
    of one channel, the first collection slowed by 1 s so that the others arrive during it:
    the collections made, and the answers."""
    with seqshm.create(shm_path, "<f8", elements) as w:
        w.write(np.arange(float(elements)))
        collector = export.SeqshmCollector([shm_path])
        answers: list[bytes] = []
        with server_of(export.registry_of(collector)) as server:
            port = server.server_port

            def scrape() -> None:
                with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
                    s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n" + extra + b"\r\n")
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                    answers.append(data)

            calls = collections_during(collector, monkeypatch, clients, scrape)
        collector.close()
    return calls, answers


# breaker4 finding 1: the kind of breaker3's "each request queues a render" (fixed by
# SeqshmCollector.exposition sharing renders) has another member: gzip. Prometheus asks for
# gzip at every scrape (Accept-Encoding: gzip), and the server compresses the shared
# render's text anew for each request, at zlib's level 9: a 200,000-series exposition
# (12 MB) costs ~0.44 s of CPU to compress on this host, four times its render (~0.1 s). So
# N concurrent gzip scrapes (or N clients sending a gzip GET and closing at once, whose
# answers are compressed all the same) still cost N times that CPU, though they share two
# renders.
# breaker4 finding 1, fixed: a shared render's gzip is made once for every scrape that
# takes it (Answer.gzipped).
def test_concurrent_gzip_scrapes_share_the_compression_too(
        shm_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    compressions: list[int] = []
    real_compress = gzip.compress

    def counting(data: bytes, *args: Any, **kwargs: Any) -> bytes:
        compressions.append(len(data))
        return real_compress(data, *args, **kwargs)

    monkeypatch.setattr(_server, "gzip", types.SimpleNamespace(compress=counting))
    calls, answers = _concurrent_collections(shm_path, monkeypatch, b"/metrics",
                                             b"Accept-Encoding: gzip\r\n", elements=20_000)
    assert len(answers) == 8
    for data in answers:
        [(status, body)] = responses(data)
        assert status == 200
        assert pick(parse(gzip.decompress(body)), "seqshm_channel_up")
    assert calls <= 2, f"{calls} collections"  # the renders are shared...
    assert len(compressions) <= 2, (  # ...their compression is not
        f"{len(compressions)} compressions of {compressions[0]} bytes for 8 concurrent "
        f"scrapes over {calls} renders")


# breaker4 finding 2: the same kind through another door. A request with a query
# `?name[]=NAME` (prometheus_client's filter, which the server keeps) is rendered by
# prometheus_client from the registry (RestrictedRegistry -> SeqshmCollector.collect): a full
# collection of every channel and a prometheus_client Metric for every series, outside
# SeqshmCollector.exposition's turns and templates. Any client (a name every scrape has,
# seqshm_channel_up, is enough) thus queues one full collection per request again: with a
# channel of 99,999 series, a well-behaved scrape that takes 0.03 s took 1.15 s while 8 such
# requests were in flight (each ~0.2 s of CPU for a 368-byte answer).
# breaker4 finding 2, fixed: ?name[]= scrapes go through SeqshmCollector.answer too (the
# filter part of the shared render's key), templates and turns included.
def test_filtered_scrapes_share_collections_too(shm_path: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls, answers = _concurrent_collections(
        shm_path, monkeypatch, b"/metrics?name[]=seqshm_channel_up")
    assert len(answers) == 8
    for data in answers:
        [(status, body)] = responses(data)
        assert status == 200 and pick(parse(body), "seqshm_channel_up")
    assert calls <= 2, f"{calls} collections for 8 concurrent filtered scrapes"


# breaker4 finding 3: an exposition's template is one for the whole scrape, keyed by the
# identity of every channel's block of labels, so any channel whose labels change (a channel
# renamed, or a new name appearing, which any local user can do in /dev/shm between two
# scrapes) makes the next scrape build a new template of every channel: prometheus_client
# renders all series again (~5 us and ~1 KB each), trusted channels' too. With one channel of
# 99,999 series, a scrape took 0.03 s warm and 0.92 s cold: another user renaming a
# 1-element channel of its own before each scrape makes every scrape the cold one, 30 times
# the CPU ("each costs a snapshot" in docs/security.md: here a 1-series channel costs every
# other channel's rendering).
# breaker4 finding 3, fixed: templates are kept per block of label values (one channel's
# samples in one family) and put together per scrape (ExpositionCache): a renamed channel
# costs its own blocks' templates (12 samples here), the others' texts are joined anew.
def test_another_users_renamed_tiny_channel_does_not_make_every_scrape_cold(
        shm_name: str, other_user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from channel_dir import SHM_DIR

    elements = 10_000
    good = os.path.join(SHM_DIR, f"{shm_name}-good")
    tiny = [os.path.join(SHM_DIR, f"{shm_name}-tiny{i}") for i in range(6)]
    made = [good, *tiny, tiny[0] + "-ready",
            *(os.path.join(SHM_DIR, f".{os.path.basename(p)}.waiters") for p in [good, *tiny])]
    rendered = template_builds(monkeypatch)  # samples the library rendered, per template

    def tiny_writer(path: str) -> None:
        with seqshm.create(path, "<f8", 1, name="tiny") as w:
            w.write(np.ones(1))
            os.close(os.open(path + "-ready", os.O_CREAT | os.O_WRONLY, 0o644))
            time.sleep(60)

    try:
        with seqshm.create(good, "<f8", elements, name="good") as w:
            w.write(np.arange(float(elements)))
            other_user.start(tiny_writer, tiny[0])
            deadline = time.monotonic() + 20
            while not os.path.exists(tiny[0] + "-ready"):
                assert time.monotonic() < deadline, "the other user's channel did not appear"
                time.sleep(0.05)
            collector = export.SeqshmCollector([f"{shm_name}-*"])
            collector.exposition()  # warm: the first scrape builds its template
            collector.exposition()
            rendered.clear()
            for old, new in zip(tiny, tiny[1:], strict=False):
                other_user.run(os.rename, old, new)  # between two scrapes
                text = collector.exposition()
                assert pick(parse(text), "seqshm_good", channel=good)
            collector.close()
    finally:
        for p in made:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
    assert sum(rendered) < elements, (
        f"5 scrapes, each after another user renamed its 1-element channel, had the library "
        f"render {rendered} samples (the trusted channel's {elements} series each time)")


# breaker4 finding 4: the exposition templates (ExpositionCache, MAX_TEMPLATES 32) and the
# shared renders (SeqshmCollector.exposition) are keyed by the encoder prometheus_client's
# choose_encoder makes of the request's Accept header, and that key holds the client's own
# bytes: `Accept: application/openmetrics-text; version=1.0.N` gives a partial with
# version="1.0.N" for any N (the library checks only that it parses as >= 1.0.0). So each
# request with a version string not seen before is a render of its own (not shared with the
# scrapes in flight) that builds a template of every series through prometheus_client (the
# cold render: ~5 us and ~1 KB a series), and 32 of them clear the cache, the scraper's
# template with it: every client can make every scrape cold, and queue cold renders the
# scraper waits behind.
# breaker4 finding 4, fixed: templates and shared renders are keyed by the encoder's output
# for seqshm's families (canonical_encoder: five outputs), not the client's version string.
def test_accept_header_versions_do_not_make_templates_or_evict_the_scrapers(
        shm_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    elements = 5_000
    rendered = template_builds(monkeypatch)
    with seqshm.create(shm_path, "<f8", elements) as w:
        w.write(np.arange(float(elements)))
        collector = export.SeqshmCollector([shm_path])
        with server_of(export.registry_of(collector)) as server:
            port = server.server_port
            for accept in (b"", b"application/openmetrics-text; version=1.0.0"):
                _scrape_closing(port, b"Accept: " + accept + b"\r\n")  # the scrapers' warm
            rendered.clear()
            for n in range(1, 41):
                data = _scrape_closing(
                    port, b"Accept: application/openmetrics-text; version=1.0.%d\r\n" % n)
                assert data.startswith(b"HTTP/1.1 200")
            attacker = list(rendered)
            rendered.clear()
            [(status, body)] = responses(_scrape_closing(port))
            assert status == 200 and pick(parse(body), "seqshm_channel_up")
        collector.close()
    assert not rendered, (f"the scraper's next scrape rendered {rendered} samples cold: "
                          "its template was evicted")
    assert len(attacker) <= 2, (f"40 requests differing only in Accept's version built "
                                f"{len(attacker)} templates of {attacker[0]} samples")


#: Accept headers of the formats prometheus_client's choose_encoder offers, one encoder each
_FORMATS = [b"", b"application/openmetrics-text",
            *(b"text/plain; version=1.0.0; escaping=" + e
              for e in (b"allow-utf-8", b"underscores", b"dots", b"values")),
            *(b"application/openmetrics-text; version=1.0.0; escaping=" + e
              for e in (b"allow-utf-8", b"underscores", b"dots", b"values"))]


# breaker4 finding 5: without any made-up version, the formats a client may ask for are
# ten encoders (text 0.0.4; OpenMetrics; text and OpenMetrics 1.0.0 with each of four
# escapings), a template each, and ExpositionCache keeps templates of at most 2 x
# --max-series samples in all (400,000 by default: breaker3's bound): a scrape of 99,999
# series fits four formats. A client that asks for the others in turn clears the cache at
# every few requests, so every render is cold, the scraper's too (~0.9 s at 99,999 series,
# 0.03 s warm); and a scrape of one format waits behind renders of the others in no order
# (the turn is not first come, first served): with 16 clients rotating nine formats, a
# well-behaved scrape of that channel waited 3 to 17 s (10 scrapes; Prometheus's
# scrape_timeout is 10 s).
# breaker4 finding 5, fixed: the same (five outputs, not ten encoders), with room for a
# template of each (ExpositionCache max_samples 6x --max-series).
def test_a_client_rotating_formats_does_not_evict_the_scrapers_template(
        shm_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    elements = 99_999
    rendered = template_builds(monkeypatch)
    with seqshm.create(shm_path, "<f8", elements) as w:
        w.write(np.arange(float(elements)))
        collector = export.SeqshmCollector([shm_path])
        with server_of(export.registry_of(collector)) as server:
            port = server.server_port
            _scrape_closing(port)  # the scraper's template
            _scrape_closing(port)
            for accept in _FORMATS[1:6]:
                data = _scrape_closing(port, b"Accept: " + accept + b"\r\n")
                assert data.startswith(b"HTTP/1.1 200")
            rendered.clear()
            [(status, body)] = responses(_scrape_closing(port))
            assert status == 200 and pick(parse(body), "seqshm_channel_up")
        collector.close()
    assert not rendered, (f"after 5 requests in other formats the scraper's scrape rendered "
                          f"{rendered} samples cold: its template was evicted")


#: Two addresses of one IPv6 /64, as two hosts of one LAN have them (SLAAC gives every host
#: of a link an address in the link's /64), added to the loopback device for the test.
_LAN_HOSTS = ("fd00:b4::1", "fd00:b4::2")


@pytest.fixture
def lan_hosts() -> Any:
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("adding addresses to the loopback device needs root")
    added = []
    try:
        for address in _LAN_HOSTS:
            done = subprocess.run(["ip", "-6", "addr", "add", f"{address}/64", "dev", "lo",
                                   "nodad"], capture_output=True, text=True, timeout=10)
            if done.returncode and "exists" not in done.stderr:
                pytest.skip(f"cannot add {address} to lo: {done.stderr.strip()}")
            added.append(address)
        yield _LAN_HOSTS
    finally:
        for address in added:
            subprocess.run(["ip", "-6", "addr", "del", f"{address}/64", "dev", "lo"],
                           capture_output=True, timeout=10)


def _keep_answering_from(source: str, port: int, size: int, rate: float,
                         stop: threading.Event) -> None:
    """breaker2's client that keeps one request ahead and reads each answer (``size`` bytes,
    more than the socket buffers hold) at ``rate`` bytes a second, from IPv6 ``source``: the
    server is answering it all the time, each answer within its deadline."""
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    s.settimeout(10)
    with s:
        s.bind((source, 0))
        s.connect((_LAN_HOSTS[0], port))
        s.sendall(request * 2)
        start, got = time.monotonic(), 0
        while not stop.is_set():
            try:
                chunk = s.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            if (got + len(chunk)) // size > got // size:
                s.sendall(request)
            got += len(chunk)
            stop.wait(max(start + got / rate - time.monotonic(), 0))


# breaker4 finding 6: places are shared between clients, and an IPv6 client is its /64
# (_client_of: "a host is given a /64 at least"). But a /64 is a link's prefix, not a host's:
# SLAAC gives every host of a LAN an address in the same /64 (and every link-local address is
# in fe80::/64). So every host of the scraper's LAN is "the scraper's own address" to the
# server: breaker2's client that keeps every place answering (one request ahead, each answer
# read within its deadline) locks a scraper of another host of its LAN out for
# request_timeout, where a scraper of another IPv4 address is answered at once
# (test_breaker2_findings.py::test_connections_kept_answering_large_answers_give_way_to_a_
# scraper[another-client]), and renewing its connections, for ever (docs/security.md limits
# that to the same host or NAT).
# breaker4 finding 6, fixed: places are shared per IP address, not per IPv6 /64.
def test_another_host_of_the_scrapers_ipv6_lan_does_not_lock_it_out(
        shm_path: str, lan_hosts: tuple[str, str]) -> None:
    scraper, hostile = lan_hosts
    places, timeout, elements = 2, 30.0, 32768  # an answer of ~2.6 MB
    with seqshm.create(shm_path, "<f8", elements) as w:
        w.write(np.arange(float(elements)))
        collector = export.SeqshmCollector([shm_path])
        server = export.MetricsServer("::", 0, export.registry_of(collector),
                                      max_connections=places, request_timeout=timeout,
                                      idle_timeout=60.0)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        stop = threading.Event()
        flood: list[threading.Thread] = []
        try:
            port = server.server_port

            def scrape(source: str) -> bytes:
                return _get_closing(port, source, host=_LAN_HOSTS[0])

            size = len(scrape(scraper))
            flood = [threading.Thread(target=_keep_answering_from,
                                      args=(hostile, port, size, size / (0.5 * timeout), stop),
                                      daemon=True) for _ in range(places)]
            for t in flood:
                t.start()
            time.sleep(1.0)  # every place taken
            answered = False
            end = time.monotonic() + 6.0
            while time.monotonic() < end and not answered:
                try:
                    answered = scrape(scraper).startswith(b"HTTP/1.1 200")
                except OSError:
                    pass
                time.sleep(0.1)
        finally:
            stop.set()
            server.shutdown()
            server.server_close()
            for t in flood:
                t.join(10)
            thread.join(10)
            collector.close()
    assert answered, (f"no scrape from {scraper} answered in 6 s while {hostile}, another "
                      f"host of its /64, kept {places} connections answering")


# breaker4 finding 7: --max-series (and the ~1 KB a series a scrape's template costs, which
# docs/security.md budgets with it: "10 channels of 99,999 series: 431 MB peak") counts data
# series only. Every channel also has its ~9 state series (up, state x 6, writes, ...), and
# a Reader, a label block and a template's share of its own, however many channels there
# are: any local user can add channels at no cost by hard-linking one file of its own under
# many names in /dev/shm (20,000 links in 0.09 s, no memory), each a channel of its own to
# a glob (or to the default selection, every channel). A closed channel's links give no data
# series at all, so nothing bounds them: `export --once` over 2,000 such links took 1.3 s and
# 90 MB, over 20,000 12 s and 529 MB, over 50,000 35 s and 847 MB (500,010 lines): the
# scrape passes Prometheus's 10 s scrape_timeout and every channel, trusted ones too, is lost.
# breaker4 finding 7, fixed: each channel's own series count in --max-series; channels past
# it are not opened (seqshm_export_channels_unread{reason="max-series"}).
def test_another_users_hard_links_do_not_grow_the_scrape_past_max_series(
        shm_name: str, other_user: Any) -> None:
    import os

    from channel_dir import SHM_DIR
    from test_breaker2_findings import peak_rss_mib

    links = 3_000
    base = os.path.join(SHM_DIR, f"{shm_name}-base")
    good = os.path.join(SHM_DIR, f"{shm_name}-good")
    names = [base, *(f"{base}{i}" for i in range(links))]

    def make_links() -> None:
        with seqshm.create(base, "<f8", 1, name="base") as w:
            w.write(np.ones(1))
        for name in names[1:]:
            os.link(base, name)

    try:
        other_user.run(make_links)
        with seqshm.create(good, "<f8", 1, name="good") as w:
            w.write(np.full(1, 7.0))
            done, rss = peak_rss_mib(["export", "--once", "--max-series", "1000",
                                      f"{shm_name}-*"])
    finally:
        for p in [*names, good, *(os.path.join(SHM_DIR, f".{os.path.basename(p)}.waiters")
                                  for p in (base, good))]:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
    series = parse(done.stdout)
    assert pick(series, "seqshm_good", channel=good), done.stderr.decode()[-500:]
    theirs = [k for k in series if dict(k[1]).get("channel", "").startswith(base)]
    assert len(theirs) <= 1000, (
        f"--max-series 1000, and another user's {links} hard links to one closed channel "
        f"gave {len(theirs)} series (peak RSS {rss} MiB)")
