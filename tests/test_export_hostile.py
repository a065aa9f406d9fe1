"""seqshm export against hostile parties: a network client (idle, dripping, pipelining,
smuggling a request in a body) and a local user who can create files in /dev/shm (names that
are not UTF-8): nothing one of them does denies the others their scrapes (issue 17)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from exporting import (
    CLIENT_WAIT_S,
    KeptConnection,
    closed_by_server,
    collections_during,
    connect,
    live_channels,
    parse,
    pick,
    read_to_end,
    responses,
    seqshm_exporter,
    server_of,
)

import seqshm
from seqshm import _exported, _metrics, cli, export
from seqshm._metrics import ChannelMetrics
from seqshm._reader import Reader
from seqshm.testing import StalledWriter

GET = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def shm_dir(shm_path: str) -> str:
    """Where the test's channels go (/dev/shm, where a bare name's glob looks)."""
    return os.path.dirname(shm_path)


@pytest.fixture
def channel(shm_path: str) -> Iterator[str]:
    """A live channel of two float64 values, written once."""
    with live_channels((shm_path, "hostile", [1.5, 2.5])):
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
def bad_name_channels(shm_dir: str, shm_name: str) -> Iterator[tuple[str, str, str]]:
    """Channels ``<name>-good`` and ``<name>-<byte 0xff>`` (any local user can make the second
    in /dev/shm), and the glob of both."""
    good = os.path.join(shm_dir, f"{shm_name}-good")
    bad = os.fsdecode(os.path.join(shm_dir, f"{shm_name}-").encode() + b"\xff")
    with live_channels((good, "good", [7.0]), (bad, "bad", [8.0])):
        yield good, bad, f"{shm_name}-*"


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


@pytest.mark.parametrize("accept", [
    "application/openmetrics-text; version=abc",  # the library's parse raised TypeError
    "application/openmetrics-text; version=1.0.0; escaping=nonsense",
    "text/plain; version=x; q=y",
])
def test_a_malformed_accept_header_gets_an_answer_not_a_closed_connection(
        server: export.MetricsServer, accept: str) -> None:
    with connect(server) as sock:
        sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n"
                     "Connection: close\r\n\r\n".encode())
        answers = responses(read_to_end(sock))
    assert [status for status, _ in answers] == [200]
    assert b"seqshm_channel_up" in answers[0][1]


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


# -- one bad channel among others ---------------------------------------------------------------


@pytest.fixture
def two_channels(shm_dir: str, shm_name: str) -> Iterator[tuple[str, str, str]]:
    """Live channels ``<name>-a`` (value 1) and ``<name>-b`` (value 2), and their glob."""
    a, b = (os.path.join(shm_dir, f"{shm_name}-{x}") for x in "ab")
    with live_channels((a, "chan_a", [1.0]), (b, "chan_b", [2.0])):
        yield a, b, f"{shm_name}-*"


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "seqshm.export" and r.levelno >= logging.WARNING]


def test_a_channel_whose_read_fails_unexpectedly_leaves_the_others_and_warns_once(
        two_channels: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    a, b, pattern = two_channels
    real = Reader.read

    def read(self: Reader, *args: Any, **kwargs: Any) -> Any:
        if self.path == b:
            raise RuntimeError("the channel broke mid-scrape")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Reader, "read", read)
    collector = export.SeqshmCollector([pattern])
    for _ in range(3):
        series = parse(export.exposition(export.registry_of(collector)))
        assert set(pick(series, "seqshm_chan_a").values()) == {1.0}
        assert pick(series, "seqshm_chan_b") == {}
    assert len([w for w in warnings_of(caplog) if "broke mid-scrape" in w]) == 1
    collector.close()


def test_a_channel_whose_series_cannot_be_made_leaves_the_others_and_warns_once(
        two_channels: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    a, b, pattern = two_channels
    real = ChannelMetrics._generic_families

    def families(self: ChannelMetrics, ch: Any, reader: Reader, *args: Any) -> Any:
        if reader.path == b:
            raise ValueError("a value that cannot be made a sample")
        return real(self, ch, reader, *args)

    monkeypatch.setattr(ChannelMetrics, "_generic_families", families)
    collector = export.SeqshmCollector([pattern])
    for _ in range(3):
        series = parse(export.exposition(export.registry_of(collector)))
        assert set(pick(series, "seqshm_chan_a").values()) == {1.0}
        # its state is still told: it was read; only its data is left out
        assert pick(series, "seqshm_channel_up", channel=b) == {
            frozenset({("channel", b)}): 1.0}
    assert len([w for w in warnings_of(caplog) if "cannot be made a sample" in w]) == 1
    collector.close()


def test_concurrent_scrapes_share_renders_instead_of_queueing_one_each(
        two_channels: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Scrapes that arrive while another renders take the next render's answer: 8 at once
    cost 2 collections, not 8 (breaker3 saw 16 clients that send a GET and close at once
    push a well-behaved scrape of 198k series from 0.1 s to 2.9 s, each queueing a render)."""
    a, _, pattern = two_channels
    collector = export.SeqshmCollector([pattern])
    results: list[bytes] = []
    calls = collections_during(collector, monkeypatch, 8,
                               lambda: results.append(collector.exposition()))
    collector.close()
    assert len(results) == 8 and all(pick(parse(r), "seqshm_chan_a") for r in results)
    assert calls == 2, f"{calls} collections for 8 concurrent scrapes"


def test_series_that_cannot_be_rendered_are_left_out_and_the_rest_served(
        bad_name_channels: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The net under label_value: were a name that is not UTF-8 to reach the exposition
    unescaped, its channel's series are left out (warned once) and the others served."""
    good, bad, pattern = bad_name_channels
    monkeypatch.setattr(_exported, "label_value", lambda path: path)
    collector = export.SeqshmCollector([pattern])
    for _ in range(3):
        series = parse(export.exposition(export.registry_of(collector)))
        assert pick(series, "seqshm_channel_up") == {frozenset({("channel", good)}): 1.0}
        assert set(pick(series, "seqshm_good").values()) == {7.0}
    dropped = [w for w in warnings_of(caplog) if "left out of the export" in w]
    assert dropped and len(dropped) == len(set(dropped))
    collector.close()


def test_a_stuck_channel_is_warned_about_once_not_at_every_scrape(
        shm_path: str, caplog: pytest.LogCaptureFixture) -> None:
    with StalledWriter(shm_path, 64):
        collector = export.SeqshmCollector([shm_path], timeout=0.01)
        for _ in range(3):
            series = parse(export.exposition(export.registry_of(collector)))
            assert pick(series, "seqshm_channel_up") == {
                frozenset({("channel", shm_path)}): 0.0}
        collector.close()
    assert len(warnings_of(caplog)) == 1


# -- many channels, few descriptors -------------------------------------------------------------

#: A child that exports CHANNELS channels (a glob) under an open-file limit of LIMIT, prints
#: scrapes as JSON: all descriptors free; with every descriptor taken; free again. And a
#: server's answer to a connection made while every descriptor is taken.
_FD_CHILD = r"""
import encodings.idna  # what create_connection imports on first use, before the hog
import json, os, resource, socket, sys, threading, time
limit, pattern = int(sys.argv[1]), sys.argv[2]
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
from prometheus_client.parser import text_string_to_metric_families
from seqshm import export

def scrape(collector):
    text = export.exposition(export.registry_of(collector)).decode()
    up = [s.value for f in text_string_to_metric_families(text) for s in f.samples
          if s.name == "seqshm_channel_up"]
    unread = {s.labels["reason"]: s.value for f in text_string_to_metric_families(text)
              for s in f.samples if s.name == "seqshm_export_channels_unread"}
    return {"up1": up.count(1.0), "up0": up.count(0.0), "unread": unread}

collector = export.SeqshmCollector([pattern])
server = export.MetricsServer("127.0.0.1", 0, export.registry_of(collector), request_timeout=2)
threading.Thread(target=server.serve_forever, daemon=True).start()
out = {"free": scrape(collector)}
hog = []
while True:
    try:
        hog.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        break
out["exhausted"] = scrape(collector)
os.close(hog.pop())  # room for the client's socket alone (a client elsewhere has its own)
client = socket.create_connection(("127.0.0.1", server.server_port), timeout=10)
while True:  # the last descriptors taken again, but for the server's spare one
    try:
        hog.append(os.open(os.devnull, os.O_RDONLY))
    except OSError:
        break
t0 = time.monotonic()
try:
    answer = client.recv(100)  # the server cannot take it in: it closes it
except ConnectionResetError:
    answer = b""
out["closed_while_exhausted"] = answer == b"" and time.monotonic() - t0 < 10
cpu0 = time.process_time()
time.sleep(1)
out["cpu_while_exhausted"] = time.process_time() - cpu0  # no spinning on accept
for fd in hog:
    os.close(fd)
client.close()
out["again"] = scrape(collector)
with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as c:
    c.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
    out["served_again"] = c.recv(12) == b"HTTP/1.1 200"
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def many_channels(tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[tuple[list[str], str]]:
    """1000 live channels in a directory of their own (their writers in this process: a
    descriptor each; ~9 s to make), and the glob of their paths."""
    count = 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < count + 200:
        pytest.skip(f"needs an open-file limit of {count + 200} (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, count + 200), hard))
    directory = tmp_path_factory.mktemp("many")
    writers = []
    try:
        for i in range(count):
            w = seqshm.create(os.path.join(directory, f"many-{i}"), np.float64, 1,
                              name=f"many{i}")
            writers.append(w)
            w.write(np.array([float(i)]))
        yield [w.path for w in writers], os.path.join(directory, "many-*")
    finally:
        for w in writers:
            w.close(unlink=True)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_thousands_of_channels_under_a_low_open_file_limit_are_all_exported(
        many_channels: tuple[list[str], str]) -> None:
    """1000 channels, an open-file limit of 256: seqshm export --once reads every one (those
    beyond what it can keep open are opened and closed), every live writer up."""
    paths, pattern = many_channels
    done = subprocess.run(
        [sys.executable, "-c", "import resource, runpy, sys; "
         "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)); "
         "sys.argv = ['seqshm', 'export', '--once', sys.argv[1]]; "
         "runpy.run_module('seqshm', run_name='__main__')", pattern],
        capture_output=True, timeout=300, cwd="/")
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    up = pick(parse(done.stdout), "seqshm_channel_up")
    assert len(up) == len(paths) and set(up.values()) == {1.0}


def test_out_of_descriptors_channels_are_unread_not_down_and_the_server_still_listens(
        many_channels: tuple[list[str], str]) -> None:
    paths, pattern = many_channels
    done = subprocess.run([sys.executable, "-c", _FD_CHILD, "256", pattern],
                          capture_output=True, text=True, timeout=300, cwd="/")
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    kept = 256 - _metrics.FD_RESERVE  # readers kept open between scrapes
    assert out["free"] == {"up1": len(paths), "up0": 0, "unread": {}}
    # every descriptor taken: the channels kept open are read, the others counted unread,
    # none reported down
    assert out["exhausted"] == {"up1": kept, "up0": 0,
                                "unread": {"EMFILE": float(len(paths) - kept)}}
    assert out["closed_while_exhausted"]
    assert out["cpu_while_exhausted"] < 0.5
    assert out["again"] == out["free"]
    assert out["served_again"]
    assert "not read at this scrape (EMFILE)" in done.stderr
    assert done.stderr.count("out of file descriptors") == 2  # once each: channels, accept


def test_a_channel_of_more_series_than_a_channel_may_have_gives_its_state_only(
        shm_dir: str, shm_name: str, two_channels: tuple[str, str, str],
        caplog: pytest.LogCaptureFixture) -> None:
    """A channel of 200,000 elements (anyone can make one in /dev/shm) would be 200,000 series
    at every scrape: its data is left out with a warning, once; its writer is still up; the
    others are served; summed over its dimension, it is one series."""
    a, _, pattern = two_channels
    huge = os.path.join(shm_dir, f"{shm_name}-huge")
    with seqshm.create(huge, np.float64, 200_000, name="huge") as w:
        w.write(np.ones(200_000))
        try:
            collector = export.SeqshmCollector([pattern])
            for _ in range(3):
                series = parse(export.exposition(export.registry_of(collector)))
                assert pick(series, "seqshm_huge") == {}
                assert pick(series, "seqshm_channel_up", channel=huge) == {
                    frozenset({("channel", huge)}): 1.0}
                assert set(pick(series, "seqshm_chan_a").values()) == {1.0}
            collector.close()
            assert len([m for m in warnings_of(caplog) if "200000 series" in m]) == 1
            summed = export.SeqshmCollector([huge], sum_over=["dim0"])
            series = parse(export.exposition(export.registry_of(summed)))
            assert set(pick(series, "seqshm_huge").values()) == {200_000.0}
            summed.close()
        finally:
            w.close(unlink=True)


def test_export_once_prints_what_it_read_and_exits_1_naming_the_channels_it_could_not(
        two_channels: tuple[str, str, str], monkeypatch: pytest.MonkeyPatch,
        capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    """Out of descriptors for one channel: the others are printed, that one is neither shown
    down nor silently dropped: exit status 1 and a report."""
    a, b, pattern = two_channels
    real = _exported.Channel.open

    def open_(self: Any) -> Reader:
        if self.path == b:
            raise OSError(errno.EMFILE, "Too many open files", self.path)
        return real(self)

    monkeypatch.setattr(_exported.Channel, "open", open_)
    assert cli.main(["export", "--once", pattern]) == 1
    out, err = capsysbinary.readouterr()
    series = parse(out)
    assert pick(series, "seqshm_channel_up") == {frozenset({("channel", a)}): 1.0}
    assert pick(series, "seqshm_export_channels_unread") == {
        frozenset({("reason", "EMFILE")}): 1.0}
    assert b"1 channel could not be read (EMFILE)" in err
