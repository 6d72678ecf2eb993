"""Sessions that end without a sign-out (the browser closed, the session idled out or reached its max lifetime) are
ended by the monitor's housekeeping sweep: learned from when no decision was taken against them, then forgotten.
Before, their scorers stayed for the life of the process (the resource audit: 600 sessions, none freed) and most
genuine sessions, which end that way, never taught the profile. A Gateway in the test's process on the memory store
(the clock moved by setting the record's times, not by waiting)."""

from __future__ import annotations

import dataclasses
import time

import scoring
from tests.gateway.test_session_end_learning import _keys, _sessions_learned, _typed_session
from tests.support.inprocess import memory_gateway


async def _age(gw, sid: str, **fields) -> None:
    record = await gw.sessions.get(sid)
    await gw.store.put_session(dataclasses.replace(record, version=record.version + 1, **fields), 3600)
    gw.sessions._cache.pop(sid, None)


async def test_idle_and_expired_sessions_are_ended_and_the_clean_ones_learn(tmp_path):
    gw = memory_gateway(tmp_path)
    await gw.sessions.start()
    now = time.time() * 1000.0
    for user in ("ann", "bea", "cid"):
        await gw.store.put_profile(user, scoring.enrol_session([_keys(600, now - 600_000, 1)]).to_bytes())
    start = await _sessions_learned(gw, "ann")

    idle = await _typed_session(gw, "ann", 20)
    stepped = await _typed_session(gw, "bea", 30)
    working = await _typed_session(gw, "cid", 40)
    long_ago = time.time() - 2 * gw.config.session.idle_timeout
    for sid in (idle.sid, stepped.sid):
        await _age(gw, sid, last_seen=long_ago)
        gw.monitor.entry(sid).last_input = time.monotonic() - 2 * gw.config.session.idle_timeout
    await _age(gw, stepped.sid, decision={"action": "step_up", "rule": "impostor-typing"})
    await _age(gw, working.sid, last_seen=long_ago)  # no HTTP request for long, but input still arrives

    assert await gw.monitor.sweep_ended() == 2
    assert not gw.monitor.is_live(idle.sid) and not gw.monitor.is_live(stepped.sid)
    assert gw.monitor.is_live(working.sid)
    assert await _sessions_learned(gw, "ann") == start + 1  # idled out cleanly: learned, as a sign-out would
    assert await _sessions_learned(gw, "bea") == start  # a decision was taken against it: never

    await _age(gw, working.sid, expires=time.time() - 1)  # past its max lifetime
    assert await gw.monitor.sweep_ended() == 1 and not gw.monitor.is_live(working.sid)
