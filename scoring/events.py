"""One typed representation for input events from every source.

Events travel in batches: numpy structured arrays of EVENT_DTYPE. Two clocks are kept side by side because the
difference between them is itself evidence: `t_src` is when the event happened where it was produced (the
browser's clock for the sensor; for remote-desktop protocols that carry no timestamps it equals `t_arr`), and
`t_arr` is when it reached the gateway. Both are milliseconds; `t_arr` is Unix epoch ms, `t_src` may be on any
monotone origin (only differences within one source are used).

No field ever holds a character: keys are reduced to `KeyClass` at the point of capture.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Kind(IntEnum):
    KEY_DOWN = 1
    KEY_UP = 2
    POINTER_MOVE = 3
    POINTER_DOWN = 4
    POINTER_UP = 5
    WHEEL = 6
    STIMULUS = 7  # a display change the user may react to; `detail` is a Stimulus
    PROBE = 8  # an application-level RTT sample in `value` (ms); `detail` is a Probe
    NET = 9  # a kernel TCP RTT sample in `value` (ms), `y` holds rttvar (ms)
    FOCUS = 10  # focus/visibility change; `detail` is a Focus


class Source(IntEnum):
    SENSOR = 1
    GUACAMOLE = 2
    RFB = 3
    TERMINAL = 4
    GATEWAY = 5  # measurements the gateway makes itself (TCP_INFO)


class Stimulus(IntEnum):
    OTHER = 0
    PAGE_READY = 1
    FRAME = 2  # a new remote-desktop frame
    OUTPUT = 3  # a burst of terminal output
    DIALOG = 4
    FIELD_APPEARED = 5  # a change near the focused element
    ECHO = 6  # the echo of the user's own input (terminal, typo shown)


class Probe(IntEnum):
    OTHER = 0
    SENSOR_PING = 1
    GUAC_SYNC = 2
    GUAC_PING = 3
    WS_PING = 4


class Focus(IntEnum):
    FOCUS = 1
    BLUR = 2
    VISIBLE = 3
    HIDDEN = 4


EVENT_DTYPE = np.dtype(
    [
        ("t_src", "<f8"),  # ms at the source
        ("t_arr", "<f8"),  # Unix epoch ms at the gateway
        ("kind", "u1"),  # Kind
        ("key", "u1"),  # KeyClass for key events, else 0
        ("detail", "u1"),  # Stimulus / Probe / Focus / pointer button mask
        ("source", "u1"),  # Source
        ("x", "<f4"),  # pointer position (px), NaN when not a pointer event
        ("y", "<f4"),
        ("value", "<f4"),  # RTT ms for PROBE/NET, wheel delta for WHEEL, else 0
    ]
)

KEY_KINDS = (Kind.KEY_DOWN, Kind.KEY_UP)
POINTER_KINDS = (Kind.POINTER_MOVE, Kind.POINTER_DOWN, Kind.POINTER_UP, Kind.WHEEL)

# A batch larger than this is refused at the edge; the gateway splits or drops, never grows without bound.
MAX_BATCH = 4096
# Timestamps outside (now - MAX_AGE_MS, now + MAX_SKEW_MS) on the arrival clock are absurd.
MAX_AGE_MS = 24 * 3600 * 1000.0
MAX_SKEW_MS = 60 * 1000.0


def empty(n: int = 0) -> np.ndarray:
    """A zeroed batch of n events (x, y NaN)."""
    batch = np.zeros(n, dtype=EVENT_DTYPE)
    batch["x"] = np.nan
    batch["y"] = np.nan
    return batch


def make_batch(
    t_src,
    t_arr,
    kind,
    *,
    key=0,
    detail=0,
    source=Source.SENSOR,
    x=np.nan,
    y=np.nan,
    value=0.0,
) -> np.ndarray:
    """Builds a batch from column values (scalars broadcast)."""
    t_src = np.atleast_1d(np.asarray(t_src, dtype=np.float64))
    batch = empty(len(t_src))
    batch["t_src"] = t_src
    batch["t_arr"] = t_arr
    batch["kind"] = kind
    batch["key"] = key
    batch["detail"] = detail
    batch["source"] = source
    batch["x"] = x
    batch["y"] = y
    batch["value"] = value
    return batch


def concat(batches) -> np.ndarray:
    batches = [b for b in batches if len(b)]
    if not batches:
        return empty(0)
    return np.concatenate(batches)


def sanitize(batch: np.ndarray, now_ms: float | None = None) -> tuple[np.ndarray, int]:
    """Returns (clean batch sorted by source time, number of events dropped).

    Drops events with NaN/inf times, unknown kinds, absurd arrival times (when `now_ms` is given) and exact
    duplicates; sorts by (t_src, t_arr) so that detectors may assume order. Unknown key classes become
    KeyClass.UNKNOWN rather than being dropped: the timing is still evidence.
    """
    from .keys import KeyClass  # local: keys imports nothing from here, but keep the module graph one-way

    if batch.dtype != EVENT_DTYPE:
        raise TypeError(f"expected EVENT_DTYPE, got {batch.dtype}")
    n0 = len(batch)
    if n0 == 0:
        return batch, 0
    ok = np.isfinite(batch["t_src"]) & np.isfinite(batch["t_arr"])
    ok &= (batch["kind"] >= Kind.KEY_DOWN) & (batch["kind"] <= max(Kind))
    if now_ms is not None:
        ok &= (batch["t_arr"] > now_ms - MAX_AGE_MS) & (batch["t_arr"] < now_ms + MAX_SKEW_MS)
    clean = batch[ok]
    if len(clean):
        clean = clean.copy()
        clean["key"] = np.where(clean["key"] < len(KeyClass), clean["key"], KeyClass.UNKNOWN)
        t_src, t_arr = clean["t_src"], clean["t_arr"]
        # batches usually arrive in order: skip the sort when (t_src, t_arr) is already non-decreasing
        step = np.diff(t_src)
        tie = step == 0
        if np.any(step < 0) or np.any(np.diff(t_arr)[tie] < 0):
            clean = clean[np.lexsort((t_arr, t_src))]
            tie = np.diff(clean["t_src"]) == 0
        if np.any(tie):
            # exact duplicates sit next to each other with the same t_src; compare raw records there so that NaN
            # pointer fields still count as equal
            raw = np.frombuffer(clean.tobytes(), dtype=f"V{EVENT_DTYPE.itemsize}")
            same = np.zeros(len(clean), dtype=bool)
            same[1:] = tie & (raw[1:] == raw[:-1])
            clean = clean[~same]
    return clean, n0 - len(clean)
