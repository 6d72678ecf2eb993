"""Session cookie tokens and upstream assertions: round trips, caching, and the attacks both must refuse."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.auth.keys import KeyRing
from gateway.auth.tokens import JWKS_PATH, SESSION_AUDIENCE, AssertionSigner, SessionTokens, TokenError
from tests.support.idp import ThreadedServer

ISSUER = "https://gw.example.test"
APP = "https://app.example.test"
NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"


def session_claims(now: float = NOW, **overrides: Any) -> dict[str, Any]:
    claims = {"iss": ISSUER, "aud": SESSION_AUDIENCE, "sub": "alice", "sid": "s-1", "acr": "pwd", "amr": ["pwd"],
              "auth_time": int(now), "iat": int(now), "exp": int(now) + 300}
    claims.update(overrides)
    return claims


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.ephemeral(publish_ahead=0)


@pytest.fixture
def tokens(ring: KeyRing) -> SessionTokens:
    return SessionTokens(ring, ISSUER, ttl=300)


def reason(tokens: SessionTokens, token: str, now: float = NOW) -> str:
    with pytest.raises(TokenError) as info:
        tokens.verify(token, now=now)
    return info.value.reason


# ---- session tokens ----------------------------------------------------------------------------------------------


def test_session_round_trip(ring: KeyRing, tokens: SessionTokens) -> None:
    token = tokens.issue("s-1", "alice", "mfa", ["pwd", "otp"], int(NOW) - 10, now=NOW)
    header = jwt.get_unverified_header(token)
    assert header["kid"] == ring.current.kid and header["alg"] == "ES256"
    fresh = SessionTokens(ring, ISSUER)  # no cache: checks the signature
    claims = fresh.verify(token, now=NOW + 1)
    assert (claims.sid, claims.sub, claims.acr, claims.amr) == ("s-1", "alice", "mfa", ("pwd", "otp"))
    assert claims.auth_time == int(NOW) - 10 and claims.exp - claims.iat == 300 and claims.iss == ISSUER
    raw = jwt.decode(token, options={"verify_signature": False})
    assert raw["aud"] == SESSION_AUDIENCE


def test_repeated_verification_comes_from_the_cache(ring: KeyRing, tokens: SessionTokens) -> None:
    token = tokens.issue("s-1", "alice", "pwd", ["pwd"], int(NOW), now=NOW)
    verifier = SessionTokens(ring, ISSUER)
    first = verifier.verify(token, now=NOW)
    assert verifier.verify(token, now=NOW + 1) is first


def test_cache_is_bounded(ring: KeyRing) -> None:
    verifier = SessionTokens(ring, ISSUER, cache_size=3)
    issued = [verifier.issue(f"s-{i}", "a", "pwd", ["pwd"], int(NOW), now=NOW) for i in range(10)]
    assert len(verifier._cache) == 3
    assert verifier.verify(issued[0], now=NOW).sid == "s-0"  # evicted ones still verify (from scratch)


def test_expired_token_is_refused_also_when_cached(ring: KeyRing, tokens: SessionTokens) -> None:
    token = tokens.issue("s-1", "alice", "pwd", ["pwd"], int(NOW), now=NOW)
    assert reason(tokens, token, now=NOW + 306) == "expired"  # cached path
    assert reason(SessionTokens(ring, ISSUER), token, now=NOW + 306) == "expired"  # uncached path
    assert tokens.verify(token, now=NOW + 299).sid == "s-1"


def test_token_from_the_future_is_refused(ring: KeyRing) -> None:
    token = SessionTokens(ring, ISSUER).issue("s", "a", "pwd", ["pwd"], int(NOW), now=NOW + 100)
    assert reason(SessionTokens(ring, ISSUER), token, now=NOW) == "not_yet_valid"


def test_forged_with_another_key_under_our_kid(ring: KeyRing, tokens: SessionTokens) -> None:
    attacker = KeyRing.ephemeral()
    forged = jwt.encode(session_claims(), attacker.current.private_key, algorithm="ES256",
                        headers={"kid": ring.current.kid})
    assert reason(tokens, forged) == "bad_signature"


def test_signed_by_an_unknown_key(tokens: SessionTokens) -> None:
    other = SessionTokens(KeyRing.ephemeral(), ISSUER)
    assert reason(tokens, other.issue("s", "a", "pwd", ["pwd"], int(NOW), now=NOW)) == "unknown_key"


def test_alg_none(ring: KeyRing, tokens: SessionTokens) -> None:
    token = unsigned({"alg": "none", "typ": "JWT", "kid": ring.current.kid}, session_claims()) + "."
    assert reason(tokens, token) == "alg_not_allowed"


def test_hs256_signed_with_the_public_key(ring: KeyRing, tokens: SessionTokens) -> None:
    pem = ring.current.public_key.public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    body = unsigned({"alg": "HS256", "typ": "JWT", "kid": ring.current.kid}, session_claims())
    token = body + "." + b64(hmac.new(pem, body.encode(), hashlib.sha256).digest())
    assert reason(tokens, token) == "alg_not_allowed"


def test_alg_header_not_matching_the_key(tokens: SessionTokens, ring: KeyRing) -> None:
    other = KeyRing.ephemeral(algorithm="EdDSA")
    token = jwt.encode(session_claims(), other.current.private_key, algorithm="EdDSA",
                       headers={"kid": ring.current.kid})
    assert reason(tokens, token) == "alg_not_allowed"


def test_tampered_payload(ring: KeyRing, tokens: SessionTokens) -> None:
    token = tokens.issue("s-1", "alice", "pwd", ["pwd"], int(NOW), now=NOW)
    head, _, signature = token.split(".")
    evil = f"{head}.{b64(json.dumps(session_claims(sub='admin')).encode())}.{signature}"
    assert reason(SessionTokens(ring, ISSUER), evil) == "bad_signature"


@pytest.mark.parametrize(("claims", "expected"), [
    (session_claims(aud="someone-else"), "wrong_audience"),
    (session_claims(aud=APP), "wrong_audience"),
    (session_claims(iss="https://evil.example"), "wrong_issuer"),
    ({k: v for k, v in session_claims().items() if k != "sid"}, "missing_claim"),
    ({k: v for k, v in session_claims().items() if k != "exp"}, "missing_claim"),
    (session_claims(amr="pwd"), "invalid_claim"),
    (session_claims(auth_time="yesterday"), "invalid_claim"),
])
def test_signed_by_us_but_wrong_claims(ring: KeyRing, tokens: SessionTokens, claims: dict[str, Any],
                                       expected: str) -> None:
    token = jwt.encode(claims, ring.current.private_key, algorithm="ES256", headers={"kid": ring.current.kid})
    assert reason(tokens, token) == expected


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b", "x" * 9000, "eyJhbGciOiJFUzI1NiJ9.e30."])
def test_malformed(tokens: SessionTokens, token: str) -> None:
    assert reason(tokens, token) in {"malformed", "unknown_key"}


def test_needs_refresh_in_the_second_half_of_the_ttl(tokens: SessionTokens) -> None:
    claims = tokens.verify(tokens.issue("s", "a", "pwd", ["pwd"], int(NOW), now=NOW), now=NOW)
    assert not tokens.needs_refresh(claims, NOW + 149)
    assert tokens.needs_refresh(claims, NOW + 151)


def test_tokens_survive_rotation_until_the_old_key_is_pruned(ring: KeyRing, tokens: SessionTokens) -> None:
    token = tokens.issue("s", "a", "pwd", ["pwd"], int(NOW), now=NOW)
    tokens.verify(token, now=NOW)
    new_key = ring.rotate(now=NOW + 10)
    assert tokens.verify(token, now=NOW + 20).sid == "s"
    new_token = tokens.issue("s2", "a", "pwd", ["pwd"], int(NOW), now=NOW + 20)
    assert jwt.get_unverified_header(new_token)["kid"] == new_key.kid
    ring.prune(now=NOW + 10 + ring.max_token_lifetime + 1)
    assert reason(tokens, token, now=NOW + 100) == "unknown_key"  # cached entry dropped with its key


def test_verifier_picks_up_a_rotation_by_another_process(tmp_path) -> None:
    signer_ring = KeyRing.load_or_create(tmp_path)
    verifier_ring = KeyRing.load_or_create(tmp_path)
    signer_ring.rotate(publish_ahead=0)
    token = SessionTokens(signer_ring, ISSUER).issue("s", "a", "pwd", ["pwd"], int(time.time()))
    assert SessionTokens(verifier_ring, ISSUER).verify(token).sid == "s"


def test_ttl_longer_than_key_lifetime_is_refused(ring: KeyRing) -> None:
    with pytest.raises(ValueError, match="max_token_lifetime"):
        SessionTokens(ring, ISSUER, ttl=3600)


# ---- upstream assertions -----------------------------------------------------------------------------------------

ASSERTION_CLAIMS = {"sub": "alice", "email": "alice@example.test", "groups": ["staff"], "sid": "s-1", "acr": "mfa",
                    "amr": ["pwd", "otp"], "auth_time": int(NOW) - 60, "ztgate_state": "active"}


def upstream_verify(ring: KeyRing, token: str, audience: str = APP, now: float = NOW) -> dict[str, Any]:
    """What an upstream app does with the published JWKS (see gateway/auth/README.md)."""
    jwks = jwt.PyJWKSet.from_dict(ring.jwks())
    kid = jwt.get_unverified_header(token).get("kid")
    key = next(k for k in jwks.keys if k.key_id == kid)
    return jwt.decode(token, key.key, algorithms=["ES256", "EdDSA"], audience=audience, issuer=ISSUER,
                      options={"require": ["exp", "iat", "sub", "aud", "iss"], "verify_exp": False,
                               "verify_iat": False})


def test_assertion_claims_and_header(ring: KeyRing) -> None:
    signer = AssertionSigner(ring, ISSUER)
    token = signer.sign(APP, ASSERTION_CLAIMS, now=NOW)
    assert jwt.get_unverified_header(token)["kid"] == ring.current.kid
    claims = upstream_verify(ring, token)
    assert {k: claims[k] for k in ASSERTION_CLAIMS} == ASSERTION_CLAIMS
    assert (claims["iss"], claims["aud"], claims["exp"] - claims["iat"]) == (ISSUER, APP, 60)


def test_assertion_is_reused_until_20_seconds_before_expiry(ring: KeyRing) -> None:
    signer = AssertionSigner(ring, ISSUER)
    first = signer.sign(APP, ASSERTION_CLAIMS, now=NOW)
    assert signer.sign(APP, dict(ASSERTION_CLAIMS), now=NOW + 39) == first
    assert signer.sign(APP, ASSERTION_CLAIMS, now=NOW + 41) != first
    assert signer.sign("https://other.example.test", ASSERTION_CLAIMS, now=NOW + 1) != first
    assert signer.sign(APP, {**ASSERTION_CLAIMS, "ztgate_state": "restricted"}, now=NOW + 1) != first


def test_assertion_lifetime_is_capped(ring: KeyRing) -> None:
    with pytest.raises(ValueError):
        AssertionSigner(ring, ISSUER, lifetime=61)
    short = AssertionSigner(ring, ISSUER, lifetime=30, reuse_margin=10)
    claims = upstream_verify(ring, short.sign(APP, ASSERTION_CLAIMS, now=NOW))
    assert claims["exp"] - claims["iat"] == 30


def test_assertion_refuses_reserved_claims_and_the_session_audience(ring: KeyRing) -> None:
    signer = AssertionSigner(ring, ISSUER)
    with pytest.raises(ValueError, match="exp"):
        signer.sign(APP, {**ASSERTION_CLAIMS, "exp": 1})
    with pytest.raises(ValueError):
        signer.sign(SESSION_AUDIENCE, ASSERTION_CLAIMS)


def test_assertion_is_not_a_session_token(ring: KeyRing, tokens: SessionTokens) -> None:
    token = AssertionSigner(ring, ISSUER).sign(APP, ASSERTION_CLAIMS, now=NOW)
    assert reason(tokens, token) == "wrong_audience"


def test_session_token_is_not_an_assertion(ring: KeyRing, tokens: SessionTokens) -> None:
    with pytest.raises(jwt.InvalidAudienceError):
        upstream_verify(ring, tokens.issue("s", "a", "pwd", ["pwd"], int(NOW), now=NOW))


@pytest.mark.parametrize("attack", ["forged", "unknown_key", "alg_none", "tampered", "wrong_audience", "expired"])
def test_assertion_attacks_fail_upstream_verification(ring: KeyRing, attack: str) -> None:
    signer = AssertionSigner(ring, ISSUER)
    claims = {**ASSERTION_CLAIMS, "iss": ISSUER, "aud": APP, "iat": int(NOW), "exp": int(NOW) + 60}
    if attack == "forged":
        token = jwt.encode(claims, KeyRing.ephemeral().current.private_key, algorithm="ES256",
                           headers={"kid": ring.current.kid})
    elif attack == "unknown_key":
        token = AssertionSigner(KeyRing.ephemeral(), ISSUER).sign(APP, ASSERTION_CLAIMS, now=NOW)
    elif attack == "alg_none":
        token = unsigned({"alg": "none", "kid": ring.current.kid}, claims) + "."
    elif attack == "tampered":
        head, _, signature = signer.sign(APP, ASSERTION_CLAIMS, now=NOW).split(".")
        token = f"{head}.{b64(json.dumps({**claims, 'groups': ['admin']}).encode())}.{signature}"
    elif attack == "wrong_audience":
        token = signer.sign("https://other.example.test", ASSERTION_CLAIMS, now=NOW)
    else:
        token = signer.sign(APP, ASSERTION_CLAIMS, now=time.time() - 120)
    with pytest.raises((jwt.PyJWTError, StopIteration)):
        if attack == "expired":
            jwks = jwt.PyJWKSet.from_dict(ring.jwks())
            jwt.decode(token, jwks.keys[0].key, algorithms=["ES256"], audience=APP, issuer=ISSUER)
        else:
            upstream_verify(ring, token)


def test_readme_snippet_against_a_real_jwks_endpoint() -> None:
    """The gateway/auth/README.md code against the JWKS served over HTTP. After a rotation the new key is
    published `publish_ahead` seconds before it signs, so a verifier that fetched the JWKS in between never meets
    an unknown kid (PyJWKClient would refuse to refetch within its 30 s cooldown)."""
    offset = [0.0]
    ring = KeyRing.ephemeral(publish_ahead=60, clock=lambda: time.time() + offset[0])
    app = Starlette(routes=[Route(JWKS_PATH, lambda request: JSONResponse(ring.jwks()))])
    signer = AssertionSigner(ring, ISSUER, clock=lambda: time.time() + offset[0])

    def ztgate_identity(jwks: jwt.PyJWKClient, headers: dict[str, str]) -> dict[str, Any]:
        token = headers["X-Ztgate-Assertion"]
        return jwt.decode(token, jwks.get_signing_key_from_jwt(token).key, algorithms=["ES256", "EdDSA"],
                          audience=APP, issuer=ISSUER, leeway=offset[0] + 5,
                          options={"require": ["exp", "iat", "sub", "aud", "iss"]})

    with ThreadedServer(app) as server:
        jwks = jwt.PyJWKClient(server.url + JWKS_PATH)
        assert ztgate_identity(jwks, {"X-Ztgate-Assertion": signer.sign(APP, ASSERTION_CLAIMS)})["sub"] == "alice"
        new_key = ring.rotate()
        before_switch = signer.sign(APP, {**ASSERTION_CLAIMS, "sid": "s-2"})
        assert jwt.get_unverified_header(before_switch)["kid"] != new_key.kid
        jwks_after_publication = jwt.PyJWKClient(server.url + JWKS_PATH)
        jwks_after_publication.get_jwk_set()  # an app that fetched during the publish-ahead window
        offset[0] = 61.0
        after = signer.sign(APP, {**ASSERTION_CLAIMS, "sid": "s-3"})
        assert jwt.get_unverified_header(after)["kid"] == new_key.kid
        assert ztgate_identity(jwks_after_publication, {"X-Ztgate-Assertion": after})["sid"] == "s-3"


def test_eddsa_session_tokens_and_assertions() -> None:
    ring = KeyRing.ephemeral(algorithm="EdDSA")
    tokens = SessionTokens(ring, ISSUER)
    token = tokens.issue("s", "a", "pwd", ["pwd"], int(time.time()))
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert SessionTokens(ring, ISSUER).verify(token).sid == "s"
    assertion = AssertionSigner(ring, ISSUER).sign(APP, ASSERTION_CLAIMS)
    assert jwt.get_unverified_header(assertion)["alg"] == "EdDSA"
    assert upstream_verify(ring, assertion)["sub"] == "alice"


def test_the_step_up_generation_travels_in_the_token_and_old_tokens_have_none():
    import jwt as pyjwt

    from gateway import access
    from gateway.store import SessionRecord

    ring = KeyRing.ephemeral("ES256")
    tokens = SessionTokens(ring, "https://gw.test")
    record = SessionRecord(sid="s1", sub="ann", step_up={"count": 2})
    fresh = tokens.verify(tokens.issue("s1", "ann", "mfa", ["pwd", "otp"], 1, gen=2))
    stale = tokens.verify(tokens.issue("s1", "ann", "mfa", ["pwd", "otp"], 1, gen=1))
    assert (fresh.gen, stale.gen) == (2, 1)
    assert not access.superseded(fresh, record) and access.superseded(stale, record)
    # a token signed before the claim existed: not superseded (it expires with its session)
    key = ring.signing_key(time.time())
    now = int(time.time())
    legacy = pyjwt.encode({"iss": "https://gw.test", "aud": "ztgate-session", "sub": "ann", "sid": "s1", "acr": "mfa",
                           "amr": ["pwd"], "auth_time": 1, "iat": now, "exp": now + 60}, key.private_key,
                          algorithm=key.algorithm, headers={"kid": key.kid})
    claims = SessionTokens(ring, "https://gw.test").verify(legacy)
    assert claims.gen is None and not access.superseded(claims, record)
