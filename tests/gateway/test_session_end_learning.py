"""A sign-out teaches the typing profile on the memory store too (one process): the logout handler itself, called as
the proxy calls it, on a Gateway in the test's process whose scorer has a genuine session's typing. The termination
the sign-out makes ended the scorer as a termination for cause (no learning) before the handler asked for a clean
end. A termination for cause never learns. (With Redis, through real `ztgate run` processes and the sensor:
test_session_end_learning_e2e.py.)"""

from __future__ import annotations

import time

import httpx

import scoring
from gateway.control.app import create_app
from gateway.sessions import Identity
from tests.gateway.test_monitor_gateway import keys as _keys
from tests.support.inprocess import memory_gateway


async def _typed_session(gw, user: str, seed: int):
    record = await gw.sessions.create(Identity(sub=user), client_ip="127.0.0.1", user_agent="ua", route="app")
    await gw.monitor.live(record.sid)
    now = time.time() * 1000.0
    for j in range(8):
        await gw.monitor.ingest(record.sid, _keys(20, now - 300_000 + 5_000 * j, seed + j))
    return record


async def _sessions_learned(gw, user: str) -> int:
    return scoring.Profile.from_bytes(await gw.store.get_profile(user)).sessions


async def test_a_sign_out_learns_and_a_termination_for_cause_does_not(tmp_path):
    gw = memory_gateway(tmp_path)
    await gw.sessions.start()
    gw.sessions.on_change(gw.enforcer.on_session_change)  # as Gateway.start() wires them
    now = time.time() * 1000.0
    for user in ("ann", "bea"):
        await gw.store.put_profile(user, scoring.enrol_session([_keys(600, now - 600_000, 1)]).to_bytes())
    start = await _sessions_learned(gw, "ann")

    ejected = await _typed_session(gw, "bea", 10)
    await gw.enforcer.terminate(ejected.sid, "for cause", by="admin")
    assert await _sessions_learned(gw, "bea") == start

    record = await _typed_session(gw, "ann", 20)
    binding = "b" * 24
    cookies = {gw.config.session.cookie_name: gw.issue_session_token(record), "ztgate_pre": binding}
    headers = {"x-ztgate-internal": gw.internal_secret, "x-forwarded-for": "127.0.0.1", "user-agent": "ua"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(gw)), base_url="http://gw",
                                 cookies=cookies, headers=headers) as client:
        answer = await client.post("/.ztgate/logout", data={"csrf": gw.csrf.issue("logout", binding)})
    assert answer.status_code == 303 and answer.headers["location"] == "/.ztgate/login"
    assert (await gw.sessions.get(record.sid)).terminated
    assert await _sessions_learned(gw, "ann") == start + 1
    assert await _sessions_learned(gw, "bea") == start
