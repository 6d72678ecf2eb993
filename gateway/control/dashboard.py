"""The live security dashboard at /.ztgate/admin/: the page, its static assets, the few admin API endpoints it
needs beyond the admin API (compact session rows, a session's risk history, recent security events), and the
CSRF guard for cookie-authenticated admin calls.

Who may see it: a signed-in user in one of `admin.groups` (browsers: the session cookie), or the admin bearer
token (API clients). Anyone else signed in gets 403; nobody signed in is sent to the login page (HTML) or gets
401 (API).

CSRF: the session cookie is SameSite=Lax, and every state-changing admin API call must carry either an
Authorization header or `X-Ztgate-Admin: 1`. Neither can be sent cross-site without a CORS preflight, which the
control plane never grants; a cross-site Origin or Sec-Fetch-Site is refused as well.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from ..store import StoreUnavailable
from . import pages
from .admin import admin_caller, admin_endpoint
from .common import gateway, html, problem

ADMIN_PREFIX = "/.ztgate/admin"
API_PREFIX = "/.ztgate/admin/api/"
CSRF_HEADER = "x-ztgate-admin"
STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_FILES = {"dashboard.js": "application/javascript", "dashboard.css": "text/css"}
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_EVENTS = 200


# ---------------------------------------------------------------------------------------------- who is asking


_api = admin_endpoint


# ---------------------------------------------------------------------------------------------- the page


def _security_headers(nonce: str | None = None) -> dict[str, str]:
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    return {"Content-Security-Policy": f"default-src 'none'; script-src {script}; style-src 'self'; "
                                       "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                                       "form-action 'self'; frame-ancestors 'none'",
            "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store"}


async def dashboard_page(request: Request) -> Response:
    who, status = await admin_caller(request)
    if status == 401:
        return RedirectResponse(f"/.ztgate/login?next={quote(ADMIN_PREFIX + '/', safe='')}", status_code=303)
    if who is None:
        return html(pages.message("Not allowed", "The security dashboard is for administrators."), 403)
    gw = gateway(request)
    nonce = secrets.token_urlsafe(16)
    body = _PAGE.format(nonce=nonce, instance=_escape(gw.config.instance), admin=_escape(who))
    return Response(body, media_type="text/html; charset=utf-8", headers=_security_headers(nonce))


async def dashboard_redirect(request: Request) -> Response:
    return RedirectResponse(ADMIN_PREFIX + "/", status_code=308)


async def static_file(request: Request) -> Response:
    name = request.path_params["name"]
    media = STATIC_FILES.get(name)
    if media is None:
        return problem(404, "not_found")
    headers = _security_headers()
    headers["Cache-Control"] = "no-cache"  # revalidated (ETag): a new version is picked up at once
    return FileResponse(STATIC_DIR / name, media_type=media, headers=headers)


def _escape(text: str) -> str:
    from html import escape

    return escape(text, quote=True)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>ztgate security dashboard</title>
<link rel="stylesheet" href="/.ztgate/admin/static/dashboard.css">
<script nonce="{nonce}" src="/.ztgate/admin/static/dashboard.js" defer></script>
</head><body data-instance="{instance}" data-admin="{admin}">
<header><span class="brand">ztgate</span><h1>Security dashboard</h1>
<span class="meta">instance <b>{instance}</b> &middot; signed in as <b>{admin}</b></span>
<span id="live" class="live" title="last update">connecting&hellip;</span></header>
<main id="app"><noscript>The dashboard needs JavaScript.</noscript></main>
</body></html>
"""


# ---------------------------------------------------------------------------------------------- API


def _input_sources(gw: Any, sid: str, route_kind: str) -> list[str]:
    seen = {name: n for name, n in gw.telemetry.history.sources(sid).items() if name != "gateway"}
    if seen:  # "gateway" alone (TCP RTT samples) says nothing about who types: show what the route carries
        return sorted(seen, key=lambda n: -seen[n])
    return [{"http": "sensor", "guacamole": "guacamole", "novnc": "rfb", "vnc": "rfb",
             "terminal": "terminal"}.get(route_kind, route_kind)]


def _row(gw: Any, record: Any, assessment: dict, now: float) -> dict[str, Any]:
    route = gw.route_named(record.route)
    kind = route.kind if route else "http"
    signals = assessment.get("signals") or {}
    relay = signals.get("relay") or {}
    added = (relay.get("details") or {}).get("added_latency_ms") if relay.get("sufficient") else None
    decision = record.decision or {}
    return {
        "sid": record.sid, "user": record.sub, "name": record.name, "route": record.route, "route_kind": kind,
        "state": record.state, "state_reason": record.state_reason,
        "risk": assessment.get("risk"), "sufficient": assessment.get("sufficient", False),
        "signals": {n: {"score": s.get("score"), "sufficient": s.get("sufficient")} for n, s in signals.items()},
        "added_latency_ms": added, "sources": _input_sources(gw, record.sid, kind),
        "client_ip": record.client_ip, "country": record.country, "site": record.site,
        "age_seconds": round(now - record.created, 1), "idle_seconds": round(now - record.last_seen, 1),
        "connections": gw.connections.count(record.sid),
        "decision": {k: decision.get(k) for k in ("action", "rule_id", "policy_file", "reason", "decided_at")}
        if decision else None,
    }


async def _assessment(gw: Any, sid: str) -> dict:
    live = gw.monitor.assessment_of(sid)
    if live is not None:
        return live
    try:
        return await gw.store.get_assessment(sid) or {}
    except StoreUnavailable:
        return {}


@_api
async def session_rows(request: Request, who: str) -> Response:
    """Every session as one compact row, plus what the header shows (counts, event delivery)."""
    gw = gateway(request)
    now = time.time()
    records = await gw.sessions.list()
    rows = [_row(gw, r, await _assessment(gw, r.sid), now) for r in records]
    rows.sort(key=lambda r: (r["state"] == "terminated", -(r["risk"] or 0.0), -r["age_seconds"]))
    events = gw.events.status() if gw.events is not None else None
    return JSONResponse({"now": now, "sessions": rows,
                         "events": {"backlog": events.get("backlog_total", 0),
                                    "lag_seconds": events.get("max_lag_seconds", 0.0)} if events else None},
                        headers={"Cache-Control": "no-store"})


@_api
async def session_history(request: Request, who: str) -> Response:
    gw = gateway(request)
    sid = request.path_params["sid"]
    try:
        since = float(request.query_params.get("since", "0"))
    except ValueError:
        return problem(400, "bad_since", "since is a Unix time in seconds")
    return JSONResponse({"sid": sid, "points": gw.telemetry.history.points(sid, since),
                         "sources": gw.telemetry.history.sources(sid)}, headers={"Cache-Control": "no-store"})


def event_summary(record: Any) -> dict[str, Any]:
    """What the dashboard lists of one security event (the OCSF event itself stays in the sinks)."""
    e = record.event
    z = (e.get("unmapped") or {}).get("ztgate") or {}
    decision = z.get("decision") or {}
    user = z.get("user") or {}
    return {"id": record.id, "kind": record.kind, "sid": record.sid, "time_ms": e.get("time") or record.enqueued_ms,
            "message": e.get("message", ""), "severity": e.get("severity", ""), "user": user.get("sub"),
            "action": decision.get("action"), "rule_id": decision.get("rule_id"),
            "policy_file": decision.get("policy_file"), "shadow": decision.get("shadow", False),
            "why": z.get("why")}


@_api
async def recent_events(request: Request, who: str) -> Response:
    """GET /.ztgate/admin/api/events/recent?limit=50&sid=...: the newest security events first."""
    gw = gateway(request)
    try:
        limit = max(1, min(_MAX_EVENTS, int(request.query_params.get("limit", "50"))))
    except ValueError:
        return problem(400, "bad_limit", f"limit is a number from 1 to {_MAX_EVENTS}")
    sid = request.query_params.get("sid")
    if gw.events is None:
        return JSONResponse({"events": [], "enabled": False})
    try:
        # a session's events are a small share of the outbox: read further back when filtering by session
        records = await gw.events.outbox.tail(limit * 20 if sid else limit)
    except Exception as exc:  # the outbox is unreadable (Redis down, disk): say so, lose nothing
        return problem(503, "events_unavailable", str(exc))
    events = [event_summary(r) for r in reversed(records) if not sid or r.sid == sid][:limit]
    return JSONResponse({"events": events, "enabled": True}, headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------------------------------------- admin host


class AdminHostOnly:
    """With `admin.host` set, the dashboard and the cookie-authenticated admin API answer on that host only.

    Elsewhere the admin pages are an app's origin: a script injected into the app could call them with a visiting
    admin's cookie. Bearer-token calls (automation, the CLI) are served on every host, since no page's script holds
    the token."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (scope["path"] == ADMIN_PREFIX or scope["path"].startswith(ADMIN_PREFIX + "/")):
            admin_host = scope["app"].state.gateway.config.admin.host
            if admin_host is not None:
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
                # the proxy always sets X-Forwarded-Host to the canonical host (OnlyThroughProxy is outside us)
                here = headers.get("x-forwarded-host", "")
                if here != admin_host and headers.get("authorization", "")[:7].lower() != "bearer ":
                    await _elsewhere(scope, headers, admin_host)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _elsewhere(scope: Scope, headers: dict[str, str], admin_host: str) -> Response:
    """Where a browser that asked for the dashboard on an app's host should go; an API call only hears 404."""
    if scope["method"] in ("GET", "HEAD") and scope["path"] in (ADMIN_PREFIX, ADMIN_PREFIX + "/"):
        scheme = "https" if headers.get("x-forwarded-proto") == "https" else "http"
        _, colon, port = headers.get("host", "").rpartition(":")
        port = port if colon and port.isdigit() else ""
        return RedirectResponse(f"{scheme}://{admin_host}{':' + port if port else ''}{ADMIN_PREFIX}/", status_code=303,
                                headers={"Cache-Control": "no-store"})
    return problem(404, "not_found", "the admin console is not served on this host")


# ---------------------------------------------------------------------------------------------- CSRF


class AdminCsrfGuard:
    """Refuses state-changing admin API calls that a cross-site page could have made with the admin's cookie."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["path"].startswith(API_PREFIX)
                and scope["method"] not in _SAFE_METHODS):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            cookie_name = scope["app"].state.gateway.config.session.cookie_name
            # without the session cookie there is nothing a forged request could borrow: the handler answers 401
            reason = csrf_refusal(headers) if f"{cookie_name}=" in headers.get("cookie", "") else None
            if reason is not None:
                await problem(403, "csrf", reason)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def csrf_refusal(headers: dict[str, str]) -> str | None:
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return "cross-site request refused"
    origin = headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
        return "cross-origin request refused"
    if origin == "null":
        return "opaque origin refused"
    if "authorization" in headers or headers.get(CSRF_HEADER) == "1":
        return None
    return f"send the {CSRF_HEADER}: 1 header (or an Authorization header) with admin API calls"


def routes() -> list:
    from starlette.routing import Route

    api = API_PREFIX.rstrip("/")
    return [
        Route(ADMIN_PREFIX, dashboard_redirect),
        Route(ADMIN_PREFIX + "/", dashboard_page),
        Route(ADMIN_PREFIX + "/static/{name}", static_file),
        Route(f"{api}/dashboard/sessions", session_rows),
        Route(f"{api}/sessions/{{sid}}/history", session_history),
        Route(f"{api}/events/recent", recent_events),
    ]
