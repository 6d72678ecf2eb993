"""Webhook delivery against a real receiver process that fails in every way the issue lists, then recovers.

Time is compressed: backoff parameters are milliseconds, not minutes, so "a sink down for an hour" is a sink
down for a few seconds with hundreds of retries; the logic (order, no skipping, no loss) is the same.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from gateway.secevents import EventsConfig, SecurityEvents
from gateway.secevents.delivery import backoff_delay
from gateway.secevents.outbox import Record
from gateway.secevents.sinks.base import DeliveryError
from gateway.secevents.sinks.webhook import WebhookSink, _retry_after

from .conftest import free_port, make_decision, make_session

SECRET = "s3cret-for-tests-0123456789"
ROOT = Path(__file__).resolve().parents[2]
RECEIVER = Path(__file__).with_name("receiver.py")


def start_receiver(port: int, log: Path, plan: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(RECEIVER), str(port), str(log), SECRET, plan, str(ROOT)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def received(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(l) for l in log.read_text().splitlines() if l]


def config(tmp_path: Path, port: int) -> EventsConfig:
    return EventsConfig.from_dict({
        "outbox": {"path": str(tmp_path / "outbox")},
        "sinks": [{"type": "webhook", "name": "siem", "url": f"http://127.0.0.1:{port}/hook", "secret": SECRET,
                   "timeout": 0.5, "min_backoff": 0.02, "max_backoff": 0.2}],
    })


async def wait_for(pred, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


def delivered_ids(log: Path) -> list[str]:
    return [r["id"] for r in received(log) if r["status"] == 200 and r["mode"] != "timeout" and r["path"] == "/hook"]


@pytest.mark.slow
async def test_every_failure_mode_then_recovery_delivers_each_event_once(tmp_path):
    port, log = free_port(), tmp_path / "received.jsonl"
    plan = "timeout,500,slow,cut,redirect,400,429,500,cut,timeout"
    proc = start_receiver(port, log, plan)
    events = SecurityEvents(config(tmp_path, port), "gw-test", None)
    try:
        await events.start()
        ids = []
        for i in range(12):
            sess = make_session(sid=f"s-{i % 3}")
            ids.append(await events.emit_decision(make_decision(["terminate", "step_up", "restrict"][i % 3]),
                                                  sess, None, "http://erp:8080"))
        ids.append(await events.emit_logoff(make_session(sid="s-0"), "terminated"))
        await wait_for(lambda: set(ids) <= set(delivered_ids(log)))
    finally:
        await events.stop()
        proc.terminate()
        proc.wait()
    rows = received(log)
    ok = [r for r in rows if r["status"] == 200 and r["mode"] != "timeout"]
    # De-duplicated by delivery id: exactly one of each, nothing else.
    assert Counter(r["id"] for r in ok).keys() == set(ids)
    assert all(r["valid"] for r in rows), "every delivery carries a valid signature"
    # Strictly in emit order (hence in order per session), after removing receiver-side duplicates.
    seen, order = set(), []
    for r in ok:
        if r["id"] not in seen:
            seen.add(r["id"])
            order.append(r["id"])
    assert order == ids
    assert not [r for r in rows if r["path"] != "/hook"], "nothing may be posted to a redirect target"
    assert any(r["mode"] == "redirect" for r in rows) and any(r["mode"] == "400" for r in rows)


@pytest.mark.slow
async def test_receiver_down_then_up_and_gateway_restart_lose_nothing(tmp_path):
    port, log = free_port(), tmp_path / "received.jsonl"
    cfg = config(tmp_path, port)
    # Receiver down (connection refused) while the gateway emits and then restarts.
    events = SecurityEvents(cfg, "gw-test", None)
    await events.start()
    ids = [await events.emit_decision(make_decision(), make_session(sid=f"s-{i}"), None, None) for i in range(20)]
    await asyncio.sleep(0.5)
    st = events.status()["sinks"][0]
    assert st["backlog"] == 20 and st["failures"] > 0 and st["last_error"] and st["lag_seconds"] > 0
    await events.stop()
    events = SecurityEvents(cfg, "gw-test", None)  # gateway restart
    await events.start()
    ids += [await events.emit_logoff(make_session(sid=f"s-{i}"), "expired") for i in range(5)]
    proc = start_receiver(port, log, "")
    try:
        await wait_for(lambda: set(ids) <= set(delivered_ids(log)))
        await wait_for(lambda: events.status()["sinks"][0]["backlog"] == 0)
    finally:
        await events.stop()
        proc.terminate()
        proc.wait()
    got = delivered_ids(log)
    assert list(dict.fromkeys(got)) == ids


async def test_an_unparsable_retry_after_is_a_delivery_error_without_a_hint(tmp_path):
    port, log = free_port(), tmp_path / "received.jsonl"
    proc = start_receiver(port, log, "503soon")
    sink = WebhookSink(config(tmp_path, port).sinks[0])
    rec = Record("1", "ev-1", "logoff", "s-1", 0, {"class_name": "Authentication"})
    try:
        with pytest.raises(DeliveryError) as exc:
            await sink.deliver(rec)
        assert str(exc.value) == "HTTP 503" and exc.value.retry_after is None
        await sink.deliver(rec)  # the receiver recovers: delivered
    finally:
        await sink.close()
        proc.terminate()
        proc.wait()
    assert [r["status"] for r in received(log)] == [503, 200]


@pytest.mark.parametrize("value, seconds", [("120", 120.0), ("-5", 0.0), ("soon", None), ("nan", None),
                                            ("inf", None), ("Wed, 99 Foo 2015 07:28:00 GMT", None), ("", None),
                                            ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)])
def test_retry_after_is_a_number_of_seconds_an_http_date_or_absent(value, seconds):
    assert _retry_after(value) == seconds


def test_backoff_after_very_many_attempts_stays_at_the_cap():
    # a receiver down for days: 2 ** (attempt - 1) no longer fits a float past attempt 1025
    for attempt in (1025, 1026, 10_000, 10 ** 9):
        assert backoff_delay(attempt, 0.5, 300.0, 1.0) == 300.0
        assert backoff_delay(attempt, 0.5, 300.0, 0.0) == 150.0
    assert backoff_delay(1, 0.5, 300.0, 1.0) == 0.5
    assert backoff_delay(3, 0.5, 300.0, 1.0) == 2.0
