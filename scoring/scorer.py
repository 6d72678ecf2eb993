"""Per-session scoring: event batches in, an Assessment out, with bounded state that serialises to bytes."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from . import features as F
from . import statecodec
from .detectors.automation import AutomationDetector
from .detectors.cadence import CadenceDetector
from .detectors.network import NetworkDetector
from .detectors.relay import RelayDetector
from .events import (
    EVENT_DTYPE,
    MAX_AGE_MS,
    MAX_BATCH,
    MAX_SKEW_MS,
    Kind,
    Source,
    sanitize,
)
from .keys import KeyClass
from .lazysignal import LazySignal
from .population import Population, shipped_population
from .profile import Profile, SessionSummary, TimingStats
from .signals import Assessment, Evidence, Signal
from .trust import combine, over_alarm

STATE_VERSION = 5  # 5: reactions per source, key-source hand-over; 4: up-up flights, adaptation after a step-up
SIGNAL_NAMES = ("cadence", "relay", "automation", "network")
# a source clock reading further than this from the batch's own median is absurd (clock jump, corrupt field)
MAX_SRC_SPREAD_MS = 3600 * 1000.0
# arrival times outside this range are not Unix epoch milliseconds (1990 .. 2100)
ARRIVAL_RANGE_MS = (6.3e11, 4.1e12)

# evidence seconds count input time on the source's own clock; a pause longer than this counts as this long, so
# idle minutes do not pass for evidence (and batching on the way to the gateway changes nothing)
ACTIVE_GAP_CAP_MS = 10_000.0

_S_KEY_SOURCE, _S_LAST_KEY_T, _S_FIRST_ARR, _S_LAST_ARR, _S_KEYSTROKES, _S_FLAGGED, _S_DROPPED, _S_EXPECTED, _S_ACTIVE_MS = range(9)
_SCALARS = 9
N_SOURCES = int(max(Source)) + 1  # rows of the per-source state, indexed by Source value (0 unused)
# Whose keys the session's keystroke features come from. One keystroke can reach the gateway twice (the sensor on a
# web terminal's page and the terminal's own WebSocket), so one source is scored at a time: the sensor whenever it
# sees keys (the page's own clock, key releases, no network in the intervals), otherwise a protocol that has been
# typing alone for HANDOVER_MS (arrival clock) while the current source was silent, as when a user moves from an
# intranet page to a remote desktop on the same host. The sensor sends its first batch within ~250 ms of a key, so a
# page whose keys both see is never handed to the protocol (only a session's very first keys can be counted twice,
# until the sensor's first batch arrives); a handover costs the new source's first HANDOVER_MS of keys.
HANDOVER_MS = 2000.0
STREAK_GAP_MS = 5000.0  # input after a pause this long starts a new streak of its source
# A page whose keys a protocol also carries (a web terminal's page): what those keys answer is the protocol's own
# output and echoes, timed by the protocol's copy of them; the page's local-echo corrections would count the same
# corrections again (and a terminal paints a key only when its echo returns). The sensor's reactions are left out
# while a protocol delivered input within this long of the sensor's batch reaching the gateway.
SHADOW_MS = 1000.0
_EMPTY = np.empty(0)
# protocols that carry no input timestamps: their t_src is the gateway's arrival time
_ARRIVAL_CLOCK_SOURCES = (int(Source.GUACAMOLE), int(Source.RFB), int(Source.TERMINAL))
_EMPTY_I = np.empty(0, dtype=np.int64)
_NO_STROKES = F.PointerStrokes(_EMPTY, _EMPTY, _EMPTY, _EMPTY)
_NO_KEYSTROKE_DETAIL = (_EMPTY, _EMPTY, _EMPTY_I, _EMPTY, _EMPTY_I, _EMPTY_I, _EMPTY, _EMPTY_I, 0)
STATS_FLUSH = 2048


class SessionScorer:
    """Scores one session. Feed it every event batch; read the Assessment it returns."""

    def __init__(
        self,
        profile: Profile | None,
        expected_rtt_ms: float | None = None,
        population: Population | None = None,
    ):
        if profile is not None and not isinstance(profile, Profile):
            raise TypeError("profile must be a scoring.Profile or None")
        self.profile = profile
        self.population = population or shipped_population()
        self.cadence = CadenceDetector(profile, self.population)
        self.relay = RelayDetector(profile, self.population)
        self.automation = AutomationDetector(self.population)
        self.network = NetworkDetector(expected_rtt_ms)
        self.key_carry = F.new_key_carry()
        # per source: its stimuli answered by its own inputs, on its own clock (a terminal's output by the terminal's
        # input frames, a field that appeared on a page by the page's keys), whichever source the keystrokes come from
        self.react_carry = np.stack([F.new_react_carry() for _ in range(N_SOURCES)])
        self.source_seen = np.full((N_SOURCES, 2), np.nan)  # per source: last input, start of its streak (arrival)
        self.pointer_carry = F.new_pointer_carry()
        self.settle_carry = F.new_settle_carry()
        self.stats = TimingStats()
        # key features wait here and enter the session statistics in bulk: one merge per STATS_FLUSH observations
        # instead of one per batch (the statistics are read only for summary(), session_stats() and to_bytes())
        # preallocated: staging a batch is two slice copies, and a flush needs no concatenation of many small arrays
        # (the flush used to be the slowest 1.5% of online updates)
        self._pending_ids = np.empty(STATS_FLUSH, dtype=np.int16)
        self._pending_values = np.empty(STATS_FLUSH)
        self._pending_n = 0
        self._pending_react: list[tuple[np.ndarray, np.ndarray]] = []
        self.scalars = np.zeros(_SCALARS)
        self.scalars[_S_LAST_KEY_T] = -math.inf
        self.scalars[_S_FIRST_ARR] = math.nan
        self.scalars[_S_LAST_ARR] = math.nan
        self.scalars[_S_EXPECTED] = math.nan if expected_rtt_ms is None else float(expected_rtt_ms)
        self._last: Assessment | None = None
        # signals are recomputed only for detectors that received evidence since the last assessment
        self._cached: dict[str, Signal] = {}
        self._dirty: set[str] = set(SIGNAL_NAMES)

    # ---------------------------------------------------------------------------------------------- public API
    @property
    def flagged(self) -> bool:
        """True once any detector was over its alarm level in this session: such a session never trains a profile."""
        return bool(self.scalars[_S_FLAGGED])

    @property
    def key_source(self) -> int:
        """The Source whose keys are scored now (0 before any input)."""
        return int(self.scalars[_S_KEY_SOURCE])

    @property
    def dropped_events(self) -> int:
        return int(self.scalars[_S_DROPPED])

    def update(self, batch: np.ndarray) -> Assessment:
        if not isinstance(batch, np.ndarray) or batch.dtype != EVENT_DTYPE:
            raise TypeError(f"update() needs a numpy array of scoring.events.EVENT_DTYPE, got {getattr(batch, 'dtype', type(batch))}")
        if batch.ndim != 1:
            raise ValueError("update() needs a one-dimensional batch")
        if len(batch) > MAX_BATCH:
            raise ValueError(f"batch of {len(batch)} events exceeds MAX_BATCH={MAX_BATCH}; split it")
        if _already_clean(batch):
            clean, dropped = batch, 0
        else:
            clean, dropped = sanitize(batch)
        clean, absurd = self._drop_absurd(clean)
        self.scalars[_S_DROPPED] += dropped + absurd
        if len(clean):
            self._ingest(clean)
        return self.assess()

    def assess(self) -> Assessment:
        evidence = self._evidence()
        detectors = {"cadence": self.cadence, "relay": self.relay, "automation": self.automation, "network": self.network}
        signals: dict[str, Signal] = {}
        for name, det in detectors.items():
            cached = self._cached.get(name)
            if name in self._dirty or cached is None:
                signals[name] = det.signal(evidence)
            else:
                ev = Evidence(evidence.keystrokes, evidence.seconds, cached.evidence.samples)
                signals[name] = cached.with_evidence(ev) if isinstance(cached, LazySignal) else replace(cached, evidence=ev)
        self._cached = signals
        self._dirty = set()
        risk, contributions, sufficient = combine(signals)
        if over_alarm(signals):
            self.scalars[_S_FLAGGED] = 1.0
        self._last = Assessment(risk, signals, contributions, evidence, sufficient)
        return self._last

    def reset_evidence(self) -> None:
        """After a successful step-up: the evidence that caused it is cleared (the session stays `flagged`), and the
        cadence model takes in the session's typing so far, whose typist has just proved who they are."""
        self.cadence.adapt(self.session_stats())
        for det in (self.cadence, self.relay, self.automation, self.network):
            det.reset()
        self._dirty = set(SIGNAL_NAMES)
        self.scalars[_S_KEYSTROKES] = 0.0
        self.scalars[_S_ACTIVE_MS] = 0.0
        self.scalars[_S_FIRST_ARR] = self.scalars[_S_LAST_ARR]

    def adopt_profile(self, profile: Profile) -> int:
        """The user's profile, arriving after the session started without one (the store could not be read then).
        Scoring goes on in this scorer, so nothing it holds is lost: the `flagged` mark, the automation and network
        evidence, the relay evidence, the session statistics. Cadence judges the latest typing it held (up to
        cadence.HELD_OBSERVATIONS, about all its decayed evidence would weigh) against the profile, then what follows.

        Relay keeps the population's reaction baseline for the rest of the session: its evidence so far is a
        likelihood over (added latency, the user's offset from that baseline), and switching baselines would give
        that offset two meanings within one sum. The profile's sharper baseline applies from the user's next session.

        Returns how many keystroke observations of this session were never judged against the profile (held ones
        that the bound dropped, or that a step-up answered before it came): a session with any must not train it.
        The held observations live in this object only: a scorer restored by from_bytes() without a profile holds
        none, and counts the keystrokes it had as unjudged."""
        if not isinstance(profile, Profile):
            raise TypeError("profile must be a scoring.Profile")
        if self.profile is not None:
            raise ValueError("this session is already scored against a profile")
        self.profile = profile
        self._dirty.add("cadence")
        return self.cadence.adopt(profile)

    def summary(self) -> SessionSummary:
        self._flush_stats()
        # what learning needs to know of the cadence judgement: a session it never judged, or judged close to the
        # alarm, must not train the profile (scoring.profile.learnable)
        evidence = self._evidence()
        judged = self.cadence.signal(evidence).sufficient
        peak = float(self.cadence.stat[2]) / max(float(self.cadence.prior.alarm), 1e-6) if judged else math.inf
        return SessionSummary(self.stats.copy(), self.flagged, self.stats.keystrokes, self._seconds(),
                              evidence.keystrokes if judged else 0, peak)

    def session_stats(self) -> TimingStats:
        self._flush_stats()
        return self.stats.copy()

    def _flush_stats(self) -> None:
        if self._pending_react:
            lat = np.concatenate([a for a, _ in self._pending_react])
            typ = np.concatenate([b for _, b in self._pending_react])
            self.stats.add_reactions(lat, typ)
            self._pending_react.clear()
        if self._pending_n:
            n = self._pending_n
            self.stats.add_keystrokes(F.Keystrokes(self._pending_ids[:n], self._pending_values[:n], *_NO_KEYSTROKE_DETAIL))
            self._pending_n = 0

    def _stage_keys(self, ids: np.ndarray, values: np.ndarray) -> None:
        n = len(ids)
        end = self._pending_n + n
        if end > STATS_FLUSH:
            self._flush_stats()
            end = n
        if n > STATS_FLUSH:  # a huge offline batch: straight in
            self.stats.add_keystrokes(F.Keystrokes(ids, values, *_NO_KEYSTROKE_DETAIL))
            return
        start = self._pending_n
        self._pending_ids[start:end] = ids
        self._pending_values[start:end] = values
        self._pending_n = end

    def to_bytes(self) -> bytes:
        self._flush_stats()
        arrays = {
            "scalars": self.scalars,
            "key_carry": self.key_carry,
            "react_carry": self.react_carry,
            "source_seen": self.source_seen,
            "pointer_carry": self.pointer_carry,
            "settle_carry": self.settle_carry,
            **{f"stats.{i}": a for i, a in enumerate(self.stats.arrays())},
            **self.cadence.state(),
            **self.relay.state(),
            **self.automation.state(),
            **self.network.state(),
        }
        return statecodec.encode(arrays, STATE_VERSION)

    @classmethod
    def from_bytes(cls, state: bytes, profile: Profile | None, population: Population | None = None) -> SessionScorer:
        try:
            arrays = statecodec.decode(state, STATE_VERSION)
            scalars = arrays["scalars"]
            expected = float(scalars[_S_EXPECTED])
            scorer = cls(profile, None if math.isnan(expected) else expected, population)
            for name, size in (
                ("scalars", (_SCALARS,)),
                ("key_carry", (F.KEY_CARRY_SIZE,)),
                ("react_carry", (N_SOURCES, F.REACT_CARRY_SIZE)),
                ("source_seen", (N_SOURCES, 2)),
                ("pointer_carry", (F.POINTER_CARRY_SIZE,)),
                ("settle_carry", (F.SETTLE_CARRY_SIZE,)),
            ):
                value = arrays[name].astype(np.float64)
                if value.shape != size:
                    raise ValueError(f"{name}: wrong shape")
                setattr(scorer, name, value)
            stats = TimingStats(*(arrays[f"stats.{i}"].astype(np.float64) for i in range(len(scorer.stats.arrays()))))
            stats.validate()
            scorer.stats = stats
            scorer.cadence.load(arrays)
            scorer.relay.load(arrays)
            scorer.automation.load(arrays)
            scorer.network.load(arrays)
            if profile is None:
                # the hold of typing a late profile would judge is not serialised: what was typed counts as unjudged
                scorer.cadence.unjudged = int(scorer.stats.keystrokes)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"incomplete session state: {exc}") from exc
        except Exception as exc:  # ProfileError and shape errors: one clear error type for the caller
            if isinstance(exc, ValueError):
                raise
            raise ValueError(f"corrupt session state: {exc}") from exc
        return scorer

    # ---------------------------------------------------------------------------------------------- internals
    def _drop_absurd(self, clean: np.ndarray) -> tuple[np.ndarray, int]:
        if len(clean) == 0:
            return clean, 0
        t_arr = clean["t_arr"]
        lo, hi = float(t_arr.min()), float(t_arr.max())
        last = self.scalars[_S_LAST_ARR]
        t_src = clean["t_src"]
        if (
            ARRIVAL_RANGE_MS[0] < lo
            and hi < ARRIVAL_RANGE_MS[1]
            and hi - lo < MAX_SKEW_MS
            and (not math.isfinite(last) or (lo > last - MAX_AGE_MS and hi < last + MAX_AGE_MS))
            and float(t_src[-1] - t_src[0]) < MAX_SRC_SPREAD_MS  # sorted by t_src: the ends are the extremes
        ):
            return clean, 0  # the usual case: nothing absurd, no masks needed
        ok = (t_arr > ARRIVAL_RANGE_MS[0]) & (t_arr < ARRIVAL_RANGE_MS[1])
        last = self.scalars[_S_LAST_ARR]
        if math.isfinite(last):
            ok &= (t_arr > last - MAX_AGE_MS) & (t_arr < last + MAX_AGE_MS)
        if np.any(ok) and float(t_arr[ok].max() - t_arr[ok].min()) >= MAX_SKEW_MS:
            med = float(np.median(t_arr[ok]))
            ok &= np.abs(t_arr - med) < MAX_SKEW_MS
        t_src = clean["t_src"]
        if np.any(ok) and float(t_src[ok].max() - t_src[ok].min()) >= MAX_SRC_SPREAD_MS:
            for src in np.unique(clean["source"][ok]):
                m = ok & (clean["source"] == src)
                ok[m] &= np.abs(t_src[m] - np.median(t_src[m])) < MAX_SRC_SPREAD_MS
        n_bad = int(len(clean) - np.count_nonzero(ok))
        return (clean[ok] if n_bad else clean), n_bad

    def _ingest(self, ev: np.ndarray) -> None:
        # plain columns once; every selection below is an index array into them (no structured-array copies)
        t_src = ev["t_src"]
        t_arr = ev["t_arr"]
        kind = ev["kind"]
        source = ev["source"]
        sc = self.scalars
        lo_arr, hi_arr = float(t_arr.min()), float(t_arr.max())
        if math.isnan(sc[_S_FIRST_ARR]):
            sc[_S_FIRST_ARR] = lo_arr
        sc[_S_LAST_ARR] = hi_arr if math.isnan(sc[_S_LAST_ARR]) else max(hi_arr, sc[_S_LAST_ARR])

        # how many of each kind: most batches hold keys only (plus a stimulus or an RTT sample), and every branch
        # below that the counts rule out is skipped (numpy's per-call overhead is the cost at ~50 events)
        per_kind = np.bincount(kind, minlength=_N_KINDS).tolist()
        n_ptr = per_kind[Kind.POINTER_MOVE] + per_kind[Kind.POINTER_DOWN] + per_kind[Kind.POINTER_UP]
        only_keys = n_ptr + per_kind[Kind.WHEEL] == 0
        is_input = kind <= Kind.WHEEL  # kinds 1..6 (sanitised batches hold no kind 0)
        n_inputs = per_kind[Kind.KEY_DOWN] + per_kind[Kind.KEY_UP] + n_ptr + per_kind[Kind.WHEEL]
        src = self._key_source(source, t_arr, is_input) if n_inputs else self.key_source
        if src:
            # inputs from the chosen source only (others would duplicate the same keystrokes on another clock),
            # and never older than what was already processed (late batches cannot rewrite the past)
            from_src = is_input & (source == src)
            mine = from_src & (t_src >= sc[_S_LAST_KEY_T])
            n_late = int(np.count_nonzero(from_src)) - int(np.count_nonzero(mine))
            if n_late:
                sc[_S_DROPPED] += n_late
            idx = np.flatnonzero(mine)
        else:
            idx = np.empty(0, dtype=np.int64)
        in_t = t_src[idx]
        in_kind = kind[idx]
        if only_keys:
            k_t, k_kind, k_cls = in_t, in_kind, ev["key"][idx]
        else:
            is_key = in_kind <= Kind.KEY_UP
            k_t, k_kind, k_cls = in_t[is_key], in_kind[is_key], ev["key"][idx[is_key]]
        ks, self.key_carry = F.extract_keystrokes(k_t, k_kind, k_cls, self.key_carry)
        n_in = len(idx)
        if n_in:
            last = sc[_S_LAST_KEY_T]
            first_gap = float(in_t[0] - last) if math.isfinite(last) else 0.0
            gaps = np.diff(in_t)
            sc[_S_ACTIVE_MS] += min(first_gap, ACTIVE_GAP_CAP_MS) + float(np.minimum(gaps, ACTIVE_GAP_CAP_MS).sum())
            sc[_S_LAST_KEY_T] = float(in_t[-1])
            in_arr = t_arr[idx]
            if in_arr[-1] != in_t[-1] or in_arr[0] != in_t[0]:
                self.relay.add_arrival_offset(float(in_arr.max() - in_t.max()))

        # reactions: each source's stimuli answered by that source's own inputs, on its own clock. A prompt is
        # answered by the first key, click or pointer movement; corrections only by keys.
        stim_idx = np.flatnonzero(kind == Kind.STIMULUS) if per_kind[Kind.STIMULUS] else _EMPTY_I
        latency, types = self._reactions(ev, kind, source, t_src, is_input, stim_idx, n_ptr)

        # starts after a prompt (automation: no reaction), on the input source's own clock only
        if n_in or len(stim_idx):
            own_stim = stim_idx[source[stim_idx] == src] if len(stim_idx) else stim_idx
            stim_t, stim_detail = (t_src[own_stim], ev["detail"][own_stim]) if len(own_stim) else (_EMPTY, _EMPTY_I)
            if self.automation.observe_starts(stim_t, stim_detail, in_t, in_kind, ev["key"][idx]):
                self._dirty.add("automation")

        strokes = _NO_STROKES
        is_ptr = (in_kind >= Kind.POINTER_MOVE) & (in_kind <= Kind.POINTER_UP) if n_ptr else None
        if is_ptr is not None and is_ptr.any():
            p_idx = idx[is_ptr]
            p_t, p_kind = t_src[p_idx], kind[p_idx]
            p_x, p_y = ev["x"][p_idx].astype(np.float64), ev["y"][p_idx].astype(np.float64)
            strokes, self.pointer_carry = F.extract_pointer(p_t, p_x, p_y, p_kind != Kind.POINTER_MOVE, self.pointer_carry)
            not_up = p_kind != Kind.POINTER_UP
            settle, self.settle_carry = F.extract_settle(
                p_t[not_up], p_x[not_up], p_y[not_up], p_kind[not_up] == Kind.POINTER_DOWN, self.settle_carry
            )
            if len(settle):
                latency = np.concatenate((latency, settle))
                types = np.concatenate((types, np.full(len(settle), F.REACT_POINTER, dtype=np.int64)))

        n_ks = len(ks.down_t)
        n_feat = len(ks.feature_ids)
        if n_feat:
            self._stage_keys(ks.feature_ids, ks.feature_values)
        if len(latency):
            self._pending_react.append((latency, types))
            if len(self._pending_react) >= STATS_FLUSH // 8:
                self._flush_stats()
        if len(strokes.straightness):
            self.stats.add_pointer(strokes)
        sc[_S_KEYSTROKES] += n_ks

        if n_feat:
            self.cadence.update(ks)
            self._dirty.add("cadence")
        if n_feat or n_ks or len(latency) or len(strokes.straightness):
            self.relay.update(ks, latency, types, strokes)
            self.automation.update(ks, strokes)
            self._dirty.add("relay")
            self._dirty.add("automation")
        if per_kind[Kind.NET] or per_kind[Kind.PROBE]:
            is_net = kind == Kind.NET
            is_app = kind == Kind.PROBE
            value = ev["value"]
            self.network.update(value[is_net].astype(np.float64), value[is_app].astype(np.float64))
            self._dirty.add("network")

    def _key_source(self, source: np.ndarray, t_arr: np.ndarray, is_input: np.ndarray) -> int:
        """The source whose inputs this batch's keystroke features come from (see HANDOVER_MS); 0 = none yet."""
        sc = self.scalars
        cur = int(sc[_S_KEY_SOURCE])
        in_src = source[is_input]
        lo, hi = int(in_src.min()), int(in_src.max())
        in_arr = t_arr[is_input]
        present = (lo,) if lo == hi else tuple(np.unique(in_src).tolist())
        seen = self.source_seen
        for s in present:
            a = in_arr if lo == hi else in_arr[in_src == s]
            first, last = float(a.min()), float(a.max())
            prev = seen[s, 0]
            if not prev == prev or first - prev > STREAK_GAP_MS:  # NaN: the source's first input
                seen[s, 1] = first
                prev = -math.inf
            seen[s, 0] = max(prev, last)
        sensor = int(Source.SENSOR)
        if sensor in present:
            new = sensor
        elif cur in present:
            return cur
        elif not cur:
            new = present[0]  # the session's first input (the sensor, if the same keys reach it, takes over)
        else:
            # another source takes over once it has typed alone (the current one silent since its streak began)
            new = next((s for s in present if seen[s, 0] - seen[s, 1] >= HANDOVER_MS
                        and not seen[cur, 0] >= seen[s, 1]), cur)
        if new != cur:
            sc[_S_KEY_SOURCE] = new
            if cur:  # another clock: nothing carries over from the old source's intervals
                self.key_carry = F.new_key_carry()
                sc[_S_LAST_KEY_T] = -math.inf
                self.relay.new_input_clock()
                self.automation.new_input_clock()
        return new

    def _reactions(self, ev: np.ndarray, kind: np.ndarray, source: np.ndarray, t_src: np.ndarray, is_input: np.ndarray,
                   stim_idx: np.ndarray, n_ptr: int) -> tuple[np.ndarray, np.ndarray]:
        """Reaction latencies and types of this batch: per source, its stimuli answered by its own inputs."""
        answers = kind == Kind.KEY_DOWN
        if n_ptr:
            answers = answers | (kind == Kind.POINTER_DOWN) | (kind == Kind.POINTER_MOVE)
        ans_all = np.flatnonzero(answers & is_input)
        if not len(ans_all) and not len(stim_idx):
            return _EMPTY, _EMPTY_I
        involved = np.concatenate((source[ans_all], source[stim_idx])) if len(stim_idx) else source[ans_all]
        lo, hi = int(involved.min()), int(involved.max())
        parts_lat, parts_typ = [], []
        for s in ((lo,) if lo == hi else np.unique(involved).tolist()):
            carry = self.react_carry[s]
            a_idx = ans_all if lo == hi else ans_all[source[ans_all] == s]
            if len(a_idx) and math.isfinite(carry[0]) and t_src[a_idx[0]] < carry[0]:
                a_idx = a_idx[t_src[a_idx] >= carry[0]]  # late inputs cannot answer what came after them
            s_idx = stim_idx if lo == hi else stim_idx[source[stim_idx] == s]
            if not len(a_idx) and not len(s_idx) and not math.isfinite(carry[2]) and not math.isfinite(carry[3]):
                continue
            is_corr = ev["key"][a_idx] == KeyClass.BACKSPACE
            if n_ptr:
                is_corr &= kind[a_idx] == Kind.KEY_DOWN
            lat, typ, self.react_carry[s] = F.extract_reactions(
                t_src[s_idx], ev["detail"][s_idx], t_src[a_idx], is_corr, carry, s == Source.SENSOR
            )
            if len(lat) and s == Source.SENSOR:
                arrived = float(ev["t_arr"][a_idx].min()) if len(a_idx) else float(ev["t_arr"].min())
                if any(self.source_seen[p, 0] >= arrived - SHADOW_MS for p in _ARRIVAL_CLOCK_SOURCES):
                    continue
            if len(lat):
                if s in _ARRIVAL_CLOCK_SOURCES:
                    lat = self._without_network_rtt(lat)
                parts_lat.append(lat)
                parts_typ.append(typ)
        if not parts_lat:
            return _EMPTY, _EMPTY_I
        if len(parts_lat) == 1:
            return parts_lat[0], parts_typ[0]
        return np.concatenate(parts_lat), np.concatenate(parts_typ)

    def _without_network_rtt(self, latency: np.ndarray) -> np.ndarray:
        """Reactions timed on the arrival clock include the client's network round trip (the stimulus travels out,
        the input travels back). The kernel's TCP RTT measures that leg (behind a trusted proxy, the fastest page
        ping: NetworkDetector.client_leg_ms): taking it out leaves the human and whatever sits behind the client, so
        a profile learned over one network stays valid over another."""
        rtt = self.network.client_leg_ms()
        return latency if rtt is None else latency - rtt

    def _seconds(self) -> float:
        """Seconds of input on the source's clock (t_src), pauses capped at ACTIVE_GAP_CAP_MS."""
        return float(self.scalars[_S_ACTIVE_MS]) / 1000.0

    def _evidence(self) -> Evidence:
        return Evidence(int(self.scalars[_S_KEYSTROKES]), self._seconds(), int(self.relay.stat[2]))


_N_KEY_CLASSES = len(KeyClass)
_MAX_KIND = int(max(Kind))
_N_KINDS = _MAX_KIND + 1


def _already_clean(batch: np.ndarray) -> bool:
    """True when `sanitize` would return the batch unchanged: finite times, known kinds and key classes, sorted by
    source time with no ties (ties are where duplicates hide). Checking is cheaper than cleaning a copy."""
    n = len(batch)
    if n == 0:
        return True
    t_src = batch["t_src"]
    kind = batch["kind"]
    step = np.diff(t_src)
    if not (step >= 0).all():  # also False for NaN
        return False
    tie = step == 0
    if tie.any():  # ties are fine when ordered by arrival and not exact duplicates (sanitize's rules)
        if not batch.flags.c_contiguous or not (np.diff(batch["t_arr"])[tie] >= 0).all():
            return False
        raw = batch.view(f"V{batch.dtype.itemsize}")
        if (raw[1:][tie] == raw[:-1][tie]).any():
            return False
    if not (math.isfinite(t_src[0]) and math.isfinite(t_src[-1])):
        return False
    if not np.isfinite(batch["t_arr"]).all():
        return False
    k_lo, k_hi = int(kind.min()), int(kind.max())
    return k_lo >= Kind.KEY_DOWN and k_hi <= _MAX_KIND and int(batch["key"].max()) < _N_KEY_CLASSES
