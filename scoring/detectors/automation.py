"""`automation`: input too regular, too fast, or replayed.

- regular: the coefficient of variation of a 32-flight window below what any genuine typist produces (the floor is
  the lowest window CV that training users reach in a whole session, a low quantile over users: the detector keeps
  the lowest CV of the session, so a per-window quantile would be crossed by regular typists sooner or later);
- fast: a median flight faster than people sustain;
- fast and steady: a median flight faster than any training user's fastest stretch, at a steadiness no fast typist
  shows (people who type that fast roll keys over and are irregular; a script with a fixed delay, even one jittered
  by a loaded machine, is not); the steadiness leaves out pauses, such as a script's wait for the next field;
- replayed: a run of REPLAY_RUN flights whose key classes and timings repeat an earlier run within a few ms (people
  do not reproduce 8 intervals to within REPLAY_TOLERANCE_MS; a recording played back does);
- scripted pointer: strokes that are perfectly straight;
- no reaction: the first input after a new field, dialog or page comes sooner than a person can see it and act
  (a program that waits for the element in the DOM types tens of ms after it appears; people need >= ~150 ms to
  react to a visual change, more to read a new prompt). Only starts that answer the screen count: the input was idle
  before the change (typing through a change is not a reaction), the change is one the user must see before typing
  into it, and the latency is on the source's own clock (the stimulus and the key carry the same browser clock, so
  network delay and batching do not enter it). Evidence is a CUSUM of per-start log-likelihood ratios between "a
  person, who starts this fast only by coincidence" and "a program, which almost always does", so one coincidence
  cannot decide and a person's ordinary reactions wipe it out.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from .. import features as F
from ..events import Kind, Stimulus
from ..keys import KeyClass
from ..population import Population
from ..ring import Ring
from ..signals import Evidence, Signal
from ..stats import sigmoid

NAME = "automation"
FLIGHT_WINDOW = 256
CV_WINDOW = 32
PAUSE_FACTOR = 4.0  # for fast_steady: a flight over 4x its window's median is a pause between lines, not rhythm
MIN_FLIGHTS = 20
MIN_STROKES = 5
FASTEST_HUMAN_MEDIAN_FLIGHT_MS = 40.0
# Fast and steady, measured on the Aalto training users only (`python -m scoring.eval.fast_steady`: split seed
# 20240917, 890 users, every 32-flight window): the fastest window median is 39 ms, and their 257 windows under 70 ms
# have a typing CV of 0.25 or more (1% under 0.30): people who type that fast are irregular. With these two floors no
# training user's window scores above 0.15 (test users: 0.11), while a 50 ms script with up to 20 ms of dispatch
# jitter, typing lines of 10 to 45 keys, scores over 0.5 from its 21st key.
FAST_STEADY_FLOOR_MS = 57.0
FAST_STEADY_CV = 0.45
REPLAY_RUN = 8
REPLAY_TOLERANCE_MS = 5.0
REPLAY_MIN_CV = 0.1  # near-constant runs are the `regular` component's business
# A new run with this many or more earlier runs of the same key classes is compared with them in one numpy step,
# and only the runs that step finds close are checked in Python. Typing whose flights all share one class pair (a
# script pressing one key, digits on a keypad) has ~250 such runs per flight: compared one by one in Python, that
# was 0.3 s of CPU per 4096-event batch. The numpy step is only a filter (with a margin far above its rounding), so
# which runs count as replays is decided by the same expression as before, on any input.
REPLAY_VECTOR_FROM = 16
_REPLAY_FILTER_MARGIN_MS = 1e-6
_RUN_OFFSETS = np.arange(REPLAY_RUN)
PERFECTLY_STRAIGHT = 0.999

# no reaction. Stimuli a user must see before typing into them: the new field / dialog / page is the prompt
PROMPT_STIMULI = (int(Stimulus.FIELD_APPEARED), int(Stimulus.DIALOG), int(Stimulus.PAGE_READY))
# A start this soon after the prompt was not caused by seeing it: simple visual reaction times of people bottom out
# around 150 ms (responses under 100-150 ms are what reaction-time studies discard as anticipations), and the
# sensor stamps the stimulus at the start of the frame that can first show it, which only lengthens a person's
# measured latency. 120 ms leaves room for a script slowed by a loaded machine without reaching people.
FAST_START_MS = 120.0
# Between FAST_START_MS and this, a start is ambiguous and counts neither way: the quickest people reach it now and
# then, and so does a script on a loaded machine (in 2 of 5 replayed `ztgate scenario script` runs at load average ~6
# on 2 cores one start took >= 100 ms, against 38-67 ms on a quieter run)
QUICK_START_MS = 200.0
MAX_START_MS = 3000.0  # a later first input is not an answer to the prompt at all
# Idle before the prompt: after Enter/Tab (a line committed, a field left) the user waits for what the app shows
# next, so 300 ms of quiet suffices; otherwise 1 s, so that a suggestion list that appears during a typing pause, an
# editor that opens a little after a click, or keys lost while a page loads (PAGE_READY) do not pass for a wait.
IDLE_AFTER_COMMIT_MS = 300.0
IDLE_MS = 1000.0
COMMIT_KEYS = (int(KeyClass.ENTER), int(KeyClass.TAB))
# Per eligible start, P(fast): a program that waits for the element ~always; a person only by coincidence (a blind
# start that happens to land just after the prompt). 5% is a generous bound for people: in the line-item streams of
# `ztgate eval relay` (200 test users) where a fifth of the sentences start blind, 3.1% of starts were fast and 24% of
# sessions had one, so one fast start must not decide. Two in a row are needed to step up (0 of those 200 sessions;
# 5.5% when half the sentences start blind) and three to terminate; every ordinary reaction in between pulls the
# evidence down.
P_FAST_PERSON = 0.05
P_FAST_PROGRAM = 0.9
LLR_FAST = math.log(P_FAST_PROGRAM / P_FAST_PERSON)
LLR_SLOW = math.log((1.0 - P_FAST_PROGRAM) / (1.0 - P_FAST_PERSON))
# level_to_score(level, START_ALARM): one fast start 0.05, two in a row 0.91 (step-up at 0.8), three 1.00 (terminate)
START_ALARM = 4.5
MIN_STARTS = 2
START_CARRY_SIZE = 4  # last input time, last action was a commit key (1/0), pending prompt time, its eligibility


class AutomationDetector:
    def __init__(self, population: Population):
        self.population = population
        self.flights = Ring(FLIGHT_WINDOW, {"ms": "f4", "pair": "i2"})
        # flights seen, replayed runs, strokes, straight strokes, min CV seen, checked-up-to (flights count)
        self.stat = np.array([0.0, 0.0, 0.0, 0.0, math.inf, 0.0])
        self._runs: _RunIndex | None = None
        # no reaction: CUSUM level, its peak, eligible starts, fast starts, fastest fast start (ms), starts and fast
        # starts since the level last stood at 0 (what the explanation reports), then the latest RECENT_STARTS
        # latencies (ms, newest last, NaN before there were that many)
        self.starts = _new_starts()
        self.start_carry = new_start_carry()

    def update(self, ks: F.Keystrokes, strokes: F.PointerStrokes) -> None:
        n_new = len(ks.flight_ms)
        if n_new:
            pair = (ks.flight_prev_cls * F.N_KEY_CLASSES + ks.flight_cls).astype(np.int16)
            ms32 = ks.flight_ms.astype(np.float32)
            # the index is (re)built from the ring before these flights join it: built after, it would take them
            # twice (once from the ring, once here)
            index = self._index
            self.flights.push(ms=ms32, pair=pair)
            self.stat[0] += n_new
            self.stat[1] += index.extend(ms32.astype(np.float64).tolist(), pair.tolist(), int(self.stat[0]) - n_new)
            recent = index.ms
            if len(recent) >= CV_WINDOW:
                self.stat[4] = min(self.stat[4], flight_cv(recent[-CV_WINDOW:]))
        if len(strokes.straightness):
            self.stat[2] += len(strokes.straightness)
            self.stat[3] += int(np.count_nonzero(strokes.straightness > PERFECTLY_STRAIGHT))

    def observe_starts(self, stim_t: np.ndarray, stim_detail: np.ndarray, in_t: np.ndarray, in_kind: np.ndarray,
                       in_key: np.ndarray) -> bool:
        """Stimuli and inputs of one batch on the input source's clock; True when a start was judged."""
        latency, self.start_carry = extract_starts(stim_t, stim_detail, in_t, in_kind, in_key, self.start_carry)
        if not len(latency):
            return False
        st = self.starts
        for r in latency.tolist():  # a start or two per batch at most
            fast = r < FAST_START_MS
            st[0] = max(0.0, st[0] + (LLR_FAST if fast else 0.0 if r < QUICK_START_MS else LLR_SLOW))
            st[1] = max(st[1], st[0])
            st[2] += 1.0
            st[3] += fast
            if fast:
                st[4] = min(st[4], r)
            if st[0] > 0.0:
                st[5] += 1.0
                st[6] += fast
            else:
                st[5] = st[6] = 0.0
            st[_N_STARTS - RECENT_STARTS : -1] = st[_N_STARTS - RECENT_STARTS + 1 :]
            st[-1] = r
        return True

    @property
    def _index(self) -> _RunIndex:
        if self._runs is None:  # derived from the flight ring: rebuilt after a load instead of being serialised
            self._runs = _RunIndex()
            self._runs.extend(self.flights.get("ms").astype(np.float64).tolist(), self.flights.get("pair").tolist(),
                              int(self.stat[0]) - self.flights.count, count_hits=False)
        return self._runs

    def new_input_clock(self) -> None:
        """The session's keys now come from another source: a prompt pending on the old clock is not theirs."""
        self.start_carry = new_start_carry()

    def reset(self) -> None:
        self.flights.clear()
        self.stat[:] = [0.0, 0.0, 0.0, 0.0, math.inf, 0.0]
        self._runs = None
        self.starts = _new_starts()  # the carry stays: it describes the screen and the input, not evidence

    def signal(self, evidence: Evidence) -> Signal:
        n_flights = int(self.stat[0])
        n_strokes = int(self.stat[2])
        st = self.starts
        n_starts = int(st[2])
        ev = Evidence(evidence.keystrokes, evidence.seconds, n_flights + n_strokes + n_starts)
        if n_flights < MIN_FLIGHTS and n_strokes < MIN_STROKES and n_starts < MIN_STARTS:
            return Signal(
                NAME,
                0.0,
                False,
                ev,
                f"{n_flights} flights, {n_strokes} pointer strokes and {n_starts} starts after a prompt; needs "
                f"{MIN_FLIGHTS}, {MIN_STROKES} or {MIN_STARTS}: insufficient",
            )
        ms = self.flights.get("ms").astype(np.float64)
        recent = ms[-CV_WINDOW:]
        components: dict[str, float] = {}
        details: dict[str, float] = {"flights": float(n_flights), "replayed_runs": float(self.stat[1])}
        if len(recent) >= MIN_FLIGHTS:
            cv = min(flight_cv(recent), float(self.stat[4]))
            floor = self.population.flight_cv_floor
            components["regular"] = regular(cv, floor)
            ordered = sorted(recent.tolist())
            k = len(ordered)
            med = ordered[k // 2] if k % 2 else 0.5 * (ordered[k // 2 - 1] + ordered[k // 2])
            log_med = math.log(max(med, 0.1))
            components["fast"] = sigmoid(10.0 * (math.log(FASTEST_HUMAN_MEDIAN_FLIGHT_MS) - log_med))
            typing = typing_cv(recent)
            components["fast_steady"] = fast_steady(med, typing)
            details.update(min_flight_cv=cv, flight_cv_floor=floor, median_flight_ms=med, recent_typing_cv=typing)
        components["replayed"] = sigmoid(2.0 * (self.stat[1] - 2.5))
        if n_starts >= MIN_STARTS:
            components["no_reaction"] = sigmoid(8.0 * (st[0] / START_ALARM - 1.0))
            details.update(prompt_starts=float(n_starts), fast_starts=float(st[3]), no_reaction_level=float(st[0]),
                           no_reaction_alarm_level=START_ALARM)
            if st[3]:
                details["fastest_start_ms"] = float(st[4])
            details["last_start_ms"] = float(st[-1])
        if n_strokes >= MIN_STROKES:
            frac = self.stat[3] / n_strokes
            components["scripted_pointer"] = sigmoid(12.0 * (frac - 0.6))
            details["straight_stroke_fraction"] = float(frac)
        for k, v in components.items():
            details[f"component_{k}"] = v
        worst = max(components, key=components.get)
        score = components[worst]
        if score >= 0.5:
            what = {
                "regular": f"flight CV {details.get('min_flight_cv', 0):.3f} below the human floor {self.population.flight_cv_floor:.3f}",
                "fast": f"median flight {details.get('median_flight_ms', 0):.0f} ms, faster than people sustain",
                "fast_steady": f"median flight {details.get('median_flight_ms', 0):.0f} ms at flight CV "
                f"{details.get('recent_typing_cv', 0):.2f} (pauses left out): people this fast (under {FAST_STEADY_FLOOR_MS:.0f} ms) are "
                f"irregular (CV over {FAST_STEADY_CV:.2f})",
                "replayed": f"{int(self.stat[1])} runs of {REPLAY_RUN} flights repeat earlier timings within {REPLAY_TOLERANCE_MS:.0f} ms",
                "scripted_pointer": f"{100 * details.get('straight_stroke_fraction', 0):.0f}% of pointer strokes perfectly straight",
                "no_reaction": f"{int(st[6])} of the last {int(st[5])} starts after a new field, dialog or page came "
                f"within {FAST_START_MS:.0f} ms of it appearing ({int(st[3])} of {n_starts} in the session; latest "
                f"{_recent(st)} ms); people need ~150 ms or more to see a change and react",
            }[worst]
            explanation = f"input looks automated: {what} (over {n_flights} flights, {n_strokes} strokes)"
        else:
            explanation = (
                f"no automation evident over {n_flights} flights and {n_strokes} strokes "
                f"(flight CV {details.get('min_flight_cv', math.nan):.2f}, {int(self.stat[1])} replayed runs, "
                f"{int(st[3])} of {n_starts} starts after a prompt within {FAST_START_MS:.0f} ms)"
            )
        return Signal(NAME, score, True, ev, explanation, details)

    def state(self) -> dict[str, np.ndarray]:
        return {"automation.stat": self.stat, "automation.starts": self.starts, "automation.start_carry": self.start_carry,
                **self.flights.state("automation.flights")}

    def load(self, state: dict[str, np.ndarray]) -> None:
        self.stat = state["automation.stat"].astype(np.float64).copy()
        self.flights.load("automation.flights", state)
        self._runs = None
        # sessions saved before the no-reaction evidence existed start it afresh
        starts = state.get("automation.starts")
        carry = state.get("automation.start_carry")
        if starts is None or carry is None:
            self.starts, self.start_carry = _new_starts(), new_start_carry()
            return
        starts = starts.astype(np.float64)
        carry = carry.astype(np.float64)
        if starts.shape != (_N_STARTS,) or carry.shape != (START_CARRY_SIZE,) or not np.all(np.isfinite(starts[[0, 1, 2, 3, 5, 6]])):
            raise ValueError("automation: wrong shape or non-finite values in saved no-reaction state")
        self.starts, self.start_carry = starts.copy(), carry.copy()


RECENT_STARTS = 8
_N_STARTS = 7 + RECENT_STARTS


def _recent(st: np.ndarray) -> str:
    recent = st[_N_STARTS - RECENT_STARTS :]
    return ", ".join(f"{v:.0f}" for v in recent[np.isfinite(recent)].tolist())


def _new_starts() -> np.ndarray:
    st = np.zeros(_N_STARTS)
    st[4] = math.inf
    st[_N_STARTS - RECENT_STARTS :] = math.nan
    return st


def new_start_carry() -> np.ndarray:
    carry = np.full(START_CARRY_SIZE, np.nan)
    carry[1] = 0.0
    carry[3] = 0.0
    return carry


_KEY_DOWN, _KEY_UP, _POINTER_DOWN, _POINTER_UP = int(Kind.KEY_DOWN), int(Kind.KEY_UP), int(Kind.POINTER_DOWN), int(Kind.POINTER_UP)
_PAGE_READY = int(Stimulus.PAGE_READY)
_IS_PROMPT = np.zeros(256, dtype=bool)  # by Stimulus code (u1): a table lookup is far cheaper than np.isin
_IS_PROMPT[list(PROMPT_STIMULI)] = True
_NO_STARTS = np.empty(0)


def extract_starts(stim_t: np.ndarray, stim_detail: np.ndarray, in_t: np.ndarray, in_kind: np.ndarray,
                   in_key: np.ndarray, carry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(latencies in ms from a prompt to the input that answered it, new carry), for the prompts of this batch and
    the one pending from earlier batches; stimuli and inputs (all input kinds) sorted by time on one clock.

    A prompt (PROMPT_STIMULI) counts when it is the first since the last input, the input was idle before it
    (IDLE_AFTER_COMMIT_MS after Enter/Tab, except for pages; IDLE_MS otherwise; never when nothing was seen before
    it), and the first input after it is a key or button press within MAX_START_MS. The loop runs over prompts, which
    are rare; inputs are only indexed."""
    last_t, commit, pend, pend_ok = carry.tolist()
    n = len(in_t)
    if len(stim_t):
        prompt = _IS_PROMPT[stim_detail]
        ps, pk = stim_t[prompt].tolist(), stim_detail[prompt].tolist()
    else:
        ps, pk = [], []
    if not ps and (n == 0 or math.isnan(pend)):  # the usual batch: no prompt involved
        new = carry.copy()
        if n:
            new[0] = in_t[-1]
            new[1] = _commit_of_last_action(in_kind, in_key, 0, n, commit)
        return _NO_STARTS, new
    out: list[float] = []
    pos = np.searchsorted(in_t, np.asarray(ps), side="right").tolist() if ps else []
    c = 0  # inputs consumed

    def advance(k: int) -> None:
        nonlocal c, last_t, commit, pend
        if k <= c:
            return
        if not math.isnan(pend):
            r = float(in_t[c]) - pend
            if pend_ok and int(in_kind[c]) in (_KEY_DOWN, _POINTER_DOWN) and 0.0 < r <= MAX_START_MS:
                out.append(r)
            pend = math.nan
        last_t = float(in_t[k - 1])
        commit = _commit_of_last_action(in_kind, in_key, c, k, commit)
        c = k

    for s, kind, k in zip(ps, pk, pos):
        advance(k)
        if not math.isnan(pend):
            continue  # not the first prompt since the last input: the user is already looking at the screen
        need = IDLE_AFTER_COMMIT_MS if commit and kind != _PAGE_READY else IDLE_MS
        pend = s
        pend_ok = not math.isnan(last_t) and s - last_t >= need
    advance(n)
    new = np.array([last_t, commit, pend, float(pend_ok) if not math.isnan(pend) else 0.0])
    return (np.asarray(out, dtype=np.float64) if out else _NO_STARTS), new


def _commit_of_last_action(in_kind: np.ndarray, in_key: np.ndarray, lo: int, hi: int, default: float) -> float:
    """1.0 when the last key or button action in [lo, hi) is Enter or Tab, 0.0 for another action, `default` when
    there are only releases (a release ends the action before it, whatever that was)."""
    for i in range(hi - 1, lo - 1, -1):  # from the end: a release or two before the last press, as a rule
        k = int(in_kind[i])
        if k != _KEY_UP and k != _POINTER_UP:
            return 1.0 if k == _KEY_DOWN and int(in_key[i]) in COMMIT_KEYS else 0.0
    return default


def regular(cv: float, floor: float) -> float:
    """The `regular` component of a session whose lowest window flight CV is `cv`."""
    return sigmoid(10.0 * (math.log(floor) - math.log(max(cv, 1e-4))))


def fast_steady(median_ms: float, cv: float) -> float:
    """The `fast_steady` component of a window with this median flight and flight CV."""
    return sigmoid(20.0 * (math.log(FAST_STEADY_FLOOR_MS) - math.log(max(median_ms, 0.1)))) * sigmoid(
        10.0 * (math.log(FAST_STEADY_CV) - math.log(max(cv, 1e-4)))
    )


def typing_cv(ms) -> float:
    """Coefficient of variation of a short window's flights without its pauses (flights over PAUSE_FACTOR times the
    window's median). A pause says nothing about how steady the typing around it is: a script's wait between Enter and
    the next field, 0.4-0.9 s among 50 ms flights, triples the plain CV of the 32 flights around it, so a script that
    types short lines never showed a steady window. People's windows under 70 ms have no such pauses to drop, so
    FAST_STEADY_CV holds for this measure (`python -m scoring.eval.fast_steady`). Not used for `regular`: there the
    plain CV's floor is a low quantile over people at every speed, and leaving out slower people's hesitations made
    a few of them look steadier than it (with the earlier per-window floor: 1.5% of the genuine keyboard sessions of
    `ztgate eval relay` reached step-up, against 0.5%)."""
    v = sorted(ms.tolist() if isinstance(ms, np.ndarray) else ms)
    n = len(v)
    if n == 0:
        return 0.0
    limit = PAUSE_FACTOR * (v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2]))
    while v[-1] > limit:
        v.pop()
    return flight_cv(v)


def flight_cv(ms) -> float:
    """Coefficient of variation of a short window of flights (plain Python: cheaper than numpy calls for 32 values)."""
    v = ms.tolist() if isinstance(ms, np.ndarray) else list(ms)
    n = len(v)
    if n == 0:
        return 0.0
    mean = sum(v) / n
    if mean <= 0:
        return 0.0
    return math.sqrt(max(sum(x * x for x in v) / n - mean * mean, 0.0)) / mean


class _RunIndex:
    """Every run of REPLAY_RUN consecutive flights still in the window, indexed by its key-class sequence, so a new
    run is compared only with earlier runs of the same classes (a dictionary lookup, not a scan of the window)."""

    __slots__ = ("by_key", "key", "ms", "order")

    def __init__(self) -> None:
        self.ms: list[float] = []  # the window's flights (ms), oldest first
        self.key = 0  # class codes of the last REPLAY_RUN flights, 8 bits each, newest in the top byte
        self.by_key: dict[int, list[int]] = {}  # run key -> absolute start positions
        self.order: deque[tuple[int, int]] = deque()  # (start, key) oldest first, for eviction

    def extend(self, ms: list[float], pairs: list[int], first: int, count_hits: bool = True) -> int:
        """Adds flights starting at absolute position `first`; returns the new runs that replay an earlier one."""
        hits = 0
        top = 8 * (REPLAY_RUN - 1)
        for i, (value, code) in enumerate(zip(ms, pairs)):
            pos = first + i
            self.ms.append(value)
            self.key = (self.key >> 8) | ((code & 0xFF) << top)
            start = pos - REPLAY_RUN + 1
            oldest = pos + 1 - FLIGHT_WINDOW
            while self.order and self.order[0][0] < oldest:
                old_start, old_key = self.order.popleft()
                starts = self.by_key[old_key]
                starts.remove(old_start)
                if not starts:
                    del self.by_key[old_key]
            if len(self.ms) > FLIGHT_WINDOW:
                del self.ms[: len(self.ms) - FLIGHT_WINDOW]
            head = pos + 1 - len(self.ms)  # absolute position of self.ms[0]
            if start < head:
                continue
            if count_hits and start - head >= REPLAY_RUN:
                hits += self._replays(start, head)
            self.by_key.setdefault(self.key, []).append(start)
            self.order.append((start, self.key))
        return hits

    def _replays(self, start: int, head: int) -> int:
        earlier = [b for b in self.by_key.get(self.key, ()) if head <= b <= start - REPLAY_RUN]
        if not earlier:
            return 0
        cand = self.ms[start - head : start - head + REPLAY_RUN]
        mean = sum(cand) / REPLAY_RUN
        spread = math.sqrt(max(sum(v * v for v in cand) / REPLAY_RUN - mean * mean, 0.0))
        if spread < REPLAY_MIN_CV * max(mean, 1e-6):
            return 0  # near-constant runs are the `regular` component's business
        if len(earlier) >= REPLAY_VECTOR_FROM:
            rows = (np.asarray(earlier) - head)[:, None] + _RUN_OFFSETS
            dev = np.abs(np.asarray(self.ms)[rows] - np.asarray(cand)).sum(axis=1) / REPLAY_RUN
            close = np.flatnonzero(dev < REPLAY_TOLERANCE_MS + _REPLAY_FILTER_MARGIN_MS)
            if not len(close):
                return 0
            earlier = [earlier[i] for i in close.tolist()]
        for b in earlier:
            other = self.ms[b - head : b - head + REPLAY_RUN]
            if sum(abs(x - y) for x, y in zip(other, cand)) / REPLAY_RUN < REPLAY_TOLERANCE_MS:
                return 1
        return 0
