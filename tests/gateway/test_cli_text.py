"""Strings from IdPs, browsers and users reach an admin's terminal escaped, never as control sequences."""

from __future__ import annotations

import argparse

from gateway.cli import client
from gateway.text import printable, printable_tree
from gateway.secevents.cli import _print
from gateway.secevents.outbox import Record

FORGED = "a\x1b[2J\x1b]0;pwned\x1b\\\x1b]52;c;ZWNobyBoaQ==\x07\r\n2099-01-01 00:00:00  LOGOFF     ceo@corp\u202e"


def test_control_and_format_characters_are_shown_escaped():
    shown = printable(FORGED)
    assert all(ch.isprintable() for ch in shown)
    assert "\\x1b[2J" in shown and "\\x0d\\x0a2099" in shown and "\\u202e" in shown and "\\x07" in shown
    assert printable("Zoë Ω ok") == "Zoë Ω ok"
    assert printable_tree({"k\n": [FORGED, 1, None]}) == {"k\\x0a": [shown, 1, None]}


def test_session_tables_show_an_idp_name_escaped(capsys, monkeypatch):
    session = {"sid": "s1", "sub": FORGED, "state": "active", "state_reason": FORGED, "client_ip": "10.0.0.1",
               "route": "app", "acr": "mfa", "amr": ["pwd"], "assessment": {"risk": 0.1}, "connections": 1}
    monkeypatch.setattr(client, "_target", lambda args: ("http://gw", "token"))
    for action, data in (("list", {"sessions": [session]}), ("show", session)):
        monkeypatch.setattr(client, "_call", lambda *a, data=data: (200, data))
        args = argparse.Namespace(action=action, target="s1", json=False)
        assert client.admin_command("sessions", args) == 0
        out = capsys.readouterr().out
        assert "\x1b" not in out and "\r" not in out and "\u202e" not in out
        assert "2099-01-01" not in out.splitlines()[-1][:12]  # no forged line of its own


def test_events_tail_shows_an_idp_name_escaped(capsys):
    event = {"class_uid": 3002, "time": 1_800_000_000_000, "user": {"name": FORGED},
             "unmapped": {"ztgate": {"sid": "s1", "reason": "signed out"}}}
    _print(Record(pos="1", id="e1", kind="logoff", sid="s1", enqueued_ms=0, event=event), as_json=False)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "\x1b" not in out and "\r" not in out
