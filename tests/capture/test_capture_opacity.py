"""`input_opacity`: whether a stream's input (client side) is no longer parsed, and why, as the policies see it
(`session.opaque_streams`, `session.opaque_streams_oversized`). Server-side opacity alone leaves input scored and is
not input opacity; a genuine client's recorded session never sets it."""

import json
import struct

import pytest

from gateway.capture import GuacamoleParser, Limits, Opacity, RfbParser, TerminalParser

from .make_fixtures import rect, update
from .recording import FIXTURES, load
from .test_capture_rfb import handshake, key


def test_a_malformed_guacamole_instruction_from_the_client_is_malformed_input():
    p = GuacamoleParser()
    assert p.feed_client("3.key,5.65307,1.1;", 1.0).events.size == 1 and p.input_opacity is None
    r = p.feed_client("3.key,3.+97,1.1;", 2.0)  # guacd reads "+97" with atoi; the parser refuses to guess
    assert r.opaque and p.input_opacity == Opacity.MALFORMED
    assert p.reason == "non-numeric argument"  # a parser check, never the content


def test_a_guacamole_instruction_over_guacds_own_limit_is_malformed_not_oversized():
    p = GuacamoleParser()
    p.feed_client("4.blob,1.0," + str(Limits().max_instruction) + "." + "A" * 20, 1.0)
    assert p.input_opacity == Opacity.MALFORMED


def test_guacamole_server_side_opacity_leaves_input_parsed():
    p = GuacamoleParser()
    assert p.feed_server("x.broken;", 1.0).opaque
    r = p.feed_client("3.key,5.65307,1.1;", 2.0)
    assert p.input_opacity is None and not r.opaque and r.events.size == 1


def test_a_malformed_terminal_frame_is_malformed_input():
    p = TerminalParser("json")
    p.feed_client(json.dumps({"type": "input", "data": "a"}), 1.0)
    assert p.input_opacity is None
    p.feed_client("not json", 2.0)
    assert p.input_opacity == Opacity.MALFORMED


def test_a_terminal_frame_over_the_bound_is_a_paste_not_opacity():
    p = TerminalParser("json")
    r = p.feed_client(json.dumps({"type": "input", "data": "x" * (Limits().max_terminal_frame + 1)}), 1.0)
    assert r.pasted == 1 and not r.opaque and p.input_opacity is None


def test_an_unknown_rfb_client_message_is_malformed_input():
    p = RfbParser()
    handshake(p)
    p.feed_client(bytes([99]) + key(1, 97), 1.0)
    assert p.input_opacity == Opacity.MALFORMED


def test_an_rfb_clipboard_over_the_bound_is_oversized_input():
    p = RfbParser(Limits(max_cut_text=1000))
    handshake(p)
    assert p.feed_client(struct.pack(">BxxxI", 6, 1000) + b"x" * 1000, 1.0).transfer  # at the bound: parsed
    assert p.input_opacity is None
    r = p.feed_client(struct.pack(">BxxxI", 6, 1001), 2.0)
    assert r.opaque and p.input_opacity == Opacity.OVERSIZED


def test_an_rfb_handshake_the_parser_cannot_follow_leaves_input_unparsed():
    p = RfbParser()
    p.feed_server(b"RFB 003.008\n", 0.0)
    p.feed_client(b"RFB 003.008\n", 0.0)
    p.feed_server(bytes([2, 19, 1]), 0.0)  # VeNCrypt offered first
    p.feed_client(bytes([19]), 0.0)  # and chosen: what follows is TLS
    assert p.input_opacity == Opacity.MALFORMED


def test_rfb_burst_mode_is_server_side_only_and_input_stays_scored():
    p = RfbParser()
    handshake(p)
    assert p.feed_server(update(rect(0, 0, 8, 8, 21)) + b"jpegdata", 100.0).opaque  # an unknown encoding
    r = p.feed_client(key(1, 97), 101.0)
    assert p.input_opacity is None and r.events.size == 1


@pytest.mark.parametrize("name,parser", [("guacamole_session", GuacamoleParser), ("novnc_session", RfbParser)])
def test_recorded_genuine_sessions_never_stop_parsing_input(name, parser):
    p = parser()
    for direction, t, payload in load(FIXTURES / f"{name}.rec"):
        (p.feed_client if direction == "C" else p.feed_server)(payload, t)
        assert p.input_opacity is None, p.reason
