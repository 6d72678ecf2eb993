"""The browser sensor in the gateway: injected into HTML on its way out, its batches decoded on their way in,
its health tracked as the `sensor` signal.

What this process sees of a session's sensor (pages served, batches, pongs, refused tokens) goes to the monitor as
observations: taken in here if this process scores the session, else forwarded to the process that does
(gateway/ownership.py), which alone judges the sensor's integrity, sequence numbers (replays) included. Tokens and the
message format are checked here, where the connection is."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .sensor import inject, protocol, tokens

if TYPE_CHECKING:
    from .runtime import Gateway

log = logging.getLogger("ztgate.sensor")


class SensorBridge:
    def __init__(self, gw: "Gateway") -> None:
        self.gw = gw

    def new_integrity(self) -> Any:
        try:
            from .sensor.integrity import SensorIntegrity
        except ImportError:
            return None
        return SensorIntegrity()

    # ------------------------------------------------------------------ injection (addon, responseheaders)

    def prepare(self, flow: Any, sid: str) -> None:
        req, resp = flow.request, flow.response
        if not inject.html_content_type(resp.headers.fields):
            return
        if not inject.should_inject(req.headers, resp.headers, resp.status_code, method=req.method):
            return
        encoding = (resp.headers.get("content-encoding") or "").strip().lower()
        if encoding not in inject.SUPPORTED_ENCODINGS:
            return  # an encoding we cannot decode passes untouched: better no sensor than a broken page
        now = time.time()
        nonce = inject.new_nonce()
        token = tokens.issue(self.gw.sensor_secret, sid, now)
        for name in ("content-security-policy", "content-security-policy-report-only"):
            values = resp.headers.get_all(name)
            if values:
                resp.headers.set_all(name, [v for v in (inject.csp_with_nonce(x, nonce) for x in values) if v])
        # the page now carries a per-page token: shared caches must not hand it to anyone else
        resp.headers["cache-control"] = "private, no-store"
        tag = inject.sensor_tag(token, nonce)
        if resp.stream or encoding not in ("", "identity") or _large(resp):
            path = req.path.split("?", 1)[0]
            resp.stream = inject.StreamInjector(
                tag, content_encoding=encoding,
                on_error=lambda exc: log.warning("sensor injection failed, response to %s cut: %s", path, exc))
            for name in ("content-encoding", "content-length"):
                if name in resp.headers:
                    del resp.headers[name]
            if resp.http_version == "HTTP/1.1":
                resp.headers["transfer-encoding"] = "chunked"
        else:
            flow.metadata["ztgate_tag"] = tag
        self._page_served(sid, token, now)

    def finish(self, flow: Any) -> None:
        """Buffered bodies (`response` hook): inject in place; mitmproxy fixes Content-Length."""
        tag = flow.metadata.pop("ztgate_tag", None)
        if tag is None or flow.response is None:
            return
        resp = flow.response
        resp.content = inject.inject_buffered(resp.content or b"", inject.charset_of(resp.headers), tag)

    def _page_served(self, sid: str, token: str, now: float) -> None:
        try:
            page = tokens.verify(self.gw.sensor_secret, token, sid, now)
        except tokens.SensorTokenError:
            return
        self.gw.monitor.observe(sid, {"sid": sid, "k": "page", "t": now, "page": page.page_id})

    # ------------------------------------------------------------------ ingest (control plane)

    def page_for(self, token: str, sid: str) -> Any:
        """The page a token names, or raises tokens.SensorTokenError (forged, expired, another session's)."""
        return tokens.verify(self.gw.sensor_secret, token, sid, time.time())

    async def token_rejected(self, sid: str, reason: str) -> None:
        await self.gw.monitor.deliver(sid, {"sid": sid, "k": "token", "t": time.time(), "reason": reason})

    async def message(self, sid: str, page_id: str, raw: bytes | str) -> protocol.Decoded:
        """Decodes one sensor message and hands it on: to the integrity check (a batch, whose sequence number it
        judges, or a pong), then its events to the scorer, unless the batch is a replay. Awaited message by message,
        so a socket's messages reach the scoring process in order. Raises protocol.SensorProtocolError."""
        now = time.time()
        decoded = protocol.decode(raw, session_id=sid, page=page_id, now_ms=now * 1000.0)
        if decoded.seq is None:
            observation = {"sid": sid, "k": "pong", "t": now, "page": page_id}
        else:
            observation = {"sid": sid, "k": "sensor", "t": now, "page": page_id, "seq": decoded.seq,
                           "origin": decoded.time_origin, "dropped": decoded.dropped, "untrusted": decoded.untrusted}
        if len(decoded.events) or decoded.seq is not None:
            observation["events"] = decoded.events
        await self.gw.monitor.deliver(sid, observation)
        return decoded


def _large(resp: Any) -> bool:
    length = resp.headers.get("content-length")
    return length is None or not length.isdigit() or int(length) > 1_000_000
