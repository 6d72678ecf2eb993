"""Who the client is when a load balancer or reverse proxy stands in front of the gateway.

A listener's `trusted_proxies` names the networks of those proxies. A connection from anywhere else is the client
itself, and whatever X-Forwarded-* it sends is ignored (the gateway is the edge and replaces them). A connection
from a trusted proxy speaks for a client further out: the client is the rightmost X-Forwarded-For entry that is not
itself a trusted proxy (nginx's real_ip_recursive, Pomerium's and oauth2-proxy's rule), because every proxy appends
the address it saw and only the entries our own proxies appended can be believed. X-Forwarded-Proto from a trusted
proxy says whether the browser used TLS (cookies keep their Secure flag behind a TLS-terminating balancer).

It also says whether the TCP connection ends at a proxy: then the kernel's RTT of that connection measures the
proxy's leg, not the client's, and must not stand for the client's network round trip.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Client:
    ip: str
    scheme: str  # http | https, as the browser used it
    via_proxy: bool  # the TCP peer is a trusted proxy (its RTT is not the client's)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # a dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d
    return mapped or address


def is_trusted(ip: str, trusted: tuple[Network, ...]) -> bool:
    if not trusted:
        return False
    address = _address(ip)
    return address is not None and any(address in net for net in trusted)


def client(peer_ip: str, tls: bool, trusted: tuple[Network, ...], forwarded_for: str | None,
           forwarded_proto: str | None) -> Client:
    """The client behind a connection from `peer_ip` (X-Forwarded-* values as received, several headers joined
    with ", ")."""
    scheme = "https" if tls else "http"
    if not is_trusted(peer_ip, trusted):
        return Client(peer_ip, scheme, False)
    ip = peer_ip
    for hop in reversed((forwarded_for or "").split(",")):
        address = _address(hop)
        if address is None:
            break  # garbage in the chain: nothing left of it can be believed, the last trusted hop is the client
        ip = str(address)
        if not any(address in net for net in trusted):
            break
    proto = (forwarded_proto or "").rsplit(",", 1)[-1].strip().lower()  # the nearest proxy's word
    return Client(ip, proto if proto in ("http", "https") else scheme, True)


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses) to networks; ValueError names the first that is not one."""
    out = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP network (e.g. 10.0.0.0/8, 192.0.2.7, 2001:db8::/32)") from None
    return tuple(out)
