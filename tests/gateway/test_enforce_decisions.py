"""Decisions as the gateway applies them, with real policies and a real Gateway on the memory store.

A second restrict rule that starts firing while the first still wins adds its restrictions (the enforcer used to see
the same winning rule and skip the update: the clipboard stayed open). A rule that fails at run time is reported."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import policies
from gateway.sessions import Identity
from gateway.store import SessionState
from tests.support.inprocess import memory_gateway

POLICY = """
policies:
  - id: p
    rules:
      - id: risky-writes
        when: risk >= 0.5
        action: restrict
        params: {deny_methods: [POST]}
      - id: relay-suspect
        when: signals.relay.sufficient && signals.relay.score >= 0.8
        action: restrict
        params: {block_file_transfer: true, block_clipboard: true}
"""


def test_a_restrict_rule_joining_the_winner_adds_its_restrictions(tmp_path: Path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "p.yaml").write_text(textwrap.dedent(POLICY))
    rules = policies.load_directory(tmp_path / "p")

    async def scenario():
        gw = memory_gateway(tmp_path)
        record = await gw.sessions.create(Identity(sub="ann"), client_ip="127.0.0.1", user_agent="ua", route="app")
        first = rules.evaluate({"risk": 0.6})
        record = await gw.enforcer.apply(record, first, None)
        assert record.state == SessionState.RESTRICTED and record.restrictions["deny_methods"] == ["POST"]
        assert not record.restrictions["block_clipboard"]
        both = rules.evaluate({"risk": 0.6, "signals": {"relay": {"sufficient": True, "score": 0.95}}})
        assert both.rule_id == first.rule_id  # the winner did not change
        record = await gw.enforcer.apply(record, both, None)
        stored = await gw.sessions.get(record.sid)
        r = stored.restrictions
        assert r["deny_methods"] == ["POST"] and r["block_file_transfer"] and r["block_clipboard"]
        again = await gw.enforcer.apply(stored, both, None)
        assert again is stored  # nothing new: no write

    asyncio.run(scenario())


BROKEN_AT_RUN_TIME = """
policies:
  - id: watch
    rules:
      - id: relay-detail
        when: signals.relay.details.no_such_detail > 1.0
        action: terminate
"""


def test_a_rule_that_fails_at_run_time_is_logged_once_a_minute_not_silently_skipped(tmp_path: Path, caplog):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "watch.yaml").write_text(textwrap.dedent(BROKEN_AT_RUN_TIME))
    gw = memory_gateway(tmp_path, policies=tmp_path / "p")
    context = {"risk": 0.0, "signals": {"relay": {"score": 0.9, "sufficient": True, "details": {}}}}
    with caplog.at_level("WARNING", logger="ztgate.monitor"):
        decisions = [gw.monitor.evaluate_policies(context) for _ in range(3)]
    assert all(int(d.action) == 0 and d.errors for d in decisions)  # fail-open, as documented
    logged = [r.getMessage() for r in caplog.records if "could not be evaluated" in r.getMessage()]
    assert len(logged) == 1 and "watch/relay-detail" in logged[0]
