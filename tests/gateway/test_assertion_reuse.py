"""The identity assertion the upstream gets is reused for a bounded part of its lifetime and rebuilt when the
session changes (Gateway.assertion_for over AssertionSigner's cache). A fake clock; no timing."""

from __future__ import annotations

import asyncio

import jwt

from gateway.auth.tokens import AssertionSigner
from gateway.runtime import ISSUER
from gateway.sessions import Identity
from gateway.store import SessionState
from tests.support.inprocess import memory_gateway


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_assertion_is_reused_then_resigned_after_a_session_change_and_near_its_expiry(tmp_path):
    async def scenario():
        gw = memory_gateway(tmp_path)
        clock = Clock()
        gw.signer = AssertionSigner(gw.keyring, ISSUER, clock=clock)  # lifetime 60 s, reused while > 20 s left
        route = gw.config.routes[0]
        record = await gw.sessions.create(Identity(sub="ann"), client_ip="127.0.0.1", user_agent="ua", route="app")

        first = gw.assertion_for(record, route)
        clock.now += 30
        assert gw.assertion_for(record, route) == first  # 30 s left: reused
        clock.now += 10.5
        renewed = gw.assertion_for(record, route)  # less than 20 s left: signed again
        assert renewed != first and _claims(renewed)["exp"] - clock.now > 20

        changed = await gw.sessions.set_state(record.sid, SessionState.RESTRICTED, "test")
        restricted = gw.assertion_for(changed, route)
        assert _claims(restricted)["ztgate_state"] == "restricted" and restricted != renewed

        # a save that leaves the claims as they were: the signer's own cache may hand back an older assertion,
        # which must not then be kept past its reuse window
        clock.now += 39
        same_claims = await gw.sessions.update(record.sid, state_reason="still restricted")
        kept = gw.assertion_for(same_claims, route)
        assert kept == restricted
        clock.now += 2
        assert _claims(gw.assertion_for(same_claims, route))["exp"] - clock.now > 20

    asyncio.run(scenario())
