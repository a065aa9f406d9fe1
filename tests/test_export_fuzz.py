"""A fuzzer over seqshm export's request path (Hypothesis): malformed request lines, headers,
Content-Length and chunked bodies, sent whole or in pieces, on one connection. Whatever is
sent, the server answers only well-framed HTTP/1.1 with a status it means, closes or keeps the
connection within its deadline, logs no failure of its own, and goes on serving; a body never
gets an answer of its own (issue 17).

Bounded in CI (FUZZ_EXAMPLES per test, ~30 s in all); a longer campaign:
``SEQSHM_FUZZ_EXAMPLES=20000 flock /tmp/seqshm-heavy.lock python -m pytest
tests/test_export_fuzz.py``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator

import h11
import numpy as np
import pytest
from exporting import CLIENT_WAIT_S, connect, read_to_end, responses, server_of
from hypothesis import given, settings
from hypothesis import strategies as st

import seqshm
from seqshm import export

FUZZ_EXAMPLES = int(os.environ.get("SEQSHM_FUZZ_EXAMPLES", "300"))
#: The statuses the server means to send (h11 chooses the 4xx and 501 of bad framing): any
#: other, 500 above all (a bug), fails.
STATUSES = {200, 400, 401, 405, 413, 431, 501}  # 501: an unknown transfer coding
REQUEST_TIMEOUT_S = 0.5
#: Examples run, by test, for the closing note of a long campaign.
RUNS: dict[str, int] = {}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[export.MetricsServer]:
    """seqshm export's server of one channel, for the whole module (a short request deadline,
    so that requests left incomplete end fast)."""
    path = os.path.join("/dev/shm" if os.access("/dev/shm", os.W_OK)
                        else str(tmp_path_factory.mktemp("shm")),
                        f"seqshm-test-{os.getpid()}-fuzz")
    with seqshm.create(path, np.float64, 4, name="fuzz") as w:
        w.write(np.arange(4.0))
        collector = export.SeqshmCollector([path])
        with server_of(export.registry_of(collector), request_timeout=REQUEST_TIMEOUT_S,
                       idle_timeout=REQUEST_TIMEOUT_S) as server:
            yield server
        collector.close()
        w.close(unlink=True)


@pytest.fixture(scope="module", autouse=True)
def campaign_note() -> Iterator[None]:
    yield
    if FUZZ_EXAMPLES > 300:
        print(f"\nfuzz campaign: {RUNS} examples run")


# -- what a client sends ------------------------------------------------------------------------

# (no HEAD: its answer's framing depends on a method the fuzzer may have garbled)
TOKENS = st.sampled_from([b"GET", b"POST", b"PUT", b"OPTIONS", b"CONNECT", b"get",
                          b"G\x00T", b"", b"GET GET", b"\xff\xfe", b"PRI"])
TARGETS = st.one_of(
    st.sampled_from([b"/metrics", b"/", b"*", b"/metrics?name[]=seqshm_channel_up",
                     b"/metrics?name[]=%ff", b"http://x/metrics", b"//", b"/\x00", b""]),
    st.binary(max_size=40))
VERSIONS = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.1 ",
                            b"http/1.1", b"HTTP/1", b"", b"HTTP/1.1\x00"])
EOLS = st.sampled_from([b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r"])
HEADER_NAMES = st.one_of(
    st.sampled_from([b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection",
                     b"Expect", b"Accept", b"Accept-Encoding", b"Authorization", b"X y",
                     b"", b":", b"Content-Length ", b" Host"]),
    st.binary(min_size=1, max_size=12))
HEADER_VALUES = st.one_of(
    st.sampled_from([b"x", b"0", b"5", b"-1", b"99999999999999999999", b"5, 5", b"0x10",
                     b"chunked", b"gzip, chunked", b"chunked, gzip", b"identity", b"close",
                     b"keep-alive", b"100-continue", b"application/openmetrics-text",
                     b"application/openmetrics-text; version=abc",
                     b"application/openmetrics-text; version=1.0.0; escaping=x",
                     b"text/plain; version=0.0.4; q=x", b"*/*;q=0.1",
                     b"gzip", b"Basic Zm9vOmJhcg==", b" ", b"\x00", b"a\rb", b"a\nb"]),
    st.binary(max_size=30))


@st.composite
def raw_request(draw: st.DrawFn) -> bytes:
    """A request that may be malformed anywhere: its line, headers, framing and body."""
    eol = draw(EOLS) if draw(st.integers(0, 3)) == 0 else b"\r\n"
    line = b" ".join([draw(TOKENS), draw(TARGETS), draw(VERSIONS)])
    headers = draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6))
    if draw(st.booleans()):
        headers.insert(0, (b"Host", b"x"))
    head = line + eol + b"".join(n + b": " + v + eol for n, v in headers) + eol
    return head + draw(st.one_of(st.just(b""), st.binary(max_size=64), chunked_body()))


@st.composite
def chunked_body(draw: st.DrawFn) -> bytes:
    """A chunked body, possibly with bad sizes, extensions, trailers."""
    out = b""
    for data in draw(st.lists(st.binary(max_size=20), max_size=4)):
        size = draw(st.sampled_from([b"%x" % len(data), b"%X" % len(data), b"%x;ext=1" % len(data),
                                     b"zz", b"-1", b"%x" % (len(data) + 1), b"ffffffffffffffff"]))
        out += size + b"\r\n" + data + b"\r\n"
    return out + draw(st.sampled_from([b"0\r\n\r\n", b"0\r\nX-T: 1\r\n\r\n", b"0\r\n", b""]))


@st.composite
def well_framed_request(draw: st.DrawFn) -> tuple[bytes, int]:
    """A valid request whose body (Content-Length or chunked) may hold anything, requests
    included, and the status it must get."""
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT"]))
    body = draw(st.one_of(
        st.just(b""), st.binary(max_size=200),
        st.just(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        st.just(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")))
    if draw(st.booleans()) and body:
        chunks = [body[i:i + 7] for i in range(0, len(body), 7)]
        framed = (b"Transfer-Encoding: chunked\r\n\r\n"
                  + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n")
    else:
        framed = b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    return (method + b" /metrics HTTP/1.1\r\nHost: x\r\n" + framed,
            200 if method == b"GET" else 405)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


def exchange(server: export.MetricsServer, parts: list[bytes]) -> bytes:
    """Send ``parts`` on a new connection (a short pause between them), then end the sending
    side; what the server sends back until it closes (within CLIENT_WAIT_S, or a hang)."""
    with connect(server) as sock:
        try:
            for i, part in enumerate(parts):
                if i:
                    time.sleep(0.001)
                sock.sendall(part)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server closed it already (a request it refused)
        t0 = time.monotonic()
        data = read_to_end(sock)
        assert time.monotonic() - t0 < CLIENT_WAIT_S
        return data


def still_serving(server: export.MetricsServer) -> None:
    data = exchange(server, [b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"])
    assert [s for s, _ in responses(data)] == [200]


@pytest.fixture
def no_server_failures(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    yield
    failures = [r.getMessage() for r in caplog.records
                if r.name == "seqshm.export" and r.levelno >= logging.ERROR]
    assert not failures


@settings(max_examples=FUZZ_EXAMPLES)
@given(requests=st.lists(raw_request(), min_size=1, max_size=3),
       cuts=st.lists(st.integers(0, 10_000), max_size=4))
def test_whatever_a_client_sends_gets_well_framed_answers_and_the_server_goes_on(
        served: export.MetricsServer, no_server_failures: None, requests: list[bytes],
        cuts: list[int]) -> None:
    RUNS["raw"] = RUNS.get("raw", 0) + 1
    data = exchange(served, pieces(b"".join(requests), cuts))
    try:
        answers = [status for status, _ in responses(data)]
    except h11.RemoteProtocolError as e:
        raise AssertionError(f"the server's answer is not well-framed HTTP/1.1: {data!r}"
                             ) from e
    assert set(answers) <= STATUSES, answers
    # an error answer (bytes that are no request) closes the connection: it comes last
    errors = [i for i, s in enumerate(answers) if s >= 400 and s not in (401, 405)]
    assert errors in ([], [len(answers) - 1]), answers
    # and the requests answered are at most those sent (trailing bytes may make one more, bad)
    assert len(answers) - len(errors) <= len(requests), answers
    still_serving(served)


@settings(max_examples=FUZZ_EXAMPLES)
@given(requests=st.lists(well_framed_request(), min_size=1, max_size=4),
       cuts=st.lists(st.integers(0, 10_000), max_size=4))
def test_well_framed_requests_get_one_answer_each_whatever_their_bodies_hold(
        served: export.MetricsServer, no_server_failures: None,
        requests: list[tuple[bytes, int]], cuts: list[int]) -> None:
    RUNS["framed"] = RUNS.get("framed", 0) + 1
    sent = b"".join(r for r, _ in requests)
    answers = responses(exchange(served, pieces(sent, cuts)))
    assert [s for s, _ in answers] == [status for _, status in requests]
    assert all(b"seqshm_channel_up" in body for (s, body) in answers if s == 200)
