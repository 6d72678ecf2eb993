"""An entry of the Redis outbox stream that is not a record (written by something else, or damaged) is passed over
without stopping delivery, and never silently: logged and counted once, however often readers meet it. Real Redis."""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

from gateway.secevents.outbox import RedisOutbox


async def test_a_damaged_stream_entry_is_reported_once_and_the_rest_delivered(redis_url, redis_prefix, caplog):
    stream = f"{redis_prefix}outbox"
    ob = RedisOutbox(redis_url, stream=stream)
    raw = aioredis.from_url(redis_url)
    try:
        await ob.append({"id": "ev-1", "kind": "x", "sid": None, "enqueued_ms": 0, "event": {}})
        await raw.xadd(stream, {"r": b"{not json"})
        await raw.xadd(stream, {"other": b"field"})
        await ob.append({"id": "ev-2", "kind": "x", "sid": None, "enqueued_ms": 0, "event": {}})
        with caplog.at_level(logging.ERROR, logger="ztgate.events"):
            first = await ob.reader(None).read(10, timeout=0)
            again = await ob.reader(None).read(10, timeout=0)
            await ob.backlog(None)
        assert [r.id for r in first] == [r.id for r in again] == ["ev-1", "ev-2"]
        assert ob.corrupt_records == 2
        assert len([r for r in caplog.records if "not a deliverable record" in r.getMessage()]) == 2
    finally:
        await raw.delete(stream)
        await raw.aclose()
        await ob.redis.aclose()
        await ob._blocking.aclose()
