"""WebAuthn security keys for step-up: registering a key for a signed-in user, and authenticating with it when a
step-up asks for `method: webauthn` (a hand on the local machine: a remote operator cannot pass it).

Routes (all under /.ztgate/mfa/webauthn; the ceremony's script is /.ztgate/static/webauthn.js):

    GET  /register            page; needs a fresh MFA (one within FRESH_SECONDS), else it sends the browser to the
                              TOTP page first, so a stolen session cookie alone cannot add a key
    POST /register/options    {csrf} -> {publicKey: creation options, state, csrf}
    POST /register/verify     {state, credential} -> {ok, redirect}
    GET  /                    page for a pending step-up (or a voluntary confirmation)
    POST /options             {csrf} -> {publicKey: request options, state, csrf}
    POST /verify              {state, credential, next} -> {ok, redirect} and a refreshed session cookie

Challenges are 32 random bytes in a state that is HMAC-signed, expires after CHALLENGE_SECONDS, names the session
and the ceremony, and is consumed once through the store's first_use: a challenge (so an assertion made for it)
verifies once, in one session, on any gateway process. rp_id is the host the browser sees (X-Forwarded-Host); the
origin must be exactly scheme://Host as the browser sent it. The store keeps public material only: credential id,
COSE public key, signature counter, transports, the attestation format, AAGUID and certificate chain.

Attestation (`webauthn.attestation_allowed_cas` and friends, gateway.auth.attestation): with a policy, registration
asks for direct attestation and refuses a key whose chain does not reach an allowed CA (or reaches a denied one), and
a step-up counts only the keys that meet the policy in force.

Fallback: a step-up that asks for webauthn from a user without a registered key falls back to TOTP. The MFA page
says so, and the session record notes it: `step_up.fallback = "totp"`, `step_up.fallback_reason`, and
`decision.step_up_fallback` (so the admin API, the CLI and security events built from the record show it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import replace
from functools import lru_cache
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from .. import access
from ..auth.attestation import Attestation, AttestationRefused, judge, still_allowed
from ..auth.csrf import CsrfError
from ..store import SessionState, StoreUnavailable
from . import pages
from .common import current_session, gateway, html, is_tls, pre_binding, problem, set_pre_cookie, why_not_trusted_here

if TYPE_CHECKING:
    from ..runtime import Gateway
    from ..store import SessionRecord

log = logging.getLogger("ztgate.webauthn")

FRESH_SECONDS = 300  # an MFA younger than this may add a key
CHALLENGE_SECONDS = 120
MAX_CREDENTIALS = 10  # per user
MAX_BODY = 64 * 1024
STATIC_DIR = Path(__file__).with_name("static")
FALLBACK_REASON = "no security key registered"
FALLBACK_REASON_ATTESTATION = "no registered security key meets the attestation policy"
FALLBACK_NOTICE = ("Your organisation asks for a security key here, but none is registered for you: "
                   "confirm with your one-time code instead, then register a key.")
_CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


# ---------------------------------------------------------------------------------------------- helpers


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def relying_party(request: Request) -> tuple[str, str]:
    """(rp_id, origin) as the browser sees the gateway."""
    host_header = request.headers.get("host", "")
    rp_id = (request.headers.get("x-forwarded-host") or host_header).strip().lower()
    if rp_id.startswith("["):
        rp_id = rp_id[1:].split("]", 1)[0]
    elif rp_id.count(":") == 1:
        rp_id = rp_id.rsplit(":", 1)[0]
    scheme = "https" if is_tls(request) else "http"
    return rp_id, f"{scheme}://{host_header.lower()}"


def _secret(gw: "Gateway") -> bytes:
    return gw.keyring.shared_secret("webauthn-state")


def _sign_state(gw: "Gateway", data: dict) -> str:
    raw = _b64u(json.dumps(data, separators=(",", ":")).encode())
    mac = hmac.new(_secret(gw), raw.encode(), hashlib.sha256).hexdigest()
    return f"{raw}.{mac}"


async def _open_state(gw: "Gateway", value: str, *, sid: str, purpose: str) -> dict | None:
    """The state's data if it is genuine, unexpired, for this session and ceremony, and not used before."""
    raw, _, mac = str(value).rpartition(".")
    expected = hmac.new(_secret(gw), raw.encode(), hashlib.sha256).hexdigest()
    if not raw or not hmac.compare_digest(mac, expected):
        return None
    try:
        data = json.loads(_unb64u(raw))
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("sid") != sid or data.get("p") != purpose:
        return None
    if float(data.get("exp", 0)) <= time.time():
        return None
    if not await gw.store.first_use(f"webauthn-challenge:{data.get('c')}", CHALLENGE_SECONDS + 5):
        return None
    return data


def _user_handle(gw: "Gateway", user: str) -> bytes:
    # stable per user, reveals nothing about the name (the authenticator stores it)
    return hmac.new(_secret(gw), b"user-handle/" + user.encode(), hashlib.sha256).digest()


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(pages.page(title, body), status_code=status,
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": _CSP,
                                 "X-Frame-Options": "DENY"})


def _ceremony_page(*, mode: str, csrf: str, next_url: str, title: str, intro: str, button: str,
                   alternative: str = "") -> str:
    return pages.page(title, (
        f"<p>{escape(intro)}</p>"
        f"<div id=ztgate-webauthn data-mode='{escape(mode)}' data-csrf='{escape(csrf)}' "
        f"data-next='{escape(next_url)}'>"
        f"<button type=button id=ztgate-webauthn-start>{escape(button)}</button>"
        "<p id=ztgate-webauthn-status class=muted role=status aria-live=polite></p></div>"
        f"{alternative}"
        "<script src='/.ztgate/static/webauthn.js'></script>"
    ))


async def _json_body(request: Request) -> dict | None:
    if not request.headers.get("content-type", "").startswith("application/json"):
        return None
    body = await request.body()
    if len(body) > MAX_BODY:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _same_origin(request: Request) -> bool:
    sent = request.headers.get("origin")
    return sent is None or sent.lower() == relying_party(request)[1]


async def credentials_of(gw: "Gateway", user: str) -> list[dict]:
    return [c for c in await gw.store.get_credentials(user) if isinstance(c, dict) and c.get("id")]


def usable(gw: "Gateway", creds: list[dict]) -> list[dict]:
    """The keys that may answer a step-up under the attestation policy in force (all of them without one)."""
    policy = gw.config.webauthn.attestation
    return creds if not policy.enforced else [c for c in creds if still_allowed(policy, c)]


async def usable_credentials(gw: "Gateway", user: str) -> list[dict]:
    return usable(gw, await credentials_of(gw, user))


def is_fresh(record: "SessionRecord", now: float | None = None) -> bool:
    now = time.time() if now is None else now
    return now - record.auth_time <= FRESH_SECONDS and bool(set(record.amr) & {"otp", "hwk", "mfa"})


async def step_up_choice(gw: "Gateway", record: "SessionRecord") -> str:
    """How a pending step-up is answered: "webauthn" (it asks for a key and the user has one), "fallback" (it
    asks for a key, the user has none: TOTP, and the record notes it), or "any" (TOTP, or a key if registered)."""
    if record.state != SessionState.STEP_UP_REQUIRED or record.step_up.get("method") != "webauthn":
        return "any"
    try:
        registered = await credentials_of(gw, record.sub)
    except StoreUnavailable:
        return "webauthn"  # never downgrade because the store hiccupped; the key page reports the outage
    if usable(gw, registered):
        return "webauthn"
    reason = FALLBACK_REASON_ATTESTATION if registered else FALLBACK_REASON
    if record.step_up.get("fallback") != "totp":
        log.warning("session %s: step-up asks for a security key, %s has none usable (%s): falling back to TOTP",
                    record.sid, record.sub, reason)

        def fallback(current) -> dict:
            # onto the record as it is when written: failures counted meanwhile (another request or process) stay
            changes = {"step_up": {**current.step_up, "fallback": "totp", "fallback_reason": reason}}
            if current.decision:
                changes["decision"] = {**current.decision, "step_up_fallback": f"totp: {reason}"}
            return changes

        await gw.sessions.modify(record.sid, fallback)
        gw.telemetry.count("ztgate_step_up_fallback_total", method="webauthn")
    return "fallback"


async def has_credentials(gw: "Gateway", user: str) -> bool:
    try:
        return bool(await usable_credentials(gw, user))
    except StoreUnavailable:
        return False


# ---------------------------------------------------------------------------------------------- static script


@lru_cache(maxsize=4)
def _static(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


async def script(request: Request) -> Response:
    return Response(_static("webauthn.js"), media_type="text/javascript",
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


# ---------------------------------------------------------------------------------------------- registration


async def _session_or_redirect(request: Request, next_url: str) -> tuple["SessionRecord | None", Response | None]:
    record, _ = await current_session(request)
    if record is None:
        return None, RedirectResponse(f"/.ztgate/login?next={quote(next_url, safe='')}", status_code=303)
    if record.terminated:
        return None, html(pages.terminated(record.state_reason), 403)
    return record, None


async def register_page(request: Request) -> Response:
    gw = gateway(request)
    here = "/.ztgate/mfa/webauthn/register"
    record, refusal = await _session_or_redirect(request, here)
    if refusal is not None:
        return refusal
    assert record is not None
    if record.state == SessionState.STEP_UP_REQUIRED:
        return RedirectResponse(f"/.ztgate/mfa?next={quote(here, safe='')}", status_code=303)
    if not is_fresh(record):
        # confirm with TOTP first; the MFA page brings the browser back here
        return RedirectResponse(f"/.ztgate/mfa?next={quote(here, safe='')}", status_code=303)
    binding, fresh_cookie = pre_binding(request)
    try:
        registered = await credentials_of(gw, record.sub)
    except StoreUnavailable:
        return _page("Temporarily unavailable", "<p>Security keys cannot be managed right now.</p>", 503)
    count = len(usable(gw, registered))
    policy_note = (" Only keys from a maker your organisation approves are accepted."
                   if gw.config.webauthn.attestation.allow_lists else "")
    next_url = access.safe_next(request.query_params.get("next") or "/")
    body = _ceremony_page(mode="register", csrf=gw.csrf.issue("webauthn", binding), next_url=next_url,
                          title="Register a security key",
                          intro=f"Security keys registered for you: {count}.{policy_note} Insert or touch your key to add it.",
                          button="Add security key")
    response = HTMLResponse(body, headers={"Cache-Control": "no-store", "Content-Security-Policy": _CSP,
                                           "X-Frame-Options": "DENY"})
    if fresh_cookie:
        set_pre_cookie(response, binding, gw.cookie_secure(is_tls(request)))
    return response


async def _begin(request: Request) -> tuple[Any, Any, dict | Response]:
    """Common checks of an options call: the session, a JSON body, same origin, the one-time form token."""
    gw = gateway(request)
    if not _same_origin(request):
        return gw, None, problem(403, "bad_origin", "request from another origin")
    body = await _json_body(request)
    if body is None:
        return gw, None, problem(400, "bad_request", "a JSON body is required")
    record, _ = await current_session(request)
    if record is None or record.terminated:
        return gw, None, problem(401, "unauthenticated", "sign in first")
    try:
        await gw.csrf.verify(str(body.get("csrf", "")), "webauthn", request.cookies.get("ztgate_pre", ""))
    except CsrfError:
        return gw, None, problem(400, "form_expired", "this page expired; reload it")
    return gw, record, body


def _state_for(gw: "Gateway", record: "SessionRecord", purpose: str, challenge: bytes, rp_id: str,
               origin: str) -> str:
    return _sign_state(gw, {"sid": record.sid, "p": purpose, "c": _b64u(challenge), "rp": rp_id, "o": origin,
                            "exp": time.time() + CHALLENGE_SECONDS})


def _fresh_csrf(gw: "Gateway", request: Request) -> str:
    return gw.csrf.issue("webauthn", request.cookies.get("ztgate_pre", "") or secrets.token_urlsafe(18))


_NOT_TRUSTED = {"session_not_active": "finish the step-up first",
                "client_changed": "sign in again from this browser to manage security keys"}


def _may_not_register(request: Request, record: "SessionRecord") -> Response | None:
    """A new key outlives the session and answers later step-ups: a copied cookie or a session the gateway has
    asked to step up must not plant a key of its own."""
    why = why_not_trusted_here(request, record)
    return problem(403, why, _NOT_TRUSTED[why]) if why else None


async def register_options(request: Request) -> Response:
    import webauthn
    from webauthn.helpers.structs import (AttestationConveyancePreference, AuthenticatorSelectionCriteria,
                                          PublicKeyCredentialDescriptor, ResidentKeyRequirement,
                                          UserVerificationRequirement)

    gw, record, body = await _begin(request)
    if isinstance(body, Response):
        return body
    if (refused := _may_not_register(request, record)) is not None:
        return refused
    if not is_fresh(record):
        return problem(403, "mfa_required", "confirm with your one-time code first",
                       mfa="/.ztgate/mfa?next=/.ztgate/mfa/webauthn/register")
    try:
        existing = await credentials_of(gw, record.sub)
    except StoreUnavailable:
        return problem(503, "store_unavailable", "security keys cannot be managed right now")
    if len(usable(gw, existing)) >= MAX_CREDENTIALS:
        return problem(409, "too_many_keys", f"at most {MAX_CREDENTIALS} security keys per user")
    rp_id, origin = relying_party(request)
    challenge = secrets.token_bytes(32)
    options = webauthn.generate_registration_options(
        rp_id=rp_id, rp_name="ztgate", user_name=record.sub, user_id=_user_handle(gw, record.sub),
        user_display_name=record.name or record.sub, challenge=challenge, timeout=CHALLENGE_SECONDS * 1000,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.DISCOURAGED,
            user_verification=UserVerificationRequirement.PREFERRED),
        attestation=AttestationConveyancePreference(gw.config.webauthn.attestation.conveyance),
        # a key registered before the attestation policy may be registered again, this time with its chain
        exclude_credentials=[PublicKeyCredentialDescriptor(id=_unb64u(c["id"])) for c in usable(gw, existing)])
    return _json({"publicKey": json.loads(webauthn.options_to_json(options)),
                  "state": _state_for(gw, record, "register", challenge, rp_id, origin),
                  "csrf": _fresh_csrf(gw, request)})


async def register_verify(request: Request) -> Response:
    import webauthn
    from webauthn.helpers.exceptions import WebAuthnException

    gw = gateway(request)
    if not _same_origin(request):
        return problem(403, "bad_origin", "request from another origin")
    body = await _json_body(request)
    if body is None or not isinstance(body.get("credential"), dict):
        return problem(400, "bad_request", "a JSON body with state and credential is required")
    record, _ = await current_session(request)
    if record is None or record.terminated:
        return problem(401, "unauthenticated", "sign in first")
    if (refused := _may_not_register(request, record)) is not None:
        return refused
    if not is_fresh(record):
        return problem(403, "mfa_required", "confirm with your one-time code first")
    state = await _open_state(gw, str(body.get("state", "")), sid=record.sid, purpose="register")
    rp_id, origin = relying_party(request)
    if state is None or state.get("rp") != rp_id or state.get("o") != origin:
        return problem(400, "challenge_invalid", "this registration expired or was already used; start again")
    try:
        verified = webauthn.verify_registration_response(
            credential=body["credential"], expected_challenge=_unb64u(state["c"]), expected_rp_id=rp_id,
            expected_origin=origin)
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        log.warning("security key registration refused for %s: %s", record.sub, exc)
        return problem(400, "registration_refused", "the security key's answer could not be verified")
    attestation = Attestation.of_registration(verified)
    try:
        root = judge(gw.config.webauthn.attestation, attestation)
    except AttestationRefused as exc:
        log.warning("security key registration refused for %s: %s (format %s, AAGUID %s)", record.sub, exc,
                    attestation.fmt, attestation.aaguid)
        gw.telemetry.count("ztgate_webauthn_registrations_refused_total", reason="attestation")
        await _key_event(gw, record, accepted=False, detail=str(exc), attestation=attestation, root=None)
        return problem(403, "attestation_refused", str(exc))
    attestation = replace(attestation, root=root or None)
    transports = body["credential"].get("response", {}).get("transports") or []
    entry = {"id": _b64u(verified.credential_id), "public_key": _b64u(verified.credential_public_key),
             "sign_count": int(verified.sign_count), "aaguid": str(verified.aaguid),
             "transports": [str(t) for t in transports][:8], "user_verified": bool(verified.user_verified),
             "created": time.time(), "last_used": None, "attestation": attestation.to_json()}
    try:
        existing = await credentials_of(gw, record.sub)
        if any(c["id"] == entry["id"] for c in usable(gw, existing)):
            return problem(409, "already_registered", "this security key is already registered")
        # the same key registered before the policy, now with an acceptable chain: it replaces its old entry
        existing = [c for c in existing if c["id"] != entry["id"]]
        accepted = {c["id"] for c in usable(gw, existing)}
        # at the limit, keys the policy no longer accepts make room first, then the oldest
        ordered = [c for c in existing if c["id"] not in accepted] + [c for c in existing if c["id"] in accepted]
        await gw.store.put_credentials(record.sub, (ordered + [entry])[-MAX_CREDENTIALS:])
    except StoreUnavailable:
        return problem(503, "store_unavailable", "security keys cannot be managed right now")
    log.info("security key registered for %s (session %s, format %s, AAGUID %s%s)", record.sub, record.sid,
             attestation.fmt, attestation.aaguid, f", attested by CA {root[:16]}" if root else "")
    gw.telemetry.count("ztgate_webauthn_registrations_total")
    await _key_event(gw, record, accepted=True, detail="security key registered", attestation=attestation, root=root)
    next_url = access.safe_next(str(body.get("next") or "/"))
    return _json({"ok": True, "redirect": next_url, "message": "Security key registered."})


# ---------------------------------------------------------------------------------------------- authentication


async def authenticate_page(request: Request) -> Response:
    gw = gateway(request)
    next_url = access.safe_next(request.query_params.get("next") or "/")
    record, refusal = await _session_or_redirect(request, next_url)
    if refusal is not None:
        return refusal
    assert record is not None
    try:
        has_keys = bool(await usable_credentials(gw, record.sub))
    except StoreUnavailable:
        return _page("Temporarily unavailable", "<p>Security keys cannot be checked right now.</p>", 503)
    if not has_keys:
        return RedirectResponse(f"/.ztgate/mfa?next={quote(next_url, safe='')}", status_code=303)
    binding, fresh_cookie = pre_binding(request)
    pending = record.state == SessionState.STEP_UP_REQUIRED
    intro = ("Your session needs a fresh confirmation with your security key." if pending
             else "Confirm it is you with your security key.")
    alternative = "" if pending and record.step_up.get("method") == "webauthn" else (
        f"<p class=muted>Or use your <a href='/.ztgate/mfa?next={quote(next_url, safe='')}'>one-time code</a>.</p>")
    body = _ceremony_page(mode="authenticate", csrf=gw.csrf.issue("webauthn", binding), next_url=next_url,
                          title="Verify it's you", intro=intro, button="Use security key", alternative=alternative)
    response = HTMLResponse(body, headers={"Cache-Control": "no-store", "Content-Security-Policy": _CSP,
                                           "X-Frame-Options": "DENY"})
    if fresh_cookie:
        set_pre_cookie(response, binding, gw.cookie_secure(is_tls(request)))
    return response


async def authenticate_options(request: Request) -> Response:
    import webauthn
    from webauthn.helpers.structs import PublicKeyCredentialDescriptor, UserVerificationRequirement

    gw, record, body = await _begin(request)
    if isinstance(body, Response):
        return body
    try:
        creds = await usable_credentials(gw, record.sub)
    except StoreUnavailable:
        return problem(503, "store_unavailable", "security keys cannot be checked right now")
    if not creds:
        return problem(409, "no_keys", "no security key is registered for you",
                       mfa="/.ztgate/mfa")
    rp_id, origin = relying_party(request)
    challenge = secrets.token_bytes(32)
    options = webauthn.generate_authentication_options(
        rp_id=rp_id, challenge=challenge, timeout=CHALLENGE_SECONDS * 1000,
        allow_credentials=[PublicKeyCredentialDescriptor(id=_unb64u(c["id"])) for c in creds],
        user_verification=UserVerificationRequirement.PREFERRED)
    return _json({"publicKey": json.loads(webauthn.options_to_json(options)),
                  "state": _state_for(gw, record, "authenticate", challenge, rp_id, origin),
                  "csrf": _fresh_csrf(gw, request)})


async def authenticate_verify(request: Request) -> Response:
    import webauthn
    from webauthn.helpers.exceptions import WebAuthnException

    from .login import complete_step_up

    gw = gateway(request)
    if not _same_origin(request):
        return problem(403, "bad_origin", "request from another origin")
    body = await _json_body(request)
    if body is None or not isinstance(body.get("credential"), dict):
        return problem(400, "bad_request", "a JSON body with state and credential is required")
    record, _ = await current_session(request)
    if record is None:
        return problem(401, "unauthenticated", "sign in first")
    if record.terminated:
        return problem(403, "session_terminated", record.state_reason or "session terminated")
    next_url = access.safe_next(str(body.get("next") or "/"))
    rp_id, origin = relying_party(request)
    state = await _open_state(gw, str(body.get("state", "")), sid=record.sid, purpose="authenticate")
    if state is None or state.get("rp") != rp_id or state.get("o") != origin:
        return await _failed(request, record, "challenge_invalid",
                             "this confirmation expired or was already used; start again")
    try:
        creds = await credentials_of(gw, record.sub)
    except StoreUnavailable:
        return problem(503, "store_unavailable", "security keys cannot be checked right now")
    cred_id = str(body["credential"].get("rawId") or body["credential"].get("id") or "")
    match = next((c for c in creds if hmac.compare_digest(c["id"], cred_id)), None)
    if match is None:
        return await _failed(request, record, "unknown_key", "this security key is not registered for you")
    if not usable(gw, [match]):
        return await _failed(request, record, "key_not_accepted",
                             "this security key does not meet your organisation's security key policy")
    try:
        verified = webauthn.verify_authentication_response(
            credential=body["credential"], expected_challenge=_unb64u(state["c"]), expected_rp_id=rp_id,
            expected_origin=origin, credential_public_key=_unb64u(match["public_key"]),
            credential_current_sign_count=int(match.get("sign_count", 0)))
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        log.warning("security key assertion refused for %s (session %s): %s", record.sub, record.sid, exc)
        return await _failed(request, record, "assertion_refused", "the security key's answer could not be verified")
    try:
        updated = [{**c, "sign_count": int(verified.new_sign_count), "last_used": time.time()}
                   if c["id"] == match["id"] else c for c in creds]
        await gw.store.put_credentials(record.sub, updated)
    except StoreUnavailable:
        return problem(503, "store_unavailable", "security keys cannot be checked right now")
    record = await complete_step_up(request, record, method="hwk", acr="phr")
    gw.telemetry.count("ztgate_webauthn_assertions_total", outcome="accepted")
    response = _json({"ok": True, "redirect": next_url, "message": "Confirmed."})
    response.headers.append("Set-Cookie", gw.session_cookie(gw.issue_session_token(record), is_tls(request)))
    return response


async def _key_event(gw: "Gateway", record: "SessionRecord", *, accepted: bool, detail: str,
                     attestation: Attestation, root: str | None) -> None:
    """The security event of a key registration. The outbox's own outage handling applies; a failure to record
    it must not undo a registration already stored, nor turn a refusal into a 500."""
    if gw.events is None:
        return
    factor = {"format": attestation.fmt, "aaguid": attestation.aaguid, **({"attested_by": root} if root else {})}
    try:
        await gw.events.emit_mfa_factor(record.to_dict(), accepted=accepted, detail=detail, factor=factor)
    except Exception:  # logged; the ceremony's answer stands
        log.exception("could not record the security event of %s's key registration", record.sub)


async def _failed(request: Request, record: "SessionRecord", error: str, description: str) -> Response:
    """A refused assertion counts as a failed step-up, as a wrong TOTP code does (policies may escalate)."""
    gw = gateway(request)
    gw.telemetry.count("ztgate_webauthn_assertions_total", outcome=error)
    if record.state == SessionState.STEP_UP_REQUIRED:
        from .login import count_step_up_failure

        try:
            await count_step_up_failure(gw, record.sid)
            await gw.monitor.live(record.sid)
            await gw.monitor.evaluate(record.sid)
        except StoreUnavailable:
            pass
    return problem(401 if error != "challenge_invalid" else 400, error, description)


def _json(data: dict, status: int = 200) -> Response:
    from starlette.responses import JSONResponse

    return JSONResponse(data, status_code=status, headers={"Cache-Control": "no-store"})


def routes() -> list[Any]:
    """The routes app.py mounts."""
    from starlette.routing import Route

    base = "/.ztgate/mfa/webauthn"
    return [
        Route("/.ztgate/static/webauthn.js", script),
        Route(f"{base}/register", register_page, methods=["GET"]),
        Route(f"{base}/register/options", register_options, methods=["POST"]),
        Route(f"{base}/register/verify", register_verify, methods=["POST"]),
        Route(base, authenticate_page, methods=["GET"]),
        Route(f"{base}/options", authenticate_options, methods=["POST"]),
        Route(f"{base}/verify", authenticate_verify, methods=["POST"]),
    ]
