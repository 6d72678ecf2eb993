"""Enforcement seen from a real browser: Chromium signs in through the login page and types into the demo app's
form; the injected sensor reports the keystrokes; two `ztgate run` processes share a real Redis and a keys dir.

The policies here are deterministic stand-ins (keystroke counts per test group): these tests check that every
enforcement path works end to end in a browser, not how accurate the detectors are (`ztgate eval` measures that).
The same paths, driven over the sensor's wire protocol instead of a browser, are in
tests/gateway/test_enforcement_e2e.py.
"""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import httpx
import jwt
import pyotp
import pytest
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.support.processes import free_port, gateway_config, make_users, run_gateway, run_upstream, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.browser]

if not Path("/usr/bin/chromium").exists():
    pytest.skip("needs /usr/bin/chromium", allow_module_level=True)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

POLICIES = """\
policies:
  - id: typing
    description: stands in for the impostor detector
    match: {groups: [typists]}
    rules:
      - id: much-typing
        when: session.evidence_keystrokes >= 20
        action: step_up
        params: {method: totp, max_age: 300}
  - id: relayed
    description: stands in for the relay detector
    match: {groups: [relayed]}
    rules:
      - id: relay-like
        when: session.evidence_keystrokes >= 20
        action: terminate
  - id: contractors
    match: {groups: [contractors]}
    rules:
      - id: read-only
        when: "true"
        action: restrict
        params: {read_only: true}
  - id: watched
    match: {groups: [watched]}
    shadow: true
    rules:
      - id: would-terminate
        when: "true"
        action: terminate
"""

RELOADED = """\
policies:
  - id: reloader-no-posts
    match: {users: [reloader]}
    rules:
      - id: no-posts
        when: request.method == "POST"
        action: restrict
        params: {deny_methods: [POST]}
"""

SENTENCE = "the quick brown fox jumps over the lazy dog"  # typed by the test; never read back by the gateway


@pytest.fixture(scope="module")
def env(tmp_path_factory, redis_server_url):
    tmp = tmp_path_factory.mktemp("enforce-browser")
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "enforce.yaml").write_text(POLICIES)
    prefix = f"ztgate-test-{secrets.token_hex(5)}:"
    users = make_users(tmp / "users.yaml", [{"username": "typist", "groups": ["typists"]},
                                            {"username": "relayed", "groups": ["relayed"]},
                                            {"username": "contractor", "groups": ["contractors"]},
                                            {"username": "watched", "groups": ["watched"]},
                                            {"username": "reloader"}])
    token = secrets.token_urlsafe(24)
    port_a, port_b = free_port(), free_port()
    with run_upstream(tmp, jwks_port=port_a) as upstream:
        def config(instance: str, port: int) -> dict:
            return gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                                  store=redis_server_url, prefix=prefix, admin_token=token, instance=instance,
                                  policies_dir=str(policies))

        with run_gateway(tmp, config("a", port_a), name="gw-a") as a, \
                run_gateway(tmp, config("b", port_b), name="gw-b") as b:
            yield {"a": a, "b": b, "users": users, "tmp": tmp, "policies": policies}
    client = redis.Redis.from_url(redis_server_url)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def sign_in(browser, gw, user, next_url: str = "/form"):
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{gw.url}{next_url}")
    assert "/.ztgate/login" in page.url  # no session yet: the gateway sends the browser to its login page
    page.fill("#username", user.username)
    page.fill("#password", user.password)
    page.fill("#otp", user.code())
    page.click("button[type=submit]")
    page.wait_for_url(f"{gw.url}{next_url}")
    return context, page


def sid_of(context) -> str:
    cookie = next(c["value"] for c in context.cookies() if c["name"] == "ztgate_session")
    return jwt.decode(cookie, options={"verify_signature": False})["sid"]


def cookie_of(context) -> str:
    return next(c["value"] for c in context.cookies() if c["name"] == "ztgate_session")


def type_into_form(page, text: str = SENTENCE) -> None:
    page.click("#description")
    page.keyboard.type(text, delay=40)


def state_of(gw, sid: str) -> str:
    return gw.admin("GET", f"/sessions/{sid}").json()["state"]


def test_impostor_typing_steps_up_and_totp_restores(env, browser):
    a, user = env["a"], env["users"]["typist"]
    context, page = sign_in(browser, a, user)
    try:
        sid = sid_of(context)
        type_into_form(page)
        wait_until(lambda: state_of(a, sid) == "step_up_required", timeout=10, what="the step-up decision")
        # an API client with the same session gets the RFC 9470 challenge, not a redirect
        api = context.request.get(f"{a.url}/api/items", headers={"Accept": "application/json"})
        assert api.status == 401
        challenge = api.headers["www-authenticate"]
        assert 'error="insufficient_user_authentication"' in challenge and 'max_age="300"' in challenge
        # the browser's next navigation lands on the MFA page
        page.click("a[href='/']")
        assert page.url.startswith(f"{a.url}/.ztgate/mfa?next=")
        # the code of the next TOTP step (accepted with one step of drift; the login's code is spent)
        page.fill("#otp", pyotp.TOTP(user.totp_secret).at(time.time() + 30))
        page.click("button[type=submit]")
        page.wait_for_url(f"{a.url}/")
        view = a.admin("GET", f"/sessions/{sid}").json()
        assert view["state"] == "active" and "otp" in view["amr"] and view["step_up"]["count"] == 1
    finally:
        context.close()


def hold_until_closed(ws, closed: threading.Event) -> threading.Thread:
    """Reads the socket until the gateway cuts it; `closed` is set only then (a timeout leaves it unset)."""
    def hold() -> None:
        try:
            while True:
                ws.recv(timeout=30)
        except ConnectionClosed:
            closed.set()
        except TimeoutError:
            pass

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def test_relay_like_session_is_terminated_and_its_websockets_are_cut_on_both_processes(env, browser):
    a, b, user = env["a"], env["b"], env["users"]["relayed"]
    context, page = sign_in(browser, a, user)
    try:
        sid, cookie = sid_of(context), cookie_of(context)
        headers = {"Cookie": f"ztgate_session={cookie}"}
        closed = {"a": threading.Event(), "b": threading.Event()}
        with ws_connect(f"ws://127.0.0.1:{b.port}/ws/echo", additional_headers=headers, open_timeout=10) as ws_b, \
                ws_connect(f"ws://127.0.0.1:{a.port}/ws/echo", additional_headers=headers, open_timeout=10) as ws_a:
            for name, ws in (("a", ws_a), ("b", ws_b)):
                ws.send("hello")
                assert ws.recv(timeout=5) == "hello"
                hold_until_closed(ws, closed[name])
            assert b.admin("GET", f"/sessions/{sid}").json()["connections"] == 1
            type_into_form(page)  # scored on A, decided on A by policy
            wait_until(lambda: state_of(a, sid) == "terminated", timeout=10, what="the termination")
            assert closed["b"].wait(10), "the WebSocket held through the other process was not cut"
            assert closed["a"].wait(10), "the WebSocket held through the deciding process was not cut"
        decision = a.admin("GET", f"/sessions/{sid}").json()["decision"]
        assert decision["rule_id"] == "relay-like"
        # the browser's next request shows the termination page, on either process
        response = page.goto(f"{a.url}/form")
        assert response.status == 403 and page.locator("h1").inner_text() == "Session ended"
        r = httpx.get(f"{b.url}/form", cookies={"ztgate_session": cookie}, headers={"Accept": "text/html"})
        assert r.status_code == 403 and "Session ended" in r.text
    finally:
        context.close()


def test_restrict_blocks_the_form_post_but_not_reading(env, browser):
    a, user = env["a"], env["users"]["contractor"]
    context, page = sign_in(browser, a, user)
    try:
        sid = sid_of(context)
        wait_until(lambda: state_of(a, sid) == "restricted", timeout=10, what="the restriction")
        assert page.goto(f"{a.url}/form").status == 200
        page.fill("#name", "A. Contractor")
        page.fill("#amount", "12.50")
        page.fill("#approval_code", "0000")
        with page.expect_navigation():
            page.click("#submit")
        assert page.locator("h1").inner_text() == "Not allowed right now"
        assert page.goto(f"{a.url}/").status == 200
    finally:
        context.close()


def test_policy_change_takes_effect_in_a_running_browser_session(env, browser):
    a, user, policies = env["a"], env["users"]["reloader"], env["policies"]
    context, page = sign_in(browser, a, user)
    extra = policies / "zz-reload.yaml"
    try:
        before = a.admin("GET", "/policies").json()["reloads"]
        written = time.monotonic()
        extra.write_text(RELOADED)
        wait_until(lambda: a.admin("GET", "/policies").json()["reloads"] > before, timeout=2, interval=0.05,
                   what="the policy reload (within 2 s)")
        print(f"\npolicy change -> loaded on A: {1000 * (time.monotonic() - written):.0f} ms")
        page.fill("#name", "Re Loader")
        page.fill("#amount", "3.00")
        page.fill("#approval_code", "0000")
        with page.expect_navigation():
            page.click("#submit")
        assert page.locator("h1").inner_text() == "Not allowed right now"
        assert page.goto(f"{a.url}/form").status == 200
    finally:
        extra.unlink(missing_ok=True)
        context.close()


def test_shadow_terminate_is_reported_and_the_browser_keeps_working(env, browser):
    a, user, tmp = env["a"], env["users"]["watched"], env["tmp"]
    context, page = sign_in(browser, a, user, next_url="/")
    try:
        sid = sid_of(context)
        events = tmp / "events-a.jsonl"
        wait_until(lambda: events.exists() and "would-terminate" in events.read_text(), timeout=10,
                   what="the shadow decision's security event")
        page.goto(f"{a.url}/form")
        type_into_form(page, "shadowed")
        assert page.goto(f"{a.url}/").status == 200
        assert state_of(a, sid) == "active"
    finally:
        context.close()
