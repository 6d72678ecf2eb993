"""The gateway as users and upstream apps meet it: real gateway process, real upstream process, real HTTP."""

from __future__ import annotations

import json
import secrets
import time

import httpx
import jwt
import pytest

from tests.support.processes import (free_port, gateway_config, login, make_users, run_echo, run_gateway,
                                     run_upstream)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gw")
    # TOTP codes are one-time: every test signs in as its own user so that no code is replayed across tests
    users = make_users(tmp / "users.yaml", [{"username": "alice", "groups": ["eng"], "site": "berlin"},
                                            {"username": "bob"}] + [{"username": f"u{i}"} for i in range(16)])
    port = free_port()
    with run_echo(tmp) as echo, run_upstream(tmp, jwks_port=port) as upstream:
        cfg = gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                             admin_token=secrets.token_urlsafe(24),
                             extra_routes=[{"name": "echo", "upstream": echo, "path_prefix": "/echo",
                                            "audience": "echo"}])
        with run_gateway(tmp, cfg) as gw:
            yield gw, users


_pool = iter(range(16))  # u0..u15: one per test that signs in


def fresh(users):
    """A user who has not signed in yet in this module."""
    return users[f"u{next(_pool)}"]


def test_unauthenticated_browser_is_sent_to_login_and_api_gets_401(env):
    gw, _ = env
    r = httpx.get(f"{gw.url}/form?x=1", headers={"Accept": "text/html"})
    assert r.status_code == 302 and r.headers["location"] == "/.ztgate/login?next=%2Fform%3Fx%3D1"
    r = httpx.get(f"{gw.url}/api/items", headers={"Accept": "application/json"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")


def test_login_then_upstream_sees_verified_identity(env):
    gw, users = env
    with httpx.Client(base_url=gw.url) as c:
        r = login(c, users["alice"], next_url="/api/whoami")
        assert r.status_code == 303 and r.headers["location"] == "/api/whoami"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie  # plain HTTP here
        who = c.get("/api/whoami", headers={"Accept": "application/json"}).json()
        assert who["sub"] == "alice" and who["groups"] == ["eng"] and who["acr"] == "mfa"
        assert who["ztgate_state"] == "active" and who["exp"] - who["iat"] <= 60


def test_wrong_password_and_replayed_form_are_refused(env):
    gw, users = env
    with httpx.Client(base_url=gw.url) as c:
        page = c.get("/.ztgate/login", headers={"Accept": "text/html"})
        import re

        csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
        form = {"csrf": csrf, "next": "/", "username": "u15", "password": "wrong", "otp": users["u15"].code()}
        assert c.post("/.ztgate/login", data=form).status_code == 401
        assert c.post("/.ztgate/login", data=form).status_code == 400  # the same form again: replay
        # a form without the pre-session cookie (cross-site) is refused too
        assert httpx.post(f"{gw.url}/.ztgate/login", data=form).status_code == 400


def test_open_redirect_through_next_is_refused(env):
    gw, users = env
    with httpx.Client(base_url=gw.url) as c:
        r = login(c, users["bob"], next_url="//evil.example/steal")
        assert r.status_code == 303 and r.headers["location"] == "/"


def test_client_sent_identity_and_gateway_cookie_never_reach_the_upstream(env):
    gw, users = env
    with httpx.Client(base_url=gw.url) as c:
        login(c, fresh(users))
        forged = jwt.encode({"sub": "root"}, "k" * 32, algorithm="HS256")
        session = c.cookies.get("ztgate_session")
        r = httpx.get(f"{gw.url}/echo/x", headers={
            "X-Ztgate-Assertion": forged, "X-Ztgate-Internal": "guess", "X-Forwarded-For": "6.6.6.6",
            "Cookie": f"app=1; ztgate_session={session}; other=2", "Accept": "application/json"})
        seen = r.json()
        assert r.status_code == 200, seen
        headers = {}
        for k, v in seen["headers"]:
            headers.setdefault(k, []).append(v)
        assert headers["x-ztgate-assertion"] != [forged] and len(headers["x-ztgate-assertion"]) == 1
        claims = jwt.decode(headers["x-ztgate-assertion"][0], options={"verify_signature": False})
        assert claims["sub"].startswith("u") and claims["aud"] == "echo"
        assert "x-ztgate-internal" not in headers
        assert seen["cookies"] == {"app": "1", "other": "2"}
        assert headers["x-forwarded-for"] == ["127.0.0.1"]
        assert headers["x-forwarded-proto"] == ["http"]
        assert headers["x-forwarded-host"] == ["127.0.0.1"]


def test_assertion_verifies_against_published_jwks(env):
    gw, users = env
    with httpx.Client(base_url=gw.url) as c:
        login(c, fresh(users))
        seen = c.get("/echo/", headers={"Accept": "application/json"}).json()
    token = dict(seen["headers"])["x-ztgate-assertion"]
    jwks = httpx.get(f"{gw.url}/.well-known/ztgate/jwks.json").json()
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, key.key, algorithms=["ES256"], audience="echo", issuer="ztgate")
    assert claims["sid"] and claims["amr"] == ["otp", "pwd"] or claims["amr"] == ["pwd", "otp"]


@pytest.mark.parametrize("attack", ["forged", "alg_none", "wrong_key", "expired", "wrong_audience", "garbage"])
def test_token_attacks_are_refused(env, attack):
    gw, users = env
    with httpx.Client(base_url=gw.url) as c:
        login(c, fresh(users))
        good = c.cookies.get("ztgate_session")
    header, payload, sig = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False})
    from cryptography.hazmat.primitives.asymmetric import ec

    other_key = ec.generate_private_key(ec.SECP256R1())
    kid = jwt.get_unverified_header(good)["kid"]
    if attack == "forged":
        import base64

        evil = dict(claims, sub="bob")
        token = f"{header}.{base64.urlsafe_b64encode(json.dumps(evil).encode()).decode().rstrip('=')}.{sig}"
    elif attack == "alg_none":
        token = jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
    elif attack == "wrong_key":
        token = jwt.encode(claims, other_key, algorithm="ES256", headers={"kid": kid})
    elif attack == "expired":
        token = jwt.encode(dict(claims, exp=int(time.time()) - 10**6), other_key, algorithm="ES256",
                           headers={"kid": kid})
    elif attack == "wrong_audience":
        token = jwt.encode(dict(claims, aud="demo"), other_key, algorithm="ES256", headers={"kid": kid})
    else:
        token = "not.a.jwt"
    r = httpx.get(f"{gw.url}/api/whoami", cookies={"ztgate_session": token}, headers={"Accept": "application/json"})
    assert r.status_code == 401


def test_admin_api_lists_shows_and_terminates(env):
    gw, users = env
    with httpx.Client(base_url=gw.url) as c:
        login(c, fresh(users))
        sid = jwt.decode(c.cookies.get("ztgate_session"), options={"verify_signature": False})["sid"]
        assert gw.admin("GET", "/sessions").status_code == 200
        assert httpx.get(f"{gw.url}/.ztgate/admin/api/sessions").status_code == 401
        shown = gw.admin("GET", f"/sessions/{sid}").json()
        assert shown["sid"] == sid and shown["state"] == "active"
        assert gw.admin("POST", f"/sessions/{sid}/terminate").json()["state"] == "terminated"
        page = c.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 403 and "Session ended" in page.text
        assert c.get("/api/whoami", headers={"Accept": "application/json"}).status_code == 401


def test_cli_sessions_commands_use_the_admin_api(env):
    gw, users = env
    import subprocess
    import sys

    with httpx.Client(base_url=gw.url) as c:
        login(c, fresh(users))
        sid = jwt.decode(c.cookies.get("ztgate_session"), options={"verify_signature": False})["sid"]
    base = [sys.executable, "-m", "gateway.cli.main", "sessions"]
    opts = ["--url", gw.url, f"--token={gw.admin_token}"]  # a random token may start with "-"
    out = subprocess.run(base + ["list", "--json"] + opts, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and sid in {s["sid"] for s in json.loads(out.stdout)["sessions"]}
    out = subprocess.run(base + ["show", sid] + opts, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and sid in out.stdout
    out = subprocess.run(base + ["terminate", sid] + opts, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert gw.admin("GET", f"/sessions/{sid}").json()["state"] == "terminated"


def test_control_plane_refuses_direct_access_without_the_proxy(env):
    gw, _ = env
    # the internal port is not published; but even a forged internal header through the proxy is stripped
    r = httpx.get(f"{gw.url}/.ztgate/admin/api/sessions", headers={"X-Ztgate-Internal": "x",
                                                                   "Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_health_and_jwks(env):
    gw, _ = env
    assert httpx.get(f"{gw.url}/healthz").text == "ok"
    ready = httpx.get(f"{gw.url}/readyz").json()
    assert ready["ready"] and ready["store"] == "ok"
    keys = httpx.get(f"{gw.url}/.well-known/ztgate/jwks.json").json()["keys"]
    assert keys and all("d" not in k for k in keys) and keys[0]["alg"] == "ES256"


def test_every_path_reaches_the_upstream_even_mitmproxys_crl_path(env):
    # mitmproxy's TlsConfig would answer /mitmproxy-<CA serial>.crl itself instead of the route's upstream
    from cryptography import x509

    gw, users = env
    ca = gw.config_path.parent / "state-gw" / "mitmproxy" / "mitmproxy-ca-cert.pem"
    serial = x509.load_pem_x509_certificate(ca.read_bytes()).serial_number
    with httpx.Client(base_url=gw.url) as c:
        login(c, fresh(users))
        r = c.get(f"/echo/mitmproxy-{serial}.crl", headers={"Accept": "application/json"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json()["path"] == f"/echo/mitmproxy-{serial}.crl"
