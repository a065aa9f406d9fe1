"""``seqshm export --web-config FILE``: TLS and basic auth from the exporter-toolkit file that
node_exporter reads, as a scraper and as a client without credentials see them; a real
Prometheus scraping over TLS with basic auth (issue 17)."""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from exporting import (
    CLIENT_WAIT_S,
    KeptConnection,
    basic_auth,
    client_context,
    closed_by_server,
    connect,
    live_channels,
    node_exporter,
    parse,
    pick,
    prometheus,
    read_to_end,
    seqshm_exporter,
    server_of,
    web_config,
)

from seqshm import export
from seqshm._webconfig import BasicAuth

USERS = {"prometheus": "s3cret pass:word", "other": "another"}


@pytest.fixture
def channel(shm_path: str) -> Iterator[str]:
    with live_channels((shm_path, "tls", [1.5, 2.5])):
        yield shm_path


@pytest.fixture
def config_dir(tmp_path: Path) -> str:
    return str(tmp_path)


@pytest.fixture
def tls_auth_server(channel: str, config_dir: str) -> Iterator[export.MetricsServer]:
    """seqshm export's server of ``channel`` over TLS with basic auth for USERS."""
    config = export.load_web_config(web_config(config_dir, USERS))
    collector = export.SeqshmCollector([channel])
    with server_of(export.registry_of(collector), web_config=config,
                   request_timeout=1.0) as server:
        yield server
    collector.close()


def https(server: export.MetricsServer, config_dir: str) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection("127.0.0.1", server.server_port, timeout=CLIENT_WAIT_S,
                                       context=client_context(config_dir))


def get(conn: http.client.HTTPConnection, headers: dict[str, str] | None = None
        ) -> tuple[int, Any, bytes]:
    conn.request("GET", "/metrics", headers=headers or {})
    resp = conn.getresponse()
    return resp.status, resp.headers, resp.read()


def test_a_scrape_with_the_right_password_is_answered_over_tls_on_a_kept_connection(
        tls_auth_server: export.MetricsServer, config_dir: str, channel: str) -> None:
    url = f"https://127.0.0.1:{tls_auth_server.server_port}/metrics"
    kept = KeptConnection(url, timeout=CLIENT_WAIT_S, context=client_context(config_dir),
                          auth=("prometheus", USERS["prometheus"]))
    try:
        for _ in range(3):
            series = parse(kept.get())
            assert pick(series, "seqshm_channel_up") == {frozenset({("channel", channel)}): 1.0}
        assert isinstance(kept.sock, ssl.SSLSocket)
    finally:
        kept.close()


@pytest.mark.parametrize("authorization", [
    None,
    basic_auth("prometheus", "wrong"),
    basic_auth("nobody", USERS["prometheus"]),
    basic_auth("other", USERS["prometheus"]),  # another user's password
    basic_auth("prometheus", USERS["prometheus"] + "x"),
    basic_auth("prometheus", "x" * 100),  # beyond bcrypt's 72 bytes
    "Basic !!!not-base64",
    "Basic " + "cHJvbWV0aGV1cw==",  # no ':'
    "Bearer " + "token",
])
def test_a_request_without_valid_credentials_gets_401_with_a_challenge(
        tls_auth_server: export.MetricsServer, config_dir: str,
        authorization: str | None) -> None:
    conn = https(tls_auth_server, config_dir)
    try:
        status, headers, body = get(conn, {} if authorization is None
                                    else {"Authorization": authorization})
        assert status == 401
        assert headers["WWW-Authenticate"].startswith('Basic realm="seqshm export"')
        assert b"seqshm_channel" not in body
        # the connection is kept: the same client may then say who it is
        status, _, body = get(conn, {"Authorization": basic_auth("other", USERS["other"])})
        assert status == 200 and b"seqshm_channel_up" in body
    finally:
        conn.close()


def test_a_head_request_without_credentials_gets_401_too(
        tls_auth_server: export.MetricsServer, config_dir: str) -> None:
    conn = https(tls_auth_server, config_dir)
    try:
        conn.request("HEAD", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 401 and resp.read() == b""
    finally:
        conn.close()


def test_plain_http_to_the_tls_port_is_closed_and_tls_clients_still_served(
        tls_auth_server: export.MetricsServer, config_dir: str) -> None:
    with connect(tls_auth_server) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"seqshm_channel" not in read_to_end(sock)
    conn = https(tls_auth_server, config_dir)
    try:
        status, _, _ = get(conn, {"Authorization": basic_auth("other", USERS["other"])})
        assert status == 200
    finally:
        conn.close()


def test_a_tls_handshake_never_finished_is_cut_off_at_the_request_deadline(
        tls_auth_server: export.MetricsServer) -> None:
    """A client that connects and sends half a ClientHello (or nothing) holds its connection
    for the request deadline (1 s here), not for ever."""
    hello_start = bytes.fromhex("160301")  # a TLS record header, then nothing
    with connect(tls_auth_server) as sock:
        sock.sendall(hello_start)
        t0 = time.monotonic()
        assert closed_by_server(sock)
        assert time.monotonic() - t0 < CLIENT_WAIT_S


def test_credentials_are_checked_by_bcrypt_once_then_from_the_cache() -> None:
    import bcrypt

    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4))
    auth = BasicAuth({"u": hashed})
    calls = []
    real = auth._bcrypt

    class Counting:
        @staticmethod
        def checkpw(password: bytes, h: bytes) -> bool:
            calls.append(password)
            return bool(real.checkpw(password, h))

    auth._bcrypt = Counting  # type: ignore[assignment]
    good = basic_auth("u", "pw").encode()
    bad = basic_auth("u", "no").encode()
    assert [auth.check(good) for _ in range(5)] == [True] * 5
    assert [auth.check(bad) for _ in range(5)] == [False] * 5
    assert calls == [b"pw", b"no"]
    # an unknown user costs a bcrypt check too (against a hash of the same cost), so that
    # the time of an answer does not tell which users exist
    assert not auth.check(basic_auth("nobody", "pw").encode())
    assert calls[-1] == b"pw"


def test_the_credentials_cache_is_bounded() -> None:
    import bcrypt

    auth = BasicAuth({"u": bcrypt.hashpw(b"pw", bcrypt.gensalt(4))})
    auth.CACHE_SIZE = 8
    for i in range(20):
        assert not auth.check(basic_auth("u", f"guess{i}").encode())
    assert len(auth._caches[False]) == 8 and not auth._caches[True]


# -- the file ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("tls_server_config: [1]\n", "tls_server_config is a list, not a mapping"),
    ("tls_server_config:\n  cert_file: cert.pem\n", "needs both cert_file and key_file"),
    ("tls_server_config:\n  cert_file: none.pem\n  key_file: none.pem\n",
     "cannot load the certificate"),
    ("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  cipher_suites: [x]\n",
     "cipher_suites is not supported"),
    ("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  min_version: TLS9\n",
     "min_version: 'TLS9' is not one of"),
    ("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"
     "  client_auth_type: RequireAndVerifyClientCert\n", "needs client_ca_file"),
    ("basic_auth_users:\n  u: plaintext\n", "basic_auth_users.u: not a bcrypt hash"),
    ("basic_auth_users:\n  'a:b': $2y$10$" + "a" * 53 + "\n", "is not a user name"),
    ("http_server_config:\n  http2: true\n", "http_server_config.http2 is not supported"),
    ("tls_config: {}\n", "tls_config: no such key"),
    ("[unclosed\n", "not a YAML file"),
])
def test_a_web_config_that_cannot_be_used_is_refused_naming_the_file_and_key(
        config_dir: str, text: str, message: str) -> None:
    web_config(config_dir, tls=True)  # cert.pem and key.pem beside it
    path = os.path.join(config_dir, "bad.yml")
    with open(path, "w") as f:
        f.write(text)
    with pytest.raises(export.WebConfigError, match=message) as info:
        export.load_web_config(path)
    assert str(info.value).startswith(path)


def test_seqshm_export_with_a_bad_web_config_exits_2_saying_why(
        channel: str, config_dir: str) -> None:
    path = os.path.join(config_dir, "web.yml")
    with open(path, "w") as f:
        f.write("basic_auth_users:\n  u: plaintext\n")
    done = subprocess.run([sys.executable, "-m", "seqshm", "export", "--listen", "127.0.0.1:0",
                           "--web-config", path, channel], capture_output=True, text=True,
                          timeout=60, cwd="/")
    assert done.returncode == 2
    assert f"{path}: basic_auth_users.u: not a bcrypt hash" in done.stderr


def test_the_same_web_config_file_serves_node_exporter(config_dir: str) -> None:
    """The file format is exporter-toolkit's: node_exporter takes the very file seqshm export
    takes (so a node_exporter user's file works unchanged)."""
    path = web_config(config_dir, USERS)
    with node_exporter(f"--web.config.file={path}", probe=False) as (_, url):
        url = url.replace("http://", "https://")
        kept = KeptConnection(url, timeout=CLIENT_WAIT_S, context=client_context(config_dir),
                              auth=("prometheus", USERS["prometheus"]))
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert b"node_cpu_seconds_total" in kept.get()
                    break
                except (ConnectionError, ssl.SSLError, OSError):
                    kept.close()
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        finally:
            kept.close()


# -- a real Prometheus ---------------------------------------------------------------------------


def test_prometheus_scrapes_seqshm_export_over_tls_with_basic_auth(
        channel: str, config_dir: str) -> None:
    path = web_config(config_dir, USERS)
    with seqshm_exporter("--web-config", path, channel) as (_, url):
        assert url.startswith("https://")
        cert = os.path.join(config_dir, "cert.pem")
        options = {
            "seqshm": f"    tls_config:\n      ca_file: {cert}\n"
                      f"    basic_auth:\n      username: prometheus\n"
                      f"      password: '{USERS['prometheus']}'\n",
            "noauth": f"    tls_config:\n      ca_file: {cert}\n",
        }
        with prometheus({"seqshm": url, "noauth": url}, job_options=options) as prom:
            up = prom.wait_for(f'seqshm_channel_up{{job="seqshm",channel="{channel}"}}')
            assert up[0]["value"][1] == "1"
            scraped = prom.wait_for('up{job="seqshm"} == 1')
            assert scraped
            # the job without credentials is refused: its target is down, none of its series
            refused = prom.wait_for('up{job="noauth"} == 0')
            assert refused
            assert prom.query('seqshm_channel_up{job="noauth"}') == []


def test_seqshm_export_says_https_and_refuses_plain_scrapes(channel: str,
                                                           config_dir: str) -> None:
    path = web_config(config_dir, USERS)
    with seqshm_exporter("--web-config", path, channel) as (_, url):
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_WAIT_S) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"seqshm_channel" not in read_to_end(sock)
