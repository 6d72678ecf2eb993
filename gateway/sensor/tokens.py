"""Per-page sensor tokens, bound to the session that was served the page.

A token is `v1.<payload>.<mac>` (base64url, no padding):

    payload = page_id (12 random bytes) | issued (uint64 big-endian, Unix ms) | session tag (12 bytes)
    session tag = HMAC-SHA256(secret, "ztgate/sensor/session\\0" + sid)[:12]
    mac = HMAC-SHA256(secret, "ztgate/sensor/token\\0" + payload)[:16]

The session id never appears in clear; the tag is a keyed pseudonym of it. Keeping it inside the authenticated
payload (rather than only inside the MAC) lets `verify` tell a forged token from a genuine token of ANOTHER
session, which is evidence of its own (a token lifted from one browser and replayed from another).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass

TOKEN_LIFETIME_S = 12 * 3600.0
MAX_FUTURE_S = 60.0  # clock differences between gateway instances
MIN_SECRET_BYTES = 16
_VERSION = "v1"
_PAGE_ID_BYTES = 12
_TAG_BYTES = 12
_MAC_BYTES = 16
_PAYLOAD = struct.Struct(f">{_PAGE_ID_BYTES}sQ{_TAG_BYTES}s")
_MAX_TOKEN_CHARS = 128
_TOKEN_DOMAIN = b"ztgate/sensor/token\0"
_SESSION_DOMAIN = b"ztgate/sensor/session\0"
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


class SensorTokenError(ValueError):
    """A token was refused. `reason` is one of: malformed, forged, other_session, expired, not_yet_valid."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PageToken:
    page_id: str  # 24 hex characters, unique per served page
    issued: float  # Unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the sensor token secret must be at least {MIN_SECRET_BYTES} bytes")


def _session_tag(secret: bytes, sid: str) -> bytes:
    return hmac.new(secret, _SESSION_DOMAIN + sid.encode("utf-8"), hashlib.sha256).digest()[:_TAG_BYTES]


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, _TOKEN_DOMAIN + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def issue(secret: bytes, sid: str, now: float, *, page_id: bytes | None = None) -> str:
    """A new token for one page served to session `sid` at Unix time `now` (seconds)."""
    _check_secret(secret)
    page = page_id if page_id is not None else secrets.token_bytes(_PAGE_ID_BYTES)
    if len(page) != _PAGE_ID_BYTES:
        raise ValueError(f"page_id must be {_PAGE_ID_BYTES} bytes")
    payload = _PAYLOAD.pack(page, int(round(now * 1000)), _session_tag(secret, sid))
    return f"{_VERSION}.{_b64(payload)}.{_b64(_mac(secret, payload))}"


def verify(
    secret: bytes,
    token: str,
    sid: str,
    now: float,
    *,
    lifetime_s: float = TOKEN_LIFETIME_S,
    max_future_s: float = MAX_FUTURE_S,
) -> PageToken:
    """Checks a token presented by session `sid` at Unix time `now`; raises SensorTokenError if refused."""
    _check_secret(secret)
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
        raise SensorTokenError("malformed", "not a sensor token")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _VERSION:
        raise SensorTokenError("malformed", "not a v1 sensor token")
    if not (_B64URL.fullmatch(parts[1]) and _B64URL.fullmatch(parts[2])):
        raise SensorTokenError("malformed", "token is not base64url")
    try:
        payload, mac = _unb64(parts[1]), _unb64(parts[2])
    except (binascii.Error, ValueError):
        raise SensorTokenError("malformed", "token is not base64url") from None
    if len(payload) != _PAYLOAD.size or len(mac) != _MAC_BYTES:
        raise SensorTokenError("malformed", "token has the wrong length")
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise SensorTokenError("forged", "token signature does not match")
    page, issued_ms, tag = _PAYLOAD.unpack(payload)
    if not hmac.compare_digest(tag, _session_tag(secret, sid)):
        raise SensorTokenError("other_session", "token was issued to another session")
    issued = issued_ms / 1000.0
    if issued > now + max_future_s:
        raise SensorTokenError("not_yet_valid", f"token issued {issued - now:.0f} s in the future")
    if now - issued > lifetime_s:
        raise SensorTokenError("expired", f"token is {now - issued:.0f} s old (lifetime {lifetime_s:.0f} s)")
    return PageToken(page.hex(), issued)
