"""Each live session's scorer, and the policy decision that follows every update.

    events from capture (sensor, Guacamole, RFB, terminal, TCP_INFO)
        -> scoring.SessionScorer.update()          an Assessment: risk, signals, evidence
        -> policies.PolicySet.evaluate(context)    a Decision: allow | step_up | restrict | terminate
        -> gateway.enforce.Enforcer.apply()        state change, connections cut, security event

Scorers live in the process that receives the session's input; their latest assessment is written to the store
(throttled) so that every process, the admin API and the CLI can show it.
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


class Monitor:
    def __init__(self, gw: "Gateway") -> None:
        self.gw = gw
        self._live: dict[str, LiveSession] = {}
        self._pending: dict[str, list[np.ndarray]] = {}
        self._pending_events: dict[str, int] = {}
        self._flushing: set[str] = set()
        self._errors_logged: dict[str, float] = {}  # "policy/rule" -> when its last runtime error was logged
        self.clock = time.monotonic  # when profile reads are retried (tests set their own)

    # ------------------------------------------------------------------ session lifecycle

    async def live(self, sid: str) -> LiveSession | None:
        entry = self._live.get(sid)
        if entry is not None:
            return entry
        try:
            record = await self.gw.sessions.get(sid)
        except StoreUnavailable:
            return None
        if record is None or record.terminated:
            return None
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
        scorer = scoring.SessionScorer(profile, expected_rtt_ms=expected)
        entry = LiveSession(sid=sid, user=record.sub, scorer=scorer, profile=profile,
                            integrity=self.gw.new_integrity(), learning=learning, profile_retry=retry)
        self._live[sid] = entry
        self.gw.telemetry.gauge("ztgate_scored_sessions", len(self._live))
        return entry

    def _expectations(self, record: SessionRecord) -> float | None:
        try:
            exp = self.gw.policies.current.expectations(self.context(record, None))
            return getattr(exp, "rtt_budget_ms", None)
        except Exception:
            return None

    def entry(self, sid: str) -> LiveSession | None:
        """The session's live scoring state in this process, if it has one."""
        return self._live.get(sid)

    def is_live(self, sid: str) -> bool:
        return sid in self._live

    async def start_session(self, sid: str) -> None:
        if await self.live(sid) is not None:
            await self.evaluate(sid)

    async def end(self, sid: str, *, clean: bool) -> None:
        """The session is over: learn from it if nothing was raised, then forget it."""
        entry = self._live.pop(sid, None)
        if entry is None:
            return
        if clean:
            await self._learn(entry)

    async def reset_evidence(self, sid: str) -> None:
        """After a successful step-up: the evidence that caused it is answered; scoring starts afresh."""
        entry = self._live.get(sid)
        if entry is not None:
            entry.scorer.reset_evidence()
            # the person who passed it answers for the unparsed streams too (those still open were cut while the
            # step-up was pending, as soon as anything crossed them: an opaque stream cannot be held)
            entry.opaque_streams = entry.opaque_streams_oversized = 0
            entry.assessment = entry.scorer.update(empty(0))
            entry.last_persist = 0.0
            await self._persist(entry)

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
        entry = await self.live(sid)
        if entry is None:
            return None
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
            await self.evaluate(sid)
        return entry.assessment

    async def stream_opaque(self, sid: str, *, oversized: bool) -> None:
        """One of the session's streams stopped being parsed: its input is no longer scored. The policies hear of it
        now (`session.opaque_streams`), not at the session's next input: the stream that would carry that input is
        the one nobody reads any more. `oversized`: stopped only by a well-formed message over a parser size bound."""
        entry = await self.live(sid)
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
        if entry is None or entry.integrity is None:
            return
        now = time.time()
        entry.integrity.request(now)
        if method in ("POST", "PUT", "PATCH") and body:
            typed = count_typed_fields(content_type, body)
            if typed:
                entry.integrity.submission(None, typed, now)

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

    async def evaluate(self, sid: str) -> None:
        entry = self._live.get(sid)
        record = self.gw.sessions.cached(sid)
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
        data = entry.assessment.to_dict()
        if entry.integrity is not None:
            data["signals"]["sensor"] = entry.integrity.signal(now).to_dict()
        try:
            await self.gw.store.put_assessment(entry.sid, data, self.gw.config.session.max_lifetime)
        except StoreUnavailable:
            pass

    def assessment_of(self, sid: str) -> dict | None:
        entry = self._live.get(sid)
        if entry is None or entry.assessment is None:
            return None
        data = entry.assessment.to_dict()
        if entry.integrity is not None:
            data["signals"]["sensor"] = entry.integrity.signal(time.time()).to_dict()
        return data

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

