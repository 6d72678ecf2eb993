"""One-time, bound, expiring form tokens."""

from __future__ import annotations

import pytest

from gateway.auth.csrf import CsrfError, CsrfTokens
from gateway.auth.guard import MemoryReplayGuard
from gateway.auth.keys import KeyRing

NOW = 1_800_000_000.0


@pytest.fixture
def csrf() -> CsrfTokens:
    return CsrfTokens(KeyRing.ephemeral().shared_secret("csrf"), MemoryReplayGuard(), ttl=600)


async def refused(csrf: CsrfTokens, token: str, purpose: str = "login", binding: str = "pre-1",
                  now: float = NOW + 1) -> str:
    with pytest.raises(CsrfError) as info:
        await csrf.verify(token, purpose, binding, now=now)
    return info.value.reason


async def test_good_token_once(csrf: CsrfTokens) -> None:
    token = csrf.issue("login", "pre-1", now=NOW)
    await csrf.verify(token, "login", "pre-1", now=NOW + 1)
    assert await refused(csrf, token) == "replayed"


async def test_reusable_when_not_one_time(csrf: CsrfTokens) -> None:
    token = csrf.issue("logout", "pre-1", now=NOW)
    for _ in range(2):
        await csrf.verify(token, "logout", "pre-1", now=NOW + 1, one_time=False)


async def test_refusals(csrf: CsrfTokens) -> None:
    token = csrf.issue("login", "pre-1", now=NOW)
    assert await refused(csrf, token, binding="pre-2") == "wrong_binding"
    assert await refused(csrf, token, binding="") == "wrong_binding"
    assert await refused(csrf, token, purpose="mfa") == "wrong_purpose"
    assert await refused(csrf, token, now=NOW + 601) == "expired"
    assert await refused(csrf, token, now=NOW - 60) == "not_yet_valid"
    assert await refused(csrf, "") == "malformed"
    assert await refused(csrf, "login.1.2.3.4") == "malformed"
    purpose, issued, nonce, tag, mac = token.split(".")
    assert await refused(csrf, ".".join([purpose, str(int(issued) + 3600), nonce, tag, mac])) == "bad_signature"
    assert await refused(csrf, ".".join(["mfa", issued, nonce, tag, mac]), purpose="mfa") == "bad_signature"
    other = CsrfTokens(KeyRing.ephemeral().shared_secret("csrf"), MemoryReplayGuard())
    assert await refused(csrf, other.issue("login", "pre-1", now=NOW)) == "bad_signature"
    await csrf.verify(token, "login", "pre-1", now=NOW + 1)  # the refusals did not use it up


async def test_tokens_work_across_processes_sharing_the_key_directory(tmp_path) -> None:
    guard = MemoryReplayGuard()  # stands in for the shared store
    a = CsrfTokens(KeyRing.load_or_create(tmp_path).shared_secret("csrf"), guard)
    b = CsrfTokens(KeyRing.load_or_create(tmp_path).shared_secret("csrf"), guard)
    token = a.issue("login", "pre-1", now=NOW)
    await b.verify(token, "login", "pre-1", now=NOW + 1)
    with pytest.raises(CsrfError, match="replayed"):
        await a.verify(token, "login", "pre-1", now=NOW + 2)


def test_issue_requires_a_binding_and_a_sane_purpose(csrf: CsrfTokens) -> None:
    with pytest.raises(ValueError):
        csrf.issue("login", "")
    with pytest.raises(ValueError):
        csrf.issue("Login Form", "pre-1")
    with pytest.raises(ValueError):
        CsrfTokens(b"short", MemoryReplayGuard())
