"""What a sink is: something that accepts one record at a time and either returns (delivered) or raises."""

from __future__ import annotations

import json
from typing import Protocol

from ..outbox import Record


class DeliveryError(Exception):
    """The record was not delivered. `retry_after` is the receiver's hint (seconds); `slow` asks for the
    longest backoff (a 4xx that will probably not heal by itself, but must not drop the event)."""

    def __init__(self, message: str, *, retry_after: float | None = None, slow: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.slow = slow


class Sink(Protocol):
    name: str
    type: str

    async def deliver(self, record: Record) -> None: ...
    async def close(self) -> None: ...


def event_body(record: Record) -> bytes:
    """The exact bytes sinks send: the OCSF event as compact UTF-8 JSON."""
    return json.dumps(record.event, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
