"""TLS termination and HTTP/2 on a gateway listener: a real `ztgate run` with a self-signed certificate."""

from __future__ import annotations

import datetime
import ipaddress
import secrets
import os
import ssl
import subprocess
import sys

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.processes import free_port, gateway_config, login, make_users, run_echo, run_gateway

pytestmark = pytest.mark.slow


def self_signed(tmp) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ztgate test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(tmp)
    users = make_users(tmp / "users.yaml", [{"username": "t1"}, {"username": "t2"}])
    port = free_port()
    with run_echo(tmp) as echo:
        cfg = gateway_config(port=port, upstream=echo, tmp=tmp, users_file=tmp / "users.yaml",
                             admin_token=secrets.token_urlsafe(24),
                             extra_routes=[{"name": "echo", "upstream": echo, "path_prefix": "/echo",
                                            "audience": "echo", "sensor": False}])
        cfg["listeners"] = [{"address": f"127.0.0.1:{port}", "tls": {"cert": cert, "key": key}}]
        with run_gateway(tmp, cfg) as gw:
            yield gw, users, cert


class H2FirstContext(ssl.SSLContext):
    """httpx (httpcore) offers ALPN ["http/1.1", "h2"] in that order, and mitmproxy honours the client's order, so
    httpx alone never gets HTTP/2 from it. Browsers offer h2 first; this context does the same."""

    def set_alpn_protocols(self, protocols):  # noqa: D401 - ssl API
        super().set_alpn_protocols(sorted(protocols, key=lambda p: p != "h2"))

    @classmethod
    def trusting(cls, cafile: str) -> "H2FirstContext":
        context = cls(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile)
        return context


def _seen(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 200, r.text
    return dict(r.json()["headers"])


def test_https_login_sets_a_secure_cookie_and_forwards_https(env):
    gw, users, cert = env
    assert gw.url.startswith("https://")
    context = ssl.create_default_context(cafile=cert)  # the gateway serves the configured certificate
    with httpx.Client(base_url=gw.url, verify=context) as c:
        r = login(c, users["t1"], next_url="/echo/x")
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert "ztgate_session=" in cookie and "Secure" in cookie and "HttpOnly" in cookie
        r = c.get("/echo/x", headers={"Accept": "application/json"})
        assert r.http_version == "HTTP/1.1"
        headers = _seen(r)
        assert headers["x-forwarded-proto"] == "https"
        assert jwt.decode(headers["x-ztgate-assertion"], options={"verify_signature": False})["sub"] == "t1"


def test_http2_carries_the_session_and_gets_the_assertion(env):
    gw, users, cert = env
    with httpx.Client(base_url=gw.url, verify=H2FirstContext.trusting(cert), http2=True) as c:
        r = login(c, users["t2"], next_url="/echo/h2")
        assert r.status_code == 303 and r.http_version == "HTTP/2"
        for i in range(3):  # several streams on the one connection
            r = c.get(f"/echo/h2?i={i}", headers={"Accept": "application/json"})
            assert r.http_version == "HTTP/2"
            headers = _seen(r)
            claims = jwt.decode(headers["x-ztgate-assertion"], options={"verify_signature": False})
            assert claims["sub"] == "t2" and claims["aud"] == "echo"
            assert headers["x-forwarded-proto"] == "https"
            assert "ztgate_session" not in headers.get("cookie", "")
        r = c.post("/echo/h2", content=b"x" * 200_000, headers={"Accept": "application/json"})
        assert r.json()["body_length"] == 200_000
    anonymous = httpx.get(f"{gw.url}/echo/h2", verify=False, headers={"Accept": "application/json"})
    assert anonymous.status_code == 401


def test_plain_http_on_the_tls_listener_gets_no_session(env):
    gw, _, _ = env
    # a reverse:http listener also accepts plain clients; without a session they are sent to sign in
    r = httpx.get(f"http://127.0.0.1:{gw.port}/echo/x", headers={"Accept": "application/json"})
    assert r.status_code == 401


def _cli(gw, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("ZTGATE_CA", "ZTGATE_INSECURE")}
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", "sessions", "list", "--json",
                           "--token", gw.admin_token, *extra], capture_output=True, text=True, timeout=60, env=env)


def test_the_admin_cli_checks_the_gateways_certificate_when_told_which_ca(env, tmp_path):
    """The CLI used to send the admin token with verify=False whatever the URL; now it checks against the system
    CAs or --ca (loopback, the gateway's own host, is not checked unless --ca says so)."""
    gw, _, cert = env
    url = f"https://127.0.0.1:{gw.port}"
    assert _cli(gw, "--url", url, "--ca", cert).returncode == 0
    other_cert, _ = self_signed(tmp_path)  # a CA that did not sign the gateway's certificate
    refused = _cli(gw, "--url", url, "--ca", other_cert)
    assert refused.returncode != 0 and "cannot reach the gateway" in refused.stderr
    assert _cli(gw, "--url", url).returncode == 0  # loopback


@pytest.mark.parametrize("url, ca, insecure, verify", [
    ("https://gw.example.com:8443", None, False, True),
    ("https://192.0.2.7", None, False, True),
    ("https://gw.example.com", "/etc/ca.pem", False, "/etc/ca.pem"),
    ("https://gw.example.com", None, True, False),
    ("https://127.0.0.1:8443", None, False, False),
    ("https://[::1]:8443", None, False, False),
    ("http://localhost:8080", None, False, False),
])
def test_admin_cli_tls_verification_rules(url, ca, insecure, verify):
    from gateway.cli.client import tls_verification

    assert tls_verification(url, ca, insecure) == verify
