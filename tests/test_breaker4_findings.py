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
from exporting import parse, pick, responses, server_of

import seqshm
from seqshm import _server, export


def _scrape_closing(port: int, extra: bytes = b"", source: str = "127.0.0.1",
                    timeout: float = 20) -> bytes:
    """One GET on a new connection (Connection: close) from ``source``: what the server
    sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                  source_address=(source, 0)) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra
                  + b"\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data


def _concurrent_collections(shm_path: str, monkeypatch: pytest.MonkeyPatch, target: bytes,
                            extra: bytes = b"", clients: int = 8, elements: int = 2_000
                            ) -> tuple[int, list[bytes]]:
    """``clients`` concurrent GETs of ``target`` (with header lines ``extra``) to a server
    of one channel, the first collection slowed by 1 s so that the others arrive during it:
    the collections made, and the answers."""
    with seqshm.create(shm_path, "<f8", elements) as w:
        w.write(np.arange(float(elements)))
        collector = export.SeqshmCollector([shm_path])
        calls: list[int] = []
        first_in = threading.Event()
        real_collect = collector.metrics.collect

        def slow_collect() -> Any:
            calls.append(1)
            if len(calls) == 1:
                first_in.set()
                time.sleep(1.0)
            return real_collect()

        monkeypatch.setattr(collector.metrics, "collect", slow_collect)
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

            first = threading.Thread(target=scrape)
            first.start()
            assert first_in.wait(10)
            others = [threading.Thread(target=scrape) for _ in range(clients - 1)]
            for t in others:
                t.start()
            for t in [first, *others]:
                t.join(20)
        collector.close()
    return len(calls), answers


# breaker4 finding 1: the kind of breaker3's "each request queues a render" (fixed by
# SeqshmCollector.exposition sharing renders) has another member: gzip. Prometheus asks for
# gzip at every scrape (Accept-Encoding: gzip), and the server compresses the shared
# render's text anew for each request, at zlib's level 9: a 200,000-series exposition
# (12 MB) costs ~0.44 s of CPU to compress on this host, four times its render (~0.1 s). So
# N concurrent gzip scrapes (or N clients sending a gzip GET and closing at once, whose
# answers are compressed all the same) still cost N times that CPU, though they share two
# renders.
@pytest.mark.xfail(strict=True, reason="breaker4 finding 1: concurrent gzip scrapes share "
                   "the render but each compresses the whole exposition again (level 9, "
                   "~4x the render's CPU): N scrapes cost N compressions, not two")
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
@pytest.mark.xfail(strict=True, reason="breaker4 finding 2: GET /metrics?name[]=... "
                   "bypasses the shared renders: each such request is a full collection "
                   "of every channel (N concurrent ones cost N, breaker3's kind again)")
def test_filtered_scrapes_share_collections_too(shm_path: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls, answers = _concurrent_collections(
        shm_path, monkeypatch, b"/metrics?name[]=seqshm_channel_up")
    assert len(answers) == 8
    for data in answers:
        [(status, body)] = responses(data)
        assert status == 200 and pick(parse(body), "seqshm_channel_up")
    assert calls <= 2, f"{calls} collections for 8 concurrent filtered scrapes"
