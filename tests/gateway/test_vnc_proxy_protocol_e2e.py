"""Raw VNC behind a TCP load balancer that names the client in a PROXY protocol header (HAProxy `send-proxy`): the
connection is bound to the session signed in from the client's address, not the balancer's, and nothing reaches
either side before it is. A real `ztgate run` in front of x11vnc on Xvfb; this test's socket plays the balancer (what
the gateway sees of a real one: its address, then the header, then the client's bytes)."""

from __future__ import annotations

import ipaddress
import secrets
import shutil
import socket

import httpx
import pytest

from gateway.proxy.proxy_protocol import V2_SIGNATURE
from tests.support.processes import (free_port, gateway_config, login, make_users, run_echo, run_gateway,
                                     run_vnc_server, session_sid, shadow_default_policies, wait_until)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("x11vnc")),
                                                   reason="Xvfb and x11vnc are needed for the VNC route")]
CLIENT = "203.0.113.7"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vnc-pp")
    users = make_users(tmp / "users.yaml", [{"username": "p1"}])
    port, vnc_listen = free_port(), free_port()
    with run_echo(tmp) as echo, run_vnc_server(tmp) as vnc_port:
        cfg = gateway_config(port=port, upstream=echo, tmp=tmp, users_file=tmp / "users.yaml",
                             admin_token=secrets.token_urlsafe(24),
                             extra_routes=[{"name": "desk", "kind": "vnc", "upstream": f"tcp://127.0.0.1:{vnc_port}",
                                            "listen": f"127.0.0.1:{vnc_listen}", "trusted_proxies": ["127.0.0.1"]}],
                             policies_dir=str(shadow_default_policies(tmp / "policies")))
        cfg["listeners"][0]["trusted_proxies"] = ["127.0.0.1"]  # the web side is behind the balancer too
        with run_gateway(tmp, cfg) as gw:
            gw.extra_ports["vnc"] = vnc_listen
            with httpx.Client(base_url=gw.url, headers={"X-Forwarded-For": CLIENT}) as c:
                assert login(c, users["p1"]).status_code == 303
                yield gw, session_sid(c)


def _through_balancer(gw, first: bytes) -> bytes:
    """Connects as the balancer, sends `first`, returns what the gateway answers before closing or within 5 s."""
    with socket.create_connection(("127.0.0.1", gw.extra_ports["vnc"]), timeout=10) as s:
        s.sendall(first)
        s.settimeout(5)
        try:
            return s.recv(4096)
        except (ConnectionResetError, TimeoutError):
            return b""


def test_the_header_names_the_client_whose_session_the_connection_joins(env):
    gw, sid = env
    v1 = f"PROXY TCP4 {CLIENT} 127.0.0.1 51234 5901\r\n".encode()
    with socket.create_connection(("127.0.0.1", gw.extra_ports["vnc"]), timeout=10) as s:
        s.sendall(v1)
        s.settimeout(10)
        assert s.recv(12) == b"RFB 003.008\n"  # the server's banner, held until the client was known
        wait_until(lambda: gw.admin("GET", f"/sessions/{sid}").json()["connections"] == 1, timeout=10,
                   what="the VNC connection to join the session")
        s.sendall(b"RFB 003.008\n")  # the client's own bytes after the header reach the server
        assert s.recv(64)  # security types: the RFB handshake goes on


def test_v2_works_too(env):
    gw, _ = env
    body = ipaddress.IPv4Address(CLIENT).packed + ipaddress.IPv4Address("127.0.0.1").packed + b"\xc8\x22\x17\x0d"
    header = V2_SIGNATURE + b"\x21\x11" + len(body).to_bytes(2, "big") + body
    assert _through_balancer(gw, header).startswith(b"RFB ")


@pytest.mark.parametrize("first", [
    b"PROXY TCP4 198.51.100.1 127.0.0.1 51234 5901\r\n",  # a client without a session
    b"RFB 003.008\n",  # no header: the balancer's own address binds nobody
    b"PROXY UNKNOWN\r\n",  # the balancer's own connection
    V2_SIGNATURE + b"\x20\x00\x00\x00",  # v2 LOCAL: a health check
])
def test_nothing_passes_for_a_client_without_a_session(env, first):
    gw, _ = env
    assert _through_balancer(gw, first) == b""
