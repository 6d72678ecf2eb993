"""One canonical path and host per request, so the gateway decides on what the upstream will serve.

Upstream servers decode and normalise a request path before they look it up: `/%61dmin`, `/x/../admin`, `//admin`,
`/admin;x=1` (Tomcat) and `/ADMIN` (IIS) may all be `/admin` there. A gateway that compares the raw path with a
deny list or a route prefix is then bypassed. Here, as Envoy does:

- `canonical_path` is the path the upstream gets (the addon forwards it when it differs from the raw one):
  percent-encoded unreserved characters decoded (RFC 3986 6.2.2.2), dot segments removed (RFC 3986 5.2.4),
  repeated slashes merged. A path the upstream could read in more than one way is refused instead (`BadRequest`):
  an encoded slash, backslash or NUL, a literal backslash (IIS reads it as a slash), an invalid escape, a control
  character, or a `..;x` segment (Tomcat reads it as `..`). Other escapes are left as they are: the upstream
  decodes them once, and so does `decision_path`.
- `decision_path` is what deny lists and policies compare: the canonical path fully decoded, `;params` stripped
  from every segment, no trailing slash, lower-case. These lists only ever restrict or step up, so matching more
  than one upstream would serve is the safe side.
- `canonical_host` is the Host the routes and policies see: lower-case, one trailing dot and the port removed; a
  value that is no host name or IP literal is refused.

Pure functions, no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from urllib.parse import unquote

from policies.matching import fold_path

from ..shortcache import short_input_cache


class BadRequest(ValueError):
    """The request names its target in a way the gateway refuses (400)."""


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
# %2F / %5C would be a slash to some upstreams and not to others; %00 ends a string in C
_AMBIGUOUS_ESCAPES = frozenset({"2f", "5c", "00"})
_PLAIN = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")  # a path with nothing to decode or normalise, mostly


CACHED_LENGTH = 1024  # longer paths are not kept (gateway/shortcache.py); the proxy refuses targets over 8 KiB


@short_input_cache(maxsize=4096, longest=CACHED_LENGTH)  # the paths of one application repeat
def canonical_path(raw: str) -> str:
    """The canonical form of a request path (without its query); BadRequest if it is ambiguous."""
    if not raw.startswith("/"):
        raise BadRequest("the request path must start with /")
    if "%" in raw:
        raw = _decode_unreserved(raw)
    elif _PLAIN.fullmatch(raw) and "/." not in raw and "//" not in raw:
        return raw  # the common case: already canonical
    if "\\" in raw or any(ord(c) < 0x20 or ord(c) == 0x7f for c in raw):
        raise BadRequest("backslashes and control characters are not allowed in the path")
    segments = raw.split("/")
    for segment in segments:
        if ";" in segment and segment.split(";", 1)[0] in (".", ".."):
            raise BadRequest("a dot segment with parameters is ambiguous")
    return _remove_dot_segments(segments)


def _decode_unreserved(raw: str) -> str:
    parts = raw.split("%")
    out = [parts[0]]
    for part in parts[1:]:
        code = part[:2]
        if len(code) < 2 or not _HEX.issuperset(code):
            raise BadRequest("invalid percent-escape in the path")
        if code.lower() in _AMBIGUOUS_ESCAPES:
            raise BadRequest("encoded slash, backslash or NUL in the path")
        char = chr(int(code, 16))
        out.append(char + part[2:] if char in _UNRESERVED else "%" + code.upper() + part[2:])
    return "".join(out)


def _remove_dot_segments(segments: list[str]) -> str:
    """RFC 3986 5.2.4 on an absolute path already split at "/", with empty segments (repeated slashes) merged."""
    out: list[str] = []
    for segment in segments[1:-1]:
        if segment == "..":
            if out:
                out.pop()
        elif segment not in (".", ""):
            out.append(segment)
    last = segments[-1] if len(segments) > 1 else ""
    if last == "..":
        if out:
            out.pop()
        last = ""
    elif last == ".":
        last = ""
    # a final dot segment leaves a directory: "/a/b/.." is "/a/"
    return "/" + "".join(s + "/" for s in out) + last


@short_input_cache(maxsize=4096, longest=CACHED_LENGTH)
def decision_path(canonical: str) -> str:
    """What deny lists and policies match a canonical path as (see the module docstring)."""
    if "%" in canonical:
        canonical = unquote(canonical, errors="surrogateescape")
    if ";" in canonical:
        segments = [s.split(";", 1)[0] for s in canonical.split("/")]
        canonical = _remove_dot_segments(segments)  # "/a/..%3B/b": ".." only once the parameters are gone
    return fold_path(canonical)


_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


@lru_cache(maxsize=1024)
def canonical_host(value: str) -> str:
    """The host of a Host header or :authority ("" stays ""); BadRequest if it is not a host name or IP literal."""
    if not value:
        return ""
    value = value.lower()
    if value.startswith("["):  # [v6] or [v6]:port
        end = value.find("]")
        if end < 0:
            raise BadRequest("invalid Host")
        host, rest = value[1:end], value[end + 1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise BadRequest("invalid Host") from None
        _port(rest)
        return f"[{host}]"
    host, colon, port = value.partition(":")
    if colon:
        _port(":" + port)
    if host.endswith("."):
        host = host[:-1]
    if not host or len(host) > 253 or not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise BadRequest("invalid Host")
    return host


def _port(rest: str) -> None:
    # "host:" is allowed (RFC 3986: the port may be empty)
    if rest and (rest[0] != ":" or rest[1:] and not (rest[1:].isascii() and rest[1:].isdigit()
                                                     and int(rest[1:]) <= 65535)):
        raise BadRequest("invalid port in Host")
