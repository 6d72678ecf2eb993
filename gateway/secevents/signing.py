"""Webhook signatures: `X-Ztgate-Signature: v1=<hex hmac-sha256(secret, timestamp + "." + body)>`.

The timestamp is signed so that a receiver can reject replays of an old delivery; the delivery id
(`X-Ztgate-Delivery`, the event's stable id) lets it drop redeliveries it has already processed.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

SIGNATURE_HEADER = "X-Ztgate-Signature"
TIMESTAMP_HEADER = "X-Ztgate-Timestamp"
DELIVERY_HEADER = "X-Ztgate-Delivery"
SCHEME = "v1"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def signed_headers(secret: str, delivery_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    ts = int(now if now is not None else time.time())
    return {DELIVERY_HEADER: delivery_id, TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, ts, body)}


@dataclass(frozen=True)
class Verdict:
    valid: bool
    reason: str
    delivery_id: str | None = None
    age_seconds: float | None = None


def verify(secret: str, headers: dict[str, str], body: bytes, *, max_age: float | None = 300.0,
           now: float | None = None) -> Verdict:
    """Check a delivery. `max_age=None` skips the freshness check (e.g. when auditing a stored delivery)."""
    h = {k.lower(): v for k, v in headers.items()}
    delivery = h.get(DELIVERY_HEADER.lower())
    ts_raw, sig = h.get(TIMESTAMP_HEADER.lower()), h.get(SIGNATURE_HEADER.lower())
    if not ts_raw or not sig:
        return Verdict(False, f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header", delivery)
    try:
        ts = int(ts_raw)
    except ValueError:
        return Verdict(False, f"{TIMESTAMP_HEADER} is not an integer: {ts_raw!r}", delivery)
    age = (now if now is not None else time.time()) - ts
    expected = sign(secret, ts, body)
    # Several comma-separated signatures are accepted, so a receiver keeps working during secret rotation.
    if not any(hmac.compare_digest(expected, s.strip()) for s in sig.split(",")):
        return Verdict(False, "signature mismatch (wrong secret, or body/timestamp altered)", delivery, age)
    if max_age is not None and abs(age) > max_age:
        return Verdict(False, f"timestamp is {age:.0f} s old (limit {max_age:.0f} s): possible replay", delivery, age)
    return Verdict(True, "signature valid", delivery, age)
