"""Operator <-> agent protocol: encoding and validation (pure)."""

from __future__ import annotations

import pytest

from bench.scenarios.keymap import spec_for_char
from bench.scenarios.plan import PlannedStroke, TypingPlan, timeline
from bench.scenarios.protocol import ProtocolError, cdp_key_params, decode, encode, key_message


def test_key_messages_round_trip_to_cdp_params() -> None:
    spec, _ = spec_for_char("k")
    down, up = timeline(TypingPlan((PlannedStroke(0, 80, spec),)))
    params = cdp_key_params(decode(encode(key_message(down))))
    assert params == down.cdp_params()
    assert cdp_key_params(decode(encode(key_message(up))))["type"] == "keyUp"
    assert "text" not in cdp_key_params(decode(encode(key_message(up))))
    # the injection time travels as the event's own time, on both paths
    stamped = cdp_key_params(decode(encode(key_message(down))), 1_700_000_000.25)
    assert stamped == down.cdp_params(1_700_000_000.25) and stamped["timestamp"] == 1_700_000_000.25


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"not json\n", "not JSON"),
        (b"[1]\n", "string \"op\""),
        (b'{"op": "observe"}\n', "integer \"id\""),
        (b"\xff\n", "not JSON"),
    ],
)
def test_bad_lines_are_rejected_clearly(line: bytes, error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        decode(line)


def test_key_fields_are_validated() -> None:
    base = {"op": "keydown", "code": "KeyA", "key": "a", "vk": 65, "text": "a", "modifiers": 0, "location": 0}
    assert cdp_key_params(base)["type"] == "keyDown"
    for name, bad in (("vk", 999), ("modifiers", True), ("text", "toolong"), ("key", ""), ("code", None)):
        with pytest.raises(ProtocolError, match=name):
            cdp_key_params({**base, name: bad})
