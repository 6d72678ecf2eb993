"""What a request may do, given its session: forward it, or answer it with login, step-up, 403 or termination.

Pure functions: the addon gathers the facts, asks here, and applies the answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlsplit

from policies.matching import path_matches

from .control import pages
from .shortcache import short_input_cache
from .store import SessionRecord, SessionState


class Verdict(StrEnum):
    FORWARD = "forward"
    LOGIN = "login"  # no (valid) session
    STEP_UP = "step_up"  # a step-up is pending
    FORBIDDEN = "forbidden"  # restricted
    TERMINATED = "terminated"
    UNAVAILABLE = "unavailable"  # the store is down and fail_mode is closed


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    reason: str = ""
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORWARD = Outcome(Verdict.FORWARD)  # the common answer, shared: an Outcome is frozen and FORWARD has no params


def decide(record: SessionRecord | None, method: str, path: str) -> Outcome:
    if record is None:
        return Outcome(Verdict.LOGIN, "no session")
    if record.state == SessionState.TERMINATED:
        return Outcome(Verdict.TERMINATED, record.state_reason)
    if record.state == SessionState.STEP_UP_REQUIRED:
        return Outcome(Verdict.STEP_UP, record.state_reason, dict(record.step_up))
    if record.state == SessionState.RESTRICTED:
        denied = restriction_denies(record.restrictions, method, path)
        if denied:
            return Outcome(Verdict.FORBIDDEN, denied)
    return FORWARD


def restriction_denies(restrictions: dict[str, Any], method: str, path: str) -> str | None:
    """Why a restricted session may not send this request, or None. `path` is the request's decision path
    (gateway/proxy/canonical.py decision_path); it is folded again here, which is harmless, so that a raw path
    is at least compared case-insensitively and without ;params or a trailing slash."""
    method = method.upper()
    if restrictions.get("read_only") and method not in SAFE_METHODS:
        return f"{method} is not allowed while the session is read-only"
    denied_methods = {m.upper() for m in restrictions.get("deny_methods", ())}
    # a server answers HEAD as it answers GET, minus the body: a denied GET denies HEAD
    if method in denied_methods or method == "HEAD" and "GET" in denied_methods:
        return f"{method} is not allowed for this session"
    plain = path.split("?", 1)[0]
    for pattern in restrictions.get("deny_paths", ()):
        if path_matches(pattern, plain):
            return f"{plain} is not allowed for this session"
    return None


def wants_html(headers: Any) -> bool:
    """Browsers navigate with Accept: text/html; API clients ask for JSON or carry a bearer token."""
    if headers.get("authorization", "").lower().startswith("bearer "):
        return False
    accept = headers.get("accept", "")
    if "application/json" in accept and "text/html" not in accept:
        return False
    if headers.get("x-requested-with", "").lower() == "xmlhttprequest":
        return False
    return "text/html" in accept or accept in ("", "*/*") and headers.get("sec-fetch-mode", "navigate") == "navigate"


def safe_next(url: str | None) -> str:
    """Only same-site relative paths: never an open redirect."""
    if not url or not url.startswith("/") or url.startswith("//") or url.startswith("/\\"):
        return "/"
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or any(ch in url for ch in "\r\n\t") or "\\" in url:
        return "/"
    return url


def answer(outcome: Outcome, *, browser: bool, path: str, cookie_name: str = "", secure: bool = False) -> Answer:
    next_q = quote(safe_next(path), safe="")
    if outcome.verdict == Verdict.LOGIN:
        if browser:
            return _redirect(f"/.ztgate/login?next={next_q}")
        return Answer(401, {"WWW-Authenticate": 'Bearer realm="ztgate"', "Content-Type": "application/json",
                            "Cache-Control": "no-store"},
                      _json({"error": "unauthenticated", "login": "/.ztgate/login"}))
    if outcome.verdict == Verdict.STEP_UP:
        if browser:
            return _redirect(f"/.ztgate/mfa?next={next_q}")
        return Answer(401, {"WWW-Authenticate": rfc9470_challenge(outcome.params, outcome.reason),
                            "Content-Type": "application/json", "Cache-Control": "no-store"},
                      _json({"error": "insufficient_user_authentication", "error_description": outcome.reason,
                             "step_up": "/.ztgate/mfa"}))
    if outcome.verdict == Verdict.FORBIDDEN:
        if browser:
            return _html(403, pages.forbidden(outcome.reason))
        return Answer(403, {"Content-Type": "application/json", "Cache-Control": "no-store"},
                      _json({"error": "restricted", "error_description": outcome.reason}))
    if outcome.verdict == Verdict.TERMINATED:
        headers = {}
        if cookie_name:
            headers["Set-Cookie"] = clear_cookie(cookie_name, secure)
        if browser:
            a = _html(403, pages.terminated(outcome.reason))
            return Answer(a.status, {**a.headers, **headers}, a.body)
        return Answer(401, {"WWW-Authenticate": 'Bearer realm="ztgate", error="invalid_token", '
                                                'error_description="session terminated"',
                            "Content-Type": "application/json", "Cache-Control": "no-store", **headers},
                      _json({"error": "session_terminated"}))
    if outcome.verdict == Verdict.UNAVAILABLE:
        body = pages.message("Temporarily unavailable", "ztgate cannot verify sessions right now. Try again shortly.")
        return Answer(503, {**PAGE_HEADERS, "Retry-After": "5"}, body.encode())
    raise ValueError(outcome.verdict)


def rfc9470_challenge(params: dict[str, Any], reason: str) -> str:
    parts = ['Bearer error="insufficient_user_authentication"']
    parts.append(f'error_description="{_quoted(reason or "step-up authentication required")}"')
    acr = params.get("acr_values") or _acr_for(params.get("method", "totp"))
    if acr:
        parts.append(f'acr_values="{_quoted(acr if isinstance(acr, str) else " ".join(acr))}"')
    if params.get("max_age") is not None:
        parts.append(f'max_age="{int(params["max_age"])}"')
    return ", ".join(parts)


def _acr_for(method: str) -> str:
    return {"totp": "mfa", "webauthn": "phr", "oidc": "mfa"}.get(method, "mfa")


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "'").replace("\r", " ").replace("\n", " ")


def clear_cookie(name: str, secure: bool) -> str:
    return f"{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")


def session_cookie(name: str, value: str, *, secure: bool, max_age: int) -> str:
    return f"{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")


def _redirect(location: str) -> Answer:
    return Answer(302, {"Location": location, "Cache-Control": "no-store", "Content-Length": "0"}, b"")


# The headers of every page ztgate shows, from the proxy (here) or the control plane (gateway/control/common.py
# html()). The pages have no scripts (control/pages).
PAGE_HEADERS = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
                "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                                           "frame-ancestors 'none'; base-uri 'none'",
                "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"}


def _html(status: int, text: str) -> Answer:
    return Answer(status, dict(PAGE_HEADERS), text.encode())


def _json(data: dict) -> bytes:
    return json.dumps(data).encode()


# ---------------------------------------------------------------------------------------------- cookie replay
# A session cookie is bound to the client that holds it. A cookie does not move between browsers by itself, so one
# presented from another address AND another browser family has been copied (stolen, or replayed by a tool).

_BROWSER_TOKENS = (("edg/", "edge"), ("opr/", "opera"), ("firefox/", "firefox"), ("headlesschrome/", "chrome"),
                   ("chromium/", "chrome"), ("chrome/", "chrome"), ("crios/", "chrome"), ("safari/", "safari"))
_PLATFORM_TOKENS = (("android", "android"), ("iphone", "ios"), ("ipad", "ios"), ("windows", "windows"),
                    ("mac os x", "macos"), ("cros", "chromeos"), ("linux", "linux"))


@short_input_cache(maxsize=4096, longest=1024)  # browsers' User-Agents are a few hundred characters
def user_agent_family(user_agent: str) -> str:
    """Browser and platform of a User-Agent ("chrome/linux"); version numbers ignored (browsers update)."""
    ua = user_agent.lower()
    browser = next((name for token, name in _BROWSER_TOKENS if token in ua), "")
    if not browser:  # a non-browser client: its product name ("curl", "python-httpx")
        browser = ua.split("/", 1)[0].strip()[:40] or "none"
    platform = next((name for token, name in _PLATFORM_TOKENS if token in ua), "other")
    return f"{browser}/{platform}"


def superseded(claims: Any, record: SessionRecord) -> bool:
    """A session token issued before the session's last passed step-up (`gen` counts them).

    A step-up is answered by one browser, which gets a new token there and then; every older copy of the cookie
    (a thief's, replayed from elsewhere, whose replay caused the step-up) must not ride on that answer. A token
    without the claim predates it and is let be (it dies with its session)."""
    return claims.gen is not None and claims.gen < int(record.step_up.get("count", 0))


def client_change(record: SessionRecord, client_ip: str, user_agent: str) -> dict[str, float] | None:
    """How the client presenting this session's cookie differs from the session's own client, or None.

    The details of the gateway's `session` signal: `address_changed` (another source address than the session's
    last one) and `agent_changed` (another browser family than the one that signed in); score 1.0 when both changed
    (a copied cookie), 0.5 when one did (roaming networks, or a browser update), else no signal at all.
    """
    address_changed = bool(record.client_ip) and bool(client_ip) and client_ip != record.client_ip
    agent_changed = bool(record.user_agent) and user_agent_family(user_agent) != user_agent_family(record.user_agent)
    if not (address_changed or agent_changed):
        return None
    return {"address_changed": float(address_changed), "agent_changed": float(agent_changed),
            "score": 1.0 if address_changed and agent_changed else 0.5}
