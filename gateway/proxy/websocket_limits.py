"""WebSocket messages through the proxy: gathered in linear time, and a client's bounded in size.

mitmproxy 12.2's WebSocket layer (`layers/websocket.py`, `relay_messages`) gathers a message before the
`websocket_message` hook sees it, with `frame_buf[-1] += data` for every piece wsproto hands over (a piece per TCP
read): bytes concatenation, quadratic in the size of a frame (a 64 MiB frame took 21 s of the event loop's CPU), and
with no bound at all (unfinished continuation frames held 300 MiB per connection). Any signed-in user could do it on
any WebSocket route.

The layer builds its two `WebsocketConnection`s by that module-level name, so the name is swapped for a subclass
whose `events()`, which the layer iterates right before appending, (1) turns the part being gathered into a
bytearray, which `+=` then extends in place, and (2) ends the WebSocket with 1009 (message too big) once a message
from the client would pass MAX_CLIENT_MESSAGE. Messages from upstreams are not bounded (the upstream is trusted and
a remote desktop's screen updates are large). Checked against mitmproxy 12.2.3: re-check `relay_messages` when
upgrading.
"""

from __future__ import annotations

from collections.abc import Iterator

import wsproto.events
from mitmproxy.proxy.layers import websocket as _ws

# A client's message: remote-desktop input is bytes, a terminal paste tens of KB; the RFB parser takes clipboards up to
# 16 MiB (gateway/capture/common.py), the largest a client legitimately sends here
MAX_CLIENT_MESSAGE = 16 * 1024 * 1024
_ORIGINAL = _ws.WebsocketConnection


class GatheringWebsocketConnection(_ORIGINAL):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._gathering: list | None = None  # the frame_buf list being counted (the layer replaces it per message)
        self._gathered = 0

    def events(self) -> Iterator[wsproto.events.Event]:
        for event in super().events():
            if isinstance(event, wsproto.events.Message):
                buf = self.frame_buf
                if buf is not self._gathering:
                    self._gathering, self._gathered = buf, sum(len(part) for part in buf)
                if not isinstance(buf[-1], bytearray):
                    buf[-1] = bytearray(buf[-1])
                data = event.data
                self._gathered += len(data) if isinstance(data, bytes) else len(data.encode())
                if not self.client and self._gathered > MAX_CLIENT_MESSAGE:
                    # this object reads the client's side (wsproto's SERVER role): the layer closes both sides
                    yield wsproto.events.CloseConnection(code=1009, reason="message too big")
                    return
            yield event


def gather_in_linear_time() -> None:
    """Idempotent: every Master of the process shares mitmproxy's module."""
    if _ws.WebsocketConnection is _ORIGINAL:
        _ws.WebsocketConnection = GatheringWebsocketConnection
