"""Prometheus/OpenMetrics export of seqshm channels: a prometheus_client collector to register
on any registry, and the HTTP endpoint behind ``seqshm export`` (needs ``seqshm[export]``).

Embedding, in a process that already serves metrics::

    from prometheus_client import REGISTRY
    from seqshm.export import SeqshmCollector
    REGISTRY.register(SeqshmCollector(["cpustat", "pose-*"]))

Each scrape takes one snapshot per channel, so all the series of a channel come from one
write. What becomes which series: see :class:`seqshm._metrics.ChannelMetrics` (cpustat as
node_exporter's ``node_cpu_seconds_total``; other records by the ``_total`` naming convention).
"""

from __future__ import annotations

import errno
import socket
import threading
from collections.abc import Iterable, Sequence
from http.server import HTTPServer

try:
    from prometheus_client import CollectorRegistry, MetricsHandler
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.exposition import generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
    from prometheus_client.registry import Collector
except ImportError as e:  # the core needs no extra; this module does
    raise ImportError(f"seqshm.export needs prometheus_client: pip install 'seqshm[export]' "
                      f"({e})") from e

from seqshm._metrics import COUNTER, ChannelMetrics, ExportError, Family, meta_families

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


def to_prometheus(family: Family) -> Metric:
    """A metric family as prometheus_client's CounterMetricFamily or GaugeMetricFamily."""
    cls = CounterMetricFamily if family.kind == COUNTER else GaugeMetricFamily
    metric = cls(family.name, family.help, labels=family.labels, unit=family.prometheus_unit)
    add = metric.add_metric
    for labels, value in family.samples:
        add(labels, value)
    return metric


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

    def describe(self) -> Iterable[Metric]:
        """The families every scrape has, without samples, so that a registry refuses another
        collector of the same names; the data families depend on the channels found."""
        return [to_prometheus(f) for f in meta_families()]

    def collect(self) -> Iterable[Metric]:
        """One scrape: a snapshot of each channel, as metric families with samples."""
        return [to_prometheus(f) for f in self.metrics.collect() if f.samples]

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


#: Seconds a connection may take to send its request: the server answers one scrape at a time,
#: so a client that connects and says nothing holds the others back this long at most.
REQUEST_TIMEOUT_S = 5.0


class MetricsServer(HTTPServer):
    """prometheus_client's MetricsHandler (content negotiation: Prometheus text, OpenMetrics,
    gzip) in an HTTPServer that answers one request at a time on its thread. Not
    start_http_server's server, which starts a thread per request: that thread cost more than
    the scrape itself (host, 2 CPUs: ~0.35 ms of ~0.7 ms per scrape), and scrapes take turns
    on the collector's lock anyway."""

    def __init__(self, host: str, port: int, registry: Collector) -> None:
        # the address family of the host given (IPv6 too), as http.server's own CLI picks it
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        self.address_family = infos[0][0]
        handler = MetricsHandler.factory(registry)
        handler.timeout = REQUEST_TIMEOUT_S  # type: ignore[attr-defined]
        super().__init__((host, port), handler)


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
    the channels cost)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def exposition(registry: Collector, openmetrics: bool = False) -> bytes:
    """One scrape of ``registry`` as the Prometheus text format (or OpenMetrics)."""
    return (generate_openmetrics if openmetrics else generate_latest)(registry)
