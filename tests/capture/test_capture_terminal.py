import json

import pytest

from gateway.capture import Filter, Limits, TerminalParser
from gateway.capture.terminal import key_classes
from scoring.events import Kind, Source, Stimulus
from scoring.keys import KeyClass as K


def inp(data: str) -> str:
    return json.dumps({"type": "input", "data": data})


def out(data: str) -> str:
    return json.dumps({"type": "output", "data": data})


@pytest.mark.parametrize("text,expected", [
    ("q", [K.LEFT_TOP]), ("H", [K.RIGHT_HOME]), ("7", [K.DIGIT]), (" ", [K.SPACE]), ("\r", [K.ENTER]),
    ("\x7f", [K.BACKSPACE]), ("\x08", [K.BACKSPACE]), ("\t", [K.TAB]), ("\x03", [K.MODIFIER]), ("-", [K.PUNCT]),
    ("\x1b[A", [K.NAVIGATION]), ("\x1bOD", [K.NAVIGATION]), ("\x1b[5~", [K.NAVIGATION]), ("\x1b[3~", [K.BACKSPACE]),
    ("\x1b[1;5C", [K.NAVIGATION]), ("\x1bOP", [K.OTHER]), ("\x1b[15~", [K.OTHER]), ("\x1b", [K.OTHER]),
    ("\x1bb", [K.MODIFIER]), ("é", [K.UNKNOWN]), ("ab", [K.LEFT_HOME, K.LEFT_BOTTOM]),
])
def test_key_classes(text, expected):
    assert key_classes(text, 10) == expected


@pytest.mark.parametrize("dialect,frame", [("json", inp("k")), ("ttyd", b"0k"), ("ttyd", "0k"), ("raw", "k"),
                                           ("raw", b"k")])
def test_dialects_turn_one_key_into_one_event(dialect, frame):
    p = TerminalParser(dialect)
    r = p.feed_client(frame, 7.0)
    assert [(int(e["kind"]), int(e["key"])) for e in r.events] == [(Kind.KEY_DOWN, K.RIGHT_HOME)]
    assert r.events["source"][0] == Source.TERMINAL and r.forward == frame and not r.opaque


def test_non_input_frames_pass():
    assert len(TerminalParser("json").feed_client(json.dumps({"type": "resize", "cols": 80}), 1.0).events) == 0
    assert len(TerminalParser("ttyd").feed_client(b'1{"columns":80,"rows":24}', 1.0).events) == 0


def test_paste_is_not_typing():
    p = TerminalParser("json")
    r = p.feed_client(inp("git push --force"), 1.0)
    assert len(r.events) == 0 and r.pasted == 1 and r.transfer and r.forward == inp("git push --force")
    r = p.feed_client(inp("\x1b[200~x\x1b[201~"), 2.0)
    assert r.pasted == 1
    r = p.feed_client(inp("x"), 3.0, Filter(block_clipboard=True))
    assert r.forward == inp("x") and len(r.events) == 1
    r = p.feed_client(inp("xyz"), 4.0, Filter(block_clipboard=True))
    assert r.forward == "" and r.dropped == 1
    big = TerminalParser("raw", Limits(max_terminal_frame=10)).feed_client("y" * 11, 5.0)
    assert big.pasted == 1 and len(big.events) == 0


def test_hold_input_drops_input_frames_only():
    p = TerminalParser("json")
    f = Filter(hold_input=True)
    r = p.feed_client(inp("a"), 1.0, f)
    assert r.forward == "" and r.dropped == 1 and len(r.events) == 1
    resize = json.dumps({"type": "resize", "cols": 80})
    assert p.feed_client(resize, 2.0, f).forward == resize


def test_echo_then_output_bursts():
    p = TerminalParser("json", Limits(output_gap_ms=50, echo_window_ms=500, echo_max_chars=4))
    p.feed_client(inp("l"), 100.0)
    r = p.feed_server(out("l"), 130.0)
    assert [int(e["detail"]) for e in r.events] == [Stimulus.ECHO]
    p.feed_client(inp("\r"), 200.0)
    r = p.feed_server(out("\r\nfile1 file2 file3\r\n"), 230.0)
    assert [int(e["detail"]) for e in r.events] == [Stimulus.OUTPUT]
    assert len(p.feed_server(out("more"), 240.0).events) == 0  # same burst
    assert [int(e["detail"]) for e in p.feed_server(out("prompt$ "), 400.0).events] == [Stimulus.OUTPUT]
    assert len(p.feed_server(json.dumps({"type": "title", "data": "x"}), 600.0).events) == 0


def test_ttyd_output():
    p = TerminalParser("ttyd")
    assert [int(e["detail"]) for e in p.feed_server(b"0hello", 1.0).events] == [Stimulus.OUTPUT]
    assert len(p.feed_server(b"1title", 100.0).events) == 0


@pytest.mark.parametrize("frame", ["not json", "[1,2]", json.dumps({"type": "input", "data": 5}),
                                   "[" * 60_000])  # nested too deep for json: RecursionError escaped the parser
def test_malformed_input_is_opaque(frame):
    p = TerminalParser("json")
    r = p.feed_client(frame, 1.0)
    assert r.opaque and r.reason and r.forward == frame
    r = p.feed_client(inp("a"), 2.0, Filter(hold_input=True))
    assert r.opaque and len(r.events) == 0 and r.forward == inp("a")


def test_deeply_nested_server_frames_are_not_output():
    p = TerminalParser("json")
    r = p.feed_server("[" * 60_000, 1.0)
    assert not r.opaque and len(r.events) == 0 and r.forward == "[" * 60_000


def test_bad_dialect():
    with pytest.raises(ValueError, match="dialect"):
        TerminalParser("telnet")
