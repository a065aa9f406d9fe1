"""Prometheus/OpenMetrics export of seqshm channels: a prometheus_client collector to register
on any registry, and the HTTP endpoint behind ``seqshm export`` (needs ``seqshm[export]``).

Embedding, in a process that already serves metrics::

    from prometheus_client import REGISTRY
    from seqshm.export import SeqshmCollector
    REGISTRY.register(SeqshmCollector(["cpustat", "pose-*"]))

Each scrape takes one snapshot per channel, so all the series of a channel come from one
write. What becomes which series: see :class:`seqshm._metrics.ChannelMetrics` (cpustat as
node_exporter's ``node_cpu_seconds_total``; other records by the ``_total`` naming convention).

``seqshm export``'s own server (``serve`` of ``registry_of``'s registry) renders the same bytes
as prometheus_client's generate_latest, but from a template the library renders once per shape
of the channels, formatting only the values at a scrape (seqshm._exposition): the library's
per-sample formatter was most of a scrape's cost at 16 CPUs and more. It speaks HTTP/1.1 with
keep-alive, as Prometheus scrapes (one kept connection per target), with a thread per
connection (MetricsServer says why).
"""

from __future__ import annotations

import errno
import gzip
import queue
import socket
import sys
import threading
from collections.abc import Iterable, Sequence
from http.server import HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

try:
    from prometheus_client import CollectorRegistry, MetricsHandler
    from prometheus_client.core import Metric
    from prometheus_client.exposition import choose_encoder, generate_latest, gzip_accepted
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
    from prometheus_client.registry import Collector
except ImportError as e:  # the core needs no extra; this module does
    raise ImportError(f"seqshm.export needs prometheus_client: pip install 'seqshm[export]' "
                      f"({e})") from e

from seqshm._exposition import Encoder, ExpositionCache, to_prometheus
from seqshm._metrics import ChannelMetrics, ExportError, meta_families

__all__ = [
    "DEFAULT_LISTEN",
    "ExportError",
    "MetricsServer",
    "SeqshmCollector",
    "exposition",
    "parse_listen",
    "serve",
]

#: Where ``seqshm export`` listens unless told: loopback only (metrics of a host are not for
#: every network it is on), and 9464, the port OpenTelemetry's Prometheus exporters use.
DEFAULT_LISTEN = "127.0.0.1:9464"


class SeqshmCollector(Collector):
    """A prometheus_client collector of seqshm channels: register it on any registry.

    ``channels``: names, paths and globs (None: every channel in /dev/seqshm and /dev/shm);
    ``sum_over``: labels to sum away at the source (``cpu``); ``timeout``: seconds a snapshot
    waits for a consistent copy. Raises ExportError (a glob that matches nothing, a channel
    without a numeric field, an unknown --sum-over label) or FileNotFoundError at once, never
    at a scrape: a channel that fails later is reported by ``seqshm_channel_up 0``.
    """

    def __init__(self, channels: Sequence[str] | None = None, *, sum_over: Iterable[str] = (),
                 timeout: float = 0.1) -> None:
        self.metrics = ChannelMetrics(channels, sum_over=sum_over, timeout=timeout)
        self._templates = ExpositionCache()
        self._render_lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        """The families every scrape has, without samples, so that a registry refuses another
        collector of the same names; the data families depend on the channels found."""
        return [to_prometheus(f) for f in meta_families()]

    def collect(self) -> Iterable[Metric]:
        """One scrape: a snapshot of each channel, as metric families with samples."""
        return [to_prometheus(f) for f in self.metrics.collect() if f.size]

    def exposition(self, encoder: Encoder = generate_latest) -> bytes:
        """One scrape as ``encoder`` (prometheus_client's generate_latest, OpenMetrics'
        generate_latest, or a partial of either as choose_encoder gives them) renders it for
        this collector alone: the same bytes, from a template kept per shape of the channels
        (seqshm._exposition), so that a scrape formats only the values."""
        with self._render_lock:
            return self._templates.render(self.metrics.collect(), encoder)

    def close(self) -> None:
        """Close the channels' readers (the next scrape opens them again)."""
        self.metrics.close()


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6; ``:PORT`` for every address) as (host, port);
    port 0 picks a free one. Raises ValueError saying what is wrong."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"{text!r} is not HOST:PORT (e.g. {DEFAULT_LISTEN})")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is not in 0..65535")
    return host or "0.0.0.0", port


_LISTEN_HINTS = {
    errno.EADDRINUSE: "another program listens there (seqshm export's default is 9464, "
                      "node_exporter's 9100): stop it or pass --listen HOST:PORT with a free "
                      "port (port 0 picks one)",
    errno.EACCES: "permission denied: ports below 1024 need root (CAP_NET_BIND_SERVICE)",
    errno.EADDRNOTAVAIL: "no interface of this machine has that address",
}


#: Seconds a kept connection may stay idle between two requests: longer than any usual scrape
#: interval (Prometheus's default is 1 min), so that a scraper's kept connection lives from one
#: scrape to the next; an idle connection holds only its own thread (see MetricsServer).
IDLE_TIMEOUT_S = 300.0
#: Seconds a client may take to send the rest of a request once it has begun it (and each
#: blocked send of the answer may take): a client that stalls mid-request is cut off then.
REQUEST_TIMEOUT_S = 5.0
#: Connections served at once; one more is closed at once, unanswered. A scraper holds one
#: (Prometheus keeps one per target), so this bounds the threads a flood of idle clients costs.
MAX_CONNECTIONS = 64


class _SeqshmRegistry(CollectorRegistry):
    """registry_of's registry: knows its SeqshmCollector while it has no other collector, so
    that the server renders it from templates (SeqshmCollector.exposition)."""

    def __init__(self, collector: SeqshmCollector) -> None:
        super().__init__(auto_describe=False)
        super().register(collector)
        self.seqshm: SeqshmCollector | None = collector

    def register(self, collector: Collector) -> None:
        self.seqshm = None  # another collector too: the library renders them all
        super().register(collector)

    def unregister(self, collector: Collector) -> None:
        self.seqshm = None
        super().unregister(collector)


def _seqshm_alone(registry: Collector) -> SeqshmCollector | None:
    """The SeqshmCollector that ``registry`` is or holds alone, if any."""
    if isinstance(registry, SeqshmCollector):
        return registry
    return registry.seqshm if isinstance(registry, _SeqshmRegistry) else None


class _Handler(MetricsHandler):
    """prometheus_client's MetricsHandler over HTTP/1.1 with keep-alive: the same content
    negotiation (its choose_encoder: Prometheus text 0.0.4 or 1.0.0, OpenMetrics; gzip when
    the client accepts it), Content-Length on every answer (a kept connection needs it to
    delimit the body; the library's handler sends none and closes), HEAD, and the idle and
    request timeouts. For a SeqshmCollector alone (``collector``) the same bytes are rendered
    from templates; ``?name[]=`` (a subset of the families) and other registries go to the
    library's encoders."""

    protocol_version = "HTTP/1.1"
    collector: SeqshmCollector | None = None
    idle_timeout: float = IDLE_TIMEOUT_S
    timeout = REQUEST_TIMEOUT_S  # StreamRequestHandler sets it on the socket
    # The headers and the body go in two sends: with Nagle's algorithm, the body would wait
    # for the client's delayed ACK of the headers (40 ms on Linux) on a kept connection.
    disable_nagle_algorithm = True

    def handle_one_request(self) -> None:
        # Between requests a kept connection may idle for idle_timeout; once a request has
        # begun, the rest of it must come within the request timeout.
        self.connection.settimeout(self.idle_timeout)
        try:
            started = self.rfile.peek(1)  # type: ignore[attr-defined]
        except (TimeoutError, ConnectionError):
            started = b""
        if not started:  # idle too long, or the client closed it
            self.close_connection = True
            return
        self.connection.settimeout(self.timeout)
        super().handle_one_request()

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept") or "")
        names = parse_qs(urlparse(self.path).query).get("name[]")
        if names is None and self.collector is not None:
            output = self.collector.exposition(encoder)
        else:
            registry = self.registry
            if names is not None and isinstance(registry, CollectorRegistry):
                registry = registry.restricted_registry(names)
            output = encoder(registry)
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if gzip_accepted(self.headers.get("Accept-Encoding") or ""):
            output = gzip.compress(output)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(output)))
        if self.close_connection:  # the client said close, or speaks HTTP/1.0: say so too
            self.send_header("Connection", "close")
        self.end_headers()
        if body:
            self.wfile.write(output)


class MetricsServer(HTTPServer):
    """An HTTP/1.1 server of ``registry`` with keep-alive, a connection at a time per thread:
    prometheus_client's content negotiation (Prometheus text, OpenMetrics, gzip), rendered from
    templates for a SeqshmCollector alone (``registry_of``'s registry).

    A thread per connection, not per request (start_http_server's) nor one thread for all:
    Prometheus keeps one connection per target and scrapes over it, so a scrape costs no
    accept, no thread and no close; and a client that idles on its kept connection, or stalls
    mid-request, holds only its own thread, never another scraper's answers (with one thread
    for all, it would hold every scrape for as long as its timeout). The threads are kept and
    reused from one connection to the next (daemon threads, as many as connections were ever
    open at once, at most max_connections): starting one cost ~0.35 ms of a ~0.7 ms scrape on
    a 2-CPU host, which a scraper that opens a connection per scrape would pay each time. A
    selector loop would do the same in one thread, but needs its own HTTP parser; http.server's
    is the one the library's handler uses. Scrapes still take turns on the collector's lock.
    ``idle_timeout``, ``request_timeout`` and ``max_connections``: see IDLE_TIMEOUT_S,
    REQUEST_TIMEOUT_S and MAX_CONNECTIONS. ``server_close()`` also closes the kept connections
    and ends the threads."""

    def __init__(self, host: str, port: int, registry: Collector, *,
                 idle_timeout: float = IDLE_TIMEOUT_S,
                 request_timeout: float = REQUEST_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        # the address family of the host given (IPv6 too), as http.server's own CLI picks it
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        self.address_family = infos[0][0]
        self.max_connections = max_connections
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._queue: queue.SimpleQueue[tuple[socket.socket, Any] | None] = queue.SimpleQueue()
        self._threads = 0  # started, not ended
        self._idle = 0  # of those, waiting on (or about to wait on) the queue
        handler = type("SeqshmMetricsHandler", (_Handler,), {
            "registry": registry, "collector": _seqshm_alone(registry),
            "idle_timeout": idle_timeout, "timeout": request_timeout})
        super().__init__((host, port), handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._lock:
            full = len(self._connections) >= self.max_connections
            if not full:
                self._connections.add(request)
                # each connection queued is taken by one idle thread, or by one started for it
                start = self._idle == 0
                if start:
                    self._threads += 1
                else:
                    self._idle -= 1
        if full:
            self.shutdown_request(request)
            return
        self._queue.put((request, client_address))
        if start:
            threading.Thread(target=self._serve_connections, daemon=True,
                             name=f"seqshm-export-{self.server_address[1]}-conn").start()

    def _serve_connections(self) -> None:
        """A connection thread: serves the connections queued, one at a time, until
        server_close queues None."""
        while (item := self._queue.get()) is not None:
            request, client_address = item
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
            with self._lock:
                self._idle += 1

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that went away mid-answer, or was too slow to take it: its loss alone
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def server_close(self) -> None:
        super().server_close()
        with self._lock:
            kept, threads = list(self._connections), self._threads
            self._threads = self._idle = 0
        for connection in kept:  # their threads see the end of their connection
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for _ in range(threads):  # then each takes one None and ends
            self._queue.put(None)


def serve(registry: Collector, listen: str = DEFAULT_LISTEN
          ) -> tuple[MetricsServer, threading.Thread]:
    """Serve ``registry`` (a CollectorRegistry, or one collector) over HTTP at ``listen``
    (HOST:PORT) from a daemon thread: the Prometheus text format, or OpenMetrics for a scraper
    that asks for it (prometheus_client's MetricsHandler). Returns the server
    (``server.server_port`` is the port taken; ``server.shutdown()`` stops it) and its thread.
    Raises ExportError naming the address and what to do when it cannot listen."""
    host, port = parse_listen(listen)
    try:
        server = MetricsServer(host, port, registry)
    except socket.gaierror as e:
        raise ExportError(f"cannot listen on {listen}: {host!r} is not an address of this "
                          f"machine ({e.strerror})") from e
    except OSError as e:
        hint = _LISTEN_HINTS.get(e.errno or 0, e.strerror or str(e))
        raise ExportError(f"cannot listen on {listen}: {hint}") from e
    thread = threading.Thread(target=server.serve_forever, name="seqshm-export-http",
                              daemon=True)
    thread.start()
    return server, thread


def registry_of(collector: SeqshmCollector) -> CollectorRegistry:
    """A registry with ``collector`` alone (no process or Python metrics: a scrape costs what
    the channels cost). ``serve`` and ``exposition`` render it from templates while it has no
    other collector."""
    return _SeqshmRegistry(collector)


def exposition(registry: Collector, openmetrics: bool = False) -> bytes:
    """One scrape of ``registry`` as the Prometheus text format (or OpenMetrics)."""
    encoder = generate_openmetrics if openmetrics else generate_latest
    collector = _seqshm_alone(registry)
    return encoder(registry) if collector is None else collector.exposition(encoder)
