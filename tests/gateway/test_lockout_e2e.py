"""Account lockout through a real gateway process on the real Redis: the configured limit locks, the admin API and
`ztgate locks` list and lift locks, security events record both, and a name the directory does not know (a password
typed into the user-name field) is kept nowhere as typed."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time

import httpx
import pytest
import redis

from tests.support.processes import free_port, gateway_config, login, make_users, run_gateway, run_upstream, wait_until

pytestmark = pytest.mark.slow

LIMIT = 3


@pytest.fixture(scope="module")
def env(tmp_path_factory, redis_server_url):
    tmp = tmp_path_factory.mktemp("lockout")
    users = make_users(tmp / "users.yaml", [{"username": "alice"}, {"username": "bob"}])
    prefix = f"ztgate-test-{secrets.token_hex(5)}:"
    port = free_port()
    with run_upstream(tmp, jwks_port=port) as upstream:
        cfg = gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                             store=redis_server_url, prefix=prefix, admin_token=secrets.token_urlsafe(24))
        cfg["identity"]["lockout"] = {"max_failures": LIMIT, "window": 600, "duration": 600}
        with run_gateway(tmp, cfg) as gw:
            yield gw, users, tmp, prefix
    client = redis.Redis.from_url(redis_server_url)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)


def attempt(gw, username: str, password: str, code: str = "000000") -> httpx.Response:
    with httpx.Client(base_url=gw.url) as c:
        page = c.get("/.ztgate/login", headers={"Accept": "text/html"})
        csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
        return c.post("/.ztgate/login", data={"csrf": csrf, "next": "/", "username": username, "password": password,
                                              "otp": code})


def events(tmp, kind_uid: int) -> list[dict]:
    path = tmp / "events-gw.jsonl"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in lines if e.get("type_uid") == kind_uid]


def locks_cli(gw, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", "locks", *args, "--url", gw.url,
                           f"--token={gw.admin_token}"], capture_output=True, text=True, timeout=30)


def test_the_configured_limit_locks_and_an_admin_lifts_it(env):
    gw, users, tmp, _ = env
    alice = users["alice"]
    statuses = [attempt(gw, "alice", "wrong-password").status_code for _ in range(LIMIT)]
    assert statuses == [401] * LIMIT
    # locked: even the right password and code are refused, with the lock page
    with httpx.Client(base_url=gw.url) as c:
        r = login(c, alice)
        assert r.status_code == 403 and "locked" in r.text.lower()
    listed = gw.admin("GET", "/locks").json()["locks"]
    assert [(x["user"], x["known"], x["reason"]) for x in listed] == [("alice", True, "too many failed sign-ins")]
    wait_until(lambda: events(tmp, 300109), timeout=10, what="the lock's security event")
    [locked] = events(tmp, 300109)
    assert locked["user"]["uid"] == "alice" and locked["activity_name"] == "Lock"

    out = locks_cli(gw, "list")
    assert out.returncode == 0 and "alice" in out.stdout and "too many failed sign-ins" in out.stdout
    out = locks_cli(gw, "remove", "alice")
    assert out.returncode == 0 and "alice unlocked" in out.stdout, out.stderr
    out = locks_cli(gw, "remove", "alice")
    assert out.returncode == 1 and "not_locked" in out.stderr
    wait_until(lambda: events(tmp, 300199), timeout=10, what="the unlock's security event")
    assert events(tmp, 300199)[0]["activity_name"] == "Unlock"
    with httpx.Client(base_url=gw.url) as c:
        assert login(c, alice).status_code == 303  # and the failures before the lock no longer count


def test_a_password_typed_as_the_user_name_is_kept_nowhere(env, redis_server_url):
    gw, _, tmp, prefix = env
    typed = f"Hunter2-{secrets.token_hex(4)}"  # what a person types into the wrong field
    statuses = [attempt(gw, typed, "whatever").status_code for _ in range(LIMIT + 1)]
    assert statuses == [401] * LIMIT + [403]  # an unknown name locks like a real one: lockouts reveal no names
    unknown = [x for x in gw.admin("GET", "/locks").json()["locks"] if not x["known"]]
    assert len(unknown) == 1 and unknown[0]["user"].startswith("~")
    needle = typed.lower()  # the form lower-cases user names
    client = redis.Redis.from_url(redis_server_url)
    for key in client.scan_iter(match=f"{prefix}*"):
        assert needle not in key.decode().lower()
        value = client.dump(key) or b""
        assert needle.encode() not in value.lower()
    time.sleep(0.5)  # let the log lines land
    assert needle not in gw.proc.log().lower()
    sink = tmp / "events-gw.jsonl"
    assert not sink.exists() or needle not in sink.read_text().lower()
    assert gw.admin("DELETE", f"/locks/{unknown[0]['user']}").status_code == 200


def test_a_disabled_account_cannot_pass_a_step_up(env):
    """Disabling a user in the directory file takes effect at their next step-up: the session ends (the step-up
    used the directory as the process last loaded it, and never looked at `disabled`)."""
    import pyotp
    import yaml

    gw, users, tmp, _ = env
    bob = users["bob"]
    with httpx.Client(base_url=gw.url) as c:
        assert login(c, bob).status_code == 303
        sid = next(s["sid"] for s in gw.admin("GET", "/sessions").json()["sessions"] if s["sub"] == "bob")
        assert gw.admin("POST", f"/sessions/{sid}/step-up").json()["state"] == "step_up_required"
        path = tmp / "users.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["users"]["bob"]["disabled"] = True
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        page = c.get("/.ztgate/mfa", params={"next": "/"}, headers={"Accept": "text/html"})
        csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
        code = pyotp.TOTP(bob.totp_secret).at(time.time() + 30)  # the sign-in spent this window's code
        r = c.post("/.ztgate/mfa", data={"csrf": csrf, "next": "/", "otp": code})
        assert r.status_code == 403
    assert gw.admin("GET", f"/sessions/{sid}").json()["state"] == "terminated"
