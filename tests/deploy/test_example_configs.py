"""The example configuration and user directory against ztgate's own loaders."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deploy_paths import COMPOSE_DIR, DEPLOY, ENV_REF, K8S_DIR, K8S_GATEWAY_CONFIG, REPO, SECRET_TEMPLATE, find, \
    kustomize_objects

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


def localised(text: str, tmp_path: Path, policies: Path = REPO / "policies" / "defaults") -> Path:
    """The config with host paths that exist only on a server replaced by local ones (a throwaway certificate,
    a policy directory: by default this checkout's default policies)."""
    cert, key = self_signed(tmp_path)
    vendor_roots = tmp_path / "vendor-roots.pem"
    vendor_roots.write_bytes(cert.read_bytes())  # any certificate stands in for a key vendor's root here
    text = (text.replace("/etc/ztgate/tls/tls.crt", str(cert)).replace("/etc/ztgate/tls/tls.key", str(key))
            .replace("/etc/ztgate/policies", str(policies))
            .replace("/etc/ztgate/webauthn/vendor-roots.pem", str(vendor_roots)))
    path = tmp_path / "ztgate.yaml"
    path.write_text(text)
    return path


def policies_configmap_dir(tmp_path: Path) -> Path:
    """ConfigMap ztgate-policies as the pods see it: a directory with one file per key."""
    import yaml

    directory = tmp_path / "policies-configmap"
    directory.mkdir()
    (configmap,) = yaml.safe_load_all((K8S_DIR / "configmap-policies.yaml").read_text())
    for name, text in (configmap.get("data") or {}).items():
        (directory / name).write_text(text)
    return directory


@pytest.mark.skipif(not ZTGATE.exists(), reason="needs .venv/bin/ztgate (deploy/bootstrap.sh)")
@pytest.mark.parametrize(
    "source", ["examples/ztgate.yaml", "compose/ztgate.yaml", "k8s/config/ztgate.yaml"],
)
def test_configs_pass_check_with_local_paths(source, tmp_path):
    text = (DEPLOY / source).read_text()
    # on Kubernetes the policies are the shipped ConfigMap's, not this checkout's
    policies = policies_configmap_dir(tmp_path) if source.startswith("k8s/") else REPO / "policies" / "defaults"
    result = run_check(localised(text, tmp_path, policies), fake_env(text))
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


def test_users_file_lives_in_the_state_directory_everywhere():
    """The example config, the users.yaml header and the systemd recipe agree: /var/lib/ztgate/users.yaml, owned
    by ztgate (0600), managed with `sudo -u ztgate ztgate users ...`."""
    import yaml

    config = yaml.safe_load(EXAMPLE.read_text())
    assert config["identity"]["directory"] == "/var/lib/ztgate/users.yaml"
    users_header = (DEPLOY / "examples" / "users.yaml").read_text()
    unit = (DEPLOY / "systemd" / "ztgate.service").read_text()
    for text in (users_header, unit):
        assert "/var/lib/ztgate/users.yaml" in text
        assert re.search(r"sudo -u ztgate \S*ztgate users", text)
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert "/etc/ztgate/users.yaml" not in path.read_text(errors="replace"), path


def test_example_comments_say_which_paths_are_relative_to_what():
    """Relative events.outbox.path and jsonl sink paths are taken from the working directory, the others from
    the config file's directory (gateway/config.py): the example says so, and what state_dir holds."""
    text = EXAMPLE.read_text()
    header = text[: text.index("instance:")]
    assert "events.outbox.path" in header and "working directory" in header
    assert "Relative paths are relative to this file's directory." not in header
    state = text[text.index("instance:"): text.index("\nstate_dir:")]
    for word in ("mitmproxy", "TLS", "spool", "var/ztgate/outbox"):
        assert word in state, f"the state_dir comment does not mention {word}"


def test_example_has_the_optional_fields_of_the_loader():
    import yaml

    config = yaml.safe_load(EXAMPLE.read_text())
    assert "prefix" in config["store"]
    sinks = {s["type"]: s for s in config["events"]["sinks"]}
    assert "headers" in sinks["webhook"] and "headers" in sinks["otlp"]
    # dead_letter_after exists only if gateway/secevents/config.py knows it (another change adds it)
    from gateway.secevents import config as events_config

    if "dead_letter_after" in Path(events_config.__file__).read_text():
        assert "dead_letter_after" in config["events"] or any("dead_letter_after" in s for s in sinks.values())


def deployment_env(secret_value) -> dict[str, str]:
    """The gateway container's environment as kubelet builds it from deployment.yaml: Secret keys through
    `secret_value(name, key)`, the pod name for the downward API, $(VAR) references expanded in order."""
    container = find(kustomize_objects(), "Deployment", "ztgate")["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for item in container["env"]:
        source = item.get("valueFrom", {})
        if "secretKeyRef" in source:
            env[item["name"]] = secret_value(source["secretKeyRef"]["name"], source["secretKeyRef"]["key"])
        elif "fieldRef" in source:
            env[item["name"]] = "ztgate-7d9f-abcde"
        else:
            env[item["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m.group(1)], item["value"])
    return {**os.environ, **env}


@pytest.mark.skipif(not ZTGATE.exists(), reason="needs .venv/bin/ztgate (deploy/bootstrap.sh)")
def test_k8s_pod_environment_makes_a_valid_config(tmp_path):
    """With real-looking Secret values, the environment deployment.yaml builds (the Redis URL put together from
    the password) satisfies the config, policies included."""
    import secrets

    env = deployment_env(lambda name, key: secrets.token_hex(32))
    text = K8S_GATEWAY_CONFIG.read_text()
    result = run_check(localised(text, tmp_path, policies_configmap_dir(tmp_path)), env)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(not ZTGATE.exists(), reason="needs .venv/bin/ztgate (deploy/bootstrap.sh)")
def test_k8s_secret_template_placeholders_are_refused_at_start(tmp_path):
    """A Secret applied from secret.example.yaml as it is must not start a gateway."""
    import yaml

    templates = {o["metadata"]["name"]: o["stringData"] for o in yaml.safe_load_all(SECRET_TEMPLATE.read_text())}
    env = deployment_env(lambda name, key: templates[name][key])
    text = K8S_GATEWAY_CONFIG.read_text()
    result = run_check(localised(text, tmp_path, policies_configmap_dir(tmp_path)), env)
    assert result.returncode != 0 and "REPLACE-ME" in result.stderr, result.stderr
