"""The addon's per-request header work as one read and one write of mitmproxy's raw header fields.

mitmproxy's `Headers` API encodes the name, lower-cases every field and scans all of them on each get, set, `in`
and delete. A forwarded request needs about fifteen such operations (spoofed identity headers, the Accept family
for the browser/API choice, the session cookie, cookie stripping, X-Forwarded-*, the assertion, the Host
rewrite): measured with `python -m bench.proxy_hooks`, they were the largest part of the addon's own time.
Here the fields are read once into `Seen` and written once by `forwarded_fields`, with the same result the
Headers API gives (`tests/gateway/test_proxy_headers.py` checks the two against each other). One deliberate
difference from the code this replaced: a Cookie header without ztgate's cookie now passes byte for byte (it
used to be re-joined and stripped of surrounding white space, which mitmproxy's parser has already removed).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

ASSERTION = b"x-ztgate-assertion"
INTERNAL = b"x-ztgate-internal"
_FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")
_FORWARDED_NAMES = (b"X-Forwarded-For", b"X-Forwarded-Proto", b"X-Forwarded-Host")
# what forwarded_fields does with a field, by lower-case name: 0-2 are the _FORWARDED indexes
_COOKIE, _HOST, _SPOOF, _AUTHORIZATION = 3, 4, 5, 6
_ACTIONS = {**{name: i for i, name in enumerate(_FORWARDED)}, b"cookie": _COOKIE, b"host": _HOST,
            ASSERTION: _SPOOF, INTERNAL: _SPOOF, b"authorization": _AUTHORIZATION}
# what the access decision, the policies and the client binding read (values joined as Headers.get joins them),
# by lower-case raw name
_READ = {name: name.decode("ascii") for name in (b"host", b"accept", b"authorization", b"x-requested-with",
                                                   b"sec-fetch-mode", b"user-agent", b"content-type",
                                                   b"x-forwarded-for", b"x-forwarded-proto")}


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
                     assertion: str, host: bytes | None, drop_authorization: bool) -> tuple[tuple[bytes, bytes], ...]:
    """The fields the upstream gets: X-Ztgate-Assertion and X-Ztgate-Internal from the client dropped (and
    Authorization when it carried the session token), cookie `cookie_name` removed from the Cookie headers (a
    header left empty goes), X-Forwarded-For / -Proto / -Host and the assertion set (the first field of a name
    takes the value, later ones go, a missing one is added at the end: what Headers[name] = value does), and
    Host set to `host` if the request has one and `host` is given (what Request.host/port do to an HTTP/1
    request's Host header)."""
    cookie_prefix = _cookie_prefix(cookie_name)
    client_ip, scheme, forwarded_host = forwarded
    fwd_values = (client_ip.encode("utf-8", "surrogateescape"), scheme.encode("utf-8", "surrogateescape"),
                  forwarded_host.encode("utf-8", "surrogateescape"))
    fwd_done = [False, False, False]
    host_done = False
    out: list[tuple[bytes, bytes]] = []
    for raw_name, value in fields:
        action = _ACTIONS.get(raw_name.lower())
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
        # else: spoofed, or the bearer session token: dropped
    for i, done in enumerate(fwd_done):
        if not done:
            out.append((_FORWARDED_NAMES[i], fwd_values[i]))
    out.append((b"X-Ztgate-Assertion", assertion.encode("ascii")))
    return tuple(out)
