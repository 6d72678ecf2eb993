"""A sensor that stamps one input far in the future must not blind the scorer unseen. The scorer refuses input older
than input it already has (late batches cannot rewrite the past), so one key from the year 2286 made it refuse every
later key of the session while the sensor integrity check still saw keys arrive. Real Gateway (memory store), real
scorer, real integrity bookkeeping; the events are built as the sensor protocol decodes them."""

from __future__ import annotations

import asyncio
import textwrap
import time

import numpy as np

from gateway.config import loads
from gateway.runtime import Gateway
from gateway.sessions import Identity
from scoring.events import Kind, Source, concat, make_batch

CONFIG = """
instance: t
listeners: [{address: "127.0.0.1:18082"}]
routes:
  - {name: app, upstream: "http://127.0.0.1:9000", audience: app}
store: {url: "memory://"}
"""


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
        gw = Gateway(loads(textwrap.dedent(CONFIG), file="ztgate.yaml", base=tmp_path, env={}))
        gw.policies.load_initial()
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
