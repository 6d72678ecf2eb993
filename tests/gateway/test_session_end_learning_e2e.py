"""What a session's end teaches the user's typing profile, through a real gateway process on a real Redis: a session
its user signs out of, with nothing ever raised against it, is learned from; a session terminated for cause never is.

The sign-out's own termination ended the session's scoring as a termination for cause (Enforcer.on_session_change
called monitor.end(clean=False)) before the logout handler asked for a clean end, so no sign-out ever taught the
profile anything. Typing reaches the scorer as a browser sends it: sensor batches over the sensor WebSocket of a
page served through the gateway (key classes and timings only). The default policies run in shadow mode, so that no
decision (which would rightly make the session unlearnable) depends on how loaded the machine is. The memory store
(one process) is covered in test_session_end_learning.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import secrets
import time

import httpx
import numpy as np
import pytest
import redis
import websockets

import scoring
from scoring.events import Kind, Source, concat, make_batch
from tests.support.processes import (free_port, gateway_config, login, make_users, run_gateway, run_upstream,
                                     session_sid, shadow_default_policies, wait_until)

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def env(tmp_path_factory, redis_server_url):
    tmp = tmp_path_factory.mktemp("end-learning")
    prefix = f"ztgate-test-{secrets.token_hex(5)}:"
    users = make_users(tmp / "users.yaml", [{"username": "ejected"}, {"username": "leaver"}])
    port = free_port()
    try:
        with run_upstream(tmp, jwks_port=port) as upstream:
            cfg = gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                                 store=redis_server_url, prefix=prefix, admin_token=secrets.token_urlsafe(24),
                                 policies_dir=str(shadow_default_policies(tmp / "policies")))
            with run_gateway(tmp, cfg) as gw:
                yield gw, users, redis.Redis.from_url(redis_server_url), prefix
    finally:
        r = redis.Redis.from_url(redis_server_url)
        keys = list(r.scan_iter(f"{prefix}*"))
        if keys:
            r.delete(*keys)
        r.close()


def _timings(n: int, rng: random.Random) -> list[tuple[float, float, int]]:
    """(press, release, key class) of n keys typed at a human pace (~180 ms apart, ~100 ms held, irregular)."""
    keys, t = [], 0.0
    for _ in range(n):
        t += rng.lognormvariate(5.2, 0.35)
        keys.append((t, t + rng.lognormvariate(4.6, 0.25), rng.randint(1, 7)))
    return keys


def _profile(seed: int) -> bytes:
    """A profile enrolled offline from 600 keys of the same typist as the sessions'."""
    keys = _timings(600, random.Random(seed))
    downs = np.array([k[0] for k in keys]) + 1.7e12
    ups = np.array([k[1] for k in keys]) + 1.7e12
    cls = np.array([k[2] for k in keys], dtype=np.uint8)
    b = concat([make_batch(downs, downs, Kind.KEY_DOWN, key=cls, source=Source.SENSOR),
                make_batch(ups, ups, Kind.KEY_UP, key=cls, source=Source.SENSOR)])
    return scoring.enrol_session([b[np.argsort(b["t_src"], kind="stable")]]).to_bytes()


def _learned_sessions(r: redis.Redis, prefix: str, user: str) -> int:
    return scoring.Profile.from_bytes(r.get(f"{prefix}profile:{user}")).sessions


def _type_through_the_sensor(gw, client: httpx.Client, seed: int, n_keys: int = 120) -> None:
    """The sensor of a page of the app sends n_keys keys typed over the last ~25 s, in batches as a browser does."""
    page = client.get("/form", headers={"Accept": "text/html"})
    assert page.status_code == 200, page.text[:300]
    token = re.search(r'data-ztgate-token="([^"]+)"', page.text).group(1)
    now = time.time() * 1000.0
    origin = now - 40_000.0  # the page loaded 40 s ago; the typing began 5 s after
    events = []
    for down, up, cls in _timings(n_keys, random.Random(seed)):
        events += [[1, round(5_000.0 + down, 1), cls], [2, round(5_000.0 + up, 1), cls]]
    events.sort(key=lambda e: e[1])
    messages = [json.dumps({"v": 1, "s": i + 1, "o": origin, "e": events[j:j + 80]})
                for i, j in enumerate(range(0, len(events), 80))]

    async def send() -> None:
        uri = gw.url.replace("http://", "ws://") + f"/.ztgate/sensor?token={token}"
        cookie = f"ztgate_session={client.cookies.get('ztgate_session')}"
        async with websockets.connect(uri, additional_headers={"Cookie": cookie}, open_timeout=10) as ws:
            for m in messages:
                await ws.send(m)
            await asyncio.sleep(0.3)

    asyncio.run(send())
    sid = session_sid(client)
    wait_until(lambda: gw.admin("GET", f"/sessions/{sid}").json()["assessment"].get("evidence", {})
               .get("keystrokes", 0) >= 100, timeout=20, what="the typing scored")


def _logout(gw, client: httpx.Client) -> None:
    # on a connection of its own: the termination cuts the session's connections in this process, the sign-out's own
    # included when it rides on one that carried the session's requests (then it gets no answer: a separate matter)
    with httpx.Client(base_url=gw.url, cookies=client.cookies, timeout=15) as fresh:
        page = fresh.get("/.ztgate/logout")
        csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
        assert fresh.post("/.ztgate/logout", data={"csrf": csrf}).status_code == 303


def test_a_clean_sign_out_is_learned_from_and_a_termination_for_cause_is_not(env):
    gw, users, r, prefix = env
    for user in ("ejected", "leaver"):  # one typist: both profiles from the same hands
        assert gw.admin("PUT", f"/profiles/{user}", content=_profile(1)).status_code == 201
    start = _learned_sessions(r, prefix, "leaver")
    assert _learned_sessions(r, prefix, "ejected") == start

    # a session an administrator ends: a termination for cause, never learned from, however clean its typing
    with httpx.Client(base_url=gw.url, timeout=15) as ejected:
        login(ejected, users["ejected"], next_url="/form")
        _type_through_the_sensor(gw, ejected, seed=2)
        sid = session_sid(ejected)
        assert gw.admin("POST", f"/sessions/{sid}/terminate", json={"reason": "for cause"}).status_code == 200

    # a session its user signs out of, nothing ever raised against it: learned from
    with httpx.Client(base_url=gw.url, timeout=15) as leaver:
        login(leaver, users["leaver"], next_url="/form")
        _type_through_the_sensor(gw, leaver, seed=3)
        sid = session_sid(leaver)
        assert not gw.admin("GET", f"/sessions/{sid}").json()["decision"]  # clean, so far as policies go
        _logout(gw, leaver)
    assert gw.admin("GET", f"/sessions/{sid}").json()["state"] == "terminated"
    wait_until(lambda: _learned_sessions(r, prefix, "leaver") > start, timeout=15,
               what="the signed-out session learned")
    assert _learned_sessions(r, prefix, "leaver") == start + 1
    # the terminated session ended before the signed-out one, in the same process: it did not learn
    assert _learned_sessions(r, prefix, "ejected") == start
