"""Redis Stream sink: XADD with a bounded length; consumers read it with consumer groups.

Each entry carries the event id (`id`) for de-duplication and the OCSF event as JSON (`event`).
A Redis restart is a retryable failure; the client reconnects on the next attempt.
"""

from __future__ import annotations

import redis.asyncio as aioredis
import redis.exceptions as rex

from ..config import RedisStreamSinkConfig
from ..outbox import Record
from .base import DeliveryError, event_body


class RedisStreamSink:
    type = "redis_stream"

    def __init__(self, cfg: RedisStreamSinkConfig):
        self.cfg = cfg
        self.name = cfg.name
        self._redis = aioredis.from_url(cfg.url, socket_timeout=cfg.timeout, socket_connect_timeout=cfg.timeout)

    async def deliver(self, record: Record) -> None:
        ev = record.event
        fields = {
            "id": record.id,
            "class_uid": str(ev.get("class_uid", "")),
            "time": str(ev.get("time", "")),
            "correlation_uid": str((ev.get("metadata") or {}).get("correlation_uid", "")),
            "event": event_body(record),
        }
        try:
            await self._redis.xadd(self.cfg.stream, fields, maxlen=self.cfg.maxlen, approximate=True)
        except rex.RedisError as err:
            raise DeliveryError(f"{type(err).__name__}: {err}") from None

    async def close(self) -> None:
        await self._redis.aclose()
