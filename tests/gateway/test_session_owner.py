"""Session ownership without processes: a passed step-up answers the sensor-integrity findings as it answers the
scorer's; a takeover restarts the integrity check without judging what only the old owner heard; one process (the
memory store) scores every session itself, with no lease and no forwarding."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from gateway.sensor.integrity import SensorIntegrity
from gateway.sessions import Identity
from scoring.events import Kind, Source, make_batch
from tests.support.inprocess import memory_gateway


def _pointer(t0_ms: float) -> np.ndarray:
    now = time.time() * 1000.0
    return make_batch(t0_ms + 20.0 * np.arange(5), now, Kind.POINTER_MOVE, source=Source.SENSOR,
                      x=np.arange(5, dtype=np.float32), y=np.zeros(5, dtype=np.float32))


def test_a_passed_step_up_answers_the_integrity_findings(tmp_path):
    async def scenario() -> tuple[str, str, float]:
        gw = memory_gateway(tmp_path)
        record = await gw.sessions.create(Identity(sub="ann"), client_ip="127.0.0.1", user_agent="ua", route="app")
        sid = record.sid
        entry = await gw.monitor.live(sid)
        now = time.time()
        entry.integrity.page_served("p1", now - 10)
        for _ in range(2):  # text submitted while the sensor reported no key (a script filled the form)
            gw.monitor.observe_request(sid, "POST", "application/x-www-form-urlencoded", b"name=x&amount=1")
        entry.integrity._pending = type(entry.integrity._pending)(  # their grace period is over
            [(p, n, t - 5.0) for p, n, t in entry.integrity._pending], maxlen=entry.integrity._pending.maxlen)
        await gw.monitor.ingest(sid, _pointer(1000.0))
        first = (await gw.sessions.get(sid)).state
        # the user passes the step-up (gateway/control/login.py complete_step_up, then its broadcast)
        await gw.sessions.update(sid, state="active", step_up={"count": 1, "failures": 0})
        await gw.monitor.reset_evidence(sid)
        await gw.monitor.ingest(sid, _pointer(2000.0))
        return first, (await gw.sessions.get(sid)).state, entry.integrity.signal(time.time()).score

    first, after, score = asyncio.run(scenario())
    assert first == "step_up_required"
    assert after == "active" and score == 0.0


def test_a_taken_over_session_is_not_judged_for_what_the_old_owner_heard():
    integrity = SensorIntegrity()
    now = time.time()
    integrity.rebase(now, taken_over=True)
    # a page served before the takeover: its stream is heard from batch 40 on, its keys reached the old owner
    integrity.batch("old-page", 40, np.empty(0, dtype=_pointer(0).dtype), now)
    integrity.request(now)
    integrity.submission(None, 3, now)
    integrity.request(now + 3.0)  # past the grace period
    signal = integrity.signal(now + 3.0)
    assert signal.details["seq_gaps"] == 0 and signal.details["typed_without_keys"] == 0
    # the replay guard still works for what is heard here
    integrity.batch("old-page", 40, np.empty(0, dtype=_pointer(0).dtype), now + 4.0)
    assert integrity.signal(now + 4.0).details["seq_replays"] == 1


def test_one_process_scores_every_session_itself(tmp_path):
    async def scenario():
        gw = memory_gateway(tmp_path)
        record = await gw.sessions.create(Identity(sub="bob"), client_ip="127.0.0.1", user_agent="ua", route="app")
        spawned = []
        gw.spawn = lambda coro, name: spawned.append(name) or coro.close()
        # not scored yet: observations are dropped, as before, and nothing is claimed or forwarded
        gw.monitor.observe_request(record.sid, "POST", "application/x-www-form-urlencoded", b"a=1")
        assert spawned == [] and not gw.monitor.is_live(record.sid)
        entry = await gw.monitor.live(record.sid)
        gw.monitor.observe_request(record.sid, "GET", "", None)
        assert entry.integrity.counts["requests"] == 1
        assert gw.monitor.ownership.shared is False and gw.monitor.assessment_of(record.sid) is None
        return gw.monitor.scored_on(record.sid) == gw.monitor.ownership.me

    assert asyncio.run(scenario())
