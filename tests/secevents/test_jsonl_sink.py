"""JSONL sink: rotation, and a full disk (a real 64 KiB tmpfs) that is reported, retried and heals."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid

import pytest

from gateway.secevents import EventsConfig, SecurityEvents

from .conftest import make_decision, make_session


async def wait_for(pred, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


async def test_rotation_keeps_the_configured_backups(tmp_path):
    path = tmp_path / "logs" / "events.jsonl"
    cfg = EventsConfig.from_dict({"outbox": {"path": str(tmp_path / "outbox")},
                                  "sinks": [{"type": "jsonl", "path": str(path), "max_bytes": 8192, "backups": 2}]})
    events = SecurityEvents(cfg, "gw", None)
    await events.start()
    ids = [await events.emit_decision(make_decision(), make_session(sid=f"s-{i}"), None, None) for i in range(12)]
    await wait_for(lambda: events.status()["sinks"][0]["backlog"] == 0)
    await events.stop()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    for p in path.parent.iterdir():
        assert p.stat().st_size <= 8192
        for line in p.read_text().splitlines():
            json.loads(line)
    kept = [json.loads(l)["metadata"]["uid"] for p in (path.with_name("events.jsonl.2"), path.with_name("events.jsonl.1"),
                                                        path) for l in p.read_text().splitlines()]
    assert kept == ids[-len(kept):]  # the newest events, in order; older ones rotated out as configured


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()}); no mock substitute for a full disk")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.slow
async def test_full_disk_is_reported_retried_and_loses_nothing(tmp_path, small_disk):
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # fill the disk, leaving less than one event's worth of space
        try:
            f.write(os.urandom(64 * 1024))
        except OSError:
            pass
    target = small_disk / "events.jsonl"
    cfg = EventsConfig.from_dict({"outbox": {"path": str(tmp_path / "outbox")},
                                  "sinks": [{"type": "jsonl", "path": str(target), "min_backoff": 0.02,
                                             "max_backoff": 0.2}]})
    events = SecurityEvents(cfg, "gw", None)
    await events.start()
    ids = [await events.emit_decision(make_decision(), make_session(sid=f"s-{i}"), None, None) for i in range(8)]
    await wait_for(lambda: (events.status()["sinks"][0]["last_error"] or "").endswith("No space left on device"))
    st = events.status()["sinks"][0]
    assert st["backlog"] == 8 and st["state"] == "retrying"
    filler.unlink()  # an operator frees space
    await wait_for(lambda: events.status()["sinks"][0]["backlog"] == 0)
    await events.stop()
    lines = target.read_text().splitlines()
    assert [json.loads(l)["metadata"]["uid"] for l in lines] == ids  # no partial line, no gap, no duplicate
