"""OIDC relying party against the real test IdP over HTTP: the full flow and every way the IdP can misbehave."""

from __future__ import annotations

import base64
import hashlib
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from gateway.auth.oidc import LoginState, OidcConfig, OidcError, OidcIdentity, OidcProvider
from gateway.errors import ConfigError
from tests.support.idp import Fault, TestIdp

REDIRECT = "http://127.0.0.1:8443/.ztgate/oidc/callback"


@pytest.fixture(scope="module")
def idp() -> Iterator[TestIdp]:
    with TestIdp() as server:
        yield server


@pytest.fixture(autouse=True)
def fresh_idp(idp: TestIdp) -> None:
    idp.clear_faults()
    idp.set_user("u-123", email="alice@example.test", groups=["staff", "ops"], acr="pwd", amr=["pwd"],
                 name="Alice Example")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def config_for(idp: TestIdp, **overrides: Any) -> OidcConfig:
    entry = {"name": "test-idp", "issuer": idp.issuer, "client_id": idp.client_id,
             "client_secret": idp.client_secret}
    entry.update(overrides)
    return OidcConfig.from_dict(entry)


async def start(provider: OidcProvider, http: httpx.AsyncClient, **kwargs: Any) -> tuple[dict[str, str], LoginState]:
    """Send the browser's request to /authorize and return the callback parameters and the stored state."""
    url, login = await provider.authorization_request(REDIRECT, **kwargs)
    response = await http.get(url)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?")
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    return params, LoginState.from_json(login.to_json())  # as if it went through a cookie


async def login(provider: OidcProvider, http: httpx.AsyncClient, **kwargs: Any) -> OidcIdentity:
    params, state = await start(provider, http, **kwargs)
    return await provider.complete(params, state, REDIRECT)


async def refusal(provider: OidcProvider, http: httpx.AsyncClient, **kwargs: Any) -> OidcError:
    with pytest.raises(OidcError) as info:
        await login(provider, http, **kwargs)
    return info.value


# ---- the good path -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_full_flow(idp: TestIdp, http: httpx.AsyncClient, method: str) -> None:
    provider = OidcProvider(config_for(idp, client_auth_method=method), http)
    identity = await login(provider, http)
    assert identity.provider == "test-idp" and identity.issuer == idp.issuer
    assert (identity.sub, identity.email, identity.name) == ("u-123", "alice@example.test", "Alice Example")
    assert identity.groups == ("staff", "ops") and identity.email_verified is True
    assert (identity.acr, identity.amr) == ("pwd", ("pwd",))
    assert abs(identity.auth_time - time.time()) < 60

    request = idp.authorize_requests[-1]
    assert request["response_type"] == "code" and request["client_id"] == idp.client_id
    assert request["code_challenge_method"] == "S256" and len(request["code_challenge"]) == 43
    assert len(request["nonce"]) >= 32 and len(request["state"]) >= 32
    assert request["scope"] == "openid email profile" and request["redirect_uri"] == REDIRECT
    token_request = idp.token_requests[-1]
    assert token_request["client_auth"] == method
    verifier = token_request["code_verifier"]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert challenge == request["code_challenge"]


async def test_step_up_parameters_reach_the_idp_and_are_checked(idp: TestIdp, http: httpx.AsyncClient) -> None:
    idp.set_user("u-123", email="alice@example.test", auth_time=int(time.time()) - 3600)
    provider = OidcProvider(config_for(idp), http)
    identity = await login(provider, http, acr_values=["mfa", "phr"], max_age=0, prompt="login",
                           login_hint="alice")
    request = idp.authorize_requests[-1]
    assert (request["acr_values"], request["max_age"], request["prompt"], request["login_hint"]) == (
        "mfa phr", "0", "login", "alice")
    assert identity.acr == "mfa"
    assert time.time() - identity.auth_time < 60


async def test_groups_from_a_dotted_claim_path(idp: TestIdp, http: httpx.AsyncClient) -> None:
    idp.set_user("u-9", email="k@example.test", extra_claims={"realm_access": {"roles": ["admin", "dev"]}})
    provider = OidcProvider(config_for(idp, groups_claim="realm_access.roles"), http)
    assert (await login(provider, http)).groups == ("admin", "dev")


async def test_discovery_is_cached(idp: TestIdp, http: httpx.AsyncClient) -> None:
    provider = OidcProvider(config_for(idp), http)
    first = await provider.metadata()
    assert await provider.metadata() is first


async def test_discovery_failure_is_retried_on_the_next_login(idp: TestIdp, http: httpx.AsyncClient) -> None:
    provider = OidcProvider(config_for(idp), http)
    idp.set_faults(Fault.DISCOVERY_DOWN)
    with pytest.raises(OidcError) as info:
        await provider.authorization_request(REDIRECT)
    assert info.value.reason == "discovery_failed" and "503" in info.value.log_message
    idp.clear_faults()
    assert (await login(provider, http)).sub == "u-123"


async def test_rotated_idp_key_is_fetched_once(idp: TestIdp, http: httpx.AsyncClient) -> None:
    provider = OidcProvider(config_for(idp), http)
    await login(provider, http)  # caches the JWKS
    idp.rotate_key()
    assert (await login(provider, http)).sub == "u-123"


# ---- misbehaving IdP -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "reason"), [
    (Fault.WRONG_ISSUER, "wrong_issuer"),
    (Fault.WRONG_AUDIENCE, "wrong_audience"),
    (Fault.MULTI_AUDIENCE_NO_AZP, "wrong_azp"),
    (Fault.EXPIRED, "token_expired"),
    (Fault.FUTURE_IAT, "token_not_yet_valid"),
    (Fault.BAD_SIGNATURE, "bad_signature"),
    (Fault.MISSING_NONCE, "nonce_missing"),
    (Fault.WRONG_NONCE, "nonce_mismatch"),
    (Fault.ALG_NONE, "alg_not_allowed"),
    (Fault.HS256_WITH_PUBLIC_KEY, "alg_not_allowed"),
    (Fault.UNPUBLISHED_KEY, "unknown_key"),
    (Fault.BAD_AT_HASH, "at_hash_mismatch"),
    (Fault.WRONG_CALLBACK_ISSUER, "issuer_mismatch"),
    (Fault.TOKEN_ENDPOINT_ERROR, "token_exchange_failed"),
])
async def test_misbehaving_idp_is_refused(idp: TestIdp, http: httpx.AsyncClient, fault: Fault,
                                          reason: str) -> None:
    provider = OidcProvider(config_for(idp), http)
    idp.set_faults(fault)
    error = await refusal(provider, http)
    assert error.reason == reason, error.log_message
    assert error.log_message.startswith(f"oidc[test-idp]: {reason}")
    assert "token" not in error.user_message.lower() and error.user_message


async def test_ignored_max_age_is_refused(idp: TestIdp, http: httpx.AsyncClient) -> None:
    idp.set_user("u-123", auth_time=int(time.time()) - 3600)
    idp.set_faults(Fault.IGNORE_MAX_AGE)
    error = await refusal(OidcProvider(config_for(idp), http), http, max_age=300)
    assert error.reason == "auth_too_old"


async def test_ignored_acr_is_refused(idp: TestIdp, http: httpx.AsyncClient) -> None:
    idp.set_faults(Fault.IGNORE_ACR)
    error = await refusal(OidcProvider(config_for(idp), http), http, acr_values=["mfa"])
    assert error.reason == "acr_not_satisfied" and "stronger sign-in" in error.user_message


async def test_wrong_client_secret(idp: TestIdp, http: httpx.AsyncClient) -> None:
    provider = OidcProvider(config_for(idp, client_secret="not-the-secret"), http)
    error = await refusal(provider, http)
    assert error.reason == "token_exchange_failed" and error.idp_error == "invalid_client"


async def test_disallowed_algorithm_by_configuration(idp: TestIdp, http: httpx.AsyncClient) -> None:
    provider = OidcProvider(config_for(idp, allowed_algorithms=["ES256"]), http)
    assert (await refusal(provider, http)).reason == "alg_not_allowed"


# ---- callback handling ---------------------------------------------------------------------------------------------


async def test_callback_replay_is_refused(idp: TestIdp, http: httpx.AsyncClient) -> None:
    provider = OidcProvider(config_for(idp), http)
    params, state = await start(provider, http)
    await provider.complete(params, state, REDIRECT)
    with pytest.raises(OidcError) as info:
        await provider.complete(params, state, REDIRECT)
    assert info.value.reason == "token_exchange_failed" and info.value.idp_error == "invalid_grant"


async def test_callback_checks(idp: TestIdp, http: httpx.AsyncClient) -> None:
    provider = OidcProvider(config_for(idp), http)
    params, state = await start(provider, http)

    async def reason(p: dict[str, str], s: LoginState = state, redirect: str = REDIRECT) -> str:
        with pytest.raises(OidcError) as info:
            await provider.complete(p, s, redirect)
        return info.value.reason

    assert await reason({**params, "state": "forged"}) == "state_mismatch"
    assert await reason({k: v for k, v in params.items() if k != "state"}) == "state_mismatch"
    assert await reason({k: v for k, v in params.items() if k != "code"}) == "missing_code"
    assert await reason(params, redirect="http://127.0.0.1:9/other") == "redirect_mismatch"
    old = LoginState.from_json(state.to_json().replace(f'"created_at":{state.created_at}', '"created_at":1000'))
    assert await reason(params, old) == "login_expired"
    other = LoginState(**{**state.__dict__, "provider": "someone-else"})
    assert await reason(params, other) == "state_mismatch"
    error = {"error": "access_denied", "error_description": "user said no", "state": state.state}
    with pytest.raises(OidcError) as info:
        await provider.complete(error, state, REDIRECT)
    assert info.value.reason == "idp_error" and info.value.idp_error == "access_denied"
    assert "cancelled" in info.value.user_message
    assert (await provider.complete(params, state, REDIRECT)).sub == "u-123"  # untouched by the refusals


async def test_unreachable_idp(http: httpx.AsyncClient) -> None:
    provider = OidcProvider(OidcConfig.from_dict({"name": "gone", "issuer": "http://127.0.0.1:9",
                                                  "client_id": "c", "client_secret": "s"}), http, timeout=2)
    with pytest.raises(OidcError) as info:
        await provider.authorization_request(REDIRECT)
    assert info.value.reason == "discovery_failed"


def test_login_state_round_trip_and_garbage() -> None:
    state = LoginState("p", "s", "n", "v" * 43, REDIRECT, 1.5, ("mfa",), 0, "login", "/app")
    assert LoginState.from_json(state.to_json()) == state
    assert "v" * 43 not in repr(state)
    for junk in ["", "[]", "{}", '{"provider": 1}', "not json"]:
        with pytest.raises(OidcError, match="bad_login_state"):
            LoginState.from_json(junk)


# ---- configuration ---------------------------------------------------------------------------------------------------


def test_config_defaults() -> None:
    config = OidcConfig.from_dict({"name": "corp", "issuer": "https://sso.example.test", "client_id": "ztgate",
                                   "client_secret": "s3cr3t-value"})
    assert config.scopes == ("openid", "email", "profile")
    assert config.groups_claim == "groups" and config.redirect_path == "/.ztgate/oidc/callback"
    assert config.client_auth_method == "client_secret_basic" and "s3cr3t-value" not in repr(config)


@pytest.mark.parametrize(("change", "key", "message"), [
    ({"issuer": None}, "issuer", "required"),
    ({"issuer": "http://sso.example.test"}, "issuer", "https"),
    ({"issuer": "https://sso.example.test/?a=b"}, "issuer", "without query"),
    ({"client_secret": ""}, "client_secret", "non-empty"),
    ({"scopes": ["email"]}, "scopes", "openid"),
    ({"groups_claim": "a..b"}, "groups_claim", "dotted"),
    ({"redirect_path": "callback"}, "redirect_path", "absolute"),
    ({"client_auth_method": "private_key_jwt"}, "client_auth_method", "unsupported"),
    ({"allowed_algorithms": ["HS256"]}, "allowed_algorithms", "not allowed"),
    ({"allowed_algorithms": ["none"]}, "allowed_algorithms", "not allowed"),
    ({"leeway_seconds": 9999}, "leeway_seconds", "between"),
    ({"name": "has space"}, "name", "letters"),
    ({"clientid": "typo"}, "clientid", "unknown field"),
])
def test_config_errors_name_the_key(change: dict[str, Any], key: str, message: str) -> None:
    entry = {"name": "corp", "issuer": "https://sso.example.test", "client_id": "ztgate", "client_secret": "x"}
    entry.update(change)
    entry = {k: v for k, v in entry.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        OidcConfig.from_dict(entry, path=("identity", "oidc", 2))
    assert info.value.path == ("identity", "oidc", 2, key)
    assert message in info.value.message


def test_config_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        OidcConfig.from_dict(["x"], path=("identity", "oidc", 0))  # type: ignore[arg-type]
    assert info.value.path == ("identity", "oidc", 0)


def test_config_error_paths_are_relative_by_default() -> None:
    with pytest.raises(ConfigError) as info:
        OidcConfig.from_dict({"name": "corp", "issuer": "https://sso.example.test", "client_id": "ztgate"})
    assert info.value.path == ("client_secret",)
