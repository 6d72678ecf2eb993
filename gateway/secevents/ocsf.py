"""Pure builders of OCSF events: decision -> Detection Finding (2004), session end -> Authentication Logoff (3002),
security key registered or refused -> Account Change: MFA Factor Enable (3001), account locked or unlocked -> Account
Change: Lock (3001).

No I/O here. The events carry counts and timings only: never characters, keys or field values (the inputs
never contain them either; numeric `details` are the only details copied).
"""

from __future__ import annotations

import math
import uuid
from typing import Any
from urllib.parse import urlsplit

OCSF_VERSION = "1.3.0"
PRODUCT_NAME = "ztgate"
VENDOR_NAME = "ztgate"
# Namespace for correlation ids: one per session, identical across gateway instances and restarts.
CORRELATION_NS = uuid.UUID("5b0f6a62-8d5e-4c43-9d6f-2b7e0c1a7a11")

SEVERITY = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical", 6: "Fatal"}
ACTION = {1: "Allowed", 2: "Denied"}
DISPOSITION = {2: "Blocked", 15: "Detected", 23: "Challenge", 24: "Access Revoked", 25: "Rejected"}
RISK_LEVEL = {0: "Info", 1: "Low", 2: "Medium", 3: "High", 4: "Critical"}

# (severity_id, disposition_id, title) per enforced action.
ACTIONS: dict[str, tuple[int, int, str]] = {
    "terminate": (4, 24, "Session terminated"),
    "restrict": (3, 2, "Session restricted"),
    "step_up": (2, 23, "Step-up authentication required"),
}
MFA_METHODS = {"mfa", "otp", "totp", "hwk", "swk", "webauthn", "fido", "sms", "pop"}


# class_uid -> (category_uid, class caption), category_uid -> caption: the classes ztgate emits
CLASSES = {2004: (2, "Detection Finding"), 3001: (3, "Account Change"), 3002: (3, "Authentication")}
CATEGORIES = {2: "Findings", 3: "Identity & Access Management"}


def _classified(class_uid: int, activity_id: int, activity_name: str, severity_id: int, now_ms: int) -> dict:
    """The classification every event opens with; type_uid and the captions follow from the uids, as OCSF defines."""
    category_uid, class_name = CLASSES[class_uid]
    return {
        "activity_id": activity_id, "activity_name": activity_name,
        "category_uid": category_uid, "category_name": CATEGORIES[category_uid],
        "class_uid": class_uid, "class_name": class_name,
        "type_uid": class_uid * 100 + activity_id, "type_name": f"{class_name}: {activity_name}",
        "severity_id": severity_id, "severity": SEVERITY[severity_id],
        "time": now_ms,
    }


def correlation_uid(sid: str) -> str:
    return str(uuid.uuid5(CORRELATION_NS, f"session:{sid}"))


def new_event_id() -> str:
    return str(uuid.uuid4())


def _ms(seconds: Any) -> int | None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return None
    return int(round(seconds * 1000))


def _metadata(event_id: str, correlation: str, product_version: str, instance: str, now_ms: int,
              profiles: list[str]) -> dict:
    return {
        "version": OCSF_VERSION,
        "uid": event_id,
        "correlation_uid": correlation,
        "product": {"name": PRODUCT_NAME, "vendor_name": VENDOR_NAME, "version": product_version},
        "profiles": profiles,
        "logged_time": now_ms,
        "log_name": "security-events",
        "log_provider": instance,
    }


def _user(session: dict) -> dict:
    name = session.get("email") or session.get("sub") or "unknown"
    user: dict[str, Any] = {"name": str(name), "type_id": 1, "type": "User"}
    if session.get("sub"):
        user["uid"] = str(session["sub"])
    if session.get("email"):
        user["email_addr"] = str(session["email"])
    if session.get("name"):
        user["full_name"] = str(session["name"])
    groups = [{"name": str(g)} for g in session.get("groups") or [] if g]
    if groups:
        user["groups"] = groups
    return user


def _is_mfa(session: dict) -> bool:
    amr = {str(m).lower() for m in session.get("amr") or []}
    return bool(amr & MFA_METHODS) or len(amr) > 1


def _session(session: dict) -> dict:
    s: dict[str, Any] = {"uid": str(session.get("sid", "")), "is_remote": True, "is_mfa": _is_mfa(session)}
    created = _ms(session.get("created"))
    if created is not None:
        s["created_time"] = created
    if session.get("idp"):
        s["issuer"] = str(session["idp"])
    return s


def _src_endpoint(session: dict) -> dict | None:
    ip = session.get("client_ip")
    return {"ip": str(ip)} if ip else None


def _dst_endpoint(upstream: str | None) -> dict | None:
    if not upstream:
        return None
    parts = urlsplit(upstream if "//" in upstream else f"//{upstream}")
    ep: dict[str, Any] = {"name": upstream}
    if parts.hostname:
        ep["hostname"] = parts.hostname
    try:
        if parts.port:
            ep["port"] = parts.port
    except ValueError:
        pass
    return ep


def _numeric(d: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in (d or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[str(k)] = round(float(v), 4)
    return out


def _evidence(e: Any) -> dict:
    e = e or {}
    return {"keystrokes": int(e.get("keystrokes", 0) or 0), "seconds": round(float(e.get("seconds", 0.0) or 0.0), 3),
            "samples": int(e.get("samples", 0) or 0)}


def _why(decision: dict, assessment: dict | None) -> dict:
    """Each signal's score and explanation, the relay's added latency, the amount of evidence."""
    scores = _numeric(decision.get("signals"))
    signals: dict[str, dict] = {}
    a = assessment or {}
    for name, s in (a.get("signals") or {}).items():
        signals[str(name)] = {
            "score": round(float(s.get("score", 0.0)), 4),
            "sufficient": bool(s.get("sufficient", False)),
            "explanation": str(s.get("explanation", "")),
            "evidence": _evidence(s.get("evidence")),
            "details": _numeric(s.get("details")),
            "triggered": str(name) in scores,
        }
    for name, score in scores.items():
        signals.setdefault(name, {"score": score, "triggered": True})
    why: dict[str, Any] = {"signals": signals}
    if a:
        why["risk"] = round(float(a.get("risk", 0.0)), 4)
        why["evidence"] = _evidence(a.get("evidence"))
        why["contributions"] = _numeric(a.get("contributions"))
    relay = (a.get("signals") or {}).get("relay") or {}
    latency = _numeric(relay.get("details"))
    if "added_latency_ms" in latency:
        why["added_latency_ms"] = latency["added_latency_ms"]
        for k in ("added_latency_ci_low_ms", "added_latency_ci_high_ms"):
            if k in latency:
                why[k] = latency[k]
    return why


def _risk(why: dict) -> tuple[int, int] | None:
    if "risk" not in why:
        return None
    score = int(round(why["risk"] * 100))
    level = 4 if score >= 80 else 3 if score >= 60 else 2 if score >= 40 else 1 if score >= 20 else 0
    return score, level


def detection_finding(*, event_id: str, decision: dict, session: dict, assessment: dict | None,
                      upstream: str | None, instance: str, product_version: str, now: float) -> dict:
    """A non-allow decision as an OCSF Detection Finding with the security_control profile."""
    action = str(decision.get("action"))
    if action not in ACTIONS:
        raise ValueError(f"no security event for decision action {action!r}")
    severity_id, disposition_id, title = ACTIONS[action]
    shadow = bool(decision.get("shadow", False))
    if shadow:
        # Shadow mode decided but did not act: the control allowed the activity and only recorded it.
        action_id, disposition_id, severity_id = 1, 15, min(severity_id, 2)
        title = f"{title} (shadow mode, not enforced)"
    else:
        action_id = 2
    now_ms = int(now * 1000)
    sid = str(session.get("sid", ""))
    reason = str(decision.get("reason") or "")
    why = _why(decision, assessment)
    policy_file = str(decision.get("policy_file") or "")
    rule_id = str(decision.get("rule_id") or "")
    created = session.get("created")
    duration_s = round(now - created, 3) if isinstance(created, (int, float)) else None

    evidence: dict[str, Any] = {
        "name": "session",
        "uid": sid,
        "actor": {"user": _user(session), "session": _session(session)},
        "data": {"decision": action, "shadow": shadow, **why},
    }
    if (src := _src_endpoint(session)) is not None:
        evidence["src_endpoint"] = src
    if (dst := _dst_endpoint(upstream)) is not None:
        evidence["dst_endpoint"] = dst
    if session.get("user_agent"):
        evidence["http_request"] = {"user_agent": str(session["user_agent"])}

    related = []
    for name, s in why["signals"].items():
        a: dict[str, Any] = {"name": name, "uid": f"ztgate.signal.{name}", "type_id": 3, "type": "Statistical"}
        if s.get("explanation"):
            a["desc"] = s["explanation"]
        related.append(a)
    finding_info: dict[str, Any] = {
        "uid": event_id,
        "title": title,
        "desc": reason or title,
        "types": [f"ztgate/{action}"],
        "created_time": now_ms,
        "data_sources": ["ztgate input-timing scoring"],
        "analytic": {"name": rule_id or "policy", "uid": f"{policy_file}#{rule_id}", "type_id": 1, "type": "Rule"},
    }
    if related:
        finding_info["related_analytics"] = related

    event: dict[str, Any] = {
        **_classified(2004, 1, "Create", severity_id, now_ms),
        "message": f"{title}: {reason}" if reason else title,
        "status_id": 1, "status": "New",
        "action_id": action_id, "action": ACTION[action_id],
        "disposition_id": disposition_id, "disposition": DISPOSITION[disposition_id],
        "is_alert": not shadow,
        "metadata": _metadata(event_id, correlation_uid(sid), product_version, instance, now_ms, ["security_control"]),
        "finding_info": finding_info,
        "policy": {"name": policy_file or "policy", "uid": str(decision.get("policy_id") or f"{policy_file}#{rule_id}"),
                   "desc": reason or title},
        "evidences": [evidence],
        "unmapped": {"ztgate": {
            "instance": instance,
            "upstream": upstream,
            "session": {"sid": sid, "route": session.get("route"), "state": session.get("state"),
                        "started": _ms(created), "duration_s": duration_s, "auth_time": _ms(session.get("auth_time")),
                        "acr": session.get("acr"), "amr": list(session.get("amr") or []),
                        "client_ip": session.get("client_ip"), "user_agent": session.get("user_agent")},
            "user": {"sub": session.get("sub"), "email": session.get("email"), "groups": list(session.get("groups") or []),
                     "site": session.get("site"), "country": session.get("country")},
            "decision": {"action": action, "enforced": not shadow, "shadow": shadow, "policy_file": policy_file,
                         "policy_id": decision.get("policy_id"), "rule_id": rule_id, "reason": reason,
                         "params": decision.get("params") or {}},
            "why": why,
        }},
    }
    if (risk := _risk(why)) is not None:
        event["risk_score"], event["risk_level_id"] = risk
        event["risk_level"] = RISK_LEVEL[risk[1]]
    return event


def logoff(*, event_id: str, session: dict, reason: str, instance: str, product_version: str, now: float) -> dict:
    """The end of a session as an OCSF Authentication Logoff, correlated with the session's findings."""
    now_ms = int(now * 1000)
    sid = str(session.get("sid", ""))
    created_ms = _ms(session.get("created"))
    event: dict[str, Any] = {
        **_classified(3002, 2, "Logoff", 1, now_ms),
        "message": f"Session ended: {reason}",
        "status_id": 1, "status": "Success", "status_detail": reason,
        "metadata": _metadata(event_id, correlation_uid(sid), product_version, instance, now_ms, []),
        "user": _user(session),
        "session": {**_session(session), "expiration_reason": reason},
        "service": {"name": str(session.get("route") or "ztgate"), "uid": str(session.get("route") or "ztgate")},
        "is_mfa": _is_mfa(session),
        "is_remote": True,
        "logon_type_id": 3, "logon_type": "Network",
        "end_time": now_ms,
        "unmapped": {"ztgate": {"instance": instance, "reason": reason, "sid": sid, "route": session.get("route"),
                                "state": session.get("state"), "site": session.get("site"),
                                "country": session.get("country")}},
    }
    if created_ms is not None:
        event["start_time"] = created_ms
        event["duration"] = max(0, now_ms - created_ms)
    if (src := _src_endpoint(session)) is not None:
        event["src_endpoint"] = src
    if session.get("user_agent"):
        event["http_request"] = {"user_agent": str(session["user_agent"])}
    return event


def mfa_factor_enable(*, event_id: str, session: dict, accepted: bool, detail: str, factor: dict, instance: str,
                      product_version: str, now: float) -> dict:
    """A security key registered for the session's user, or refused (by the attestation policy), as an OCSF Account
    Change. A refusal is worth a security team's look: under a policy it is what registering a software authenticator
    (one a remote operator could use) looks like. `factor` carries public facts only (format, AAGUID, CA)."""
    now_ms = int(now * 1000)
    sid = str(session.get("sid", ""))
    user = _user(session)
    severity = 1 if accepted else 3
    message = (f"Security key registered for {user['name']}" if accepted
               else f"Security key registration refused for {user['name']}: {detail}")
    event: dict[str, Any] = {
        **_classified(3001, 10, "MFA Factor Enable", severity, now_ms),
        "message": message,
        "status_id": 1 if accepted else 2, "status": "Success" if accepted else "Failure", "status_detail": detail,
        "metadata": _metadata(event_id, correlation_uid(sid), product_version, instance, now_ms, []),
        "user": user,
        "unmapped": {"ztgate": {"instance": instance, "sid": sid, "factor": {"type": "webauthn", **factor},
                                "reason": detail}},
    }
    if (src := _src_endpoint(session)) is not None:
        event["src_endpoint"] = src
    if session.get("user_agent"):
        event["http_request"] = {"user_agent": str(session["user_agent"])}
    return event


def account_lock(*, event_id: str, account: dict, locked: bool, reason: str, by: str, instance: str,
                 product_version: str, now: float) -> dict:
    """An account locked (too many failed sign-ins, or a policy's `lock_user_for`) or unlocked by an administrator,
    as an OCSF Account Change: Lock, or Other (99) with activity_name "Unlock" (OCSF 1.3 has no unlock activity). `account` is shaped
    like a session (sub, email, name, groups, client_ip, user_agent); `by` is who acted (ztgate, or the admin)."""
    now_ms = int(now * 1000)
    user = _user(account)
    message = f"Account {user['name']} locked: {reason}" if locked else f"Account {user['name']} unlocked by {by}"
    event: dict[str, Any] = {
        **(_classified(3001, 9, "Lock", 3, now_ms) if locked
           else {**_classified(3001, 99, "Other", 1, now_ms), "activity_name": "Unlock"}),
        "message": message,
        "status_id": 1, "status": "Success", "status_detail": reason,
        "metadata": _metadata(event_id, str(uuid.uuid5(CORRELATION_NS, f"account:{user.get('uid', user['name'])}")),
                              product_version, instance, now_ms, []),
        "user": user,
        "actor": {"user": {"name": by, "type_id": 1 if by != "ztgate" else 99,
                           "type": "User" if by != "ztgate" else "Other"}},
        "unmapped": {"ztgate": {"instance": instance, "reason": reason, "by": by}},
    }
    if (src := _src_endpoint(account)) is not None:
        event["src_endpoint"] = src
    if account.get("user_agent"):
        event["http_request"] = {"user_agent": str(account["user_agent"])}
    return event


# A refused policy change carries its diagnostics three times; a generated file can have thousands of them, and a
# record must stay far below the outbox's record limit. The first ones say what is wrong; the rest are counted.
MAX_DIAGNOSTICS = 50
MAX_DIAGNOSTIC_CHARS = 500


def _capped_diagnostics(diagnostics: list[Any]) -> tuple[list[str], int]:
    """The first MAX_DIAGNOSTICS diagnostics, each cut to MAX_DIAGNOSTIC_CHARS, and how many more there were."""
    kept = []
    for d in diagnostics[:MAX_DIAGNOSTICS]:
        text = str(d)
        kept.append(text if len(text) <= MAX_DIAGNOSTIC_CHARS else text[:MAX_DIAGNOSTIC_CHARS - 1] + "…")
    return kept, max(0, len(diagnostics) - MAX_DIAGNOSTICS)


def policy_rejected(*, event_id: str, directory: str, diagnostics: list[str], instance: str,
                    product_version: str, now: float) -> dict:
    """A refused (invalid) policy change, as a Detection Finding: the control rejected the change."""
    now_ms = int(now * 1000)
    diags, omitted = _capped_diagnostics(list(diagnostics))
    title = "Invalid policy change refused"
    desc = "; ".join(diags) + (f"; ... and {omitted} more" if omitted else "")
    return {
        **_classified(2004, 1, "Create", 3, now_ms),
        "message": f"{title} in {directory}: {diags[0] if diags else 'invalid'}",
        "status_id": 1, "status": "New",
        "action_id": 2, "action": ACTION[2],
        "disposition_id": 25, "disposition": DISPOSITION[25],
        "is_alert": True,
        "metadata": _metadata(event_id, str(uuid.uuid5(CORRELATION_NS, f"policies:{directory}")), product_version,
                              instance, now_ms, ["security_control"]),
        "finding_info": {"uid": event_id, "title": title, "desc": desc or title,
                         "types": ["ztgate/policy_rejected"], "created_time": now_ms,
                         "analytic": {"name": "policy-validation", "uid": "ztgate.policy.validation", "type_id": 1,
                                      "type": "Rule"}},
        "policy": {"name": directory, "uid": directory, "desc": title},
        "evidences": [{"name": "policy_change", "data": {"directory": directory, "diagnostics": diags,
                                                          "diagnostics_omitted": omitted}}],
        "unmapped": {"ztgate": {"instance": instance, "directory": directory, "diagnostics": diags,
                                "diagnostics_omitted": omitted}},
    }
