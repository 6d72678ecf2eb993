"""Applies decisions: session state in the store (broadcast to every process), live connections cut, users
locked, security events emitted. Shadow decisions are reported and counted, never enforced."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from policies.durations import parse_duration

from .sessions import SIGNED_OUT
from .store import STATE_RANK, SessionRecord, SessionState, StoreUnavailable

if TYPE_CHECKING:
    from .runtime import Gateway

log = logging.getLogger("ztgate.enforce")

MAX_LOCK_SECONDS = 366 * 24 * 3600.0  # longer than any lock an admin would lift by hand anyway
_STATE_FOR = {"step_up": SessionState.STEP_UP_REQUIRED, "restrict": SessionState.RESTRICTED,
              "terminate": SessionState.TERMINATED}


class Enforcer:
    def __init__(self, gw: "Gateway") -> None:
        self.gw = gw
        self._reported: dict[tuple[str, str], float] = {}  # (sid, rule) -> when a shadow decision was last reported
        self.close_latencies: list[float] = []  # decision -> connections closed here, seconds (bench reads it)
        self._grace: set[str] = set()  # sessions with a step-up waiting out its grace period

    async def apply(self, record: SessionRecord, decision: Any, assessment: Any) -> SessionRecord:
        d = decision.to_dict()
        action = d["action"]
        if action == "allow":
            return record
        if d.get("shadow"):
            await self._report_shadow(record, d, assessment)
            return record
        target = _STATE_FOR[action]
        same_reason = record.state == target and record.decision.get("rule_id") == d.get("rule_id")
        if same_reason and target == SessionState.RESTRICTED:
            # the winning rule is unchanged, but another restrict rule may have joined it: its restrictions must
            # still be added (the decision's params are merged over every firing restrict rule)
            same_reason = _merge_restrictions(record.restrictions, d.get("params") or {}) == record.restrictions
        if STATE_RANK[SessionState(record.state)] > STATE_RANK[target] or same_reason:
            return record  # already at least this strict, for this reason
        if target == SessionState.STEP_UP_REQUIRED and record.sid in self._grace:
            return record  # decided and reported once; the step-up takes effect when its grace period ends
        d["decided_at"] = time.time()
        self.gw.telemetry.count("ztgate_decisions_total", action=action, rule=str(d.get("rule_id")), shadow="false")
        with self.gw.telemetry.tracing.decision(d, record.sid):
            log.warning("session %s (%s): %s by %s/%s: %s", record.sid, record.sub, action, d.get("policy_file"),
                        d.get("rule_id"), d.get("reason"))
            updated, enforced = await self._change_state(record, target, d)
            if enforced:
                await self._emit(updated or record, d, assessment)
        return updated or record

    async def _change_state(self, record: SessionRecord, target: SessionState,
                            d: dict) -> tuple[SessionRecord | None, bool]:
        """(the session as it is now or None, whether this decision took effect here and is to be reported). Not
        reported: a session found already as strict when written (another process, or an admin, got there first on
        a newer view), or already terminated (its end was reported once, by whoever ended it)."""
        sessions = self.gw.sessions
        reason = d.get("reason") or d.get("rule_id") or str(target)
        params = d.get("params") or {}
        try:
            if target == SessionState.TERMINATED:
                updated, ended = await sessions.terminate_once(record.sid, reason, decision=d)
                if not ended:
                    return updated, False
                lock_for = params.get("lock_user_for")
                if lock_for:
                    seconds = lock_for if isinstance(lock_for, (int, float)) else parse_duration(str(lock_for))
                    # a store refuses absurd expiries (Redis EX), and the lock would then never be applied
                    seconds = min(float(seconds), MAX_LOCK_SECONDS)
                    await self.gw.store.lock_user(record.sub, time.time() + seconds, reason)
                    await self._terminate_user_sessions(record.sub, f"user locked: {reason}")
                    await self.report_lock(record.to_dict(), reason)
                return updated, True
            if target == SessionState.STEP_UP_REQUIRED:
                derive = _step_up_fields(params, d)
                grace = float(params.get("grace") or 0)
                if grace > 0:
                    if record.sid not in self._grace:
                        self._grace.add(record.sid)
                        self.gw.spawn(self._later(grace, record.sid, derive, reason, d), name="ztgate-step-up-grace")
                    return record, True
                return await sessions.change_state(record.sid, target, reason, derive, decision=d)

            def merged(current: SessionRecord) -> dict:
                # onto the restrictions as they are when written: another process's restrictions stay
                return {"restrictions": _merge_restrictions(current.restrictions, params)}

            return await sessions.change_state(record.sid, target, reason, merged, decision=d)
        except StoreUnavailable:
            log.error("store unavailable while enforcing %s on %s: in force in this process now, written back when "
                      "the store returns", target, record.sid)
            if target == SessionState.TERMINATED:
                self.gw.connections.close_session(record.sid, reason)
            return None, True

    async def report_lock(self, account: dict, reason: str) -> None:
        """The security event of an account ztgate locked (a policy's lock_user_for, or failed sign-ins): `account`
        is shaped like a session (sub, email, name, groups, client_ip, user_agent)."""
        if self.gw.events is None:
            return
        try:
            await self.gw.events.emit_account_lock(account, locked=True, reason=reason, by="ztgate")
        except Exception:  # logged; the lock stands
            log.exception("could not record the security event of %s's lock", account.get("sub"))

    async def _later(self, grace: float, sid: str, derive, reason: str, d: dict) -> None:
        try:
            await asyncio.sleep(grace)
            await self.gw.sessions.set_state(sid, SessionState.STEP_UP_REQUIRED, reason, derive, decision=d)
        finally:
            self._grace.discard(sid)

    async def _terminate_user_sessions(self, user: str, reason: str) -> None:
        for other in await self.gw.sessions.list():
            if other.sub == user and not other.terminated:
                await self.gw.sessions.terminate(other.sid, reason)

    async def terminate(self, sid: str, reason: str, *, by: str) -> SessionRecord | None:
        """An admin's termination: same path as a policy's, so it is cut everywhere and reported. During a store
        outage it still takes effect here at once (tombstone, connections cut) and is written back on recovery."""
        return (await self.terminate_once(sid, reason, by=by))[0]

    async def terminate_once(self, sid: str, reason: str, *, by: str) -> tuple[SessionRecord | None, bool]:
        """terminate(), also saying whether this call ended the session: False when it had ended already (here, in
        the store, or on another process meanwhile), and then nothing is written or reported again: the record keeps
        why and when it ended, and its end has had its one Logoff event."""
        sessions = self.gw.sessions
        if sessions.is_revoked(sid):
            return sessions.get_cached(sid), False  # type: ignore[return-value]  # the tombstone's record
        d = {"action": "terminate", "params": {}, "policy_file": None, "policy_id": None, "rule_id": f"admin:{by}",
             "reason": reason, "shadow": False, "signals": {}, "decided_at": time.time()}
        try:
            record = await sessions.get(sid)
        except StoreUnavailable:
            record = sessions.cached(sid)  # may be None: an unknown sid is still revoked here, to be safe
        else:
            if record is None:
                return None, False
            if record.terminated:
                return record, False
        with self.gw.telemetry.tracing.decision(d, sid):
            try:
                updated, ended = await sessions.terminate_once(sid, reason, decision=d)
            except StoreUnavailable:
                # whether the outage showed on the read or only on the write, the answer is the same: terminated
                # here now (tombstone, connections cut), written back and broadcast when the store returns
                log.error("store unavailable: session %s terminated locally; written back when the store returns", sid)
                self.gw.connections.close_session(sid, reason)
                updated, ended = sessions.unsynced(sid), True
            if not ended:
                return updated, False  # ended meanwhile, by another process or request
            # the event goes to the outbox either way (a Redis outbox spools it locally during the outage); a sid
            # this process has never seen is revoked all the same, but there is no session to report on
            known = updated if updated is not None and updated.sub else record
            if known is not None:
                await self._emit(known, d, self.gw.monitor.assessment_of(sid))
        return updated, True

    async def require_step_up(self, sid: str, reason: str, *, by: str, method: str = "totp") -> SessionRecord | None:
        record = await self.gw.sessions.get(sid)
        if record is None or record.terminated:
            return record
        d = {"action": "step_up", "params": {"method": method}, "policy_file": None, "policy_id": None,
             "rule_id": f"admin:{by}", "reason": reason, "shadow": False, "signals": {}, "decided_at": time.time()}
        with self.gw.telemetry.tracing.decision(d, sid):
            updated, enforced = await self._change_state(record, SessionState.STEP_UP_REQUIRED, d)
            if enforced:
                await self._emit(updated or record, d, self.gw.monitor.assessment_of(sid))
        return updated

    async def on_session_change(self, record: SessionRecord, previous: SessionRecord | None) -> None:
        """Runs in every process for every change: cut this process's connections of a terminated session."""
        if record.terminated and (previous is None or not previous.terminated):
            cut = self.gw.connections.close_session(record.sid, record.state_reason or "terminated")
            decided = record.decision.get("decided_at") if record.decision else None
            if decided:
                latency = max(0.0, time.time() - float(decided))
                self.close_latencies.append(latency)
                del self.close_latencies[:-10_000]
                self.gw.telemetry.observe("ztgate_termination_close_seconds", latency)
            if cut:
                log.info("closed %d connection(s) of terminated session %s", cut, record.sid)
            # learned from only when the user signed out of a session nothing was ever raised against, never after a
            # termination for cause. Every process hears of the end here, wherever the sign-out was: the one that
            # scores the session learns (Monitor.end; it ended its scorer as for cause before, and nothing learned)
            await self.gw.monitor.end(record.sid, clean=ended_cleanly(record))

    async def _report_shadow(self, record: SessionRecord, d: dict, assessment: Any) -> None:
        key = (record.sid, f"{d.get('policy_id')}/{d.get('rule_id')}")
        now = time.time()
        self.gw.telemetry.count("ztgate_decisions_total", action=d["action"], rule=str(d.get("rule_id")),
                                shadow="true")
        if now - self._reported.get(key, 0.0) < 300:  # once per rule and session per 5 minutes
            return
        self._reported[key] = now
        if len(self._reported) > 100_000:
            self._reported.clear()
        log.info("shadow decision for %s: %s by %s", record.sid, d["action"], d.get("rule_id"))
        await self._emit(record, d, assessment)

    async def _emit(self, record: SessionRecord, d: dict, assessment: Any) -> None:
        events = self.gw.events
        if events is None:
            return
        data = assessment.to_dict() if hasattr(assessment, "to_dict") else assessment
        route = self.gw.route_named(record.route)
        try:
            await events.emit_decision(d, record.to_dict(), data, route.upstream.url if route else None)
            if d["action"] == "terminate" and not d.get("shadow"):
                await events.emit_logoff(record.to_dict(), d.get("reason") or "terminated")
        except Exception:
            log.exception("could not record the security event for %s", record.sid)


def ended_cleanly(record: SessionRecord) -> bool:
    """Whether a terminated session ended as one to learn from: signed out by its user, and no decision (step-up,
    restriction, termination: each is kept in `decision`) ever taken against it."""
    return record.terminated and record.state_reason == SIGNED_OUT and not record.decision


def _step_up_fields(params: dict, d: dict):
    """The step-up of decision `d`, onto the session's step-up counters as they are when it is written."""
    requested_at = time.time()

    def fields(current: SessionRecord) -> dict:
        return {"step_up": {**current.step_up, "method": params.get("method", "totp"), "max_age": params.get("max_age"),
                            "acr_values": params.get("acr_values"), "requested_at": requested_at,
                            "rule_id": d.get("rule_id"), "count": int(current.step_up.get("count", 0))}}

    return fields


def _merge_restrictions(current: dict, params: dict) -> dict:
    merged = dict(current)
    for key, value in params.items():
        if isinstance(value, list):
            merged[key] = sorted(set(merged.get(key, [])) | set(value))
        elif isinstance(value, bool):
            merged[key] = merged.get(key, False) or value
        else:
            merged[key] = value
    return merged
