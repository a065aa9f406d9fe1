"""seqshm export against hostile parties: a network client (idle, dripping, pipelining,
smuggling a request in a body) and a local user who can create files in /dev/shm (names that
are not UTF-8): nothing one of them does denies the others their scrapes (issue 17)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import SHM_DIR
from exporting import (
    CLIENT_WAIT_S,
    KeptConnection,
    closed_by_server,
    connect,
    parse,
    pick,
    read_to_end,
    responses,
    seqshm_exporter,
    server_of,
)

import seqshm
from seqshm import export

GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def channel(shm_path: str) -> Iterator[str]:
    """A live channel of two float64 values, written once."""
    with seqshm.create(shm_path, np.float64, 2, name="hostile") as w:
        w.write(np.array([1.5, 2.5]))
        yield shm_path


@pytest.fixture
def server(channel: str) -> Iterator[export.MetricsServer]:
    """seqshm export's server of ``channel`` with its default limits (64 connections) and
    a request deadline of 1 s (5 s by default)."""
    collector = export.SeqshmCollector([channel])
    with server_of(export.registry_of(collector), request_timeout=1.0,
                   idle_timeout=300.0) as s:
        yield s
    collector.close()


def scrape_once(server: export.MetricsServer) -> bytes:
    """One scrape over a new connection, its whole answer."""
    with connect(server) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return read_to_end(sock)


# -- a channel name that is not UTF-8 ------------------------------------------------------------


@pytest.fixture
def bad_name_channels(shm_name: str) -> Iterator[tuple[str, str, str]]:
    """Channels ``<name>-good`` and ``<name>-<byte 0xff>`` (any local user can make the second
    in /dev/shm), and the glob of both."""
    good = os.path.join(SHM_DIR, f"{shm_name}-good")
    bad = os.fsdecode(os.path.join(SHM_DIR, f"{shm_name}-").encode() + b"\xff")
    with seqshm.create(good, np.float64, 1, name="good") as wg, \
            seqshm.create(bad, np.float64, 1, name="bad") as wb:
        wg.write(np.array([7.0]))
        wb.write(np.array([8.0]))
        try:
            yield good, bad, f"{shm_name}-*"
        finally:
            wg.close(unlink=True)
            wb.close(unlink=True)


def test_a_channel_name_not_utf8_does_not_take_the_others_down_in_export_once(
        bad_name_channels: tuple[str, str, str]) -> None:
    good, bad, pattern = bad_name_channels
    done = subprocess.run([sys.executable, "-m", "seqshm", "export", "--once", pattern],
                          capture_output=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    series = parse(done.stdout)
    assert pick(series, "seqshm_channel_up", channel=good) == {
        frozenset({("channel", good)}): 1.0}
    # the bad name is served too, its byte escaped as \xff: a stable label value
    shown = bad.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    assert shown.endswith("-\\xff")
    assert pick(series, "seqshm_channel_up", channel=shown) == {
        frozenset({("channel", shown)}): 1.0}
    assert set(pick(series, "seqshm_good").values()) == {7.0}
    assert set(pick(series, "seqshm_bad").values()) == {8.0}
    assert b"Traceback" not in done.stderr


def test_a_channel_name_not_utf8_does_not_take_the_others_down_in_the_server(
        bad_name_channels: tuple[str, str, str]) -> None:
    good, _, pattern = bad_name_channels
    with seqshm_exporter(pattern) as (_, url):
        kept = KeptConnection(url, timeout=CLIENT_WAIT_S)
        try:
            for _ in range(2):
                series = parse(kept.get())
                assert set(pick(series, "seqshm_channel_up").values()) == {1.0}
                assert len(pick(series, "seqshm_channel_up")) == 2
                assert set(pick(series, "seqshm_good").values()) == {7.0}
        finally:
            kept.close()


# -- connections that idle, drip, or pipeline ----------------------------------------------------


def test_64_idle_connections_do_not_lock_scrapers_out(server: export.MetricsServer) -> None:
    """Connections that say nothing hold every place (64): a scraper's new connection is
    still answered (the oldest connection gives way to it), and so is the one after."""
    idle = [connect(server) for _ in range(export.MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # accepted, each in its thread
        for _ in range(2):
            head, _, body = scrape_once(server).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            assert b"seqshm_channel_up" in body
    finally:
        for sock in idle:
            sock.close()


def test_a_new_connection_that_sends_nothing_is_closed_after_the_request_deadline(
        server: export.MetricsServer) -> None:
    """Its first request has the request deadline (1 s here), not the idle timeout (300 s)."""
    with connect(server) as sock:
        t0 = time.monotonic()
        assert closed_by_server(sock)
        assert time.monotonic() - t0 < 30  # not the idle timeout; the bound is for a hang


def test_a_dripped_request_is_cut_off_at_the_request_deadline(
        server: export.MetricsServer) -> None:
    """One byte every 0.2 s never lets a recv time out: the deadline is the request's (1 s
    here), so the server closes the connection long before the request is complete."""
    request = b"GET /metrics HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n\r\n"
    with connect(server) as sock:
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for byte in request[:-2]:  # never the end of it
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.2)
        assert sent < len(request) - 2, "the server waited for the whole dripped request"
        assert closed_by_server(sock)


def test_a_dripped_request_on_a_kept_connection_is_cut_off_too(
        server: export.MetricsServer) -> None:
    with connect(server) as sock:
        sock.sendall(GET)
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200")
        time.sleep(0.2)
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for byte in GET[:-2]:
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.2)
        assert sent < len(GET) - 2


def test_a_request_body_is_read_and_discarded_not_taken_for_a_request(
        server: export.MetricsServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" + GET
                     + b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = responses(read_to_end(sock))
    assert [status for status, _ in answers] == [200, 200, 200]
    assert all(b"seqshm_channel_up" in body for _, body in answers)


def test_a_body_that_is_itself_a_request_gets_no_answer_of_its_own(
        server: export.MetricsServer) -> None:
    """Request smuggling: a request hidden in a body must not be answered (one answer per
    request), whether the body is delimited by Content-Length or chunked."""
    hidden = b"GET /secret HTTP/1.1\r\nHost: x\r\n\r\n"
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(hidden), hidden)
    with connect(server) as sock:
        sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(hidden), hidden)
                     + b"GET /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + chunked
                     + b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = responses(read_to_end(sock))
    assert [status for status, _ in answers] == [405, 200, 200]


def test_pipelined_requests_get_one_answer_each_in_order(server: export.MetricsServer) -> None:
    with connect(server) as sock:
        sock.sendall(GET + b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n" + GET
                     + b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = responses(read_to_end(sock), ("GET", "HEAD", "GET", "GET"))
    assert [status for status, _ in answers] == [200, 200, 200, 200]
    assert [bool(body) for _, body in answers] == [True, False, True, True]


def test_a_malformed_request_gets_400_and_the_connection_closed(
        server: export.MetricsServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Content-Length: 6\r\n\r\nhello!" + GET)
        answers = responses(read_to_end(sock))
    assert [status for status, _ in answers] == [400]


def test_a_request_with_headers_too_large_gets_431_and_the_connection_closed(
        server: export.MetricsServer) -> None:
    with connect(server) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000
                         + b"\r\n\r\n")
        data = read_to_end(sock)
    assert data.startswith(b"HTTP/1.1 431"), data[:100]


def test_a_client_that_does_not_read_its_answers_is_cut_off(channel: str) -> None:
    """A client that pipelines requests and never reads fills the socket buffers: the server's
    send waits at most the request deadline, then the connection is closed."""
    collector = export.SeqshmCollector([channel])
    with server_of(export.registry_of(collector), request_timeout=0.5) as server:
        sock = connect(server)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            deadline = time.monotonic() + CLIENT_WAIT_S
            sock.settimeout(0.5)
            cut = False
            while not cut and time.monotonic() < deadline:
                try:
                    sock.sendall(GET * 64)
                except TimeoutError:  # its buffers are full: the server stopped reading
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    cut = True
            assert cut, "the server never closed the connection"
            other = scrape_once(server)
            assert other.startswith(b"HTTP/1.1 200")
        finally:
            sock.close()
    collector.close()
