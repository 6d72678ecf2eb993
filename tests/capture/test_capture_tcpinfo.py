import socket
import sys

import pytest

from gateway.capture import tcpinfo
from scoring.events import Kind, Source


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO is Linux-only")
def test_rtt_of_a_real_loopback_connection():
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        conn, _ = server.accept()
        with client, conn:
            client.sendall(b"ping")
            conn.recv(4)
            conn.sendall(b"pong")
            client.recv(4)
            got = tcpinfo.rtt(client)
    assert got is not None
    rtt_ms, rttvar_ms = got
    assert 0 < rtt_ms < 1000 and 0 <= rttvar_ms < 1000


def test_rtt_of_something_else_is_none():
    assert tcpinfo.rtt(None) is None
    assert tcpinfo.rtt(object()) is None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert tcpinfo.rtt(udp) is None


def test_net_event():
    batch = tcpinfo.net_event(12.5, 3.0, 1.7e12)
    assert len(batch) == 1
    e = batch[0]
    assert e["kind"] == Kind.NET and e["source"] == Source.GATEWAY
    assert e["value"] == 12.5 and e["y"] == 3.0 and e["t_arr"] == 1.7e12 == e["t_src"]
