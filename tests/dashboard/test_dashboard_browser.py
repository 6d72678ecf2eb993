"""The security dashboard in a real Chromium, against a real gateway process and the demo upstream: an admin
signs in, watches a second user's session appear, its risk rise as scripted input arrives, and terminates it,
all without reloading the page. The access rules (403 for non-admins, CSRF guard) are checked over real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import shutil
import threading
from pathlib import Path

import httpx
import jwt
import pytest
import websockets

from tests.support.processes import ROOT, free_port, gateway_config, login, make_users, run_gateway, run_upstream

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
POLICIES = Path(__file__).parent / "policies"
# The docs' screenshot is refreshed on request (ZTGATE_WRITE_DOCS=1), not by every test run.
SCREENSHOT = ROOT / "docs" / "dashboard.png" if os.environ.get("ZTGATE_WRITE_DOCS") else None

if not os.path.exists(CHROMIUM):  # pragma: no cover
    pytest.skip("no Chromium at /usr/bin/chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    shutil.copytree(POLICIES, tmp / "policies")
    users = make_users(tmp / "users.yaml", [
        {"username": "sec", "groups": ["secops"]}, {"username": "sec2", "groups": ["secops"]},
        {"username": "worker", "groups": ["eng"], "site": "berlin", "country": "DE"},
        {"username": "bystander", "groups": ["eng"]}, {"username": "nosy", "groups": ["eng"]}])
    port = free_port()
    with run_upstream(tmp, jwks_port=port) as upstream:
        cfg = gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                             admin_token=secrets.token_urlsafe(24), policies_dir=str(tmp / "policies"),
                             admin=None)
        cfg["admin"] = {"token": cfg["admin"]["token"] if cfg["admin"] else secrets.token_urlsafe(24),
                        "groups": ["secops"]}
        with run_gateway(tmp, cfg) as gw:
            gw.admin_token = cfg["admin"]["token"]
            yield gw, users


def sid_of(client: httpx.Client) -> str:
    return jwt.decode(client.cookies.get("ztgate_session"), options={"verify_signature": False})["sid"]


async def type_into_terminal(base: str, cookie: str, human_keys: int, scripted_keys: int) -> None:
    """Some irregular, person-like typing, then machine-regular input (one key every 20 ms)."""
    rng = random.Random(5)
    uri = base.replace("http://", "ws://") + "/ws/terminal"
    async with websockets.connect(uri, additional_headers={"Cookie": f"ztgate_session={cookie}"}) as ws:
        await ws.recv()
        try:
            for i in range(human_keys):
                await ws.send(json.dumps({"type": "input", "data": "ls -la\r"[i % 7]}))
                await asyncio.sleep(rng.uniform(0.09, 0.35))
            for i in range(scripted_keys):
                await ws.send(json.dumps({"type": "input", "data": "echo status\r"[i % 12]}))
                await asyncio.sleep(0.02)
        except websockets.exceptions.ConnectionClosed:
            pass


def test_non_admins_get_403_and_nobody_signed_in_is_sent_to_login(env):
    gw, users = env
    r = httpx.get(f"{gw.url}/.ztgate/admin/", headers={"Accept": "text/html"})
    assert r.status_code == 303 and r.headers["location"].startswith("/.ztgate/login?next=")
    assert httpx.get(f"{gw.url}/.ztgate/admin/api/dashboard/sessions").status_code == 401
    with httpx.Client(base_url=gw.url) as c:
        login(c, users["nosy"])
        assert c.get("/.ztgate/admin/", headers={"Accept": "text/html"}).status_code == 403
        for path in ("/dashboard/sessions", "/events/recent", f"/sessions/{sid_of(c)}/history"):
            assert c.get(f"/.ztgate/admin/api{path}").status_code == 403, path
    r = gw.admin("GET", "/events/recent?limit=5")
    assert r.status_code == 200 and r.json()["enabled"] is True
    assert gw.admin("GET", "/events/recent?limit=x").status_code == 400


def test_cookie_authenticated_admin_posts_need_the_csrf_header(env):
    gw, users = env
    with httpx.Client(base_url=gw.url) as victim:
        login(victim, users["bystander"])
        sid = sid_of(victim)
    with httpx.Client(base_url=gw.url) as admin:
        login(admin, users["sec2"])
        page = admin.get("/.ztgate/admin/", headers={"Accept": "text/html"})
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'nonce-" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
        url = f"/.ztgate/admin/api/sessions/{sid}/step-up"
        assert httpx.post(gw.url + url).status_code == 401  # no cookie, no token: nothing to forge, plain 401
        # what a cross-site form could send with the admin's cookie: refused
        assert admin.post(url).status_code == 403
        assert admin.post(url, headers={"X-Ztgate-Admin": "1", "Origin": "http://evil.example"}).status_code == 403
        assert admin.post(url, headers={"X-Ztgate-Admin": "1", "Sec-Fetch-Site": "cross-site"}).status_code == 403
        assert gw.admin("GET", f"/sessions/{sid}").json()["state"] == "active"
        ok = admin.post(url, headers={"X-Ztgate-Admin": "1", "Origin": gw.url})
        assert ok.status_code == 200 and ok.json()["state"] == "step_up_required"
    assert gw.admin("POST", f"/sessions/{sid}/terminate").json()["state"] == "terminated"  # bearer: no header


def test_admin_watches_a_session_rise_and_terminates_it_live(env, tmp_path):
    gw, users = env
    overview_png = tmp_path / "dashboard-overview.png"
    console_errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.goto(f"{gw.url}/.ztgate/admin/")
            assert "/.ztgate/login" in page.url  # not signed in yet
            page.fill("#username", "sec")
            page.fill("#password", users["sec"].password)
            page.fill("#otp", users["sec"].code())
            page.click("button[type=submit]")
            page.wait_for_url("**/.ztgate/admin/")
            page.wait_for_selector("#live.ok", timeout=10_000)
            page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page

            with httpx.Client(base_url=gw.url) as worker:
                login(worker, users["worker"])
                sid = sid_of(worker)
                row = page.locator(f"tr[data-sid='{sid}']")
                row.wait_for(timeout=10_000)  # the second user's session appears by itself
                assert row.locator(".badge").inner_text() == "active"

                page.click(f"tr[data-sid='{sid}'] a.user")
                page.wait_for_selector("#terminate")
                before = page.locator(".risk .num").first.inner_text()
                # the input arrives while the page keeps polling (Playwright's own loop runs this thread)
                typist = threading.Thread(target=asyncio.run, args=(
                    type_into_terminal(gw.url, worker.cookies.get("ztgate_session"), 18, 140),))
                typist.start()
                typist.join(60)

                page.wait_for_function(
                    """() => { const n = document.querySelector('.big .risk .num');
                               return n && parseFloat(n.textContent) >= 0.8; }""", timeout=15_000)
                page.wait_for_selector(".head .badge.state-restricted", timeout=10_000)
                page.wait_for_selector("#decisions .tag.act-restrict", timeout=10_000)
                page.wait_for_selector("svg.plot polyline.s-risk", timeout=10_000)
                assert before != page.locator(".big .risk .num").inner_text()
                facts = page.locator("dl.facts").inner_text()
                assert "terminal" in facts  # where the input came from
                page.wait_for_timeout(1600)  # one more poll: the plots show a few points
                shot = page.screenshot(path=str(SCREENSHOT) if SCREENSHOT else None, full_page=True)
                assert len(shot) > 10_000  # the page rendered something real

                page.click("#terminate")
                page.wait_for_selector(".head .badge.state-terminated", timeout=10_000)
                page.wait_for_selector("#decisions .tag.act-terminate", timeout=10_000)
                assert page.evaluate("window.__sameDocument") is True
                assert gw.admin("GET", f"/sessions/{sid}").json()["state"] == "terminated"
                assert worker.get("/api/whoami", headers={"Accept": "application/json"}).status_code == 401

                page.click("a.back")
                page.wait_for_selector(f"tr[data-sid='{sid}'] .badge.state-terminated")
                page.wait_for_selector("#events .tag.act-terminate", timeout=10_000)
                page.screenshot(path=str(overview_png), full_page=True)  # for a look when debugging
                assert page.evaluate("window.__sameDocument") is True
        finally:
            browser.close()
    assert not [e for e in console_errors if "Content Security Policy" in e or "Refused" in e], console_errors
