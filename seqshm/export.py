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
keep-alive through h11, as Prometheus scrapes (one kept connection per target), with a thread
per connection, deadlines per request and a bounded number of connections that idle clients
cannot exhaust (MetricsServer says why), and TLS and basic auth from exporter-toolkit's web
configuration file (seqshm._webconfig).

The modules behind it: seqshm._metrics (channels -> families, no prometheus_client, shared
with seqshm.otel), seqshm._families (the families and their naming rules), seqshm._collector
(the prometheus_client collector and registry), seqshm._exposition (templates), seqshm._server
(HTTP), seqshm._webconfig (TLS, basic auth).
"""


from __future__ import annotations

import resource

try:  # the core needs no extra; the exporter does
    import h11  # noqa: F401
    import prometheus_client  # noqa: F401
except ImportError as e:
    raise ImportError(f"seqshm.export needs prometheus_client and h11: pip install "
                      f"'seqshm[export]' ({e})") from e

from seqshm._collector import SeqshmCollector, exposition, registry_of
from seqshm._metrics import ExportError
from seqshm._server import (
    DEFAULT_LISTEN,
    IDLE_TIMEOUT_S,
    MAX_BODY_BYTES,
    MAX_CONNECTIONS,
    MAX_HEAD_BYTES,
    MAX_PIPELINED,
    REQUEST_TIMEOUT_S,
    MetricsServer,
    parse_listen,
    serve,
)
from seqshm._webconfig import WebConfig, WebConfigError, load_web_config

__all__ = [
    "DEFAULT_LISTEN",
    "ExportError",
    "IDLE_TIMEOUT_S",
    "MAX_BODY_BYTES",
    "MAX_CONNECTIONS",
    "MAX_HEAD_BYTES",
    "MAX_PIPELINED",
    "MetricsServer",
    "REQUEST_TIMEOUT_S",
    "SeqshmCollector",
    "WebConfig",
    "WebConfigError",
    "exposition",
    "load_web_config",
    "parse_listen",
    "raise_fd_limit",
    "registry_of",
    "serve",
]


def raise_fd_limit() -> None:
    """Raise this process's soft open-file limit to its hard one (as Go's runtime does for
    node_exporter at start): each channel kept open holds a descriptor, and a soft limit of
    1024 under a hard one of 524288 (systemd's default) would make the channels beyond ~900
    cost an open and a close per scrape (ChannelMetrics reads them all the same)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            pass


