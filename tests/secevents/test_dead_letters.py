"""Dead letters: an event a receiver refuses for good is tried `dead_letter_after` times, kept in the sink's
dead-letter store, and the events after it are delivered; transient failures are retried until delivered; operators
list, retry (to that sink only) and drop dead letters. Real HTTP receiver processes, real Redis, real files.

Time is compressed (backoffs in milliseconds); every wait is on a condition, bounded by a generous timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.secevents import EventsConfig, SecurityEvents, delivery
from gateway.secevents.cli import main
from gateway.secevents.deadletters import DeadLetter, FileDeadLetters, RedisDeadLetters
from gateway.secevents.delivery import SinkWorker
from gateway.secevents.outbox import Record, RedisOutbox
from gateway.secevents.sinks.base import DeliveryError
from gateway.secevents.sinks.otlp import OtlpSink
from gateway.secevents.sinks.webhook import WebhookSink
from gateway.telemetry.gauges import GatewayGauges
from gateway.telemetry.metrics import Metrics

from .conftest import free_port, make_session

SECRET = "s3cret-for-dead-letter-tests-0123"
ROOT = Path(__file__).resolve().parents[2]
RECEIVER = Path(__file__).with_name("receiver.py")
POISON = "poison-1"  # the session id only the poison event carries: the receiver refuses bodies containing it


# ---------------------------------------------------------------------------------------------- helpers


class Receiver:
    """A webhook receiver process; `refuse` ("422:TEXT") refuses every body containing TEXT, as a receiver
    refusing one malformed-to-it event does each time it is sent."""

    def __init__(self, port: int, log: Path, *, plan: str = "", refuse: str = ""):
        self.log = log
        self.proc = subprocess.Popen([sys.executable, str(RECEIVER), str(port), str(log), SECRET, plan, str(ROOT),
                                      refuse], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def rows(self) -> list[dict]:
        return [json.loads(x) for x in self.log.read_text().splitlines() if x] if self.log.exists() else []

    def delivered(self) -> list[str]:
        return [r["id"] for r in self.rows() if r["status"] == 200]

    def refused(self) -> list[str]:
        return [r["id"] for r in self.rows() if r["status"] != 200]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def config(tmp_path: Path, port: int, *, dead_letter_after: int = 3, max_backoff: float = 0.05,
           outbox: dict | None = None) -> EventsConfig:
    """A webhook sink `siem` and a JSONL sink `archive` that accepts everything."""
    return EventsConfig.from_dict({
        "outbox": outbox or {"path": str(tmp_path / "outbox")},
        "sinks": [{"type": "webhook", "name": "siem", "url": f"http://127.0.0.1:{port}/hook", "secret": SECRET,
                   "timeout": 0.5, "min_backoff": 0.01, "max_backoff": max_backoff,
                   "dead_letter_after": dead_letter_after},
                  {"type": "jsonl", "name": "archive", "path": str(tmp_path / "archive.jsonl"),
                   "min_backoff": 0.01, "max_backoff": 0.05}]})


def archived(tmp_path: Path) -> list[str]:
    path = tmp_path / "archive.jsonl"
    return [json.loads(x)["metadata"]["uid"] for x in path.read_text().splitlines()] if path.exists() else []


async def wait_for(pred, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)


async def emit(events: SecurityEvents, *sids: str) -> list[str]:
    return [await events.emit_logoff(make_session(sid=sid), "logout") for sid in sids]


def sink_status(events: SecurityEvents, name: str = "siem") -> dict:
    return next(s for s in events.status()["sinks"] if s["name"] == name)


def cli(argv: list[str], cfg: EventsConfig, redis_url: str | None = None) -> int:
    """`ztgate events ...` as the operator runs it (its own event loop, here on a thread)."""
    result: dict = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", main(argv, cfg, redis_url)))
    t.start()
    t.join()
    return result["rc"]


async def dead_letter_one(tmp_path: Path, port: int, log: Path, **cfg_over) -> tuple[EventsConfig, list[str]]:
    """Emits s-1, the poison event, s-2 to a receiver refusing the poison event with 422; returns once the poison
    event is dead-lettered and the others delivered, with the gateway stopped."""
    receiver = Receiver(port, log, refuse=f"422:{POISON}")
    cfg = config(tmp_path, port, **cfg_over)
    events = SecurityEvents(cfg, "gw", None)
    try:
        await events.start()
        ids = await emit(events, "s-1", POISON, "s-2")
        await wait_for(lambda: [ids[0], ids[2]] == receiver.delivered() and sink_status(events)["dead_letters"] == 1)
        await wait_for(lambda: archived(tmp_path) == ids)
    finally:
        await events.stop()
        receiver.stop()
    return cfg, ids


# ---------------------------------------------------------------------------------------------- classification


async def test_webhook_and_otlp_tell_permanent_refusals_from_transient_failures(tmp_path):
    codes = [400, 401, 403, 404, 413, 422, 408, 425, 429, 500, 502, 503]
    permanent = {400, 401, 403, 404, 413, 422, 302}
    port = free_port()
    receiver = Receiver(port, tmp_path / "received.jsonl", plan=",".join(map(str, codes)) + ",redirect," +
                        ",".join(map(str, codes)) + ",redirect")
    cfg = config(tmp_path, port)
    webhook = WebhookSink(cfg.sinks[0])
    otlp = OtlpSink(EventsConfig.from_dict({"sinks": [{"type": "otlp", "endpoint": f"http://127.0.0.1:{port}/"}]})
                    .sinks[0], instance="gw", version="0")
    rec = Record("1", "ev-1", "logoff", "s-1", 0, {"class_name": "Authentication"})
    seen: list[tuple[str, int, bool]] = []
    try:
        for sink in (webhook, otlp):
            for _ in range(len(codes) + 1):
                with pytest.raises(DeliveryError) as exc:
                    await sink.deliver(rec)
                seen.append((sink.type, exc.value.status, exc.value.permanent))
    finally:
        await webhook.close()
        await otlp.close()
        receiver.stop()
    expected = [(kind, code, code in permanent) for kind in ("webhook", "otlp") for code in [*codes, 302]]
    assert seen == expected


# ---------------------------------------------------------------------------------------------- the worker


async def test_a_poison_event_is_dead_lettered_after_its_attempts_and_the_events_after_it_delivered(tmp_path,
                                                                                                    caplog):
    # max_backoff is a minute: were a refusal still retried at the longest backoff, this would not end in time
    port, log = free_port(), tmp_path / "received.jsonl"
    with caplog.at_level(logging.DEBUG):
        cfg, ids = await dead_letter_one(tmp_path, port, log, dead_letter_after=3, max_backoff=60)
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["id"] for r in rows if r["status"] == 422] == [ids[1]] * 3  # dead_letter_after attempts, no more
    assert [r["id"] for r in rows if r["status"] == 200] == [ids[0], ids[2]]  # in order, the poison one skipped
    assert archived(tmp_path) == ids  # the other sink is not affected

    # loud: one ERROR naming the event, the sink and the status; no log line carries the event
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len([m for m in errors if ids[1] in m and "siem" in m and "422" in m]) == 1
    body = next(r["body"] for r in rows if r["id"] == ids[1])
    assert not [r for r in caplog.records if POISON in r.getMessage() or body in r.getMessage()]

    # durable: one JSON object per line beside the outbox, the whole event in it
    lines = (tmp_path / "outbox" / "dead-letters" / "siem.jsonl").read_text().splitlines()
    [entry] = [json.loads(x) for x in lines]
    assert (entry["op"], entry["uid"], entry["sink"], entry["status"], entry["attempts"]) == \
        ("dead", ids[1], "siem", 422, 3)
    assert json.dumps(entry["event"], separators=(",", ":"), sort_keys=True) == body
    assert entry["first_attempt_at"] <= entry["last_attempt_at"] <= entry["dead_lettered_at"]


async def test_a_restarted_gateway_does_not_retry_what_it_dead_lettered(tmp_path):
    port, log = free_port(), tmp_path / "received.jsonl"
    cfg, ids = await dead_letter_one(tmp_path, port, log)
    receiver = Receiver(port, tmp_path / "after-restart.jsonl", refuse=f"422:{POISON}")
    events = SecurityEvents(cfg, "gw", None)
    try:
        await events.start()
        ids += await emit(events, "s-3")
        await wait_for(lambda: receiver.delivered() == [ids[3]])
        await wait_for(lambda: sink_status(events)["dead_letters"] == 1)
    finally:
        await events.stop()
        receiver.stop()
    assert receiver.refused() == []  # the cursor had passed the poison event


async def test_transient_failures_are_retried_until_delivered_and_never_dead_lettered(tmp_path):
    port = free_port()
    receiver = Receiver(port, tmp_path / "received.jsonl", plan="500,cut,503,429,408,425,502")
    events = SecurityEvents(config(tmp_path, port, dead_letter_after=1), "gw", None)
    try:
        await events.start()
        ids = await emit(events, "s-1", "s-2")
        await wait_for(lambda: receiver.delivered() == ids)
        st = sink_status(events)
    finally:
        await events.stop()
        receiver.stop()
    assert len(receiver.refused()) == 6 and st["dead_letters"] == st["dead_lettered"] == 0  # ("cut" is not logged)
    assert not (tmp_path / "outbox" / "dead-letters" / "siem.jsonl").exists()


async def test_dead_letter_after_zero_retries_a_refused_event_forever_as_before(tmp_path):
    port = free_port()
    receiver = Receiver(port, tmp_path / "received.jsonl", refuse=f"400:{POISON}")
    events = SecurityEvents(config(tmp_path, port, dead_letter_after=0), "gw", None)
    try:
        await events.start()
        ids = await emit(events, POISON, "s-2")
        await wait_for(lambda: len(receiver.refused()) >= 12)  # far past the default of 5
        st = sink_status(events)
    finally:
        await events.stop()
        receiver.stop()
    assert set(receiver.refused()) == {ids[0]} and receiver.delivered() == []  # the next one waits behind it
    assert st["dead_letters"] == 0 and st["backlog"] == 2


async def test_the_metric_counts_dead_lettered_events_per_sink(tmp_path):
    port = free_port()
    receiver = Receiver(port, tmp_path / "received.jsonl", refuse=f"413:{POISON}")
    events = SecurityEvents(config(tmp_path, port, dead_letter_after=1), "gw", None)
    telemetry = Metrics()
    GatewayGauges(types.SimpleNamespace(telemetry=telemetry, events=events)).register()
    try:
        await events.start()
        await emit(events, POISON, POISON, "s-1")
        await wait_for(lambda: len(receiver.delivered()) == 1)
        text = telemetry.exposition().decode()
    finally:
        await events.stop()
        receiver.stop()
    assert "# TYPE ztgate_events_dead_lettered_total counter" in text
    assert 'ztgate_events_dead_lettered_total{sink="siem"} 2.0' in text
    assert 'ztgate_events_dead_lettered_total{sink="archive"} 0.0' in text


# ---------------------------------------------------------------------------------------------- operators


async def test_retry_after_the_receiver_is_fixed_delivers_to_that_sink_only(tmp_path, capsys):
    port, log = free_port(), tmp_path / "received.jsonl"
    cfg, ids = await dead_letter_one(tmp_path, port, log)
    capsys.readouterr()
    assert cli(["retry-dead-letters", "--sink", "siem"], cfg) == 0  # the gateway is down: it is marked only
    assert ids[1] in capsys.readouterr().out
    assert cli(["dead-letters", "--json"], cfg) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["retry_requested"] is True

    fixed = Receiver(port, tmp_path / "fixed.jsonl")
    events = SecurityEvents(cfg, "gw", None)
    try:
        await events.start()
        await wait_for(lambda: fixed.delivered() == [ids[1]])
        await wait_for(lambda: sink_status(events)["dead_letters"] == 0)
        ids += await emit(events, "s-3")
        await wait_for(lambda: fixed.delivered() == [ids[1], ids[3]] and archived(tmp_path) == ids)
    finally:
        await events.stop()
        fixed.stop()
    assert archived(tmp_path) == ids  # the archive sink, which had it, did not get it again
    assert cli(["dead-letters"], cfg) == 0 and "no dead letters" in capsys.readouterr().out




async def test_redis_dead_letters_retried_while_the_gateway_runs(tmp_path, redis_url, redis_prefix, cleanup, capsys):
    port = free_port()
    stream = redis_prefix + "outbox"
    cfg = config(tmp_path, port, outbox={"stream": stream})
    receiver = Receiver(port, tmp_path / "received.jsonl", refuse=f"422:{POISON}")
    events = SecurityEvents(cfg, "gw", redis_url)
    client = aioredis.from_url(redis_url)

    def listed() -> list[dict]:
        capsys.readouterr()
        assert cli(["dead-letters", "--json", "--sink", "siem"], cfg, redis_url) == 0
        return json.loads(capsys.readouterr().out)

    try:
        await events.start()
        ids = await emit(events, "s-1", POISON, "s-2")
        await wait_for(lambda: receiver.delivered() == [ids[0], ids[2]] and sink_status(events)["dead_letters"] == 1)
        assert await client.hkeys(f"{stream}:dead:siem") == [ids[1].encode()]
        [letter] = listed()
        assert (letter["uid"], letter["sink"], letter["status"], letter["attempts"]) == (ids[1], "siem", 422, 3)
        assert "event" not in letter and letter["first_attempt_at"] <= letter["last_attempt_at"]

        # put back while the receiver still refuses it: tried again, back in the dead letters, its history kept
        assert cli(["retry-dead-letters", "--sink", "siem", "--uid", ids[1]], cfg, redis_url) == 0
        await wait_for(lambda: receiver.refused().count(ids[1]) == 6)
        await wait_for(lambda: listed()[0]["retry_requested"] is False)
        assert listed()[0]["attempts"] == 6

        receiver.stop()
        receiver = Receiver(port, tmp_path / "fixed.jsonl")
        assert cli(["retry-dead-letters"], cfg, redis_url) == 0
        await wait_for(lambda: receiver.delivered() == [ids[1]])
        await wait_for(lambda: sink_status(events)["dead_letters"] == 0)
        await wait_for(lambda: archived(tmp_path) == ids)
        assert await client.exists(f"{stream}:dead:siem", f"{stream}:dead-retry:siem") == 0
        capsys.readouterr()
        assert cli(["status", "--json"], cfg, redis_url) == 0
        assert [s["dead_letters"] for s in json.loads(capsys.readouterr().out)["sinks"]] == [0, 0]
    finally:
        await events.stop()
        receiver.stop()
        await client.aclose()
    assert archived(tmp_path) == ids  # the archive sink, which had it, did not get it again


def letter(sink: str, uid: str, i: int = 0) -> DeadLetter:
    now = time.time()
    return DeadLetter(sink=sink, uid=uid, pos=str(i + 1), kind="logoff", sid="s-1", enqueued_ms=1000 + i,
                      status=422, reason="HTTP 422 (rejected by the receiver; check its logs)", attempts=5,
                      first_attempt_at=now - 10, last_attempt_at=now, dead_lettered_at=now,
                      event={"metadata": {"uid": uid}, "message": "secret-body-text \x1b[2J"})


def file_cfg(tmp_path: Path) -> EventsConfig:
    return EventsConfig.from_dict({"outbox": {"path": str(tmp_path / "outbox")}, "sinks": [
        {"type": "jsonl", "name": "siem", "path": str(tmp_path / "a.jsonl")},
        {"type": "jsonl", "name": "archive", "path": str(tmp_path / "b.jsonl")}]})


async def test_listing_shows_no_event_unless_asked_and_status_counts_per_sink(tmp_path, capsys):
    cfg = file_cfg(tmp_path)
    store = FileDeadLetters(tmp_path / "outbox" / "dead-letters")
    for i in range(3):
        await store.add(letter("siem", f"ev-{i}", i), owner="gw")
    assert cli(["dead-letters"], cfg) == 0
    text = capsys.readouterr().out
    assert [line.split()[:3] for line in text.splitlines()] == \
        [["siem", f"ev-{i}", "status=422"] for i in range(3)]
    assert "attempts=5" in text and "first=" in text and "last=" in text and "secret-body-text" not in text
    assert cli(["dead-letters", "--show-body", "--sink", "siem"], cfg) == 0
    shown = capsys.readouterr().out
    assert "secret-body-text" in shown and "\x1b" not in shown  # shown, never run by the terminal
    assert cli(["dead-letters", "--json", "--show-body"], cfg) == 0
    assert [x["event"]["metadata"]["uid"] for x in json.loads(capsys.readouterr().out)] == ["ev-0", "ev-1", "ev-2"]
    assert cli(["status", "--json"], cfg) == 0
    assert {s["name"]: s["dead_letters"] for s in json.loads(capsys.readouterr().out)["sinks"]} == \
        {"siem": 3, "archive": 0}
    assert cli(["status"], cfg) == 0
    assert "dead_letters=3" in capsys.readouterr().out


async def test_drop_one_or_all_and_the_errors_operators_get(tmp_path, capsys):
    cfg = file_cfg(tmp_path)
    store = FileDeadLetters(tmp_path / "outbox" / "dead-letters")
    for i in range(3):
        await store.add(letter("siem", f"ev-{i}", i), owner="gw")
    await store.add(letter("archive", "ev-9"), owner="gw")
    assert cli(["drop-dead-letters", "--sink", "siem", "--uid", "ev-1"], cfg) == 0
    assert [x.uid for x in await store.list("siem")] == ["ev-0", "ev-2"]
    assert cli(["drop-dead-letters", "--sink", "siem", "--uid", "ev-1"], cfg) == 1  # no longer there
    assert cli(["retry-dead-letters", "--uid", "nope"], cfg) == 1
    assert cli(["dead-letters", "--sink", "nope"], cfg) == 2
    assert "no sink named 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # neither --uid nor --all: refused rather than guessed
        main(["drop-dead-letters", "--sink", "siem"], cfg, None)
    assert cli(["drop-dead-letters", "--sink", "siem", "--all"], cfg) == 0
    assert await store.list("siem") == [] and [x.uid for x in await store.list("archive")] == ["ev-9"]


# ---------------------------------------------------------------------------------------------- the stores


async def test_the_file_store_is_shared_survives_a_torn_line_and_compacts(tmp_path, monkeypatch):
    monkeypatch.setattr(FileDeadLetters, "COMPACT_SLACK", 4)
    directory = tmp_path / "dead-letters"
    gateway, operator = FileDeadLetters(directory), FileDeadLetters(directory)  # two processes' views
    await gateway.add(letter("siem", "ev-0"), owner="gw")
    assert [x.uid for x in await operator.list("siem")] == ["ev-0"]
    assert await operator.request_retry("siem", None) == ["ev-0"]
    assert [x.uid for x in await gateway.retries("siem", 10)] == ["ev-0"]  # seen by the gateway's reader
    path = directory / "siem.jsonl"
    with open(path, "ab") as f:
        f.write(b'{"op":"dead","uid":"torn')  # a crash mid-append
    await gateway.add(letter("siem", "ev-1", 1), owner="gw")
    assert [x.uid for x in await FileDeadLetters(directory).list("siem")] == ["ev-0", "ev-1"]

    for i in range(2, 40):
        await gateway.add(letter("siem", f"ev-{i}", i), owner="gw")
    await operator.drop("siem", "ev-1")
    for i in range(2, 37):
        await gateway.resolve("siem", f"ev-{i}", owner="gw")
    fresh = FileDeadLetters(directory)
    assert [(x.uid, x.retry_requested) for x in await fresh.list("siem")] == \
        [("ev-0", True)] + [(f"ev-{i}", False) for i in range(37, 40)]
    assert len(path.read_text().splitlines()) < 20  # rewritten without the settled lines (80 were written)
    assert [x.uid for x in await gateway.list("siem")] == [x.uid for x in await fresh.list("siem")]


async def test_redis_store_writes_only_for_the_lease_holder(redis_url, redis_prefix, cleanup):
    outbox = RedisOutbox(redis_url, stream=redis_prefix + "outbox")
    store = RedisDeadLetters(outbox.redis, outbox.stream)
    try:
        assert await outbox.acquire_lease("siem", "A", 10)
        assert not await store.add(letter("siem", "ev-1"), owner="B")
        assert await store.count("siem") == 0
        assert await store.add(letter("siem", "ev-1"), owner="A")
        assert await store.request_retry("siem", "ev-1") == ["ev-1"]
        assert not await store.resolve("siem", "ev-1", owner="B")
        assert [x.uid for x in await store.retries("siem", 10)] == ["ev-1"]
        assert await store.resolve("siem", "ev-1", owner="A")
        assert await store.count("siem") == 0 and await store.retries("siem", 10) == []
    finally:
        await outbox.close()


class RefusingSink:
    """Refuses one event permanently until `fixed`; records who delivered what."""
    type = "webhook"
    name = "siem"

    def __init__(self, who: str, log: list, refuse: str):
        self.who, self.log, self.refuse, self.fixed = who, log, refuse, False

    async def deliver(self, rec) -> None:
        self.log.append((self.who, rec.id, "ok" if self.fixed or rec.id != self.refuse else "refused"))
        if self.log[-1][2] == "refused":
            raise DeliveryError("HTTP 422", permanent=True, status=422)

    async def close(self) -> None:
        pass


async def test_two_replicas_dead_letter_and_redeliver_an_event_once(redis_url, redis_prefix, cleanup, monkeypatch):
    monkeypatch.setattr(delivery, "LEASE_TTL", 2.0)
    stream = redis_prefix + "outbox"
    a, b = RedisOutbox(redis_url, stream=stream), RedisOutbox(redis_url, stream=stream)
    ids = [f"ev-{i}" for i in range(5)]
    for uid in ids:
        await a.append({"id": uid, "kind": "logoff", "sid": None, "enqueued_ms": 0, "event": {"uid": uid}})
    log: list = []
    sinks = [RefusingSink("A", log, "ev-2"), RefusingSink("B", log, "ev-2")]
    workers = [SinkWorker(sink, ob, owner=f"replica-{sink.who}", min_backoff=0.01, max_backoff=0.05,
                          dead_letter_after=3) for sink, ob in zip(sinks, (a, b))]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    store = workers[0].dead_letters
    try:
        await wait_for(lambda: len([x for x in log if x[2] == "ok"]) == 4)
        assert await store.count("siem") == 1
        for sink in sinks:
            sink.fixed = True
        assert await store.request_retry("siem", "ev-2") == ["ev-2"]
        await wait_for(lambda: ("A", "ev-2", "ok") in log or ("B", "ev-2", "ok") in log)
        await asyncio.sleep(0.5)  # room for a wrongful second redelivery to show
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
        await a.close()
        await b.close()
    assert [uid for _, uid, outcome in log if outcome == "refused"] == ["ev-2"] * 3
    assert [uid for _, uid, outcome in log if outcome == "ok"] == ["ev-0", "ev-1", "ev-3", "ev-4", "ev-2"]
    assert {who for who, _, _ in log} == {"A"}  # the lease holder alone, dead-lettering and redelivering
    assert sum(w.status.dead_lettered for w in workers) == 1
