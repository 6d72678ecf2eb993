import struct
import zlib

import pytest

from gateway.capture import Filter, Limits, RfbParser
from scoring.events import Kind, Source, Stimulus
from scoring.keys import KeyClass

from .make_fixtures import PIXEL_FORMAT, compact, rect, update


def server_init(name: bytes = b"desk") -> bytes:
    return struct.pack(">HH", 640, 480) + PIXEL_FORMAT + struct.pack(">I", len(name)) + name


def handshake(p: RfbParser, version: bytes = b"RFB 003.008\n", auth: int = 1) -> None:
    """Drives a successful handshake through both directions."""
    p.feed_server(version, 0.0)
    p.feed_client(version, 0.0)
    minor = int(version[8:11])
    if minor >= 7 and minor <= 8 or minor > 8:
        p.feed_server(bytes([2, 1, 2]), 0.0)
        p.feed_client(bytes([auth]), 0.0)
    else:
        p.feed_server(struct.pack(">I", auth), 0.0)
    if auth == 2:
        p.feed_server(bytes(16), 0.0)
        p.feed_client(bytes(16), 0.0)
    if auth == 2 or minor >= 8:
        p.feed_server(struct.pack(">I", 0), 0.0)
    p.feed_client(b"\x01", 0.0)
    p.feed_server(server_init(), 0.0)
    assert p.handshake_done and not p.opaque, p.reason


def key(down: int, keysym: int) -> bytes:
    return struct.pack(">BBxxI", 4, down, keysym)


def pointer(mask: int, x: int, y: int) -> bytes:
    return struct.pack(">BBHH", 5, mask, x, y)


def kinds(r):
    return [(int(e["kind"]), int(e["key"]), int(e["detail"])) for e in r.events]


@pytest.mark.parametrize("version,auth", [(b"RFB 003.003\n", 1), (b"RFB 003.003\n", 2), (b"RFB 003.007\n", 1),
                                          (b"RFB 003.007\n", 2), (b"RFB 003.008\n", 1), (b"RFB 003.008\n", 2),
                                          (b"RFB 003.005\n", 2)])
def test_handshakes_then_input(version, auth):
    p = RfbParser()
    handshake(p, version, auth)
    r = p.feed_client(key(1, ord("a")) + key(0, ord("a")) + pointer(0, 3, 4), 9.0)
    assert kinds(r) == [(Kind.KEY_DOWN, KeyClass.LEFT_HOME, 0), (Kind.KEY_UP, KeyClass.LEFT_HOME, 0),
                        (Kind.POINTER_MOVE, 0, 0)]
    assert (r.events["source"] == Source.RFB).all()
    assert r.events["x"][2] == 3 and r.events["y"][2] == 4


def test_no_events_during_the_handshake_and_auth_bytes_pass():
    p = RfbParser()
    out = [p.feed_server(b"RFB 003.008\n", 0.0), p.feed_client(b"RFB 003.008\n", 0.0),
           p.feed_server(bytes([1, 2]), 0.0), p.feed_client(bytes([2]), 0.0),
           p.feed_server(bytes([4] * 16), 0.0), p.feed_client(bytes([5] * 16), 0.0)]
    assert all(len(r.events) == 0 for r in out)
    assert out[5].forward == bytes([5] * 16)


def test_authentication_failure_closes_the_stream():
    p = RfbParser()
    p.feed_server(b"RFB 003.008\n", 0.0)
    p.feed_client(b"RFB 003.008\n", 0.0)
    p.feed_server(bytes([1, 2]), 0.0)
    p.feed_client(bytes([2]), 0.0)
    p.feed_server(bytes(16), 0.0)
    p.feed_client(bytes(16), 0.0)
    r = p.feed_server(struct.pack(">II", 1, 6) + b"denied", 0.0)
    assert not r.opaque
    assert p.feed_server(b"more", 0.0).opaque


@pytest.mark.parametrize("first", [b"GET / HTTP/1.1\r\n", b"RFB 004.000\n", b"RFB 003.889\n"])
def test_garbage_or_unsupported_versions_are_opaque(first):
    p = RfbParser()
    r = p.feed_server(first, 0.0)
    assert r.opaque and r.forward == first
    assert p.feed_client(key(1, 97), 0.0).opaque


def test_unsupported_security_type_is_opaque():
    p = RfbParser()
    p.feed_server(b"RFB 003.008\n", 0.0)
    p.feed_client(b"RFB 003.008\n", 0.0)
    p.feed_server(bytes([1, 19]), 0.0)  # VeNCrypt
    r = p.feed_client(bytes([19]), 0.0)
    assert r.opaque and "security type 19" in r.reason
    assert len(p.feed_client(key(1, 97), 1.0).events) == 0


def test_client_speaking_out_of_turn_is_opaque():
    p = RfbParser()
    assert p.feed_client(b"RFB 003.008\n", 0.0).opaque


def test_message_split_at_every_byte():
    data = key(1, 0xFF51) + pointer(1, 100, 200) + struct.pack(">BBHII", 255, 0, 1, ord("7"), 8)
    for cut in range(1, len(data)):
        p = RfbParser()
        handshake(p)
        a = p.feed_client(data[:cut], 1.0)
        b = p.feed_client(data[cut:], 1.0)
        assert a.forward + b.forward == data
        assert kinds(a) + kinds(b) == [(Kind.KEY_DOWN, KeyClass.NAVIGATION, 0), (Kind.POINTER_DOWN, 0, 1),
                                       (Kind.KEY_DOWN, KeyClass.DIGIT, 0)]


def test_hold_input_rewrites_the_stream_at_message_boundaries():
    p = RfbParser()
    handshake(p)
    p.feed_client(pointer(1, 5, 5), 0.0)
    f = Filter(hold_input=True)
    fbur = struct.pack(">BBHHHH", 3, 1, 0, 0, 10, 10)
    data = key(1, 97) + key(0, 97) + pointer(1, 6, 6) + pointer(0, 6, 6) + fbur + struct.pack(">BBHII", 255, 0, 1, 97, 30)
    r = p.feed_client(data, 1.0, f)
    assert r.forward == key(0, 97) + pointer(0, 6, 6) + fbur
    assert r.dropped == 3 and len(r.events) == 5


def test_client_cut_text_is_streamed_and_can_be_blocked():
    p = RfbParser(Limits(max_cut_text=1000))
    handshake(p)
    text = b"x" * 500
    msg = struct.pack(">BxxxI", 6, len(text)) + text
    f = Filter(block_clipboard=True)
    a = p.feed_client(msg[:100], 1.0, f)
    b = p.feed_client(msg[100:] + key(1, 97), 1.0, f)
    assert a.forward == b"" and b.forward == key(1, 97) and a.transfer
    assert p._c.buf == b""  # the body was never held
    ext = struct.pack(">Bxxxi", 6, -8) + struct.pack(">I", 0x10000001) + b"abcd"
    r = p.feed_client(ext + key(0, 97), 2.0)
    assert r.forward == ext + key(0, 97) and r.transfer
    r = p.feed_client(struct.pack(">BxxxI", 6, 5000), 3.0)
    assert r.opaque and "limit" in r.reason


def test_set_encodings_loses_extended_mouse_buttons_so_pointer_events_stay_six_bytes():
    p = RfbParser()
    handshake(p)
    encs = [7, -316, 0, -239]
    r = p.feed_client(struct.pack(">BxH", 2, len(encs)) + struct.pack(">4i", *encs), 0.0)
    assert r.forward == struct.pack(">BxH", 2, 3) + struct.pack(">3i", 7, 0, -239)
    r = p.feed_client(pointer(0x80, 1, 1) + pointer(0, 1, 1), 1.0)
    assert len(r.events) == 2 and not r.opaque


def test_extended_pointer_event_when_confirmed():
    p = RfbParser(Limits(strip_extended_pointer=False))
    handshake(p)
    p.feed_client(struct.pack(">BxH", 2, 2) + struct.pack(">2i", 0, -316), 0.0)
    p.feed_client(struct.pack(">BBHHHH", 3, 0, 0, 0, 10, 10), 0.0)
    p.feed_server(update(rect(0, 0, 0, 0, -316)), 0.0)
    r = p.feed_client(struct.pack(">BBHHB", 5, 0x80, 9, 9, 1) + pointer(0, 9, 9), 1.0)
    assert [k for k, _, _ in kinds(r)] == [Kind.POINTER_DOWN, Kind.POINTER_UP]
    assert r.events["detail"][0] == 0x80  # button 8 (back), from the extended byte


def test_unknown_client_message_is_opaque_but_server_still_parsed():
    p = RfbParser()
    handshake(p)
    r = p.feed_client(bytes([77, 1, 2, 3]), 1.0)
    assert r.opaque and "77" in r.reason and r.forward == bytes([77, 1, 2, 3])
    assert len(p.feed_client(key(1, 97), 2.0).events) == 0
    r = p.feed_server(update(rect(0, 0, 1, 1, 0) + bytes(4)), 3.0)
    assert kinds(r) == [(Kind.STIMULUS, 0, Stimulus.FRAME)] and not r.opaque


def test_updates_are_frames_once_complete():
    p = RfbParser()
    handshake(p)
    body = update(rect(0, 0, 10, 10, 0) + bytes(400))
    a = p.feed_server(body[:200], 1.0)
    assert len(a.events) == 0
    b = p.feed_server(body[200:], 2.0)
    assert kinds(b) == [(Kind.STIMULUS, 0, Stimulus.FRAME)] and b.events["t_arr"][0] == 2.0
    assert a.forward + b.forward == body
    # a pseudo-only update (desktop size) changes nothing visible
    assert len(p.feed_server(update(rect(0, 0, 640, 480, -223)), 3.0).events) == 0
    # two updates in one arrival are one stimulus
    two = update(rect(0, 0, 1, 1, 1) + bytes(4)) * 2
    assert len(p.feed_server(two, 4.0).events) == 1


def test_server_encodings_are_delimited():
    p = RfbParser()
    handshake(p)
    tight = zlib.compress(bytes(300))
    body = update(
        rect(0, 0, 4, 4, 2) + struct.pack(">I", 2) + bytes(4) + bytes(2 * 12),
        rect(0, 0, 4, 4, 4) + struct.pack(">I", 1) + bytes(4) + bytes(8),
        rect(0, 0, 4, 4, 16) + struct.pack(">I", 5) + bytes(5),
        rect(0, 0, 4, 4, 6) + struct.pack(">I", 3) + bytes(3),
        rect(0, 0, 10, 10, 7) + bytes([0x40, 1, 1]) + bytes(6) + compact(20) + bytes(20),  # 2-colour palette
        rect(0, 0, 2, 1, 7) + bytes([0x00]) + bytes(6),  # copy filter, 6 bytes raw (< 12)
        rect(0, 0, 100, 1, 7) + bytes([0x00]) + compact(len(tight)) + tight,
        rect(0, 0, 8, 8, 7) + bytes([0x90]) + compact(3) + b"jpg",
        rect(0, 0, 8, 8, -239) + bytes(8 * 8 * 4 + 8),
        rect(0, 0, 0, 0, -307) + struct.pack(">I", 3) + b"abc",
        rect(0, 0, 0, 0, -224),
    )
    r = p.feed_server(body + b"\x02", 1.0)
    assert kinds(r) == [(Kind.STIMULUS, 0, Stimulus.FRAME)] and not r.opaque, r.reason
    assert r.forward == body + b"\x02"


def test_server_cut_text_can_be_blocked():
    p = RfbParser()
    handshake(p)
    msg = struct.pack(">BxxxI", 3, 4) + b"copy"
    r = p.feed_server(msg + b"\x02", 1.0, Filter(block_clipboard=True))
    assert r.forward == b"\x02" and r.dropped == 1 and r.transfer


def test_unknown_encoding_switches_the_server_to_bursts():
    p = RfbParser(Limits(frame_gap_ms=10))
    handshake(p)
    r = p.feed_server(update(rect(0, 0, 8, 8, 21)) + b"jpegdata", 100.0)
    assert r.opaque and "encoding 21" in r.reason and len(r.events) == 1
    assert len(p.feed_server(b"more", 105.0).events) == 0  # same burst
    assert len(p.feed_server(b"next", 130.0).events) == 1
    # the client side is unaffected
    r = p.feed_client(key(1, 97), 131.0)
    assert not r.opaque and len(r.events) == 1


def test_pixel_format_change_with_an_update_outstanding_is_not_guessed():
    p = RfbParser()
    handshake(p)
    p.feed_client(struct.pack(">BBHHHH", 3, 0, 0, 0, 10, 10), 0.0)
    p.feed_client(b"\x00\x00\x00\x00" + PIXEL_FORMAT, 0.0)
    assert p.opaque
    assert p.feed_server(update(rect(0, 0, 1, 1, 0) + bytes(4)), 1.0).opaque


def test_bytes_only():
    p = RfbParser()
    with pytest.raises(TypeError):
        p.feed_server("RFB 003.008\n", 0.0)
