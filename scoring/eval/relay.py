"""`ztgate eval relay`: genuine Aalto typing and genuine Balabit pointing passed through explicit relay models.

Aalto has no stimuli and Balabit no screens, so sessions are built around the recorded input (the model, stated in
docs/results.md). A session is a run of tasks; each task is
- `clicks` pointer steps: a display change (FIELD_APPEARED / DIALOG / PAGE_READY in turn), the pointer starts to move
  after a local reaction time (lognormal, per-user median drawn from lognormal(ln 450 ms, 0.2), within-user sd 0.35
  in log: modelled), then one *recorded* Balabit click action of the paired user follows (its samples and its press,
  with their real timing); the application answers the click 300-1000 ms later with the next display change;
- then a sentence: it appears (PAGE_READY), its first key follows a local reaction time (same model), the recorded
  Aalto keystrokes follow; every key-down is echoed 8 ms later (ECHO) and a BackSpace after a non-BackSpace key is
  a correction with its recorded interval; 1.5-3.5 s to the next task.
Relay models (the operator sees the endpoint's screen one round trip plus a frame pipeline late; the pipeline is
U(25, 45) ms per reaction, measured on a real VNC chain, shared/notes/detection.md): every reaction (move onset,
sentence start, typo correction) and all that follows it is delayed by RTT + pipeline; the press that ends a pointer
approach is delayed by the same loop latency after the pointer's arrival with probability `confirm` (the operator
clicks once they *see* the pointer on the target: MacKenzie & Ware 1993 put lag into the closed-loop phase of
pointing; the share of clicks made that way under lag is modelled, not measured). Optional jitter (normal, sd per
event) and a remote-control tool's batching (inputs released on a 50 ms frame grid).
Line-item form (the `ztgate scenario` demo form's workflow, keyboard only): each sentence ends with Enter, the app
answers 400-900 ms later with a new focused field (FIELD_APPEARED), and the person starts the next sentence after a
local reaction time (same model) - or, in a share `blind` of sentences, without waiting for the field: the first key
comes 300-1200 ms after Enter whatever the screen shows (typing ahead or a blind start; modelled, a stress case for
the no-reaction evidence, not a measured rate). Enter follows the sentence's last key after 200-700 ms.
Automation models: a fixed-delay script (120 ms between keys, 30 ms holds, +-1 ms); replay of the user's recorded
enrolment sentences with Gaussian noise (sd 2 ms) on every timestamp, each started 400 ms after PAGE_READY (a script
that waits a human-looking time); and replay of the user's own test sentences (sd 3 ms noise) in the line-item form,
started 20-60 ms after the new field appears and Enter 50 ms after the last key, as `ztgate scenario script --mode
replay` does (a script that types as soon as the field exists).
Users: Aalto users split into training and test halves (split seed); Balabit users split in two by a seeded
permutation; population baselines come from training users of both only. Each Aalto test user is paired with a
Balabit test user and enrols from 5 locally typed sentences with 8 of the paired user's *training-file* clicks each
(the profile a user has after a few sessions); test sessions use clicks from that user's *test-file* sessions
labelled legal. The detectors never read any model parameter.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from .. import features as F
from ..events import Kind, Source, Stimulus, concat, empty
from ..keys import KeyClass
from ..enrolment import enrol
from ..scorer import SessionScorer
from . import balabit
from .aalto import Sentence, load_users, split_users
from .common import SPLIT_SEED, Progress, build_population

ENROL_SENTENCES = 5
ENROL_CLICKS_PER_SENTENCE = 8
EPOCH0 = 1.7e12
# the browser sensor's flush rule (gateway/sensor/sensor.js FLUSH_MS, FLUSH_EVENTS): a batch leaves 250 ms after
# its first buffered event, or at 50 events. Scoring in batches of that shape matters: detectors that keep a
# per-session extreme (the automation detector's lowest window CV) see a window at every batch end, so coarser
# batches (50 events, 3-4 s of typing) hid a genuine false alarm that the gateway showed
FLUSH_MS = 250.0
FLUSH_EVENTS = 50
SEED = 11
ECHO_MS = 8.0
PROMPT_MEDIAN_MS = 450.0
PROMPT_BETWEEN_SD = 0.2
PROMPT_WITHIN_SD = 0.35
BALABIT_SESSIONS = 8  # per user and folder: enough clicks, and the files load in seconds
_PROMPTS = (Stimulus.FIELD_APPEARED, Stimulus.DIALOG, Stimulus.PAGE_READY)


@dataclass(frozen=True, slots=True)
class Condition:
    name: str
    kind: str  # genuine | relay | automation
    added_rtt_ms: float = 0.0
    jitter_ms: float = 0.0
    batching_ms: float = 0.0
    automation: str = ""
    clicks: int = 0  # pointer steps per task (0: keyboard only)
    confirm: float = 1.0  # share of clicks made after seeing the pointer arrive
    no_profile: bool = False  # also score the session without a profile
    form: bool = False  # the line-item form workflow instead of tasks
    blind: float = 0.0  # form: share of sentences started without waiting for the field


WORKFLOWS = {0: "keyboard only", 1: "1 click per task", 4: "4 clicks per task", 8: "8 clicks per task"}
CONDITIONS = [
    *(Condition(f"{WORKFLOWS[0]}: {name}", kind, rtt, clicks=0, no_profile=rtt == 0) for name, kind, rtt in (
        ("local", "genuine", 0), ("relay 30 ms", "relay", 30), ("relay 60 ms", "relay", 60),
        ("relay 110 ms", "relay", 110), ("relay 200 ms", "relay", 200))),
    *(Condition(f"{WORKFLOWS[1]}: {name}", kind, rtt, clicks=1, no_profile=rtt in (0, 110)) for name, kind, rtt in (
        ("local", "genuine", 0), ("relay 30 ms", "relay", 30), ("relay 60 ms", "relay", 60),
        ("relay 110 ms", "relay", 110), ("relay 200 ms", "relay", 200))),
    Condition(f"{WORKFLOWS[1]}: relay 110 ms, jitter sd 15", "relay", 110, jitter_ms=15, clicks=1),
    Condition(f"{WORKFLOWS[1]}: relay 110 ms, 50 ms batching", "relay", 110, batching_ms=50, clicks=1),
    *(Condition(f"{WORKFLOWS[4]}: {name}", kind, rtt, clicks=4, no_profile=rtt == 0) for name, kind, rtt in (
        ("local", "genuine", 0), ("relay 60 ms", "relay", 60), ("relay 110 ms", "relay", 110))),
    Condition(f"{WORKFLOWS[4]}: relay 110 ms, half the clicks confirmed", "relay", 110, clicks=4, confirm=0.5),
    *(Condition(f"{WORKFLOWS[8]}: {name}", kind, rtt, clicks=8) for name, kind, rtt in (
        ("local", "genuine", 0), ("relay 110 ms", "relay", 110))),
    Condition("fixed-delay script", "automation", automation="fixed"),
    Condition("replay with noise", "automation", automation="replay"),
    # last, so that the conditions above draw the same random numbers as before they were added
    Condition("line-item form: local", "genuine", form=True),
    Condition("line-item form: local, 20% blind starts", "genuine", form=True, blind=0.2),
    Condition("line-item form: relay 110 ms", "relay", 110, form=True),
    Condition("replay with noise, no reaction (line-item form)", "automation", automation="replay-form", form=True),
]
FORM_FIELD_MS = (400.0, 900.0)  # Enter -> the next field (the demo form's "check")
FORM_ENTER_MS = (200.0, 700.0)  # last key -> Enter
FORM_BLIND_MS = (300.0, 1200.0)  # Enter -> first key of a blind start
SCRIPT_START_MS = (20.0, 60.0)  # field -> first key of a script that waits for the element
SCRIPT_ENTER_MS = 50.0


def _loop_ms(cond: Condition, rng: np.random.Generator, n: int = 1) -> np.ndarray:
    if cond.kind != "relay":
        return np.zeros(n)
    return cond.added_rtt_ms + rng.uniform(25, 45, n)


def _pointer_step(t: float, action: balabit.ClickAction, rng, user_rt_mu: float, cond: Condition):
    """One display change and the pointer approach that answers it; returns (parts, time of the press)."""
    onset = float(np.exp(rng.normal(user_rt_mu, PROMPT_WITHIN_SD))) + float(_loop_ms(cond, rng)[0])
    rel = action.t - action.t[0]
    press = rel[-1]
    if cond.kind == "relay" and rng.random() < cond.confirm:
        press = press + float(_loop_ms(cond, rng)[0])
    start = t + onset
    mt = start + rel[:-1]
    parts = [
        _batch([t], Kind.STIMULUS, detail=_PROMPTS[int(rng.integers(len(_PROMPTS)))]),
        _batch(mt, Kind.POINTER_MOVE, x=action.x[:-1], y=action.y[:-1]),
        _batch([start + press], Kind.POINTER_DOWN, x=action.x[-1:], y=action.y[-1:], detail=1),
        _batch([start + press + 90.0], Kind.POINTER_UP, x=action.x[-1:], y=action.y[-1:]),
    ]
    return parts, start + press + 90.0


def session_events(
    sentences: list[Sentence],
    rng: np.random.Generator,
    user_rt_mu: float,
    cond: Condition,
    actions: list[balabit.ClickAction] | None = None,
    clicks: int | None = None,
) -> np.ndarray:
    parts = []
    t = 0.0
    clicks = cond.clicks if clicks is None else clicks
    for s in sentences:
        if len(s.press) == 0:
            continue
        for _ in range(clicks if actions else 0):
            step, t_end = _pointer_step(t, actions[int(rng.integers(len(actions)))], rng, user_rt_mu, cond)
            parts += step
            t = t_end + rng.uniform(300, 1000)
        stim_t = t
        react = float(np.exp(rng.normal(user_rt_mu, PROMPT_WITHIN_SD)))
        rel_p = s.press - s.press[0]
        rel_r = s.release - s.press[0]
        shift = np.zeros(len(rel_p))
        if cond.kind == "relay":
            bs = s.cls == KeyClass.BACKSPACE
            reacts = np.zeros(len(rel_p), dtype=bool)
            reacts[0] = True
            reacts[1:] = bs[1:] & ~bs[:-1]
            shift = np.cumsum(np.where(reacts, _loop_ms(cond, rng, len(rel_p)), 0.0))
        p = stim_t + react + rel_p + shift
        r = stim_t + react + rel_r + shift
        parts.append(_batch([stim_t], Kind.STIMULUS, detail=Stimulus.PAGE_READY))
        parts.append(_batch(p, Kind.KEY_DOWN, key=s.cls))
        parts.append(_batch(r, Kind.KEY_UP, key=s.cls))
        t = float(max(r.max(), p.max())) + rng.uniform(1500, 3500)
    b = concat(parts)
    inputs = b["kind"] != Kind.STIMULUS  # the relay's distortions apply to input on its way in, not to the screen
    if cond.jitter_ms:
        b["t_src"][inputs] += rng.normal(0, cond.jitter_ms, int(inputs.sum()))
    if cond.batching_ms:
        b["t_src"][inputs] = np.ceil(b["t_src"][inputs] / cond.batching_ms) * cond.batching_ms
    downs = b["t_src"][b["kind"] == Kind.KEY_DOWN]
    b = concat([b, _batch(downs + ECHO_MS, Kind.STIMULUS, detail=Stimulus.ECHO)])  # the endpoint echoes what it got
    b["t_arr"] = b["t_src"] + EPOCH0
    return b[np.argsort(b["t_src"], kind="stable")]


def form_events(sentences: list[Sentence], rng: np.random.Generator, user_rt_mu: float, cond: Condition) -> np.ndarray:
    """The line-item form: Enter, a new field 400-900 ms later, the next sentence after a reaction (or blind)."""
    parts = [_batch([0.0], Kind.STIMULUS, detail=Stimulus.PAGE_READY)]
    stim_t = 0.0
    for s in sentences:
        if len(s.press) == 0:
            continue
        rel_p = s.press - s.press[0]
        rel_r = s.release - s.press[0]
        if cond.kind == "automation":
            start = stim_t + rng.uniform(*SCRIPT_START_MS)
            rel_p = rel_p + rng.normal(0, 3.0, len(rel_p))
            rel_r = np.maximum(rel_r + rng.normal(0, 3.0, len(rel_r)), rel_p)
        elif cond.blind and stim_t > 0 and rng.random() < cond.blind:
            start = enter + rng.uniform(*FORM_BLIND_MS)
        else:
            start = stim_t + float(np.exp(rng.normal(user_rt_mu, PROMPT_WITHIN_SD))) + float(_loop_ms(cond, rng)[0])
        p, r = start + rel_p, start + rel_r
        parts.append(_batch(p, Kind.KEY_DOWN, key=s.cls))
        parts.append(_batch(r, Kind.KEY_UP, key=s.cls))
        if cond.kind == "automation":
            enter = float(r.max()) + SCRIPT_ENTER_MS
        else:
            enter = float(p.max()) + rng.uniform(*FORM_ENTER_MS)
        parts.append(_batch([enter], Kind.KEY_DOWN, key=KeyClass.ENTER))
        parts.append(_batch([enter + 80.0], Kind.KEY_UP, key=KeyClass.ENTER))
        stim_t = enter + rng.uniform(*FORM_FIELD_MS)
        parts.append(_batch([stim_t], Kind.STIMULUS, detail=Stimulus.FIELD_APPEARED))
    b = concat(parts)
    return b[np.argsort(b["t_src"], kind="stable")]


def automation_events(sentences: list[Sentence], enrol_sentences: list[Sentence], rng, cond: Condition) -> np.ndarray:
    parts = []
    t = 0.0
    if cond.automation == "fixed":
        for s in sentences:
            n = len(s.press)
            p = t + 500.0 + 120.0 * np.arange(n) + rng.uniform(-1, 1, n)
            r = p + 30.0 + rng.uniform(-1, 1, n)
            parts.append(_batch([t], Kind.STIMULUS, detail=Stimulus.PAGE_READY))
            parts.append(_batch(p, Kind.KEY_DOWN, key=s.cls))
            parts.append(_batch(r, Kind.KEY_UP, key=s.cls))
            t = float(r.max()) + 2000.0
    else:  # replay the recorded enrolment sentences, over and over, with noise
        for k in range(len(sentences)):
            s = enrol_sentences[k % len(enrol_sentences)]
            rel_p = s.press - s.press[0] + rng.normal(0, 2.0, len(s.press))
            rel_r = s.release - s.press[0] + rng.normal(0, 2.0, len(s.press))
            parts.append(_batch([t], Kind.STIMULUS, detail=Stimulus.PAGE_READY))
            parts.append(_batch(t + 400.0 + rel_p, Kind.KEY_DOWN, key=s.cls))
            parts.append(_batch(t + 400.0 + rel_r, Kind.KEY_UP, key=s.cls))
            t = float(t + 400.0 + max(rel_r.max(), rel_p.max())) + 2000.0
    b = concat(parts)
    return b[np.argsort(b["t_src"], kind="stable")]


def _batch(t, kind, key=0, detail=0, x=np.nan, y=np.nan) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    b = empty(len(t))
    b["t_src"] = t
    b["t_arr"] = t + EPOCH0
    b["kind"] = kind
    b["key"] = key
    b["detail"] = detail
    b["source"] = Source.SENSOR
    b["x"] = x
    b["y"] = y
    return b


@dataclass(slots=True)
class SessionOutcome:
    """When (seconds of input at the source, reactions) each policy-relevant condition was first met, if ever."""

    alarm: tuple[float, int] | None  # signal score >= 0.5
    step_up: tuple[float, int] | None  # relay: added_latency_ms >= STEP_UP_MS
    terminate: tuple[float, int] | None  # relay: added_latency_ci_low_ms >= TERMINATE_MS
    final_added_ms: float | None
    seconds: float
    reactions: tuple[int, ...] = ()  # per reaction type at the end
    # automation rules of policies/defaults/behaviour.yaml (score >= 0.8 step-up, >= 0.95 terminate), on every session:
    # (seconds, keystrokes) when first met
    auto_step_up: tuple[float, int] | None = None
    auto_terminate: tuple[float, int] | None = None


STEP_UP_MS = 50.0  # policies/defaults/relay.yaml: relay-suspected
TERMINATE_MS = 100.0  # policies/defaults/relay.yaml: relay-confirmed
AUTOMATION_STEP_UP = 0.8  # policies/defaults/behaviour.yaml: automation-likely
AUTOMATION_TERMINATE = 0.95  # policies/defaults/behaviour.yaml: automation-certain
HORIZONS_S = (60.0, 120.0)


def sensor_batches(t_ms: np.ndarray, flush_ms: float = FLUSH_MS, max_events: int = FLUSH_EVENTS) -> list[slice]:
    """Consecutive slices of time-ordered events as the sensor would send them: each batch holds the events within
    `flush_ms` of its first one, at most `max_events`."""
    out = []
    i, n = 0, len(t_ms)
    while i < n:
        j = int(np.searchsorted(t_ms, t_ms[i] + flush_ms, side="left"))
        j = max(i + 1, min(j, i + max_events))
        out.append(slice(i, j))
        i = j
    return out


def run_session(scorer: SessionScorer, events: np.ndarray, signal: str) -> SessionOutcome:
    alarm = step_up = terminate = auto_step_up = auto_terminate = None
    a = None
    for batch in sensor_batches(events["t_src"]):
        a = scorer.update(events[batch])
        auto = a.signals["automation"]
        if auto.sufficient and auto_terminate is None and auto.score >= AUTOMATION_STEP_UP:
            at = (a.evidence.seconds, a.evidence.keystrokes)
            auto_step_up = auto_step_up or at
            if auto.score >= AUTOMATION_TERMINATE:
                auto_terminate = at
        s = a.signals[signal]
        if not s.sufficient:
            continue
        when = (a.evidence.seconds, int(a.signals["relay"].evidence.samples))
        if alarm is None and s.score >= 0.5:
            alarm = when
        d = s.details
        if signal == "relay":
            if step_up is None and d.get("added_latency_ms", 0.0) >= STEP_UP_MS:
                step_up = when
            if terminate is None and d.get("added_latency_ci_low_ms", 0.0) >= TERMINATE_MS:
                terminate = when
    details = a.signals[signal].details if a is not None else {}
    rd = a.signals["relay"].details if a is not None else {}
    reactions = tuple(int(rd.get(f"{n}_reactions", 0)) for n in F.REACT_TYPE_NAMES)
    return SessionOutcome(alarm, step_up, terminate, details.get("added_latency_ms"), a.evidence.seconds if a else 0.0,
                          reactions, auto_step_up, auto_terminate)


def _rate(outcomes: list[SessionOutcome], field: str, horizon: float | None = None) -> float:
    hits = [getattr(o, field) for o in outcomes]
    return float(np.mean([h is not None and (horizon is None or h[0] <= horizon) for h in hits])) if hits else 0.0


def _median_when(outcomes: list[SessionOutcome], field: str) -> tuple[float | None, float | None]:
    hits = [getattr(o, field) for o in outcomes if getattr(o, field) is not None]
    if not hits:
        return None, None
    return float(np.median([h[0] for h in hits])), float(np.median([h[1] for h in hits]))


def summarise(c: Condition, outcomes: list[SessionOutcome], no_profile: list[SessionOutcome]) -> dict:
    entry = {
        "condition": c.name,
        "kind": c.kind,
        "clicks_per_task": c.clicks,
        "sessions": len(outcomes),
        "median_session_seconds": float(np.median([o.seconds for o in outcomes])) if outcomes else None,
        "alarm_rate": _rate(outcomes, "alarm"),
        "automation_step_up_rate": _rate(outcomes, "auto_step_up"),
        "automation_terminate_rate": _rate(outcomes, "auto_terminate"),
    }
    entry["median_seconds_to_alarm"], entry["median_reactions_to_alarm"] = _median_when(outcomes, "alarm")
    # for automation sessions: keystrokes (not reactions) when the automation rules were first met
    entry["median_seconds_to_automation_step_up"], entry["median_keys_to_automation_step_up"] = _median_when(outcomes, "auto_step_up")
    if c.kind != "automation":
        secs = sum(o.seconds for o in outcomes)
        for k, name in enumerate(F.REACT_TYPE_NAMES):
            entry[f"{name}_reactions_per_minute"] = 60.0 * sum(o.reactions[k] for o in outcomes) / max(secs, 1e-9)
        entry["reactions_per_minute"] = sum(entry[f"{n}_reactions_per_minute"] for n in F.REACT_TYPE_NAMES)
        added = [o.final_added_ms for o in outcomes if o.final_added_ms is not None]
        entry["median_final_added_ms"] = float(np.median(added)) if added else None
        entry["added_rtt_ms"] = c.added_rtt_ms
        for field in ("step_up", "terminate"):
            entry[f"{field}_rate"] = _rate(outcomes, field)
            for h in HORIZONS_S:
                entry[f"{field}_rate_{int(h)}s"] = _rate(outcomes, field, h)
            entry[f"median_seconds_to_{field}"], entry[f"median_reactions_to_{field}"] = _median_when(outcomes, field)
            # reactions by which 95% of sessions met the condition (None when fewer than 95% ever did)
            seen = [getattr(o, field)[1] if getattr(o, field) is not None else np.inf for o in outcomes]
            q = float(np.quantile(seen, 0.95, method="higher")) if seen else np.inf
            entry[f"p95_reactions_to_{field}"] = q if np.isfinite(q) else None
        if no_profile:
            entry["alarm_rate_without_profile"] = _rate(no_profile, "alarm")
            entry["step_up_rate_without_profile"] = _rate(no_profile, "step_up")
            entry["terminate_rate_without_profile"] = _rate(no_profile, "terminate")
    return entry


def pointer_baseline(users: list[balabit.PointerUser]) -> tuple[float, float, float]:
    """(median ms, within-user sd, between-user sd) of log(arrival -> click + offset), as the detector extracts it."""
    medians, within = [], []
    for u in users:
        lat = action_settles(u.train)
        if len(lat) >= 10:
            ll = np.log(lat)
            medians.append(float(np.median(ll)))
            within.append(float(ll.std(ddof=1)))
    return float(np.exp(np.median(medians))), float(np.median(within)), float(np.std(medians))


def action_settles(actions: list[balabit.ClickAction]) -> np.ndarray:
    out = []
    for a in actions:
        lat, _ = F.extract_settle(a.t, a.x, a.y, np.arange(len(a.t)) == len(a.t) - 1, F.new_settle_carry())
        out.extend(lat.tolist())
    return np.asarray(out)


def _user_sessions(args) -> tuple[dict[str, SessionOutcome], dict[str, SessionOutcome]]:
    u, pu, population = args
    rng = np.random.default_rng([SEED, u.uid])
    rt_mu = rng.normal(np.log(PROMPT_MEDIAN_MS), PROMPT_BETWEEN_SD)
    enrol_s = u.sentences[:ENROL_SENTENCES]
    test_s = u.sentences[ENROL_SENTENCES:]
    genuine = Condition("enrol", "genuine")
    profile = enrol([session_events([s], rng, rt_mu, genuine, pu.train, ENROL_CLICKS_PER_SENTENCE) for s in enrol_s])
    outcomes, no_profile = {}, {}
    for c in CONDITIONS:
        if c.form:
            ev = form_events(test_s, rng, rt_mu, c)
            signal = "automation" if c.kind == "automation" else "relay"
        elif c.kind == "automation":
            ev = automation_events(test_s, enrol_s, rng, c)
            signal = "automation"
        else:
            ev = session_events(test_s, rng, rt_mu, c, pu.test)
            signal = "relay"
        outcomes[c.name] = run_session(SessionScorer(profile, population=population), ev, signal)
        if c.no_profile:  # the same session scored without a profile: population baseline only
            no_profile[c.name] = run_session(SessionScorer(None, population=population), ev, signal)
    return outcomes, no_profile


def run(data: str, users_limit: int = 200, progress: bool = True, seed: int = SPLIT_SEED, pointer_data: str | None = None,
        workers: int | None = None) -> dict:
    users = load_users(data, progress=Progress("loading", progress))
    users = [u for u in users if len(u.sentences) > ENROL_SENTENCES + 1]
    train, test = split_users(users, seed)
    pointer_root = pointer_data or os.path.join(os.path.dirname(os.path.abspath(data)), "balabit-mouse")
    p_users = [u for u in balabit.load_users(pointer_root, BALABIT_SESSIONS) if len(u.train) >= 50 and len(u.test) >= 50]
    order = np.random.default_rng(seed).permutation(len(p_users))
    p_train = [p_users[i] for i in order[: len(p_users) // 2]]
    p_test = [p_users[i] for i in order[len(p_users) // 2 :]]
    ptr = pointer_baseline(p_train)
    population = build_population(train, pointer=ptr)
    rng_pick = np.random.default_rng(SEED)
    test = [test[i] for i in sorted(rng_pick.choice(len(test), size=min(users_limit, len(test)), replace=False))]
    outcomes: dict[str, list[SessionOutcome]] = {c.name: [] for c in CONDITIONS}
    no_profile: dict[str, list[SessionOutcome]] = {c.name: [] for c in CONDITIONS}
    bar = Progress("relay", progress)
    jobs = [(u, p_test[i % len(p_test)], population) for i, u in enumerate(test)]
    workers = workers or min(2, os.cpu_count() or 1)
    with ProcessPoolExecutor(workers) as pool:
        for i, (out, nop) in enumerate(pool.map(_user_sessions, jobs, chunksize=4)):
            for name, o in out.items():
                outcomes[name].append(o)
            for name, o in nop.items():
                no_profile[name].append(o)
            bar(i + 1, len(jobs))
    results = [summarise(c, outcomes[c.name], no_profile[c.name]) for c in CONDITIONS]
    return {
        "dataset": "aalto-desktop + balabit-mouse",
        "detector": "relay+automation",
        "protocol": {
            "users": len(test),
            "pointer_users": {"train": [u.uid for u in p_train], "test": [u.uid for u in p_test]},
            "pointer_baseline": {"median_ms": ptr[0], "within_sd_log": ptr[1], "between_sd_log": ptr[2]},
            "split_seed": seed,
            "seed": SEED,
            "flush_ms": FLUSH_MS,
            "flush_events": FLUSH_EVENTS,
            "enrol_sentences": ENROL_SENTENCES,
            "enrol_clicks": ENROL_SENTENCES * ENROL_CLICKS_PER_SENTENCE,
            "step_up_ms": STEP_UP_MS,
            "terminate_ms": TERMINATE_MS,
            "automation_step_up": AUTOMATION_STEP_UP,
            "automation_terminate": AUTOMATION_TERMINATE,
        },
        "results": results,
    }


def _f(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(r: dict) -> str:
    """The relay section of docs/results.md, generated from the measured numbers."""
    p = r["protocol"]
    pb = p["pointer_baseline"]
    res = {e["condition"]: e for e in r["results"]}
    lines = [
        f"{p['users']} Aalto test users, each paired with one of the Balabit test users {', '.join(p['pointer_users']['test'])} "
        f"(Balabit training users {', '.join(p['pointer_users']['train'])} give the pointer population baseline: median "
        f"{pb['median_ms']:.0f} ms, within-user sd {pb['within_sd_log']:.2f}, between-user sd {pb['between_sd_log']:.2f} in log); "
        f"one session per condition each (about 10 tasks), enrolled from {p['enrol_sentences']} sentences and "
        f"{p['enrol_clicks']} training-file clicks, scored online in batches as the browser sensor sends them ({p['flush_ms']:g} ms after a batch's first event, or at {p['flush_events']} events); run in "
        f"{r.get('seconds', '?')} s. Times are seconds of input at the source (Evidence.seconds).",
        "",
        "What is measured and what is modelled (scoring/eval/relay.py):",
        "",
        "- measured: keystroke timings and typo-correction intervals (Aalto, recorded); pointer approaches and their "
        "arrival -> click intervals (Balabit RDP client clock, recorded; the detector's own extractor on test-file "
        "sessions labelled legal); the RDP/VNC frame pipeline U(25, 45) ms per reaction (real VNC chain, "
        "shared/notes/detection.md); all population baselines from training users only.",
        "- modelled: when display changes happen (a task = `clicks` pointer steps, each a display change - "
        "FIELD_APPEARED, DIALOG or PAGE_READY in turn - answered by a pointer approach, the app answering the click "
        "300-1000 ms later; then the sentence appears, PAGE_READY); the local reaction time to a display change "
        "(lognormal, per-user median from lognormal(ln 450 ms, 0.2), within-user sd 0.35; it is answered by the first "
        "key or the first pointer movement); that a relayed operator's reactions (movement onset, sentence start, "
        "correction) are late by RTT + pipeline; that a relayed operator presses the button once they see the pointer "
        "arrive, i.e. the arrival -> click interval grows by the same loop latency (all clicks, or half of them in the "
        "`half the clicks confirmed` row: MacKenzie & Ware 1993 put lag into the closed-loop phase of pointing, the "
        "share of clicks made that way is not measured); jitter (normal per input event) and a tool's batching (inputs "
        "released on a 50 ms grid); ECHO 8 ms after the endpoint received a key.",
        "- modelled, line-item form rows (the `ztgate scenario` demo form, keyboard only): every sentence ends with "
        "Enter 200-700 ms after its last key, a new field appears 400-900 ms later (FIELD_APPEARED), the next sentence "
        "starts after a local reaction time or, in the `blind starts` row, for a fifth of the sentences 300-1200 ms after "
        "Enter whatever the screen shows (a stress case for the automation detector's no-reaction evidence: the share of "
        "blind starts is not measured). The `no reaction` automation model replays the user's own test sentences with "
        "3 ms noise, starts each 20-60 ms after the field appears and presses Enter 50 ms after the last key, as "
        "`ztgate scenario script` (replay) does; the `replay with noise` model waits 400 ms after PAGE_READY instead, "
        "like a person, and only its replayed runs can give it away.",
        "- not used because a relay behind the endpoint leaves no trace there: arrival jitter of the sensor's clock "
        "(t_arr - t_src; reported as a detail), TCP RTT vs the sensor's ping (the browser on the endpoint answers both), "
        "RTT vs the claimed site (the endpoint is at the site). Arrival-clock reactions (remote-desktop FRAME, "
        "terminal OUTPUT/ECHO) have the kernel TCP RTT taken out before they are compared with the baseline.",
        "",
        f"Policy conditions (policies/defaults/relay.yaml): step-up = `added_latency_ms >= {p['step_up_ms']:.0f}`, "
        f"terminate = `added_latency_ci_low_ms >= {p['terminate_ms']:.0f}`. Reactions per minute: prompt / correction / "
        "pointer, per minute of input.",
        "",
        "| condition | reactions per min | P(step-up) by 60 s / 120 s / end | P(terminate) by 60 s / 120 s / end | median s to step-up | median s to terminate | P(step-up) / P(terminate) without profile | median final added ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in r["results"]:
        if e["kind"] == "automation":
            continue
        rpm = (f"{e['reactions_per_minute']:.1f} ({e['prompt_reactions_per_minute']:.1f} / "
               f"{e['correction_reactions_per_minute']:.1f} / {e['pointer_reactions_per_minute']:.1f})")
        su = f"{_f(e['step_up_rate_60s'])} / {_f(e['step_up_rate_120s'])} / {_f(e['step_up_rate'])}"
        te = f"{_f(e['terminate_rate_60s'])} / {_f(e['terminate_rate_120s'])} / {_f(e['terminate_rate'])}"
        nop = (f"{_f(e['step_up_rate_without_profile'])} / {_f(e['terminate_rate_without_profile'])}"
               if "step_up_rate_without_profile" in e else "-")
        lines.append(
            f"| {e['condition']} | {rpm} | {su} | {te} | {_f(e['median_seconds_to_step_up'], 0)} | "
            f"{_f(e['median_seconds_to_terminate'], 0)} | {nop} | {_f(e['median_final_added_ms'], 0)} |"
        )
    lines += ["", "| automation model | detection rate (automation score >= 0.5) | median s to detect | P(step-up) / "
              "P(terminate) by the automation rules | median keystrokes to step-up |", "|---|---|---|---|---|"]
    for e in r["results"]:
        if e["kind"] == "automation":
            lines.append(f"| {e['condition']} | {_f(e['alarm_rate'])} | {_f(e['median_seconds_to_alarm'], 1)} | "
                         f"{_f(e['automation_step_up_rate'])} / {_f(e['automation_terminate_rate'])} | "
                         f"{_f(e['median_keys_to_automation_step_up'], 0)} |")
    lines += ["", "Automation rules (policies/defaults/behaviour.yaml: step-up at automation score "
              f"{p.get('automation_step_up', 0.8):g}, terminate at {p.get('automation_terminate', 0.95):g}) on genuine and "
              "relayed sessions, which must never meet them: "
              + "; ".join(f"{e['condition']} {_f(e['automation_step_up_rate'], 3)} / {_f(e['automation_terminate_rate'], 3)}"
                          for e in r["results"] if e["kind"] != "automation") + "."]
    locals_ = [e for e in r["results"] if e["kind"] == "genuine"]
    worst_su = max(e["step_up_rate"] for e in locals_)
    worst_te = max(e["terminate_rate"] for e in locals_)
    lines += ["", "Goals (per workflow; the promise holds only where the evidence rate allows it):", "",
              "| goal | target | measured | met? |", "|---|---|---|---|"]
    lines.append(f"| genuine sessions left alone: worst P(terminate) / P(step-up) over whole sessions, all workflows | ~0 (<= 0.01) | "
                 f"{worst_te:.3f} / {worst_su:.3f} | {'yes' if worst_te <= 0.01 and worst_su <= 0.01 else 'no'} |")
    reached = []
    for clicks, wf in WORKFLOWS.items():
        r110, r60 = res.get(f"{wf}: relay 110 ms"), res.get(f"{wf}: relay 60 ms")
        if r110:
            ok = r110["terminate_rate_60s"] >= 0.95
            lines.append(f"| {wf} ({r110['reactions_per_minute']:.0f} reactions/min): relay 110 ms terminated within 60 s | >= 0.95 | "
                         f"{r110['terminate_rate_60s']:.2f} | {'yes' if ok else 'no'} |")
            reached.append((r110["reactions_per_minute"], r110["terminate_rate_60s"], r110["terminate_rate_120s"]))
        if r60:
            ok = r60["step_up_rate_120s"] >= 0.95
            lines.append(f"| {wf} ({r60['reactions_per_minute']:.0f} reactions/min): relay 60 ms stepped up within 120 s | >= 0.95 | "
                         f"{r60['step_up_rate_120s']:.2f} | {'yes' if ok else 'no'} |")
    enough = [rpm for rpm, p60, _ in sorted(reached) if p60 >= 0.95]
    need = [(e["condition"], e["p95_reactions_to_terminate"]) for e in r["results"]
            if e["kind"] == "relay" and e["added_rtt_ms"] == 110 and e.get("p95_reactions_to_terminate")
            and "jitter" not in e["condition"] and "batching" not in e["condition"] and "half" not in e["condition"]]
    lines += ["", "Evidence rate against the 110 ms promise (terminate within 60 s of input): "
              + "; ".join(f"{rpm:.0f} reactions/min -> {p60:.2f} by 60 s ({p120:.2f} by 120 s)" for rpm, p60, p120 in sorted(reached))
              + ". Evidence grows with reactions, not with seconds: "
              + (f"the promise holds from about {enough[0]:.0f} reactions per minute of input. " if enough else
                 "none of the modelled workflows reaches it. ")
              + ("95% of relayed sessions were terminated once they had shown "
                 + ", ".join(f"{n:.0f} reactions ({c})" for c, n in need)
                 + f": the 60 s promise needs about that many reactions per minute of input, "
                 f"{min(n for _, n in need):.0f}+ per minute, which no human workflow modelled here produces (the "
                 "pointer-heavy ones give 22-28). Step-up (the posterior median >= 50 ms) needs far fewer."
                 if need else "")]
    return "\n".join(lines) + "\n"
