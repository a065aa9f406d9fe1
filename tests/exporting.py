"""Helpers of the export tests and benchmark: a live cpustat channel, and the real programs
(``seqshm export``, Debian's prometheus and prometheus-node-exporter) on free loopback ports."""

from __future__ import annotations

import base64
import contextlib
import http.client
import itertools
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

import seqshm
from seqshm._cpustat import USER_HZ
from seqshm._families import CPU_MODES
from seqshm.cli import _procstat

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]
#: The Debian packages of the programs the tests start, by program name.
PACKAGES = {"prometheus": "prometheus", "promtool": "prometheus",
            "prometheus-node-exporter": "prometheus-node-exporter"}


def binary(name: str) -> str:
    """The path of program ``name``; a test that needs it fails (not skips) without it: CI
    installs it (scripts/test runs apt-get as root)."""
    path = shutil.which(name)
    if path is None:
        import pytest
        pytest.fail(f"{name} is not installed: apt-get install {PACKAGES.get(name, name)} "
                    "(scripts/test installs it when run as root)")
    return path


def parse(text: bytes | str) -> Series:
    """An exposition's samples by (sample name, labels)."""
    if isinstance(text, bytes):
        text = text.decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def pick(series: Series, name: str, **labels: str) -> dict[frozenset[tuple[str, str]], float]:
    """The samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return {lbl: v for (n, lbl), v in series.items() if n == name and want <= lbl}


def by_cpu_mode(samples: dict[frozenset[tuple[str, str]], float]
                ) -> dict[tuple[str, str], float]:
    return {(dict(lbl)["cpu"], dict(lbl)["mode"]): v for lbl, v in samples.items()}


def proc_stat_seconds() -> dict[tuple[str, str], float]:
    """/proc/stat now, as node_exporter reads it: (cpu, mode) -> ticks / USER_HZ."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and not line.startswith("cpu "):
                name, *vals = line.split()
                for mode, v in zip(CPU_MODES, vals, strict=False):
                    out[(name[3:], mode)] = int(v) / USER_HZ
    return out


@contextmanager
def cpustat_publisher(path: str, rate_hz: float = 100.0) -> Iterator[str]:
    """The demo's userspace cpustat channel at ``path``, published by seqshm.cli._procstat in a
    thread at ``rate_hz`` until the block ends (then the channel is removed)."""
    stop = threading.Event()
    t = threading.Thread(target=_procstat.publish_cpustat, args=(path, rate_hz),
                         kwargs={"stop": stop}, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with seqshm.open(path) as r:
                    if r.head > 0:
                        break
            except (FileNotFoundError, seqshm.FormatError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cpustat publisher did not start writing {path}")
            time.sleep(0.01)
        yield path
    finally:
        stop.set()
        t.join(10)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 10, headers: dict[str, str] | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                timeout=timeout) as resp:
        body: bytes = resp.read()
        return body


class KeptConnection:
    """One HTTP/1.1 connection to the server of ``url``, kept for every ``get`` as Prometheus
    keeps one per target; ``get`` fails if the server does not keep it. An https URL goes over
    TLS with ``context``; ``auth``: (user, password) for basic auth."""

    def __init__(self, url: str, timeout: float = 10, context: ssl.SSLContext | None = None,
                 auth: tuple[str, str] | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self.url, self.path = url, parts.path or "/"
        self.conn: http.client.HTTPConnection
        if parts.scheme == "https":
            self.conn = http.client.HTTPSConnection(parts.hostname or "", parts.port,
                                                    timeout=timeout, context=context)
        else:
            self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port,
                                                   timeout=timeout)
        self.headers = {} if auth is None else {"Authorization": basic_auth(*auth)}
        self.sock: socket.socket | None = None

    def get(self, headers: dict[str, str] | None = None) -> bytes:
        self.conn.request("GET", self.path, headers={**self.headers, **(headers or {})})
        resp = self.conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (self.url, resp.status, body[:200])
        assert not resp.will_close, f"{self.url}: the server did not keep the connection"
        # http.client reconnects by itself: the same socket throughout, or it was not kept
        assert self.sock in (None, self.conn.sock), f"{self.url}: a new connection"
        self.sock = self.conn.sock
        return body

    def close(self) -> None:
        self.conn.close()


def basic_auth(user: str, password: str) -> str:
    """An Authorization header's value for basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _wait_http(url: str, proc: subprocess.Popen[Any], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            get(url, timeout=2)
            return
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer {url} within {timeout} s")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@contextmanager
def seqshm_exporter(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``seqshm export --listen 127.0.0.1:0 ARGS`` running, and its metrics URL (from the line
    it prints on stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "seqshm", "export", "--listen",
                             "127.0.0.1:0", *args], stderr=subprocess.PIPE, text=True, cwd="/")
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        if not line.startswith("seqshm: serving "):
            raise RuntimeError(f"seqshm export did not start: {line}{proc.stderr.read()}")
        yield proc, line.split(" at ")[1].split()[0]
    finally:
        _stop(proc)
        if proc.stderr:
            proc.stderr.close()


@contextmanager
def node_exporter(*args: str, probe: bool = True
                  ) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Debian's prometheus-node-exporter with its cpu collector alone (and ``args``), on a free
    loopback port, and its metrics URL (``probe``: once it answers plain HTTP there)."""
    port = free_port()
    proc = subprocess.Popen([binary("prometheus-node-exporter"), "--collector.disable-defaults",
                             "--collector.cpu", f"--web.listen-address=127.0.0.1:{port}",
                             "--log.level=warn", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        if probe:
            _wait_http(url, proc, "prometheus-node-exporter")
        yield proc, url
    finally:
        _stop(proc)


class Prometheus:
    """A Prometheus server of our own, and its HTTP API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result of an instant query: [{"metric": labels, "value": [t, "v"]}, ...]."""
        body = get(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def wait_for(self, promql: str, count: int = 1, timeout: float = 30
                 ) -> list[dict[str, Any]]:
        """The result of ``promql`` once it has at least ``count`` series."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if len(result) >= count:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{promql}: {len(result)} series after {timeout} s, "
                                     f"not {count}")
            time.sleep(0.2)


@contextmanager
def prometheus(targets: dict[str, str], interval: str = "1s",
               job_options: dict[str, str] | None = None) -> Iterator[Prometheus]:
    """Debian's prometheus on a free loopback port with a scrape job per ``targets`` item
    (job name -> metrics URL; an https URL is scraped over TLS), storing in a temporary
    directory removed afterwards; ``job_options``: YAML lines to add to a job (job name ->
    lines indented by 4 spaces: tls_config, basic_auth...)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="seqshm-prometheus-") as tmp:
        jobs = []
        for job, url in targets.items():
            u = urllib.parse.urlsplit(url)
            jobs.append(f"  - job_name: {job}\n    metrics_path: {u.path}\n"
                        f"    scheme: {u.scheme}\n"
                        + (job_options or {}).get(job, "")
                        + f"    static_configs:\n      - targets: ['{u.netloc}']\n")
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write(f"global:\n  scrape_interval: {interval}\n  evaluation_interval: "
                    f"{interval}\nscrape_configs:\n" + "".join(jobs))
        log = open(os.path.join(tmp, "log"), "w+b")  # noqa: SIM115 (read back on failure)
        proc = subprocess.Popen([binary("prometheus"), f"--config.file={config}",
                                 f"--storage.tsdb.path={tmp}/data",
                                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=tmp)
        try:
            url = f"http://127.0.0.1:{port}"
            try:
                _wait_http(f"{url}/-/ready", proc, "prometheus")
            except RuntimeError as e:
                log.seek(0)
                raise RuntimeError(f"{e}: {log.read().decode(errors='replace')}") from None
            yield Prometheus(url)
        finally:
            _stop(proc)
            log.close()


# -- a MetricsServer in the test process, and raw sockets to it ---------------------------------

#: What a test client waits at most for an answer: far less than the server's timeouts in the
#: tests that are not about them (LONG_S), so that a client held back by another fails.
CLIENT_WAIT_S = 10.0
#: The server's timeouts in the tests that are not about them.
LONG_S = 60.0


@contextmanager
def server_of(registry: Any, **options: Any) -> Iterator[Any]:
    """A seqshm.export.MetricsServer of ``registry`` on a free loopback port, serving from a
    thread until the block ends."""
    from seqshm import export
    options = {"idle_timeout": LONG_S, "request_timeout": LONG_S, **options}
    server = export.MetricsServer("127.0.0.1", 0, registry, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(CLIENT_WAIT_S)


def connect(server: Any, timeout: float = CLIENT_WAIT_S) -> socket.socket:
    """A new TCP connection to ``server``."""
    return socket.create_connection(("127.0.0.1", server.server_port), timeout=timeout)


def read_to_end(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def closed_by_server(sock: socket.socket) -> bool:
    """True if the server closes ``sock`` (within its timeout), having sent nothing."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def responses(data: bytes, methods: tuple[str, ...] = ()) -> list[tuple[int, bytes]]:
    """The HTTP/1.1 answers in ``data`` (what a server sent on one connection), as (status,
    body) pairs, parsed by h11 as a client would; ``methods``: the method of each request
    (HEAD's answer has no body). Raises h11.RemoteProtocolError on bad framing."""
    import h11
    out: list[tuple[int, bytes]] = []
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(data)
    conn.receive_data(b"")
    status, body = 0, b""
    for i in itertools.count():
        if conn.trailing_data == (b"", True):  # nothing more was sent
            return out
        conn.send(h11.Request(method=methods[i] if i < len(methods) else "GET",
                              target="/metrics", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Response):
                status, body = event.status_code, b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                out.append((status, body))
                break
            else:  # ConnectionClosed, or NEED_DATA at the end of what was sent
                return out
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return out
        conn.start_next_cycle()
    return out


# -- TLS and basic auth (--web-config) -----------------------------------------------------------


def self_signed(directory: str) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and localhost and its key, written in
    ``directory`` as cert.pem and key.pem (the certificate is its own CA)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "seqshm test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def web_config(directory: str, users: dict[str, str] | None = None, tls: bool = True,
               rounds: int = 4) -> str:
    """An exporter-toolkit web configuration file in ``directory`` (web.yml): TLS with a
    self-signed certificate (cert.pem, key.pem beside it), basic auth for ``users`` (name ->
    password, bcrypt with ``rounds``: 4, the least, keeps the tests fast)."""
    import bcrypt
    lines = []
    if tls:
        self_signed(directory)
        lines += ["tls_server_config:", "  cert_file: cert.pem", "  key_file: key.pem"]
    if users:
        lines.append("basic_auth_users:")
        for name, password in users.items():
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()
            lines.append(f"  {name}: {hashed}")
    path = os.path.join(directory, "web.yml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def client_context(directory: str) -> ssl.SSLContext:
    """A TLS client context that trusts self_signed's certificate in ``directory``."""
    return ssl.create_default_context(cafile=os.path.join(directory, "cert.pem"))


@contextmanager
def live_channels(*channels: tuple[str, str, list[float]]) -> Iterator[list[str]]:
    """Channels (path, name, float64 values), each written once by a writer of this process,
    live while the block runs, then closed and removed; their paths."""
    with contextlib.ExitStack() as stack:
        for path, name, values in channels:
            writer = stack.enter_context(seqshm.create(path, "<f8", len(values), name=name))
            stack.callback(writer.close, unlink=True)
            writer.write(values)
        yield [path for path, _, _ in channels]


def collections_during(collector: Any, monkeypatch: Any, calls: int,
                       scrape: Any) -> int:
    """Run ``scrape()`` in ``calls`` threads at once, the others started while the first
    one's collection is under way (slowed by 1 s: a thread starts in microseconds), on
    ``collector`` (a SeqshmCollector): the collections made (shared renders make about 2)."""
    made: list[int] = []
    first_in = threading.Event()
    real = collector.metrics.collect

    def slow_collect() -> Any:
        made.append(1)
        if len(made) == 1:
            first_in.set()
            time.sleep(1.0)
        return real()

    monkeypatch.setattr(collector.metrics, "collect", slow_collect)
    first = threading.Thread(target=scrape)
    first.start()
    assert first_in.wait(10), "the first scrape never collected"
    others = [threading.Thread(target=scrape) for _ in range(calls - 1)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join(30)
    return len(made)
