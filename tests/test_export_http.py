"""seqshm export's HTTP server as Prometheus uses it: HTTP/1.1 keep-alive (one kept connection
per scraper), and clients that idle, stall mid-request, say close, speak HTTP/1.0 or flood it
never hold back another client's scrapes."""

from __future__ import annotations

import gzip
import http.client
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from exporting import (
    CLIENT_WAIT_S,
    KeptConnection,
    closed_by_server,
    connect,
    read_to_end,
    responses,
    server_of,
)
from prometheus_client import CollectorRegistry, Gauge

import seqshm
from seqshm import export
from seqshm._cpustat import CPUSTAT_DTYPE


@pytest.fixture
def cpustat(shm_path: str) -> Iterator[str]:
    """A 2-CPU cpustat channel, written once."""
    rec = np.zeros(2, CPUSTAT_DTYPE)
    rec["idle_ns"] = 10**15
    rec["online"] = 1
    with seqshm.create(shm_path, CPUSTAT_DTYPE, 2, name="cpustat") as w:
        w.write(rec)
        yield shm_path


@pytest.fixture
def server(cpustat: str) -> Iterator[export.MetricsServer]:
    collector = export.SeqshmCollector([cpustat])
    with server_of(export.registry_of(collector)) as s:
        yield s
    collector.close()


def url_of(server: export.MetricsServer) -> str:
    return f"http://127.0.0.1:{server.server_port}/metrics"


def test_scrapes_go_over_one_kept_connection(server: export.MetricsServer) -> None:
    kept = KeptConnection(url_of(server), timeout=CLIENT_WAIT_S)
    try:
        for _ in range(3):
            assert b'node_cpu_seconds_total{cpu="1",mode="idle"} 1e+06' in kept.get()
    finally:
        kept.close()


def test_an_idle_kept_connection_does_not_hold_back_another_clients_scrapes(
    server: export.MetricsServer,
) -> None:
    idle = KeptConnection(url_of(server), timeout=CLIENT_WAIT_S)
    silent = connect(server)  # connected, says nothing
    other = KeptConnection(url_of(server), timeout=CLIENT_WAIT_S)
    try:
        idle.get()  # then idles on its kept connection
        for _ in range(3):
            assert b"node_cpu_seconds_total" in other.get()
        assert b"node_cpu_seconds_total" in idle.get()  # and is still served after
    finally:
        idle.close()
        other.close()
        silent.close()


def test_a_client_that_stalls_mid_request_does_not_hold_back_others(
    server: export.MetricsServer,
) -> None:
    stalled = connect(server)
    stalled.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # no end of headers, ever
    other = KeptConnection(url_of(server), timeout=CLIENT_WAIT_S)
    try:
        for _ in range(3):
            assert b"node_cpu_seconds_total" in other.get()
    finally:
        other.close()
        stalled.close()


def test_a_client_that_stalls_mid_request_is_cut_off_after_the_request_timeout(
    cpustat: str,
) -> None:
    with server_of(export.SeqshmCollector([cpustat]), request_timeout=0.2) as server:
        with connect(server) as stalled:
            stalled.sendall(b"GET /metrics HTTP/1.1\r\n")
            assert closed_by_server(stalled)


def test_an_idle_kept_connection_is_closed_after_the_idle_timeout(cpustat: str) -> None:
    with server_of(export.SeqshmCollector([cpustat]), idle_timeout=0.2) as server:
        with connect(server) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while b"# EOF" not in answer and b"seqshm_channel_up" not in answer:
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
            assert b"Connection: close" not in answer
            rest = read_to_end(sock)  # ends when the server closes the idle connection
            head, _, body = (answer + rest).partition(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
            )
            assert len(body) == length


def test_connection_close_is_honoured_and_said(server: export.MetricsServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        head, _, body = read_to_end(sock).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"\r\nConnection: close" in head
        assert b"node_cpu_seconds_total" in body


def test_an_http_1_0_client_gets_its_answer_and_the_connection_closed(
    server: export.MetricsServer,
) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        head, _, body = read_to_end(sock).partition(b"\r\n\r\n")
        assert head.split(b" ")[1] == b"200" and b"\r\nConnection: close" in head
        assert f"Content-Length: {len(body)}".encode() in head
        assert b'node_cpu_seconds_total{cpu="0",mode="idle"} 1e+06' in body


def test_every_answer_on_a_kept_connection_says_its_length(server: export.MetricsServer) -> None:
    """HEAD, gzip, a subset of the families (?name[]=, rendered by the library) and the plain
    text over one connection: each answer delimited by Content-Length, the connection kept."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=CLIENT_WAIT_S)
    try:
        conn.request("HEAD", "/metrics")
        head = conn.getresponse()
        assert head.read() == b"" and int(head.headers["Content-Length"]) > 0
        kept = conn.sock
        conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        resp = conn.getresponse()
        assert resp.headers["Content-Encoding"] == "gzip"
        assert b"node_cpu_seconds_total" in gzip.decompress(resp.read())
        conn.request("GET", "/metrics?name[]=seqshm_channel_up")
        resp = conn.getresponse()
        assert b"seqshm_channel_up" in resp.read() and not resp.will_close
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read()
        assert int(resp.headers["Content-Length"]) == len(body) and not resp.will_close
        assert b"node_cpu_seconds_total" in body
        assert conn.sock is kept  # never reconnected
    finally:
        conn.close()


def test_a_registry_with_other_collectors_is_served_over_a_kept_connection(
    cpustat: str,
) -> None:
    """The library's own rendering (a registry with more than seqshm's collector), which sends
    no Content-Length in prometheus_client's handler: here it is said, and the connection
    kept."""
    registry = CollectorRegistry()
    registry.register(export.SeqshmCollector([cpustat]))
    Gauge("app_temperature", "a gauge of the application", registry=registry).set(3)
    with server_of(registry) as server:
        kept = KeptConnection(url_of(server), timeout=CLIENT_WAIT_S)
        try:
            for _ in range(2):
                body = kept.get()
                assert b"app_temperature 3.0" in body and b"node_cpu_seconds_total" in body
        finally:
            kept.close()


def test_an_unsupported_method_is_refused_with_405_and_the_connection_kept(
    server: export.MetricsServer,
) -> None:
    with connect(server) as sock:
        sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                     b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = responses(read_to_end(sock))
    assert [status for status, _ in answers] == [405, 200]


def test_server_close_closes_the_kept_connections(cpustat: str) -> None:
    collector = export.SeqshmCollector([cpustat])
    with server_of(collector) as server:
        kept = KeptConnection(url_of(server), timeout=CLIENT_WAIT_S)
        kept.get()
        sock = kept.conn.sock
    try:
        assert sock is not None and closed_by_server(sock)
    finally:
        kept.close()


def _answered_and_waiting(server: Any, n: int) -> None:
    """Until ``n`` connections have been answered and wait for their client's next request:
    the server marks a connection idle (and since when) just after the client has read its
    answer, so a client's next step could otherwise come first."""
    deadline = time.monotonic() + CLIENT_WAIT_S
    while sum(not c.busy and c.since > c.accepted for c in list(server._connections)) < n:
        assert time.monotonic() < deadline, f"fewer than {n} connections answered and waiting"
        time.sleep(0.005)


def test_when_every_place_is_taken_the_connection_idle_longest_gives_way(
    cpustat: str,
) -> None:
    with server_of(export.SeqshmCollector([cpustat]), max_connections=2) as server:
        first = KeptConnection(url_of(server), timeout=CLIENT_WAIT_S)
        second = KeptConnection(url_of(server), timeout=CLIENT_WAIT_S)
        try:
            first.get()
            _answered_and_waiting(server, 1)
            second.get()  # both idle now, the first for longer
            _answered_and_waiting(server, 2)
            deadline = time.monotonic() + CLIENT_WAIT_S
            while True:  # refused only while both places are still finishing their answers
                with connect(server) as third:
                    third.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                    answer = read_to_end(third)
                if answer or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            assert answer.startswith(b"HTTP/1.1 200")
            assert first.sock is not None and closed_by_server(first.sock)
            assert b"node_cpu_seconds_total" in second.get()  # kept
        finally:
            first.close()
            second.close()


def test_connection_threads_are_reused_and_ended_by_server_close(cpustat: str) -> None:
    """A scraper that opens a connection per scrape does not start a thread per scrape; the
    threads end with the server."""
    with server_of(export.SeqshmCollector([cpustat])) as server:
        name = f"seqshm-export-{server.server_port}-conn"
        for _ in range(10):  # one after another
            with connect(server) as sock:
                sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                assert read_to_end(sock).startswith(b"HTTP/1.1 200")
        threads = [t for t in threading.enumerate() if t.name == name]
        assert 1 <= len(threads) < 10
    for t in threads:
        t.join(CLIENT_WAIT_S)
        assert not t.is_alive()
