"""The admin API under /.ztgate/admin/api/: sessions, profiles, account locks, policy explanations, event status.

Authenticated by the admin bearer token from the config, or by a session whose user is in an admin group.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..store import StoreUnavailable
from .common import current_session, gateway, problem, why_not_trusted_here

STEP_UP_METHODS = ("totp", "webauthn", "oidc")


async def is_admin_token(request: Request) -> bool:
    gw = gateway(request)
    auth = request.headers.get("authorization", "")
    token = gw.config.admin.token
    return bool(token) and auth[:7].lower() == "bearer " and hmac.compare_digest(auth[7:].strip().encode(),
                                                                                 token.encode())


async def admin_caller(request: Request) -> tuple[str | None, int]:
    """(the admin's name, 200), or (None, 401 | 403): 401 without credentials, 403 signed in but not an admin."""
    gw = gateway(request)
    if request.headers.get("authorization", "")[:7].lower() == "bearer ":
        return ("token", 200) if await is_admin_token(request) else (None, 401)
    record, _ = await current_session(request)
    if record is None or record.terminated or gw.sessions.idle_expired(record):
        return None, 401
    if not set(record.groups) & set(gw.config.admin.groups) or why_not_trusted_here(request, record):
        return None, 403
    return record.sub, 200


def admin_endpoint(handler):
    async def wrapped(request: Request) -> Response:
        who, status = await admin_caller(request)
        if who is None:
            return problem(status, "unauthorized" if status == 401 else "forbidden",
                           "admin token, or a session of an admin group in good standing from the client that signed"
                           " in, required")
        try:
            return await handler(request, who)
        except StoreUnavailable as exc:
            return problem(503, "store_unavailable", str(exc))

    wrapped.__name__ = handler.__name__
    return wrapped


async def _session_view(request: Request, record) -> dict[str, Any]:
    gw = gateway(request)
    data = record.to_dict()
    live = gw.monitor.assessment_of(record.sid)
    data["assessment"] = live if live is not None else (await gw.store.get_assessment(record.sid) or {})
    data["connections"] = gw.connections.count(record.sid)
    now = time.time()
    data["age_seconds"] = round(now - record.created, 1)
    data["idle_seconds"] = round(now - record.last_seen, 1)
    return data


@admin_endpoint
async def list_sessions(request: Request, who: str) -> Response:
    gw = gateway(request)
    records = await gw.sessions.list()
    state = request.query_params.get("state")
    if state:
        records = [r for r in records if r.state == state]
    return JSONResponse({"sessions": [await _session_view(request, r) for r in records]})


@admin_endpoint
async def show_session(request: Request, who: str) -> Response:
    gw = gateway(request)
    record = await gw.sessions.get(request.path_params["sid"])
    if record is None:
        return problem(404, "not_found", "no such session")
    return JSONResponse(await _session_view(request, record))


async def _options(request: Request) -> dict | None:
    """The optional JSON object of an admin action; {} without one, None if it is not a JSON object."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        return {}
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def _acted_on(request: Request, record, sid: str, **extra: Any) -> Response:
    pending = gateway(request).sessions.unsynced(sid)
    if pending is not None:
        # store outage: in force on this process now, on the others once the store is back (RFC 9110 202)
        return JSONResponse({**(record or pending).to_dict(), "persisted": False, **extra}, status_code=202)
    if record is None:
        return problem(404, "not_found", "no such session")
    return JSONResponse({**await _session_view(request, record), **extra})


@admin_endpoint
async def terminate_session(request: Request, who: str) -> Response:
    options = await _options(request)
    if options is None:
        return problem(400, "bad_json", "the body must be a JSON object")
    reason = str(options.get("reason") or "terminated by an administrator")[:500]
    gw = gateway(request)
    sid = request.path_params["sid"]
    record, ended_here = await gw.enforcer.terminate_once(sid, reason, by=who)
    # ended already (a policy, another admin, the user): nothing is rewritten or reported again, and the answer
    # (200) says why and when it ended, as the record keeps it
    return await _acted_on(request, record, sid, **({"already_terminated": True} if record and not ended_here else {}))


@admin_endpoint
async def step_up_session(request: Request, who: str) -> Response:
    options = await _options(request)
    if options is None:
        return problem(400, "bad_json", "the body must be a JSON object")
    method = str(options.get("method") or "totp")
    if method not in STEP_UP_METHODS:
        return problem(400, "bad_method", f"method must be one of: {', '.join(STEP_UP_METHODS)}")
    sid = request.path_params["sid"]
    record = await gateway(request).enforcer.require_step_up(sid, "step-up required by an administrator", by=who,
                                                             method=method)
    return await _acted_on(request, record, sid)


@admin_endpoint
async def explain_session(request: Request, who: str) -> Response:
    gw = gateway(request)
    import policies

    record = await gw.sessions.get(request.path_params["sid"])
    if record is None:
        return problem(404, "not_found", "no such session")
    context = await gw.monitor.explain_context(record)  # this process's scorer, or the owner's stored assessment
    explanation = policies.explain(gw.policies.current, context)
    return JSONResponse({"sid": record.sid, "explanation": explanation.to_dict(), "text": explanation.to_text(),
                         "last_decision": record.decision})


@admin_endpoint
async def scorer_state(request: Request, who: str) -> Response:
    """The live scorer state of a session in this process (forensics; it holds timing statistics only)."""
    import base64

    gw = gateway(request)
    entry = gw.monitor.entry(request.path_params["sid"])
    if entry is None:
        return problem(404, "not_found", "no live scorer for this session in this gateway process")
    state = entry.scorer.to_bytes()
    return JSONResponse({"sid": entry.sid, "bytes": len(state), "state": base64.b64encode(state).decode()})


@admin_endpoint
async def list_profiles(request: Request, who: str) -> Response:
    gw = gateway(request)
    return JSONResponse({"profiles": await gw.store.list_profiles()})


@admin_endpoint
async def profile(request: Request, who: str) -> Response:
    gw = gateway(request)
    import scoring

    user = request.path_params["user"]
    if request.method == "PUT":
        return await _import_profile(request, gw, user, who)
    if request.method == "DELETE":
        deleted = await gw.store.delete_profile(user)
        return JSONResponse({"user": user, "deleted": deleted}, status_code=200 if deleted else 404)
    blob = await gw.store.get_profile(user)
    if blob is None:
        return problem(404, "not_found", "no profile for this user")
    try:
        prof = scoring.Profile.from_bytes(blob)
    except Exception as exc:  # stored but unusable (corrupt, out of range, an old version): say so, do not fail
        return problem(422, "bad_profile", f"the stored profile does not load: {exc}"[:300])
    summary = prof.describe() if hasattr(prof, "describe") else {}
    return JSONResponse({"user": user, "bytes": len(blob), "summary": summary})


PROFILE_MAX_UPLOAD = 64 * 1024  # scoring.profile.PROFILE_MAX_BYTES: a profile is a few KB of aggregates


async def _import_profile(request: Request, gw: Any, user: str, who: str) -> Response:
    """PUT the bytes of a profile built offline (scoring.enrol(...).to_bytes()); stored only if it loads."""
    import scoring

    if not user or len(user) > 256 or any(ord(c) < 32 for c in user):
        return problem(400, "bad_user", "user names are 1..256 printable characters")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > PROFILE_MAX_UPLOAD):
        return problem(413, "too_large", f"a profile is at most {PROFILE_MAX_UPLOAD} bytes")
    blob = b""
    async for chunk in request.stream():
        blob += chunk
        if len(blob) > PROFILE_MAX_UPLOAD:
            return problem(413, "too_large", f"a profile is at most {PROFILE_MAX_UPLOAD} bytes")
    if not blob:
        return problem(400, "empty", "send the serialized profile (scoring.Profile.to_bytes()) as the body")
    try:
        prof = scoring.Profile.from_bytes(blob)
    except Exception as exc:  # ProfileError or anything a corrupt blob raises: refuse, keep the old profile
        return problem(422, "bad_profile", f"not a loadable scoring profile: {exc}"[:300])
    replaced = await gw.store.get_profile(user) is not None
    await gw.store.put_profile(user, prof.to_bytes())
    import logging

    logging.getLogger("ztgate.admin").info("profile of %s imported by %s (%d bytes)", user, who, len(blob))
    return JSONResponse({"user": user, "bytes": len(blob), "replaced": replaced},
                        status_code=200 if replaced else 201)


@admin_endpoint
async def list_locks(request: Request, who: str) -> Response:
    """Accounts locked now (failed sign-ins or a policy's lock_user_for); `known: false` is a fingerprint of a name
    the directory does not know (never the name as typed)."""
    gw = gateway(request)
    return JSONResponse({"locks": [lock.to_dict() for lock in await gw.lockouts.locks()]})


@admin_endpoint
async def remove_lock(request: Request, who: str) -> Response:
    """Lifts a lock and clears the account's failure counts (the next mistake must not lock it again at once)."""
    gw = gateway(request)
    user = request.path_params["user"]
    if not user or len(user) > 256 or any(ord(c) < 32 for c in user):
        return problem(400, "bad_user", "user names are 1..256 printable characters")
    unlocked = await gw.lockouts.unlock(user)
    if not unlocked:
        return problem(404, "not_locked", "this account is not locked (its failure counts were cleared)")
    import logging

    logging.getLogger("ztgate.admin").warning("account %s unlocked by %s", user, who)
    if gw.events is not None and not user.startswith("~"):
        known = gw.directory.get(user) if gw.directory is not None else None
        account = ({"sub": known.username, "email": known.email, "name": known.name, "groups": list(known.groups)}
                   if known is not None else {"sub": user})
        try:
            await gw.events.emit_account_lock(account, locked=False, reason=f"unlocked by {who}", by=who)
        except Exception:  # logged; the unlock stands
            logging.getLogger("ztgate.admin").exception("could not record the security event of %s's unlock", user)
    return JSONResponse({"user": user, "unlocked": True})


@admin_endpoint
async def events_status(request: Request, who: str) -> Response:
    gw = gateway(request)
    return JSONResponse(gw.events.status() if gw.events is not None else {"enabled": False})


@admin_endpoint
async def policy_status(request: Request, who: str) -> Response:
    gw = gateway(request)
    holder = gw.policies
    return JSONResponse({"directory": str(holder.directory), "digest": holder.current.digest,
                         "reloads": holder.reloads, "rejections": holder.rejections, "last_error": holder.last_error})
