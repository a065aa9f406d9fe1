"""``seqshm export``: serve channels as Prometheus metrics (seqshm.export, imported only when
this command runs: prometheus_client is an optional dependency)."""

from __future__ import annotations

import argparse
import sys
import threading

from seqshm.cli._base import EXIT_OK, EXIT_USAGE, Failure, at_least_one, nonnegative

DESCRIPTION = (
    "Serve channels over HTTP as Prometheus/OpenMetrics metrics, one snapshot per\n"
    "channel per scrape. cpustat channels become node_exporter's\n"
    "node_cpu_seconds_total{cpu,mode}; other records seqshm_<name>_<field>, a\n"
    "counter if the field's name ends in _total, else a gauge (_ns, _us, _ms\n"
    "fields in seconds); every channel has seqshm_channel_up, _state,\n"
    "_writes_total and the time of its write. Needs pip install 'seqshm[export]'.")

#: seqshm.export.DEFAULT_LISTEN, written here too so that the parser needs no prometheus_client.
EXPORT_LISTEN = "127.0.0.1:9464"
#: seqshm._metrics.MAX_SERIES_PER_SCRAPE, likewise (tests/test_export_cli.py checks they agree).
EXPORT_MAX_SERIES = 200_000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = DESCRIPTION
    p.add_argument("patterns", nargs="*", metavar="CHANNEL|GLOB",
                   help="channels to export: names, paths or globs ('*' matches names in "
                        "/dev/seqshm and /dev/shm); default: every channel")
    p.add_argument("--listen", type=_listen, default=EXPORT_LISTEN, metavar="HOST:PORT",
                   help=f"address to serve on (default {EXPORT_LISTEN}; port 0 picks a free "
                        "one, printed on stderr)")
    p.add_argument("--sum-over", action="append", default=[], metavar="LABEL",
                   help="sum the series over this label at the source (cpu for cpustat; "
                        "dim0... for other channels' dimensions); repeatable")
    p.add_argument("--timeout", type=nonnegative, default=0.1, metavar="S",
                   help="how long a snapshot waits for a consistent copy (default 0.1)")
    p.add_argument("--max-series", type=at_least_one, default=EXPORT_MAX_SERIES, metavar="N",
                   help=f"data series a scrape may have over all channels (default "
                        f"{EXPORT_MAX_SERIES:,}); channels past it, another user's first, "
                        "have their state series only")
    p.add_argument("--once", action="store_true",
                   help="print one scrape to stdout and exit instead of serving")
    p.add_argument("--openmetrics", action="store_true",
                   help="with --once: the OpenMetrics format instead of Prometheus text")
    p.add_argument("--web-config", metavar="FILE",
                   help="TLS and basic auth from FILE, in the Prometheus exporter-toolkit "
                        "format (node_exporter's --web.config.file): tls_server_config "
                        "cert_file, key_file; basic_auth_users with bcrypt hashes")


def run(args: argparse.Namespace) -> int:
    return export(args.patterns, args.listen, args.sum_over, args.timeout, args.once,
                  args.openmetrics, args.web_config, args.max_series)


def _listen(text: str) -> str:
    """An argparse type: HOST:PORT as seqshm.export.parse_listen takes it."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. {EXPORT_LISTEN})")
    return text


def export(patterns: list[str], listen: str, sum_over: list[str], timeout: float,
           once: bool, openmetrics: bool, web_config: str | None = None,
           max_series: int = EXPORT_MAX_SERIES) -> int:
    """Serve the channels ``patterns`` name as Prometheus metrics at ``listen`` until Ctrl-C or
    SIGTERM (``once``: print one scrape to stdout and exit; ``web_config``: TLS and basic auth
    from an exporter-toolkit web configuration file; ``max_series``: data series a scrape may
    have over all channels)."""
    if openmetrics and not once:
        raise Failure("--openmetrics goes with --once (the server answers OpenMetrics to a "
                      "scraper that asks for it)", EXIT_USAGE)
    try:
        from seqshm import export as exp
    except ImportError as e:
        raise Failure(str(e), EXIT_USAGE) from None
    exp.raise_fd_limit()
    try:
        config = exp.load_web_config(web_config) if web_config and not once else None
        collector = exp.SeqshmCollector(patterns, sum_over=sum_over, timeout=timeout,
                                        max_series=max_series)
    except exp.ExportError as e:
        raise Failure(str(e), EXIT_USAGE) from None
    try:
        registry = exp.registry_of(collector)
        if once:
            sys.stdout.buffer.write(exp.exposition(registry, openmetrics))
            sys.stdout.flush()
            unread = sum(len(p) for p in collector.metrics.unread.values())
            if unread:  # the others were printed; the log said which and why
                raise Failure(f"{unread} channel{'s' if unread != 1 else ''} could not be "
                              f"read ({', '.join(sorted(collector.metrics.unread))})")
            return EXIT_OK
        try:
            server, thread = exp.serve(registry, listen, config)
        except exp.ExportError as e:
            raise Failure(str(e)) from None
        try:
            host, port = str(server.server_address[0]), server.server_address[1]
            shown = f"[{host}]" if ":" in host else host
            paths = collector.metrics.paths()
            scheme = "https" if config and config.ssl_context else "http"
            print(f"seqshm: serving {len(paths)} channel{'s' if len(paths) != 1 else ''} at "
                  f"{scheme}://{shown}:{port}/metrics"
                  + (" (basic auth)" if config and config.auth else ""),
                  file=sys.stderr, flush=True)
            # The server runs in its thread; this one waits for Ctrl-C, SIGTERM or SIGHUP,
            # which main() turns into exit status 130, 143 and 129.
            threading.Event().wait()
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
    finally:
        collector.close()
    return EXIT_OK  # not reached: only a signal ends the wait
