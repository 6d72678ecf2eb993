"""Two replicas sharing a Redis outbox: one delivers to a sink at a time, however slow the sink; and the warning
when the stream nears its cap. Real Redis (the machine's), each test under its own key prefix."""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.secevents import EventsConfig, SecurityEvents, delivery
from gateway.secevents.delivery import SinkWorker
from gateway.secevents.outbox import RedisOutbox
from gateway.secevents.sinks.base import DeliveryError




def envelope(i: int) -> dict:
    return {"id": f"ev-{i:04d}", "kind": "logoff", "sid": None, "enqueued_ms": 0, "event": {"i": i}}


class SlowSink:
    """A receiver that takes `latency` per event; records who delivered what, and how many at once."""
    type = "webhook"
    name = "siem"

    def __init__(self, who: str, log: list, latency: float, failures: int = 0):
        self.who, self.log, self.latency, self.failures = who, log, latency, failures
        self.inflight = {"now": 0, "max": 0}

    async def deliver(self, rec) -> None:
        if self.failures:
            self.failures -= 1
            raise DeliveryError("HTTP 503")
        self.inflight["now"] += 1
        self.inflight["max"] = max(self.inflight["max"], self.inflight["now"])
        try:
            await asyncio.sleep(self.latency)
        finally:
            self.inflight["now"] -= 1
        self.log.append((self.who, rec.id))

    async def close(self) -> None:
        pass


async def test_a_slow_sink_does_not_let_a_second_replica_deliver_the_same_events(redis_url, redis_prefix, cleanup,
                                                                                  monkeypatch):
    # time compressed: a 2 s lease, a receiver answering in 50 ms, one read batch of 60 events taking 3 s. The lease
    # was renewed only between batches, so it lapsed mid-batch and the standby replica delivered alongside.
    monkeypatch.setattr(delivery, "LEASE_TTL", 2.0)
    stream = redis_prefix + "outbox"
    a, b = RedisOutbox(redis_url, stream=stream), RedisOutbox(redis_url, stream=stream)
    n, received = 60, []
    ids = [envelope(i)["id"] for i in range(n)]
    for i in range(n):
        await a.append(envelope(i))
    sink_a, sink_b = SlowSink("A", received, 0.05), SlowSink("B", received, 0.05)
    wa = SinkWorker(sink_a, a, owner="replica-A", min_backoff=0.01, max_backoff=0.1)
    wb = SinkWorker(sink_b, b, owner="replica-B", min_backoff=0.01, max_backoff=0.1)
    ta = asyncio.create_task(wa.run())
    await asyncio.sleep(0.1)
    tb = asyncio.create_task(wb.run())
    deadline = time.monotonic() + 20
    while len({i for _, i in received}) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # time for a wrongful second delivery to show
    wa.stop()
    wb.stop()
    await asyncio.gather(ta, tb)
    await a.close()
    await b.close()
    assert [i for _, i in received] == ids  # each event once, in order
    assert sink_a.inflight["max"] == 1 and sink_b.inflight["max"] == 0


async def test_the_lease_is_taken_extended_and_renewed_only_by_its_holder(redis_url, redis_prefix, cleanup):
    ob = RedisOutbox(redis_url, stream=redis_prefix + "outbox")
    key = redis_prefix + "outbox:lease:siem"
    try:
        assert await ob.acquire_lease("siem", "A", 0.3)
        assert not await ob.acquire_lease("siem", "B", 10)
        assert not await ob.renew_lease("siem", "B", 10)
        assert 0 < await ob.redis.pttl(key) <= 300  # B's attempts did not extend A's lease
        assert await ob.renew_lease("siem", "A", 10)
        assert await ob.redis.pttl(key) > 5000
        assert await ob.acquire_lease("siem", "A", 0.3)  # re-acquiring one's own lease extends (here: shortens) it
        await asyncio.sleep(0.5)  # A's lease lapses
        # renewal never retakes a lapsed lease: another replica may have held it and moved the cursor meanwhile
        assert not await ob.renew_lease("siem", "A", 10)
        assert await ob.redis.get(key) is None
        assert await ob.acquire_lease("siem", "B", 10)
        assert not await ob.renew_lease("siem", "A", 10)
        assert (await ob.redis.get(key)) == b"B"
    finally:
        await ob.close()


async def test_a_backoff_longer_than_the_lease_keeps_the_lease(redis_url, redis_prefix, cleanup, monkeypatch, caplog):
    monkeypatch.setattr(delivery, "LEASE_TTL", 0.6)
    stream = redis_prefix + "outbox"
    a, b = RedisOutbox(redis_url, stream=stream), RedisOutbox(redis_url, stream=stream)
    received: list = []
    await a.append(envelope(0))
    sink_a = SlowSink("A", received, 0.0, failures=1)  # one 503, then a backoff of 1.5 s: over two lease lifetimes
    wa = SinkWorker(sink_a, a, owner="replica-A", min_backoff=1.5, max_backoff=1.5)
    wb = SinkWorker(SlowSink("B", received, 0.0), b, owner="replica-B", min_backoff=0.01, max_backoff=0.1)
    with caplog.at_level(logging.WARNING, logger="ztgate.secevents"):
        ta = asyncio.create_task(wa.run())
        await asyncio.sleep(0.1)
        tb = asyncio.create_task(wb.run())
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        wa.stop()
        wb.stop()
        await asyncio.gather(ta, tb)
    await a.close()
    await b.close()
    assert received == [("A", "ev-0000")]
    assert not [r for r in caplog.records if "lease lost" in r.getMessage()]


async def test_the_near_cap_warning_fires_while_a_sink_has_never_delivered(redis_url, redis_prefix, cleanup, tmp_path,
                                                                           caplog):
    # nothing can be trimmed while a sink has delivered nothing; the stream grows towards its cap, where XADD drops
    # the oldest entries: that must be announced, and was not (the check came after the early return)
    cfg = EventsConfig.from_dict({"outbox": {"stream": redis_prefix + "outbox", "maxlen": 1000},
                                  "sinks": [{"type": "jsonl", "name": "siem", "path": str(tmp_path / "e.jsonl")}]})
    events = SecurityEvents(cfg, "gw-1", redis_url)  # not started: no worker delivers
    try:
        async with events.outbox.redis.pipeline(transaction=False) as pipe:
            for i in range(850):
                pipe.xadd(cfg.outbox.stream, {"r": b'{"id":"ev","event":{}}'})
            await pipe.execute()
        with caplog.at_level(logging.WARNING, logger="ztgate.secevents"):
            await events._compact_redis()
        assert await events.outbox.length() == 850  # nothing trimmed: the sink still needs all of it
    finally:
        await events.outbox.close()
    assert [r for r in caplog.records if "near its cap of 1000" in r.getMessage()]
