"""Redis: the stream sink read by a consumer group, a Redis restart during delivery, and the Redis outbox.

Each test starts its own redis-server on a free port. It runs with an append-only file (appendfsync always)
so that what Redis acknowledged before the SIGKILL is still there after the restart, as in production.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from gateway.secevents import EventsConfig, SecurityEvents

from .conftest import free_port, make_decision, make_session
from .ocsf_schema import SCHEMA


class RedisServer:
    def __init__(self, tmp: Path):
        self.port = free_port()
        self.dir = tmp / "redis"
        self.dir.mkdir()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


async def wait_for(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


def sink_cfg(tmp_path, url, extra=None):
    return EventsConfig.from_dict({
        "outbox": {"path": str(tmp_path / "outbox"), **(extra or {})},
        "sinks": [{"type": "redis_stream", "name": "stream", "url": url, "stream": "siem:events", "maxlen": 10000,
                   "timeout": 0.5, "min_backoff": 0.02, "max_backoff": 0.3}]})


def jsonl_cfg(out: Path) -> EventsConfig:
    """A Redis outbox (stream gw:outbox) delivering to one JSONL file sink."""
    return EventsConfig.from_dict({"outbox": {"stream": "gw:outbox"},
                                   "sinks": [{"type": "jsonl", "name": "file", "path": str(out),
                                              "min_backoff": 0.02, "max_backoff": 0.2}]})


async def spooled_events(cfg: EventsConfig, redis_server, spool: Path) -> SecurityEvents:
    """A started gateway's security events on the test's Redis, spooling to `spool` while it is down."""
    events = SecurityEvents(cfg, "gw-r", redis_server.url, spool_dir=str(spool))
    await events.start()
    return events


def delivered_ids(out: Path) -> list[str]:
    return [json.loads(line)["metadata"]["uid"] for line in out.read_text().splitlines()] if out.exists() else []


@pytest.mark.slow
async def test_consumer_group_reads_the_stream_and_redis_restart_loses_nothing(tmp_path, redis_server):
    client = aioredis.from_url(redis_server.url)
    await client.xgroup_create("siem:events", "siem", id="0", mkstream=True)
    events = SecurityEvents(sink_cfg(tmp_path, redis_server.url), "gw-r", None)
    await events.start()
    ids = [await events.emit_decision(make_decision(), make_session(sid=f"s-{i}"), None, None) for i in range(10)]

    async def stream_len():
        try:
            return await client.xlen("siem:events") >= 10
        except redis.RedisError:
            return False
    await wait_for(stream_len)
    redis_server.kill()  # Redis goes away during delivery
    ids += [await events.emit_logoff(make_session(sid=f"s-{i}"), "expired") for i in range(10)]
    await asyncio.sleep(0.5)
    assert events.status()["sinks"][0]["last_error"]
    redis_server.start()
    client = aioredis.from_url(redis_server.url)

    async def all_there():
        try:
            return await client.xlen("siem:events") >= 20
        except redis.RedisError:
            return False
    await wait_for(all_there)
    await events.stop()

    got: list[str] = []
    while True:
        reply = await client.xreadgroup("siem", "analyst-1", {"siem:events": ">"}, count=7)
        if not reply:
            break
        for _stream, entries in reply:
            for entry_id, fields in entries:
                got.append(fields[b"id"].decode())
                event = json.loads(fields[b"event"])
                assert SCHEMA.validate(event)[0] == []
                await client.xack("siem:events", "siem", entry_id)
    assert list(dict.fromkeys(got)) == ids  # de-duplicated: every event, once, in order
    pending = await client.xpending("siem:events", "siem")
    assert pending["pending"] == 0
    await client.aclose()


@pytest.mark.slow
async def test_redis_outbox_delivers_and_resumes_after_restart(tmp_path, redis_server):
    out = tmp_path / "events.jsonl"
    cfg = jsonl_cfg(out)
    events = SecurityEvents(cfg, "gw-r", redis_server.url)
    await events.start()
    ids = [await events.emit_decision(make_decision("step_up"), make_session(sid=f"s-{i}"), None, None)
           for i in range(5)]

    def lines():
        return delivered_ids(out)

    async def five():
        return len(lines()) >= 5
    await wait_for(five)
    await events.stop()
    events = SecurityEvents(cfg, "gw-r", redis_server.url)  # restart: cursor lives in Redis
    await events.start()
    ids.append(await events.emit_logoff(make_session(sid="s-0"), "logout"))

    async def six():
        return len(lines()) >= 6
    await wait_for(six)
    st = events.status()
    await events.stop()
    assert lines() == ids  # nothing redelivered from the start, nothing lost
    assert st["outbox"]["kind"] == "redis"


@pytest.mark.slow
async def test_redis_outbox_trims_only_what_every_sink_delivered(tmp_path, redis_server, monkeypatch):
    from gateway.secevents import service

    monkeypatch.setattr(service, "COMPACT_EVERY", 0.1)
    out = tmp_path / "events.jsonl"
    cfg = EventsConfig.from_dict({"outbox": {"stream": "gw:outbox"}, "sinks": [
        {"type": "jsonl", "name": "file", "path": str(out), "min_backoff": 0.02, "max_backoff": 0.2},
        # a receiver that is down: nothing it has not had may be trimmed
        {"type": "webhook", "name": "siem", "url": f"http://127.0.0.1:{free_port()}/hook", "secret": "s" * 32,
         "timeout": 0.2, "min_backoff": 0.05, "max_backoff": 0.2}]})
    client = aioredis.from_url(redis_server.url)
    events = SecurityEvents(cfg, "gw-r", redis_server.url)
    await events.start()
    for i in range(40):
        await events.emit_logoff(make_session(sid=f"s-{i}"), "logout")

    async def file_has_all():
        return out.exists() and len(out.read_text().splitlines()) >= 40
    await wait_for(file_has_all)
    await asyncio.sleep(0.5)  # several compaction rounds
    assert await client.xlen("gw:outbox") == 40  # the webhook has delivered nothing: everything stays
    await events.stop()

    # the same sinks, the receiver still down, but now the file sink alone: what it delivered goes
    cfg = EventsConfig.from_dict({"outbox": {"stream": "gw:outbox"}, "sinks": [
        {"type": "jsonl", "name": "file", "path": str(out), "min_backoff": 0.02, "max_backoff": 0.2}]})
    events = SecurityEvents(cfg, "gw-r", redis_server.url)
    await events.start()
    await events.emit_logoff(make_session(sid="s-last"), "logout")

    async def delivered_and_trimmed():
        return len(out.read_text().splitlines()) >= 41 and await client.xlen("gw:outbox") <= 1
    await wait_for(delivered_and_trimmed, timeout=10)
    await events.stop()
    assert len(out.read_text().splitlines()) == 41  # each event once: trimming lost nothing, resent nothing
    await client.aclose()


@pytest.mark.slow
async def test_events_emitted_while_redis_is_down_wait_in_the_spool_and_arrive_in_order(tmp_path, redis_server):
    out, cfg, spool = tmp_path / "events.jsonl", jsonl_cfg(tmp_path / "events.jsonl"), tmp_path / "spool"
    events = await spooled_events(cfg, redis_server, spool)
    ids = [await events.emit_logoff(make_session(sid="s-1"), "before the outage")]
    redis_server.kill()
    # each emit returns once the event is durable on local disk (after the Redis outbox's own short retries)
    ids += [await events.emit_decision(make_decision("terminate"), make_session(sid="s-1"), None, None)
            for _ in range(3)]
    assert events.status()["outbox"]["spooled"] == 3
    # a second process (worker) takes its own spool slot
    other = SecurityEvents(cfg, "gw-r", redis_server.url, spool_dir=str(spool))
    assert other.outbox.spool.dir != events.outbox.spool.dir
    await other.outbox.close()
    redis_server.start()  # back, with its append-only file: the event before the outage is still there
    ids.append(await events.emit_logoff(make_session(sid="s-1"), "after the outage"))  # queued behind the spool

    def lines():
        return delivered_ids(out)

    async def all_delivered():
        return len(lines()) >= len(ids)
    await wait_for(all_delivered, timeout=30)
    st = events.status()
    await events.stop()
    assert lines() == ids  # every event once, in the order they were emitted
    assert st["outbox"]["spooled"] == 0


@pytest.mark.slow
async def test_a_restarted_gateway_forwards_what_its_spool_still_holds(tmp_path, redis_server):
    out, cfg, spool = tmp_path / "events.jsonl", jsonl_cfg(tmp_path / "events.jsonl"), tmp_path / "spool"
    events = await spooled_events(cfg, redis_server, spool)
    redis_server.kill()
    ids = [await events.emit_logoff(make_session(sid=f"s-{i}"), "during the outage") for i in range(2)]
    await events.stop()  # the gateway stops while Redis is still down
    redis_server.start()
    events = await spooled_events(cfg, redis_server, spool)  # the restarted gateway, on the same spool

    def lines():
        return delivered_ids(out)

    async def delivered():
        return len(lines()) >= 2
    await wait_for(delivered, timeout=30)
    await events.stop()
    assert lines() == ids


@pytest.mark.slow
async def test_a_gateway_restarted_with_fewer_workers_forwards_the_spool_slots_nobody_holds(tmp_path, redis_server):
    out, cfg, spool = tmp_path / "events.jsonl", jsonl_cfg(tmp_path / "events.jsonl"), tmp_path / "spool"
    first = await spooled_events(cfg, redis_server, spool)
    second = await spooled_events(cfg, redis_server, spool)  # a second worker: slot 1
    redis_server.kill()
    ids = [await first.emit_logoff(make_session(sid="s-1"), "worker 0 during the outage")]
    ids += [await second.emit_logoff(make_session(sid=f"s-{i}"), "worker 1 during the outage") for i in (2, 3)]
    await first.stop()
    await second.stop()
    redis_server.start()
    events = await spooled_events(cfg, redis_server, spool)  # restarted with one worker: slot 1 has no owner

    async def delivered():
        return len(delivered_ids(out)) >= len(ids)
    await wait_for(delivered, timeout=30)
    await events.stop()
    lines = delivered_ids(out)
    assert sorted(lines) == sorted(ids)  # every event once
    assert [i for i in lines if i in ids[1:]] == ids[1:]  # a slot's events keep their order


@pytest.mark.slow
async def test_a_running_gateway_adopts_the_spool_of_a_worker_that_died(tmp_path, redis_server, monkeypatch):
    from gateway.secevents import outbox

    monkeypatch.setattr(outbox, "ORPHAN_SWEEP_S", 0.2)
    out, cfg, spool = tmp_path / "events.jsonl", jsonl_cfg(tmp_path / "events.jsonl"), tmp_path / "spool"
    survivor = await spooled_events(cfg, redis_server, spool)
    worker = await spooled_events(cfg, redis_server, spool)
    redis_server.kill()
    ids = [await worker.emit_logoff(make_session(sid=f"s-{i}"), "during the outage") for i in range(3)]
    await worker.stop()  # gone for good: nothing restarts into its slot
    assert survivor.status()["outbox"]["spooled"] == 0
    redis_server.start()

    async def delivered():
        return len(delivered_ids(out)) >= len(ids)
    await wait_for(delivered, timeout=30)
    await survivor.stop()
    assert delivered_ids(out) == ids
    again = await spooled_events(cfg, redis_server, spool)  # the adopted slot's cursor moved: nothing is resent
    await asyncio.sleep(0.5)
    await again.stop()
    assert delivered_ids(out) == ids


@pytest.mark.slow
async def test_a_redis_that_refuses_writes_loses_no_event(tmp_path, redis_server):
    # a Redis at its maxmemory answers XADD with an error rather than not at all; such events were lost (only a
    # connection failure spooled them), and a forwarder meeting that error stopped until the next event
    out, cfg, spool = tmp_path / "events.jsonl", jsonl_cfg(tmp_path / "events.jsonl"), tmp_path / "spool"
    events = await spooled_events(cfg, redis_server, spool)
    admin = aioredis.from_url(redis_server.url)
    ids = [await events.emit_logoff(make_session(sid="s-1"), "before")]

    async def delivered(n):
        async def check():
            return len(delivered_ids(out)) >= n
        return check
    await wait_for(await delivered(1))
    await admin.config_set("maxmemory-policy", "noeviction")
    await admin.config_set("maxmemory", "1")
    ids += [await events.emit_logoff(make_session(sid="s-1"), "Redis full") for _ in range(2)]
    assert events.status()["outbox"]["spooled"] == 2  # on local disk, not lost

    async def forwarder_met_the_refusal():  # it keeps trying against the same error
        return events.outbox._forwarder is not None and not events.outbox._forwarder.done()
    await wait_for(forwarder_met_the_refusal)
    await asyncio.sleep(0.5)  # a few refused attempts
    assert events.outbox._forwarder is not None and events.outbox.spooled == 2
    await admin.config_set("maxmemory", "0")
    await wait_for(await delivered(3))
    await events.stop()
    await admin.aclose()
    assert delivered_ids(out) == ids
