"""The gateway behind a load balancer: a listener that trusts the balancer's address believes its X-Forwarded-For and
-Proto, and does not take the balancer's TCP round trip for the client's; a listener that does not trust it ignores
them. Real gateway process, real echo upstream, real HTTP. The "balancer" is this test's HTTP client on loopback
adding the headers a balancer adds: what the gateway sees of a real one is exactly that (a peer address and
headers)."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.support.processes import (free_port, gateway_config, login, make_users, run_echo, run_gateway,
                                     session_sid, wait_until)

pytestmark = pytest.mark.slow

CLIENT = "203.0.113.7"
CHAIN = f"198.51.100.1, {CLIENT}"  # what the client wrote itself, then what the balancer appended


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lb")
    users = make_users(tmp / "users.yaml", [{"username": f"u{i}"} for i in range(5)])
    behind, direct = free_port(), free_port()
    with run_echo(tmp) as echo:
        cfg = gateway_config(port=behind, upstream=echo, tmp=tmp, users_file=tmp / "users.yaml",
                             admin_token=secrets.token_urlsafe(24))
        cfg["listeners"] = [{"address": f"127.0.0.1:{behind}", "trusted_proxies": ["127.0.0.1/32"]},
                            {"address": f"127.0.0.1:{direct}"}]
        with run_gateway(tmp, cfg) as gw:
            yield gw, users, f"http://127.0.0.1:{direct}"


def _sets_a_secure_cookie(base: str, proto: str) -> bool:
    r = httpx.get(f"{base}/.ztgate/login", headers={"Accept": "text/html", "X-Forwarded-For": CLIENT,
                                                    "X-Forwarded-Proto": proto})
    assert r.status_code == 200
    return all("secure" in v.lower() for v in r.headers.get_list("set-cookie")) and bool(r.headers.get_list("set-cookie"))


def test_the_client_behind_a_trusted_balancer_is_the_forwarded_one(env):
    gw, users, _ = env
    with httpx.Client(base_url=gw.url, headers={"X-Forwarded-For": CHAIN, "User-Agent": "Mozilla/5.0 Firefox/140.0"}) as c:
        assert login(c, users["u0"]).status_code in (200, 303)
        sid = session_sid(c)
        seen = c.get("/anything", headers={"Accept": "application/json"}).json()
    record = gw.admin("GET", f"/sessions/{sid}").json()
    assert record["client_ip"] == CLIENT  # not the balancer's address
    forwarded = [v for k, v in seen["headers"] if k == "x-forwarded-for"]
    assert forwarded == [CLIENT]  # the upstream hears of the client, once, as the gateway resolved it


def test_a_cookie_replayed_from_another_client_behind_the_balancer_is_noticed(env):
    # all clients share the balancer's address; without the forwarded one a copied cookie looked like its owner
    gw, users, _ = env
    with httpx.Client(base_url=gw.url, headers={"X-Forwarded-For": CLIENT, "User-Agent": "Mozilla/5.0 Firefox/140.0"}) as c:
        login(c, users["u1"])
        cookie = c.cookies.get("ztgate_session")
        assert c.get("/anything", headers={"Accept": "application/json"}).status_code == 200
    stolen = httpx.get(f"{gw.url}/anything", headers={
        "Accept": "application/json", "Cookie": f"ztgate_session={cookie}", "X-Forwarded-For": "192.0.2.99",
        "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"})
    assert stolen.status_code != 200


def _tcp_samples(gw, sid: str) -> float:
    assessment = gw.admin("GET", f"/sessions/{sid}").json().get("assessment") or {}
    return assessment.get("signals", {}).get("network", {}).get("details", {}).get("tcp_samples", 0.0)


def test_a_client_that_is_not_the_balancer_names_nobody(env):
    gw, users, direct = env
    with httpx.Client(base_url=direct, headers={"X-Forwarded-For": CLIENT}) as c:
        login(c, users["u2"])
        sid = session_sid(c)
        seen = c.get("/anything", headers={"Accept": "application/json"}).json()
    record = gw.admin("GET", f"/sessions/{sid}").json()
    assert record["client_ip"] == "127.0.0.1"
    assert [v for k, v in seen["headers"] if k == "x-forwarded-for"] == ["127.0.0.1"]


def test_only_a_direct_connection_gives_scoring_its_tcp_round_trip(env):
    gw, users, direct = env
    sids = {}
    for name, base, user in (("behind", gw.url, "u3"), ("direct", direct, "u4")):  # the balancer's session first
        with httpx.Client(base_url=base, headers={"X-Forwarded-For": CLIENT}) as c:
            login(c, users[user])
            sids[name] = session_sid(c)
            assert c.get("/anything", headers={"Accept": "application/json"}).status_code == 200
    wait_until(lambda: _tcp_samples(gw, sids["direct"]) >= 1, timeout=10, what="a TCP RTT sample of the direct client")
    # the balancer's round trip is not the client's: none of its samples reached the session's scoring
    assert _tcp_samples(gw, sids["behind"]) == 0.0


def test_cookies_stay_secure_behind_a_balancer_that_ended_tls(env):
    gw, _, direct = env
    assert _sets_a_secure_cookie(gw.url, "https")  # the browser used TLS, to the balancer
    assert not _sets_a_secure_cookie(gw.url, "http")
    assert not _sets_a_secure_cookie(direct, "https")  # only the balancer may say so
