"""Fixtures of the shapes the gateway passes in: a session record, a policy decision, an assessment."""

from __future__ import annotations

import socket
import time

import pytest
import redis.asyncio as aioredis

from scoring.signals import Assessment, Evidence, Signal


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_session(sid: str = "s-1", **over) -> dict:
    now = time.time()
    s = {"sid": sid, "sub": "u-42", "email": "ana.lima@corp.example", "name": "Ana Lima",
         "groups": ["finance", "vpn-users"], "site": "lisbon", "country": "PT", "idp": "https://idp.corp.example",
         "acr": "urn:ztgate:mfa", "amr": ["pwd", "otp"], "auth_time": now - 900, "created": now - 600,
         "last_seen": now - 1, "client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
         "route": "erp", "state": "active"}
    s.update(over)
    return s


def make_assessment() -> dict:
    ev = Evidence(keystrokes=412, seconds=95.5, samples=37)
    signals = {
        "relay": Signal("relay", 0.93, True, ev, "input arrives ~180 ms after the screen changes it reacts to",
                        {"added_latency_ms": 181.0, "added_latency_ci_low_ms": 150.0, "added_latency_ci_high_ms": 210.0}),
        "cadence": Signal("cadence", 0.71, True, ev, "typing rhythm unlike the enrolled profile"),
        "automation": Signal("automation", 0.02, True, ev, "human-like timing variance"),
        "network": Signal("network", 0.0, False, Evidence(), "too few RTT samples yet"),
    }
    return Assessment(risk=0.91, signals=signals, contributions={"relay": 0.6, "cadence": 0.31}, evidence=ev,
                      sufficient=True).to_dict()


def make_decision(action: str = "terminate", shadow: bool = False) -> dict:
    return {"action": action, "params": {"notify": True} if action == "terminate" else {},
            "policy_file": "defaults/laptop-farm.yaml", "policy_id": "laptop-farm", "rule_id": "relay-abroad",
            "reason": "remote operator suspected: relay latency 181 ms", "shadow": shadow,
            "signals": {"relay": 0.93, "cadence": 0.71}}


@pytest.fixture
def session() -> dict:
    return make_session()


@pytest.fixture
def assessment() -> dict:
    return make_assessment()


@pytest.fixture
async def cleanup(redis_url, redis_prefix):
    """Deletes the test's Redis keys afterwards."""
    yield
    client = aioredis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(redis_prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()
