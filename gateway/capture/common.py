"""What every inline parser shares: limits, the enforcement filter, the per-call result and event building.

A parser is fed each WebSocket message / TCP chunk as it passes and answers with the events it saw (already
reduced to timing and key classes) and the data to forward in place of what it was given. Parsers never keep a
character, keysym or field value beyond the call; the only thing that can outlive a call is the unfinished tail of
a protocol message, held until the rest arrives so that it can be forwarded (or dropped) whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from scoring.events import EVENT_DTYPE, Kind, Source

_NAN = float("nan")


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what a parser will buffer or accept; anything beyond them turns the stream opaque."""

    # Guacamole: libguac's own limits (GUAC_INSTRUCTION_MAX_LENGTH / _ELEMENTS), in code points
    max_instruction: int = 8192
    max_elements: int = 128
    # outstanding sync / ping probes and blocked streams remembered per connection
    max_pending_probes: int = 64
    max_blocked_streams: int = 64
    # RFB
    max_cut_text: int = 16 * 1024 * 1024  # ClientCutText / ServerCutText body (streamed, never buffered)
    max_encodings: int = 512  # SetEncodings count
    max_name: int = 4096  # ServerInit / DesktopName name length
    max_rect_bytes: int = 256 * 1024 * 1024  # one rectangle's payload (streamed, never buffered)
    # Remove the ExtendedMouseButtons pseudo-encoding (-316) from SetEncodings so that a PointerEvent is always
    # 6 bytes: with it the length depends on a server confirmation that may hide inside an unparsed update.
    strip_extended_pointer: bool = True
    # server bursts closer than this are one FRAME stimulus when updates cannot be told apart
    frame_gap_ms: float = 10.0
    # terminal
    paste_min_units: int = 2  # an input frame with at least this many keys is a paste, not typing
    max_terminal_frame: int = 64 * 1024  # longer input frames are not decoded (still a paste)
    echo_window_ms: float = 1000.0  # output this soon after a keystroke may be its echo
    echo_max_chars: int = 16  # ... if it is at most this long
    output_gap_ms: float = 50.0  # output frames closer than this are one OUTPUT stimulus

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool):
                continue
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"capture limit {name} must be a non-negative number, got {value!r}")
        for name in ("max_instruction", "max_elements", "max_encodings", "paste_min_units"):
            if getattr(self, name) < 1:
                raise ValueError(f"capture limit {name} must be at least 1")


@dataclass(frozen=True, slots=True)
class Filter:
    """What enforcement wants removed from the stream right now."""

    block_clipboard: bool = False
    block_file_transfer: bool = False
    hold_input: bool = False  # drop key/pointer input (releases still pass, so nothing stays stuck down)

    @property
    def active(self) -> bool:
        return self.block_clipboard or self.block_file_transfer or self.hold_input


NO_FILTER = Filter()


class Opacity(StrEnum):
    """Why a stream's input (the client side) is no longer parsed, as far as policies care (`session.opaque_*`)."""

    # not the protocol, or not a part of it the parser reads, or over a bound no genuine client comes near: a
    # genuine client of the route's protocol does not send it (the Guacamole bounds are libguac's own, which guacd
    # enforces too; an RFB SetEncodings of more than max_encodings lists twenty times what real viewers send)
    MALFORMED = "malformed"
    # a well-formed message that genuine use can make larger than the parser's bound: an RFB clipboard over
    # max_cut_text (someone copies a large file's text)
    OVERSIZED = "oversized"


@dataclass(slots=True)
class Result:
    """What one feed call saw and what to send on.

    `forward` replaces the data that was fed (same type: str or bytes); empty means send nothing. `reply` is data
    to send back towards the sender (e.g. a Guacamole `ack` refusing a blocked upload), empty if none.
    `transfer` is set when clipboard or file-transfer traffic was seen (blocked or not).
    `opaque` means this direction is no longer parsed: data passes through untouched, no events come out and no
    filter can be applied (`reason` says why).
    """

    events: np.ndarray
    forward: bytes | str
    dropped: int = 0
    transfer: bool = False
    opaque: bool = False
    reason: str | None = None
    reply: bytes | str = b""
    pasted: int = 0  # terminal: input frames recognised as pastes (no key events come from them)


class EventSink:
    """Collects event rows during one call; `batch()` turns them into an EVENT_DTYPE array."""

    __slots__ = ("rows", "source")

    def __init__(self, source: Source) -> None:
        self.source = int(source)
        self.rows: list[tuple] = []

    def add(self, t: float, kind: Kind, *, key: int = 0, detail: int = 0, x: float = _NAN, y: float = _NAN,
            value: float = 0.0) -> None:
        # t_src == t_arr: these protocols carry no input timestamps
        self.rows.append((t, t, int(kind), int(key), int(detail) & 0xFF, self.source, x, y, value))

    def batch(self) -> np.ndarray:
        if not self.rows:
            return np.zeros(0, dtype=EVENT_DTYPE)
        return np.array(self.rows, dtype=EVENT_DTYPE)


# pointer buttons as X11/RFB/Guacamole number them: bits 0-2 left/middle/right, 3-6 wheel steps (a press is one
# step), 7 and up further buttons (back/forward, RFB ExtendedMouseButtons)
WHEEL_BITS = 0x78
WHEEL_STEPS = ((0x08, 0.0, -1.0), (0x10, 0.0, 1.0), (0x20, -1.0, 0.0), (0x40, 1.0, 0.0))  # (bit, dx, dy)


def pointer_events(sink: EventSink, t: float, prev_mask: int, mask: int, x: float, y: float) -> None:
    """Turns one absolute pointer report into DOWN/UP per changed button, WHEEL per wheel press, else MOVE.

    `detail` keeps the low 8 bits of the button mask (the event field is one byte).
    WHEEL `value` is the vertical step (+1 down, -1 up, the sign of DOM deltaY); a horizontal step has value 0 and
    the wheel bit in `detail`.
    """
    mask &= 0xFFFF  # button masks are small; a negative or huge one must not make the bit loop below endless
    prev_mask &= 0xFFFF
    pressed = mask & ~prev_mask
    released = prev_mask & ~mask
    emitted = False
    changed = (pressed | released) & ~WHEEL_BITS
    while changed:
        bit = changed & -changed
        changed ^= bit
        sink.add(t, Kind.POINTER_DOWN if pressed & bit else Kind.POINTER_UP, detail=mask, x=x, y=y)
        emitted = True
    for bit, _dx, dy in WHEEL_STEPS:
        if pressed & bit:
            sink.add(t, Kind.WHEEL, detail=bit, x=x, y=y, value=dy)
            emitted = True
    if not emitted:
        sink.add(t, Kind.POINTER_MOVE, detail=mask, x=x, y=y)


def is_pure_release(prev_mask: int, mask: int) -> bool:
    """True when a pointer report only lifts buttons that are down: safe to let through while input is held."""
    return mask != prev_mask and (mask & ~prev_mask) == 0
