"""Each live session's scorer, and the policy decision that follows every update.

    events from capture (sensor, Guacamole, RFB, terminal, TCP_INFO)
        -> scoring.SessionScorer.update()          an Assessment: risk, signals, evidence
        -> policies.PolicySet.evaluate(context)    a Decision: allow | step_up | restrict | terminate
        -> gateway.enforce.Enforcer.apply()        state change, connections cut, security event

One process scores each session, its owner (gateway/ownership.py: a lease in a shared store); the others forward
what they observe of the session to it, and it takes that in as if seen here (`observe` -> `_apply`). The owner's
latest assessment is written to the store (throttled) so that every process, the admin API and the CLI can show it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

import scoring
from scoring.profile import learnable
from scoring.events import MAX_BATCH, Kind, Source, concat, empty, make_batch, sanitize
from scoring.signals import Assessment

from .access import Outcome, Verdict
from .ownership import Ownership, unwire
from .store import SessionRecord, StoreUnavailable

if TYPE_CHECKING:
    from .runtime import Gateway

log = logging.getLogger("ztgate.monitor")

_PERSIST_EVERY = 1.0  # seconds between assessment writes per session
_ENROL_MAX_EVENTS = 20_000  # bound on the enrolment buffer of one session
_FLUSH_AFTER = 0.1  # seconds input waits to be scored with what follows it
# events one session may queue for one flush (a few scorer updates of MAX_BATCH); a person produces a few hundred in
# 100 ms at most, so the excess is a flood, dropped and counted rather than scored at any CPU cost
_PENDING_MAX_EVENTS = 4 * MAX_BATCH
# A profile that could not be read because the store was down is read again on a later input flush: first after
# this long, then after twice as long each time the store is still down, up to _PROFILE_RETRY_MAX. Input flushes
# come every 100 ms; without the backoff every one of every such session would knock on a store that is down.
_PROFILE_RETRY_FIRST = 5.0
_PROFILE_RETRY_MAX = 60.0


@dataclass
class ProfileRetry:
    """The user's profile is unknown because the store was down when the session started: read it again when `due`
    (monitor clock, seconds) has passed, then wait `delay` before the next attempt."""

    due: float
    delay: float = _PROFILE_RETRY_FIRST

    def postpone(self, now: float) -> None:
        self.delay = min(self.delay * 2.0, _PROFILE_RETRY_MAX)
        self.due = now + self.delay


@dataclass
class LiveSession:
    sid: str
    user: str
    scorer: Any  # scoring.SessionScorer
    profile: Any  # scoring.Profile | None
    integrity: Any  # gateway.sensor.integrity.SensorIntegrity | None
    # False when the store could not say whether the user has a profile (down, or the stored one does not load):
    # the session is scored without one, but neither enrols a new profile (it would replace the real one) nor learns
    learning: bool = True
    # set while the profile is unknown because the store was down (not when it is unreadable: that needs an admin)
    profile_retry: ProfileRetry | None = None
    # this session's streams whose input stopped being parsed here since its last passed step-up (their input is not
    # scored); of those, the ones stopped only by a well-formed message over a parser size bound
    opaque_streams: int = 0
    opaque_streams_oversized: int = 0
    assessment: Assessment | None = None
    last_persist: float = 0.0
    enrol: list[np.ndarray] = field(default_factory=list)
    enrol_events: int = 0
    enrol_keys: int = 0
    pages: dict[str, float] = field(default_factory=dict)
    state_stored: bool = False  # the scorer's state in the store is current (shared stores only)
    last_input: float = field(default_factory=time.monotonic)  # input reached this scorer (sweep_ended)


class Monitor:
    def __init__(self, gw: "Gateway") -> None:
        self.gw = gw
        self._live: dict[str, LiveSession] = {}
        self._pending: dict[str, list[np.ndarray]] = {}
        self._pending_events: dict[str, int] = {}
        self._flushing: set[str] = set()
        self._errors_logged: dict[str, float] = {}  # "policy/rule" -> when its last runtime error was logged
        self.clock = time.monotonic  # when profile reads are retried (tests set their own)
        self.ownership = Ownership(gw)
        self._opening: dict[str, asyncio.Future] = {}
        self._ended: dict[str, tuple[LiveSession, float]] = {}  # owner: ended sessions a forwarded clean end may teach

    # ------------------------------------------------------------------ session lifecycle

    async def live(self, sid: str) -> LiveSession | None:
        """The session's scoring state if this process scores it (None if another process does, or none)."""
        target = await self.route(sid)
        return target if isinstance(target, LiveSession) else None

    async def route(self, sid: str) -> LiveSession | str | None:
        """Where the session's input goes: its LiveSession if this process scores it, else the id of the process
        that does, or None (no such live session). The first call for a session claims it (shared stores)."""
        entry = self._live.get(sid)
        if entry is not None:
            return entry
        owner = self.ownership.remote_owner(sid)
        if owner is not None:
            return owner
        opening = self._opening.get(sid)
        if opening is None:  # one claim at a time per session: concurrent first inputs wait for the same answer
            opening = self._opening[sid] = asyncio.ensure_future(self._open(sid))
            opening.add_done_callback(lambda _f: self._opening.pop(sid, None))
        return await asyncio.shield(opening)

    async def _open(self, sid: str) -> LiveSession | str | None:
        try:
            record = await self.gw.sessions.get(sid)
        except StoreUnavailable:
            return None
        if record is None or record.terminated:
            return None
        state = None
        if self.ownership.shared:
            try:
                mine, state = await self.ownership.claim(sid)
            except StoreUnavailable:
                mine = True  # scored here meanwhile; the heartbeat takes the lease (or gives the session up) later
            if not mine:
                return self.ownership.remote_owner(sid)
            entry = self._live.get(sid)
            if entry is not None:
                return entry
        profile = None
        learning = True  # only while the store has said definitively what the user's profile is (or that there is none)
        retry = None
        try:
            blob = await self.gw.store.get_profile(record.sub)
            if blob is not None:
                profile = scoring.Profile.from_bytes(blob)
        except StoreUnavailable:
            learning = False
            retry = ProfileRetry(due=self.clock() + _PROFILE_RETRY_FIRST)
            log.warning("profile of %s unavailable (store down): scoring session %s with population baselines, "
                        "without enrolment or learning, until the store answers", record.sub, sid)
        except Exception as exc:  # a corrupt or old profile must not stop scoring
            learning = False
            log.error("profile of %s unreadable (%s): scoring session %s with population baselines, without "
                      "enrolment or learning (reset or re-import the profile)", record.sub, exc, sid)
        expected = self._expectations(record)
        scorer = self._restored(sid, state, profile) if state else None
        if scorer is None:
            scorer = scoring.SessionScorer(profile, expected_rtt_ms=expected)
        entry = LiveSession(sid=sid, user=record.sub, scorer=scorer, profile=profile,
                            integrity=self.gw.new_integrity(), learning=learning, profile_retry=retry)
        if state:
            # taken over from a process that scored it before: what its sensor said there is unknown here
            entry.assessment, entry.state_stored = scorer.assess(), True
            if entry.integrity is not None:
                entry.integrity.rebase(time.time(), taken_over=True)
        self._live[sid] = entry
        self.gw.telemetry.gauge("ztgate_scored_sessions", len(self._live))
        return entry

    def _expectations(self, record: SessionRecord) -> float | None:
        try:
            exp = self.gw.policies.current.expectations(self.context(record, None))
            return getattr(exp, "rtt_budget_ms", None)
        except Exception:
            return None

    def _restored(self, sid: str, state: bytes, profile: Any) -> Any:
        try:
            scorer = scoring.SessionScorer.from_bytes(state, profile)
        except ValueError as exc:
            log.error("session %s: the scorer state its previous owner stored does not load (%s); scoring afresh",
                      sid, exc)
            return None
        log.info("session %s: took over its scoring (its previous owner's lease lapsed), evidence restored", sid)
        return scorer

    def entry(self, sid: str) -> LiveSession | None:
        """The session's live scoring state in this process, if it has one."""
        return self._live.get(sid)

    def is_live(self, sid: str) -> bool:
        """Scored: here, or by another process this one knows of (asked within the last few seconds)."""
        return sid in self._live or self.ownership.remote_owner(sid) is not None

    def scored_on(self, sid: str) -> str | None:
        """The process that scores the session, as far as this one knows (shared stores)."""
        if sid in self._live:
            return self.ownership.me
        return self.ownership.remote_owner(sid)

    async def start_session(self, sid: str) -> None:
        if await self.live(sid) is not None:
            await self.evaluate(sid)

    async def end(self, sid: str, *, clean: bool) -> None:
        """The session is over: learn from it if nothing was raised, then forget it. A process that does not score
        it hands a clean end on to the one that does (only that one has what to learn from)."""
        owner = self.ownership.remote_owner(sid)
        self.ownership.forget(sid)
        entry = self._live.pop(sid, None)
        if entry is None:
            ended = self._ended.pop(sid, None) if clean else None
            if ended is not None:  # ended here by the termination broadcast; the clean end came after it
                await self._learn(ended[0])
            elif clean and owner is not None:
                self.ownership.forward(owner, {"sid": sid, "k": "end", "t": time.time()})
            return
        if self.ownership.shared:
            self._remember_ended(entry)
            await self.ownership.release(sid, None)
        if clean:
            self._ended.pop(sid, None)
            await self._learn(entry)

    async def sweep_ended(self) -> int:
        """Housekeeping: sessions scored here that ended without a sign-out or a termination (gone from the store,
        past their max lifetime, or idle past session.idle_timeout with no input and no open connection here) are
        ended here, learned from like a sign-out when no decision was ever taken against them. Most users close the
        browser rather than sign out: without this their sessions never taught the profile, and each kept a scorer
        (~68 KB) for the life of the process. Returns how many were ended."""
        now, quiet = time.time(), time.monotonic() - self.gw.config.session.idle_timeout
        ended = 0
        for sid in list(self._live):
            entry = self._live.get(sid)
            if entry is None:
                continue
            try:
                record = await self.gw.sessions.get(sid)
            except StoreUnavailable:
                return ended  # cannot tell an ended session from a live one: next time
            idle = (record is not None and self.gw.sessions.idle_expired(record) and entry.last_input < quiet
                    and not self.gw.connections.client_ids(sid))
            if record is not None and not record.terminated and not idle and not (record.expires and record.expires <= now):
                continue
            # a terminated session was ended by its termination (its broadcast); a vanished one cannot show its decisions
            await self.end(sid, clean=record is not None and not record.terminated and not record.decision)
            ended += 1
        return ended

    def _remember_ended(self, entry: LiveSession) -> None:
        now = time.monotonic()
        for sid in [s for s, (_, t) in self._ended.items() if now - t > 60.0] or ():
            del self._ended[sid]
        if len(self._ended) < 1000:
            self._ended[entry.sid] = (entry, now)

    async def reset_evidence(self, sid: str) -> None:
        """After a successful step-up: the evidence that caused it is answered; scoring starts afresh (broadcast to
        every process; the one that scores the session acts)."""
        entry = self._live.get(sid)
        if entry is not None:
            entry.scorer.reset_evidence()
            # the person who passed it answers for the unparsed streams too (those still open were cut while the
            # step-up was pending, as soon as anything crossed them: an opaque stream cannot be held)
            entry.opaque_streams = entry.opaque_streams_oversized = 0
            # and for what the sensor integrity check found (a password manager's fill is typed text without keys)
            if entry.integrity is not None:
                entry.integrity.rebase(time.time())
            entry.assessment = entry.scorer.update(empty(0))
            entry.last_persist = 0.0
            entry.state_stored = False
            await self._persist(entry)

    async def heartbeat(self) -> None:
        """The owner's, every few seconds (shared stores): renews the leases of the sessions scored here, stores the
        scorer states that changed, and gives up the sessions another process has taken or that are gone."""
        sids = list(self._live)
        if not sids:
            return
        try:
            verdicts = await self.ownership.renew(sids)
        except StoreUnavailable:
            return
        states: dict[str, bytes] = {}
        for sid, verdict in zip(sids, verdicts, strict=True):
            entry = self._live.get(sid)
            if entry is None:
                continue
            if verdict == 1 and not entry.state_stored:
                states[sid] = entry.scorer.to_bytes()
                entry.state_stored = True
            elif verdict == 0:
                log.warning("session %s is scored by another process now (this one's lease lapsed): giving it up", sid)
                del self._live[sid]
            elif verdict < 0:
                del self._live[sid]  # expired or deleted: nothing will come for it
        if states:
            try:
                await self.ownership.store_states(states)
            except StoreUnavailable:
                for sid in states:
                    if sid in self._live:
                        self._live[sid].state_stored = False

    async def release_all(self) -> None:
        """Stopping: the sessions scored here go to whichever process next sees them, with their scorers' state."""
        if not self.ownership.shared:
            return
        for sid, entry in list(self._live.items()):
            await self.ownership.release(sid, entry.scorer.to_bytes())
        self._live.clear()

    # ------------------------------------------------------------------ input

    def submit(self, sid: str, batch: np.ndarray) -> None:
        """Queues input for the session's scorer; flushed every ~100 ms so that a burst of small messages costs
        one scorer update and one policy evaluation, not one per message."""
        queued = self._pending_events.get(sid, 0)
        room = _PENDING_MAX_EVENTS - queued
        if len(batch) > room:
            self.gw.telemetry.count("ztgate_events_overflow_total", value=len(batch) - max(room, 0))
            batch = batch[: max(room, 0)]
        if len(batch):
            self._pending.setdefault(sid, []).append(batch)
            self._pending_events[sid] = queued + len(batch)
        if sid not in self._flushing:
            self._flushing.add(sid)
            self.gw.spawn(self._flush_later(sid), name="ztgate-score-flush")

    async def _flush_later(self, sid: str) -> None:
        await asyncio.sleep(_FLUSH_AFTER)
        self._flushing.discard(sid)
        batches = self._pending.pop(sid, [])
        self._pending_events.pop(sid, None)
        if batches:
            await self.ingest(sid, concat(batches))

    async def ingest(self, sid: str, batch: np.ndarray) -> Assessment | None:
        if len(batch) == 0:
            return None
        with self.gw.telemetry.tracing.root("ztgate.score", {"ztgate.sid": sid}):
            return await self._ingest(sid, batch)

    async def _ingest(self, sid: str, batch: np.ndarray) -> Assessment | None:
        entry = await self.route(sid)
        if isinstance(entry, str):  # another process scores the session
            self.ownership.forward(entry, {"sid": sid, "k": "events", "t": time.time(), "events": batch})
            return None
        if entry is None:
            return None
        entry.last_input = time.monotonic()
        adopted = entry.profile_retry is not None and await self._retry_profile(entry)
        clean, dropped = sanitize(batch, now_ms=time.time() * 1000.0)
        if dropped:
            self.gw.telemetry.count("ztgate_events_dropped_total", value=dropped)
        if len(clean) == 0:
            if adopted:  # what the profile judged of the typing so far must reach the policies now
                await self.evaluate(sid)
            return entry.assessment
        # the scorer takes at most MAX_BATCH events per update (a flush can hold more): in order, each chunk decided
        for start in range(0, len(clean), MAX_BATCH):
            chunk = clean[start : start + MAX_BATCH]
            started = time.perf_counter()
            refused_before = entry.scorer.dropped_events
            entry.assessment = entry.scorer.update(chunk)
            self.gw.telemetry.scored(sid, chunk, entry.assessment, time.perf_counter() - started)
            refused = entry.scorer.dropped_events - refused_before
            if refused and entry.integrity is not None and entry.scorer.key_source == Source.SENSOR:
                # sensor inputs the scorer would not take (stamped before input it already had): a sensor's own
                # batches race by milliseconds at most, so repeated refusals mean its clock was set to blind us
                entry.integrity.inputs_refused(refused, time.time())
            if entry.profile is None and entry.learning and not entry.scorer.flagged:
                self._collect_enrolment(entry, chunk)
            entry.state_stored = False
            await self.evaluate(sid)
        return entry.assessment

    async def stream_opaque(self, sid: str, *, oversized: bool) -> None:
        """One of the session's streams stopped being parsed: its input is no longer scored. The policies hear of it
        now (`session.opaque_streams`), not at the session's next input: the stream that would carry that input is
        the one nobody reads any more. `oversized`: stopped only by a well-formed message over a parser size bound."""
        entry = await self.route(sid)
        if isinstance(entry, str):
            self.ownership.forward(entry, {"sid": sid, "k": "opaque", "t": time.time(), "oversized": oversized})
            return
        if entry is None:
            return
        entry.opaque_streams += 1
        entry.opaque_streams_oversized += int(oversized)
        await self.evaluate(sid)

    def net_sample(self, sid: str, rtt_ms: float, rttvar_ms: float) -> None:
        """A kernel TCP RTT sample of one of the session's client connections."""
        now = time.time() * 1000.0
        batch = make_batch([now], now, Kind.NET, source=Source.GATEWAY, value=rtt_ms, y=rttvar_ms)
        self.submit(sid, batch)

    def observe_request(self, sid: str, method: str, content_type: str, body: bytes | None) -> None:
        """Sensor integrity: requests keep coming; submissions carry typed text (counted, never read)."""
        entry = self._live.get(sid)
        if entry is not None and entry.integrity is None:
            return
        if entry is None and not self.ownership.shared:
            return  # one process: the session is not scored (yet)
        typed = count_typed_fields(content_type, body) if method in ("POST", "PUT", "PATCH") and body else 0
        self.observe(sid, {"sid": sid, "k": "request", "t": time.time(), "typed": typed})

    # ------------------------------------------------------------------ observations, from here or forwarded

    def observe(self, sid: str, observation: dict) -> None:
        """Something seen of the session (gateway Unix time "t"): taken in here if this process scores it, else
        forwarded to the process that does. A process that does not know yet asks first (shared stores; one
        process has every session's scoring state already, or there is none to observe for)."""
        target = self._live.get(sid) or self.ownership.remote_owner(sid)
        if isinstance(target, LiveSession):
            self._apply(target, observation)
        elif target is not None:
            self.ownership.forward(target, observation)
        elif self.ownership.shared:
            self.gw.spawn(self.deliver(sid, observation), name="ztgate-observe")

    async def deliver(self, sid: str, observation: dict) -> bool:
        """observe(), awaiting the answer to whether this process scores the session. False if the observation
        was not taken in here (forwarded, or no live session): a sensor batch's events then were not submitted."""
        target = await self.route(sid)
        if isinstance(target, LiveSession):
            return self._apply(target, observation)
        if target is not None:
            self.ownership.forward(target, observation)
        return False

    def _apply(self, entry: LiveSession, obs: dict) -> bool:
        """Takes one observation in. Returns False for a replayed sensor batch (its events are not submitted)."""
        kind, t, integrity, sid = obs["k"], obs["t"], entry.integrity, entry.sid
        events = obs.get("events")
        if kind == "sensor":
            if integrity is not None:
                replays = integrity.counts["seq_replays"]
                integrity.batch(str(obs["page"]), int(obs["seq"]), events, t, time_origin=obs.get("origin"),
                                dropped=int(obs.get("dropped", 0)), untrusted=int(obs.get("untrusted", 0)))
                if integrity.counts["seq_replays"] > replays:
                    return False  # a replayed batch is evidence of tampering, not of typing
        elif integrity is None:
            pass
        elif kind == "request":
            integrity.request(t)
            if obs.get("typed"):
                integrity.submission(None, int(obs["typed"]), t)
        elif kind == "page":
            integrity.page_served(str(obs["page"]), t)
        elif kind == "pong":
            integrity.pong(str(obs["page"]), t)
        elif kind == "token":
            integrity.token_rejected(str(obs.get("reason")), t)
        if kind in ("sensor", "pong", "events") and events is not None and len(events):
            self.submit(sid, events)
        return True

    async def receive(self, message: dict) -> None:
        """Observations another process forwarded: this process scores (or scored) their sessions."""
        for raw in message.get("m", ()):
            obs = unwire(raw)
            if obs is None:
                self.gw.telemetry.count("ztgate_forward_dropped_total", reason="malformed")
                continue
            sid, kind = obs["sid"], obs["k"]
            if kind == "end":  # a clean end (sign-out) seen by another process: learn here, never pass it on
                entry = self._live.get(sid) or (self._ended.get(sid) or (None,))[0]
                if entry is not None:
                    await self.end(sid, clean=True)
                continue
            target = self._live.get(sid) or await self.route(sid)
            if not isinstance(target, LiveSession):
                # not ours (any more): the sender asks again within a few seconds
                self.gw.telemetry.count("ztgate_forward_dropped_total", reason="not_owner")
            elif kind == "evaluate":
                self.gw.spawn(self._evaluate_fresh(sid), name="ztgate-evaluate")
            elif kind == "opaque":
                self.gw.spawn(self.stream_opaque(sid, oversized=bool(obs.get("oversized"))),
                              name="ztgate-stream-opaque")
            else:
                self._apply(target, obs)

    async def _evaluate_fresh(self, sid: str) -> None:
        # asked by the process that changed the record: read it from the store, not from a view the broadcast of
        # that change may not have reached yet
        try:
            record = await self.gw.store.get_session(sid)
        except StoreUnavailable:
            record = None
        await self.evaluate(sid, record)

    # ------------------------------------------------------------------ decisions

    def evaluates_requests(self, route: Any) -> bool:
        return self.gw.policies.current.uses_request(route.name)  # memoised by the policy set

    async def check_request(self, record: SessionRecord, route: Any, method: str, path: str, host: str,
                            scheme: str, content_type: str) -> Outcome:
        entry = self._live.get(record.sid)
        context = self.context(record, entry, request={"method": method, "path": path, "host": host,
                                                       "scheme": scheme, "content_type": content_type})
        decision = self.evaluate_policies(context)
        if int(decision.action) == 0:
            return Outcome(Verdict.FORWARD)
        record = await self.gw.enforcer.apply(record, decision, entry.assessment if entry else None)
        from .access import decide

        return decide(record, method, path)

    async def evaluate(self, sid: str, record: SessionRecord | None = None) -> None:
        entry = self._live.get(sid)
        if entry is None:
            owner = self.ownership.remote_owner(sid)
            if owner is not None:  # that process decides (e.g. on failed step-ups counted here)
                self.ownership.forward(owner, {"sid": sid, "k": "evaluate", "t": time.time()})
            return
        record = record or self.gw.sessions.cached(sid)
        if record is None:
            try:
                record = await self.gw.sessions.get(sid)
            except StoreUnavailable:
                return
        if entry is None or record is None or record.terminated:
            return
        context = self.context(record, entry)
        decision = self.evaluate_policies(context)
        self.gw.telemetry.observe("ztgate_risk", context["risk"])
        if decision.shadow_decisions:
            for shadow in decision.shadow_decisions:
                await self.gw.enforcer.apply(record, shadow, entry.assessment)
        if int(decision.action) != 0:
            await self.gw.enforcer.apply(record, decision, entry.assessment)
        await self._persist(entry)

    def evaluate_policies(self, context: dict) -> Any:
        """The policies' decision. A rule whose condition fails at run time does not fire (documented fail-open):
        the admin must hear of it, so each such rule is counted and logged (at most once a minute per rule)."""
        decision = self.gw.policies.current.evaluate(context, near_misses=False)
        if decision.errors:
            now = time.monotonic()
            for error in decision.errors:
                rule = error.split(": ", 1)[0]
                self.gw.telemetry.count("ztgate_policy_errors_total", rule=rule)
                if now - self._errors_logged.get(rule, float("-inf")) >= 60.0:
                    self._errors_logged[rule] = now
                    log.warning("policy rule %s could not be evaluated and did not fire: %s", rule, error)
        return decision

    def context(self, record: SessionRecord, entry: LiveSession | None, request: dict | None = None) -> dict:
        now = time.time()
        assessment = entry.assessment if entry else None
        signals: dict[str, Any] = {}
        if assessment is not None:
            for name, s in assessment.signals.items():
                signals[name] = {"score": float(s.score), "sufficient": bool(s.sufficient),
                                 "details": {k: float(v) for k, v in s.details.items()},
                                 "evidence": {"keystrokes": s.evidence.keystrokes, "seconds": s.evidence.seconds,
                                              "samples": s.evidence.samples}}
        if entry is not None and entry.integrity is not None:
            s = entry.integrity.signal(now)
            signals["sensor"] = {"score": float(s.score), "sufficient": bool(s.sufficient),
                                 "details": {k: float(v) for k, v in s.details.items()},
                                 "evidence": {"keystrokes": s.evidence.keystrokes, "seconds": s.evidence.seconds,
                                              "samples": s.evidence.samples}}
        route = self.gw.route_named(record.route)
        ctx = {
            "signals": signals,
            "risk": float(assessment.risk) if assessment is not None else 0.0,
            "session": {
                "sid": record.sid, "state": record.state, "age_seconds": now - record.created,
                "idle_seconds": now - record.last_seen, "seconds_since_auth": now - record.auth_time,
                "acr": record.acr, "amr": list(record.amr), "route": record.route,
                "route_kind": route.kind if route else "http", "client_ip": record.client_ip,
                "user_agent": record.user_agent, "step_up_count": int(record.step_up.get("count", 0)),
                "step_up_failures": int(record.step_up.get("failures", 0)),
                "evidence_keystrokes": assessment.evidence.keystrokes if assessment else 0,
                "evidence_seconds": assessment.evidence.seconds if assessment else 0.0,
                "opaque_streams": entry.opaque_streams if entry else 0,
                "opaque_streams_oversized": entry.opaque_streams_oversized if entry else 0,
            },
            "user": {"name": record.sub, "email": record.email, "groups": list(record.groups), "site": record.site,
                     "country": record.country},
        }
        if request is not None:
            ctx["request"] = request
        return ctx

    async def _persist(self, entry: LiveSession) -> None:
        now = time.time()
        if entry.assessment is None or now - entry.last_persist < _PERSIST_EVERY:
            return
        entry.last_persist = now
        data = self._assessment_dict(entry, now)
        try:
            await self.gw.store.put_assessment(entry.sid, data, self.gw.config.session.max_lifetime)
        except StoreUnavailable:
            pass

    def _assessment_dict(self, entry: LiveSession, now: float) -> dict:
        data = entry.assessment.to_dict()
        if entry.integrity is not None:
            data["signals"]["sensor"] = entry.integrity.signal(now).to_dict()
        if self.ownership.shared:
            data["scored_on"] = self.ownership.me
        return data

    def assessment_of(self, sid: str) -> dict | None:
        """The assessment of a session this process scores (None otherwise: the store has the owner's)."""
        entry = self._live.get(sid)
        if entry is None or entry.assessment is None:
            return None
        return self._assessment_dict(entry, time.time())

    async def explain_context(self, record: SessionRecord) -> dict:
        """The policy context of a session as its scorer sees it: here, or as its owner last stored it."""
        entry = self._live.get(record.sid)
        context = self.context(record, entry)
        if entry is None:
            stored = await self.gw.store.get_assessment(record.sid) or {}
            context["risk"] = float(stored.get("risk", 0.0))
            for name, s in stored.get("signals", {}).items():
                context["signals"][name] = {"score": s.get("score", 0.0), "sufficient": s.get("sufficient", False),
                                            "details": s.get("details", {}), "evidence": s.get("evidence", {})}
            evidence = stored.get("evidence") or {}
            context["session"]["evidence_keystrokes"] = evidence.get("keystrokes", 0)
            context["session"]["evidence_seconds"] = evidence.get("seconds", 0.0)
        return context

    # ------------------------------------------------------------------ profiles

    async def _retry_profile(self, entry: LiveSession) -> bool:
        """Reads the profile again if its retry is due; True when the session's scorer now judges against it."""
        retry = entry.profile_retry
        now = self.clock()
        if retry is None or now < retry.due:
            return False
        retry.postpone(now)  # before the read: input flushed while it waits must not start a second one
        try:
            blob = await self.gw.store.get_profile(entry.user)
        except StoreUnavailable:
            return False
        entry.profile_retry = None
        if blob is None:
            # the store has now said there is none: enrolment may start, from the input that follows
            entry.learning = True
            log.info("store answered for %s: no typing profile; session %s may enrol one", entry.user, entry.sid)
            return False
        try:
            profile = scoring.Profile.from_bytes(blob)
        except Exception as exc:  # as at the start: scored without it, never overwritten
            log.error("profile of %s unreadable (%s): scoring session %s with population baselines, without "
                      "enrolment or learning (reset or re-import the profile)", entry.user, exc, entry.sid)
            return False
        self._adopt_profile(entry, profile)
        return True

    def _adopt_profile(self, entry: LiveSession, profile: Any) -> None:
        # The scorer takes the profile in place (scoring.SessionScorer.adopt_profile): a rebuilt scorer would have to
        # be fed the session's input again, which the monitor does not keep, and would lose what was flagged.
        unjudged = entry.scorer.adopt_profile(profile)
        entry.profile = profile
        # the store has answered, so learning is possible again, on the usual terms (unflagged, judged and calm);
        # typing it never judged against the profile must not train it
        entry.learning = unjudged == 0
        entry.assessment = entry.scorer.assess()
        entry.last_persist = 0.0
        not_judged = "" if entry.learning else f" ({unjudged} earlier observations were not: it will not train it)"
        log.info("profile of %s read after the store returned: session %s is scored against it from now on, with "
                 "its latest typing judged%s", entry.user, entry.sid, not_judged)

    def _collect_enrolment(self, entry: LiveSession, batch: np.ndarray) -> None:
        if entry.enrol_events >= _ENROL_MAX_EVENTS:
            return
        keep = batch[:_ENROL_MAX_EVENTS - entry.enrol_events]
        entry.enrol.append(keep)
        entry.enrol_events += len(keep)
        entry.enrol_keys += int(np.count_nonzero(keep["kind"] == Kind.KEY_DOWN))
        if entry.enrol_keys >= self.gw.config.scoring.enrol_keystrokes:
            # taken now, not in the task: input flushed before the task runs must not start a second enrolment
            batches, entry.enrol, entry.enrol_events = entry.enrol, [], _ENROL_MAX_EVENTS
            self.gw.spawn(self._enrol(entry, batches), name="ztgate-enrol")

    async def _enrol(self, entry: LiveSession, batches: list[np.ndarray]) -> None:
        try:
            profile = scoring.enrol_session(batches)
            # create, never replace: a profile enrolled by another session or imported by an admin since this
            # session started is the user's, and this session's typist has proved nothing against it
            if not await self.gw.store.create_profile(entry.user, profile.to_bytes()):
                log.warning("%s already has a typing profile: the one enrolled in session %s was discarded",
                            entry.user, entry.sid)
                return
            entry.profile = profile
            log.info("enrolled a typing profile for %s from %d keystrokes", entry.user, entry.enrol_keys)
        except StoreUnavailable:
            log.warning("could not store the new profile of %s: store unavailable", entry.user)
        except Exception:
            log.exception("enrolment of %s failed", entry.user)

    async def _learn(self, entry: LiveSession) -> None:
        if not self.gw.config.scoring.learn or not entry.learning or entry.profile is None or entry.scorer.flagged:
            return
        try:
            summary = entry.scorer.summary()
            if not learnable(summary):
                return  # nothing to learn: writing the old profile back could undo a reset or import meanwhile
            # into the profile as stored now, not as this session found it: another session of the user may have
            # ended (and learned) meanwhile, and an admin's reset stands
            blob = await self.gw.store.get_profile(entry.user)
            if not blob:
                return
            current = scoring.Profile.from_bytes(blob)
            await self.gw.store.put_profile(entry.user, scoring.learn(current, summary).to_bytes())
        except StoreUnavailable:
            pass
        except Exception:
            log.exception("learning from session %s failed", entry.sid)


def count_typed_fields(content_type: str, body: bytes) -> int:
    """How many fields of a form or JSON body carry text. Values are looked at for emptiness only."""
    ct = content_type.split(";", 1)[0].strip().lower()
    if len(body) > 1_000_000:
        return 1
    if ct == "application/x-www-form-urlencoded":
        from urllib.parse import parse_qsl

        try:
            pairs = parse_qsl(body.decode("latin-1"), keep_blank_values=True)
        except ValueError:
            return 0
        return sum(1 for k, v in pairs if v.strip() and k not in ("csrf", "_csrf", "csrfmiddlewaretoken"))
    if ct == "application/json" or ct.endswith("+json"):
        import json

        try:
            data = json.loads(body)
        except ValueError:
            return 0
        return _json_strings(data, 0)
    return 0


def _json_strings(node: Any, depth: int) -> int:
    if depth > 20:
        return 0
    if isinstance(node, str):
        return 1 if node.strip() and not node.isdigit() else 0
    if isinstance(node, dict):
        return sum(_json_strings(v, depth + 1) for v in node.values())
    if isinstance(node, list):
        return sum(_json_strings(v, depth + 1) for v in node[:1000])
    return 0

