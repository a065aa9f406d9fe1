"""``seqshm export --web-config FILE``: TLS and basic auth from the Prometheus exporter-toolkit's
web configuration file (the one node_exporter's --web.config.file reads), and the check of a
request's credentials against its bcrypt hashes, with a cache so that bcrypt is paid once per
credentials, not per scrape."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib
import os
import re
import ssl
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from seqshm._metrics import ExportError

__all__ = ["BasicAuth", "WebConfig", "WebConfigError", "load_web_config"]


class WebConfigError(ExportError):
    """A web configuration file that cannot be used as written: not YAML, a key seqshm export
    does not know or support, a certificate or key that does not load, a hash that is not
    bcrypt's. The message names the file, the key and what to do."""


#: exporter-toolkit's TLS version names (tls_server_config's min_version, max_version)
_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
#: exporter-toolkit's client_auth_type values that Python's ssl module can do, as verify modes.
#: RequestClientCert and RequireAnyClientCert ask for a certificate without verifying it,
#: which OpenSSL's server side, as Python exposes it, cannot do: refused with a reason.
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version",
             "max_version"}
#: Keys of exporter-toolkit's format that seqshm export does not implement, and why.
_UNSUPPORTED = {
    "cipher_suites": "Go's cipher suite names; OpenSSL's defaults are used",
    "curve_preferences": "Go's curve names; OpenSSL's defaults are used",
    "prefer_server_cipher_suites": "not settable in Python's ssl",
    "client_allowed_sans": "not implemented",
    "cert": "inline certificates are not implemented: use cert_file",
    "key": "inline keys are not implemented: use key_file",
    "http2": "seqshm export speaks HTTP/1.1 only",
    "headers": "not implemented",
}
_BCRYPT_HASH = re.compile(rb"^\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}$")


@dataclass
class WebConfig:
    """A loaded web configuration: ``ssl_context`` (None: plain HTTP) and ``auth`` (None: no
    basic auth)."""

    path: str
    ssl_context: ssl.SSLContext | None
    auth: BasicAuth | None


class BasicAuth:
    """HTTP basic auth against ``users`` (name -> bcrypt hash), as exporter-toolkit checks it.

    bcrypt is slow on purpose (~70 ms at cost 10 and ~260 ms at cost 12 on this project's
    host), so a check is cached: verified (user, password) pairs, and refused ones, are kept
    under an HMAC of them with a key of this process (the caches hold no password, and their
    lookup leaks nothing an attacker can use), at most CACHE_SIZE of each, so a scraper pays
    bcrypt on its first scrape only. The two are apart, so that no number of refusals can push
    a scraper's verified pair out; a refusal bcrypt made at once (a password over its 72
    bytes) is not kept at all. A name that is not a user is checked against a hash of the same
    cost, so that the time of an answer does not say which names exist. bcrypt runs one check
    at a time (it releases the GIL): a client sending new wrong passwords costs at most one
    CPU, not all of them, and what it delays is others' first scrapes only."""

    CACHE_SIZE = 1024
    REALM = "seqshm export"

    def __init__(self, users: dict[str, bytes]) -> None:
        import bcrypt  # the export extra's
        self._bcrypt = bcrypt
        self.users = {name.encode("utf-8"): h for name, h in users.items()}
        cost = max((int(m.group(1)) for h in users.values() if (m := _BCRYPT_HASH.match(h))),
                   default=10)
        self._dummy = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(cost))
        self._key = os.urandom(32)
        # verified pairs and refused ones, each least recently used first (see the docstring)
        self._caches: dict[bool, OrderedDict[bytes, None]] = {True: OrderedDict(),
                                                              False: OrderedDict()}
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()

    @property
    def challenge(self) -> str:
        """The WWW-Authenticate header of a 401 answer."""
        return f'Basic realm="{self.REALM}", charset="UTF-8"'

    def check(self, authorization: bytes | None) -> bool:
        """Whether an Authorization header's value names a user with its password."""
        if authorization is None:
            return False
        scheme, _, encoded = authorization.strip().partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        if not sep:
            return False
        key = hmac.new(self._key, b"%d:%s:%s" % (len(user), user, password),
                       hashlib.sha256).digest()
        with self._cache_lock:
            for verdict, cache in self._caches.items():
                if key in cache:
                    cache.move_to_end(key)
                    return verdict
        hashed = self.users.get(user)
        with self._bcrypt_lock:
            try:
                ok = self._bcrypt.checkpw(password, hashed or self._dummy)
            except ValueError:  # a password over bcrypt's 72 bytes, a NUL in it: no work done,
                return False    # nothing worth keeping
        ok = ok and hashed is not None
        with self._cache_lock:
            cache = self._caches[ok]
            cache[key] = None
            if len(cache) > self.CACHE_SIZE:
                cache.popitem(last=False)
        return ok


def _require_mapping(value: Any, what: str, path: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{what} is a {type(value).__name__}, not a mapping", path)
    return value


def _tls_context(tls: dict[str, Any], path: str) -> ssl.SSLContext:
    for key in tls:
        if key in _UNSUPPORTED:
            raise WebConfigError(f"tls_server_config.{key} is not supported by seqshm export "
                                 f"({_UNSUPPORTED[key]}): remove it", path)
        if key not in _TLS_KEYS:
            raise WebConfigError(f"tls_server_config.{key}: no such key (known: "
                                 f"{', '.join(sorted(_TLS_KEYS))})", path)
    base = os.path.dirname(os.path.abspath(path))

    def file_of(key: str) -> str:
        value = tls.get(key)
        if not isinstance(value, str) or not value:
            raise WebConfigError(f"tls_server_config.{key}: a file name is needed", path)
        return os.path.join(base, value)  # relative to the config file, as exporter-toolkit

    if "cert_file" not in tls or "key_file" not in tls:
        raise WebConfigError("tls_server_config needs both cert_file and key_file", path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # a client may not make the server redo handshakes on one connection (TLS 1.2's
    # renegotiation: a handshake's CPU again and again for one connection's place)
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    cert, key = file_of("cert_file"), file_of("key_file")
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise WebConfigError(f"tls_server_config: cannot load the certificate {cert} with the "
                             f"key {key}: {getattr(e, 'strerror', None) or e}", path) from e
    for key_name, attr in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if key_name in tls:
            version = _TLS_VERSIONS.get(str(tls[key_name]))
            if version is None:
                raise WebConfigError(f"tls_server_config.{key_name}: {tls[key_name]!r} is not "
                                     f"one of {', '.join(_TLS_VERSIONS)}", path)
            setattr(ctx, attr, version)
        elif key_name == "min_version":
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # exporter-toolkit's default
    client_auth = str(tls.get("client_auth_type", "NoClientCert"))
    if client_auth not in _CLIENT_AUTH:
        raise WebConfigError(f"tls_server_config.client_auth_type: {client_auth!r} is not "
                             f"supported (seqshm export does {', '.join(_CLIENT_AUTH)})", path)
    ctx.verify_mode = _CLIENT_AUTH[client_auth]
    if "client_ca_file" in tls:
        ca = file_of("client_ca_file")
        try:
            ctx.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as e:
            raise WebConfigError(f"tls_server_config.client_ca_file: cannot load {ca}: "
                                 f"{getattr(e, 'strerror', None) or e}", path) from e
    elif ctx.verify_mode != ssl.CERT_NONE:
        raise WebConfigError(f"tls_server_config.client_auth_type {client_auth} needs "
                             "client_ca_file", path)
    return ctx


def load_web_config(path: str) -> WebConfig:
    """The web configuration in ``path`` (exporter-toolkit's format: ``tls_server_config`` with
    cert_file and key_file, ``basic_auth_users`` of bcrypt hashes). Raises WebConfigError."""
    try:  # untyped (no stubs in the extras): as Any
        yaml: Any = importlib.import_module("yaml")
    except ImportError as e:
        raise WebConfigError(f"--web-config needs PyYAML: pip install 'seqshm[export]' ({e})",
                             path) from e
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise WebConfigError(f"cannot read it: {e.strerror}", path) from e
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise WebConfigError(f"not a YAML file: {e}", path) from e
    doc = _require_mapping(doc, "the file", path)
    for key in doc:
        if key in _UNSUPPORTED:
            raise WebConfigError(f"{key} is not supported by seqshm export "
                                 f"({_UNSUPPORTED[key]}): remove it", path)
        if key == "http_server_config":
            for sub in _require_mapping(doc[key], key, path):
                raise WebConfigError(f"http_server_config.{sub} is not supported by seqshm "
                                     f"export ({_UNSUPPORTED.get(sub, 'not implemented')}): "
                                     "remove it", path)
        elif key not in ("tls_server_config", "basic_auth_users"):
            raise WebConfigError(f"{key}: no such key (known: tls_server_config, "
                                 "basic_auth_users, http_server_config)", path)
    tls = _require_mapping(doc.get("tls_server_config"), "tls_server_config", path)
    users_doc = _require_mapping(doc.get("basic_auth_users"), "basic_auth_users", path)
    users: dict[str, bytes] = {}
    for name, hashed in users_doc.items():
        if not isinstance(name, str) or ":" in name or not name:
            raise WebConfigError(f"basic_auth_users: {name!r} is not a user name (a string "
                                 "without ':')", path)
        if not isinstance(hashed, str) or not _BCRYPT_HASH.match(hashed.encode()):
            raise WebConfigError(f"basic_auth_users.{name}: not a bcrypt hash ($2y$10$...; "
                                 "make one with htpasswd -nBC 10 '' or python -c "
                                 "\"import bcrypt; print(bcrypt.hashpw(b'PASSWORD', "
                                 "bcrypt.gensalt()).decode())\")", path)
        users[name] = hashed.encode()
    return WebConfig(path, _tls_context(tls, path) if tls else None,
                     BasicAuth(users) if users else None)
