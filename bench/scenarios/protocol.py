"""The operator <-> agent wire protocol: one JSON object per line over TCP.

Operator to agent:
  {"op": "keydown"|"keyup", "code", "key", "vk", "text", "modifiers", "location"}   no reply (like remote input)
  {"op": "observe", "id", "selector", "expect"}   -> {"op": "observed", "id", "present", "visible", "focused",
                                                      "value_length", "matches"}  (matches: value ends with expect)
  {"op": "ping", "id"}                            -> {"op": "pong", "id"}
  {"op": "record", "id"}                          -> {"op": "record", "id", "record": window.__rec or null}
  {"op": "reload", "id"}                          -> {"op": "reloaded", "id"}
Agent to operator on a bad line: {"op": "error", "id": <id or null>, "error": "..."}; the connection stays up.

Replies never carry field contents: only lengths and booleans. Key messages carry the key's text because the agent
must type it; neither side logs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .plan import KeyEvent

MAX_LINE_BYTES = 1 << 20
KEY_OPS = ("keydown", "keyup")
REQUEST_OPS = ("observe", "ping", "record", "reload")


class ProtocolError(ValueError):
    """A line that is not a valid protocol message."""


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError('expected a JSON object with a string "op"')
    op = message["op"]
    if op in REQUEST_OPS and not isinstance(message.get("id"), int):
        raise ProtocolError(f'"{op}" needs an integer "id"')
    return message


def key_message(event: KeyEvent) -> dict[str, Any]:
    spec = event.key
    return {
        "op": "keyup" if event.type == "keyUp" else "keydown",
        "code": spec.code,
        "key": spec.key,
        "vk": spec.vk,
        "text": spec.text if event.type != "keyUp" else "",
        "modifiers": event.modifiers,
        "location": spec.location,
    }


def cdp_key_params(message: dict[str, Any], timestamp: float | None = None) -> dict[str, Any]:
    """A validated key message to CDP `Input.dispatchKeyEvent` parameters (`timestamp`: see `KeyEvent.cdp_params`)."""

    def field(name: str, kind: type, check: Any = lambda v: True) -> Any:
        value = message.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) or not check(value):
            raise ProtocolError(f'key message: bad or missing "{name}"')
        return value

    code = field("code", str, lambda v: len(v) <= 32)
    key = field("key", str, lambda v: 0 < len(v) <= 32)
    vk = field("vk", int, lambda v: 0 <= v <= 255)
    text = field("text", str, lambda v: len(v) <= 4)
    modifiers = field("modifiers", int, lambda v: 0 <= v <= 15)
    location = field("location", int, lambda v: 0 <= v <= 3)
    down = message["op"] == "keydown"
    params: dict[str, Any] = {
        "type": ("keyDown" if text else "rawKeyDown") if down else "keyUp",
        "code": code,
        "key": key,
        "windowsVirtualKeyCode": vk,
        "nativeVirtualKeyCode": vk,
        "modifiers": modifiers,
        "location": location,
    }
    if down and text:
        params["text"] = text
        params["unmodifiedText"] = text
    if location == 3:
        params["isKeypad"] = True
    if timestamp is not None:
        params["timestamp"] = timestamp
    return params


@dataclass(frozen=True, slots=True)
class Observation:
    present: bool
    visible: bool
    focused: bool
    value_length: int
    matches: bool

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Observation:
        return cls(
            bool(message.get("present")),
            bool(message.get("visible")),
            bool(message.get("focused")),
            int(message.get("value_length") or 0),
            bool(message.get("matches")),
        )
