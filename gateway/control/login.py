"""Login (built-in directory with TOTP, or OIDC), logout, and the step-up MFA page."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from .. import access
from ..auth import lockout
from ..auth.csrf import CsrfError
from ..auth.totp import TotpOutcome
from ..sessions import SIGNED_OUT, Identity
from ..store import SessionState, StoreUnavailable
from ..text import printable
from . import pages
from .common import client_ip, current_session, gateway, html, is_tls, pre_binding, set_pre_cookie

log = logging.getLogger("ztgate.login")

_STATE_COOKIE = "ztgate_oidc"


def _login_page(request: Request, *, error: str = "", status: int = 200) -> Response:
    gw = gateway(request)
    binding, fresh = pre_binding(request)
    next_url = access.safe_next(request.query_params.get("next") or "/")
    providers = [(name, name) for name in gw.oidc]
    response = html(pages.login(next_url=next_url, csrf=gw.csrf.issue("login", binding), error=error,
                                providers=providers, directory=gw.directory is not None), status)
    if fresh:
        set_pre_cookie(response, binding, gw.cookie_secure(is_tls(request)))
    return response


async def login_form(request: Request) -> Response:
    return _login_page(request)


async def login_submit(request: Request) -> Response:
    gw = gateway(request)
    form = await request.form()
    next_url = access.safe_next(str(form.get("next") or "/"))
    binding = request.cookies.get("ztgate_pre", "")
    try:
        await gw.csrf.verify(str(form.get("csrf", "")), "login", binding)
    except CsrfError as err:
        log.warning("login form refused from %s: csrf %s", client_ip(request), err.reason)
        return _retry(request, "This form expired or was already used. Please try again.", next_url, 400)
    except StoreUnavailable:
        return _store_down()
    if gw.directory is None:
        return _retry(request, "Password sign-in is not enabled.", next_url, 400)
    username = str(form.get("username", "")).strip().lower()[:128]
    password = str(form.get("password", ""))[:1024]
    code = str(form.get("otp", "")).strip()
    try:
        gw.directory = gw.directory.reload_if_changed()  # `ztgate users add` takes effect without a restart
        known = gw.directory.get(username)
        # an unknown name may be a password typed in the wrong field: only its fingerprint is kept or logged
        account = gw.lockouts.account(username, known=known is not None)
        lock = await gw.lockouts.lock_of(account)
        if lock:
            return html(pages.locked(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(lock.until))), 403)
        user = await gw.directory.authenticate_async(username, password)
        ok = user is not None
        if ok and user.totp_secret:
            outcome = await gw.totp.check(user.username, user.totp_secret, code, time.time())
            ok = outcome == TotpOutcome.ACCEPTED
        if not ok:
            failure = await gw.lockouts.failed(account)
            gw.telemetry.count("ztgate_login_failures_total")
            who = account if known is not None else f"an unknown user name (fingerprint {account})"
            log.warning("failed sign-in for %s from %s (%d in window)", who, client_ip(request), failure.count)
            if failure.locked:
                log.warning("account %s locked for %d s: %s", who, gw.config.identity.lockout.duration, lockout.REASON)
                if known is not None:
                    await gw.enforcer.report_lock(_account_view(known, request), lockout.REASON)
            return _retry(request, "Wrong username, password or one-time code.", next_url, 401)
        record = await gw.sessions.create(
            Identity(sub=user.username, email=user.email, name=user.name, groups=list(user.groups),
                     site=user.site or "", country=user.country or "", idp="directory", acr="mfa" if user.totp_secret
                     else "pwd", amr=["pwd", "otp"] if user.totp_secret else ["pwd"], auth_time=time.time()),
            client_ip=client_ip(request), user_agent=request.headers.get("user-agent", ""),
            route=_route_name(request, next_url))
    except StoreUnavailable:
        return _store_down()
    log.info("session %s started for %s from %s", record.sid, record.sub, record.client_ip)
    gw.telemetry.count("ztgate_logins_total", idp="directory")
    return _with_session(request, record, next_url)


def _account_view(user, request: Request) -> dict:
    """A directory user as the security events describe a session's user (no session exists yet)."""
    return {"sub": user.username, "email": user.email, "name": user.name, "groups": list(user.groups),
            "client_ip": client_ip(request), "user_agent": request.headers.get("user-agent", "")}


def _store_down() -> Response:
    """No new session while the session store is unreachable, whatever store.fail_mode says: one-time codes,
    form tokens and failed-attempt counters are checked there, and a session the other processes cannot see
    would not survive the user's next connection. Sessions already running are not affected by this page."""
    response = html(pages.message(
        "Sign-in temporarily unavailable",
        "ztgate cannot reach its session store, so it cannot start new sessions safely right now. "
        "If you are already signed in, carry on; otherwise please try again in a minute."), 503)
    response.headers["Retry-After"] = "30"
    response.headers["Cache-Control"] = "no-store"
    return response


def _retry(request: Request, error: str, next_url: str, status: int) -> Response:
    request.scope["query_string"] = f"next={quote(next_url, safe='')}".encode()
    return _login_page(request, error=error, status=status)


def _route_name(request: Request, next_url: str) -> str:
    """The route the sign-in is for, chosen as the proxy chooses routes (canonical host and path)."""
    from ..proxy.canonical import BadRequest, canonical_host, canonical_path

    gw = gateway(request)
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    try:
        route = gw.config.route_for(canonical_host(host), canonical_path(next_url.split("?")[0]))
    except BadRequest:
        return ""
    return route.name if route else ""


def _with_session(request: Request, record, next_url: str) -> Response:
    gw = gateway(request)
    response = RedirectResponse(next_url, status_code=303)
    response.headers.append("Set-Cookie", gw.session_cookie(gw.issue_session_token(record), is_tls(request)))
    response.headers["Cache-Control"] = "no-store"
    return response


async def logout(request: Request) -> Response:
    gw = gateway(request)
    if request.method == "GET":
        binding, fresh = pre_binding(request)
        body = pages.page("Sign out", "<form method=post action='/.ztgate/logout'>"
                          f"<input type=hidden name=csrf value='{gw.csrf.issue('logout', binding)}'>"
                          "<button type=submit>Sign out</button></form>")
        response = html(body)
        if fresh:
            set_pre_cookie(response, binding, gw.cookie_secure(is_tls(request)))
        return response
    form = await request.form()
    try:
        await gw.csrf.verify(str(form.get("csrf", "")), "logout", request.cookies.get("ztgate_pre", ""))
    except CsrfError:
        return html(pages.message("Sign out", "This form expired. Please try again."), 400)
    record, _ = await current_session(request)
    if record is not None and not record.terminated:
        # the termination's change listener (Enforcer.on_session_change) ends the session's scoring in every
        # process, learning from it where it was clean (enforce.ended_cleanly: this reason, no decision ever)
        try:
            ended, ended_here = await gw.sessions.terminate_once(record.sid, SIGNED_OUT)
        except StoreUnavailable:
            # refused here at once (tombstone), written back and broadcast when the store returns
            log.error("store unavailable: sign-out of session %s in force here; written back when the store returns",
                      record.sid)
            ended, ended_here = gw.sessions.unsynced(record.sid), True
        # one Logoff per session end: none if it had ended meanwhile (another request, process or policy)
        if ended_here and gw.events is not None:
            await gw.events.emit_logoff((ended or record).to_dict(), SIGNED_OUT)
    response = RedirectResponse("/.ztgate/login", status_code=303)
    response.headers.append("Set-Cookie", access.clear_cookie(gw.config.session.cookie_name,
                                                                  gw.cookie_secure(is_tls(request))))
    return response


# ---------------------------------------------------------------------------------------------- step-up (MFA)


async def mfa_form(request: Request, *, error: str = "", status: int = 200) -> Response:
    gw = gateway(request)
    record, _ = await current_session(request)
    next_url = access.safe_next(request.query_params.get("next") or "/")
    if record is None:
        return RedirectResponse(f"/.ztgate/login?next={quote(next_url, safe='')}", status_code=303)
    if record.terminated:
        return html(pages.terminated(record.state_reason), 403)
    if record.step_up.get("method") == "oidc" and record.idp in gw.oidc:
        return RedirectResponse(f"/.ztgate/oidc/{record.idp}/start?step_up=1&next={quote(next_url, safe='')}",
                                status_code=303)
    from . import webauthn

    choice = await webauthn.step_up_choice(gw, record)
    if choice == "webauthn":  # the step-up asks for a security key and the user has one: TOTP will not do
        return RedirectResponse(f"/.ztgate/mfa/webauthn?next={quote(next_url, safe='')}", status_code=303)
    binding, fresh = pre_binding(request)
    reason = "Your session needs a fresh confirmation." if record.state == SessionState.STEP_UP_REQUIRED else ""
    if choice == "fallback":
        reason = webauthn.FALLBACK_NOTICE
    response = html(pages.mfa(next_url=next_url, csrf=gw.csrf.issue("mfa", binding), reason=reason, error=error,
                              webauthn=choice == "any" and await webauthn.has_credentials(gw, record.sub)),
                    status)
    if fresh:
        set_pre_cookie(response, binding, gw.cookie_secure(is_tls(request)))
    return response


async def mfa_submit(request: Request) -> Response:
    gw = gateway(request)
    form = await request.form()
    next_url = access.safe_next(str(form.get("next") or "/"))
    request.scope["query_string"] = f"next={quote(next_url, safe='')}".encode()
    try:
        await gw.csrf.verify(str(form.get("csrf", "")), "mfa", request.cookies.get("ztgate_pre", ""))
    except CsrfError:
        return await mfa_form(request, error="This form expired or was already used.", status=400)
    record, _ = await current_session(request)
    if record is None:
        return RedirectResponse(f"/.ztgate/login?next={quote(next_url, safe='')}", status_code=303)
    if record.terminated:
        return html(pages.terminated(record.state_reason), 403)
    from . import webauthn

    if await webauthn.step_up_choice(gw, record) == "webauthn":
        return RedirectResponse(f"/.ztgate/mfa/webauthn?next={quote(next_url, safe='')}", status_code=303)
    if gw.directory is not None:
        gw.directory = gw.directory.reload_if_changed()  # a rotated secret or a disabled account counts at once
    user = gw.directory.get(record.sub) if gw.directory is not None and record.idp == "directory" else None
    if user is not None and user.disabled:
        await gw.enforcer.terminate(record.sid, "account disabled", by="directory")
        return html(pages.terminated("account disabled"), 403)
    if user is None or not user.totp_secret:
        return await mfa_form(request, error="No one-time-code authenticator is enrolled for you.", status=400)
    outcome = await gw.totp.check(user.username, user.totp_secret, str(form.get("otp", "")).strip(), time.time())
    if outcome != TotpOutcome.ACCEPTED:
        await count_step_up_failure(gw, record.sid)
        gw.telemetry.count("ztgate_step_up_total", outcome=str(outcome))
        await gw.monitor.live(record.sid)
        await gw.monitor.evaluate(record.sid)  # repeated failures may escalate to termination
        updated = await gw.sessions.get(record.sid)
        if updated is not None and updated.terminated:
            return html(pages.terminated(updated.state_reason), 403)
        message = "Too many attempts; wait a few minutes." if outcome == TotpOutcome.LOCKED else \
            "That code was not accepted."
        return await mfa_form(request, error=message, status=401)
    record = await complete_step_up(request, record, method="otp")
    return _with_session(request, record, next_url)


async def count_step_up_failure(gw, sid: str):
    """One more failed step-up attempt on the session (policies may escalate on `step_up.failures`). Counted onto
    the record as it is when written, not as this request read it: failures submitted at once, to one process or
    several, each count (Sessions.modify re-applies the increment when another write got there first)."""
    def one_more(current) -> dict:
        return {"step_up": {**current.step_up, "failures": int(current.step_up.get("failures", 0)) + 1}}

    return await gw.sessions.modify(sid, one_more)


async def complete_step_up(request: Request, record, *, method: str, acr: str = "mfa"):
    gw = gateway(request)
    now = time.time()

    def passed(current) -> dict:
        # onto the record as it is when written (another tab's step-up counts too; a termination meanwhile stands:
        # nothing is written to a terminated session)
        state = SessionState.ACTIVE if current.state == SessionState.STEP_UP_REQUIRED else SessionState(current.state)
        return {"state": str(state), "state_reason": "", "acr": acr, "amr": sorted(set(current.amr) | {method}),
                "auth_time": now,
                "step_up": {"count": int(current.step_up.get("count", 0)) + 1, "failures": 0, "last_success": now}}

    updated = await gw.sessions.modify(record.sid, passed)
    # the evidence that caused the step-up is answered: every process's scorer for this session starts afresh
    await gw.store.publish({"type": "reset_evidence", "sid": record.sid})
    gw.telemetry.count("ztgate_step_up_total", outcome="accepted")
    log.info("session %s passed step-up (%s)", record.sid, method)
    return updated or record


# ---------------------------------------------------------------------------------------------- OIDC


def _sign_state(gw, data: dict) -> str:
    raw = base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    mac = hmac.new(gw.state_secret, raw.encode(), hashlib.sha256).hexdigest()
    return f"{raw}.{mac}"


def _open_state(gw, value: str) -> dict | None:
    raw, _, mac = value.rpartition(".")
    if not raw or not hmac.compare_digest(mac, hmac.new(gw.state_secret, raw.encode(), hashlib.sha256).hexdigest()):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except ValueError:
        return None
    return data if isinstance(data, dict) and data.get("exp", 0) > time.time() else None


def _redirect_uri(request: Request, provider) -> str:
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    scheme = "https" if is_tls(request) else "http"
    port = request.headers.get("host", "").rpartition(":")[2] if ":" in request.headers.get("host", "") else ""
    authority = host if ":" in host or not port else f"{host}:{port}"
    return f"{scheme}://{authority}{provider.config.redirect_path}"


async def oidc_start(request: Request) -> Response:
    gw = gateway(request)
    name = request.path_params["name"]
    provider = gw.oidc.get(name)
    if provider is None:
        return html(pages.message("Sign in", "Unknown identity provider."), 404)
    next_url = access.safe_next(request.query_params.get("next") or "/")
    step_up = request.query_params.get("step_up") == "1"
    kwargs = {}
    if step_up:
        record, _ = await current_session(request)
        params = record.step_up if record else {}
        kwargs = {"prompt": "login", "max_age": int(params.get("max_age") or 0),
                  "acr_values": params.get("acr_values") or None}
    try:
        url, state = await provider.authorization_request(_redirect_uri(request, provider), **kwargs)
    except Exception as exc:
        log.error("OIDC provider %s unavailable: %s", name, exc)
        return html(pages.message("Sign in", "The identity provider is unavailable right now."), 502)
    cookie = _sign_state(gw, {"p": name, "s": state.to_json(), "n": next_url, "u": step_up,
                              "exp": time.time() + 600})
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(_STATE_COOKIE, cookie, max_age=600, path="/.ztgate/", httponly=True, samesite="lax",
                        secure=gw.cookie_secure(is_tls(request)))
    return response


async def oidc_callback(request: Request) -> Response:
    gw = gateway(request)
    from ..auth.oidc import LoginState, OidcError

    data = _open_state(gw, request.cookies.get(_STATE_COOKIE, ""))
    if data is None or data.get("p") not in gw.oidc:
        return html(pages.message("Sign in", "This sign-in attempt expired. Please start again."), 400)
    provider = gw.oidc[data["p"]]
    try:
        identity = await provider.complete(dict(request.query_params), LoginState.from_json(data["s"]),
                                           _redirect_uri(request, provider))
    except OidcError as err:
        log.warning("OIDC sign-in refused: %s", err)
        return html(pages.message("Sign in", getattr(err, "user_message", "Sign-in failed.")), 401)
    next_url = access.safe_next(data.get("n"))
    if data.get("u"):
        record, _ = await current_session(request)
        # the same subject at the same provider: subjects of different providers (and of the directory) may share
        # a name without being one person
        if (record is not None and record.sub == identity.sub and record.idp == provider.config.name
                and not record.terminated):
            record = await complete_step_up(request, record, method="oidc", acr=identity.acr or "mfa")
            response = _with_session(request, record, next_url)
            response.delete_cookie(_STATE_COOKIE, path="/.ztgate/", secure=gw.cookie_secure(is_tls(request)))
            return response
    try:
        lock = await gw.lockouts.lock_of(identity.sub)
        if lock:
            return html(pages.locked(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(lock.until))), 403)
        # an email the IdP says it has not verified names nobody: policies and events must not read it as the user's
        email = identity.email or ""
        if email and (identity.email_verified is False or not email.isprintable()):
            why = "not verified by the provider" if identity.email_verified is False else "with control characters"
            log.warning("OIDC sign-in of %s at %s: email %s dropped", printable(identity.sub), provider.config.name,
                        why)
            email = ""
        record = await gw.sessions.create(
            Identity(sub=identity.sub, email=email, name=printable(identity.name or ""),
                     groups=list(identity.groups), idp=provider.config.name, acr=identity.acr or "",
                     amr=list(identity.amr or []), auth_time=identity.auth_time or time.time()),
            client_ip=client_ip(request), user_agent=request.headers.get("user-agent", ""),
            route=_route_name(request, next_url))
    except StoreUnavailable:
        return _store_down()
    gw.telemetry.count("ztgate_logins_total", idp="oidc")
    response = _with_session(request, record, next_url)
    response.delete_cookie(_STATE_COOKIE, path="/.ztgate/", secure=gw.cookie_secure(is_tls(request)))
    return response
