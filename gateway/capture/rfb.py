"""Inline parser for RFB (RFC 6143): raw VNC over TCP, or noVNC's WebSocket binary frames (the same bytes).

Both directions are byte streams fed in whatever pieces they arrive. The handshake is tracked first (versions
3.3/3.7/3.8, security None or VNC authentication, SecurityResult, ClientInit, ServerInit); after it every client
message is parsed at its boundaries, so input can be reduced to events and filtered by rewriting the stream
(`forward` holds only whole messages; an unfinished one waits for its remaining bytes).

Server messages are parsed too, rectangle by rectangle for the encodings whose length can be bounded cheaply
(Raw, CopyRect, RRE, CoRRE, Hextile, zlib, ZRLE, Tight/TightPNG and the common pseudo-encodings); each
FramebufferUpdate with visible content is one STIMULUS FRAME. An update in any other encoding (or an unknown
server message) switches the server direction to burst mode: bytes pass untouched, a FRAME is marked for each
burst after `frame_gap_ms` of quiet, and results report `opaque` because ServerCutText can no longer be filtered.

Anything unknown or inconsistent on the client side, or in the handshake, stops parsing (opaque): bytes pass
untouched, no more events come out, `reason` says why. Nothing is guessed. The VNC authentication challenge and
response are skipped, never kept.
"""

from __future__ import annotations

import re
from struct import unpack_from

from scoring.events import Kind, Source, Stimulus
from scoring.keys import from_keysym

from .common import NO_FILTER, EventSink, Filter, Limits, Opacity, Result, is_pure_release, pointer_events

_VERSION = re.compile(rb"RFB (\d{3})\.(\d{3})\n")
EXTENDED_MOUSE_BUTTONS = -316
_SECURITY_NONE, _SECURITY_VNC = 1, 2
_CURSOR, _XCURSOR = -239, -240


class _Bad(Exception):
    """Not well-formed (or not supported) RFB: stop parsing this stream."""


class _Oversized(_Bad):
    """A well-formed client message over one of the parser's size bounds: parsing stops all the same (nothing says
    how the server frames what it refuses), but a genuine user can send one."""


class _Burst(Exception):
    """Server messages can no longer be delimited: fall back to burst timing."""


class _Ctx:
    __slots__ = ("sink", "out", "filt", "t", "dropped", "transfer")

    def __init__(self, sink: EventSink, filt: Filter, t: float) -> None:
        self.sink = sink
        self.out = bytearray()
        self.filt = filt
        self.t = t
        self.dropped = 0
        self.transfer = False


class _Direction:
    __slots__ = ("buf", "state", "skip", "skip_forward", "opaque", "reason")

    def __init__(self, state: str) -> None:
        self.buf = b""
        self.state = state
        self.skip = 0  # bytes of a message body still to pass through (or drop)
        self.skip_forward = True
        self.opaque = False
        self.reason: str | None = None


def _compact_length(buf, pos: int, end: int) -> tuple[int, int] | None:
    """Tight's 1-3 byte length: (value, bytes used) or None if incomplete."""
    value = 0
    for i in range(3):
        if pos + i >= end:
            return None
        b = buf[pos + i]
        if i == 2:
            return value | (b << 14), 3
        value |= (b & 0x7F) << (7 * i)
        if not b & 0x80:
            return value, i + 1
    raise AssertionError("unreachable")


class RfbParser:
    """One parser per VNC connection; feed each direction's bytes in order."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._c = _Direction("version")
        self._s = _Direction("version")
        self._server_minor: int | None = None
        self._minor: int | None = None  # negotiated: 3, 7 or 8
        self._offered: bytes | None = None  # security types the server offered (3.7+)
        self._security: int | None = None
        self._bpp = 0  # bytes per pixel of updates
        self._tpixel = 0  # Tight's TPIXEL size
        self._advertised_ext_pointer = False
        self._ext_pointer = False  # server confirmed ExtendedMouseButtons
        self._updates_requested = 0
        self._mask_seen = 0
        self._mask_sent = 0
        self._rects_left = 0
        self._rect = (0, 0, 0)  # w, h, encoding of the rectangle being read
        self._tiles_left = 0
        self._tile_index = 0
        self._visible = False  # the update being read changes the picture
        self._last_frame_t = float("-inf")
        self._last_server_t = float("-inf")
        self._burst = False
        self._input_oversized = False  # the client side stopped on an _Oversized message

    @property
    def opaque(self) -> bool:
        """True once either direction is unparsed (filtering can no longer be guaranteed)."""
        return self._c.opaque or self._s.opaque or self._burst

    @property
    def reason(self) -> str | None:
        return self._c.reason or self._s.reason

    @property
    def input_opacity(self) -> Opacity | None:
        """Set once client messages are no longer parsed (their input is not scored). Burst mode is not this: it
        concerns server messages only, and input is still parsed and scored."""
        if not self._c.opaque:
            return None
        return Opacity.OVERSIZED if self._input_oversized else Opacity.MALFORMED

    @property
    def handshake_done(self) -> bool:
        return self._c.state == "message" and self._s.state in ("message", "rect", "hextile", "tight")

    # -- driving ------------------------------------------------------------------------------------------------

    def feed_client(self, data: bytes, t_arr_ms: float, filt: Filter = NO_FILTER) -> Result:
        return self._feed(self._c, data, t_arr_ms, filt, client=True)

    def feed_server(self, data: bytes, t_arr_ms: float, filt: Filter = NO_FILTER) -> Result:
        return self._feed(self._s, data, t_arr_ms, filt, client=False)

    def _stop_both(self, reason: str) -> None:
        for d in (self._c, self._s):
            if not d.opaque:
                d.opaque, d.reason = True, reason

    def _feed(self, d: _Direction, data: bytes, t: float, filt: Filter, *, client: bool) -> Result:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"RFB data must be bytes, got {type(data).__name__}")
        sink = EventSink(Source.RFB)
        if not client and self._burst and not d.opaque:
            if len(data):
                self._burst_frame(sink, t)
            forward = d.buf + bytes(data)  # a header held back before the switch goes out first
            d.buf, d.skip = b"", 0
            return Result(sink.batch(), forward, opaque=True, reason=d.reason)
        if d.opaque:
            return Result(sink.batch(), bytes(data), opaque=True, reason=d.reason)
        buf = d.buf + data if d.buf else bytes(data)
        end = len(buf)
        pos = 0
        ctx = _Ctx(sink, filt, t)
        steps = self._client_steps if client else self._server_steps
        try:
            while True:
                if d.skip:
                    if pos >= end:
                        break
                    take = min(d.skip, end - pos)
                    if d.skip_forward:
                        ctx.out += buf[pos : pos + take]
                    pos += take
                    d.skip -= take
                    continue
                if not client and d.state == "rect" and self._rects_left == 0:
                    self._update_done(ctx)
                    continue
                if pos >= end:
                    break
                used = steps[d.state](self, buf, pos, end, ctx)
                if not used:
                    break
                pos += used
        except _Burst as why:
            self._enter_burst(str(why))
            ctx.out += buf[pos:]
            self._burst_frame(sink, t)
            d.buf, d.skip = b"", 0
            return Result(sink.batch(), bytes(ctx.out), ctx.dropped, ctx.transfer, True, d.reason)
        except _Bad as bad:
            if client and d.state == "message":
                d.opaque, d.reason = True, str(bad)
                self._input_oversized = isinstance(bad, _Oversized)
            else:
                self._stop_both(f"handshake: {bad}")
            ctx.out += buf[pos:]
            pos = end
        if not client:
            self._last_server_t = t
        d.buf = buf[pos:]
        opaque = d.opaque or (not client and self._burst)
        return Result(sink.batch(), bytes(ctx.out), ctx.dropped, ctx.transfer, opaque, d.reason)

    def _enter_burst(self, why: str) -> None:
        if not self._burst:
            self._burst = True
            self._s.reason = f"server messages no longer delimited: {why}"

    def _burst_frame(self, sink: EventSink, t: float) -> None:
        if t - self._last_server_t >= self.limits.frame_gap_ms:
            self._frame(sink, t)
        self._last_server_t = t

    def _frame(self, sink: EventSink, t: float) -> None:
        if t != self._last_frame_t:  # several updates in one arrival are one stimulus
            sink.add(t, Kind.STIMULUS, detail=Stimulus.FRAME)
            self._last_frame_t = t

    def _pass(self, buf, pos: int, n: int, ctx: _Ctx) -> int:
        ctx.out += buf[pos : pos + n]
        return n

    def _drop(self, n: int, ctx: _Ctx) -> int:
        ctx.dropped += 1
        return n

    # -- handshake ----------------------------------------------------------------------------------------------

    def _version(self, buf, pos: int, end: int) -> int | None:
        if end - pos < 12:
            return None
        m = _VERSION.fullmatch(bytes(buf[pos : pos + 12]))
        if not m or int(m.group(1)) != 3:
            raise _Bad("not an RFB 3.x protocol version")
        return int(m.group(2))

    def _s_version(self, buf, pos, end, ctx) -> int:
        minor = self._version(buf, pos, end)
        if minor is None:
            return 0
        if minor == 889:  # Apple Remote Desktop's variant of 3.8
            raise _Bad("unsupported protocol version 3.889")
        self._server_minor = minor
        self._s.state = "security"
        return self._pass(buf, pos, 12, ctx)

    def _c_version(self, buf, pos, end, ctx) -> int:
        if self._server_minor is None:
            raise _Bad("client spoke before the server's version")
        minor = self._version(buf, pos, end)
        if minor is None:
            return 0
        # RFC 6143 7.1.1: versions other than 3.7/3.8 are to be treated as 3.3
        minor = 8 if minor == 8 else 7 if minor == 7 else 3
        if minor > max(3, min(self._server_minor, 8)):
            raise _Bad("client asked for a newer version than the server offered")
        self._minor = minor
        self._c.state = "security"
        return self._pass(buf, pos, 12, ctx)

    def _s_security(self, buf, pos, end, ctx) -> int:
        if self._minor is None:
            raise _Bad("server sent security before the client's version")
        if self._minor == 3:
            if end - pos < 4:
                return 0
            (kind,) = unpack_from(">I", buf, pos)
            if kind == 0:
                self._s.state = "failure"
            elif kind in (_SECURITY_NONE, _SECURITY_VNC):
                self._security = kind
                self._s.state = "challenge" if kind == _SECURITY_VNC else "init"
            else:
                raise _Bad(f"unsupported security type {kind}")
            return self._pass(buf, pos, 4, ctx)
        if end - pos < 1:
            return 0
        n = buf[pos]
        if n == 0:
            self._s.state = "failure"
            return self._pass(buf, pos, 1, ctx)
        if end - pos < 1 + n:
            return 0
        self._offered = bytes(buf[pos + 1 : pos + 1 + n])
        self._s.state = "chosen"
        return self._pass(buf, pos, 1 + n, ctx)

    def _s_chosen(self, buf, pos, end, ctx) -> int:
        # what follows the list depends on the client's choice, which must have passed already
        if self._security is None:
            raise _Bad("server continued before the client chose a security type")
        if self._security == _SECURITY_VNC:
            self._s.state = "challenge"
        else:
            self._s.state = "result" if self._minor == 8 else "init"
        return self._server_steps[self._s.state](self, buf, pos, end, ctx)

    def _s_challenge(self, buf, pos, end, ctx) -> int:
        if end - pos < 16:
            return 0
        self._s.state = "result"
        return self._pass(buf, pos, 16, ctx)

    def _s_result(self, buf, pos, end, ctx) -> int:
        if end - pos < 4:
            return 0
        (status,) = unpack_from(">I", buf, pos)
        if status == 0:
            self._s.state = "init"
        else:
            self._s.state = "failure" if self._minor == 8 else "closed"
        return self._pass(buf, pos, 4, ctx)

    def _s_failure(self, buf, pos, end, ctx) -> int:
        if end - pos < 4:
            return 0
        (length,) = unpack_from(">I", buf, pos)
        if length > self.limits.max_name:
            raise _Bad("failure reason too long")
        if end - pos < 4 + length:
            return 0
        self._s.state = "closed"
        return self._pass(buf, pos, 4 + length, ctx)

    def _closed(self, buf, pos, end, ctx) -> int:
        raise _Bad("data after the connection was refused")

    def _s_init(self, buf, pos, end, ctx) -> int:
        if end - pos < 24:
            return 0
        (length,) = unpack_from(">I", buf, pos + 20)
        if length > self.limits.max_name:
            raise _Bad("desktop name longer than the limit")
        if end - pos < 24 + length:
            return 0
        self._set_pixel_format(buf, pos + 4)
        if not self._bpp:
            raise _Bad("unsupported pixel format")
        self._s.state = "message"
        return self._pass(buf, pos, 24 + length, ctx)

    def _set_pixel_format(self, buf, at: int) -> None:
        bits, depth, _big, true_colour = buf[at], buf[at + 1], buf[at + 2], buf[at + 3]
        r_max, g_max, b_max = unpack_from(">HHH", buf, at + 4)
        self._bpp = bits // 8 if bits in (8, 16, 32) else 0
        full = true_colour and r_max == g_max == b_max == 255
        self._tpixel = 3 if (bits == 32 and depth == 24 and full) else self._bpp

    def _c_security(self, buf, pos, end, ctx) -> int:
        if self._minor == 3:
            if self._security is None:
                raise _Bad("client continued before the server chose a security type")
            self._c.state = "response" if self._security == _SECURITY_VNC else "init"
            return self._client_steps[self._c.state](self, buf, pos, end, ctx)
        if self._offered is None:
            raise _Bad("client chose a security type before the server offered any")
        if end - pos < 1:
            return 0
        kind = buf[pos]
        if kind not in self._offered:
            raise _Bad("client chose a security type the server did not offer")
        if kind not in (_SECURITY_NONE, _SECURITY_VNC):
            raise _Bad(f"unsupported security type {kind}")
        self._security = kind
        self._c.state = "response" if kind == _SECURITY_VNC else "init"
        return self._pass(buf, pos, 1, ctx)

    def _c_response(self, buf, pos, end, ctx) -> int:
        if end - pos < 16:
            return 0
        self._c.state = "init"
        return self._pass(buf, pos, 16, ctx)

    def _c_init(self, buf, pos, end, ctx) -> int:
        self._c.state = "message"
        return self._pass(buf, pos, 1, ctx)

    # -- client messages ----------------------------------------------------------------------------------------

    def _c_message(self, buf, pos, end, ctx) -> int:
        avail = end - pos
        kind = buf[pos]
        filt = ctx.filt
        if kind == 4:  # KeyEvent
            if avail < 8:
                return 0
            down = buf[pos + 1] != 0
            (keysym,) = unpack_from(">I", buf, pos + 4)
            ctx.sink.add(ctx.t, Kind.KEY_DOWN if down else Kind.KEY_UP, key=from_keysym(keysym))
            if filt.hold_input and down:
                return self._drop(8, ctx)
            return self._pass(buf, pos, 8, ctx)
        if kind == 5:  # PointerEvent
            if avail < 6:
                return 0
            mask = buf[pos + 1]
            size = 6
            if mask & 0x80 and self._advertised_ext_pointer:
                if self._ext_pointer:
                    size = 7
                elif self._burst:
                    raise _Bad("pointer event length ambiguous (ExtendedMouseButtons state unknown)")
            if avail < size:
                return 0
            if size == 7:
                mask = (mask & 0x7F) | (buf[pos + 6] << 7)
            x, y = unpack_from(">HH", buf, pos + 2)
            pointer_events(ctx.sink, ctx.t, self._mask_seen, mask, float(x), float(y))
            self._mask_seen = mask
            if filt.hold_input and not is_pure_release(self._mask_sent, mask):
                return self._drop(size, ctx)
            self._mask_sent = mask
            return self._pass(buf, pos, size, ctx)
        if kind == 3:  # FramebufferUpdateRequest
            if avail < 10:
                return 0
            self._updates_requested = min(self._updates_requested + 1, 1 << 20)
            return self._pass(buf, pos, 10, ctx)
        if kind == 0:  # SetPixelFormat
            if avail < 20:
                return 0
            if self._updates_requested:
                # updates already requested may arrive in either format: their length is no longer certain
                self._enter_burst("pixel format changed while an update was outstanding")
            self._set_pixel_format(buf, pos + 4)
            if not self._bpp:
                self._enter_burst("unsupported pixel format")
                raise _Bad("unsupported pixel format")
            return self._pass(buf, pos, 20, ctx)
        if kind == 2:  # SetEncodings
            if avail < 4:
                return 0
            (count,) = unpack_from(">H", buf, pos + 2)
            if count > self.limits.max_encodings:
                raise _Bad("SetEncodings with more encodings than the limit")
            size = 4 + 4 * count
            if avail < size:
                return 0
            encodings = unpack_from(f">{count}i", buf, pos + 4)
            if EXTENDED_MOUSE_BUTTONS in encodings and self.limits.strip_extended_pointer:
                kept = [e for e in encodings if e != EXTENDED_MOUSE_BUTTONS]
                ctx.out += bytes((2, 0)) + len(kept).to_bytes(2, "big")
                ctx.out += b"".join(e.to_bytes(4, "big", signed=True) for e in kept)
                self._advertised_ext_pointer = False
                return size
            self._advertised_ext_pointer = EXTENDED_MOUSE_BUTTONS in encodings
            return self._pass(buf, pos, size, ctx)
        if kind == 6:  # ClientCutText; a negative length is the extended clipboard format
            if avail < 8:
                return 0
            (length,) = unpack_from(">i", buf, pos + 4)
            body = abs(length)
            if body > self.limits.max_cut_text:
                raise _Oversized("clipboard text longer than the limit")
            ctx.transfer = True
            return self._body(buf, pos, 8, body, not filt.block_clipboard, ctx, self._c)
        if kind == 255:  # QEMU client message
            if avail < 2:
                return 0
            sub = buf[pos + 1]
            if sub == 0:  # extended key event
                if avail < 12:
                    return 0
                down, keysym = unpack_from(">HI", buf, pos + 2)
                ctx.sink.add(ctx.t, Kind.KEY_DOWN if down else Kind.KEY_UP, key=from_keysym(keysym))
                if filt.hold_input and down:
                    return self._drop(12, ctx)
                return self._pass(buf, pos, 12, ctx)
            if sub == 1:  # audio: 4 bytes, 10 for set-format
                if avail < 4:
                    return 0
                (op,) = unpack_from(">H", buf, pos + 2)
                size = 10 if op == 2 else 4
                if avail < size:
                    return 0
                return self._pass(buf, pos, size, ctx)
            raise _Bad(f"unknown QEMU client message {sub}")
        if kind == 150:  # EnableContinuousUpdates
            return self._pass(buf, pos, 10, ctx) if avail >= 10 else 0
        if kind == 248:  # ClientFence
            if avail < 9:
                return 0
            if buf[pos + 8] > 64:
                raise _Bad("fence payload longer than 64 bytes")
            size = 9 + buf[pos + 8]
            return self._pass(buf, pos, size, ctx) if avail >= size else 0
        if kind == 250:  # xvp
            return self._pass(buf, pos, 4, ctx) if avail >= 4 else 0
        if kind == 251:  # SetDesktopSize
            if avail < 8:
                return 0
            size = 8 + 16 * buf[pos + 6]
            return self._pass(buf, pos, size, ctx) if avail >= size else 0
        raise _Bad(f"unknown client message type {kind}")

    def _body(self, buf, pos: int, header: int, body: int, forward: bool, ctx: _Ctx, d: _Direction) -> int:
        """A header already complete, then a body that streams through (or is dropped) without being held."""
        if forward:
            ctx.out += buf[pos : pos + header]
        else:
            ctx.dropped += 1
        d.skip, d.skip_forward = body, forward
        return header

    # -- server messages ----------------------------------------------------------------------------------------

    def _s_message(self, buf, pos, end, ctx) -> int:
        avail = end - pos
        kind = buf[pos]
        if kind == 0:  # FramebufferUpdate
            if avail < 4:
                return 0
            (self._rects_left,) = unpack_from(">H", buf, pos + 2)
            self._visible = False
            self._s.state = "rect"
            return self._pass(buf, pos, 4, ctx)
        if kind == 1:  # SetColourMapEntries
            if avail < 6:
                return 0
            (count,) = unpack_from(">H", buf, pos + 4)
            return self._body(buf, pos, 6, 6 * count, True, ctx, self._s)
        if kind in (2, 150):  # Bell, EndOfContinuousUpdates
            return self._pass(buf, pos, 1, ctx)
        if kind == 3:  # ServerCutText
            if avail < 8:
                return 0
            (length,) = unpack_from(">i", buf, pos + 4)
            if abs(length) > self.limits.max_cut_text:
                raise _Burst("server clipboard text longer than the limit")
            ctx.transfer = True
            return self._body(buf, pos, 8, abs(length), not ctx.filt.block_clipboard, ctx, self._s)
        if kind == 248:  # ServerFence
            if avail < 9:
                return 0
            size = 9 + buf[pos + 8]
            return self._pass(buf, pos, size, ctx) if avail >= size else 0
        if kind == 250:  # xvp
            return self._pass(buf, pos, 4, ctx) if avail >= 4 else 0
        raise _Burst(f"server message type {kind}")

    def _s_rect(self, buf, pos, end, ctx) -> int:
        if end - pos < 12:
            return 0
        _x, _y, w, h, encoding = unpack_from(">HHHHi", buf, pos)
        header = 16 if encoding in (6, 16, -307, -308) else 16 + self._bpp if encoding in (2, 4) else 12
        if end - pos < header:
            return 0
        bpp = self._bpp
        self._rects_left -= 1
        if encoding == 0:
            payload = w * h * bpp
        elif encoding == 1:
            payload = 4
        elif encoding in (2, 4):  # RRE, CoRRE: count and background, then subrectangles
            (count,) = unpack_from(">I", buf, pos + 12)
            payload = count * (bpp + (8 if encoding == 2 else 4))
        elif encoding in (6, 16):  # zlib, ZRLE: length-prefixed
            (payload,) = unpack_from(">I", buf, pos + 12)
        elif encoding == 5:
            self._rect = (w, h, encoding)
            self._tiles_left = ((w + 15) // 16) * ((h + 15) // 16)
            self._tile_index = 0
            self._s.state = "hextile" if self._tiles_left else "rect"
            payload = 0
        elif encoding in (7, -260):
            self._rect = (w, h, encoding)
            self._s.state = "tight"
            payload = 0
        elif encoding == _CURSOR:
            payload = w * h * bpp + ((w + 7) // 8) * h
        elif encoding == _XCURSOR:
            payload = 6 + 2 * ((w + 7) // 8) * h if w * h else 0
        elif encoding == -261:  # QEMU LED state
            payload = 1
        elif encoding == -307:  # DesktopName
            (payload,) = unpack_from(">I", buf, pos + 12)
            if payload > self.limits.max_name:
                raise _Burst("desktop name longer than the limit")
        elif encoding == -308:  # ExtendedDesktopSize
            payload = 16 * buf[pos + 12]
        elif encoding in (-223, -224, -258, EXTENDED_MOUSE_BUTTONS):
            payload = 0
            if encoding == -224:  # LastRect
                self._rects_left = 0
            elif encoding == EXTENDED_MOUSE_BUTTONS:
                self._ext_pointer = True
        else:
            raise _Burst(f"encoding {encoding}")
        if payload > self.limits.max_rect_bytes:
            raise _Burst("rectangle larger than the limit")
        if encoding >= 0 or encoding in (_CURSOR, _XCURSOR):
            self._visible = True
        ctx.out += buf[pos : pos + header]
        self._s.skip, self._s.skip_forward = payload, True
        return header

    def _update_done(self, ctx: _Ctx) -> None:
        self._s.state = "message"
        if self._updates_requested:
            self._updates_requested -= 1
        if self._visible:
            self._frame(ctx.sink, ctx.t)

    def _s_hextile(self, buf, pos, end, ctx) -> int:
        w, h, _ = self._rect
        columns = (w + 15) // 16
        row, col = divmod(self._tile_index, columns)
        tw, th = min(16, w - 16 * col), min(16, h - 16 * row)
        sub = buf[pos]
        if sub > 31:
            raise _Burst("hextile subencoding out of range")
        bpp = self._bpp
        if sub & 1:  # raw tile
            self._next_tile()
            ctx.out += buf[pos : pos + 1]
            self._s.skip, self._s.skip_forward = tw * th * bpp, True
            return 1
        header = 1 + (bpp if sub & 2 else 0) + (bpp if sub & 4 else 0) + (1 if sub & 8 else 0)
        if end - pos < header:
            return 0
        size = header
        if sub & 8:
            size += buf[pos + header - 1] * (2 + (bpp if sub & 16 else 0))
        if end - pos < size:
            return 0
        self._next_tile()
        return self._pass(buf, pos, size, ctx)

    def _next_tile(self) -> None:
        self._tile_index += 1
        self._tiles_left -= 1
        if not self._tiles_left:
            self._s.state = "rect"

    def _s_tight(self, buf, pos, end, ctx) -> int:
        w, h, encoding = self._rect
        control = buf[pos]
        method = control >> 4
        tpixel = self._tpixel
        if method == 8:  # fill
            size = 1 + tpixel
            if end - pos < size:
                return 0
            self._s.state = "rect"
            return self._pass(buf, pos, size, ctx)
        if method in (9, 10):  # JPEG, PNG: compact length then data
            got = _compact_length(buf, pos + 1, end)
            if got is None:
                return 0
            length, used = got
            return self._tight_data(buf, pos, 1 + used, length, ctx)
        if method > 10 or encoding == -260:
            raise _Burst("tight compression method out of range")
        header = 1
        palette_colours = 0
        if control & 0x40:  # explicit filter
            if end - pos < 2:
                return 0
            filter_id = buf[pos + 1]
            header = 2
            if filter_id == 1:  # palette
                if end - pos < 3:
                    return 0
                palette_colours = buf[pos + 2] + 1
                header = 3 + palette_colours * tpixel
            elif filter_id not in (0, 2):
                raise _Burst("tight filter out of range")
        if palette_colours:
            raw_size = ((w + 7) // 8) * h if palette_colours <= 2 else w * h
        else:
            raw_size = w * h * tpixel
        if raw_size < 12:  # small data is sent uncompressed
            if end - pos < header:
                return 0
            return self._tight_data(buf, pos, header, raw_size, ctx)
        got = _compact_length(buf, pos + header, end)
        if got is None:
            return 0
        length, used = got
        return self._tight_data(buf, pos, header + used, length, ctx)

    def _tight_data(self, buf, pos, header: int, length: int, ctx) -> int:
        if length > self.limits.max_rect_bytes:
            raise _Burst("rectangle larger than the limit")
        self._s.state = "rect"
        ctx.out += buf[pos : pos + header]
        self._s.skip, self._s.skip_forward = length, True
        return header

    _client_steps = {
        "version": _c_version,
        "security": _c_security,
        "response": _c_response,
        "init": _c_init,
        "message": _c_message,
    }
    _server_steps = {
        "version": _s_version,
        "security": _s_security,
        "chosen": _s_chosen,
        "challenge": _s_challenge,
        "result": _s_result,
        "failure": _s_failure,
        "closed": _closed,
        "init": _s_init,
        "message": _s_message,
        "rect": _s_rect,
        "hextile": _s_hextile,
        "tight": _s_tight,
    }
