"""Property-based fuzzing of every parser: no crash, bounded buffers, no invented events, split invariance."""

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.capture import Filter, GuacamoleParser, Limits, RfbParser, TerminalParser
from scoring.events import EVENT_DTYPE

from .recording import FIXTURES, load

GUAC = load(FIXTURES / "guacamole_session.rec")
RFB = load(FIXTURES / "novnc_session.rec")
LIMITS = Limits(max_instruction=512, max_elements=16, max_cut_text=4096, max_encodings=32, max_name=256,
                max_rect_bytes=1 << 20)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILTERS = st.builds(Filter, st.booleans(), st.booleans(), st.booleans())


def feed(parser, direction, data, t, filt=Filter()):
    r = (parser.feed_client if direction == "C" else parser.feed_server)(data, t, filt)
    assert r.events.dtype == EVENT_DTYPE
    return r


def rows(events):
    return [e.tobytes() for e in np.concatenate(events)] if events else []  # bytes: NaN == NaN


def split(records, cuts):
    """The same recording, each record cut into pieces at the drawn positions (same arrival time)."""
    out = []
    for i, (direction, t, payload) in enumerate(records):
        points = sorted({c % (len(payload) + 1) for c in cuts[i % len(cuts)]}) if cuts else []
        start = 0
        for p in points + [len(payload)]:
            if p > start:
                out.append((direction, t, payload[start:p]))
                start = p
    return out


def bounded(parser):
    if isinstance(parser, GuacamoleParser):
        for d in (parser._client, parser._server):
            assert len(d.buf) <= LIMITS.max_instruction + 12
            assert len(d.blocked) <= LIMITS.max_blocked_streams
        assert len(parser._pending_syncs) <= LIMITS.max_pending_probes
        assert len(parser._pending_pings) <= LIMITS.max_pending_probes
    else:
        for d in (parser._c, parser._s):
            assert len(d.buf) <= 4 + 4 * LIMITS.max_encodings + LIMITS.max_name + 24


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from("CS"), st.binary(max_size=300)), max_size=20))
def test_random_bytes_never_crash_or_invent_events(chunks):
    for parser in (GuacamoleParser(LIMITS), RfbParser(LIMITS)):
        events = []
        for direction, data in chunks:
            r = feed(parser, direction, data, 1.0)
            events.append(r.events)
            bounded(parser)
        assert len(rows(events)) == 0


@SETTINGS
@given(st.binary(min_size=1, max_size=200), st.integers(0, len(RFB) - 1))
def test_garbage_before_a_valid_rfb_session_yields_nothing(garbage, at):
    parser = RfbParser(LIMITS)
    feed(parser, RFB[at][0], garbage, 0.0)
    events = [feed(parser, d, p, t).events for d, t, p in RFB]
    assert len(rows(events)) == 0 or parser.handshake_done  # garbage that happens to be a valid greeting


@SETTINGS
@given(st.text(min_size=1, max_size=100), st.integers(0, len(GUAC) - 1))
def test_garbage_text_before_guacamole_yields_no_invented_input(garbage, at):
    parser = GuacamoleParser(LIMITS)
    r = feed(parser, "C", garbage, 0.0)
    assert len(r.events) == 0
    for d, t, p in GUAC:
        feed(parser, d, p, t)
        bounded(parser)


def whole_events(parser_type, records, filt=Filter()):
    parser = parser_type(LIMITS)
    events, forward = [], {"C": b"", "S": b""}
    for d, t, p in records:
        r = feed(parser, d, p, t, filt)
        events.append(r.events)
        forward[d] += r.forward
    return rows(events), forward, parser.opaque


@SETTINGS
@given(st.lists(st.lists(st.integers(0, 10_000), max_size=4), min_size=1, max_size=8), FILTERS)
def test_splitting_a_recording_anywhere_gives_the_same_events_and_bytes(cuts, filt):
    for parser_type, records in ((GuacamoleParser, GUAC), (RfbParser, RFB)):
        whole = whole_events(parser_type, records, filt)
        pieces = whole_events(parser_type, split(records, cuts), filt)
        assert pieces[0] == whole[0]
        assert pieces[1] == whole[1]
        assert pieces[2] == whole[2]


@SETTINGS
@given(st.integers(0, 10**9), st.integers(0, 255), st.sampled_from(["GUAC", "RFB"]))
def test_mutations_and_truncations_never_crash(seed, byte, which):
    records = GUAC if which == "GUAC" else RFB
    parser_type = GuacamoleParser if which == "GUAC" else RfbParser
    rng = np.random.default_rng(seed)
    i = int(rng.integers(len(records)))
    d, t, p = records[i]
    if p and rng.random() < 0.5:
        mutated = bytearray(p)
        mutated[int(rng.integers(len(p)))] = byte
        p = bytes(mutated)
    else:
        p = p[: int(rng.integers(len(p) + 1))]
    mutated_records = records[:i] + [(d, t, p)] + records[i + 1 :]
    parser = parser_type(LIMITS)
    for d, t, payload in mutated_records:
        r = feed(parser, d, payload, t)
        bounded(parser)
        if r.opaque:
            assert r.reason


@SETTINGS
@given(st.lists(st.one_of(st.text(max_size=50), st.binary(max_size=50)), max_size=20),
       st.sampled_from(["json", "ttyd", "raw"]), FILTERS)
def test_terminal_random_frames(frames, dialect, filt):
    parser = TerminalParser(dialect, LIMITS)
    for i, frame in enumerate(frames):
        for direction in "CS":
            r = feed(parser, direction, frame, float(i), filt)
            assert isinstance(r.forward, type(frame))
            assert r.forward in (frame, type(frame)())


@SETTINGS
@given(st.text(max_size=40))
def test_terminal_json_input_never_crashes(text):
    parser = TerminalParser("json", LIMITS)
    r = feed(parser, "C", json.dumps({"type": "input", "data": text}), 1.0)
    assert not r.opaque
    assert len(r.events) <= 1 or r.pasted == 0


def test_bench_runs(capsys):
    from bench import capture

    assert capture.main(["--iterations", "5", "--repeats", "1", "--no-write", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bench"] == "capture"
