"""Upstream certificate checks are per route: `ssl_verify: false` on one route (a lab box with a self-signed
certificate) must not switch them off for the others, as mitmproxy's global `ssl_insecure` did. A real `ztgate run`
and two real HTTPS upstreams with self-signed certificates."""

from __future__ import annotations

import http.server
import secrets
import ssl
import threading

import httpx
import pytest

from tests.gateway.test_tls_http2_e2e import self_signed
from tests.support.processes import free_port, gateway_config, login, make_users, run_gateway

pytestmark = pytest.mark.slow


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = b"upstream says hello"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _https_upstream(tmp, name: str) -> http.server.ThreadingHTTPServer:
    d = tmp / name
    d.mkdir()
    cert, key = self_signed(d)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_ssl_verify_false_covers_its_own_route_only(tmp_path):
    lab, prod = _https_upstream(tmp_path, "lab"), _https_upstream(tmp_path, "prod")
    users = make_users(tmp_path / "users.yaml", [{"username": "ann"}])
    port = free_port()
    try:
        cfg = gateway_config(port=port, upstream=f"https://127.0.0.1:{prod.server_address[1]}", tmp=tmp_path,
                             users_file=tmp_path / "users.yaml", admin_token=secrets.token_urlsafe(24),
                             extra_routes=[{"name": "lab", "path_prefix": "/lab",
                                            "upstream": f"https://127.0.0.1:{lab.server_address[1]}",
                                            "ssl_verify": False}])
        with run_gateway(tmp_path, cfg) as gw, httpx.Client(base_url=gw.url, timeout=10) as c:
            login(c, users["ann"])
            assert c.get("/lab/x").text == "upstream says hello"
            # the default route's upstream presents a certificate nobody signed: refused, not proxied
            r = c.get("/anything")
            assert r.status_code == 502 and "upstream says hello" not in r.text
    finally:
        lab.shutdown()
        prod.shutdown()
