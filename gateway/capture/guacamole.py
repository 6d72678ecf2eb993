"""Inline parser for the Apache Guacamole protocol as carried by the WebSocket tunnel (text frames).

Instructions are `LENGTH.VALUE,...;` with LENGTH in Unicode code points (Python str indices, conveniently); one
may span frames and a frame may carry several. Only complete instructions are forwarded: the unfinished tail is
held (bounded by `Limits.max_instruction`) so that a filtered instruction is never half-sent.

Client side: `key` -> KEY_DOWN/KEY_UP (keysym reduced to a KeyClass on the spot), `mouse` -> pointer events,
`sync` echoes close a pending server sync (PROBE GUAC_SYNC), the tunnel's internal ping (`0.,4.ping,N.<ms>;`)
opens a GUAC_PING probe that the server's echo closes, `clipboard`/`file`/`put`/`get` are transfers.
Server side: drawing instructions since the last `sync` become one STIMULUS FRAME at that sync (the client renders
a frame when it handles the sync), `clipboard`/`file`/`body` streams are transfers.

Probe values are gateway-clock differences: GUAC_SYNC = client echo arrival - server sync arrival (client path
plus render time); GUAC_PING = server echo arrival - client ping arrival (the upstream leg behind the gateway).
`touch` instructions are held like other input but produce no events (no touch kind in the event model).
"""

from __future__ import annotations

import codecs

from scoring.events import Kind, Probe, Source, Stimulus
from scoring.keys import from_keysym

from .common import NO_FILTER, EventSink, Filter, Limits, Opacity, Result, is_pure_release, pointer_events

# Guacamole status CLIENT_FORBIDDEN (0x0303): what a refused stream is acknowledged with
_FORBIDDEN = "771"
_DRAW_OPS = frozenset(
    "arc cfill clip close copy cstroke cursor curve dispose distort identity img jpeg lfill line lstroke move "
    "png pop push rect reset set shade size start transfer transform video webp".split()
)
_INPUT_OPS = frozenset(("key", "mouse", "touch"))


class _Bad(Exception):
    """The stream is not (or no longer) well-formed Guacamole: stop parsing it."""


_MAX_DIGITS = 10  # guacd reads numbers with atoi (a C int): anything longer is not a number it would agree on


def _int(text: str, *, signed: bool = True) -> int:
    """A canonical decimal integer, as guacd would read it; anything else is garbage (the stream goes opaque).
    Non-canonical forms ("+97", "01", " 1") are refused rather than guessed: the filter must judge an instruction
    exactly as guacd will act on it."""
    body = text[1:] if signed and text[:1] == "-" else text
    if not (body and len(body) <= _MAX_DIGITS and body.isascii() and body.isdigit()):
        raise _Bad("non-numeric argument")
    if len(body) > 1 and body[0] == "0":
        raise _Bad("non-canonical number")
    return int(text)


def _element(value: str) -> str:
    return f"{len(value)}.{value}"


def _ack(stream: str, message: str) -> str:
    return f"3.ack,{_element(stream)},{_element(message)},{_element(_FORBIDDEN)};"


def parse_instruction(buf: str, pos: int, n: int, max_len: int, max_elements: int) -> tuple[list[str], int] | None:
    """One instruction starting at `pos`: (elements, end) or None if incomplete. Raises _Bad when malformed."""
    elements: list[str] = []
    i = pos
    while True:
        dot = buf.find(".", i, min(n, i + 11))
        if dot < 0:
            rest = buf[i:n]
            if len(rest) >= 11 or (rest and not (rest.isascii() and rest.isdigit())):
                raise _Bad("malformed element length")
            return None
        digits = buf[i:dot]
        if not (digits and digits.isascii() and digits.isdigit()):
            raise _Bad("malformed element length")
        end = dot + 1 + int(digits)
        if end - pos > max_len:
            raise _Bad(f"instruction longer than {max_len} code points")
        if end >= n:
            return None
        elements.append(buf[dot + 1 : end])
        terminator = buf[end]
        if terminator == ";":
            return elements, end + 1
        if terminator != ",":
            raise _Bad("malformed element terminator")
        if len(elements) >= max_elements:
            raise _Bad(f"instruction with more than {max_elements} elements")
        i = end + 1


class _Direction:
    __slots__ = ("buf", "decoder", "opaque", "reason", "blocked")

    def __init__(self) -> None:
        self.buf = ""
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.opaque = False
        self.reason: str | None = None
        self.blocked: dict[str, None] = {}  # stream indices opened by this side that are being dropped


class GuacamoleParser:
    """One parser per tunnel connection; feed each direction's WebSocket text messages in order."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._client = _Direction()
        self._server = _Direction()
        self._pending_syncs: dict[str, float] = {}  # server sync timestamp -> arrival (gateway ms)
        self._pending_pings: dict[str, float] = {}  # client ping timestamp -> arrival (gateway ms)
        self._mask_seen = 0  # last pointer mask the client reported
        self._mask_sent = 0  # last pointer mask forwarded (differs while input is held)
        self._drawn = False  # drawing instructions since the last server sync

    @property
    def opaque(self) -> bool:
        return self._client.opaque or self._server.opaque

    @property
    def reason(self) -> str | None:
        return self._client.reason or self._server.reason

    @property
    def input_opacity(self) -> Opacity | None:
        """Set once the client's instructions are no longer parsed (their input is not scored). Every bound here is
        libguac's own, so a client guacd would serve never crosses one."""
        return Opacity.MALFORMED if self._client.opaque else None

    def feed_client(self, data: str | bytes, t_arr_ms: float, filt: Filter = NO_FILTER) -> Result:
        return self._feed(self._client, self._server, data, t_arr_ms, filt, self._client_instruction)

    def feed_server(self, data: str | bytes, t_arr_ms: float, filt: Filter = NO_FILTER) -> Result:
        return self._feed(self._server, self._client, data, t_arr_ms, filt, self._server_instruction)

    # -- framing ------------------------------------------------------------------------------------------------

    def _feed(self, d: _Direction, other: _Direction, data, t: float, filt: Filter, handle) -> Result:
        as_bytes = not isinstance(data, str)
        sink = EventSink(Source.GUACAMOLE)
        if d.opaque:
            return Result(sink.batch(), data, opaque=True, reason=d.reason, reply=b"" if as_bytes else "")
        if as_bytes:
            pending = d.decoder.getstate()[0]
            try:
                text = d.decoder.decode(bytes(data))
            except UnicodeDecodeError:
                d.opaque, d.reason = True, "invalid UTF-8"
                forward = d.buf.encode() + pending + bytes(data)
                d.buf = ""
                return Result(sink.batch(), forward, opaque=True, reason=d.reason, reply=b"")
        else:
            text = data
        buf = d.buf + text if d.buf else text
        n = len(buf)
        pos = 0
        run_start = 0
        pieces: list[str] = []
        replies: list[str] = []
        dropped = 0
        flags = [False]  # transfer seen
        limits = self.limits
        try:
            while pos < n:
                parsed = parse_instruction(buf, pos, n, limits.max_instruction, limits.max_elements)
                if parsed is None:
                    break
                elements, end = parsed
                if not handle(elements, t, filt, sink, replies, flags):
                    if pos > run_start:
                        pieces.append(buf[run_start:pos])
                    run_start = end
                    dropped += 1
                pos = end
        except (_Bad, ValueError, OverflowError) as bad:  # the latter two: a number no parser step expected
            d.opaque, d.reason = True, str(bad) if isinstance(bad, _Bad) else f"unreadable argument ({type(bad).__name__})"
            pieces.append(buf[run_start:])
            d.buf = ""
            pos = n
        else:
            if pos > run_start:
                pieces.append(buf[run_start:pos])
            d.buf = buf[pos:]
        forward = "".join(pieces)
        reply = "".join(replies)
        if as_bytes:
            forward, reply = forward.encode(), reply.encode()
            if d.opaque:  # bytes of a split code point the decoder still holds
                forward += d.decoder.getstate()[0]
                d.decoder.reset()
        return Result(sink.batch(), forward, dropped, flags[0], d.opaque, d.reason, reply)

    # -- instructions --------------------------------------------------------------------------------------------

    def _client_instruction(self, e: list[str], t: float, filt: Filter, sink: EventSink, replies, flags) -> bool:
        op = e[0]
        if op == "key":
            if len(e) < 3:
                raise _Bad("key instruction without arguments")
            pressed = _int(e[2]) != 0  # guacd: atoi(pressed) != 0; "2" presses a key as "1" does
            sink.add(t, Kind.KEY_DOWN if pressed else Kind.KEY_UP, key=from_keysym(_int(e[1], signed=False)))
            return not (filt.hold_input and pressed)
        if op == "mouse":
            if len(e) < 4:
                raise _Bad("mouse instruction without arguments")
            x, y, mask = _int(e[1]), _int(e[2]), _int(e[3], signed=False)
            pointer_events(sink, t, self._mask_seen, mask, float(x), float(y))
            self._mask_seen = mask
            if filt.hold_input and not is_pure_release(self._mask_sent, mask):
                return False
            self._mask_sent = mask
            return True
        if op == "sync":
            if len(e) >= 2:
                self._close_probe(self._pending_syncs, e[1], t, Probe.GUAC_SYNC, sink)
            return True
        if op == "":
            if len(e) >= 3 and e[1] == "ping":
                self._open_probe(self._pending_pings, e[2], t)
            return True
        if op in _INPUT_OPS:
            return not filt.hold_input
        return self._stream_instruction(self._client, e, filt, replies, flags, client=True)

    def _server_instruction(self, e: list[str], t: float, filt: Filter, sink: EventSink, replies, flags) -> bool:
        op = e[0]
        if op in _DRAW_OPS:
            self._drawn = True
            return True
        if op == "sync":
            if len(e) >= 2:
                self._open_probe(self._pending_syncs, e[1], t)
            if self._drawn:
                sink.add(t, Kind.STIMULUS, detail=Stimulus.FRAME)
                self._drawn = False
            return True
        if op == "":
            if len(e) >= 3 and e[1] == "ping":
                self._close_probe(self._pending_pings, e[2], t, Probe.GUAC_PING, sink)
            return True
        return self._stream_instruction(self._server, e, filt, replies, flags, client=False)

    def _stream_instruction(self, d: _Direction, e: list[str], filt: Filter, replies, flags, *, client: bool) -> bool:
        """Clipboard and file streams opened by side `d`, and the blobs that follow them."""
        op = e[0]
        if op in ("blob", "end"):
            if len(e) < 2:
                raise _Bad(f"{op} instruction without a stream")
            if e[1] in d.blocked:
                if op == "end":
                    del d.blocked[e[1]]
                return False
            return True
        # (stream argument index, blocked by)
        if op == "clipboard":
            where, blocked = 1, filt.block_clipboard
        elif op == "file":
            where, blocked = 1, filt.block_file_transfer
        elif client and op == "put":
            where, blocked = 2, filt.block_file_transfer
        elif not client and op == "body":
            where, blocked = 2, filt.block_file_transfer
        elif client and op == "get":
            flags[0] = True
            return not filt.block_file_transfer
        elif not client and op == "filesystem":
            return not filt.block_file_transfer
        else:
            return True
        if len(e) <= where:
            raise _Bad(f"{op} instruction without a stream")
        flags[0] = True
        stream = e[where]
        if not blocked:
            d.blocked.pop(stream, None)
            return True
        if len(d.blocked) >= self.limits.max_blocked_streams:
            # forgetting the oldest is safe: blobs for a stream the peer never saw opened are ignored by it
            del d.blocked[next(iter(d.blocked))]
        d.blocked[stream] = None
        replies.append(_ack(stream, "Transfer blocked by policy"))
        return False

    def _open_probe(self, pending: dict[str, float], stamp: str, t: float) -> None:
        if stamp in pending:
            return
        if len(pending) >= self.limits.max_pending_probes:
            del pending[next(iter(pending))]
        pending[stamp] = t

    @staticmethod
    def _close_probe(pending: dict[str, float], stamp: str, t: float, probe: Probe, sink: EventSink) -> None:
        t0 = pending.get(stamp)
        if t0 is None:
            return
        # older probes were overtaken by this one's answer: they will not be answered separately
        while pending:
            key = next(iter(pending))
            del pending[key]
            if key == stamp:
                break
        sink.add(t, Kind.PROBE, detail=probe, value=t - t0)
