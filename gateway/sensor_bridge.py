"""The browser sensor in the gateway: injected into HTML on its way out, its batches decoded on their way in,
its health tracked as the `sensor` signal."""

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
        live = self.gw.monitor.entry(sid)
        if live is None or live.integrity is None:
            return
        try:
            page = tokens.verify(self.gw.sensor_secret, token, sid, now)
        except tokens.SensorTokenError:
            return
        live.integrity.page_served(page.page_id, now)

    # ------------------------------------------------------------------ ingest (control plane)

    def page_for(self, token: str, sid: str) -> Any:
        """The page a token names, or raises tokens.SensorTokenError (forged, expired, another session's)."""
        return tokens.verify(self.gw.sensor_secret, token, sid, time.time())

    async def token_rejected(self, sid: str, reason: str) -> None:
        live = await self.gw.monitor.live(sid)
        if live is not None and live.integrity is not None:
            live.integrity.token_rejected(reason, time.time())

    async def message(self, sid: str, page_id: str, raw: bytes | str) -> protocol.Decoded:
        """Decodes one sensor message and hands its events on. Raises protocol.SensorProtocolError."""
        now = time.time()
        decoded = protocol.decode(raw, session_id=sid, page=page_id, now_ms=now * 1000.0)
        live = await self.gw.monitor.live(sid)
        integrity = live.integrity if live is not None else None
        if integrity is not None:
            if decoded.seq is None:
                integrity.pong(page_id, now)
            else:
                replays = integrity.counts["seq_replays"]
                integrity.batch(page_id, decoded.seq, decoded.events, now, time_origin=decoded.time_origin,
                                dropped=decoded.dropped, untrusted=decoded.untrusted)
                if integrity.counts["seq_replays"] > replays:
                    return decoded  # a replayed batch is evidence of tampering, not of typing
        if len(decoded.events):
            self.gw.monitor.submit(sid, decoded.events)
        return decoded


def _large(resp: Any) -> bool:
    length = resp.headers.get("content-length")
    return length is None or not length.isdigit() or int(length) > 1_000_000
