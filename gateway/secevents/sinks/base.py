"""What a sink is: something that accepts one record at a time and either returns (delivered) or raises."""

from __future__ import annotations

import json
from typing import Protocol

from ..outbox import Record

# HTTP answers that say "not now" rather than "not this": the receiver is slow, starting or overloaded
TRANSIENT_HTTP_4XX = frozenset({408, 425, 429})


def is_transient_http(status: int) -> bool:
    """Whether an HTTP answer other than 2xx is worth retrying until it succeeds (408, 425, 429, 5xx)."""
    return status in TRANSIENT_HTTP_4XX or status >= 500


class DeliveryError(Exception):
    """The record was not delivered.

    `permanent`: the receiver refused this record and will refuse it again (an HTTP 4xx other than 408/425/429, a
    redirect that is not followed). The delivery worker retries it `dead_letter_after` times, then moves it to the
    sink's dead letters and goes on with the next record. Any other failure (connection refused, timeout, 408, 425,
    429, 5xx) is transient: retried until delivered, so that nothing is lost while a receiver is down.
    `status`: the receiver's HTTP status, when it answered (shown in logs and dead letters, never the body).
    `retry_after`: the receiver's hint (seconds)."""

    def __init__(self, message: str, *, retry_after: float | None = None, permanent: bool = False,
                 status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.permanent = permanent
        self.status = status


class Sink(Protocol):
    name: str
    type: str

    async def deliver(self, record: Record) -> None: ...
    async def close(self) -> None: ...


def event_body(record: Record) -> bytes:
    """The exact bytes sinks send: the OCSF event as compact UTF-8 JSON."""
    return json.dumps(record.event, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
