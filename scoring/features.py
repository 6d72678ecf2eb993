"""Timing features from event batches, computed incrementally with a small carry between batches.

Every extractor is a pure function `(columns of one batch, carry) -> (features, new carry)`. The carry is a short
float array (pending key downs, the last input, a pending stimulus, an open pointer stroke), so a session's
memory stays bounded however long it runs, and the same code serves the offline evaluations on whole streams.

Key feature space (used by profiles and the cadence detector), all in log milliseconds:
  ids 0..15              dwell of key class c (down -> up)
  ids 16 + 16*p + c      down-down flight from class p to class c (pauses excluded)
  ids 272 + 16*p + c     up-up flight: from the release of a class-p key to the next release, of a class-c key
                         (pauses excluded)

The release flight carries what the down-down flight and the dwells do not: how a person overlaps keys (rolling
over, or lifting one before pressing the next) shows in the order and spacing of the releases. The classical
up-down interval (release to the next press) is that flight minus a dwell; it goes negative on roll-over, so it
has no log, while the up-up interval stays positive and keeps every pair.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

import numpy as np

from .events import Kind, Stimulus
from .keys import N_KEY_CLASSES, KeyClass

N_DWELL = N_KEY_CLASSES
N_FLIGHT = N_KEY_CLASSES * N_KEY_CLASSES
N_RELEASE = N_KEY_CLASSES * N_KEY_CLASSES
N_KEY_FEATURES = N_DWELL + N_FLIGHT + N_RELEASE
FLIGHT_BASE = N_DWELL
RELEASE_BASE = N_DWELL + N_FLIGHT

PAUSE_MS = 1500.0  # a longer gap between downs is a pause, not a flight
MAX_DWELL_MS = 1500.0  # a key held longer is a held key (or a lost key-up), not typing rhythm
MIN_LOG_MS = 1.0  # clamp before log: coalesced events have 0 ms intervals and still count
_LOG_MIN = math.log(MIN_LOG_MS)

# Reactions: an input answers the first display change after the user went idle (prompt), or a correction
# follows the echo of the key before it (BackSpace after the wrong key appeared), or a click follows the pointer's
# arrival on its target (the closed-loop homing phase of pointing: people click once they see the pointer there).
REACT_PROMPT = 0
REACT_CORRECTION = 1
REACT_POINTER = 2
N_REACT_TYPES = 3
REACT_TYPE_NAMES = ("prompt", "correction", "pointer")
IDLE_BEFORE_PROMPT_MS = 300.0
PROMPT_RANGE_MS = (100.0, 3000.0)
CORRECTION_RANGE_MS = (50.0, 2000.0)

POINTER_STROKE_GAP_MS = 200.0
MIN_STROKE_POINTS = 5


def flight_id(prev_cls, cls):
    return FLIGHT_BASE + np.asarray(prev_cls, dtype=np.int64) * N_KEY_CLASSES + np.asarray(cls, dtype=np.int64)


def release_id(prev_cls, cls):
    return RELEASE_BASE + np.asarray(prev_cls, dtype=np.int64) * N_KEY_CLASSES + np.asarray(cls, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------- keystrokes
# last down time, its class, pending down time per class, last up time, its class
KEY_CARRY_SIZE = 4 + N_KEY_CLASSES
_UP = 2 + N_KEY_CLASSES  # where the last up's time and class sit in the carry


def new_key_carry() -> np.ndarray:
    carry = np.full(KEY_CARRY_SIZE, np.nan)
    carry[1] = KeyClass.UNKNOWN
    carry[_UP + 1] = KeyClass.UNKNOWN
    return carry


@dataclass(frozen=True, slots=True)
class Keystrokes:
    feature_ids: np.ndarray  # int64, ids in the key feature space
    feature_values: np.ndarray  # log ms
    feature_times: np.ndarray  # when each observation completed (key-up for dwell, key-down for flight)
    dwell_ms: np.ndarray
    dwell_cls: np.ndarray
    flight_ms: np.ndarray  # down-down intervals below PAUSE_MS, in down order
    flight_prev_cls: np.ndarray
    flight_cls: np.ndarray
    down_t: np.ndarray
    down_cls: np.ndarray
    pauses: int


SMALL_BATCH = 96  # below this many key events plain Python beats a dozen numpy calls (same results, see tests)


def extract_keystrokes(t: np.ndarray, kind: np.ndarray, cls: np.ndarray, carry: np.ndarray) -> tuple[Keystrokes, np.ndarray]:
    """Dwell and flight features from key events sorted by time (one clock)."""
    if len(t) <= SMALL_BATCH:
        return _extract_keystrokes_small(t.tolist(), kind.tolist(), cls.tolist(), carry)
    cls = cls.astype(np.int64)
    is_down = kind == Kind.KEY_DOWN
    down_t = t[is_down]
    down_cls = cls[is_down]

    # down-down flights, continuing from the previous batch's last down
    prev_t = np.concatenate(([carry[0]], down_t[:-1]))
    prev_cls = np.concatenate(([carry[1]], down_cls[:-1])).astype(np.int64)
    dd = down_t - prev_t
    with np.errstate(invalid="ignore"):
        is_flight = (dd >= 0) & (dd < PAUSE_MS)
        pauses = int(np.count_nonzero(dd >= PAUSE_MS))

    # up-up flights, continuing from the previous batch's last up
    up_t = t[~is_down]
    up_cls = cls[~is_down]
    prev_up_t = np.concatenate(([carry[_UP]], up_t[:-1]))
    prev_up_cls = np.concatenate(([carry[_UP + 1]], up_cls[:-1])).astype(np.int64)
    uu = up_t - prev_up_t
    with np.errstate(invalid="ignore"):
        is_release = (uu >= 0) & (uu < PAUSE_MS)

    # dwell: within one class, a down immediately followed by an up (pending downs of the last batch first)
    pending = carry[2:_UP]
    pend_cls = np.flatnonzero(np.isfinite(pending))
    ev_t = np.concatenate((pending[pend_cls], t))
    ev_cls = np.concatenate((pend_cls, cls))
    ev_up = np.concatenate((np.zeros(len(pend_cls), dtype=bool), ~is_down))
    order = np.lexsort((ev_up, ev_t, ev_cls))
    s_t, s_cls, s_up = ev_t[order], ev_cls[order], ev_up[order]
    pair = (s_cls[1:] == s_cls[:-1]) & ~s_up[:-1] & s_up[1:]
    dwell = s_t[1:][pair] - s_t[:-1][pair]
    dwell_cls = s_cls[1:][pair]
    dwell_end = s_t[1:][pair]
    ok = (dwell >= 0) & (dwell < MAX_DWELL_MS)
    dwell, dwell_cls, dwell_end = dwell[ok], dwell_cls[ok], dwell_end[ok]

    new_carry = np.empty_like(carry)
    if len(down_t):
        new_carry[0] = down_t[-1]
        new_carry[1] = down_cls[-1]
    else:
        new_carry[0:2] = carry[0:2]
    new_pending = np.full(N_KEY_CLASSES, np.nan)
    if len(s_t):
        last = np.append(s_cls[1:] != s_cls[:-1], True)
        open_down = last & ~s_up
        new_pending[s_cls[open_down]] = s_t[open_down]
        latest = s_t.max()
        with np.errstate(invalid="ignore"):
            new_pending[new_pending < latest - MAX_DWELL_MS] = np.nan  # a lost key-up must not pair much later
    new_carry[2:_UP] = new_pending
    if len(up_t):
        new_carry[_UP] = up_t[-1]
        new_carry[_UP + 1] = up_cls[-1]
    else:
        new_carry[_UP : _UP + 2] = carry[_UP : _UP + 2]

    flight = dd[is_flight]
    f_prev = prev_cls[is_flight]
    f_cls = down_cls[is_flight]
    ids = np.concatenate((dwell_cls, flight_id(f_prev, f_cls), release_id(prev_up_cls[is_release], up_cls[is_release])))
    values = np.log(np.maximum(np.concatenate((dwell, flight, uu[is_release])), MIN_LOG_MS))
    times = np.concatenate((dwell_end, down_t[is_flight], up_t[is_release]))
    order = np.argsort(times, kind="stable")  # evidence accumulates in the order it happened
    ids, values, times = ids[order], values[order], times[order]
    return (
        Keystrokes(ids, values, times, dwell, dwell_cls, flight, f_prev, f_cls, down_t, down_cls, pauses),
        new_carry,
    )


def _extract_keystrokes_small(t: list, kind: list, cls: list, carry: np.ndarray) -> tuple[Keystrokes, np.ndarray]:
    """extract_keystrokes for an online batch: the same pairing rules, one pass in plain Python. The results are
    gathered in two lists (floats, ints) and become two arrays whose slices are the fields: at ~50 events numpy's
    per-call overhead, not arithmetic, is the cost."""
    down = int(Kind.KEY_DOWN)
    c_list = carry.tolist()
    prev_t, prev_c = c_list[0], c_list[1]
    prev_c = int(prev_c) if prev_c == prev_c else int(KeyClass.UNKNOWN)
    prev_ut, prev_uc = c_list[_UP], c_list[_UP + 1]
    prev_uc = int(prev_uc) if prev_uc == prev_uc else int(KeyClass.UNKNOWN)
    down_t, down_cls, flight, f_prev, f_cls, flight_t = [], [], [], [], [], []
    release, r_ids, release_t = [], [], []
    pauses = 0
    # per class, events in (time, up) order as the vectorised lexsort sees them: pending downs first
    per_cls: dict[int, list[tuple[float, bool]]] = {}
    for c, v in enumerate(c_list[2:_UP]):
        if v == v:  # not NaN
            per_cls[c] = [(v, False)]
    for ti, ki, ci in zip(t, kind, cls):
        is_dn = ki == down
        evs = per_cls.get(ci)
        if evs is None:
            per_cls[ci] = [(ti, not is_dn)]
        else:
            evs.append((ti, not is_dn))
        if is_dn:
            dd = ti - prev_t  # NaN before the first down: neither a flight nor a pause
            if 0.0 <= dd < PAUSE_MS:
                flight.append(dd)
                f_prev.append(prev_c)
                f_cls.append(ci)
                flight_t.append(ti)
            elif dd >= PAUSE_MS:
                pauses += 1
            down_t.append(ti)
            down_cls.append(ci)
            prev_t, prev_c = ti, ci
        else:
            uu = ti - prev_ut
            if 0.0 <= uu < PAUSE_MS:
                release.append(uu)
                r_ids.append(RELEASE_BASE + prev_uc * N_KEY_CLASSES + ci)
                release_t.append(ti)
            prev_ut, prev_uc = ti, ci
    dwell, dwell_cls, dwell_end = [], [], []
    pending = [math.nan] * N_KEY_CLASSES
    latest = -math.inf
    for c in sorted(per_cls):
        evs = per_cls[c]
        if len(evs) > 1:
            evs.sort()  # (time, up): a down sorts before an up at the same time, ties keep their order
            for (t0, up0), (t1, up1) in zip(evs, evs[1:]):
                if not up0 and up1 and 0.0 <= t1 - t0 < MAX_DWELL_MS:
                    dwell.append(t1 - t0)
                    dwell_cls.append(c)
                    dwell_end.append(t1)
        last_t, last_up = evs[-1]
        if not last_up:
            pending[c] = last_t
        if last_t > latest:
            latest = last_t
    limit = latest - MAX_DWELL_MS
    pending = [math.nan if p < limit else p for p in pending]  # a lost key-up must not pair much later
    new_carry = np.array([prev_t, prev_c, *pending, prev_ut, prev_uc] if down_t else
                         [c_list[0], c_list[1], *pending, prev_ut, prev_uc])
    times = dwell_end + flight_t + release_t
    raw = dwell + flight + release
    ids = dwell_cls + [FLIGHT_BASE + p * N_KEY_CLASSES + c for p, c in zip(f_prev, f_cls)] + r_ids
    order = sorted(range(len(times)), key=times.__getitem__)  # stable, as the vectorised argsort
    log = math.log
    n_obs, n_dw, n_fl, n_dn = len(order), len(dwell), len(flight), len(down_t)
    floats = np.array(
        [log(raw[i]) if raw[i] > MIN_LOG_MS else _LOG_MIN for i in order] + [times[i] for i in order] + dwell + flight + down_t,
        dtype=np.float64,
    )
    ints = np.array([ids[i] for i in order] + dwell_cls + f_prev + f_cls + down_cls, dtype=np.int64)
    o1, o2, o3 = n_obs, 2 * n_obs, 2 * n_obs + n_dw
    i1, i2, i3 = n_obs + n_dw, n_obs + n_dw + n_fl, n_obs + n_dw + 2 * n_fl
    return (
        Keystrokes(
            ints[:n_obs],
            floats[:o1],
            floats[o1:o2],
            floats[o2:o3],
            ints[n_obs:i1],
            floats[o3 : o3 + n_fl],
            ints[i1:i2],
            ints[i2:i3],
            floats[o3 + n_fl : o3 + n_fl + n_dn],
            ints[i3 : i3 + n_dn],
            pauses,
        ),
        new_carry,
    )


# ----------------------------------------------------------------------------------------------------- reactions
REACT_CARRY_SIZE = 4  # last input time, last input was a correction, pending prompt stimulus, pending echo


def new_react_carry() -> np.ndarray:
    carry = np.full(REACT_CARRY_SIZE, np.nan)
    carry[1] = 0.0
    return carry


def extract_reactions(
    stim_t: np.ndarray,
    stim_detail: np.ndarray,
    input_t: np.ndarray,
    input_is_correction: np.ndarray,
    carry: np.ndarray,
    local_echo: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reaction latencies (ms) and their types (REACT_PROMPT / REACT_CORRECTION) on one clock.

    A prompt reaction is the first input after the first display change that followed an idle period; a correction
    reaction is a BackSpace (not inside a run of them) after the echo of the key before it. With `local_echo` (a
    browser text field paints a key within a frame of its key down, so no echo stimulus is sent) the key before it
    stands in for its echo where no ECHO stimulus was seen: the same press-to-BackSpace interval the population's
    correction baseline is measured on.
    """
    if len(input_t) + len(stim_t) <= SMALL_BATCH:
        return _extract_reactions_small(
            stim_t.tolist(), stim_detail.tolist(), input_t.tolist(), input_is_correction.tolist(), carry, local_echo
        )
    is_echo = stim_detail == Stimulus.ECHO
    prompt_t = stim_t[~is_echo]
    echo_t = stim_t[is_echo]
    if np.isfinite(carry[2]):
        prompt_t = np.concatenate(([carry[2]], prompt_t))
    if np.isfinite(carry[3]):
        echo_t = np.concatenate(([carry[3]], echo_t))

    new_carry = carry.copy()
    if len(input_t) == 0:
        # nothing answered: keep the earliest prompt and the latest echo pending
        after = prompt_t[prompt_t > carry[0]] if np.isfinite(carry[0]) else prompt_t
        new_carry[2] = after[0] if len(after) else carry[2]
        new_carry[3] = echo_t[-1] if len(echo_t) else carry[3]
        return np.empty(0), np.empty(0, dtype=np.int64), new_carry

    prev_in = np.concatenate(([carry[0]], input_t[:-1]))
    prev_corr = np.concatenate(([carry[1] > 0], input_is_correction[:-1]))
    prev_for_search = np.where(np.isfinite(prev_in), prev_in, -np.inf)

    lat = []
    typ = []
    if len(prompt_t):
        first = np.searchsorted(prompt_t, prev_for_search, side="right")
        end = np.searchsorted(prompt_t, input_t, side="left")
        has = first < end
        s = prompt_t[np.minimum(first, len(prompt_t) - 1)]
        r = input_t - s
        idle = ~np.isfinite(prev_in) | (s - prev_for_search >= IDLE_BEFORE_PROMPT_MS)
        ok = has & idle & (r >= PROMPT_RANGE_MS[0]) & (r <= PROMPT_RANGE_MS[1])
        lat.append(r[ok])
        typ.append(np.full(int(ok.sum()), REACT_PROMPT))
    if len(echo_t) or local_echo:
        if len(echo_t):
            first = np.searchsorted(echo_t, prev_for_search, side="right")
            end = np.searchsorted(echo_t, input_t, side="left")
            has = first < end
            r = input_t - echo_t[np.maximum(end - 1, 0)]
        else:
            has = np.zeros(len(input_t), dtype=bool)
            r = np.zeros(len(input_t))
        if local_echo:
            r = np.where(has, r, input_t - prev_for_search)
            has = has | np.isfinite(prev_in)
        ok = has & input_is_correction & ~prev_corr & (r >= CORRECTION_RANGE_MS[0]) & (r <= CORRECTION_RANGE_MS[1])
        lat.append(r[ok])
        typ.append(np.full(int(ok.sum()), REACT_CORRECTION))

    last_in = input_t[-1]
    new_carry[0] = last_in
    new_carry[1] = float(input_is_correction[-1])
    pending_prompt = prompt_t[prompt_t > last_in]
    new_carry[2] = pending_prompt[0] if len(pending_prompt) else np.nan
    pending_echo = echo_t[echo_t > last_in]
    new_carry[3] = pending_echo[-1] if len(pending_echo) else np.nan
    if not lat:
        return np.empty(0), np.empty(0, dtype=np.int64), new_carry
    return np.concatenate(lat), np.concatenate(typ).astype(np.int64), new_carry


def _extract_reactions_small(stim_t: list, stim_detail: list, input_t: list, is_corr: list, carry: np.ndarray,
                             local_echo: bool = False):
    """extract_reactions for an online batch: the same rules with bisect on short lists."""
    echo = int(Stimulus.ECHO)
    prompt_t = [t for t, d in zip(stim_t, stim_detail) if d != echo]
    echo_t = [t for t, d in zip(stim_t, stim_detail) if d == echo]
    c0, c1, c2, c3 = (float(v) for v in carry)
    if not math.isnan(c2):
        prompt_t.insert(0, c2)
    if not math.isnan(c3):
        echo_t.insert(0, c3)
    new_carry = carry.copy()
    if not input_t:
        after = [p for p in prompt_t if p > c0] if not math.isnan(c0) else prompt_t
        new_carry[2] = after[0] if after else c2
        new_carry[3] = echo_t[-1] if echo_t else c3
        return np.empty(0), np.empty(0, dtype=np.int64), new_carry
    prompts, corrections = [], []
    prev, prev_corr = c0, c1 > 0
    lo_p, hi_p = PROMPT_RANGE_MS
    lo_c, hi_c = CORRECTION_RANGE_MS
    for t, corr in zip(input_t, is_corr):
        search = -math.inf if math.isnan(prev) else prev
        if prompt_t:
            first = bisect_right(prompt_t, search)
            if first < bisect_left(prompt_t, t):
                s = prompt_t[first]
                r = t - s
                if (math.isnan(prev) or s - search >= IDLE_BEFORE_PROMPT_MS) and lo_p <= r <= hi_p:
                    prompts.append(r)
        if corr and not prev_corr and (echo_t or local_echo):
            end = bisect_left(echo_t, t) if echo_t else 0
            if echo_t and bisect_right(echo_t, search) < end:
                r = t - echo_t[end - 1]
            elif local_echo and not math.isnan(prev):
                r = t - prev
            else:
                r = -1.0
            if lo_c <= r <= hi_c:
                corrections.append(r)
        prev, prev_corr = t, corr
    last_in = input_t[-1]
    new_carry[0] = last_in
    new_carry[1] = float(is_corr[-1])
    k = bisect_right(prompt_t, last_in)
    new_carry[2] = prompt_t[k] if k < len(prompt_t) else np.nan
    new_carry[3] = echo_t[-1] if echo_t and echo_t[-1] > last_in else np.nan
    if not prompts and not corrections:
        return np.empty(0), np.empty(0, dtype=np.int64), new_carry
    types = np.zeros(len(prompts) + len(corrections), dtype=np.int64)
    types[len(prompts) :] = REACT_CORRECTION
    return np.array(prompts + corrections, dtype=np.float64), types, new_carry


# ------------------------------------------------------------------------------------------------------- pointer
POINTER_CARRY_SIZE = 8  # last t, x, y; open stroke: points, length, start t, start x, start y


def new_pointer_carry() -> np.ndarray:
    carry = np.full(POINTER_CARRY_SIZE, np.nan)
    carry[3] = 0.0
    return carry


@dataclass(frozen=True, slots=True)
class PointerStrokes:
    straightness: np.ndarray  # chord / path length per finished stroke
    speed: np.ndarray  # px per ms
    rate_hz: np.ndarray  # samples per second
    duration_ms: np.ndarray


def extract_pointer(t: np.ndarray, x: np.ndarray, y: np.ndarray, breaks: np.ndarray, carry: np.ndarray):
    """Finished pointer strokes from moves sorted by time. `breaks` marks events that end a stroke (buttons)."""
    ok = np.isfinite(x) & np.isfinite(y)
    t, x, y, breaks = t[ok], x[ok], y[ok], breaks[ok]
    empty = PointerStrokes(np.empty(0), np.empty(0), np.empty(0), np.empty(0))
    if len(t) == 0:
        return empty, carry.copy()
    pt = np.concatenate(([carry[0]], t))
    px = np.concatenate(([carry[1]], x))
    py = np.concatenate(([carry[2]], y))
    gap = np.diff(pt)
    step = np.hypot(np.diff(px), np.diff(py))
    new_stroke = ~np.isfinite(gap) | (gap > POINTER_STROKE_GAP_MS) | breaks
    step = np.where(new_stroke, 0.0, step)
    seg = np.cumsum(new_stroke)  # 0 = continues the carried stroke
    n_seg = int(seg[-1]) + 1
    counts = np.bincount(seg, minlength=n_seg).astype(np.float64)
    lengths = np.bincount(seg, weights=step, minlength=n_seg)
    idx = np.arange(len(t))
    first_idx = np.full(n_seg, -1)
    starts = np.flatnonzero(new_stroke)
    first_idx[seg[starts]] = starts
    last_idx = np.zeros(n_seg, dtype=np.int64)
    last_idx[seg] = idx  # later indices overwrite earlier: the last point of each segment
    start_t = np.where(first_idx >= 0, t[np.maximum(first_idx, 0)], carry[5])
    start_x = np.where(first_idx >= 0, x[np.maximum(first_idx, 0)], carry[6])
    start_y = np.where(first_idx >= 0, y[np.maximum(first_idx, 0)], carry[7])
    in_batch = np.bincount(seg, minlength=n_seg) > 0
    carried = float(carry[3]) if np.isfinite(carry[3]) else 0.0
    if first_idx[0] < 0:  # segment 0 continues (or just closes) the stroke carried from the last batch
        counts[0] += carried
        lengths[0] += carry[4] if np.isfinite(carry[4]) else 0.0
    present = in_batch.copy()
    present[0] = in_batch[0] or carried > 0
    end_t, end_x, end_y = t[last_idx], x[last_idx], y[last_idx]
    if not in_batch[0]:
        end_t[0], end_x[0], end_y[0] = carry[0], carry[1], carry[2]

    new_carry = np.array(
        [t[-1], x[-1], y[-1], counts[-1], lengths[-1], start_t[-1], start_x[-1], start_y[-1]], dtype=np.float64
    )
    # all but the last segment are finished strokes
    done = present.copy()
    done[-1] = False
    done &= counts >= MIN_STROKE_POINTS
    done &= np.isfinite(start_t)
    if not np.any(done):
        return empty, new_carry
    chord = np.hypot(end_x[done] - start_x[done], end_y[done] - start_y[done])
    length = lengths[done]
    dur = np.maximum(end_t[done] - start_t[done], 1.0)
    moving = length > 0
    straight = np.where(moving, chord / np.where(moving, length, 1.0), 1.0)
    return (
        PointerStrokes(straight[moving], length[moving] / dur[moving], 1000.0 * counts[done][moving] / dur[moving], dur[moving]),
        new_carry,
    )


# ------------------------------------------------------------------------------------------- pointer arrival -> click
# The pointer has arrived when it stops leaving a small circle; the click that follows is the reaction. Many clicks
# land while the pointer still creeps (settle ~0 ms): SETTLE_OFFSET_MS keeps those on a log scale (the reaction
# latency is settle + offset), so the model sees one continuous quantity.
SETTLE_RADIUS_PX = 3.0
SETTLE_OFFSET_MS = 50.0
SETTLE_MAX_MS = 2000.0
SETTLE_RANGE_MS = (SETTLE_OFFSET_MS, SETTLE_OFFSET_MS + SETTLE_MAX_MS)
SETTLE_CARRY_SIZE = 5  # arrival t, x, y, arrival came from a movement (1/0), last pointer sample t


def new_settle_carry() -> np.ndarray:
    carry = np.full(SETTLE_CARRY_SIZE, np.nan)
    carry[3] = 0.0
    return carry


def extract_settle(t: np.ndarray, x: np.ndarray, y: np.ndarray, is_down: np.ndarray, carry: np.ndarray):
    """(latencies in ms = arrival -> button press + SETTLE_OFFSET_MS, new carry) from pointer moves and presses sorted
    by time. A press counts only when the pointer arrived where it was pressed by moving there (not after resting
    for long, not a second click without a new approach)."""
    new = carry.copy()
    if len(t) == 0:
        return np.empty(0), new
    out = []
    at, ax, ay, moved, last = (float(v) for v in new)
    r2 = SETTLE_RADIUS_PX * SETTLE_RADIUS_PX
    # plain Python: a batch holds at most a few dozen pointer samples, and each step depends on the previous one
    for ti, xi, yi, down in zip(t.tolist(), x.tolist(), y.tolist(), is_down.tolist()):
        if math.isnan(xi) or math.isnan(yi):
            continue
        fresh = not (ti - last <= POINTER_STROKE_GAP_MS * 5)  # also True when `last` is NaN
        far = math.isnan(at) or (xi - ax) * (xi - ax) + (yi - ay) * (yi - ay) > r2
        if down:
            settle = ti - at
            if not far and not fresh and moved > 0 and 0.0 <= settle <= SETTLE_MAX_MS:
                out.append(settle + SETTLE_OFFSET_MS)
            moved = 0.0
            at, ax, ay = ti, xi, yi
        elif far or fresh:
            at, ax, ay = ti, xi, yi
            moved = 0.0 if fresh else 1.0
        last = ti
    new[:] = (at, ax, ay, moved, last)
    return np.asarray(out, dtype=np.float64), new
