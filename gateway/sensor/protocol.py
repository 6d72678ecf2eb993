"""The sensor's wire format, and its strict decoding into event batches.

Transport: a WebSocket at `/.ztgate/sensor?token=<page token>` (text frames, UTF-8 JSON), or, when no socket is
available and when the page goes away, `navigator.sendBeacon` POSTs of the same batch messages to
`/.ztgate/sensor/beacon?token=<page token>` (body `text/plain;charset=UTF-8`). The token (gateway/sensor/tokens.py)
names the page and is bound to the session; the session cookie rides along because both are same-origin.

Sensor -> gateway, a batch:

    {"v": 1, "s": <seq>, "o": <timeOrigin>, "e": [<event>, ...], "d": <dropped>, "u": <untrusted>}

    v  protocol version, 1
    s  sequence number, 1, 2, 3, ... per page (a page is one token); never resent, so a repeat is a replay
    o  performance.timeOrigin of the page: Unix epoch ms on the browser's clock
    e  up to 200 events (the gateway accepts `Limits.max_events`), each a JSON array [kind, t, ...]:
       t is `event.timeStamp` (ms since timeOrigin); kind is scoring.events.Kind:
         [1, t, keyclass]                 KEY_DOWN   keyclass: scoring.keys.KeyClass, reduced in the browser
         [2, t, keyclass]                 KEY_UP     (autorepeat is skipped; password fields report class 0
                                                      except Enter/Backspace/Tab)
         [3, t, x, y]                     POINTER_MOVE  (clientX/Y px; at most one per 15 ms)
         [4, t, x, y, button_bit]         POINTER_DOWN  (button_bit in MouseEvent.buttons order: 1, 2, 4, ...)
         [5, t, x, y, button_bit]         POINTER_UP
         [6, t, x, y, delta]              WHEEL      (deltaY in px, summed over at most 15 ms)
         [7, t, stimulus(, value)]        STIMULUS   scoring.events.Stimulus; for PAGE_READY the value says
                                                      0 = load, 1 = SPA navigation, 2 = back/forward-cache restore
         [10, t, focus]                   FOCUS      scoring.events.Focus (window focus/blur, visibility)
    d  (optional) events the sensor dropped because its buffer was full since the last batch
    u  (optional) untrusted (script-generated) input events seen and ignored since the last batch

Sensor -> gateway, a pong (sent the moment a ping arrives; it carries no sequence number):

    {"pong": <ping id>, "t": <performance.now() at the page>}

Gateway -> sensor, a ping (gateway/sensor/pings.py):

    {"ping": <id>}

Decoding is strict: anything structurally wrong (size, JSON, types, arity, ranges, unknown kinds or classes)
raises SensorProtocolError naming the reason and the message is refused as a whole; soft oddities (an event far
behind its predecessor, a browser clock far from ours) are reported in `Decoded.problems`, and the affected events
are left out while the rest of the batch is kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from scoring.events import Focus, Kind, Source, Stimulus, empty
from scoring.keys import KeyClass

PROTOCOL_VERSION = 1

_KEY_CLASSES = frozenset(int(k) for k in KeyClass)
_STIMULI = frozenset(int(s) for s in Stimulus)
_FOCUS = frozenset(int(f) for f in Focus)
# kind -> number of elements of its event array (optional trailing value for STIMULUS)
_ARITY: dict[int, tuple[int, ...]] = {
    Kind.KEY_DOWN: (3,),
    Kind.KEY_UP: (3,),
    Kind.POINTER_MOVE: (4,),
    Kind.POINTER_DOWN: (5,),
    Kind.POINTER_UP: (5,),
    Kind.WHEEL: (5,),
    Kind.STIMULUS: (3, 4),
    Kind.FOCUS: (3,),
}
_BATCH_KEYS = frozenset({"v", "s", "o", "e", "d", "u"})
_PONG_KEYS = frozenset({"pong", "t"})
_MAX_SAFE_INT = 2**53 - 1
# timeOrigin must be a plausible Unix epoch ms: after 2001-09-09 and before 2286
_ORIGIN_RANGE = (1e12, 1e13)


class SensorProtocolError(ValueError):
    """A sensor message was refused. `reason` is a short stable code for counters and logs."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int = 64 * 1024
    max_events: int = 512
    max_event_time_ms: float = 1e10  # ~115 days since the page's timeOrigin
    max_coordinate: float = 1e6
    max_wheel_delta: float = 1e6
    # events this far behind the latest one in the same batch are dropped (event types are not strictly ordered)
    max_backstep_ms: float = 2000.0
    # a browser clock this far from ours is reported (not refused: clocks are often wrong, and only
    # differences within one source are used for scoring)
    max_clock_skew_ms: float = 24 * 3600 * 1000.0

    def __post_init__(self) -> None:
        for name in ("max_message_bytes", "max_events"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Limits.{name} must be >= 1")
        for name in ("max_event_time_ms", "max_coordinate", "max_wheel_delta", "max_backstep_ms", "max_clock_skew_ms"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"Limits.{name} must be a positive finite number")


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Pong:
    ping_id: int
    t_page_ms: float  # performance.now() at the page when the ping was answered


@dataclass(frozen=True, slots=True)
class Decoded:
    session_id: str
    page: str
    events: np.ndarray  # EVENT_DTYPE, source SENSOR, t_src = timeOrigin + timeStamp, t_arr = now_ms
    seq: int | None  # None for a pong
    pongs: list[Pong] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    time_origin: float | None = None
    dropped: int = 0  # events the sensor dropped (its buffer was full)
    untrusted: int = 0  # script-generated input events the sensor ignored

    @property
    def n_keys(self) -> int:
        return int(np.count_nonzero(self.events["kind"] == Kind.KEY_DOWN))


def _reject_constant(name: str):
    raise SensorProtocolError("not_json", f"{name} is not a JSON number")


def _int(value, what: str, lo: int, hi: int) -> int:
    # bool is an int in Python and in nothing else
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise SensorProtocolError("bad_value", f"{what} must be an integer in [{lo}, {hi}], got {value!r:.40}")
    return value


def _number(value, what: str, lo: float, hi: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise SensorProtocolError("bad_value", f"{what} must be a number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and lo <= value <= hi):
        raise SensorProtocolError("bad_value", f"{what} must be in [{lo:g}, {hi:g}], got {value!r:.40}")
    return value


def _parse(message: bytes | str, limits: Limits) -> dict:
    if isinstance(message, str):
        if len(message) > limits.max_message_bytes:
            raise SensorProtocolError("oversized", f"message over {limits.max_message_bytes} bytes")
        raw = message.encode("utf-8", "surrogatepass")
    elif isinstance(message, bytes | bytearray | memoryview):
        raw = bytes(message)
    else:
        raise SensorProtocolError("not_json", f"expected bytes or str, got {type(message).__name__}")
    if len(raw) > limits.max_message_bytes:
        raise SensorProtocolError("oversized", f"message of {len(raw)} bytes, limit {limits.max_message_bytes}")
    try:
        text = raw.decode("utf-8")
        data = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise SensorProtocolError("not_utf8", f"message is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise SensorProtocolError("not_json", f"message is not JSON ({exc.msg} at {exc.pos})") from None
    except ValueError:  # an integer literal past Python's digit limit (not a JSONDecodeError)
        raise SensorProtocolError("not_json", "message has a number too long to read") from None
    except RecursionError:
        raise SensorProtocolError("not_json", "message nests too deeply") from None
    if not isinstance(data, dict):
        raise SensorProtocolError("bad_shape", f"message must be a JSON object, got {type(data).__name__}")
    return data


def decode(
    message: bytes | str,
    *,
    session_id: str,
    page: str,
    now_ms: float,
    limits: Limits = DEFAULT_LIMITS,
) -> Decoded:
    """Validates one sensor message and converts it into an EVENT_DTYPE batch (or a pong).

    `now_ms` is the gateway's Unix epoch ms at arrival; it becomes every event's `t_arr`.
    Raises SensorProtocolError for anything that is not a well-formed message of this protocol.
    """
    data = _parse(message, limits)
    if "pong" in data:
        return _decode_pong(data, session_id, page)
    return _decode_batch(data, session_id, page, float(now_ms), limits)


def _decode_pong(data: dict, session_id: str, page: str) -> Decoded:
    unknown = set(data) - _PONG_KEYS
    if unknown or "t" not in data:
        raise SensorProtocolError("bad_shape", f"a pong has exactly the keys pong, t (got {sorted(data)})")
    pong = Pong(_int(data["pong"], "pong", 0, _MAX_SAFE_INT), _number(data["t"], "t", 0.0, 1e10))
    return Decoded(session_id, page, empty(0), None, [pong])


def _decode_batch(data: dict, session_id: str, page: str, now_ms: float, limits: Limits) -> Decoded:
    unknown = set(data) - _BATCH_KEYS
    if unknown:
        raise SensorProtocolError("bad_shape", f"unknown keys {sorted(unknown)!r:.80}")
    missing = {"v", "s", "o", "e"} - set(data)
    if missing:
        raise SensorProtocolError("bad_shape", f"missing keys {sorted(missing)}")
    if data["v"] != PROTOCOL_VERSION or isinstance(data["v"], bool):
        raise SensorProtocolError("bad_version", f"protocol version {data['v']!r:.20} (this gateway speaks 1)")
    seq = _int(data["s"], "s", 1, _MAX_SAFE_INT)
    origin = _number(data["o"], "o", *_ORIGIN_RANGE)
    dropped = _int(data.get("d", 0), "d", 0, _MAX_SAFE_INT)
    untrusted = _int(data.get("u", 0), "u", 0, _MAX_SAFE_INT)
    raw_events = data["e"]
    if not isinstance(raw_events, list):
        raise SensorProtocolError("bad_shape", "e must be a list")
    if len(raw_events) > limits.max_events:
        raise SensorProtocolError("too_many_events", f"{len(raw_events)} events, limit {limits.max_events}")

    n = len(raw_events)
    t = np.empty(n, dtype=np.float64)
    kind = np.zeros(n, dtype=np.uint8)
    key = np.zeros(n, dtype=np.uint8)
    detail = np.zeros(n, dtype=np.uint8)
    x = np.full(n, np.nan, dtype=np.float32)
    y = np.full(n, np.nan, dtype=np.float32)
    value = np.zeros(n, dtype=np.float32)
    c = limits.max_coordinate
    for i, ev in enumerate(raw_events):
        where = f"e[{i}]"
        if not isinstance(ev, list) or len(ev) < 2:
            raise SensorProtocolError("bad_event", f"{where} must be a list [kind, t, ...]")
        k = ev[0]
        if isinstance(k, bool) or not isinstance(k, int) or k not in _ARITY:
            raise SensorProtocolError("bad_event", f"{where}: unknown kind {k!r:.20}")
        if len(ev) not in _ARITY[k]:
            raise SensorProtocolError("bad_event", f"{where}: kind {k} takes {_ARITY[k]} elements, got {len(ev)}")
        kind[i] = k
        t[i] = _number(ev[1], f"{where}.t", 0.0, limits.max_event_time_ms)
        if k in (Kind.KEY_DOWN, Kind.KEY_UP):
            key[i] = _int(ev[2], f"{where}.keyclass", 0, len(KeyClass) - 1)
        elif k == Kind.STIMULUS:
            detail[i] = _int(ev[2], f"{where}.stimulus", 0, max(_STIMULI))
            if len(ev) == 4:
                value[i] = _int(ev[3], f"{where}.value", 0, 255)
        elif k == Kind.FOCUS:
            detail[i] = _int(ev[2], f"{where}.focus", min(_FOCUS), max(_FOCUS))
        else:  # pointer kinds
            x[i] = _number(ev[2], f"{where}.x", -c, c)
            y[i] = _number(ev[3], f"{where}.y", -c, c)
            if k in (Kind.POINTER_DOWN, Kind.POINTER_UP):
                detail[i] = _int(ev[4], f"{where}.button", 0, 255)
            elif k == Kind.WHEEL:
                value[i] = _number(ev[4], f"{where}.delta", -limits.max_wheel_delta, limits.max_wheel_delta)

    problems: list[str] = []
    keep = np.ones(n, dtype=bool)
    if n > 1:
        running_max = np.maximum.accumulate(t)
        behind = t < running_max - limits.max_backstep_ms
        if behind.any():
            keep &= ~behind
            problems.append(
                f"{int(behind.sum())} event(s) more than {limits.max_backstep_ms:g} ms behind an earlier event "
                "in the same batch were left out"
            )
    if n:
        skew = origin + float(t.max()) - now_ms
        if abs(skew) > limits.max_clock_skew_ms:
            problems.append(f"browser clock differs from the gateway's by {skew / 3.6e6:+.1f} h")

    events = empty(int(keep.sum()))
    events["t_src"] = origin + t[keep]
    events["t_arr"] = now_ms
    events["kind"] = kind[keep]
    events["key"] = key[keep]
    events["detail"] = detail[keep]
    events["source"] = Source.SENSOR
    events["x"] = x[keep]
    events["y"] = y[keep]
    events["value"] = value[keep]
    return Decoded(session_id, page, events, seq, [], problems, origin, dropped, untrusted)
