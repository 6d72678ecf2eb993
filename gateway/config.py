"""ztgate's configuration: one YAML file, validated once at start into frozen dataclasses.

Every error names file:line:column and carries a hint; nothing downstream re-validates.
See deploy/examples/ztgate.yaml for a commented example of every field.
"""

from __future__ import annotations

import difflib
import math
import re
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from .auth.attestation import AttestationPolicy, split_pem
from .errors import ConfigError, KeyPath
from .proxy.forwarded import Network, parse_networks
from .yamlsource import SourceDocument, SourceError, load_file, load_text

ROUTE_KINDS = ("http", "guacamole", "novnc", "terminal", "vnc")
RESERVED_PREFIX = "/.ztgate/"
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")
_COOKIE_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,64}$")


class ConfigInvalid(Exception):
    """Raised with every problem found, each already rendered as `file:line:column: message` + hint."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TlsFiles:
    cert: str
    key: str


@dataclass(frozen=True)
class Listener:
    address: Address
    tls: TlsFiles | None = None
    # load balancers / reverse proxies in front of this listener: their X-Forwarded-For and -Proto are believed,
    # and their connections' TCP RTT is not taken for the client's (gateway.proxy.forwarded)
    trusted_proxies: tuple[Network, ...] = ()


@dataclass(frozen=True)
class Upstream:
    scheme: str  # http | https | tcp
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@dataclass(frozen=True)
class Route:
    name: str
    kind: str
    upstream: Upstream
    host: str | None = None  # match on the Host header (exact, or "*.example.com")
    path_prefix: str = "/"
    audience: str = ""
    sensor: bool = True  # inject the browser sensor into HTML (http routes)
    preserve_host: bool = False
    listen: Address | None = None  # vnc routes: their own raw TCP listener
    ssl_verify: bool = True
    # vnc routes: TCP load balancers in front of `listen`, which name the client in a PROXY protocol header
    trusted_proxies: tuple[Network, ...] = ()

    def matches(self, host: str, path: str) -> bool:
        """`host` and `path` as the proxy canonicalised them (gateway/proxy/canonical.py): a host in lower case
        without port or trailing dot, a path decoded and without dot segments."""
        if self.host is not None:
            pattern = self.host.lower().rstrip(".")  # host names are case-insensitive; "a.com." is "a.com"
            if pattern.startswith("*."):
                if not host.endswith(pattern[1:]):
                    return False
            elif host != pattern:
                return False
        # a prefix ends at a segment boundary: "/admin" is "/admin", "/admin/..." and "/admin;x" (a path
        # parameter, which Tomcat strips), never "/administrator"; case-sensitive like most upstreams
        prefix = self.path_prefix.rstrip("/")
        return not prefix or path == prefix or path.startswith(prefix) and path[len(prefix)] in "/;"


@dataclass(frozen=True)
class LockoutConfig:
    """Brute-force limits per account (gateway.auth.lockout); all counts live in the shared store."""

    max_failures: int = 10  # failed sign-ins within `window` that lock the account; 0: never lock for failures
    window: int = 900  # seconds over which failures and one-time-code attempts are counted
    duration: int = 900  # seconds an account stays locked (an admin can lift it sooner: `ztgate locks remove`)
    totp_max_attempts: int = 10  # one-time codes refused within `window` before codes are no longer even checked
    # password attempts from one client address per address_window seconds (0: unlimited). Each attempt costs an
    # argon2 verification (~0.2 s of CPU), and new user names never reach an account's lockout: this bounds what one
    # address can spend. A whole office behind one NAT signs in at well under this per minute.
    address_attempts: int = 30
    address_window: int = 60


@dataclass(frozen=True)
class IdentityConfig:
    directory: str | None = None
    oidc: tuple[Any, ...] = ()  # gateway.auth.oidc.OidcConfig
    lockout: LockoutConfig = field(default_factory=LockoutConfig)


@dataclass(frozen=True)
class StoreConfig:
    url: str = "memory://"
    # While the store is unreachable: closed answers 503 for a session whose local view is older than
    # cache_seconds and /readyz says 503; open serves it from the local view and /readyz stays 200. In both,
    # revoked sessions stay refused (tombstones) and new sign-ins are refused (see control/login.py _store_down).
    fail_mode: str = "closed"
    cache_seconds: float = 5.0
    prefix: str = "ztgate:"  # Redis key prefix: several deployments can share one Redis

    @property
    def is_redis(self) -> bool:
        return self.url.startswith(("redis://", "rediss://", "unix://"))


@dataclass(frozen=True)
class SessionConfig:
    cookie_name: str = "ztgate_session"
    token_ttl: int = 300
    idle_timeout: int = 3600
    max_lifetime: int = 12 * 3600
    secure: str = "auto"  # auto (Secure under TLS) | always | never


@dataclass(frozen=True)
class KeysConfig:
    dir: str | None = None  # None: an ephemeral key ring (demo)
    algorithm: str = "ES256"
    rotate_every: int = 7 * 24 * 3600


@dataclass(frozen=True)
class AdminConfig:
    token: str | None = None
    groups: tuple[str, ...] = ()
    # The one host name the dashboard and the cookie-authenticated admin API answer on (None: every host). On an
    # app's own origin, a script injected into that app (XSS) is same-origin with /.ztgate/admin/ and could drive it
    # with a visiting admin's cookie; a host of its own, with its own host-only cookie, puts the browser's
    # same-origin policy between them (as Pomerium's authenticate service does).
    host: str | None = None


@dataclass(frozen=True)
class PoliciesConfig:
    dir: str | None = None  # None: the defaults shipped in policies/defaults
    reload_interval: float = 1.0


@dataclass(frozen=True)
class ScoringConfig:
    enrol_keystrokes: int = 400  # genuine keystrokes collected before a first profile is enrolled
    learn: bool = True  # update profiles from sessions that raised nothing


@dataclass(frozen=True)
class WebAuthnConfig:
    attestation: AttestationPolicy = field(default_factory=AttestationPolicy)
    mds_next_update: str = ""  # ISO date the imported Metadata Service BLOB is due for replacement ("" without one)

    def stale_metadata(self, today: str) -> bool:
        return bool(self.mds_next_update) and self.mds_next_update < today


@dataclass(frozen=True)
class TelemetryConfig:
    otlp_endpoint: str | None = None
    prometheus: bool = True
    service_name: str = "ztgate"
    log_format: str = "json"  # json | text
    log_level: str = "info"
    trace_sample_ratio: float = 0.1  # share of requests / scoring updates traced (decisions always are)
    export_interval: float = 15.0  # seconds between OTLP metric exports


@dataclass(frozen=True)
class Config:
    source: str
    instance: str
    listeners: tuple[Listener, ...]
    routes: tuple[Route, ...]
    identity: IdentityConfig
    store: StoreConfig
    session: SessionConfig
    keys: KeysConfig
    admin: AdminConfig
    policies: PoliciesConfig
    scoring: ScoringConfig
    events: Any  # gateway.secevents.EventsConfig
    telemetry: TelemetryConfig
    webauthn: WebAuthnConfig = field(default_factory=WebAuthnConfig)
    state_dir: str = "var/ztgate"
    shutdown_grace: float = 30.0  # seconds open requests and WebSockets get to finish after SIGTERM
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    def route_for(self, host: str, path: str) -> Route | None:
        best: Route | None = None
        for route in self.routes:
            if route.kind == "vnc" or not route.matches(host, path):
                continue
            if best is None or _specificity(route) > _specificity(best):
                best = route
        return best


def _specificity(route: Route) -> tuple[int, int]:
    return (route.host is not None and not route.host.startswith("*."), len(route.path_prefix))


# ----------------------------------------------------------------------------------------------- validation


class _Section:
    """Reads one mapping, remembering its key path and refusing unknown keys."""

    def __init__(self, data: Any, path: KeyPath, known: tuple[str, ...]):
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(path, f"expected a mapping, got {_kind(data)}")
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                raise ConfigError(
                    path + (key,),
                    f"unknown field {key!r}",
                    f"did you mean {close[0]!r}?" if close else f"known fields: {', '.join(known)}",
                )
        self.data, self.path = data, path

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, *, required: bool = False) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise ConfigError(self.path + (key,), "is required")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ConfigError(self.path + (key,), f"expected {names}, got {_kind(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            # YAML has .nan and .inf: NaN passes every `<= 0` check, and asyncio.sleep(nan) never returns
            raise ConfigError(self.path + (key,), f"must be a finite number, got {value}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise ConfigError(self.path + (key,), f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def positive(self, key: str, default: float, kind: type = int) -> Any:
        value = self.get(key, kind, default)
        if value <= 0:
            raise ConfigError(self.path + (key,), f"must be positive, got {value}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.get(key, list, [])
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(self.path + (key, i), f"expected a string, got {_kind(item)}")
        return tuple(value)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


def parse_address(text: Any, path: KeyPath) -> Address:
    if isinstance(text, int):
        text = f"127.0.0.1:{text}"
    if not isinstance(text, str) or ":" not in text:
        raise ConfigError(path, f"expected HOST:PORT, got {text!r}", "e.g. 0.0.0.0:8443 or 127.0.0.1:8080")
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(path, f"port must be a number from 0 to 65535, got {port!r}")
    return Address(host, int(port))


def _trusted_proxies(sec: _Section, path: KeyPath) -> tuple[Network, ...]:
    trusted = []
    for j, text in enumerate(sec.strings("trusted_proxies")):
        try:
            trusted.extend(parse_networks([text]))
        except ValueError as err:
            raise ConfigError(path + ("trusted_proxies", j), str(err),
                              "the addresses your load balancer connects from") from None
    if any(net.prefixlen == 0 for net in trusted):
        raise ConfigError(path + ("trusted_proxies",), "trusting every address lets any client name its own IP",
                          "list the load balancer's networks")
    return tuple(trusted)


def _upstream(text: Any, path: KeyPath, kind: str) -> Upstream:
    if not isinstance(text, str):
        raise ConfigError(path, f"expected a URL, got {_kind(text)}")
    parts = urlsplit(text)
    allowed = ("tcp",) if kind == "vnc" else ("http", "https")
    if parts.scheme not in allowed or not parts.hostname:
        example = "tcp://10.0.0.9:5900" if kind == "vnc" else "http://10.0.0.5:8080"
        raise ConfigError(path, f"{kind} routes need a {'/'.join(allowed)} URL, got {text!r}", f"e.g. {example}")
    if parts.path not in ("", "/"):
        raise ConfigError(path, "upstream URLs carry no path", "use path_prefix on the route to select requests")
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        port = None
    if port is None:
        raise ConfigError(path, f"upstream needs a valid port: {text!r}")
    return Upstream(parts.scheme, parts.hostname, port)


def _listeners(raw: Any, path: KeyPath, base: Path) -> tuple[Listener, ...]:
    if raw is None:
        return (Listener(Address("127.0.0.1", 8080)),)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(path, "expected a non-empty list of listeners", "e.g. - address: 0.0.0.0:8443")
    out = []
    for i, item in enumerate(raw):
        sec = _Section(item, path + (i,), ("address", "tls", "trusted_proxies"))
        address = parse_address(sec.get("address", (str, int), required=True), path + (i, "address"))
        tls = None
        if sec.get("tls", dict) is not None:
            t = _Section(sec.data["tls"], path + (i, "tls"), ("cert", "key"))
            cert = _existing_file(t.get("cert", str, required=True), path + (i, "tls", "cert"), base)
            key = _existing_file(t.get("key", str, required=True), path + (i, "tls", "key"), base)
            tls = TlsFiles(cert, key)
        out.append(Listener(address, tls, _trusted_proxies(sec, path + (i,))))
    return tuple(out)


def _existing_file(value: str, path: KeyPath, base: Path) -> str:
    p = (base / value) if not Path(value).is_absolute() else Path(value)
    if not p.is_file():
        raise ConfigError(path, f"file not found: {p}", "give a path relative to the config file or an absolute one")
    return str(p)


def _routes(raw: Any, path: KeyPath) -> tuple[Route, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(path, "at least one route is required", "e.g. - {name: app, upstream: http://127.0.0.1:9000}")
    routes: list[Route] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        p = path + (i,)
        sec = _Section(item, p, ("name", "kind", "upstream", "host", "path_prefix", "audience", "sensor",
                                 "preserve_host", "listen", "ssl_verify", "trusted_proxies"))
        name = sec.get("name", str, required=True)
        if name in names:
            raise ConfigError(p + ("name",), f"duplicate route name {name!r}")
        names.add(name)
        kind = sec.choice("kind", ROUTE_KINDS, "http")
        upstream = _upstream(sec.get("upstream", str, required=True), p + ("upstream",), kind)
        prefix = sec.get("path_prefix", str, "/")
        if not prefix.startswith("/"):
            raise ConfigError(p + ("path_prefix",), "must start with /")
        if prefix.startswith(RESERVED_PREFIX):
            raise ConfigError(p + ("path_prefix",), f"{RESERVED_PREFIX} is reserved for ztgate's control plane")
        listen = None
        if kind == "vnc":
            listen = parse_address(sec.get("listen", (str, int), required=True), p + ("listen",))
        elif "listen" in sec.data:
            raise ConfigError(p + ("listen",), "only vnc routes have their own listener",
                              "http, guacamole, novnc and terminal routes are served on the listeners")
        if "trusted_proxies" in sec.data and kind != "vnc":
            raise ConfigError(p + ("trusted_proxies",), "only vnc routes take a PROXY protocol header",
                              "the balancers in front of http routes go in listeners[].trusted_proxies")
        routes.append(Route(
            name=name, kind=kind, upstream=upstream, host=sec.get("host", str), path_prefix=prefix,
            audience=sec.get("audience", str, name), sensor=sec.get("sensor", bool, kind == "http"),
            preserve_host=sec.get("preserve_host", bool, False), listen=listen,
            ssl_verify=sec.get("ssl_verify", bool, True),
            trusted_proxies=_trusted_proxies(sec, p),
        ))
    _check_upstream_verification(routes, path)
    return tuple(routes)


def _check_upstream_verification(routes: list[Route], path: KeyPath) -> None:
    """Certificate checks are decided per upstream address (gateway/proxy/master.py): routes to one address must
    agree, or one route's `ssl_verify: false` would silently cover the other's."""
    verify_of: dict[tuple[str, int], Route] = {}
    for i, route in enumerate(routes):
        key = (route.upstream.host, route.upstream.port)
        other = verify_of.setdefault(key, route)
        if other.ssl_verify != route.ssl_verify:
            raise ConfigError(path + (i, "ssl_verify"), f"routes {other.name!r} and {route.name!r} reach "
                              f"{route.upstream.host}:{route.upstream.port} but disagree on ssl_verify",
                              "certificate checks apply per upstream address: give both the same ssl_verify")


def _identity(raw: Any, path: KeyPath, base: Path) -> IdentityConfig:
    sec = _Section(raw, path, ("directory", "oidc", "lockout"))
    directory = sec.get("directory", (str, dict))
    if isinstance(directory, dict):
        d = _Section(directory, path + ("directory",), ("path",))
        directory = d.get("path", str, required=True)
    if directory is not None and not Path(directory).is_absolute():
        directory = str(base / directory)
    providers = []
    oidc_raw = sec.get("oidc", (list, dict), [])
    if isinstance(oidc_raw, dict):
        oidc_raw = [oidc_raw]
    if oidc_raw:
        from .auth.oidc import OidcConfig

        for i, item in enumerate(oidc_raw):
            try:
                providers.append(OidcConfig.from_dict(item))
            except ConfigError as err:
                raise ConfigError(path + ("oidc", i) + tuple(err.path), err.message, err.hint) from None
    return IdentityConfig(directory=directory, oidc=tuple(providers), lockout=_lockout(sec.get("lockout", dict),
                                                                                         path + ("lockout",)))


def _lockout(raw: Any, path: KeyPath) -> LockoutConfig:
    sec = _Section(raw, path, ("max_failures", "window", "duration", "totp_max_attempts", "address_attempts",
                               "address_window"))
    max_failures = sec.get("max_failures", int, LockoutConfig.max_failures)
    if max_failures < 0:
        raise ConfigError(path + ("max_failures",), f"must be 0 or more, got {max_failures}",
                          "0 never locks an account for failed sign-ins (one-time codes stay limited)")
    return LockoutConfig(max_failures=max_failures, window=sec.positive("window", LockoutConfig.window),
                         duration=sec.positive("duration", LockoutConfig.duration),
                         totp_max_attempts=sec.positive("totp_max_attempts", LockoutConfig.totp_max_attempts),
                         address_attempts=_non_negative(sec, "address_attempts", LockoutConfig.address_attempts,
                                                        path, "0 sets no limit per client address"),
                         address_window=sec.positive("address_window", LockoutConfig.address_window))


def _non_negative(sec: "_Section", key: str, default: int, path: KeyPath, hint: str) -> int:
    value = sec.get(key, int, default)
    if value < 0:
        raise ConfigError(path + (key,), f"must be 0 or more, got {value}", hint)
    return value


def _store(raw: Any, path: KeyPath) -> StoreConfig:
    if isinstance(raw, str):
        raw = {"url": raw}
    sec = _Section(raw, path, ("url", "fail_mode", "cache_seconds", "prefix"))
    url = sec.get("url", str, "memory://")
    if not url.startswith(("memory://", "redis://", "rediss://", "unix://")):
        raise ConfigError(path + ("url",), f"unsupported store {url!r}", "memory:// or redis://HOST:6379/0")
    return StoreConfig(url=url, fail_mode=sec.choice("fail_mode", ("closed", "open"), "closed"),
                       cache_seconds=sec.positive("cache_seconds", 5.0, float), prefix=sec.get("prefix", str, "ztgate:"))


def _section_parser(name: str) -> Callable[[Any, KeyPath], Any]:
    def parse(raw: Any, path: KeyPath) -> Any:
        if name == "session":
            s = _Section(raw, path, ("cookie_name", "token_ttl", "idle_timeout", "max_lifetime", "secure"))
            ttl = s.positive("token_ttl", 300)
            if ttl > 3600:
                raise ConfigError(path + ("token_ttl",), "session tokens live at most 3600 s",
                                  "they are refreshed silently; a short life bounds a stolen cookie")
            cookie = s.get("cookie_name", str, "ztgate_session")
            secure = s.choice("secure", ("auto", "always", "never"), "auto")
            if not _COOKIE_NAME.match(cookie):
                raise ConfigError(path + ("cookie_name",), f"{cookie!r} is not a cookie name",
                                  "letters, digits and !#$%&'*+-.^_`|~ only (RFC 6265 token)")
            if cookie.startswith(("__Host-", "__Secure-")) and secure != "always":
                # browsers drop a prefixed cookie set without Secure: sign-in would loop
                raise ConfigError(path + ("secure",), f"a cookie named {cookie.split('-')[0]}-... needs secure: always",
                                  "serve the gateway over TLS and set session.secure: always")
            return SessionConfig(cookie, ttl, s.positive("idle_timeout", 3600), s.positive("max_lifetime", 43200), secure)
        if name == "keys":
            s = _Section(raw, path, ("dir", "algorithm", "rotate_every"))
            return KeysConfig(s.get("dir", str), s.choice("algorithm", ("ES256", "EdDSA"), "ES256"),
                              s.positive("rotate_every", 7 * 24 * 3600))
        if name == "admin":
            s = _Section(raw, path, ("token", "groups", "host"))
            token = s.get("token", str)
            if token is not None and len(token) < 16:
                raise ConfigError(path + ("token",), "the admin token is too short (< 16 characters)",
                                  "generate one: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
            host = s.get("host", str)
            if host is not None:
                host = host.lower().rstrip(".")
                if not _HOST_NAME.match(host):
                    raise ConfigError(path + ("host",), f"{host!r} is not a host name",
                                      "a DNS name of its own for the admin console, without scheme, port or path: "
                                      "e.g. ztgate-admin.corp.example")
            return AdminConfig(token, s.strings("groups"), host)
        if name == "policies":
            s = _Section(raw, path, ("dir", "reload_interval"))
            return PoliciesConfig(s.get("dir", str), s.positive("reload_interval", 1.0, float))
        if name == "scoring":
            s = _Section(raw, path, ("enrol_keystrokes", "learn"))
            return ScoringConfig(s.positive("enrol_keystrokes", 400), s.get("learn", bool, True))
        if name == "telemetry":
            s = _Section(raw, path, ("otlp_endpoint", "prometheus", "service_name", "log_format", "log_level",
                                     "trace_sample_ratio", "export_interval"))
            endpoint = s.get("otlp_endpoint", str)
            if endpoint is not None and not endpoint.startswith(("http://", "https://")):
                raise ConfigError(path + ("otlp_endpoint",), f"expected an http(s) URL, got {endpoint!r}",
                                  "the collector's OTLP/HTTP base URL, e.g. http://otel-collector:4318")
            ratio = s.get("trace_sample_ratio", float, 0.1)
            if not 0.0 <= ratio <= 1.0:
                raise ConfigError(path + ("trace_sample_ratio",), f"must be between 0 and 1, got {ratio}",
                                  "0.1 traces one request in ten; decisions are always traced")
            return TelemetryConfig(endpoint, s.get("prometheus", bool, True),
                                   s.get("service_name", str, "ztgate"), s.choice("log_format", ("json", "text"), "json"),
                                   s.choice("log_level", ("debug", "info", "warning", "error"), "info"),
                                   ratio, s.positive("export_interval", 15.0, float))
        raise AssertionError(name)

    return parse


def _events(raw: Any, path: KeyPath, store: StoreConfig) -> Any:
    import dataclasses

    from .secevents import EventsConfig
    from .secevents.config import OutboxConfig

    try:
        cfg = EventsConfig.from_dict(raw)
    except ConfigError as err:
        raise ConfigError(path + tuple(err.path), err.message, err.hint) from None
    if store.is_redis and cfg.outbox.stream == OutboxConfig.stream:
        # deployments sharing one Redis (store.prefix) must not share one outbox and its sink cursors
        cfg = dataclasses.replace(cfg, outbox=dataclasses.replace(cfg.outbox, stream=f"{store.prefix}outbox"))
    return cfg


def _webauthn(raw: Any, path: KeyPath, base: Path) -> WebAuthnConfig:
    s = _Section(raw, path, ("attestation_allowed_cas", "attestation_denied_cas", "attestation_allowed_aaguids",
                             "attestation_mds"))

    def roots(key: str) -> tuple[bytes, ...]:
        out: list[bytes] = []
        for i, name in enumerate(s.strings(key)):
            file = _existing_file(name, path + (key, i), base)
            try:
                out += split_pem(Path(file).read_bytes(), file)
            except (OSError, ValueError) as exc:
                raise ConfigError(path + (key, i), str(exc), "a PEM file of the vendor's attestation root CA(s)") from None
        return tuple(out)

    aaguids = []
    for i, text in enumerate(s.strings("attestation_allowed_aaguids")):
        try:
            aaguids.append(str(uuid.UUID(text)))
        except ValueError:
            raise ConfigError(path + ("attestation_allowed_aaguids", i), f"not a UUID: {text!r}",
                              "an authenticator model's AAGUID, e.g. cb69481e-8ff7-4039-93ec-0a2729a154a8") from None
    models: dict[str, tuple[bytes, ...]] = {}
    next_update = ""
    if s.get("attestation_mds", str) is not None:
        from .auth.mds import MdsError, read_imported

        file = _existing_file(s.data["attestation_mds"], path + ("attestation_mds",), base)
        try:
            imported = read_imported(Path(file).read_bytes())
        except (OSError, MdsError) as exc:
            raise ConfigError(path + ("attestation_mds",), f"{file}: {exc}",
                              "write it with: ztgate webauthn mds-import BLOB --root ROOT.pem --out FILE") from None
        if not imported.models:
            raise ConfigError(path + ("attestation_mds",), f"{file}: no model was kept by the import",
                              "an empty list would refuse every key")
        models, next_update = imported.roots_by_aaguid(), imported.next_update
    policy = AttestationPolicy(roots("attestation_allowed_cas"), roots("attestation_denied_cas"), frozenset(aaguids),
                               models)
    if policy.allowed_aaguids and not policy.allow_lists:
        raise ConfigError(path + ("attestation_allowed_aaguids",), "needs attestation_allowed_cas or attestation_mds",
                          "an authenticator reports its own AAGUID: only a checked attestation chain makes it true")
    return WebAuthnConfig(policy, next_update)


TOP_LEVEL = ("instance", "state_dir", "listeners", "routes", "identity", "store", "session", "keys", "admin",
             "policies", "scoring", "events", "telemetry", "webauthn", "shutdown_grace")


def from_document(doc: SourceDocument, *, base: Path | None = None) -> Config:
    base = base or Path(doc.path).resolve().parent
    try:
        top = _Section(doc.data, (), TOP_LEVEL)
        d = doc.data
        _refuse_placeholders(d, ())
        listeners = _listeners(d.get("listeners"), ("listeners",), base)
        store = _store(d.get("store"), ("store",))
        routes = _routes(d.get("routes"), ("routes",))
        _check_ports(listeners, routes)
        policies = _section_parser("policies")(d.get("policies"), ("policies",))
        if policies.dir is not None and not Path(policies.dir).is_absolute():
            policies = PoliciesConfig(str(base / policies.dir), policies.reload_interval)
        admin = _section_parser("admin")(d.get("admin"), ("admin",))
        _check_admin_host(admin, routes)
        keys = _section_parser("keys")(d.get("keys"), ("keys",))
        if keys.dir is not None and not Path(keys.dir).is_absolute():
            keys = KeysConfig(str(base / keys.dir), keys.algorithm, keys.rotate_every)
        state_dir = top.get("state_dir", str, "var/ztgate")
        if not Path(state_dir).is_absolute():
            state_dir = str(base / state_dir)
        return Config(
            source=doc.path,
            instance=top.get("instance", str, socket.gethostname()),
            listeners=listeners,
            routes=routes,
            identity=_identity(d.get("identity"), ("identity",), base),
            store=store,
            session=_section_parser("session")(d.get("session"), ("session",)),
            keys=keys,
            admin=admin,
            policies=policies,
            scoring=_section_parser("scoring")(d.get("scoring"), ("scoring",)),
            events=_events(d.get("events"), ("events",), store),
            telemetry=_section_parser("telemetry")(d.get("telemetry"), ("telemetry",)),
            webauthn=_webauthn(d.get("webauthn"), ("webauthn",), base),
            state_dir=state_dir,
            shutdown_grace=top.positive("shutdown_grace", 30.0, float),
            raw=d,
        )
    except ConfigError as err:
        raise ConfigInvalid([doc.describe(err)]) from None


PLACEHOLDER = "replace-me"


def _refuse_placeholders(node: Any, path: KeyPath) -> None:
    """The shipped templates (deploy/) mark every secret to fill in with REPLACE-ME: a gateway started with one left
    would trust a token or sign with a secret that is published in the repository."""
    if isinstance(node, dict):
        for key, value in node.items():
            _refuse_placeholders(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _refuse_placeholders(value, path + (i,))
    elif isinstance(node, str) and PLACEHOLDER in node.lower():
        raise ConfigError(path, "a REPLACE-ME placeholder from a template is still in the config (or its environment)",
                          "put the real value in its place (for secrets: in the environment variable the config "
                          "names)")


def _check_admin_host(admin: AdminConfig, routes: tuple[Route, ...]) -> None:
    if admin.host is None:
        return
    for i, route in enumerate(routes):
        if route.host is not None and route.host.lower().rstrip(".") == admin.host:
            raise ConfigError(("admin", "host"), f"{admin.host} is also the host of route {route.name!r}",
                              "the admin console needs a host no app is served on: an app's scripts would share its "
                              "origin")


def _check_ports(listeners: tuple[Listener, ...], routes: tuple[Route, ...]) -> None:
    seen: dict[tuple[str, int], KeyPath] = {}
    for i, listener in enumerate(listeners):
        key = (listener.address.host, listener.address.port)
        if key in seen and listener.address.port != 0:
            raise ConfigError(("listeners", i, "address"), f"{listener.address} is already used by another listener")
        seen[key] = ("listeners", i)
    for i, route in enumerate(routes):
        if route.listen is not None:
            key = (route.listen.host, route.listen.port)
            if key in seen and route.listen.port != 0:
                raise ConfigError(("routes", i, "listen"), f"{route.listen} is already used by another listener")
            seen[key] = ("routes", i)


def load(path: str | Path) -> Config:
    try:
        doc = load_file(path)
    except SourceError as exc:
        raise ConfigInvalid([str(exc)]) from None
    return from_document(doc)


def loads(text: str, *, file: str = "<config>", base: Path | None = None, env: dict[str, str] | None = None) -> Config:
    try:
        doc = load_text(text, file, env)
    except SourceError as exc:
        raise ConfigInvalid([str(exc)]) from None
    return from_document(doc, base=base or Path.cwd())
