import numpy as np
import pytest

from gateway.capture import Filter, GuacamoleParser, Limits
from scoring.events import EVENT_DTYPE, Kind, Probe, Source, Stimulus
from scoring.keys import KeyClass

from .make_fixtures import guac


def kinds(result):
    return [(int(e["kind"]), int(e["key"]), int(e["detail"])) for e in result.events]


def test_key_press_and_release_become_classes():
    p = GuacamoleParser()
    r = p.feed_client(guac("key", "104", "1") + guac("key", "104", "0") + guac("key", "65293", "1"), 5.0)
    assert r.events.dtype == EVENT_DTYPE
    assert kinds(r) == [(Kind.KEY_DOWN, KeyClass.RIGHT_HOME, 0), (Kind.KEY_UP, KeyClass.RIGHT_HOME, 0),
                        (Kind.KEY_DOWN, KeyClass.ENTER, 0)]
    assert (r.events["source"] == Source.GUACAMOLE).all()
    assert (r.events["t_src"] == 5.0).all() and (r.events["t_arr"] == 5.0).all()
    assert r.forward == guac("key", "104", "1") + guac("key", "104", "0") + guac("key", "65293", "1")


def test_mouse_moves_clicks_and_wheel():
    p = GuacamoleParser()
    r = p.feed_client(guac("mouse", "10", "20", "0") + guac("mouse", "10", "20", "1") + guac("mouse", "11", "20", "1")
                      + guac("mouse", "11", "20", "0") + guac("mouse", "11", "20", "8"), 1.0)
    assert [k for k, _, _ in kinds(r)] == [Kind.POINTER_MOVE, Kind.POINTER_DOWN, Kind.POINTER_MOVE, Kind.POINTER_UP,
                                           Kind.WHEEL]
    assert r.events["x"][1] == 10 and r.events["y"][1] == 20
    assert r.events["value"][4] == -1.0  # wheel up


def test_sync_round_trip_is_a_probe_and_draws_are_one_frame():
    p = GuacamoleParser()
    r = p.feed_server(guac("png", "14", "0", "0", "0", "AAAA") + guac("copy", "0", "0", "0", "1", "1", "14", "0", "5", "5")
                      + guac("sync", "777"), 100.0)
    assert kinds(r) == [(Kind.STIMULUS, 0, Stimulus.FRAME)]
    r = p.feed_server(guac("sync", "778"), 110.0)
    assert len(r.events) == 0  # nothing drawn: no stimulus
    r = p.feed_client(guac("sync", "778"), 142.5)
    assert kinds(r) == [(Kind.PROBE, 0, Probe.GUAC_SYNC)]
    assert r.events["value"][0] == pytest.approx(32.5)
    assert len(p.feed_client(guac("sync", "777"), 150.0).events) == 0  # overtaken by the later echo


def test_tunnel_ping_echo_is_a_probe():
    p = GuacamoleParser()
    assert len(p.feed_client("0.,4.ping,13.1700000000000;", 10.0).events) == 0
    r = p.feed_server("0.,4.ping,13.1700000000000;", 18.0)
    assert kinds(r) == [(Kind.PROBE, 0, Probe.GUAC_PING)] and r.events["value"][0] == 8.0


def test_pending_probes_are_bounded():
    p = GuacamoleParser(Limits(max_pending_probes=4))
    for i in range(100):
        p.feed_server(guac("sync", str(i)), float(i))
    assert len(p._pending_syncs) == 4


def test_values_count_code_points_not_bytes():
    p = GuacamoleParser()
    text = guac("clipboard", "0", "text/plain") + guac("blob", "0", "héllo 😀") + guac("key", "97", "1")
    r = p.feed_client(text.encode(), 1.0)
    assert not r.opaque and kinds(r)[-1] == (Kind.KEY_DOWN, KeyClass.LEFT_HOME, 0)
    assert r.forward == text.encode() and r.transfer


def test_split_utf8_and_instructions_across_frames():
    data = (guac("blob", "3", "€€€") + guac("key", "113", "1")).encode()
    for cut in range(1, len(data)):
        p = GuacamoleParser()
        a = p.feed_client(data[:cut], 1.0)
        b = p.feed_client(data[cut:], 1.0)
        assert a.forward + b.forward == data
        assert kinds(a) + kinds(b) == [(Kind.KEY_DOWN, KeyClass.LEFT_TOP, 0)]


def test_block_clipboard_drops_the_stream_and_refuses_it():
    p = GuacamoleParser()
    f = Filter(block_clipboard=True)
    r = p.feed_client(guac("clipboard", "4", "text/plain") + guac("blob", "4", "c2VjcmV0") + guac("key", "97", "1"), 1.0, f)
    assert r.forward == guac("key", "97", "1") and r.dropped == 2 and r.transfer
    assert r.reply.startswith("3.ack,1.4,") and r.reply.endswith("3.771;")
    r = p.feed_client(guac("blob", "4", "bW9yZQ==") + guac("end", "4") + guac("blob", "4", "eA=="), 2.0, f)
    assert r.dropped == 2 and r.forward == guac("blob", "4", "eA==")  # stream ended: index free again
    # the server's clipboard towards the client is blocked the same way, the refusal goes back to the server
    r = p.feed_server(guac("clipboard", "9", "text/plain") + guac("blob", "9", "eA==") + guac("end", "9"), 3.0, f)
    assert r.forward == "" and r.dropped == 3 and r.reply.startswith("3.ack,1.9,")


def test_block_file_transfer_covers_uploads_and_downloads():
    p = GuacamoleParser()
    f = Filter(block_file_transfer=True)
    r = p.feed_client(guac("file", "1", "application/pdf", "a.pdf") + guac("blob", "1", "AA==") + guac("end", "1")
                      + guac("put", "2", "7", "text/plain", "/b.txt") + guac("get", "2", "/c.txt"), 1.0, f)
    assert r.forward == "" and r.dropped == 5 and r.transfer
    r = p.feed_server(guac("filesystem", "2", "Drive") + guac("body", "2", "8", "text/plain", "/c.txt")
                      + guac("blob", "8", "AA==") + guac("img", "3", "14", "0", "image/png", "0", "0")
                      + guac("blob", "3", "AA=="), 1.0, f)
    assert r.forward == guac("img", "3", "14", "0", "image/png", "0", "0") + guac("blob", "3", "AA==")
    # without the filter the same traffic passes and is reported
    r = GuacamoleParser().feed_client(guac("file", "1", "application/pdf", "a.pdf"), 1.0)
    assert r.transfer and r.dropped == 0


def test_hold_input_drops_presses_but_lets_releases_through():
    p = GuacamoleParser()
    p.feed_client(guac("mouse", "5", "5", "1"), 0.0)  # button down before the hold
    f = Filter(hold_input=True)
    data = (guac("key", "97", "1") + guac("key", "97", "0") + guac("mouse", "6", "6", "1") + guac("mouse", "6", "6", "0")
            + guac("mouse", "7", "7", "0") + guac("sync", "1") + guac("size", "800", "600"))
    r = p.feed_client(data, 1.0, f)
    assert r.forward == (guac("key", "97", "0") + guac("mouse", "6", "6", "0") + guac("sync", "1")
                         + guac("size", "800", "600"))
    assert r.dropped == 3
    assert len(r.events) == 5  # the user's actions are still evidence


@pytest.mark.parametrize("garbage", ["hello;", "3.key,", "99999999999.x;", "3.ke,1.5;", "2.ab!", "3.key,1.x,1.1;"])
def test_malformed_input_turns_the_direction_opaque(garbage):
    p = GuacamoleParser()
    r1 = p.feed_client(guac("key", "97", "1") + garbage + "x" * 12, 1.0)
    if not r1.opaque:  # incomplete but well-formed so far: the next frame decides
        r1 = p.feed_client("xxxx;" * 10 + "!", 1.0)
    assert r1.opaque and r1.reason
    r2 = p.feed_client(guac("key", "97", "1"), 2.0)
    assert r2.opaque and len(r2.events) == 0 and r2.forward == guac("key", "97", "1")
    # the server direction is still parsed
    assert not p.feed_server(guac("sync", "1"), 3.0).opaque


@pytest.mark.parametrize("instruction", [
    guac("mouse", "1", "1", "-1"),  # a negative button mask once made the button loop endless (the gateway hung)
    guac("mouse", "1" * 400, "1", "0"),  # float() overflow escaped the parser
    guac("key", "9" * 5000, "1"),  # beyond int()'s digit limit (ValueError escaped the parser)
    guac("key", "+97", "1"), guac("key", "097", "1"), guac("key", "97", "01"), guac("key", "97", " 1"),
])
def test_numbers_guacd_would_read_differently_are_garbage_not_a_crash(instruction):
    # guacd reads numbers with atoi: a non-canonical number must not be judged one way here and acted on another
    # way there, so it turns the direction opaque (and, under a restriction, the connection is cut)
    r = GuacamoleParser().feed_client(guac("key", "104", "1") + instruction, 1.0, Filter(hold_input=True))
    assert r.opaque and r.reason and len(r.events) == 1


@pytest.mark.parametrize("pressed", ["1", "2", "-1", "4294967"])
def test_any_nonzero_pressed_flag_is_a_press_as_guacd_reads_it(pressed):
    r = GuacamoleParser().feed_client(guac("key", "97", pressed), 1.0, Filter(hold_input=True))
    assert kinds(r) == [(Kind.KEY_DOWN, KeyClass.LEFT_HOME, 0)] and r.forward == "" and r.dropped == 1
    r = GuacamoleParser().feed_client(guac("key", "97", "0"), 1.0, Filter(hold_input=True))
    assert kinds(r) == [(Kind.KEY_UP, KeyClass.LEFT_HOME, 0)] and r.forward == guac("key", "97", "0")


def test_opaque_passes_every_byte_through():
    p = GuacamoleParser()
    a = p.feed_client("3.key,3.", 1.0)
    b = p.feed_client("abc,1.1;garbage", 1.0)
    assert a.forward + b.forward == "3.key,3.abc,1.1;garbage"
    assert b.opaque


def test_buffer_is_bounded_by_the_instruction_limit():
    p = GuacamoleParser(Limits(max_instruction=100))
    r = p.feed_client("4.blob,1.0,500." + "A" * 50, 1.0)
    assert r.opaque and r.forward.endswith("A" * 50)
    p = GuacamoleParser(Limits(max_instruction=100, max_elements=4))
    assert p.feed_client("1.a,1.b,1.c,1.d,1.e;", 1.0).opaque


def test_bytes_in_bytes_out_and_invalid_utf8():
    p = GuacamoleParser()
    assert p.feed_client(guac("nop").encode(), 1.0).forward == b"3.nop;"
    r = p.feed_client(b"3.nop;\xff\xfe", 1.0)
    assert r.opaque and r.forward == b"3.nop;\xff\xfe"


def test_limits_are_validated():
    with pytest.raises(ValueError):
        Limits(max_instruction=0)
    with pytest.raises(ValueError):
        Limits(frame_gap_ms=-1)


def test_empty_events_have_the_dtype():
    r = GuacamoleParser().feed_client("", 1.0)
    assert r.events.dtype == EVENT_DTYPE and len(r.events) == 0 and r.forward == ""
    assert isinstance(r.events, np.ndarray)
