"""seqshm export's HTTP/1.1 server (h11): keep-alive, a kept thread per connection, deadlines
per request, connection places no client can keep from another, TLS and basic auth. Imported
through seqshm.export, which says what to install."""

from __future__ import annotations

import errno
import gzip
import ipaddress
import logging
import os
import queue
import socket
import socketserver
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import parse_qs

import h11
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.registry import Collector

from seqshm._collector import _seqshm_alone
from seqshm._metrics import ExportError
from seqshm._webconfig import WebConfig

log = logging.getLogger("seqshm.export")


#: Where ``seqshm export`` listens unless told: loopback only (metrics of a host are not for
#: every network it is on), and 9464, the port OpenTelemetry's Prometheus exporters use.
DEFAULT_LISTEN = "127.0.0.1:9464"

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
#: scrape to the next. An idle connection holds a thread and a place of MAX_CONNECTIONS, and
#: gives its place to a new connection when they are all taken (MetricsServer).
IDLE_TIMEOUT_S = 300.0
#: Seconds a request may take from its first byte to its last (a new connection's first
#: request, and its TLS handshake, from the accept): a deadline for the whole request, not for
#: each recv, so a client that drips it a byte at a time is cut off then too. Sending the
#: answer has as long again.
REQUEST_TIMEOUT_S = 5.0
#: Connections served at once. A scraper holds one (Prometheus keeps one per target). When
#: all are taken, a new connection takes the place of another (MetricsServer._victim): of the
#: client holding the most places, the connection that did nothing for longest (idle, or not
#: yet done sending its request), else the one that has held its place longest even while it
#: is being answered; only a connection answered within REQUEST_TIMEOUT_S of its accept keeps
#: its place against its own client.
MAX_CONNECTIONS = 64
#: Requests answered in a row on a connection whose client had sent the next before each
#: was answered (pipelined, RFC 9112 section 9.3.2): the last of them is answered with
#: "Connection: close" and the connection closed; the client sends the rest again on a new
#: connection (RFC 9112 section 9.3.1). Prometheus does not pipeline; a client that
#: pipelines a thousand requests and reads the answers slowly, or never, costs this many
#: renders, not a thousand.
MAX_PIPELINED = 16
#: The request line and headers of a request, at most (h11's default): more is answered 431.
MAX_HEAD_BYTES = 16 * 1024
#: A request body (a scrape has none) is read and thrown away up to this size; a larger one is
#: answered 413 and the connection closed.
MAX_BODY_BYTES = 64 * 1024
_RECV_BYTES = 65536


_T = TypeVar("_T")


class _Closed(Exception):
    """The connection ends: the client closed it, its deadline passed, or it gave way to
    a new connection."""


class _Connection:
    """One accepted connection: its socket (the TLS one once wrapped) and what the server
    needs to choose which connection gives way (MetricsServer.process_request)."""

    __slots__ = ("sock", "address", "client", "busy", "accepted", "since", "deadline",
                 "evicted")

    def __init__(self, sock: socket.socket, address: Any, now: float, deadline: float) -> None:
        self.sock = sock
        self.address = address
        self.client = _client_of(address)  # whom places are shared between
        self.busy = False  # answering a request (what gives way: MetricsServer._victim)
        self.accepted = now
        self.since = now  # when it last began to wait for its client
        self.deadline = deadline
        self.evicted = False

    def abort(self) -> None:
        """Wake its thread from a blocked recv or send: it then finds the connection ended.
        (socket.socket's own shutdown: an SSLSocket's would drop its TLS state under the
        thread that is using it.)"""
        try:
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass


class MetricsServer(socketserver.TCPServer):
    """An HTTP/1.1 server of ``registry`` with keep-alive, a connection at a time per thread:
    prometheus_client's content negotiation (Prometheus text, OpenMetrics, gzip), rendered from
    templates for a SeqshmCollector alone (``registry_of``'s registry); TLS and basic auth
    from a ``web_config`` (seqshm._webconfig).

    The framing is h11's (RFC 9112): one answer per request, pipelined requests answered in
    order, a request's body read and thrown away (never taken for a request), a malformed
    request answered 400 and its connection closed.

    A thread per connection, not per request nor one for all: Prometheus keeps one connection
    per target and scrapes over it, so a scrape costs no accept, no thread and no close; and a
    client that idles or stalls holds only its own thread, never another scraper's answers.
    The threads are kept and reused from one connection to the next: starting one cost ~0.35
    ms of a ~0.7 ms scrape on a 2-CPU host. What a client may hold is bounded: a request
    (its first from the accept, TLS handshake included; a later one from its first byte) must
    arrive whole within ``request_timeout``, and each answer be sent within as long; an idle
    kept connection is closed after ``idle_timeout``; at most MAX_PIPELINED pipelined
    requests are answered in a row before the connection is closed. Of ``max_connections``
    places, when they are all taken, a new connection takes the place of another (_victim),
    being answered or not, so that connections that idle, drip, or read their answers slowly
    cannot lock scrapers out. The listening socket is kept with a spare file
    descriptor, so that a process out of descriptors still accepts (and closes) connections
    rather than spinning on them. ``server_close()`` also closes the kept connections and
    ends the threads."""

    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, host: str, port: int, registry: Collector, *,
                 idle_timeout: float = IDLE_TIMEOUT_S,
                 request_timeout: float = REQUEST_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS,
                 web_config: WebConfig | None = None) -> None:
        # the address family of the host given (IPv6 too), as http.server's own CLI picks it
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        self.address_family = infos[0][0]
        self.registry = registry
        self.collector = _seqshm_alone(registry)
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.ssl_context = web_config.ssl_context if web_config else None
        self.auth = web_config.auth if web_config else None
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._queue: queue.SimpleQueue[_Connection | None] = queue.SimpleQueue()
        self._threads = 0  # started, not ended
        self._idle = 0  # of those, waiting on (or about to wait on) the queue
        self._logged: set[str] = set()  # what was logged once
        self._spare_fd = _open_spare()
        super().__init__((host, port), socketserver.BaseRequestHandler)

    @property
    def server_port(self) -> int:
        return int(self.server_address[1])

    # -- connections ---------------------------------------------------------------------------

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            return self.socket.accept()
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE):
                raise
            # Out of descriptors: the pending connection would make select() say "readable"
            # forever. The spare descriptor makes room to take it and close it at once.
            self._log_once("no-fd", logging.ERROR, "out of file descriptors (%s): new "
                           "connections are closed unanswered; raise the limit (ulimit -n) "
                           "or export fewer channels", e.strerror)
            if self._spare_fd >= 0:
                os.close(self._spare_fd)
                try:
                    sock, _ = self.socket.accept()
                    sock.close()
                except OSError:
                    pass
                self._spare_fd = _open_spare()
            else:
                time.sleep(0.05)
                self._spare_fd = _open_spare()
            raise

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        now = time.monotonic()
        conn = _Connection(request, client_address, now, now + self.request_timeout)
        victim = None
        with self._lock:
            if len(self._connections) >= self.max_connections:
                victim = self._victim(conn, now)
                if victim is not None:
                    victim.evicted = True
                    self._connections.discard(victim)
            full = len(self._connections) >= self.max_connections
            if not full:
                self._connections.add(conn)
                # each connection queued is taken by one idle thread, or by one started for it
                start = self._idle == 0
                if start:
                    self._threads += 1
                else:
                    self._idle -= 1
        if victim is not None:
            victim.abort()
        if full:  # no place may be taken (_victim): the newcomer is closed
            self._close(request)
            return
        self._queue.put(conn)
        if start:
            threading.Thread(target=self._serve_connections, daemon=True,
                             name=f"seqshm-export-{self.server_port}-conn").start()

    def _victim(self, newcomer: _Connection, now: float) -> _Connection | None:
        """The connection that gives its place to ``newcomer`` when all are taken, or None
        (the newcomer is closed). Called under the lock.

        Places are shared between clients (an IP address): the victim is a
        connection of the client that holds the most. Of its connections, the one that did
        nothing for longest (idle, or not done sending its request) gives way; else the one
        that has held its place longest, though it is being answered: answering a client that
        reads slowly, or pipelines requests, or sends the next as soon as it has read the last,
        does not keep its place for ever. Against its own client (or one holding one place
        fewer), a connection answered within request_timeout of its accept keeps its place:
        a scraper's new connection is answered in milliseconds, and cannot be pushed out by
        the connections its own arrival pushes out coming back. Against a client holding at
        least two places fewer, none does: a client that opens connections as fast as it can
        cannot keep another client from every place."""
        held = Counter(c.client for c in self._connections)
        most = max(held.values())
        theirs = [c for c in self._connections if held[c.client] == most]
        waiting = [c for c in theirs if not c.busy]
        if waiting:
            return min(waiting, key=lambda c: c.since)
        if held.get(newcomer.client, 0) + 1 >= most:  # even, near enough: settled ones only
            theirs = [c for c in theirs if c.accepted <= now - self.request_timeout]
        return min(theirs, key=lambda c: c.accepted, default=None)

    def _serve_connections(self) -> None:
        """A connection thread: serves the connections queued, one at a time, until
        server_close queues None."""
        while (conn := self._queue.get()) is not None:
            try:
                self._serve(conn)
            except (_Closed, OSError, h11.LocalProtocolError):
                pass  # the client went away, was too slow, or gave way: its loss alone
            except Exception as e:  # a bug: logged, and the other connections go on
                self._log_once(f"bug:{type(e).__name__}", logging.ERROR,
                               "a connection failed: %r", e, exc_info=True)
            finally:
                with self._lock:
                    self._connections.discard(conn)
                    self._idle += 1
                if not conn.evicted:
                    _discard_input(conn.sock)
                self._close(conn.sock)

    @staticmethod
    def _close(sock: socket.socket) -> None:
        try:
            sock.close()
        except OSError:
            pass

    def service_actions(self) -> None:
        """Every poll of serve_forever (0.5 s): end connections past their deadline by more
        than a second, should anything block beyond the timeouts each recv and send is given
        (e.g. inside OpenSSL)."""
        now = time.monotonic()
        with self._lock:
            late = [c for c in self._connections if not c.busy and c.deadline < now - 1.0]
        for conn in late:
            conn.abort()

    def server_close(self) -> None:
        super().server_close()
        with self._lock:
            kept, threads = list(self._connections), self._threads
            self._threads = self._idle = 0
        for conn in kept:  # their threads see the end of their connection
            conn.evicted = True
            conn.abort()
        for _ in range(threads):  # then each takes one None and ends
            self._queue.put(None)
        if self._spare_fd >= 0:
            os.close(self._spare_fd)
            self._spare_fd = -1

    def _log_once(self, key: str, level: int, msg: str, *args: Any,
                  exc_info: bool = False) -> None:
        if key not in self._logged:
            if len(self._logged) < 1024:
                self._logged.add(key)
            log.log(level, msg, *args, exc_info=exc_info)

    # -- one connection ------------------------------------------------------------------------

    def _serve(self, conn: _Connection) -> None:
        sock = conn.sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            sock.settimeout(max(conn.deadline - time.monotonic(), 0.001))
            conn.sock = sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False)
            if conn.evicted:
                raise _Closed
            try:  # under one deadline in all (CPython's ssl times the whole handshake)
                sock.do_handshake()
            except ssl.SSLError:
                raise _Closed from None  # not TLS, or no certificate we trust
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        waiting_idle = False  # between requests: the idle timeout, until a byte comes
        # Received, not yet given to h11. While a request's head is awaited, h11 is given no
        # more than keeps its buffer within MAX_HEAD_BYTES + 1: h11 bounds only a head still
        # incomplete in its buffer, so a head over the bound that came in one recv would
        # otherwise be taken whole; this way it is incomplete at MAX_HEAD_BYTES + 1, a 431.
        pending = b""
        eof = False
        in_a_row = 0  # requests answered in a row that had the next behind them
        while True:
            request = None
            body = 0
            try:
                while True:
                    event = http.next_event()
                    if event is h11.NEED_DATA:
                        if not pending and not eof:
                            pending = self._recv(conn)
                            eof = not pending
                            if waiting_idle and pending:
                                waiting_idle = False
                                conn.since = now = time.monotonic()
                                conn.deadline = now + self.request_timeout
                        if http.their_state is h11.IDLE:  # a head awaited
                            room = MAX_HEAD_BYTES + 1 - len(http.trailing_data[0])
                            data, pending = pending[:room], pending[room:]
                        else:
                            data, pending = pending, b""
                        http.receive_data(data)
                    elif isinstance(event, h11.Request):
                        request = event
                        if _ambiguous_framing(event):
                            # RFC 9112 section 6.1: the two may be read differently by a
                            # proxy in front (request smuggling): refused, and closed
                            self._refuse(conn, http, 400, "a request with both "
                                         "Transfer-Encoding and Content-Length\n")
                            return
                        if http.they_are_waiting_for_100_continue:
                            self._send(conn, http.send(h11.InformationalResponse(
                                status_code=100, headers=[])))
                    elif isinstance(event, h11.Data):
                        body += len(event.data)  # thrown away
                        if body > MAX_BODY_BYTES:
                            self._refuse(conn, http, 413, "a scrape has no body\n")
                            return
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:  # ConnectionClosed
                        return
            except h11.RemoteProtocolError as e:
                self._refuse(conn, http, e.error_status_hint, f"{e}\n")
                return
            assert request is not None
            # Pipelined: the client sent more (in h11's buffer, ours, or the socket's: requests
            # too large for a recv are pipelined too) before it could have read this answer.
            # Asked before the answer is sent: after, a client that is quick to send its next
            # request would look like one.
            if http.trailing_data[0] or pending or _input_waiting(conn.sock):
                in_a_row += 1
            else:
                in_a_row = 0
            conn.busy = True
            try:
                self._answer(conn, http, request, close=in_a_row >= MAX_PIPELINED)
            finally:
                conn.busy = False
            if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
                return  # Connection: close, HTTP/1.0, or an answer that closes
            http.start_next_cycle()
            conn.since = now = time.monotonic()
            if http.trailing_data[0] or pending:  # a pipelined request has begun: its deadline runs
                conn.deadline = now + self.request_timeout
            else:
                waiting_idle = True
                conn.deadline = now + self.idle_timeout

    @staticmethod
    def _io(conn: _Connection, deadline: float, op: Callable[[], _T]) -> _T:
        """``op`` (a recv or a send on the connection's socket) by ``deadline``, or _Closed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or conn.evicted:
            raise _Closed
        conn.sock.settimeout(remaining)
        try:
            out = op()
        except (TimeoutError, ConnectionError, ssl.SSLError):
            raise _Closed from None
        if conn.evicted:
            raise _Closed
        return out

    def _recv(self, conn: _Connection) -> bytes:
        """What the client sends next (b"" if it closed), by the connection's deadline."""
        return self._io(conn, conn.deadline, partial(conn.sock.recv, _RECV_BYTES))

    def _send(self, conn: _Connection, data: bytes) -> None:
        """Send ``data`` whole within request_timeout, or end the connection."""
        deadline = time.monotonic() + self.request_timeout
        view = memoryview(data)
        while view:
            view = view[self._io(conn, deadline, partial(conn.sock.send, view)):]

    def _respond(self, conn: _Connection, http: h11.Connection, status: int,
                 headers: list[tuple[str, str]], body: bytes, head_only: bool = False,
                 close: bool = False) -> None:
        headers = [*headers, ("Content-Length", str(len(body)))]
        if close:
            headers.append(("Connection", "close"))
        out = http.send(h11.Response(status_code=status, headers=headers,
                                     reason=HTTPStatus(status).phrase.encode()))
        if body and not head_only:
            out += http.send(h11.Data(data=body))
        out += http.send(h11.EndOfMessage())
        self._send(conn, out)

    def _refuse(self, conn: _Connection, http: h11.Connection, status: int, text: str) -> None:
        """Answer ``status`` and close, if an answer can still be sent."""
        if http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._respond(conn, http, status, [("Content-Type", "text/plain; charset=utf-8")],
                          text.encode("utf-8", "backslashreplace"), close=True)

    def _answer(self, conn: _Connection, http: h11.Connection, request: h11.Request,
                close: bool = False) -> None:
        """Answer ``request``; with ``close``, say "Connection: close" (h11 then closes)."""
        headers = dict(request.headers)  # h11's names are lowercase
        head_only = request.method == b"HEAD"
        text = [("Content-Type", "text/plain; charset=utf-8")]
        respond = partial(self._respond, conn, http, close=close)
        if self.auth is not None and not self.auth.check(headers.get(b"authorization")):
            respond(401, [*text, ("WWW-Authenticate", self.auth.challenge)],
                    b"Unauthorized\n", head_only)
            return
        if request.method not in (b"GET", b"HEAD"):
            respond(405, [*text, ("Allow", "GET, HEAD")],
                    b"Method Not Allowed: a scrape is a GET\n")
            return
        accept = headers.get(b"accept", b"").decode("latin-1")
        try:
            encoder, content_type = choose_encoder(accept)
        except Exception:  # the library's parse of a malformed one ("version=abc": TypeError)
            encoder, content_type = choose_encoder("")  # the Prometheus text, as for none
        query = request.target.partition(b"?")[2].decode("latin-1")
        names = parse_qs(query).get("name[]") if query else None
        gzipped = gzip_accepted(headers.get(b"accept-encoding", b"").decode("latin-1"))
        try:
            if self.collector is not None:  # shared with the scrapes in flight, gzip too
                answer = self.collector.answer(encoder, names)
                output = answer.gzipped() if gzipped else answer.text
            else:
                registry = self.registry
                if names is not None and isinstance(registry, CollectorRegistry):
                    registry = registry.restricted_registry(names)
                output = encoder(registry)
                if gzipped:
                    output = gzip.compress(output)
        except Exception as e:  # a bug, or a collector of the user's that fails
            self._log_once(f"render:{type(e).__name__}", logging.ERROR,
                           "a scrape failed: %r", e, exc_info=True)
            respond(500, text, f"scrape failed: {e!r}\n".encode(
                "utf-8", "backslashreplace"), head_only)
            return
        out_headers = [("Content-Type", content_type)]
        if gzipped:
            out_headers.append(("Content-Encoding", "gzip"))
        respond(200, out_headers, output, head_only)


def _ambiguous_framing(request: h11.Request) -> bool:
    """Whether ``request`` says both Transfer-Encoding and Content-Length (h11 goes by the
    former and keeps the connection; RFC 9112 section 6.1 has it closed)."""
    names = {name for name, _ in request.headers}  # h11's names are lowercase
    return b"transfer-encoding" in names and b"content-length" in names


def _client_of(address: Any) -> str:
    """Whom a connection is from, for sharing places (MetricsServer._victim): its IP address
    (an IPv4-mapped IPv6 one as IPv4). Not an IPv6 /64: on a LAN every host's SLAAC address
    shares one, and every link-local address fe80::/64, so a /64 made every host of the
    scraper's LAN one client with it (breaker4 finding 6); a host with many addresses is
    the limit docs/security.md states."""
    try:
        ip = ipaddress.ip_address(str(address[0]).partition("%")[0])
    except (ValueError, TypeError, IndexError):
        return repr(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
    return str(ip)


def _input_waiting(sock: socket.socket) -> bool:
    """Whether the client has sent more than we took (in TLS's buffer or the socket's),
    without waiting for it."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        sock.settimeout(0)  # a timeout would make CPython poll for it first
        return bool(socket.socket.recv(sock, 1, socket.MSG_PEEK))
    except OSError:  # nothing yet (BlockingIOError), or an error the next recv tells
        return False


#: Bytes a closing connection reads and throws away (_discard_input), at most.
_DISCARD_BYTES = 16 * _RECV_BYTES


def _discard_input(sock: socket.socket) -> None:
    """Throw away what the client sent and was not read, without waiting for more, before
    the connection is closed: closing a socket with unread input resets the connection, and
    the reset drops the end of the last answer still queued to send (RFC 9112 section 9.6),
    e.g. the answer that closes a connection on pipelined requests (MAX_PIPELINED) or bad
    framing. The raw socket's recv, for TLS too: nothing more is decrypted."""
    try:
        sock.settimeout(0)
        for _ in range(_DISCARD_BYTES // _RECV_BYTES):
            if not socket.socket.recv(sock, _RECV_BYTES):
                return
    except OSError:
        pass


def _open_spare() -> int:
    """A spare descriptor (MetricsServer.get_request), or -1 if none is to be had now."""
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def serve(registry: Collector, listen: str = DEFAULT_LISTEN,
          web_config: WebConfig | None = None) -> tuple[MetricsServer, threading.Thread]:
    """Serve ``registry`` (a CollectorRegistry, or one collector) over HTTP at ``listen``
    (HOST:PORT) from a daemon thread: the Prometheus text format, or OpenMetrics for a scraper
    that asks for it; over TLS and with basic auth as ``web_config`` says (load_web_config).
    Returns the server (``server.server_port`` is the port taken; ``server.shutdown()`` stops
    it) and its thread. Raises ExportError naming the address and what to do when it cannot
    listen."""
    host, port = parse_listen(listen)
    try:
        server = MetricsServer(host, port, registry, web_config=web_config)
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


