"""Sensor input in, policy decision out, enforcement on the wire: real gateway, real upstream, real HTTP/WS.

Browser-driven versions of these (real Chromium typing) live in tests/e2e; here the sensor's wire protocol is
spoken directly so that each enforcement path is exercised deterministically.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shutil
import time
from pathlib import Path

import httpx
import jwt
import pytest
import websockets
import websockets.exceptions

from tests.support.processes import free_port, gateway_config, login, make_users, run_gateway, run_upstream, wait_until

pytestmark = pytest.mark.slow

POLICIES = Path(__file__).parent / "policies_enforce"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("enforce")
    policies = tmp / "policies"
    shutil.copytree(POLICIES, policies)
    users = make_users(tmp / "users.yaml", [{"username": "typist", "groups": ["typists"]},
                                            {"username": "contractor", "groups": ["contractors"]},
                                            {"username": "watched", "groups": ["watched"]},
                                            {"username": "plain"}, {"username": "api"}, {"username": "other"}])
    port = free_port()
    with run_upstream(tmp, jwks_port=port) as upstream:
        cfg = gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                             admin_token=secrets.token_urlsafe(24), policies_dir=str(policies))
        with run_gateway(tmp, cfg) as gw:
            yield gw, users, tmp, policies


def sid_of(client: httpx.Client) -> str:
    return jwt.decode(client.cookies.get("ztgate_session"), options={"verify_signature": False})["sid"]


def sensor_token(client: httpx.Client, path: str = "/form") -> str:
    page = client.get(path, headers={"Accept": "text/html"})
    assert page.status_code == 200, page.text[:300]
    return re.search(r'data-ztgate-token="([^"]+)"', page.text).group(1)


def typing_batch(seq: int, n_keys: int, origin: float) -> str:
    events, t = [], 1000.0
    for i in range(n_keys):
        events += [[1, t, 2 + i % 4], [2, t + 95.0, 2 + i % 4]]
        t += 180.0 + (i * 37) % 60
    return json.dumps({"v": 1, "s": seq, "o": origin, "e": events})


async def send_sensor(base: str, cookie: str, token: str, messages: list[str]) -> None:
    uri = base.replace("http://", "ws://") + f"/.ztgate/sensor?token={token}"
    async with websockets.connect(uri, additional_headers={"Cookie": f"ztgate_session={cookie}"}) as ws:
        for m in messages:
            await ws.send(m)
        await asyncio.sleep(0.5)


def test_sensor_batches_reach_the_scorer(env):
    gw, users, _, _ = env
    with httpx.Client(base_url=gw.url) as c:
        login(c, users["plain"])
        token = sensor_token(c)
        origin = time.time() * 1000 - 5000
        asyncio.run(send_sensor(gw.url, c.cookies.get("ztgate_session"), token,
                                [typing_batch(1, 15, origin), typing_batch(2, 15, origin)]))
        sid = sid_of(c)
        view = wait_until(lambda: (v := gw.admin("GET", f"/sessions/{sid}").json())["assessment"].get("evidence",
                                                                                                       {}).get(
            "keystrokes", 0) >= 15 and v, timeout=10, what="assessment with keystrokes")
        assert view["state"] == "active"
        assert "cadence" in view["assessment"]["signals"] and "sensor" in view["assessment"]["signals"]
        # garbage on the sensor socket is refused without harm to the session
        asyncio.run(send_sensor(gw.url, c.cookies.get("ztgate_session"), token, ["{not json"]))
        assert c.get("/", headers={"Accept": "text/html"}).status_code == 200


def test_sensor_token_of_another_session_is_refused(env):
    gw, users, _, _ = env
    with httpx.Client(base_url=gw.url) as a:
        login(a, users["api"])
        token = sensor_token(a)
    with httpx.Client(base_url=gw.url) as b:
        login(b, users["other"])  # every test signs in its own user: a TOTP code is accepted once
        b.get("/", headers={"Accept": "text/html"})  # b's session is live in the monitor
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            asyncio.run(send_sensor(gw.url, b.cookies.get("ztgate_session"), token, [typing_batch(1, 1, 1.7e12)]))
        assert refused.value.response.status_code == 403
        sid = sid_of(b)
        # the refusal is evidence against b's session: the sensor signal counts a token of another session
        details = wait_until(lambda: gw.admin("GET", f"/sessions/{sid}").json()["assessment"].get(
            "signals", {}).get("sensor", {}).get("details", {}), timeout=10, what="b's sensor signal")
        assert any(v > 0 for k, v in details.items() if "other_session" in k), details


def test_typing_triggers_step_up_and_totp_restores(env):
    gw, users, _, _ = env
    user = users["typist"]
    with httpx.Client(base_url=gw.url) as c:
        login(c, user)
        sid = sid_of(c)
        token = sensor_token(c)
        origin = time.time() * 1000 - 5000
        asyncio.run(send_sensor(gw.url, c.cookies.get("ztgate_session"), token, [typing_batch(1, 30, origin)]))
        wait_until(lambda: gw.admin("GET", f"/sessions/{sid}").json()["state"] == "step_up_required", timeout=10,
                   what="step-up")
        # browsers are sent to the MFA page; API clients get the RFC 9470 challenge
        r = c.get("/form", headers={"Accept": "text/html"})
        assert r.status_code == 302 and r.headers["location"].startswith("/.ztgate/mfa?next=")
        api = c.get("/api/items", headers={"Accept": "application/json"})
        assert api.status_code == 401
        challenge = api.headers["www-authenticate"]
        assert 'error="insufficient_user_authentication"' in challenge and 'max_age="300"' in challenge
        # the TOTP round trip (a fresh code: the login's code is spent)
        page = c.get("/.ztgate/mfa?next=/form", headers={"Accept": "text/html"})
        csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
        wrong = c.post("/.ztgate/mfa", data={"csrf": csrf, "next": "/form", "otp": "000000"})
        assert wrong.status_code == 401
        wait_until(lambda: user.code() != _last_code.get(user.username), timeout=35, interval=0.5,
                   what="the next TOTP window") if _remember(user) else None
        page = c.get("/.ztgate/mfa?next=/form", headers={"Accept": "text/html"})
        csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
        ok = c.post("/.ztgate/mfa", data={"csrf": csrf, "next": "/form", "otp": user.code()})
        assert ok.status_code == 303 and ok.headers["location"] == "/form"
        view = gw.admin("GET", f"/sessions/{sid}").json()
        assert view["state"] == "active" and "otp" in view["amr"] and view["step_up"]["count"] == 1
        assert c.get("/form", headers={"Accept": "text/html"}).status_code == 200
        # the evidence that caused the step-up was reset, so the same rule does not fire again at once
        assert view["assessment"].get("evidence", {}).get("keystrokes", 0) < 20
        events = (gw.config_path.parent / "events-gw.jsonl")
        wait_until(lambda: events.exists() and "much-typing" in events.read_text(), timeout=10,
                   what="the step-up security event")


_last_code: dict[str, str] = {}


def _remember(user) -> bool:
    _last_code[user.username] = user.code()
    return True


def test_restrict_blocks_post_allows_get(env):
    gw, users, _, _ = env
    with httpx.Client(base_url=gw.url) as c:
        login(c, users["contractor"])
        sid = sid_of(c)
        c.get("/", headers={"Accept": "text/html"})
        wait_until(lambda: gw.admin("GET", f"/sessions/{sid}").json()["state"] == "restricted", timeout=10,
                   what="restricted")
        assert c.get("/api/items", headers={"Accept": "application/json"}).status_code == 200
        post = c.post("/api/items", json={"name": "x"}, headers={"Accept": "application/json"})
        assert post.status_code == 403 and post.json()["error"] == "restricted"
        page = c.post("/form", data={"name": "x"}, headers={"Accept": "text/html"})
        assert page.status_code == 403 and "restricted" in page.text
        who = c.get("/api/whoami", headers={"Accept": "application/json"}).json()
        assert who["ztgate_state"] == "restricted"  # upstream apps see the state in the assertion


def test_shadow_rules_are_reported_not_enforced(env):
    gw, users, tmp, _ = env
    with httpx.Client(base_url=gw.url) as c:
        login(c, users["watched"])
        sid = sid_of(c)
        c.get("/", headers={"Accept": "text/html"})
        events = tmp / "events-gw.jsonl"
        wait_until(lambda: events.exists() and "would-terminate" in events.read_text(), timeout=10,
                   what="the shadow decision's security event")
        assert gw.admin("GET", f"/sessions/{sid}").json()["state"] == "active"
        assert c.get("/", headers={"Accept": "text/html"}).status_code == 200
        shadow = [json.loads(line) for line in events.read_text().splitlines() if "would-terminate" in line]
        assert shadow and all(e.get("is_alert") is False for e in shadow)  # reported, not alerted


def test_hot_reload_applies_and_bad_change_is_refused(env):
    gw, users, tmp, policies = env
    extra = policies / "zz-reload.yaml"
    extra.write_text("policies:\n  - id: plain-read-only\n    match: {users: [plain]}\n    rules:\n"
                     "      - id: ro\n        when: \"true\"\n        action: restrict\n        params: {read_only: true}\n")
    wait_until(lambda: gw.admin("GET", "/policies").json()["reloads"] >= 1, timeout=5, what="policy reload")
    digest = gw.admin("GET", "/policies").json()["digest"]
    (policies / "zz-broken.yaml").write_text("policies:\n  - id: broken\n    rules:\n      - id: x\n"
                                             "        when: signals.nope.score > 1.0\n        action: terminate\n")
    wait_until(lambda: gw.admin("GET", "/policies").json()["rejections"] >= 1, timeout=5, what="rejection")
    status = gw.admin("GET", "/policies").json()
    assert status["digest"] == digest and any("zz-broken.yaml:5" in e for e in status["last_error"])
    (policies / "zz-broken.yaml").unlink()
    extra.unlink()
    wait_until(lambda: gw.admin("GET", "/policies").json()["reloads"] >= 2, timeout=5, what="policy reload back")
