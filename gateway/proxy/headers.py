"""The addon's per-request header work as one read and one write of mitmproxy's raw header fields.

mitmproxy's `Headers` API encodes the name, lower-cases every field and scans all of them on each get, set, `in`
and delete. A forwarded request needs about fifteen such operations (spoofed identity headers, the Accept family
for the browser/API choice, the session cookie, cookie stripping, X-Forwarded-*, the assertion, the Host
rewrite): measured with `python -m bench.proxy_hooks`, they were the largest part of the addon's own time.
Here the fields are read once into `Seen` and written once by `forwarded_fields`, with the same result the
Headers API gives (`tests/gateway/test_proxy_headers.py` checks the two against each other). One deliberate
difference from the code this replaced: a Cookie header without ztgate's cookie now passes byte for byte (it
used to be re-joined and stripped of surrounding white space, which mitmproxy's parser has already removed).
Beyond what the Headers API version did, every field a client could use to speak for the gateway or for a proxy
in front of the upstream is dropped, and hop-by-hop fields with it (see forwarded_fields).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from ..shortcache import short_input_cache

ASSERTION = b"x-ztgate-assertion"
INTERNAL = b"x-ztgate-internal"
_FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")
_FORWARDED_NAMES = (b"X-Forwarded-For", b"X-Forwarded-Proto", b"X-Forwarded-Host")
# what forwarded_fields does with a field, by lower-case name: 0-2 are the _FORWARDED indexes
_COOKIE, _HOST, _SPOOF, _AUTHORIZATION, _CONNECTION, _UPGRADE, _TE = 3, 4, 5, 6, 7, 8, 9
# Dropped from every client request (_SPOOF): what upstream frameworks read as the client's address, scheme, host or
# URL (only the gateway may say who the client is), method overrides (a restricted session's denied DELETE must not
# arrive as a POST saying "really DELETE"), and hop-by-hop fields (RFC 9110 7.6.1; Connection, Upgrade and TE are
# rebuilt instead, see forwarded_fields), with `Trailer`: the trailer fields it announces are discarded on arrival
# (gateway/proxy/trailers.py), so the upstream must not wait for them.
_DROPPED = (ASSERTION, INTERNAL, b"forwarded", b"x-real-ip", b"true-client-ip", b"x-client-ip", b"x-cluster-client-ip",
            b"x-original-url", b"x-rewrite-url", b"x-http-method-override", b"x-http-method", b"x-method-override",
            b"keep-alive", b"proxy-connection", b"proxy-authorization", b"trailer")
_ACTIONS = {**{name: i for i, name in enumerate(_FORWARDED)}, b"cookie": _COOKIE, b"host": _HOST,
            **{name: _SPOOF for name in _DROPPED}, b"authorization": _AUTHORIZATION, b"connection": _CONNECTION,
            b"upgrade": _UPGRADE, b"te": _TE}
# never dropped because the client's Connection header names them: the body's framing and the routing depend on them
_FRAMING = frozenset({b"host", b"content-length", b"transfer-encoding"})
_CONNECTION_KEPT = (b"close", b"keep-alive")  # what mitmproxy itself reads of Connection (it keeps connections by it)
# what the access decision, the policies and the client binding read (values joined as Headers.get joins them),
# by lower-case raw name
_READ = {name: name.decode("ascii") for name in (b"host", b"accept", b"authorization", b"x-requested-with",
                                                   b"sec-fetch-mode", b"user-agent", b"content-type",
                                                   b"x-forwarded-for", b"x-forwarded-proto", b"connection")}


@short_input_cache(maxsize=1024, longest=128)
def _action(name: bytes) -> int | None:
    """The action for a lower-case name not in _ACTIONS: the gateway's own namespace and every X-Forwarded-*
    go, and so does a name with "_" that some server reads as a protected one (CGI/WSGI turn X_Ztgate_Assertion
    into HTTP_X_ZTGATE_ASSERTION, the very variable X-Ztgate-Assertion becomes)."""
    if name.startswith((b"x-ztgate-", b"x-forwarded-")):
        return _SPOOF
    if b"_" in name:
        dashed = name.replace(b"_", b"-")
        if dashed in _ACTIONS or _action(dashed) is not None:
            return _SPOOF
    return None


@dataclass(slots=True)
class Seen:
    """What one pass over a request's header fields found."""

    values: dict[str, str] = field(default_factory=dict)  # lower-case name -> value, for the names in _READ
    cookies: list[str] = field(default_factory=list)  # every Cookie header, in order

    def get(self, name: str, default: str = "") -> str:
        """Like Headers.get for the names in _READ (so access.wants_html can take a Seen)."""
        return self.values.get(name, default)


def read(fields: tuple[tuple[bytes, bytes], ...]) -> Seen:
    values: dict[str, str] = {}
    cookies: list[str] = []
    for raw_name, raw_value in fields:
        name = raw_name.lower()
        if name == b"cookie":
            cookies.append(raw_value.decode("utf-8", "surrogateescape"))
            continue
        key = _READ.get(name)
        if key is not None:
            value = raw_value.decode("utf-8", "surrogateescape")
            values[key] = f"{values[key]}, {value}" if key in values else value
    return Seen(values, cookies)


def cookie(cookie_headers: list[str], name: str) -> str | None:
    """The first value of cookie `name` (as mitmproxy's request.cookies.get would give it), or None."""
    prefix = name + "="
    for header in cookie_headers:
        if prefix not in header:
            continue
        if ";" not in header and header.startswith(prefix):  # the header is this one cookie (API clients)
            return _unquoted(header[len(prefix):])
        for part in header.split(";"):
            part = part.strip()
            if part.startswith(prefix):
                return _unquoted(part[len(prefix):])
    return None


def _unquoted(value: str) -> str:
    """A cookie value without its surrounding spaces and one pair of double quotes (RFC 6265 allows them)."""
    value = value.strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def strip_cookie(value: str, name: str) -> str:
    """One Cookie header without cookie `name` (every other pair as it was), or "" if nothing is left."""
    prefix = name + "="
    return ";".join(p for p in value.split(";") if not p.strip().startswith(prefix)).strip()


@functools.lru_cache(maxsize=8)  # one cookie name per gateway
def _cookie_prefix(cookie_name: str) -> bytes:
    return cookie_name.encode("utf-8", "surrogateescape") + b"="


def forwarded_fields(fields: tuple[tuple[bytes, bytes], ...], *, cookie_name: str, forwarded: tuple[str, str, str],
                     assertion: str, host: bytes | None, drop_authorization: bool,
                     connection: str = "") -> tuple[tuple[bytes, bytes], ...]:
    """The fields the upstream gets: the client's X-Ztgate-*, forwarding, method-override and hop-by-hop fields
    dropped (see _DROPPED and _action; and Authorization when it carried the session token), cookie `cookie_name`
    removed from the Cookie headers (a header left empty goes), X-Forwarded-For / -Proto / -Host and the assertion
    set (the first field of a name takes the value, later ones go, a missing one is added at the end: what
    Headers[name] = value does), and Host set to `host` if the request has one and `host` is given (what
    Request.host/port do to an HTTP/1 request's Host header).

    `connection` is the client's Connection header (several joined with ", "). The fields it names go (RFC 9110
    7.6.1: they were meant for the gateway), except those the body's framing and the route depend on, and the
    Connection header itself is rebuilt from what the gateway acts on: close and keep-alive (mitmproxy reads them
    from these very fields to keep or close the client's connection), and upgrade with an `Upgrade: websocket`
    (the only protocol mitmproxy can switch to; an `Upgrade: h2c` would tunnel past the gateway). TE passes only
    as "trailers", the one value HTTP/2 allows (gRPC needs it)."""
    cookie_prefix = _cookie_prefix(cookie_name)
    client_ip, scheme, forwarded_host = forwarded
    fwd_values = (client_ip.encode("utf-8", "surrogateescape"), scheme.encode("utf-8", "surrogateescape"),
                  forwarded_host.encode("utf-8", "surrogateescape"))
    fwd_done = [False, False, False]
    host_done = False
    named = _connection_names(connection) if connection else frozenset()
    out: list[tuple[bytes, bytes]] = []
    for raw_name, value in fields:
        name = raw_name.lower()
        action = _ACTIONS.get(name)
        if action is None:
            action = _action(name)
        if named and name in named and name not in _FRAMING and action not in (_CONNECTION, _UPGRADE):
            continue
        if action is None or (action == _AUTHORIZATION and not drop_authorization) or (
                action == _HOST and host is None):
            out.append((raw_name, value))
        elif action == _COOKIE:
            if cookie_prefix in value:
                if b";" not in value and value.startswith(cookie_prefix):
                    continue  # the header is ztgate's cookie alone: what strip_cookie leaves of it is ""
                value = strip_cookie(value.decode("utf-8", "surrogateescape"), cookie_name).encode(
                    "utf-8", "surrogateescape")
                if not value:
                    continue
            out.append((raw_name, value))
        elif action <= 2:  # X-Forwarded-*: the first field of the name takes the value, later ones go
            if not fwd_done[action]:
                fwd_done[action] = True
                out.append((raw_name, fwd_values[action]))
        elif action == _HOST:
            if not host_done:
                host_done = True
                out.append((raw_name, host))  # type: ignore[arg-type]
        elif action == _CONNECTION:
            kept = _connection_kept(connection, _websocket_upgrade(fields))
            if kept:
                out.append((raw_name, kept))
                connection = ""  # several Connection fields become one
        elif action == _UPGRADE:
            if b"upgrade" in named and value.strip().lower() == b"websocket":
                out.append((raw_name, value))
        elif action == _TE:
            if value.strip().lower() == b"trailers":
                out.append((raw_name, value))
        # else: spoofed, hop-by-hop, or the bearer session token: dropped
    for i, done in enumerate(fwd_done):
        if not done:
            out.append((_FORWARDED_NAMES[i], fwd_values[i]))
    out.append((b"X-Ztgate-Assertion", assertion.encode("ascii")))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _connection_names(connection: str) -> frozenset[bytes]:
    return frozenset(t.strip().lower().encode("latin-1", "replace") for t in connection.split(",") if t.strip())


def _websocket_upgrade(fields: tuple[tuple[bytes, bytes], ...]) -> bool:
    return any(n.lower() == b"upgrade" and v.strip().lower() == b"websocket" for n, v in fields)


def _connection_kept(connection: str, websocket: bool) -> bytes:
    names = _connection_names(connection) if connection else frozenset()
    kept = [token for token in _CONNECTION_KEPT if token in names]
    if websocket and b"upgrade" in names:
        kept.append(b"Upgrade")
    return b", ".join(kept)
