"""WebAuthn step-up with real Chromium and CDP's virtual authenticator (a real CTAP2 authenticator emulation in
the browser, not a mock of the server side): register a key after a fresh TOTP, get stepped up with
`method: webauthn`, pass with the key, and see a replayed assertion refused. Real gateway, real Redis.

The browser visits http://localhost:<port>: an IP address cannot be a WebAuthn RP ID, and localhost is a secure
context over plain HTTP.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path

import httpx
import pyotp
import pytest
import redis

from tests.support.processes import free_port, gateway_config, login, make_users, run_gateway, run_upstream

pytestmark = [pytest.mark.slow, pytest.mark.browser]

if not Path("/usr/bin/chromium").exists():
    pytest.skip("needs /usr/bin/chromium", allow_module_level=True)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def env(tmp_path_factory, redis_server_url):
    tmp = tmp_path_factory.mktemp("webauthn")
    prefix = f"ztgate-test-{secrets.token_hex(5)}:"
    users = make_users(tmp / "users.yaml", [{"username": "keyholder"}, {"username": "keyless"},
                                                            {"username": "stale"}])
    port = free_port()
    with run_upstream(tmp, jwks_port=port) as upstream:
        cfg = gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                             store=redis_server_url, prefix=prefix, admin_token=secrets.token_urlsafe(24))
        with run_gateway(tmp, cfg) as gw:
            yield gw, users, redis_server_url, prefix
    client = redis.Redis.from_url(redis_server_url)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)


def next_window_code(secret: str) -> str:
    """A TOTP code the gateway accepts (it allows one step of drift) that differs from the login's, which is spent."""
    return pyotp.TOTP(secret).at(time.time() + 30)


async def test_register_key_then_step_up_with_it(env):
    from playwright.async_api import async_playwright

    gw, users, redis_url, prefix = env
    user = users["keyholder"]
    base = f"http://localhost:{gw.port}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            cdp = await context.new_cdp_session(page)
            await cdp.send("WebAuthn.enable", {"enableUI": False})
            authenticator = await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
                "protocol": "ctap2", "transport": "usb", "hasResidentKey": False, "hasUserVerification": True,
                "isUserVerified": True, "automaticPresenceSimulation": True}})

            # sign in (password + TOTP): that is the fresh MFA that lets this session add a key
            await page.goto(f"{base}/.ztgate/login?next=/")
            await page.fill("#username", user.username)
            await page.fill("#password", user.password)
            await page.fill("#otp", user.code())
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{base}/")

            await page.goto(f"{base}/.ztgate/mfa/webauthn/register")
            assert page.url == f"{base}/.ztgate/mfa/webauthn/register"
            await page.click("#ztgate-webauthn-start")
            await page.wait_for_url(f"{base}/", timeout=10_000)
            creds = await cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator["authenticatorId"]})
            assert len(creds["credentials"]) == 1
            stored = json.loads(redis.Redis.from_url(redis_url).get(f"{prefix}credentials:{user.username}"))
            assert len(stored) == 1 and stored[0]["id"] and stored[0]["public_key"]
            private = creds["credentials"][0]["privateKey"]
            assert set(stored[0]) <= {"id", "public_key", "sign_count", "aaguid", "transports", "user_verified",
                                      "created", "last_used", "attestation"}
            assert stored[0]["attestation"]["fmt"] == "none"  # no policy here: nothing asked, nothing to keep
            assert private not in json.dumps(stored)  # only public material is kept

            # an administrator asks for a security-key step-up
            cookie = next(c["value"] for c in await context.cookies() if c["name"] == "ztgate_session")
            import jwt

            sid = jwt.decode(cookie, options={"verify_signature": False})["sid"]
            r = gw.admin("POST", f"/sessions/{sid}/step-up", json={"method": "webauthn"})
            assert r.status_code == 200 and r.json()["state"] == "step_up_required"
            assert r.json()["step_up"]["method"] == "webauthn"
            assert gw.admin("POST", f"/sessions/{sid}/step-up", json={"method": "sms"}).status_code == 400

            # the next navigation lands on the security-key page (TOTP is not offered: a key is required)
            verify_bodies: list[str] = []
            page.on("request", lambda req: verify_bodies.append(req.post_data or "")
                    if req.url.endswith("/.ztgate/mfa/webauthn/verify") else None)
            await page.goto(f"{base}/form")
            assert page.url.startswith(f"{base}/.ztgate/mfa/webauthn?next=")
            assert await page.locator("#otp").count() == 0
            # a TOTP code posted anyway is not accepted in place of the key
            form_page = await context.request.get(f"{base}/.ztgate/mfa?next=/form", max_redirects=0)
            assert form_page.status == 303 and "/.ztgate/mfa/webauthn" in form_page.headers["location"]

            await page.click("#ztgate-webauthn-start")
            await page.wait_for_url(f"{base}/form", timeout=10_000)
            view = gw.admin("GET", f"/sessions/{sid}").json()
            assert view["state"] == "active" and "hwk" in view["amr"] and view["acr"] == "phr"
            assert view["step_up"]["count"] == 1
            assert await page.locator("#expense-form").count() == 1

            # the same assertion, sent again, is refused (its challenge was consumed) and changes nothing
            assert len(verify_bodies) == 1
            replay = await context.request.post(f"{base}/.ztgate/mfa/webauthn/verify", data=verify_bodies[0],
                                                headers={"Content-Type": "application/json"})
            assert replay.status in (400, 401)
            assert (await replay.json())["error"] == "challenge_invalid"
            # and it cannot pass a new step-up either
            gw.admin("POST", f"/sessions/{sid}/step-up", json={"method": "webauthn"})
            replay = await context.request.post(f"{base}/.ztgate/mfa/webauthn/verify", data=verify_bodies[0],
                                                headers={"Content-Type": "application/json"})
            assert replay.status in (400, 401)
            view = gw.admin("GET", f"/sessions/{sid}").json()
            assert view["state"] == "step_up_required" and view["step_up"]["failures"] == 1
        finally:
            await browser.close()


def test_no_key_falls_back_to_totp_and_says_so(env):
    gw, users, _, _ = env
    user = users["keyless"]
    with httpx.Client(base_url=gw.url) as c:
        login(c, user)
        import jwt

        sid = jwt.decode(c.cookies.get("ztgate_session"), options={"verify_signature": False})["sid"]
        assert gw.admin("POST", f"/sessions/{sid}/step-up", json={"method": "webauthn"}).status_code == 200
        page = c.get("/.ztgate/mfa?next=/form", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "none is registered for you" in page.text
        view = gw.admin("GET", f"/sessions/{sid}").json()
        assert view["step_up"]["fallback"] == "totp" and view["step_up"]["fallback_reason"]
        assert view["decision"]["step_up_fallback"].startswith("totp")
        # without a key, the security-key page sends the browser back to the one-time code
        assert c.get("/.ztgate/mfa/webauthn?next=/form").status_code == 303
        csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
        ok = c.post("/.ztgate/mfa", data={"csrf": csrf, "next": "/form", "otp": next_window_code(user.totp_secret)})
        assert ok.status_code == 303 and ok.headers["location"] == "/form"
        assert gw.admin("GET", f"/sessions/{sid}").json()["state"] == "active"
        # key registration needs a session; options need the page's one-time token
        r = c.post("/.ztgate/mfa/webauthn/register/options", json={"csrf": "nope"})
        assert r.status_code == 400 and r.json()["error"] == "form_expired"


def test_adding_a_key_needs_a_fresh_mfa(env):
    gw, users, redis_url, prefix = env
    user = users["stale"]
    with httpx.Client(base_url=gw.url) as c:
        login(c, user)
        import jwt

        sid = jwt.decode(c.cookies.get("ztgate_session"), options={"verify_signature": False})["sid"]
        assert c.get("/.ztgate/mfa/webauthn/register").status_code == 200  # the sign-in was the fresh MFA
        # the sign-in is now an hour old (written into the store; the gateway's cached view lasts 2 s)
        r = redis.Redis.from_url(redis_url)
        key = f"{prefix}session:{sid}"
        record = json.loads(r.get(key))
        record["auth_time"] -= 3600
        r.set(key, json.dumps(record), keepttl=True)
        time.sleep(2.2)
        page = c.get("/.ztgate/mfa/webauthn/register")
        assert page.status_code == 303
        assert page.headers["location"] == "/.ztgate/mfa?next=%2F.ztgate%2Fmfa%2Fwebauthn%2Fregister"
        mfa = c.get(page.headers["location"])
        csrf = re.search(r"name=csrf value='([^']+)'", mfa.text).group(1)
        ok = c.post("/.ztgate/mfa", data={"csrf": csrf, "next": "/.ztgate/mfa/webauthn/register",
                                          "otp": next_window_code(user.totp_secret)})
        assert ok.status_code == 303
        page = c.get(ok.headers["location"])
        assert page.status_code == 200 and "data-mode='register'" in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        script = c.get("/.ztgate/static/webauthn.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_stores_keep_credentials_as_json(kind, redis_url, redis_prefix):
    from gateway.store import open_store

    store = open_store("memory://" if kind == "memory" else redis_url, prefix=redis_prefix)
    await store.start()
    try:
        assert await store.get_credentials("u") == []
        creds = [{"id": "abc", "public_key": "pk", "sign_count": 3}]
        await store.put_credentials("u", creds)
        assert await store.get_credentials("u") == creds
        assert await store.get_credentials("other") == []
        await store.put_credentials("u", [])
        assert await store.get_credentials("u") == []
    finally:
        if kind == "redis":
            r = redis.Redis.from_url(redis_url)
            keys = list(r.scan_iter(f"{redis_prefix}*"))
            if keys:
                r.delete(*keys)
        await store.close()
