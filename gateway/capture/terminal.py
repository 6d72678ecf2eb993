"""Inline parser for web terminals (xterm.js over WebSocket): input frames to key classes, output to stimuli.

Frames are messages, not a byte stream: each input frame is what one `onData` call produced. Dialects:
- "json": `{"type": "input", "data": "..."}` from the client, `{"type": "output", "data": "..."}` from the server
  (the demo app's terminal); other types (resize, ...) pass untouched.
- "ttyd": first byte '0' = input (client) / output (server); other command bytes pass untouched.
- "raw": every client frame is input, every server frame is output.

Input characters map like keysyms (letters by zone, digits, punctuation); `\\r`/`\\n` ENTER, DEL/BS BACKSPACE,
TAB, other control characters MODIFIER (Ctrl+letter: the Ctrl key is the distinctive press), ESC + character
MODIFIER (Alt+key), CSI/SS3 cursor and Home/End/PgUp/PgDn sequences NAVIGATION, `ESC[3~` (Delete) BACKSPACE, a
lone ESC and function keys OTHER, anything beyond ASCII UNKNOWN. One frame carrying `paste_min_units` or more
keys, or a bracketed paste, is a paste: no key events (cadence must not see it as typing), `pasted` and
`transfer` are set, and it is dropped under `block_clipboard`. Output within `echo_window_ms` of a keystroke and
no longer than `echo_max_chars` is that keystroke's ECHO; other output is one OUTPUT stimulus per burst.
"""

from __future__ import annotations

import json
from typing import Literal

from scoring.events import Kind, Source, Stimulus
from scoring.keys import KeyClass, from_keysym

from .common import NO_FILTER, EventSink, Filter, Limits, Opacity, Result

Dialect = Literal["json", "ttyd", "raw"]
_DIALECTS = ("json", "ttyd", "raw")
_PASTE = -1  # marker: a bracketed paste sequence

_CONTROL = {"\r": KeyClass.ENTER, "\n": KeyClass.ENTER, "\x7f": KeyClass.BACKSPACE, "\x08": KeyClass.BACKSPACE,
            "\t": KeyClass.TAB}
_TILDE = {"1": KeyClass.NAVIGATION, "4": KeyClass.NAVIGATION, "5": KeyClass.NAVIGATION, "6": KeyClass.NAVIGATION,
          "7": KeyClass.NAVIGATION, "8": KeyClass.NAVIGATION, "3": KeyClass.BACKSPACE, "200": _PASTE,
          "201": _PASTE}


def _char_class(ch: str) -> KeyClass:
    cls = _CONTROL.get(ch)
    if cls is not None:
        return cls
    code = ord(ch)
    if code < 0x20:
        return KeyClass.MODIFIER
    if code < 0x7F:
        return from_keysym(code)  # printable ASCII: the keysym is the code point
    return KeyClass.UNKNOWN


def key_classes(data: str, stop_after: int) -> list[int]:
    """The key classes typed in one input frame (at most `stop_after` of them; _PASTE for a paste marker)."""
    out: list[int] = []
    i, n = 0, len(data)
    while i < n and len(out) < stop_after:
        ch = data[i]
        i += 1
        if ch != "\x1b":
            out.append(_char_class(ch))
            continue
        if i >= n:
            out.append(KeyClass.OTHER)  # Escape itself
            continue
        intro = data[i]
        if intro not in "[O":
            out.append(KeyClass.MODIFIER)  # Alt + key
            i += 1
            continue
        j = i + 1
        while j < n and "\x30" <= data[j] <= "\x3f":  # parameter bytes
            j += 1
        while j < n and "\x20" <= data[j] <= "\x2f":  # intermediate bytes
            j += 1
        if j >= n:
            out.append(KeyClass.OTHER)  # truncated sequence
            i = n
            continue
        final = data[j]
        params = data[i + 1 : j]
        i = j + 1
        if final in "ABCDHF":
            out.append(KeyClass.NAVIGATION)
        elif final == "~":
            out.append(_TILDE.get(params.split(";", 1)[0], KeyClass.OTHER))
        else:
            out.append(KeyClass.OTHER)  # F1-F4 (SS3 P..S) and the rest
    return out


class TerminalParser:
    """One parser per terminal WebSocket; feed each direction's messages in order."""

    def __init__(self, dialect: Dialect = "json", limits: Limits | None = None) -> None:
        if dialect not in _DIALECTS:
            raise ValueError(f"terminal dialect must be one of {', '.join(_DIALECTS)}, got {dialect!r}")
        self.dialect = dialect
        self.limits = limits or Limits()
        self._client_opaque: str | None = None
        self._awaiting_echo = 0  # keystrokes not yet echoed
        self._last_key_t = float("-inf")
        self._last_output_t = float("-inf")

    @property
    def opaque(self) -> bool:
        return self._client_opaque is not None

    @property
    def reason(self) -> str | None:
        return self._client_opaque

    @property
    def input_opacity(self) -> Opacity | None:
        """Set once input frames are no longer parsed. A frame over max_terminal_frame is a paste, not opacity."""
        return Opacity.MALFORMED if self._client_opaque is not None else None

    # -- client -------------------------------------------------------------------------------------------------

    def _input_text(self, data: str | bytes) -> str | None:
        """The typed text of an input frame, None for a non-input frame; raises ValueError if malformed."""
        if self.dialect == "raw":
            return data if isinstance(data, str) else bytes(data).decode("utf-8")
        if self.dialect == "ttyd":
            raw = data.encode() if isinstance(data, str) else bytes(data)
            if raw[:1] != b"0":
                return None
            return raw[1:].decode("utf-8")
        message = json.loads(data)
        if not isinstance(message, dict):
            raise ValueError("terminal message is not a JSON object")
        if message.get("type") != "input":
            return None
        text = message.get("data")
        if not isinstance(text, str):
            raise ValueError("terminal input without string data")
        return text

    def feed_client(self, data: str | bytes, t_arr_ms: float, filt: Filter = NO_FILTER) -> Result:
        sink = EventSink(Source.TERMINAL)
        nothing = b"" if not isinstance(data, str) else ""
        if self._client_opaque is not None:
            return Result(sink.batch(), data, opaque=True, reason=self._client_opaque, reply=nothing)
        limits = self.limits
        if len(data) > limits.max_terminal_frame:
            # too long to be typing; not decoded (a paste or a file pushed through the terminal)
            if self.dialect == "json" or self._is_input_prefix(data):
                return self._paste(sink, data, filt, nothing)
            return Result(sink.batch(), data, reply=nothing)
        try:
            text = self._input_text(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: JSON nested too deep
            self._client_opaque = f"malformed terminal input frame ({type(exc).__name__})"
            return Result(sink.batch(), data, opaque=True, reason=self._client_opaque, reply=nothing)
        if text is None:
            return Result(sink.batch(), data, reply=nothing)
        classes = key_classes(text, limits.paste_min_units)
        if len(classes) >= limits.paste_min_units or _PASTE in classes:
            return self._paste(sink, data, filt, nothing)
        for cls in classes:
            sink.add(t_arr_ms, Kind.KEY_DOWN, key=cls)
        if classes:
            self._awaiting_echo = min(self._awaiting_echo + len(classes), 64)
            self._last_key_t = t_arr_ms
        if filt.hold_input:
            return Result(sink.batch(), nothing, dropped=1, reply=nothing)
        return Result(sink.batch(), data, reply=nothing)

    def _is_input_prefix(self, data: str | bytes) -> bool:
        if self.dialect == "raw":
            return True
        first = data[:1]
        return first in ("0", b"0")

    def _paste(self, sink: EventSink, data, filt: Filter, nothing) -> Result:
        if filt.hold_input or filt.block_clipboard:
            return Result(sink.batch(), nothing, dropped=1, transfer=True, reply=nothing, pasted=1)
        return Result(sink.batch(), data, transfer=True, reply=nothing, pasted=1)

    # -- server -------------------------------------------------------------------------------------------------

    def _output_length(self, data: str | bytes) -> int | None:
        """Characters of output in a server frame (None if it is not output or not decodable)."""
        if self.dialect == "raw":
            return len(data)
        if self.dialect == "ttyd":
            first = data[:1]
            return len(data) - 1 if first in ("0", b"0") else None
        if len(data) > self.limits.max_terminal_frame:
            return None
        try:
            message = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        if not isinstance(message, dict) or message.get("type") != "output":
            return None
        text = message.get("data")
        return len(text) if isinstance(text, str) else None

    def feed_server(self, data: str | bytes, t_arr_ms: float, filt: Filter = NO_FILTER) -> Result:
        sink = EventSink(Source.TERMINAL)
        nothing = b"" if not isinstance(data, str) else ""
        length = self._output_length(data)
        if length:
            limits = self.limits
            echo_due = self._awaiting_echo and t_arr_ms - self._last_key_t <= limits.echo_window_ms
            if echo_due and length <= limits.echo_max_chars:
                self._awaiting_echo -= 1
                sink.add(t_arr_ms, Kind.STIMULUS, detail=Stimulus.ECHO)
            else:
                self._awaiting_echo = 0  # longer output: the program has moved on from echoing keys
                if t_arr_ms - self._last_output_t >= limits.output_gap_ms:
                    sink.add(t_arr_ms, Kind.STIMULUS, detail=Stimulus.OUTPUT)
            self._last_output_t = t_arr_ms
        return Result(sink.batch(), data, reply=nothing)
