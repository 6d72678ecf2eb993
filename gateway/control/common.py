"""What every control-plane handler needs: who is asking (through the proxy), and their session."""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection
from starlette.responses import HTMLResponse, JSONResponse, Response

from ..access import PAGE_HEADERS, client_change, superseded
from ..auth.tokens import TokenError
from ..proxy.headers import cookie as first_cookie
from ..store import SessionRecord, SessionState, StoreUnavailable

if TYPE_CHECKING:
    from ..runtime import Gateway

PRE_COOKIE = "ztgate_pre"  # binds login/MFA form tokens to one browser before there is a session


def gateway(conn: HTTPConnection) -> "Gateway":
    return conn.app.state.gateway


def via_proxy(conn: HTTPConnection) -> bool:
    """Only the addon knows the per-process secret it adds: forwarded headers are trusted only then."""
    sent = conn.headers.get("x-ztgate-internal", "")
    return hmac.compare_digest(sent.encode(), gateway(conn).internal_secret.encode())


def client_ip(conn: HTTPConnection) -> str:
    return conn.headers.get("x-forwarded-for", "") if via_proxy(conn) else (conn.client.host if conn.client else "")


def is_tls(conn: HTTPConnection) -> bool:
    return via_proxy(conn) and conn.headers.get("x-forwarded-proto") == "https"


async def current_session(conn: HTTPConnection) -> tuple[SessionRecord | None, Any]:
    """The session named by the cookie (an expired but genuine token still finds its live session)."""
    gw = gateway(conn)
    token = session_token(conn)
    if not token:
        return None, None
    try:
        claims = gw.tokens.verify(token)
    except TokenError as err:
        claims = gw.verify_expired_token(token) if err.reason == "expired" else None
    if claims is None:
        return None, None
    try:
        record = await gw.sessions.get(claims.sid)
    except StoreUnavailable:
        return None, claims
    if record is None or record.sub != claims.sub or superseded(claims, record):
        return None, claims
    return record, claims


def session_token(conn: HTTPConnection) -> str | None:
    """The session cookie's value as the proxy reads it: the first of the name. Starlette's `cookies` keeps the
    last, and a second cookie of the name (set for a parent domain by a sibling host) must not make the control
    plane act for another session than the one the proxy let through."""
    return first_cookie(conn.headers.getlist("cookie"), gateway(conn).config.session.cookie_name)


def why_not_trusted_here(conn: HTTPConnection, record: SessionRecord) -> str | None:
    """Why a session may not do what outlives the request (admin calls, registering a security key), or None: it
    must be in good standing, used by the client that signed in. A session asked to step up (or restricted) is one
    the gateway no longer trusts, and a cookie presented from another address or browser family may be a copy; the
    proxy sends such sessions to a step-up, and these actions give no second chance."""
    if record.state != SessionState.ACTIVE:
        return "session_not_active"
    if client_change(record, client_ip(conn), conn.headers.get("user-agent", "")) is not None:
        return "client_changed"
    return None


def pre_binding(conn: HTTPConnection) -> tuple[str, bool]:
    """The pre-session cookie value, and whether it must be set on the response."""
    value = conn.cookies.get(PRE_COOKIE, "")
    if len(value) >= 16:
        return value, False
    return secrets.token_urlsafe(18), True


def set_pre_cookie(response: Response, value: str, tls: bool) -> None:
    response.set_cookie(PRE_COOKIE, value, max_age=3600, path="/.ztgate/", httponly=True, samesite="lax",
                        secure=tls)


def html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=PAGE_HEADERS)  # the same headers as the proxy's own pages


def problem(status: int, error: str, description: str = "", **extra: Any) -> JSONResponse:
    body = {"error": error, **({"error_description": description} if description else {}), **extra}
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
