"""The recorded Guacamole and noVNC sessions give exactly the events the recording script intended."""

import json

import numpy as np
import pytest

from gateway.capture import Filter, GuacamoleParser, RfbParser

from . import make_fixtures
from .recording import FIXTURES, load

SESSIONS = {"guacamole_session": GuacamoleParser, "novnc_session": RfbParser}


def replay(parser, records, filt=Filter()):
    events, forward, transfers = [], {"C": b"", "S": b""}, 0
    for direction, t, payload in records:
        feed = parser.feed_client if direction == "C" else parser.feed_server
        r = feed(payload, t, filt)
        assert not r.opaque, r.reason
        events.append(r.events)
        forward[direction] += r.forward
        transfers += r.transfer
    return np.concatenate(events), forward, transfers


@pytest.mark.parametrize("name", SESSIONS)
def test_recorded_session_events(name):
    records = load(FIXTURES / f"{name}.rec")
    expected = json.loads((FIXTURES / f"{name}.expected.json").read_text())
    events, forward, _ = replay(SESSIONS[name](), records)
    assert [[int(e["kind"]), int(e["key"]), int(e["detail"])] for e in events] == expected
    assert np.all(np.diff(events["t_arr"]) >= 0)
    for direction in "CS":  # unfiltered, everything passes unchanged (noVNC: minus the stripped encoding)
        sent = b"".join(p for d, _, p in records if d == direction)
        if name == "novnc_session" and direction == "C":
            assert len(forward["C"]) == len(sent) - 4
        else:
            assert forward[direction] == sent


def test_recordings_are_what_the_script_generates(tmp_path, monkeypatch):
    monkeypatch.setattr(make_fixtures, "FIXTURES", tmp_path)
    monkeypatch.setattr(make_fixtures.Script, "save", lambda self, name: make_fixtures.dump(
        self.records, tmp_path / f"{name}.rec"))
    make_fixtures.guacamole_session().save("guacamole_session")
    make_fixtures.rfb_session().save("novnc_session")
    for name in SESSIONS:
        assert (tmp_path / f"{name}.rec").read_bytes() == (FIXTURES / f"{name}.rec").read_bytes()


def test_guacamole_recording_with_transfers_blocked():
    records = load(FIXTURES / "guacamole_session.rec")
    _, forward, transfers = replay(GuacamoleParser(), records, Filter(block_clipboard=True, block_file_transfer=True))
    assert transfers >= 2
    assert b"clipboard" not in forward["C"] and b"report.txt" not in forward["C"]
    assert b"cGFzdGVk" not in forward["C"]  # the pasted blob


def test_novnc_recording_with_clipboard_blocked():
    records = load(FIXTURES / "novnc_session.rec")
    _, forward, _ = replay(RfbParser(), records, Filter(block_clipboard=True))
    assert b"pasted from the local clipboard" not in forward["C"]
    assert b"remote text" not in forward["S"]
