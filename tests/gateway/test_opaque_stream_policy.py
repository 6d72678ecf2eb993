"""A stream whose input stops being parsed is a policy input: `session.opaque_streams` (and, of those,
`session.opaque_streams_oversized`) in the session's context, re-evaluated the moment it changes, with no input batch
needed. Against a Gateway in the test's process (memory store) with the shipped policies; the stream itself, through
real mitmproxy, is in test_opaque_stream_e2e.py."""

from __future__ import annotations

from gateway.sessions import Identity
from tests.support.inprocess import memory_gateway


async def _session(gw, user: str = "ann") -> str:
    record = await gw.sessions.create(Identity(sub=user), client_ip="127.0.0.1", user_agent="ua", route="app")
    await gw.monitor.start_session(record.sid)
    return record.sid


def _context(gw, sid: str) -> dict:
    return gw.monitor.context(gw.sessions.cached(sid), gw.monitor.entry(sid))


async def test_an_unparsed_stream_steps_up_at_once_without_further_input(tmp_path):
    gw = memory_gateway(tmp_path)
    sid = await _session(gw)
    other = await _session(gw, "bob")
    assert _context(gw, sid)["session"]["opaque_streams"] == 0

    await gw.monitor.stream_opaque(sid, oversized=False)  # no input was ever scored for this session

    record = await gw.sessions.get(sid)
    assert record.state == "step_up_required"
    assert record.decision["rule_id"] == "unparsed-input" and record.step_up["method"] == "webauthn"
    assert _context(gw, sid)["session"]["opaque_streams"] == 1
    # the count is the session's own
    assert _context(gw, other)["session"]["opaque_streams"] == 0
    assert (await gw.sessions.get(other)).state == "active"


async def test_a_passed_step_up_answers_the_count_and_a_new_unparsed_stream_asks_again(tmp_path):
    gw = memory_gateway(tmp_path)
    sid = await _session(gw)
    await gw.monitor.stream_opaque(sid, oversized=False)
    assert (await gw.sessions.get(sid)).state == "step_up_required"

    # what a passed step-up does (gateway.control.login.complete_step_up): state back to active, evidence reset
    await gw.sessions.update(sid, state="active", state_reason="")
    await gw.monitor.reset_evidence(sid)
    await gw.monitor.evaluate(sid)
    assert (await gw.sessions.get(sid)).state == "active"  # not asked again for the same stream
    assert _context(gw, sid)["session"]["opaque_streams"] == 0

    await gw.monitor.stream_opaque(sid, oversized=False)
    assert (await gw.sessions.get(sid)).state == "step_up_required"


async def test_a_stream_stopped_only_by_a_large_message_is_reported_not_enforced(tmp_path):
    gw = memory_gateway(tmp_path)
    sid = await _session(gw)
    await gw.monitor.stream_opaque(sid, oversized=True)

    assert (await gw.sessions.get(sid)).state == "active"
    session = _context(gw, sid)["session"]
    assert session["opaque_streams"] == session["opaque_streams_oversized"] == 1
    decision = gw.monitor.evaluate_policies(_context(gw, sid))
    assert int(decision.action) == 0
    assert [d.to_dict()["rule_id"] for d in decision.shadow_decisions] == ["unparsed-large-message"]

    await gw.monitor.stream_opaque(sid, oversized=False)  # then one that is malformed
    assert (await gw.sessions.get(sid)).state == "step_up_required"
