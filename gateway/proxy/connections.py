"""Live client connections by session, and the one place that reaches into mitmproxy to cut them.

mitmproxy has no public API to close a connection from outside a hook (see docs/architecture.md and the
mitmproxy notes): its proxyserver addon keeps a handler per client id; cancelling the client transport's task is
what its own idle timeout does. Everything that depends on that internal shape lives here.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections import defaultdict
from typing import Any

log = logging.getLogger("ztgate.connections")

_TCP_INFO_LEN = 104
_RTT_OFFSET = 68  # struct tcp_info: tcpi_rtt, tcpi_rttvar (microseconds) at byte offsets 68 and 72


class ConnectionRegistry:
    """Which mitmproxy client connections carry which session (a connection can carry only one)."""

    def __init__(self) -> None:
        self._by_sid: dict[str, set[str]] = defaultdict(set)
        self._sid_of: dict[str, str] = {}
        self._proxyserver: Any = None

    def attach(self, proxyserver: Any) -> None:
        self._proxyserver = proxyserver

    def add(self, sid: str, client_id: str) -> None:
        previous = self._sid_of.get(client_id)
        if previous == sid:
            return
        if previous is not None:
            self._by_sid[previous].discard(client_id)
        self._sid_of[client_id] = sid
        self._by_sid[sid].add(client_id)

    def sid_of(self, client_id: str) -> str | None:
        return self._sid_of.get(client_id)

    def discard(self, client_id: str) -> None:
        sid = self._sid_of.pop(client_id, None)
        if sid is not None:
            ids = self._by_sid.get(sid)
            if ids is not None:
                ids.discard(client_id)
                if not ids:
                    del self._by_sid[sid]

    def count(self, sid: str) -> int:
        return len(self._by_sid.get(sid, ()))

    def total(self) -> int:
        return len(self._sid_of)

    def client_ids(self, sid: str) -> list[str]:
        return list(self._by_sid.get(sid, ()))

    def close_session(self, sid: str, reason: str) -> int:
        """Cuts every live connection of the session in this process. Returns how many were cut."""
        cut = 0
        for client_id in self.client_ids(sid):
            if self.close_client(client_id, reason):
                cut += 1
            self.discard(client_id)
        return cut

    def close_client(self, client_id: str, reason: str) -> bool:
        handler = self._handler(client_id)
        if handler is None:
            return False
        io = handler.transports.get(handler.client)
        if io is None or io.handler is None:
            return False
        log.info("closing client connection %s: %s", client_id, reason)
        io.handler.cancel(reason)
        return True

    def tcp_rtt(self, client_id: str) -> tuple[float, float] | None:
        """The kernel's smoothed RTT and its variance for the client path, in ms (Linux only)."""
        handler = self._handler(client_id)
        if handler is None:
            return None
        io = handler.transports.get(handler.client)
        writer = getattr(io, "writer", None)
        sock = writer.get_extra_info("socket") if writer is not None and hasattr(writer, "get_extra_info") else None
        return tcp_rtt(sock) if sock is not None else None

    def _handler(self, client_id: str) -> Any:
        if self._proxyserver is None:
            return None
        return self._proxyserver.connections.get(client_id)


def tcp_rtt(sock: Any) -> tuple[float, float] | None:
    if not hasattr(socket, "TCP_INFO"):
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    except (OSError, AttributeError):
        return None
    if len(raw) < _RTT_OFFSET + 8:
        return None
    rtt_us, rttvar_us = struct.unpack_from("<II", raw, _RTT_OFFSET)
    return rtt_us / 1000.0, rttvar_us / 1000.0
