"""The config is validated once at start; each mistake names file:line:column and a hint."""

from pathlib import Path

import pytest

from gateway.config import ConfigInvalid, loads

GOOD = """
instance: gw-test
listeners:
  - address: 127.0.0.1:8443
routes:
  - name: wiki
    upstream: http://10.0.0.5:8080
    host: wiki.example.com
  - name: api
    upstream: https://10.0.0.6:443
    path_prefix: /api/
  - name: desk
    kind: vnc
    listen: 127.0.0.1:5901
    upstream: tcp://10.0.0.9:5900
store:
  url: redis://127.0.0.1:6379/0
  fail_mode: open
admin:
  token: ${ZTGATE_ADMIN_TOKEN}
"""


def test_good_config_parses_and_routes():
    cfg = loads(GOOD, env={"ZTGATE_ADMIN_TOKEN": "x" * 20})
    assert cfg.admin.token == "x" * 20
    assert cfg.store.is_redis and cfg.store.fail_mode == "open"
    assert cfg.route_for("wiki.example.com", "/page").name == "wiki"
    assert cfg.route_for("other.example.com", "/api/items").name == "api"
    assert cfg.route_for("other.example.com", "/nothing") is None
    assert cfg.routes[2].listen.port == 5901


@pytest.mark.parametrize("text, line, fragment", [
    ("routes:\n  - name: a\n    upstream: http://x:1\n    kindd: http\n", 4, "unknown field 'kindd'"),
    ("routes:\n  - name: a\n    upstream: ftp://x:1\n", 3, "need a http/https URL"),
    ("routes:\n  - name: a\n    kind: vnc\n    upstream: tcp://x:1\n", 2, "listen: is required"),
    ("routes:\n  - {name: a, upstream: 'http://x:1'}\n  - {name: a, upstream: 'http://x:2'}\n", 3,
     "duplicate route name"),
    ("routes:\n  - name: a\n    upstream: http://x:1\n    path_prefix: /.ztgate/x\n", 4, "reserved"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nstore: {url: 'mongodb://x'}\n", 2, "unsupported store"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nsession: {token_ttl: 99999}\n", 2, "at most 3600"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nadmin: {token: short}\n", 2, "too short"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nlisteners: [{address: 'nonsense'}]\n", 2, "HOST:PORT"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nlisteners:\n  - address: 0.0.0.0:8080\n"
     "    trusted_proxies: [10.0.0.0/8, lb.internal]\n", 4, "'lb.internal' is not an IP network"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nlisteners:\n  - address: 0.0.0.0:8080\n"
     "    trusted_proxies: [0.0.0.0/0]\n", 4, "lets any client name its own IP"),
    ("routes: [{name: a, upstream: 'http://x:1'}\n", 2, "invalid YAML"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nroutes: []\n", 2, "duplicate key"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nadmin: {token: '${ZTGATE_MISSING}'}\n", 2,
     "ZTGATE_MISSING is not set"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nadmin: {token: '${HOME}'}\n", 2, "only ${ZTGATE_"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nidentity:\n  lockout: {max_failures: -1}\n", 3,
     "0 never locks"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nidentity:\n  lockout:\n    totp_max_attempts: 0\n", 4,
     "must be positive"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nidentity:\n  lockout: {windw: 60}\n", 3, "did you mean 'window'"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nidentity:\n  lockout: {address_attempts: -1}\n", 3,
     "0 sets no limit per client address"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\npolicies: {reload_interval: .nan}\n", 2, "finite number"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nshutdown_grace: .inf\n", 2, "finite number"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nadmin: {host: 'https://admin.example'}\n", 2, "not a host name"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nadmin: {host: 'admin.example:8443'}\n", 2, "not a host name"),
    ("routes: [{name: a, upstream: 'http://x:1', host: Admin.Example}]\nadmin: {host: admin.example}\n", 2,
     "also the host of route 'a'"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nsession: {cookie_name: 'zt session'}\n", 2, "not a cookie name"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nsession: {cookie_name: __Host-zt}\n", 2, "needs secure: always"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nadmin: {token: '${ZTGATE_ADMIN_TOKEN}'}\n", 2, "REPLACE-ME placeholder"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nevents:\n  sinks:\n    - {type: webhook, url: 'https://s/x', "
     "secret: REPLACE-ME-with-a-long-random-secret}\n", 4, "REPLACE-ME placeholder"),
    ("routes:\n  - {name: a, upstream: 'https://x:443'}\n  - {name: b, upstream: 'https://x:443', path_prefix: /b, "
     "ssl_verify: false}\n", 3, "disagree on ssl_verify"),
    ("routes: [{name: a, upstream: 'http://x:1'}]\nsession: {cookie_name: __Secure-zt, secure: auto}\n", 2,
     "needs secure: always"),
])
def test_bad_config_names_file_and_line(text, line, fragment):
    with pytest.raises(ConfigInvalid) as info:
        loads(text, file="ztgate.yaml", env={"ZTGATE_ADMIN_TOKEN": "replace-me-with-a-long-random-token"})
    message = str(info.value)
    assert message.startswith(f"ztgate.yaml:{line}:"), message
    assert fragment in message, message


def test_admin_host_and_prefixed_cookie_names_are_accepted():
    cfg = loads("routes: [{name: a, upstream: 'http://x:1', host: app.example}]\n"
                "admin: {host: ZTGATE-Admin.Example.}\nsession: {cookie_name: __Host-ztgate, secure: always}\n",
                file="ztgate.yaml", env={})
    assert cfg.admin.host == "ztgate-admin.example"  # compared with the proxy's canonical host
    assert cfg.session.cookie_name == "__Host-ztgate"
    assert loads("routes: [{name: a, upstream: 'http://x:1'}]\n", env={}).admin.host is None


def test_lockout_limits_default_and_can_be_set():
    assert loads("routes: [{name: a, upstream: 'http://x:1'}]\n", env={}).identity.lockout.max_failures == 10
    cfg = loads("routes: [{name: a, upstream: 'http://x:1'}]\nidentity:\n  lockout: {max_failures: 0, window: 60,"
                " duration: 3600, totp_max_attempts: 5}\n", env={})
    lockout = cfg.identity.lockout
    assert (lockout.max_failures, lockout.window, lockout.duration, lockout.totp_max_attempts) == (0, 60, 3600, 5)


def test_unknown_field_gets_a_suggestion():
    with pytest.raises(ConfigInvalid) as info:
        loads("routes: [{name: a, upstream: 'http://x:1'}]\nsesion: {}\n", file="c.yaml", env={})
    assert "did you mean 'session'" in str(info.value)


def test_tls_files_must_exist(tmp_path: Path):
    text = "listeners: [{address: '127.0.0.1:1', tls: {cert: missing.pem, key: missing.key}}]\n" \
           "routes: [{name: a, upstream: 'http://x:1'}]\n"
    with pytest.raises(ConfigInvalid) as info:
        loads(text, file="c.yaml", base=tmp_path, env={})
    assert "file not found" in str(info.value) and "c.yaml:1:" in str(info.value)


def test_webauthn_attestation_cas_are_read_once_at_start(tmp_path: Path):
    from gateway.auth.attestation import fingerprint
    from tests.support.softkey import root_ca

    good, other = root_ca("Good Keys AB"), root_ca("Other Keys Ltd")
    (tmp_path / "vendors.pem").write_bytes(good.pem + other.pem)
    text = ("routes: [{name: a, upstream: 'http://x:1'}]\n"
            "webauthn:\n  attestation_allowed_cas: [vendors.pem]\n"
            "  attestation_allowed_aaguids: [CB69481E-8FF7-4039-93EC-0A2729A154A8]\n")
    policy = loads(text, file="c.yaml", base=tmp_path, env={}).webauthn.attestation
    assert [fingerprint(p) for p in policy.allowed_roots] == [fingerprint(good.pem), fingerprint(other.pem)]
    assert policy.allowed_aaguids == {"cb69481e-8ff7-4039-93ec-0a2729a154a8"} and policy.conveyance == "direct"
    assert not loads("routes: [{name: a, upstream: 'http://x:1'}]\n", env={}).webauthn.attestation.enforced


def test_webauthn_attestation_mds_gives_each_model_its_roots(tmp_path: Path):
    import datetime as dt
    import json
    import uuid

    from gateway.auth.mds import import_blob
    from tests.support.mdsblob import MdsSigner, entry
    from tests.support.softkey import root_ca

    maker, model = root_ca("Maker A"), uuid.uuid4()
    signer = MdsSigner()
    imported = import_blob(signer.blob([entry(model, [maker])]), signer.root.pem, today=dt.date.today())
    (tmp_path / "mds.json").write_text(json.dumps(imported.to_json()))
    text = "routes: [{name: a, upstream: 'http://x:1'}]\nwebauthn:\n  attestation_mds: mds.json\n"
    webauthn = loads(text, file="c.yaml", base=tmp_path, env={}).webauthn
    policy = webauthn.attestation
    assert policy.model_roots == {str(model): (maker.pem,)} and policy.enforced and not policy.allowed_roots
    assert webauthn.mds_next_update == imported.next_update and not webauthn.stale_metadata(dt.date.today().isoformat())
    assert webauthn.stale_metadata("9999-12-31")  # the gateway warns at start and reload once it is due


@pytest.mark.parametrize("webauthn, line, fragment", [
    ("  attestation_allowed_cas: [missing.pem]\n", 4, "file not found"),
    ("  attestation_denied_cas: [broken.pem]\n", 4, "not a PEM certificate bundle"),
    ("  attestation_allowed_cas: [notes.txt]\n", 4, "no certificate in it"),
    ("  attestation_allowed_aaguids: [yubikey]\n", 4, "not a UUID"),
    ("  attestation_allowed_aaguids: [cb69481e-8ff7-4039-93ec-0a2729a154a8]\n", 4, "needs attestation_allowed_cas"),
    ("  attestation_allowd_cas: []\n", 4, "did you mean 'attestation_allowed_cas'"),
    ("  attestation_mds: missing.json\n", 4, "file not found"),
    ("  attestation_mds: notes.txt\n", 4, "not JSON"),
    ("  attestation_mds: other.json\n", 4, "not a file written by 'ztgate webauthn mds-import'"),
    ("  attestation_mds: empty.json\n", 4, "no model was kept"),
])
def test_bad_webauthn_attestation_settings_are_named(tmp_path: Path, webauthn, line, fragment):
    (tmp_path / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    (tmp_path / "notes.txt").write_text("the vendor's CA goes here\n")
    (tmp_path / "other.json").write_text('{"entries": []}')
    (tmp_path / "empty.json").write_text('{"format": "ztgate-mds/1", "no": 1, "next_update": "2030-01-01", '
                                         '"trust_root": "x", "models": []}')
    text = "routes: [{name: a, upstream: 'http://x:1'}]\n\nwebauthn:\n" + webauthn
    with pytest.raises(ConfigInvalid) as info:
        loads(text, file="c.yaml", base=tmp_path, env={})
    message = str(info.value)
    assert message.startswith(f"c.yaml:{line}:") and fragment in message, message


def test_only_vnc_routes_take_a_proxy_protocol_header():
    cfg = loads("routes:\n  - {name: d, kind: vnc, listen: '127.0.0.1:5901', upstream: 'tcp://x:5900',\n"
                "     trusted_proxies: [10.0.0.0/8]}\n", file="c.yaml", env={})
    assert [str(n) for n in cfg.routes[0].trusted_proxies] == ["10.0.0.0/8"]
    with pytest.raises(ConfigInvalid) as info:
        loads("routes:\n  - {name: a, upstream: 'http://x:1', trusted_proxies: [10.0.0.0/8]}\n", file="c.yaml", env={})
    assert "c.yaml:2:" in str(info.value) and "listeners[].trusted_proxies" in str(info.value)
