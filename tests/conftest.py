"""Shared fixtures: a Redis to talk to (the machine's, or one pytest-redis starts), isolated by key prefix."""

from __future__ import annotations

import socket
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DATASETS = ROOT.parent / "shared" / "datasets"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_server_url(request) -> str:
    """redis://host:port of a running Redis: 127.0.0.1:6379 when reachable, else one started for the session."""
    if _reachable("127.0.0.1", 6379):
        return "redis://127.0.0.1:6379/0"
    proc = request.getfixturevalue("redis_proc")  # pytest-redis starts redis-server on a free port
    return f"redis://{proc.host}:{proc.port}/0"


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix no other test uses, so tests can share one Redis."""
    return f"ztgate-test-{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    return redis_server_url
