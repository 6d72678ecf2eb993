"""gateway.monitor in a real Gateway (memory store, shipped policies), with events built as the sensor protocol decodes
them: what reaches the scorer, what the sensor integrity check hears of, and what a session's end teaches the profile.

A sensor that stamps one input far in the future must not blind the scorer unseen: the scorer refuses input older
than input it already has (late batches cannot rewrite the past), so one key from the year 2286 made it refuse every
later key of the session while the integrity check still saw keys arrive."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from gateway.sessions import Identity
from scoring.events import Kind, Source, concat, make_batch
from tests.support.inprocess import memory_gateway


def keys(n: int, t0_ms: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    downs = t0_ms + np.cumsum(rng.lognormal(np.log(170.0), 0.3, n))
    ups = downs + rng.lognormal(np.log(90.0), 0.2, n)
    cls = rng.integers(1, 7, n).astype(np.uint8)
    now = time.time() * 1000.0
    b = concat([make_batch(downs, now, Kind.KEY_DOWN, key=cls, source=Source.SENSOR),
                make_batch(ups, now, Kind.KEY_UP, key=cls, source=Source.SENSOR)])
    return b[np.argsort(b["t_src"], kind="stable")]


def test_a_future_stamp_that_blinds_the_scorer_shows_as_sensor_tampering(tmp_path):
    async def scenario():
        gw = memory_gateway(tmp_path)
        record = await gw.sessions.create(Identity(sub="ann"), client_ip="127.0.0.1", user_agent="ua", route="app")
        entry = await gw.monitor.live(record.sid)
        now = time.time() * 1000.0
        await gw.monitor.ingest(record.sid, keys(30, now - 20_000, 1))
        honest = entry.integrity.signal(time.time())
        assert honest.details["inputs_refused"] == 0 and entry.scorer.dropped_events == 0
        future = make_batch([1e13], now, Kind.KEY_UP, key=1, source=Source.SENSOR)  # year 2286
        await gw.monitor.ingest(record.sid, future)
        for i in range(3):
            await gw.monitor.ingest(record.sid, keys(20, now - 15_000 + 4_000 * i, 2 + i))
        return entry.integrity.signal(time.time()), entry.scorer.dropped_events

    signal, refused = asyncio.run(scenario())
    assert refused >= 3 * 40  # the scorer did refuse every later key
    assert signal.details["inputs_refused"] == 3 and signal.score >= 0.5  # the shipped sensor-tampered level


def test_two_sessions_of_one_user_both_learn(tmp_path):
    # each session learned into the profile as it found it at its start: the one ending second undid the first
    import scoring

    async def scenario():
        gw = memory_gateway(tmp_path)
        now = time.time() * 1000.0
        await gw.store.put_profile("ann", scoring.enrol_session([keys(600, now - 600_000, 1)]).to_bytes())
        sids = []
        for i in range(2):
            record = await gw.sessions.create(Identity(sub="ann"), client_ip="127.0.0.1", user_agent="ua", route="app")
            await gw.monitor.live(record.sid)
            sids.append(record.sid)
        for i, sid in enumerate(sids):
            for j in range(8):
                await gw.monitor.ingest(sid, keys(20, now - 300_000 + 60_000 * i + 5_000 * j, 10 * i + j))
        for sid in sids:
            await gw.monitor.end(sid, clean=True)
        return scoring.Profile.from_bytes(await gw.store.get_profile("ann")).sessions

    assert asyncio.run(scenario()) == 3  # the enrolment and both sessions
