"""Hot reload: every failed load is a refusal, reloads never overlap, and the error clears once the files are good."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import policies
from gateway import policy_watch
from gateway.policy_watch import PolicyHolder


def policy(pid: str, action: str = "terminate") -> str:
    return f"policies:\n  - id: {pid}\n    rules:\n      - id: r\n        when: risk >= 0.5\n        action: {action}\n"


def write(path: Path, text: str) -> None:
    """Write and move the mtime on, so the fingerprint changes even within one timestamp tick."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def holder(directory: Path) -> tuple[PolicyHolder, list]:
    events: list = []

    async def on_rejected(where: str, errors: list[str]) -> None:
        events.append((where, errors))

    h = PolicyHolder(str(directory), on_rejected=on_rejected)
    h.load_initial()
    return h, events


async def test_a_file_the_loader_chokes_on_is_refused_and_reported(tmp_path, monkeypatch):
    write(tmp_path / "a.yaml", policy("good"))
    h, events = holder(tmp_path)
    good = h.current
    write(tmp_path / "a.yaml", policy("bad"))

    def explode(path):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(policies, "load_directory", explode)
    assert await h.check_now() is False
    assert h.current is good
    assert h.rejections == 1 and len(events) == 1
    assert "RecursionError" in h.last_error[0] and events[0][1] == h.last_error
    # refused once, not every tick
    assert await h.check_now() is False and h.rejections == 1


async def test_an_exotic_yaml_file_is_refused_through_the_normal_path(tmp_path):
    write(tmp_path / "a.yaml", policy("good"))
    h, events = holder(tmp_path)
    write(tmp_path / "a.yaml", policy("bad").replace("action: terminate", "<<: {action: terminate}"))
    assert await h.check_now() is False
    assert h.rejections == 1 and len(events) == 1 and "merge keys" in h.last_error[0]
    assert [p.id for p in h.current.policies] == ["good"]


async def test_last_error_clears_when_the_previous_content_is_restored(tmp_path):
    write(tmp_path / "a.yaml", policy("good"))
    h, _ = holder(tmp_path)
    write(tmp_path / "a.yaml", policy("good").replace("risk >= 0.5", "risk >= "))
    await h.check_now()
    assert h.rejections == 1 and h.last_error
    write(tmp_path / "a.yaml", policy("good"))  # same digest as the set in force
    assert await h.check_now() is False
    assert h.last_error == []


async def test_a_slow_older_load_never_overwrites_a_newer_directory(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write(a / "p.yaml", policy("old-dir"))
    write(b / "p.yaml", policy("new-dir"))
    h, _ = holder(a)
    write(a / "p.yaml", policy("old-dir-v2"))

    real = policies.load_directory
    started = threading.Event()

    def slow_for_a(path):
        if Path(path) == a:
            started.set()
            threading.Event().wait(0.3)  # a big directory or a slow disk
        return real(path)

    monkeypatch.setattr(policies, "load_directory", slow_for_a)
    watcher = asyncio.create_task(h.check_now())  # the watch tick noticed the edit in a
    while not started.is_set():
        await asyncio.sleep(0.01)
    h.directory = b  # SIGHUP: the config now points at b
    await h.check_now()
    await watcher
    assert [p.id for p in h.current.policies] == ["new-dir"]
    assert [await h.check_now() for _ in range(2)] == [False, False]
    assert [p.id for p in h.current.policies] == ["new-dir"]


async def test_a_result_for_files_edited_during_the_load_is_discarded_and_reloaded(tmp_path, monkeypatch):
    write(tmp_path / "a.yaml", policy("v1"))
    h, _ = holder(tmp_path)
    write(tmp_path / "a.yaml", policy("v2"))
    real = policies.load_directory

    def edited_meanwhile(path):
        result = real(path)
        write(tmp_path / "a.yaml", policy("v3"))
        return result

    monkeypatch.setattr(policies, "load_directory", edited_meanwhile)
    assert await h.check_now() is False  # v2 is already stale
    monkeypatch.setattr(policies, "load_directory", real)
    assert await h.check_now() is True
    assert [p.id for p in h.current.policies] == ["v3"]


def test_module_uses_the_package_loader():
    # The tests above patch policies.load_directory; the holder must look it up at call time.
    assert policy_watch.policies is policies
