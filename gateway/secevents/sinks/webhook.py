"""Webhook sink: POST the OCSF event as JSON, signed; 2xx = delivered. Connection errors, timeouts, 408, 425, 429 and
5xx are transient failures; any other answer is a permanent one (see DeliveryError).

Redirects are never followed: security data must not be posted to wherever a 3xx points.
"""

from __future__ import annotations

import email.utils
import math
import time

import httpx

from ..config import WebhookSinkConfig
from ..outbox import Record
from ..signing import signed_headers
from .base import DeliveryError, event_body, is_transient_http


def _retry_after(value: str | None) -> float | None:
    """The receiver's Retry-After in seconds: a number or an HTTP date. Anything else (e.g. "soon", "nan") is
    treated as absent: it is only a hint, and must not turn a failed delivery into an error of another kind."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = _seconds_until(value)
    if seconds is None or not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _seconds_until(http_date: str) -> float | None:
    try:
        parsed = email.utils.parsedate_to_datetime(http_date)
        return parsed.timestamp() - time.time()
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


class WebhookSink:
    type = "webhook"

    def __init__(self, cfg: WebhookSinkConfig, *, user_agent: str = "ztgate"):
        self.cfg = cfg
        self.name = cfg.name
        self._client = httpx.AsyncClient(follow_redirects=False, timeout=httpx.Timeout(cfg.timeout),
                                         headers={"User-Agent": user_agent, **dict(cfg.headers)})

    async def deliver(self, record: Record) -> None:
        body = event_body(record)
        headers = {"Content-Type": "application/json", "X-Ztgate-Event": str(record.event.get("class_name", "")),
                   **signed_headers(self.cfg.secret, record.id, body)}
        try:
            resp = await self._client.post(self.cfg.url, content=body, headers=headers)
        except httpx.TimeoutException as err:
            raise DeliveryError(f"timed out after {self.cfg.timeout:g} s ({type(err).__name__})") from None
        except httpx.HTTPError as err:
            raise DeliveryError(f"{type(err).__name__}: {err}") from None
        code = resp.status_code
        if 200 <= code < 300:
            return
        if 300 <= code < 400:
            raise DeliveryError(f"HTTP {code} redirect to {resp.headers.get('location', '?')!r} refused "
                                "(security events are never posted to a redirect target; fix the sink URL)",
                                permanent=True, status=code)
        retry_after = _retry_after(resp.headers.get("retry-after"))
        if is_transient_http(code):
            raise DeliveryError(f"HTTP {code}", retry_after=retry_after, status=code)
        raise DeliveryError(f"HTTP {code} (rejected by the receiver; check its logs)", retry_after=retry_after,
                            permanent=True, status=code)

    async def close(self) -> None:
        await self._client.aclose()
