"""The PROXY protocol header parser (pure): a balancer's header names the client, anything else is refused."""

from __future__ import annotations

import ipaddress

import pytest

from gateway.proxy.proxy_protocol import V2_SIGNATURE, NotProxyProtocol, ProxyHeader, parse

RFB = b"RFB 003.008\n"


def v2(command: int, family: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, family]) + len(body).to_bytes(2, "big") + body


def test_v1_names_the_client_and_leaves_the_stream_after_it():
    line = b"PROXY TCP4 203.0.113.7 10.0.0.5 51234 5901\r\n"
    assert parse(line + RFB) == ProxyHeader(len(line), "203.0.113.7")
    assert parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 51234 5901\r\n").client_ip == "2001:db8::7"
    assert parse(b"PROXY UNKNOWN\r\n") == ProxyHeader(15, None)


def test_v2_names_the_client_or_says_it_is_the_balancer_itself():
    body = ipaddress.IPv4Address("203.0.113.7").packed + ipaddress.IPv4Address("10.0.0.5").packed + b"\xc8\x22\x17\x0d"
    header = v2(1, 0x11, body)
    assert parse(header + RFB) == ProxyHeader(len(header), "203.0.113.7")
    body6 = ipaddress.IPv6Address("2001:db8::7").packed + ipaddress.IPv6Address("2001:db8::1").packed + b"\0" * 4
    assert parse(v2(1, 0x21, body6)).client_ip == "2001:db8::7"
    assert parse(v2(0, 0x00, b"")) == ProxyHeader(16, None)  # LOCAL: a health check
    with_tlv = v2(1, 0x11, body + b"\x04\x00\x01\x00")  # a NOOP TLV after the addresses
    assert parse(with_tlv).length == len(with_tlv)


@pytest.mark.parametrize("partial", [b"", b"PRO", b"PROXY ", b"PROXY TCP4 203.0.113.7", V2_SIGNATURE[:5],
                                     V2_SIGNATURE + b"\x21\x11\x00\x0c" + b"\x01\x02"])
def test_a_header_split_across_reads_waits_for_the_rest(partial):
    assert parse(partial) is None


@pytest.mark.parametrize("garbage, why", [
    (RFB, "did not start with a PROXY protocol header"),
    (b"GET / HTTP/1.1\r\n", "did not start"),
    (b"PROXY TCP4 203.0.113.7 10.0.0.5 51234\r\n", "malformed PROXY v1 line"),
    (b"PROXY TCP4 not-an-ip 10.0.0.5 1 2\r\n", "malformed address"),
    (b"PROXY TCP4 2001:db8::7 10.0.0.5 1 2\r\n", "malformed address"),
    (b"PROXY TCP4 203.0.113.7 10.0.0.5 1 70000\r\n", "malformed address or port"),
    (b"PROXY " + b"x" * 200, "longer than 107"),
    (V2_SIGNATURE + b"\x11\x11\x00\x00", "unsupported PROXY v2"),
    (V2_SIGNATURE + b"\x21\x11\xff\xff", "longer than"),
    (v2(1, 0x11, b"\x01\x02"), "address block too short"),
])
def test_anything_else_is_refused_with_a_reason(garbage, why):
    with pytest.raises(NotProxyProtocol, match=why):
        parse(garbage)
