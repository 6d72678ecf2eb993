"""The mitmproxy addon: every request, WebSocket message and TCP chunk passes through here.

Its job is narrow: strip what clients must not send, route control-plane paths to the control plane, check the
session (gateway.access decides), attach the signed identity, hand input to capture and the monitor, and apply
enforcement to streams. Everything else lives in the modules it calls.

It is the only ztgate addon in mitmproxy's chain, and its hooks are plain functions unless they must await:
every addon that has a hook costs a dispatch on every request (dispatch.HookDispatch skips the addons that do
not), and an `async def` hook costs a coroutine even when it has nothing to wait for. The drain bookkeeping
(master.Lifecycle) is called from here rather than registered as a second addon for the same reason.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mitmproxy import ctx, http, tcp
from mitmproxy.net.http import url

from .. import access
from ..access import Outcome, Verdict
from ..auth.tokens import ASSERTION_HEADER, TokenError
from ..config import Route
from ..sessions import NOT_CACHED
from ..store import SessionRecord, StoreUnavailable
from . import canonical, forwarded
from . import headers as fast_headers
from .flowstate import FlowState
from .rawtcp import RawTcp

if TYPE_CHECKING:
    from ..runtime import Gateway
    from .master import Lifecycle

log = logging.getLogger("ztgate.proxy")

INTERNAL_HEADER = "x-ztgate-internal"
CONTROL_PREFIXES = ("/.ztgate/", "/.well-known/ztgate/")
HEALTH_PATHS = ("/healthz", "/readyz", "/metrics")
MAX_TARGET = 8192  # bytes of request target (path and query)
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # the methods Monitor.observe_request reads a body of
_RTT_SAMPLE_EVERY = 5.0  # seconds between TCP_INFO samples of one session


@dataclass(frozen=True, slots=True)
class _Target:
    """Where a route's requests go, precomputed as mitmproxy stores it (Request.host/port setters would
    re-encode these and rewrite the Host header once each)."""

    scheme: bytes
    host: str
    port: int
    host_header: bytes


class ZtgateAddon:
    def __init__(self, gw: "Gateway", lifecycle: "Lifecycle | None" = None) -> None:
        from .master import Lifecycle

        self.gw = gw
        self.lifecycle = lifecycle or Lifecycle()
        self._last_rtt: dict[str, float] = {}
        self._clients_allowed: set[tuple] = set()  # (sid, version, changes, policy digest) judged fine
        self._targets: dict[str, tuple[Route, _Target]] = {}  # route name -> (the route it was made for, target)
        # listener port -> the proxies trusted there (listeners change only with a restart)
        self._trusted = {lst.address.port: lst.trusted_proxies for lst in gw.config.listeners if lst.trusted_proxies}
        self.raw_tcp = RawTcp(gw, self._sample_rtt)

    # ------------------------------------------------------------------ lifecycle

    def load(self, loader: Any) -> None:
        self.lifecycle.load(loader)

    def running(self) -> None:
        self.gw.connections.attach(ctx.master.addons.get("proxyserver"))

    def client_connected(self, client: Any) -> None:
        self.lifecycle.client_connected(client)

    def client_disconnected(self, client: Any) -> None:
        self.lifecycle.client_disconnected(client)
        self.gw.connections.discard(client.id)

    # ------------------------------------------------------------------ HTTP

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        # Decide here, before any body byte moves: with stream_large_bodies a large (or chunked) body is streamed
        # to the server chosen at this point, and the `request` hook fires only after the body has gone.
        self.lifecycle.requestheaders(flow)
        flow.metadata["ztgate_decided"] = True
        span = self.gw.telemetry.request_started(flow)  # None unless tracing is on and this request sampled
        if span is None:
            await self._request(flow)
        else:
            with self.gw.telemetry.tracing.active(span):
                await self._request(flow)
        if flow.response is not None and flow.request.stream:
            # mitmproxy cannot answer a request whose body it streams; a refused large upload is cut instead
            log.info("refused request with a streamed body from %s: connection closed", flow.client_conn.peername)
            flow.kill()
            # kill() alone leaves the client waiting for an answer (mitmproxy issue 8045): close its connection
            self.gw.connections.close_client(flow.client_conn.id, "refused streamed upload")

    def request(self, flow: http.HTTPFlow) -> Any:
        if not flow.metadata.get("ztgate_decided"):  # e.g. a flow replayed or injected without requestheaders
            return self.requestheaders(flow)  # mitmproxy awaits what a hook returns
        state: FlowState | None = flow.metadata.get("ztgate")
        if state is not None and state.route.kind == "http" and state.route.sensor and flow.response is None:
            req = flow.request
            method = req.method
            if method in _BODY_METHODS:  # only a submitted body is looked at (typed fields counted, never read)
                self.gw.monitor.observe_request(state.sid, method, req.headers.get("content-type", ""),
                                                req.raw_content if not req.stream else None)
            else:
                self.gw.monitor.observe_request(state.sid, method, "", None)
        return None

    async def _request(self, flow: http.HTTPFlow) -> None:
        gw, req = self.gw, flow.request
        seen = fast_headers.read(req.headers.fields)
        http1 = req.data.http_version.startswith(b"HTTP/1")
        if http1 and req.data.authority:
            # absolute form ("GET http://host/path"): the URI's authority is the host (RFC 9112 3.2.2), and the
            # request goes on in origin form, so that the upstream cannot prefer another host than the one the
            # gateway routed and decided on
            host_header = req.data.authority.decode("utf-8", "surrogateescape")
            req.data.authority = b""
        else:
            host_header = seen.values.get("host") if http1 else req.host_header
        if len(req.data.path) > MAX_TARGET:
            # before anything reads or caches it: nginx's default large_client_header_buffers is 8 KiB too
            flow.metadata["ztgate_verdict"] = "bad_request"
            flow.response = http.Response.make(414, b"request target too long\n", {"Content-Type": "text/plain"})
            return
        # One canonical host and path, decided on and forwarded, so that the gateway and the upstream cannot read
        # the request differently (gateway/proxy/canonical.py)
        raw_path, qmark, query = req.path.partition("?")
        try:
            host = canonical.canonical_host(host_header or "")
            plain_path = canonical.canonical_path(raw_path)
        except canonical.BadRequest as err:
            flow.metadata["ztgate_verdict"] = "bad_request"
            flow.response = http.Response.make(400, f"{err}\n".encode(), {"Content-Type": "text/plain"})
            return
        path = plain_path + qmark + query
        if plain_path != raw_path:
            req.path = path
        client = self._client(flow.client_conn, seen)
        client_ip, scheme = client.ip, client.scheme

        if plain_path.startswith(CONTROL_PREFIXES) or plain_path in HEALTH_PATHS:
            self._to_control_plane(flow, host, scheme, client_ip)
            return
        if host == gw.config.admin.host:
            # the admin console's host serves no app (an app there would share the console's origin)
            flow.metadata["ztgate_verdict"] = "no_route"
            flow.response = http.Response.make(303, b"", {"Location": "/.ztgate/admin/", "Cache-Control": "no-store"}) \
                if req.method in ("GET", "HEAD") else \
                http.Response.make(404, b"no route for this host and path\n", {"Content-Type": "text/plain"})
            return

        route = gw.config.route_for(host, plain_path)
        flow.metadata["ztgate_route"] = route.name if route is not None else None  # for telemetry
        if route is None:
            flow.metadata["ztgate_verdict"] = "no_route"
            flow.response = http.Response.make(404, b"no route for this host and path\n",
                                               {"Content-Type": "text/plain"})
            return

        claims, refreshed, bearer = self._session_claims(seen)
        record: SessionRecord | None = None
        if claims is not None:
            try:
                record = gw.sessions.get_cached(claims.sid)
                if record is NOT_CACHED:
                    record = await gw.sessions.fetch(claims.sid)
            except StoreUnavailable:
                self._answer(flow, Outcome(Verdict.UNAVAILABLE), access.wants_html(seen), path, scheme)
                return
            if record is not None and (gw.sessions.idle_expired(record) or record.sub != claims.sub
                                       or access.superseded(claims, record)):
                record = None
        decided_path = canonical.decision_path(plain_path)  # what deny lists and policies compare
        outcome = access.decide(record, req.method, decided_path)
        if outcome.verdict == Verdict.FORWARD and record is not None:
            change = access.client_change(record, client_ip, seen.get("user-agent"))
            if change is not None:
                outcome = await self._client_changed(record, change, req.method, decided_path)
        if outcome.verdict == Verdict.FORWARD and record is not None and gw.monitor.evaluates_requests(route):
            outcome = await gw.monitor.check_request(record, route, req.method, decided_path, host, scheme,
                                                     seen.get("content-type"))
        if outcome.verdict != Verdict.FORWARD:
            self._answer(flow, outcome, access.wants_html(seen), path, scheme)  # a page for browsers, JSON else
            return
        assert record is not None and claims is not None

        if refreshed is None and gw.tokens.needs_refresh(claims, time.time()):
            refreshed = gw.issue_session_token(record)
        flow.metadata["ztgate"] = FlowState(sid=record.sid, route=route, refresh_cookie=refreshed,
                                            secure=scheme == "https", via_proxy=client.via_proxy)
        gw.connections.add(record.sid, flow.client_conn.id)

        # Never let a client speak for the gateway (spoofed identity headers go), never show the upstream
        # ztgate's own cookie or the bearer session token, and say who the client is.
        target = self._target(route)
        # An HTTP/1 request in origin form has its host only in the Host header, rewritten with the other fields;
        # HTTP/2 and 3 (:authority) go through mitmproxy's setters instead (absolute form is origin form by now).
        direct = http1 and not req.data.authority
        if direct:
            new_host = (host_header.encode("utf-8", "surrogateescape") if host_header else None) \
                if route.preserve_host else target.host_header
        else:
            new_host = None
        req.headers.fields = fast_headers.forwarded_fields(
            req.headers.fields, cookie_name=gw.config.session.cookie_name, forwarded=(client_ip, scheme, host),
            assertion=gw.assertion_for(record, route), host=new_host, drop_authorization=bearer,
            connection=seen.values.get("connection", ""))
        if direct and new_host and "host" not in seen.values:  # e.g. HTTP/1.0, or absolute form without Host
            req.headers.fields += ((b"Host", new_host),)
        if direct:
            data = req.data
            data.scheme, data.host, data.port = target.scheme, target.host, target.port
        else:
            up = route.upstream
            req.scheme, req.host, req.port = up.scheme, up.host, up.port
            if route.preserve_host and host_header:
                req.host_header = host_header

        if gw.sessions.touch_due(record, client_ip):
            await gw.sessions.touch(record, client_ip)
        if not gw.monitor.is_live(record.sid):
            # a session's first request: policies that need no input (groups, site, hours) apply from the start
            gw.spawn(gw.monitor.start_session(record.sid), name="ztgate-session-start")
        if not client.via_proxy:
            self._sample_rtt(record.sid, flow.client_conn.id)

    def _target(self, route: Route) -> _Target:
        cached = self._targets.get(route.name)
        if cached is not None and cached[0] is route:  # a config reload makes new Route objects
            return cached[1]
        up = route.upstream
        target = _Target(up.scheme.encode("utf-8", "surrogateescape"), up.host, up.port,
                         url.hostport(up.scheme, up.host, up.port).encode("utf-8", "surrogateescape"))
        self._targets[route.name] = (route, target)
        return target

    async def _client_changed(self, record: SessionRecord, change: dict[str, float], method: str,
                              path: str) -> Outcome:
        """The cookie came from another client than the session's: the policies decide (the `session` signal),
        once per session and client; a client the policies let through is not re-judged on every request."""
        gw = self.gw
        key = (record.sid, record.version, change["address_changed"], change["agent_changed"],
               gw.policies.current.digest)
        if key in self._clients_allowed:
            return Outcome(Verdict.FORWARD)
        context = gw.monitor.context(record, gw.monitor.entry(record.sid))
        context["signals"]["session"] = {
            "score": change["score"], "sufficient": True,
            "details": {k: v for k, v in change.items() if k != "score"},
            "evidence": {"keystrokes": 0, "seconds": 0.0, "samples": 1}}
        decision = gw.monitor.evaluate_policies(context)
        for shadow in decision.shadow_decisions or ():
            await gw.enforcer.apply(record, shadow, None)
        if int(decision.action) == 0:
            if len(self._clients_allowed) > 50_000:
                self._clients_allowed.clear()
            self._clients_allowed.add(key)
            return Outcome(Verdict.FORWARD)
        record = await gw.enforcer.apply(record, decision, None)
        return access.decide(record, method, path)

    def _session_claims(self, seen: fast_headers.Seen) -> tuple[Any, str | None, bool]:
        """Verified claims from the cookie (or a bearer session token), a refreshed token if the old one had
        expired while its server-side session lives on, and whether the token came as a bearer token (the
        upstream must not see it)."""
        gw = self.gw
        token = fast_headers.cookie(seen.cookies, gw.config.session.cookie_name)
        bearer = False
        if token is None:
            auth = seen.get("authorization")
            if auth[:7].lower() == "bearer ":
                token, bearer = auth[7:].strip(), True
        if not token:
            return None, None, bearer
        try:
            return gw.tokens.verify(token), None, bearer
        except TokenError as err:
            if err.reason == "expired" and not bearer:
                claims = gw.verify_expired_token(token)
                if claims is not None:
                    return claims, "pending", bearer
            gw.telemetry.count("ztgate_token_rejected_total", reason=err.reason)
            return None, None, bearer

    def _client(self, conn: Any, seen: fast_headers.Seen) -> forwarded.Client:
        peer = conn.peername[0] if conn.peername else ""
        trusted = self._trusted.get(conn.sockname[1]) if self._trusted and conn.sockname else None
        if not trusted:
            return forwarded.Client(peer, "https" if conn.tls_established else "http", False)
        return forwarded.client(peer, conn.tls_established, trusted, seen.values.get("x-forwarded-for"),
                                seen.values.get("x-forwarded-proto"))

    def _answer(self, flow: http.HTTPFlow, outcome: Outcome, browser: bool, path: str, scheme: str) -> None:
        a = access.answer(outcome, browser=browser, path=path, cookie_name=self.gw.config.session.cookie_name,
                          secure=self.gw.cookie_secure(scheme == "https"))
        flow.response = http.Response.make(a.status, a.body, a.headers)
        flow.metadata["ztgate_verdict"] = str(outcome.verdict)  # for telemetry
        self.gw.telemetry.count("ztgate_requests_refused_total", verdict=str(outcome.verdict))

    def _to_control_plane(self, flow: http.HTTPFlow, host: str, scheme: str, client_ip: str) -> None:
        req = flow.request
        for name in (ASSERTION_HEADER, INTERNAL_HEADER):  # never let a client speak for the gateway
            if name in req.headers:
                del req.headers[name]
        _set_forwarded(req.headers, host, scheme, client_ip)
        req.headers[INTERNAL_HEADER] = self.gw.internal_secret
        original_host = req.host_header
        req.scheme, req.host, req.port = "http", "127.0.0.1", self.gw.control_port
        req.host_header = original_host or host
        flow.metadata["ztgate_control"] = True

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        self.lifecycle.responseheaders(flow)
        state: FlowState | None = flow.metadata.get("ztgate")
        if state is None or flow.response is None:
            return
        gw = self.gw
        if state.refresh_cookie:
            token = state.refresh_cookie
            if token == "pending":
                record = gw.sessions.cached(state.sid)
                token = gw.issue_session_token(record) if record is not None else None
            if token:
                flow.response.headers.add("Set-Cookie", gw.session_cookie(token, state.secure))
        if state.route.kind == "http" and state.route.sensor:
            gw.injector.prepare(flow, state.sid)

    def response(self, flow: http.HTTPFlow) -> None:
        self.lifecycle.response(flow)
        if flow.metadata.get("ztgate") is not None and flow.response is not None and not flow.response.stream:
            self.gw.injector.finish(flow)
        self.gw.telemetry.request_done(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        # upstream unreachable, client gone: the request still counts, and its span ends
        self.lifecycle.error(flow)
        self.gw.telemetry.request_done(flow, error=flow.error.msg if flow.error else "error")

    # ------------------------------------------------------------------ WebSocket

    async def websocket_start(self, flow: http.HTTPFlow) -> None:
        state: FlowState | None = flow.metadata.get("ztgate")
        if state is not None:
            chosen = flow.response.headers.get("sec-websocket-protocol") if flow.response is not None else None
            state.capture = self.gw.capture.open(state.route, state.sid, chosen)

    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        assert flow.websocket is not None
        messages = flow.websocket.messages
        state: FlowState | None = flow.metadata.get("ztgate")
        if state is not None and state.capture is not None and messages:
            message = messages[-1]
            await self.gw.capture.websocket(flow, state, message)
        if state is not None and not state.via_proxy:
            # a remote-desktop session can live for hours on this one connection without an HTTP request
            self._sample_rtt(state.sid, flow.client_conn.id)
        # mitmproxy keeps every message: a long remote-desktop session would grow without bound.
        if len(messages) > 1:
            del messages[:-1]

    async def websocket_end(self, flow: http.HTTPFlow) -> None:
        self.lifecycle.websocket_end(flow)
        state: FlowState | None = flow.metadata.get("ztgate")
        if state is not None and state.capture is not None:
            self.gw.capture.close(state)

    # ------------------------------------------------------------------ raw TCP (VNC)

    async def tcp_start(self, flow: tcp.TCPFlow) -> None:
        self.lifecycle.tcp_start(flow)
        await self.raw_tcp.start(flow)

    async def tcp_message(self, flow: tcp.TCPFlow) -> None:
        await self.raw_tcp.message(flow)
        if len(flow.messages) > 1:  # mitmproxy keeps every message: trim, as for WebSockets
            del flow.messages[:-1]

    async def tcp_end(self, flow: tcp.TCPFlow) -> None:
        self.lifecycle.tcp_end(flow)
        state: FlowState | None = flow.metadata.get("ztgate")
        if state is not None and state.capture is not None:
            self.gw.capture.close(state)

    def tcp_error(self, flow: tcp.TCPFlow) -> None:
        self.lifecycle.tcp_error(flow)

    # ------------------------------------------------------------------ latency the gateway measures itself

    def _sample_rtt(self, sid: str, client_id: str) -> None:
        now = time.monotonic()
        if now - self._last_rtt.get(sid, 0.0) < _RTT_SAMPLE_EVERY:
            return
        self._last_rtt[sid] = now
        if len(self._last_rtt) > 100_000:
            self._last_rtt.clear()
        sample = self.gw.connections.tcp_rtt(client_id)
        if sample is not None:
            self.gw.monitor.net_sample(sid, *sample)


def _set_forwarded(headers: Any, host: str, scheme: str, client_ip: str) -> None:
    # ztgate is the edge: whatever X-Forwarded-* the client sent is replaced, not appended to.
    headers["X-Forwarded-For"] = client_ip
    headers["X-Forwarded-Proto"] = scheme
    headers["X-Forwarded-Host"] = host
