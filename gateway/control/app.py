"""The control plane's routes. It is reached only through the proxy (the addon adds a per-process secret), so
forwarded client addresses can be trusted here and nowhere else."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from ..store import StoreUnavailable
from . import admin, dashboard, login, pages, sensor, webauthn
from .common import client_ip, html, problem, via_proxy

if TYPE_CHECKING:
    from ..runtime import Gateway


class OnlyThroughProxy:
    """Refuses anything that did not come through this process's proxy addon."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            from starlette.requests import HTTPConnection

            if not via_proxy(HTTPConnection(scope)):
                if scope["type"] == "http":
                    await PlainTextResponse("forbidden", status_code=403)(scope, receive, send)
                else:
                    await send({"type": "websocket.close", "code": 4403})
                return
        await self.app(scope, receive, send)


MAX_BODY = 64 * 1024  # the largest body any control-plane route takes (WebAuthn JSON, a profile import, a beacon)


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuses a request body over MAX_BODY (413) before any handler reads it: sign-in forms, WebAuthn JSON and
    the rest are read before the caller is known, and Starlette's form parser alone would hold up to 1000 parts of
    1 MiB each. A declared Content-Length is judged at once; a chunked body is counted as it arrives."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and (not declared.strip().isdigit() or int(declared) > self.limit):
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge
            return message

        async def watched_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, "body_too_large", f"request bodies here are at most {self.limit} bytes")
        response.headers["Connection"] = "close"
        await response(scope, receive, send)


class SignInRateLimit:
    """Password attempts per client address (identity.lockout.address_attempts per address_window), counted in the
    shared store before the form is even read. The account lockout never sees attempts on ever-new user names, and
    each attempt costs an argon2 verification. The address is the one the proxy vouches for (OnlyThroughProxy is
    outside). Without the store the attempt goes on: sign-in itself is refused then."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/.ztgate/login":
            gw = scope["app"].state.gateway
            limits = gw.config.identity.lockout
            if limits.address_attempts:
                from starlette.requests import HTTPConnection

                address = client_ip(HTTPConnection(scope))
                try:
                    count = await gw.store.incr(f"login-address:{address}", limits.address_window)
                except StoreUnavailable:
                    count = 0
                if count > limits.address_attempts:
                    gw.telemetry.count("ztgate_login_rate_limited_total")
                    response = html(pages.message("Too many sign-in attempts",
                                                  "Too many sign-in attempts came from your network. Wait a minute "
                                                  "and try again."), 429)
                    response.headers["Retry-After"] = str(limits.address_window)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def readyz(request: Request) -> Response:
    gw = request.app.state.gateway
    store_ok = await gw.store.ping()
    ready = gw.ready and (store_ok or gw.config.store.fail_mode == "open")
    body = {"ready": ready, "store": "ok" if store_ok else "unreachable", "fail_mode": gw.config.store.fail_mode,
            "policies": gw.policies.current.digest[:12] if gw.policies.current else None,
            "instance": gw.config.instance}
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    """Prometheus scrape: from loopback or private networks (the cluster), or with the admin token."""
    gw = request.app.state.gateway
    if not _internal_address(client_ip(request)) and not await admin.is_admin_token(request):
        return PlainTextResponse("forbidden", status_code=403)
    return Response(gw.telemetry.exposition(), media_type="text/plain; version=0.0.4")


def _internal_address(address: str) -> bool:
    import ipaddress

    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private


async def jwks(request: Request) -> Response:
    gw = request.app.state.gateway
    return JSONResponse(gw.keyring.jwks(), headers={"Cache-Control": "public, max-age=300"})


def create_app(gw: "Gateway") -> Starlette:
    api = "/.ztgate/admin/api"
    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/.well-known/ztgate/jwks.json", jwks),
        Route("/.ztgate/login", login.login_form, methods=["GET"]),
        Route("/.ztgate/login", login.login_submit, methods=["POST"]),
        Route("/.ztgate/logout", login.logout, methods=["GET", "POST"]),
        Route("/.ztgate/mfa", login.mfa_form, methods=["GET"]),
        Route("/.ztgate/mfa", login.mfa_submit, methods=["POST"]),
        *webauthn.routes(),
        Route("/.ztgate/oidc/callback", login.oidc_callback),
        Route("/.ztgate/oidc/{name}/start", login.oidc_start),
        Route("/.ztgate/sensor.js", sensor.sensor_script),
        WebSocketRoute("/.ztgate/sensor", sensor.sensor_socket),
        Route("/.ztgate/sensor/beacon", sensor.sensor_beacon, methods=["POST"]),
        Route(f"{api}/sessions", admin.list_sessions),
        Route(f"{api}/sessions/{{sid}}", admin.show_session),
        Route(f"{api}/sessions/{{sid}}/terminate", admin.terminate_session, methods=["POST"]),
        Route(f"{api}/sessions/{{sid}}/step-up", admin.step_up_session, methods=["POST"]),
        Route(f"{api}/sessions/{{sid}}/explain", admin.explain_session),
        Route(f"{api}/sessions/{{sid}}/scorer-state", admin.scorer_state),
        Route(f"{api}/profiles", admin.list_profiles),
        Route(f"{api}/profiles/{{user}}", admin.profile, methods=["GET", "PUT", "DELETE"]),
        Route(f"{api}/locks", admin.list_locks),
        Route(f"{api}/locks/{{user}}", admin.remove_lock, methods=["DELETE"]),
        Route(f"{api}/events/status", admin.events_status),
        *dashboard.routes(),
        Route(f"{api}/policies", admin.policy_status),
    ]
    for oidc_cfg in gw.config.identity.oidc:
        path = getattr(oidc_cfg, "redirect_path", "/.ztgate/oidc/callback")
        if path != "/.ztgate/oidc/callback":
            routes.append(Route(path, login.oidc_callback))
    app = Starlette(routes=routes)
    app.state.gateway = gw
    app.add_middleware(dashboard.AdminCsrfGuard)  # inside OnlyThroughProxy
    app.add_middleware(dashboard.AdminHostOnly)
    app.add_middleware(BodyLimit)
    app.add_middleware(SignInRateLimit)
    app.add_middleware(OnlyThroughProxy)
    return app
