"""The example configuration and user directory against ztgate's own loaders."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deploy_paths import COMPOSE_DIR, DEPLOY, ENV_REF, REPO

EXAMPLE = DEPLOY / "examples" / "ztgate.yaml"
ZTGATE = REPO / ".venv" / "bin" / "ztgate"
SECTIONS = ("instance", "listeners", "routes", "identity", "store", "session", "keys", "admin", "policies",
            "scoring", "events", "telemetry", "webauthn")


def fake_env(text: str) -> dict[str, str]:
    """Values for every ${ZTGATE_...} the file uses (long enough for the secrets' length checks)."""
    env = dict(os.environ)
    for name in ENV_REF.findall(text):
        env[name] = "redis://127.0.0.1:6379/15" if name.endswith("REDIS_URL") else f"test-value-for-{name.lower()}"
    return env


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ztgate.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def run_check(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(ZTGATE), "run", "--check", "--config", str(config)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)


def test_example_config_has_every_section_and_a_route_of_every_kind():
    import yaml

    config = yaml.safe_load(EXAMPLE.read_text())
    assert set(SECTIONS) <= set(config)
    assert {r["kind"] for r in config["routes"]} == {"http", "guacamole", "novnc", "terminal", "vnc"}
    assert any("tls" in listener for listener in config["listeners"])
    assert config["identity"]["oidc"][0]["client_secret"] == "${ZTGATE_OIDC_CLIENT_SECRET}"
    assert {s["type"] for s in config["events"]["sinks"]} == {"webhook", "redis_stream", "jsonl", "otlp", "syslog"}


def test_every_example_field_is_commented():
    """Each line that sets a field carries a comment, on the line or just above it."""
    lines = EXAMPLE.read_text().splitlines()
    uncommented = [
        f"{i + 1}: {line.strip()}"
        for i, line in enumerate(lines)
        if ":" in line and not line.lstrip().startswith("#") and "#" not in line
        and not (i > 0 and lines[i - 1].lstrip().startswith("#"))
        and not line.rstrip().endswith(":")  # a section header whose fields are commented
        and not line.lstrip().startswith("- type:")  # sink entries are commented on their first field
    ]
    assert uncommented == []


def test_example_config_on_a_machine_without_its_files_names_the_missing_file():
    result = run_check(EXAMPLE, fake_env(EXAMPLE.read_text()))
    assert result.returncode != 0 and "file not found: /etc/ztgate/tls" in result.stderr, result.stderr


def localised(text: str, tmp_path: Path) -> Path:
    """The config with host paths that exist only on a server replaced by local ones (a throwaway certificate,
    this checkout's default policies)."""
    cert, key = self_signed(tmp_path)
    vendor_roots = tmp_path / "vendor-roots.pem"
    vendor_roots.write_bytes(cert.read_bytes())  # any certificate stands in for a key vendor's root here
    text = (text.replace("/etc/ztgate/tls/tls.crt", str(cert)).replace("/etc/ztgate/tls/tls.key", str(key))
            .replace("/etc/ztgate/policies", str(REPO / "policies" / "defaults"))
            .replace("/etc/ztgate/webauthn/vendor-roots.pem", str(vendor_roots)))
    path = tmp_path / "ztgate.yaml"
    path.write_text(text)
    return path


def k8s_config_text() -> str:
    import yaml

    for doc in yaml.safe_load_all((DEPLOY / "k8s" / "configmap-config.yaml").read_text()):
        return doc["data"]["ztgate.yaml"]
    raise AssertionError("no ConfigMap")


@pytest.mark.skipif(not ZTGATE.exists(), reason="needs .venv/bin/ztgate (deploy/bootstrap.sh)")
@pytest.mark.parametrize(
    "source", ["examples/ztgate.yaml", "compose/ztgate.yaml", "k8s/configmap-config.yaml"],
)
def test_configs_pass_check_with_local_paths(source, tmp_path):
    text = k8s_config_text() if source.startswith("k8s/") else (DEPLOY / source).read_text()
    result = run_check(localised(text, tmp_path), fake_env(text))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["routes"]


def test_example_users_file_loads_and_its_placeholders_cannot_sign_in():
    from gateway.auth.directory import Directory

    directory = Directory.load(DEPLOY / "examples" / "users.yaml")
    assert {u.username for u in directory.users} == {"alice", "bob", "secops"}
    assert all(directory.authenticate(u.username, "password") is None for u in directory.users)


def test_policies_readme_points_to_the_defaults():
    readme = (DEPLOY / "examples" / "policies" / "README.md").read_text()
    assert "policies/defaults" in readme
    assert (REPO / "policies" / "defaults").is_dir()
    assert not list((DEPLOY / "examples" / "policies").glob("*.yaml"))  # nothing copied (yet)


def test_compose_env_example_covers_required_variables():
    compose = (COMPOSE_DIR / "docker-compose.yaml").read_text()
    required = set(__import__("re").findall(r"\$\{(\w+):\?", compose))
    example = {line.split("=", 1)[0] for line in (COMPOSE_DIR / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert required <= example
