"""Remote-desktop and terminal streams through the inline parsers: input timing out, enforcement in.

One parser per connection, chosen by the route's kind. The session's current state decides the filter applied
to each message (hold input during a pending step-up; drop clipboard and file transfer when restricted).

A stream whose input stops being parsed (opaque) is no longer scored: the monitor is told at once, so that the
policies can act on it (`session.opaque_streams`), and while a filter is in force such a stream is cut at its next
message in either direction, since it can no longer be filtered.

Parsed input and opacity go to the monitor, which forwards them to the process that scores the session when that is
another one (gateway/ownership.py); filters are applied here, from the session's state.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .capture.common import Filter, NO_FILTER, Opacity
from .capture.guacamole import GuacamoleParser
from .capture.rfb import RfbParser
from .capture.terminal import TerminalParser
from .store import SessionState, StoreUnavailable

if TYPE_CHECKING:
    from .config import Route
    from .proxy.flowstate import FlowState
    from .runtime import Gateway

log = logging.getLogger("ztgate.capture")


class CaptureHub:
    def __init__(self, gw: "Gateway") -> None:
        self.gw = gw

    def open(self, route: "Route", sid: str, subprotocol: str | None) -> Any:
        """A parser for a new stream. `subprotocol` is the WebSocket subprotocol the upstream chose in its
        handshake answer: what it speaks, not what the client offered (a client that offered `tty` to a JSON
        terminal once made every input frame look like "not input", so no hold could drop it)."""
        if route.kind == "guacamole":
            return GuacamoleParser()
        if route.kind in ("novnc", "vnc"):
            return RfbParser()
        if route.kind == "terminal":
            return TerminalParser(dialect="ttyd" if (subprotocol or "").strip().lower() == "tty" else "json")
        return None

    def filter_for(self, sid: str) -> Filter:
        record = self.gw.sessions.cached(sid)
        if record is None:
            return NO_FILTER
        r = record.restrictions if record.state == SessionState.RESTRICTED else {}
        hold = record.state == SessionState.STEP_UP_REQUIRED or bool(r.get("hold_input"))
        if record.terminated:
            hold = True
        return Filter(block_clipboard=bool(r.get("block_clipboard")),
                      block_file_transfer=bool(r.get("block_file_transfer")), hold_input=hold)

    async def current_filter(self, state: "FlowState") -> Filter:
        """The filter for a stream's next message. A stream makes no request that would refresh its session's
        cached view, and that view can be dropped (e.g. when the store's broadcast channel reconnects): it is
        then read again (at most once a second), and until the store answers the stream keeps the last filter
        it had. Falling back to no filter would lift a restriction or a step-up hold on a store hiccup."""
        sessions = self.gw.sessions
        if sessions.cached(state.sid) is None:
            now = time.monotonic()
            if now - state.extra.get("filter_refreshed", float("-inf")) >= 1.0:
                state.extra["filter_refreshed"] = now
                try:
                    await sessions.get(state.sid)
                except StoreUnavailable:
                    pass
            if sessions.cached(state.sid) is None:
                return state.extra.get("filter", NO_FILTER)
        filt = self.filter_for(state.sid)
        state.extra["filter"] = filt
        return filt

    async def websocket(self, flow: Any, state: "FlowState", message: Any) -> None:
        filt = await self.current_filter(state)
        data = message.text if message.is_text else message.content
        t = message.timestamp * 1000.0
        parser = state.capture
        result = parser.feed_client(data, t, filt) if message.from_client else parser.feed_server(data, t, filt)
        if self._unfilterable(state, result) and filt.active:
            # unparseable under a restriction: nothing of it may pass (it could be held input or a blocked
            # clipboard), nor anything after it until the cut below lands
            message.drop()
            self._after(state, result, filt)
            return
        if result.forward is not data and result.forward != data:
            if not result.forward:
                message.drop()
            elif isinstance(result.forward, str):
                message.text = result.forward
            else:
                message.content = result.forward
        if result.reply:
            from mitmproxy import ctx

            reply = result.reply.encode() if isinstance(result.reply, str) else result.reply
            # the reply goes back to the sender: to the client when the client sent the message (`to_client`)
            ctx.master.commands.call("inject.websocket", flow, message.from_client, reply, message.is_text)
        self._after(state, result, filt)

    async def tcp(self, flow: Any, state: "FlowState", message: Any) -> None:
        filt = await self.current_filter(state)
        t = message.timestamp * 1000.0
        parser = state.capture
        data = message.content
        result = parser.feed_client(data, t, filt) if message.from_client else parser.feed_server(data, t, filt)
        if self._unfilterable(state, result) and filt.active:
            message.content = b""  # as for a WebSocket message: the stream is cut, and nothing unfiltered passes
        elif result.forward != data:
            message.content = result.forward or b""
        self._after(state, result, filt)

    @staticmethod
    def _unfilterable(state: "FlowState", result: Any) -> bool:
        """This message, or the stream's input, is no longer parsed. A stream whose input is opaque is cut under a
        filter on any message, also one from the server that was parsed: otherwise a blinded stream that keeps quiet
        while a step-up is pending would carry on unread once the step-up is passed."""
        return result.opaque or bool(state.extra.get("input_opaque"))

    def _after(self, state: "FlowState", result: Any, filt: Filter) -> None:
        self._note_input_opacity(state)
        if result.opaque and not state.extra.get("opaque_seen"):
            # from here on this stream's input is not scored (unless only the server side went): one malformed
            # message is enough for that, so the admin must hear of it (the reason names a parser check, never the
            # stream's content)
            state.extra["opaque_seen"] = True
            self.gw.telemetry.count("ztgate_capture_opaque_total", kind=state.route.kind)
            consequence = ("its input is not scored from here on" if state.extra.get("input_opaque")
                           else "server side only: its input is still scored")
            log.warning("session %s: %s stream no longer parsed (%s); %s",
                        state.sid, state.route.kind, result.reason, consequence)
        if self._unfilterable(state, result) and filt.active and not state.extra.get("opaque_cut"):
            # The stream can no longer be filtered: with a restriction in force, the only safe answer is to cut.
            state.extra["opaque_cut"] = True
            log.warning("session %s: %s stream became opaque (%s) under a restriction; closing it",
                        state.sid, state.route.kind, result.reason or getattr(state.capture, "reason", None))
            self.gw.spawn(self._cut(state.sid), name="ztgate-opaque-cut")
        if len(result.events):
            self.gw.monitor.submit(state.sid, result.events)

    def _note_input_opacity(self, state: "FlowState") -> None:
        """Tells the monitor, once per stream, that the stream's input is no longer parsed (server-side opacity alone,
        like RFB's burst mode, leaves input parsed and scored, and is not this)."""
        if state.extra.get("input_opaque") or state.capture is None:
            return
        opacity = getattr(state.capture, "input_opacity", None)
        if opacity is None:
            return
        state.extra["input_opaque"] = True
        self.gw.spawn(self.gw.monitor.stream_opaque(state.sid, oversized=opacity == Opacity.OVERSIZED),
                      name="ztgate-stream-opaque")

    async def _cut(self, sid: str) -> None:
        for client_id in self.gw.connections.client_ids(sid):
            self.gw.connections.close_client(client_id, "unparseable stream under restriction")

    def close(self, state: "FlowState") -> None:
        state.capture = None
