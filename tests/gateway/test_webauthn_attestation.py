"""The attestation policy through a real gateway process over HTTP, with Redis: registration asks for direct
attestation, refuses a key that cannot prove an approved maker, accepts one that can, and a step-up counts only
keys that meet the policy in force.

The keys are tests.support.softkey authenticators (real CBOR and ECDSA): no physical security key can run here, and
Chromium's virtual authenticator attests with a test certificate whose CA we do not hold."""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import sys
import uuid

import httpx
import pytest
import redis

from tests.support.processes import (free_port, gateway_config, login, make_users, run_gateway, run_upstream,
                                     session_sid, wait_until)
from gateway.auth.attestation import fingerprint
from tests.support.mdsblob import MdsSigner, entry
from tests.support.softkey import SoftKey, root_ca

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vendor():
    return root_ca("Good Keys AB")


@pytest.fixture(scope="module")
def certified():
    """A maker whose model the (test) FIDO Metadata Service lists as certified, and that BLOB's signer."""
    return {"maker": root_ca("Certified Keys Oy"), "model": uuid.uuid4(), "signer": MdsSigner()}


def _mds_import(certified, tmp, *, no: int, listed: bool) -> None:
    blob, root = tmp / "mds.jwt", tmp / "mds-root.pem"
    entries = [entry(certified["model"], [certified["maker"]])] if listed else []
    entries.append(entry(uuid.uuid4(), [root_ca("Another Maker")]))
    blob.write_bytes(certified["signer"].blob(entries, no=no))
    root.write_bytes(certified["signer"].root.pem)
    done = subprocess.run([sys.executable, "-m", "gateway.cli.main", "webauthn", "mds-import", str(blob), "--root",
                           str(root), "--out", str(tmp / "mds.json")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def env(tmp_path_factory, redis_server_url, vendor, certified):
    tmp = tmp_path_factory.mktemp("attestation")
    (tmp / "vendor.pem").write_bytes(vendor.pem)
    _mds_import(certified, tmp, no=1, listed=True)
    prefix = f"ztgate-test-{secrets.token_hex(5)}:"
    users = make_users(tmp / "users.yaml", [{"username": "carol"}, {"username": "dave"}, {"username": "erin"},
                                                      {"username": "frank"}])
    port = free_port()
    with run_upstream(tmp, jwks_port=port) as upstream:
        cfg = gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                             store=redis_server_url, prefix=prefix, admin_token=secrets.token_urlsafe(24),
                             webauthn={"attestation_allowed_cas": [str(tmp / "vendor.pem")],
                                       "attestation_mds": str(tmp / "mds.json")})
        with run_gateway(tmp, cfg) as gw:
            yield gw, users, redis.Redis.from_url(redis_server_url), prefix, tmp / "events-gw.jsonl", tmp
    client = redis.Redis.from_url(redis_server_url)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)


def _csrf(page: httpx.Response) -> str:
    return re.search(r"data-csrf='([^']+)'", page.text).group(1)


def _register(c: httpx.Client, key: SoftKey, csrf: str) -> tuple[httpx.Response, dict]:
    options = c.post("/.ztgate/mfa/webauthn/register/options", json={"csrf": csrf}).json()
    credential = key.register(options, origin=str(c.base_url).rstrip("/"))
    return c.post("/.ztgate/mfa/webauthn/register/verify", json={"state": options["state"], "credential": credential}), options


def test_only_a_key_from_an_approved_maker_can_be_registered(env, vendor):
    gw, users, store, prefix, events_file, _ = env
    with httpx.Client(base_url=gw.url) as c:
        login(c, users["carol"])
        page = c.get("/.ztgate/mfa/webauthn/register")
        assert page.status_code == 200 and "approves" in page.text
        csrf = _csrf(page)
        for software in (SoftKey("none"), SoftKey("self"), SoftKey(root_ca("Someone Else"))):
            refused, options = _register(c, software, csrf)
            assert options["publicKey"]["attestation"] == "direct"
            assert refused.status_code == 403 and refused.json()["error"] == "attestation_refused", refused.text
            csrf = options["csrf"]
        assert store.get(f"{prefix}credentials:carol") is None  # nothing of a refused key is kept

        ok, _ = _register(c, SoftKey(vendor), csrf)
        assert ok.status_code == 200 and ok.json()["ok"], ok.text
        stored = json.loads(store.get(f"{prefix}credentials:carol"))
        assert len(stored) == 1 and stored[0]["attestation"]["fmt"] == "packed"
        assert len(stored[0]["attestation"]["x5c"]) == 1  # the chain is kept to judge the key again later
        assert stored[0]["attestation"]["root"] == fingerprint(vendor.pem)
        # at the limit of ten keys, keys the policy no longer accepts make room before an accepted one does
        first = stored[0]["id"]
        stale = [{"id": f"legacy-{i}", "public_key": "AA", "sign_count": 0} for i in range(9)]
        store.set(f"{prefix}credentials:carol", json.dumps(stored + stale))
        ok, _ = _register(c, SoftKey(vendor), ok.json().get("csrf") or _csrf(c.get("/.ztgate/mfa/webauthn/register")))
        assert ok.status_code == 200, ok.text
        ids = [k["id"] for k in json.loads(store.get(f"{prefix}credentials:carol"))]
        assert len(ids) == 10 and first in ids and "legacy-0" not in ids
    log = gw.proc.log()
    assert "registration refused for carol" in log and "attested by CA" in log

    # the security team hears of both (OCSF Account Change: MFA Factor Enable), refusals at Medium severity
    def key_events():
        if not events_file.exists():
            return []
        events = [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]
        mine = [e for e in events if e.get("class_uid") == 3001 and e["user"].get("uid") == "carol"]
        return mine if len(mine) >= 5 else []

    events = wait_until(key_events, what="carol's key events in the JSONL sink")
    assert [e["status"] for e in events] == ["Failure"] * 3 + ["Success"] * 2
    assert {e["unmapped"]["ztgate"]["factor"]["format"] for e in events[:3]} == {"none", "packed"}
    assert events[3]["unmapped"]["ztgate"]["factor"]["attested_by"] == fingerprint(vendor.pem)
    assert all(e["severity"] == "Medium" for e in events[:3])


def test_a_copied_cookie_cannot_plant_a_key(env, vendor):
    """A key outlives the session and answers later step-ups: a thief holding a fresh session's cookies (all of
    them, and the User-Agent) must not register one from another address. It could before this was fixed."""
    gw, users, store, prefix, _, _ = env
    agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
    with httpx.Client(base_url=gw.url, headers={"User-Agent": agent}) as c:
        login(c, users["frank"])
        page = c.get("/.ztgate/mfa/webauthn/register")
        assert page.status_code == 200
        csrf, cookies = _csrf(page), dict(c.cookies)
    with httpx.Client(base_url=gw.url, cookies=cookies, headers={"User-Agent": agent},
                      transport=httpx.HTTPTransport(local_address="127.0.0.2")) as thief:
        refused = thief.post("/.ztgate/mfa/webauthn/register/options", json={"csrf": csrf})
        assert refused.status_code == 403 and refused.json()["error"] == "client_changed", refused.text
    assert store.get(f"{prefix}credentials:frank") is None


def test_a_step_up_counts_only_keys_that_meet_the_policy_in_force(env, vendor):
    gw, users, store, prefix, _, _ = env
    approved, legacy = SoftKey(vendor), SoftKey("none")
    with httpx.Client(base_url=gw.url) as c:
        login(c, users["dave"])
        ok, _ = _register(c, approved, _csrf(c.get("/.ztgate/mfa/webauthn/register")))
        assert ok.status_code == 200, ok.text
        # a key registered before the policy existed: no attestation kept with it
        origin = str(c.base_url).rstrip("/")
        from webauthn import verify_registration_response
        from tests.support.softkey import b64u

        challenge = secrets.token_bytes(32)
        options = {"publicKey": {"challenge": b64u(challenge), "rp": {"id": "127.0.0.1"}}}
        old = verify_registration_response(credential=legacy.register(options, origin), expected_challenge=challenge,
                                           expected_rp_id="127.0.0.1", expected_origin=origin)
        creds = json.loads(store.get(f"{prefix}credentials:dave"))
        creds.append({"id": b64u(old.credential_id), "public_key": b64u(old.credential_public_key),
                      "sign_count": 0, "transports": ["usb"], "created": 0, "last_used": None})
        store.set(f"{prefix}credentials:dave", json.dumps(creds))

        sid = session_sid(c)
        assert gw.admin("POST", f"/sessions/{sid}/step-up", json={"method": "webauthn"}).status_code == 200
        page = c.get("/.ztgate/mfa/webauthn?next=/form")
        assert page.status_code == 200
        options = c.post("/.ztgate/mfa/webauthn/options", json={"csrf": _csrf(page)}).json()
        allowed = [d["id"] for d in options["publicKey"]["allowCredentials"]]
        assert allowed == [b64u(approved.credential_id)]  # the legacy key is not offered

        # the legacy key answering anyway is refused and counts as a failed step-up
        refused = c.post("/.ztgate/mfa/webauthn/verify",
                         json={"state": options["state"], "credential": legacy.assert_(options, origin), "next": "/form"})
        assert refused.status_code == 401 and refused.json()["error"] == "key_not_accepted", refused.text
        assert gw.admin("GET", f"/sessions/{sid}").json()["step_up"]["failures"] == 1

        options = c.post("/.ztgate/mfa/webauthn/options", json={"csrf": options["csrf"]}).json()
        passed = c.post("/.ztgate/mfa/webauthn/verify",
                        json={"state": options["state"], "credential": approved.assert_(options, origin), "next": "/form"})
        assert passed.status_code == 200 and passed.json()["ok"], passed.text
        assert gw.admin("GET", f"/sessions/{sid}").json()["state"] == "active"

        # with only the legacy key left, a security-key step-up falls back to TOTP and says why
        store.set(f"{prefix}credentials:dave", json.dumps(creds[1:]))
        assert gw.admin("POST", f"/sessions/{sid}/step-up", json={"method": "webauthn"}).status_code == 200
        c.get("/.ztgate/mfa?next=/form", headers={"Accept": "text/html"})
        view = gw.admin("GET", f"/sessions/{sid}").json()
        assert view["step_up"]["fallback"] == "totp"
        assert view["step_up"]["fallback_reason"] == "no registered security key meets the attestation policy"


def test_a_model_the_metadata_service_certifies_counts_with_its_own_roots_until_a_new_import_drops_it(env, certified):
    gw, users, store, prefix, _, tmp = env
    maker, model = certified["maker"], certified["model"]
    with httpx.Client(base_url=gw.url) as c:
        login(c, users["erin"])
        csrf = _csrf(c.get("/.ztgate/mfa/webauthn/register"))
        # the certified maker's root vouches for its listed model only
        refused, options = _register(c, SoftKey(maker, aaguid=uuid.uuid4()), csrf)
        assert refused.status_code == 403 and refused.json()["error"] == "attestation_refused", refused.text
        ok, options = _register(c, SoftKey(maker, aaguid=model), options["csrf"])
        assert ok.status_code == 200 and ok.json()["ok"], ok.text
        assert json.loads(store.get(f"{prefix}credentials:erin"))[0]["attestation"]["root"] == fingerprint(maker.pem)

        # the next BLOB no longer lists the model (revoked, say): imported and reloaded, such keys stop counting
        _mds_import(certified, tmp, no=2, listed=False)
        gw.proc.popen.send_signal(signal.SIGHUP)

        def refused_now() -> bool:
            page = c.get("/.ztgate/mfa/webauthn/register")
            answer, _ = _register(c, SoftKey(maker, aaguid=model), _csrf(page))
            return answer.status_code == 403
        wait_until(refused_now, timeout=15, what="the reloaded metadata to refuse the model")
        sid = session_sid(c)
        assert gw.admin("POST", f"/sessions/{sid}/step-up", json={"method": "webauthn"}).status_code == 200
        c.get("/.ztgate/mfa?next=/form", headers={"Accept": "text/html"})
        assert gw.admin("GET", f"/sessions/{sid}").json()["step_up"]["fallback"] == "totp"
