"""Only the gateway gets in: missing, forged, expired, misdirected or oddly signed assertions are refused."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.demo import serve


async def status_and_error(demo, headers) -> tuple[int, str]:
    async with httpx.AsyncClient(base_url=demo.url) as client:
        response = await client.get("/api/whoami", headers=headers)
    return response.status_code, response.json().get("detail", "")


async def test_forged_signature_is_refused(demo, gw_keys):
    forger = ec.generate_private_key(ec.SECP256R1())
    token = gw_keys.mint(key=forger)  # right kid, wrong key
    assert await status_and_error(demo, {"X-Ztgate-Assertion": token}) == (
        401, "assertion signature does not verify against the gateway's keys")


async def test_tampered_claims_are_refused(demo, gw_keys):
    header, payload, signature = gw_keys.mint().split(".")
    forged_payload = jwt.utils.base64url_encode(b'{"sub":"admin","aud":"demo","iat":1,"exp":9999999999}').decode()
    status, _ = await status_and_error(demo, {"X-Ztgate-Assertion": f"{header}.{forged_payload}.{signature}"})
    assert status == 401


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": int(time.time()) - 120}, "assertion expired"),
        ({"aud": "another-app"}, "not for this app"),
        ({"iss": "https://evil.test"}, "issuer is not"),
        ({"sub": None}, 'missing the "sub" claim'),
    ],
)
async def test_claims_are_checked(demo, auth, overrides, message):
    status, error = await status_and_error(demo, auth(**overrides))
    assert status == 401 and message in error


async def test_other_algorithms_are_refused(demo):
    hs256 = jwt.encode({"sub": "x", "aud": "demo", "iat": 1, "exp": 9999999999}, "secret-secret-secret-secret-secret-48-bytes-long",
                       algorithm="HS256")
    unsigned = jwt.encode({"sub": "x", "aud": "demo"}, None, algorithm="none")
    for token in (hs256, unsigned):
        status, error = await status_and_error(demo, {"X-Ztgate-Assertion": token})
        assert status == 401 and "only ES256" in error


async def test_garbage_and_oversized_headers_are_refused(demo):
    assert (await status_and_error(demo, {"X-Ztgate-Assertion": "not-a-jwt"}))[0] == 401
    status, error = await status_and_error(demo, {"X-Ztgate-Assertion": "a" * 9000})
    assert status == 401 and "longer than" in error


async def test_jwks_is_fetched_once_and_cached(demo, auth, gw_keys):
    for _ in range(5):
        assert (await status_and_error(demo, auth()))[0] == 200
    assert gw_keys.fetches == 1


async def test_unknown_kid_refetches_after_the_cooldown_only(demo, auth, gw_keys, monkeypatch):
    assert (await status_and_error(demo, auth()))[0] == 200
    gw_keys.rotate("test-2")
    # Within the cooldown a new kid is refused without hammering the gateway...
    assert (await status_and_error(demo, auth()))[0] == 401
    assert gw_keys.fetches == 1
    # ...and once it has passed, the rotated key is fetched and accepted.
    monkeypatch.setattr("gateway.demo.assertion.JWKS_MIN_REFETCH_SECONDS", 0.0)
    assert (await status_and_error(demo, auth()))[0] == 200
    assert gw_keys.fetches == 2


async def test_unreachable_gateway_is_503_not_401():
    server = await serve("127.0.0.1", 0, jwks_url="http://127.0.0.1:9/jwks.json")  # port 9: nothing listens
    try:
        token = jwt.encode({"sub": "x"}, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                           headers={"kid": "k"})
        status, error = await status_and_error(server, {"X-Ztgate-Assertion": token})
    finally:
        await server.stop()
    assert status == 503 and "cannot fetch the gateway's JWKS" in error


async def test_no_jwks_configured_refuses_everything():
    server = await serve("127.0.0.1", 0, jwks_url=None)
    try:
        token = jwt.encode({"sub": "x"}, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
        status, error = await status_and_error(server, {"X-Ztgate-Assertion": token})
    finally:
        await server.stop()
    assert status == 503 and "trusts no gateway" in error


async def test_static_jwks_document_works_without_http(gw_keys):
    server = await serve("127.0.0.1", 0, jwks_url=None, jwks=gw_keys.jwks())
    try:
        status, _ = await status_and_error(server, {"X-Ztgate-Assertion": gw_keys.mint()})
    finally:
        await server.stop()
    assert status == 200


async def test_busy_port_is_a_clear_oserror(demo):
    with pytest.raises(OSError, match="demo upstream cannot listen on 127.0.0.1"):
        await serve("127.0.0.1", demo.port, jwks_url=None)
