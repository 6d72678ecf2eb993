"""Raw TCP routes (VNC): which session a connection belongs to, and what passes before it belongs to one.

Raw VNC carries no cookie: a connection joins the newest live session signed in from the same address, and one from
an address without such a session is closed before the server's banner reaches it. Behind a TCP balancer that the
route trusts (`routes[].trusted_proxies`), the address is the one the balancer's PROXY protocol header names
(gateway.proxy.proxy_protocol); until that header has been read nothing goes to the server, and what the server says
first waits. The addon's tcp hooks call this; mitmproxy's objects stay at this edge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from mitmproxy import ctx, tcp

from . import forwarded
from .flowstate import FlowState
from .proxy_protocol import V1_MAX, V2_MAX, NotProxyProtocol
from .proxy_protocol import parse as parse_proxy_header

if TYPE_CHECKING:
    from ..config import Route
    from ..runtime import Gateway

log = logging.getLogger("ztgate.proxy")

HELD_MAX = 64 * 1024  # server bytes held for a client not yet admitted; more, and the connection goes


@dataclass(slots=True)
class _AwaitingProxyHeader:
    route: "Route"
    received: bytes = b""
    held: bytes = b""  # from the server, for the client once it is admitted


class RawTcp:
    def __init__(self, gw: "Gateway", sample_rtt: Callable[[str, str], None]) -> None:
        self.gw = gw
        self._sample_rtt = sample_rtt  # the addon's TCP_INFO sampling (per session, rate-limited)

    async def start(self, flow: tcp.TCPFlow) -> None:
        route = self.gw.tcp_route_for(flow.client_conn.sockname)
        client_ip = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        if route is not None and forwarded.is_trusted(client_ip, route.trusted_proxies):
            flow.metadata["ztgate_awaiting"] = _AwaitingProxyHeader(route)  # its first bytes name the client
            return
        await self._admit(flow, route, client_ip)

    async def message(self, flow: tcp.TCPFlow) -> None:
        message = flow.messages[-1]
        waiting: _AwaitingProxyHeader | None = flow.metadata.get("ztgate_awaiting")
        if waiting is not None:
            await self._awaiting_header(flow, waiting, message)
            return
        state: FlowState | None = flow.metadata.get("ztgate")
        if state is None:
            message.content = b""  # never forward for a connection without a session
            return
        if state.capture is not None:
            await self.gw.capture.tcp(flow, state, message)
        if not state.via_proxy:
            self._sample_rtt(state.sid, flow.client_conn.id)

    async def _admit(self, flow: tcp.TCPFlow, route: "Route | None", client_ip: str,
                     via: str = "") -> FlowState | None:
        gw = self.gw
        record = await gw.sessions_for_address(client_ip, route) if route else None
        if route is None or record is None:
            log.warning("refusing raw TCP connection from %s%s: no active session from that address", client_ip, via)
            self._refuse(flow, "no session")
            return None
        # through a balancer the connection's TCP RTT is the balancer's leg: the session's page pings, if a page of
        # it is open, stand for the client's (NetworkDetector.client_leg_ms)
        state = FlowState(sid=record.sid, route=route, via_proxy=bool(via))
        state.capture = gw.capture.open(route, record.sid, None)
        flow.metadata["ztgate"] = state
        gw.connections.add(record.sid, flow.client_conn.id)
        return state

    def _refuse(self, flow: tcp.TCPFlow, reason: str) -> None:
        self.gw.connections.close_client(flow.client_conn.id, reason)
        flow.kill()  # alone it does not stop forwarding (shared/notes/mitmproxy.md): the close above does

    async def _awaiting_header(self, flow: tcp.TCPFlow, waiting: _AwaitingProxyHeader, message: Any) -> None:
        data, message.content = message.content, b""  # nothing passes before the client is known
        if not message.from_client:
            waiting.held += data
            if len(waiting.held) > HELD_MAX:
                self._refuse(flow, "server spoke too long before the balancer named the client")
            return
        waiting.received += data
        peer = flow.client_conn.peername[0] if flow.client_conn.peername else ""
        try:
            header = parse_proxy_header(waiting.received)
        except NotProxyProtocol as err:  # the reason names no payload byte
            log.warning("refusing raw TCP connection from balancer %s: %s", peer, err)
            self._refuse(flow, "no PROXY protocol header")
            return
        if header is None:
            if len(waiting.received) > max(V1_MAX, V2_MAX):
                self._refuse(flow, "no PROXY protocol header")
            return
        del flow.metadata["ztgate_awaiting"]
        if header.client_ip is None:
            log.info("closing the balancer's own connection from %s (PROXY LOCAL/UNKNOWN)", peer)
            self._refuse(flow, "balancer's own connection")
            return
        state = await self._admit(flow, waiting.route, header.client_ip, via=f" (via balancer {peer})")
        if state is None:
            return
        if waiting.held:
            ctx.master.commands.call("inject.tcp", flow, True, waiting.held)
        message.content = waiting.received[header.length:]  # the client's own first bytes go on to the server
        if message.content and state.capture is not None:
            await self.gw.capture.tcp(flow, state, message)
