"""Webhook signatures: `X-Ztgate-Signature: v1=<hex hmac-sha256(secret, timestamp + "." + body)>`.

The timestamp is signed so that a receiver can reject replays of an old delivery. The delivery id
(`X-Ztgate-Delivery`, the event's stable id) lets it drop redeliveries it has already processed; the header itself
is not signed, but the same id is the body's `metadata.uid`, which is: `verify` refuses a delivery whose header
disagrees with it (a replay with a new id in the header would otherwise pass a receiver's de-duplication).
"""

from __future__ import annotations

import hashlib
import hmac
import json
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
    signed_id = _event_uid(body)
    if signed_id is None:
        return Verdict(False, "the signed body carries no metadata.uid", delivery, age)
    if delivery is not None and delivery != signed_id:
        return Verdict(False, f"{DELIVERY_HEADER} {delivery!r} is not the signed event's id {signed_id!r}: "
                              "a replay under a new delivery id", delivery, age)
    return Verdict(True, "signature valid", signed_id, age)


def _event_uid(body: bytes) -> str | None:
    try:
        uid = json.loads(body)["metadata"]["uid"]
    except (ValueError, KeyError, TypeError):
        return None
    return uid if isinstance(uid, str) else None
