"""Two gateway features the takeover scenarios (issue 8) need, against a real gateway process:

- `PUT /.ztgate/admin/api/profiles/{user}` and `ztgate profiles import USER FILE`: a typing profile built offline
  with scoring.enrol is imported; anything Profile.from_bytes refuses, or anything too large, is refused and the
  stored profile is kept.
- a session cookie replayed from another client (another source address and another browser family) is stepped up
  by the shipped policy session/cookie-replayed; the same client keeps going.
"""

from __future__ import annotations

import secrets
import re
import subprocess
import sys
import time

import httpx
import pyotp
import numpy as np
import pytest

import scoring
from gateway import access
from gateway.store import SessionRecord
from scoring.events import Kind, Source, concat, make_batch
from tests.support.processes import ROOT, free_port, gateway_config, login, make_users, run_gateway, run_upstream

CHROME_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 "
             "Safari/537.36")


def _profile_bytes(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.cumsum(rng.uniform(80, 250, 400))
    keys = rng.integers(1, 8, len(t))
    down = make_batch(t, t + 1.7e12, Kind.KEY_DOWN, key=keys, source=Source.SENSOR)
    up = make_batch(t + 90, t + 90 + 1.7e12, Kind.KEY_UP, key=keys, source=Source.SENSOR)
    batch = concat([down, up])
    return scoring.enrol([batch[np.argsort(batch["t_src"], kind="stable")]]).to_bytes()


def test_user_agent_family_ignores_versions_and_tells_tools_apart():
    assert access.user_agent_family(CHROME_UA) == "chrome/linux"
    assert access.user_agent_family(CHROME_UA.replace("131.0", "140.0")) == "chrome/linux"
    assert access.user_agent_family("curl/8.5.0") == "curl/other"
    assert access.user_agent_family("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 "
                                    "Firefox/128.0") == "firefox/windows"


def test_client_change_scores_address_and_agent():
    record = SessionRecord(sid="s", sub="u", client_ip="127.0.0.1", user_agent=CHROME_UA)
    assert access.client_change(record, "127.0.0.1", CHROME_UA) is None
    assert access.client_change(record, "127.0.0.2", CHROME_UA)["score"] == 0.5
    assert access.client_change(record, "127.0.0.1", "curl/8.5.0")["score"] == 0.5
    both = access.client_change(record, "127.0.0.2", "curl/8.5.0")
    assert both == {"address_changed": 1.0, "agent_changed": 1.0, "score": 1.0}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("profile-import")
    users = make_users(tmp / "users.yaml", [{"username": "carol"}, {"username": "dave"}])
    port = free_port()
    with run_upstream(tmp, jwks_port=port) as upstream:
        cfg = gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                             admin_token=secrets.token_urlsafe(24),
                             policies={"dir": str(ROOT / "policies" / "defaults")})
        with run_gateway(tmp, cfg) as gw:
            yield gw, users, tmp


@pytest.mark.slow
def test_profile_import_validates_and_keeps_the_old_profile_on_bad_input(env):
    gw, _, tmp = env
    good = _profile_bytes()
    r = gw.admin("PUT", "/profiles/carol", content=good)
    assert r.status_code == 201 and r.json() == {"user": "carol", "bytes": len(good), "replaced": False}
    assert gw.admin("GET", "/profiles/carol").json()["bytes"] == len(good)
    assert gw.admin("PUT", "/profiles/carol", content=good).json()["replaced"] is True

    corrupt = gw.admin("PUT", "/profiles/carol", content=b"ZTPF" + b"\x00" * 40)
    assert corrupt.status_code == 422 and corrupt.json()["error"] == "bad_profile"
    assert gw.admin("PUT", "/profiles/carol", content=b"x" * (64 * 1024 + 1)).status_code == 413
    assert gw.admin("PUT", "/profiles/carol", content=b"").status_code == 400
    assert gw.admin("GET", "/profiles/carol").json()["bytes"] == len(good)  # bad uploads lost nothing
    assert httpx.put(f"{gw.url}/.ztgate/admin/api/profiles/carol", content=good).status_code in (401, 403)

    path = tmp / "dave.profile"
    path.write_bytes(_profile_bytes(1))
    cli = [sys.executable, "-m", "gateway.cli.main", "profiles", "import", "dave", str(path), "--url", gw.url,
           f"--token={gw.admin_token}"]  # a random token may start with "-"
    done = subprocess.run(cli, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr
    assert "dave" in gw.admin("GET", "/profiles").json()["profiles"]
    missing = subprocess.run([str(tmp / "nope") if arg == str(path) else arg for arg in cli], capture_output=True,
                             text=True, cwd=ROOT, timeout=60)
    assert missing.returncode == 2 and "cannot read" in missing.stderr


@pytest.mark.slow
def test_replayed_cookie_from_another_client_is_stepped_up(env):
    gw, users, _ = env
    with httpx.Client(base_url=gw.url, headers={"User-Agent": CHROME_UA}) as owner:
        login(owner, users["dave"], next_url="/api/whoami")
        assert owner.get("/api/whoami", headers={"Accept": "application/json"}).status_code == 200
        cookie = owner.cookies.get("ztgate_session")
        sid = next(s["sid"] for s in gw.admin("GET", "/sessions").json()["sessions"] if s["sub"] == "dave")
        thief_transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(base_url=gw.url, transport=thief_transport, headers={"User-Agent": "curl/8.5.0"},
                          cookies={"ztgate_session": cookie}) as thief:
            r = thief.get("/api/whoami", headers={"Accept": "application/json"})
        assert r.status_code == 401 and r.json()["error"] == "insufficient_user_authentication"
        session = gw.admin("GET", f"/sessions/{sid}").json()
        assert session["state"] == "step_up_required"
        assert session["decision"]["rule_id"] == "cookie-replayed"
        # the owner is asked to step up too (the cookie is no longer trusted), not locked out
        r = owner.get("/api/whoami", headers={"Accept": "application/json"})
        assert r.status_code == 401 and r.json()["step_up"] == "/.ztgate/mfa"
        # the owner answers the step-up: their browser gets a new cookie, and the copy does not ride on the answer
        # (it did: the step-up made the whole session active again, whoever held its cookie)
        page = owner.get("/.ztgate/mfa", params={"next": "/api/whoami"}, headers={"Accept": "text/html"})
        csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
        code = pyotp.TOTP(users["dave"].totp_secret).at(time.time() + 30)  # the sign-in spent this window's code
        assert owner.post("/.ztgate/mfa", data={"csrf": csrf, "next": "/api/whoami", "otp": code}).status_code == 303
        assert owner.get("/api/whoami", headers={"Accept": "application/json"}).status_code == 200
        with httpx.Client(base_url=gw.url, transport=httpx.HTTPTransport(local_address="127.0.0.2"),
                          headers={"User-Agent": "curl/8.5.0"}, cookies={"ztgate_session": cookie}) as thief:
            r = thief.get("/api/whoami", headers={"Accept": "application/json"})
            assert r.status_code == 401 and r.json()["error"] != "insufficient_user_authentication", r.text
            assert thief.get("/.ztgate/admin/api/sessions").status_code == 401
        assert gw.admin("GET", f"/sessions/{sid}").json()["state"] == "active"  # the owner's session goes on
