"""OIDC sign-in through a real gateway process against a real test OpenID provider, over real HTTP.

The browser is played by httpx, one redirect at a time, so each hop (gateway -> IdP -> callback) is checked.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
import yaml

from tests.support.idp import Fault, TestIdp
from tests.support.processes import free_port, gateway_config, run_echo, run_gateway, session_sid

pytestmark = pytest.mark.slow

# A per-request policy: the first visit to /echo/stepup asks for a fresh sign-in at the IdP with a stronger acr.
STEP_UP_POLICY = {"policies": [{
    "id": "oidc-step-up", "description": "sensitive path needs a fresh IdP sign-in",
    "match": {"paths": ["/echo/stepup"]},
    "rules": [{"id": "fresh-idp-login", "when": "session.step_up_count < 1", "action": "step_up",
               "params": {"method": "oidc", "max_age": 0, "acr_values": ["phr"]}}],
}]}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oidc")
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "stepup.yaml").write_text(yaml.safe_dump(STEP_UP_POLICY, sort_keys=False))
    port = free_port()
    with TestIdp() as idp, run_echo(tmp) as echo:
        cfg = gateway_config(port=port, upstream=echo, tmp=tmp, users_file=None,
                             admin_token=secrets.token_urlsafe(24), policies_dir=str(policies),
                             extra_routes=[{"name": "echo", "upstream": echo, "path_prefix": "/echo",
                                            "audience": "echo", "sensor": False}])
        provider = {"issuer": idp.issuer, "client_id": idp.client_id, "client_secret": idp.client_secret,
                    "groups_claim": "groups"}
        # a second provider whose subjects may carry the same names as corp's without being the same people
        cfg["identity"] = {"oidc": [{"name": "corp", **provider}, {"name": "partner", **provider}]}
        with run_gateway(tmp, cfg) as gw:
            yield gw, idp


def _assertion(client: httpx.Client, path: str = "/echo/x") -> dict:
    r = client.get(path, headers={"Accept": "application/json"})
    assert r.status_code == 200, r.text
    token = dict(r.json()["headers"])["x-ztgate-assertion"]
    return jwt.decode(token, options={"verify_signature": False})


def oidc_login(client: httpx.Client, idp: TestIdp, start: str) -> httpx.Response:
    """Walks the browser's redirects: gateway start -> IdP /authorize -> gateway callback. Returns the callback's
    answer (not followed)."""
    r = client.get(start, headers={"Accept": "text/html"})
    assert r.status_code == 303, r.text
    authorize = r.headers["location"]
    assert authorize.startswith(idp.issuer + "/authorize?")
    r = httpx.get(authorize)  # the IdP approves at once and sends the browser back
    assert r.status_code == 302, r.text
    callback = urlsplit(r.headers["location"])
    assert callback.path == "/.ztgate/oidc/callback"
    return client.get(f"{callback.path}?{callback.query}", headers={"Accept": "text/html"})


def test_login_page_offers_the_provider(env):
    gw, _ = env
    page = httpx.get(f"{gw.url}/.ztgate/login?next=/x", headers={"Accept": "text/html"})
    assert page.status_code == 200 and "Sign in with corp" in page.text
    assert "/.ztgate/oidc/corp/start?next=%2Fx" in page.text


def test_oidc_login_reaches_the_upstream_with_the_idp_identity(env):
    gw, idp = env
    idp.set_user("oidc-alice", email="alice@corp.test", groups=["eng", "ops"], acr="mfa", amr=["pwd", "otp"])
    with httpx.Client(base_url=gw.url) as c:
        r = oidc_login(c, idp, "/.ztgate/oidc/corp/start?next=/echo/x")
        assert r.status_code == 303 and r.headers["location"] == "/echo/x"
        assert "ztgate_session=" in r.headers["set-cookie"]
        asked = idp.authorize_requests[-1]
        assert asked["code_challenge_method"] == "S256" and asked["nonce"] and asked["state"]
        claims = _assertion(c)
        assert claims["sub"] == "oidc-alice" and claims["email"] == "alice@corp.test"
        assert claims["groups"] == ["eng", "ops"] and claims["acr"] == "mfa" and claims["amr"] == ["pwd", "otp"]
        shown = gw.admin("GET", f"/sessions/{session_sid(c)}").json()
        assert shown["idp"] == "corp" and shown["sub"] == "oidc-alice"


@pytest.mark.parametrize("fault", [Fault.WRONG_ISSUER, Fault.WRONG_NONCE, Fault.EXPIRED, Fault.BAD_SIGNATURE])
def test_misbehaving_idp_is_refused_with_a_clear_page(env, fault):
    gw, idp = env
    idp.set_user("oidc-mallory", email="m@corp.test")
    idp.set_faults(fault)
    try:
        with httpx.Client(base_url=gw.url) as c:
            r = oidc_login(c, idp, "/.ztgate/oidc/corp/start?next=/echo/x")
            assert r.status_code == 401
            assert "Sign-in with the identity provider failed" in r.text
            assert "ztgate_session" not in c.cookies
            assert c.get("/echo/x", headers={"Accept": "application/json"}).status_code == 401
    finally:
        idp.clear_faults()


def test_callback_without_the_state_cookie_is_refused(env):
    gw, idp = env
    with httpx.Client(base_url=gw.url) as c:
        r = c.get("/.ztgate/oidc/corp/start?next=/", headers={"Accept": "text/html"})
        back = httpx.get(r.headers["location"]).headers["location"]
    callback = urlsplit(back)
    r = httpx.get(f"{gw.url}{callback.path}?{callback.query}", headers={"Accept": "text/html"})  # another browser
    assert r.status_code == 400 and "expired" in r.text


def test_oidc_step_up_goes_back_to_the_idp_with_prompt_max_age_and_acr(env):
    gw, idp = env
    idp.set_user("oidc-bob", email="bob@corp.test", groups=["eng"], acr="pwd", amr=["pwd"],
                 auth_time=1_000_000_000)
    with httpx.Client(base_url=gw.url) as c:
        r = oidc_login(c, idp, "/.ztgate/oidc/corp/start?next=/echo/x")
        assert r.status_code == 303
        sid = session_sid(c)
        assert _assertion(c)["acr"] == "pwd"
        # the policy asks for a step-up with method oidc: a browser is sent to the MFA page, which hands over to
        # the IdP because the session came from there
        r = c.get("/echo/stepup", headers={"Accept": "text/html"})
        assert r.status_code == 302 and r.headers["location"].startswith("/.ztgate/mfa?next=")
        assert gw.admin("GET", f"/sessions/{sid}").json()["state"] == "step_up_required"
        r = c.get(r.headers["location"], headers={"Accept": "text/html"})
        assert r.status_code == 303 and r.headers["location"].startswith("/.ztgate/oidc/corp/start?step_up=1")
        r = oidc_login(c, idp, r.headers["location"])
        asked = idp.authorize_requests[-1]
        assert asked["prompt"] == "login" and asked["max_age"] == "0" and asked["acr_values"] == "phr"
        assert r.status_code == 303 and r.headers["location"] == "/echo/stepup"
        assert session_sid(c) == sid  # the same session, stepped up
        claims = _assertion(c, "/echo/stepup")
        assert claims["acr"] == "phr" and "oidc" in claims["amr"]
        shown = gw.admin("GET", f"/sessions/{sid}").json()
        assert shown["state"] == "active" and shown["step_up"]["count"] == 1


def _step_up_asked(c: httpx.Client, idp: TestIdp) -> tuple[str, str]:
    """Signs in at corp and visits the path whose policy asks for a step-up: (the session id, the step-up's start
    URL at the provider)."""
    oidc_login(c, idp, "/.ztgate/oidc/corp/start?next=/echo/x")
    r = c.get("/echo/stepup", headers={"Accept": "text/html"})
    r = c.get(r.headers["location"], headers={"Accept": "text/html"})
    return session_sid(c), r.headers["location"]


def test_step_up_answered_by_another_user_does_not_upgrade_the_session(env):
    gw, idp = env
    idp.set_user("oidc-carol", email="carol@corp.test")
    with httpx.Client(base_url=gw.url) as c:
        sid, start = _step_up_asked(c, idp)
        idp.set_user("oidc-eve", email="eve@corp.test")  # someone else signs in at the IdP
        r = oidc_login(c, idp, start)
        assert r.status_code == 303
        assert gw.admin("GET", f"/sessions/{sid}").json()["state"] == "step_up_required"
        assert session_sid(c) != sid  # eve got her own session, carol's stays pending


def test_a_step_up_at_another_provider_does_not_upgrade_the_session(env):
    gw, idp = env
    idp.set_user("oidc-dana", email="dana@corp.test")
    with httpx.Client(base_url=gw.url) as c:
        sid, start = _step_up_asked(c, idp)
        # the same subject name, answered at the partner's provider: not the same person as corp's dana
        r = oidc_login(c, idp, start.replace("/oidc/corp/", "/oidc/partner/"))
        assert r.status_code == 303
        assert gw.admin("GET", f"/sessions/{sid}").json()["state"] == "step_up_required"
        assert session_sid(c) != sid


def test_an_unverified_email_names_nobody_and_a_name_keeps_no_control_characters(env):
    gw, idp = env
    idp.set_user("oidc-erin", email="ceo@corp.test", name="Erin\x1b[2J\r\nforged line",
                 extra_claims={"email_verified": False})
    with httpx.Client(base_url=gw.url) as c:
        assert oidc_login(c, idp, "/.ztgate/oidc/corp/start?next=/echo/x").status_code == 303
        sid = session_sid(c)
        claims = _assertion(c)
    shown = gw.admin("GET", f"/sessions/{sid}").json()
    assert shown["email"] == "" and claims.get("email", "") == ""
    assert "\x1b" not in shown["name"] and "\n" not in shown["name"] and shown["name"].startswith("Erin")
