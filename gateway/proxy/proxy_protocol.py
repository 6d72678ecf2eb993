"""The PROXY protocol header (v1 text, v2 binary) a TCP load balancer puts before a connection's first byte.

Raw VNC carries no cookie: a connection belongs to the live session signed in from the same address. Behind a load
balancer that ends TCP (HAProxy `send-proxy`, nginx `proxy_protocol on`, Envoy, Traefik) that address is the
balancer's, so the balancer names the client in this header instead (https://www.haproxy.org/download/2.9/doc/
proxy-protocol.txt). mitmproxy does not read it (mitmproxy issue 4776), so the addon does, for the routes that trust
their balancer. Pure: bytes in, the client's address (or why not) out.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V1_PREFIX = b"PROXY "
V1_MAX = 107  # the longest v1 line the specification allows, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_MAX = 16 + 4096  # addresses plus TLVs: more than any balancer sends; a peer that sends more is refused


class NotProxyProtocol(ValueError):
    """The bytes cannot be a PROXY protocol header: the message says why (safe to log, it names no payload)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    length: int  # bytes of the stream the header took; the connection's own data follows
    client_ip: str | None  # None: the balancer's own connection (v2 LOCAL, v1 UNKNOWN), or not an IP family


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of `data`; None while more bytes are needed; NotProxyProtocol if it is not one."""
    if not data:
        return None
    if data[:len(V1_PREFIX)] == V1_PREFIX[:len(data)]:
        return _v1(data) if len(data) > len(V1_PREFIX) else None
    if data[:len(V2_SIGNATURE)] == V2_SIGNATURE[:len(data)]:
        return _v2(data)
    raise NotProxyProtocol("the connection did not start with a PROXY protocol header")


def _v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise NotProxyProtocol(f"PROXY v1 line longer than {V1_MAX} bytes")
        return None
    parts = data[:end].split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        return ProxyHeader(end + 2, None)
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise NotProxyProtocol("malformed PROXY v1 line")
    try:
        source = ipaddress.ip_address(parts[2].decode("ascii"))
        ipaddress.ip_address(parts[3].decode("ascii"))
        ports = [int(p) for p in parts[4:6]]
    except (UnicodeDecodeError, ValueError):
        raise NotProxyProtocol("malformed address or port in a PROXY v1 line") from None
    if source.version != (4 if parts[1] == b"TCP4" else 6) or not all(0 <= p <= 65535 for p in ports):
        raise NotProxyProtocol("malformed address or port in a PROXY v1 line")
    return ProxyHeader(end + 2, str(source))


def _v2(data: bytes) -> ProxyHeader | None:
    if len(data) < 16:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2 or command > 1:
        raise NotProxyProtocol("unsupported PROXY v2 version or command")
    length = 16 + int.from_bytes(data[14:16], "big")
    if length > V2_MAX:
        raise NotProxyProtocol(f"PROXY v2 header longer than {V2_MAX} bytes")
    if len(data) < length:
        return None
    if command == 0:  # LOCAL: the balancer's own connection (a health check), no client behind it
        return ProxyHeader(length, None)
    family, body = data[13] >> 4, data[16:length]
    if family == 1 and len(body) >= 12:
        return ProxyHeader(length, str(ipaddress.IPv4Address(body[:4])))
    if family == 2 and len(body) >= 36:
        return ProxyHeader(length, str(ipaddress.IPv6Address(body[:16])))
    if family in (1, 2):
        raise NotProxyProtocol("PROXY v2 address block too short")
    return ProxyHeader(length, None)  # UNSPEC or UNIX: no IP to bind by
