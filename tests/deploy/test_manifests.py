"""deploy/ recipes validated without a container engine or a cluster: YAML parses, Kubernetes objects validate
against the official schemas (kubernetes-validate bundles them), the compose file against the compose-spec schema
(vendored by check-jsonschema), and referenced files exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy_paths import COMPOSE_DIR, DEPLOY, K8S_DIR, REPO, load_all

KUBERNETES_VERSION = "1.33.0"  # preStop `sleep` needs >= 1.30


def all_yaml_files():
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


@pytest.mark.parametrize("path", all_yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path):
    assert load_all(path), f"{path} is empty"


def test_embedded_gateway_config_parses(k8s_gateway_config):
    assert {"listeners", "routes", "store", "keys"} <= set(k8s_gateway_config)


@pytest.mark.parametrize(
    "path", sorted(p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml"), ids=lambda p: p.name
)
def test_kubernetes_objects_validate_against_official_schemas(path):
    for obj in load_all(path):
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validation_is_not_a_no_op():
    deployment = load_all(K8S_DIR / "deployment.yaml")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_and_nothing_missing():
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def compose_schema_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_compose_file_validates_against_compose_spec(compose):
    errors = [f"{e.json_path}: {e.message}" for e in compose_schema_validator().iter_errors(compose)]
    assert errors == []


def test_compose_schema_check_is_not_a_no_op(compose):
    broken = yaml.safe_load(yaml.safe_dump(compose))
    broken["services"]["lb"]["portz"] = ["8080:8080"]
    assert list(compose_schema_validator().iter_errors(broken))


def test_docker_compose_config(tmp_path):
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI on this machine")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"docker CLI has no compose plugin here: {probe.stderr.strip()[:120]}")
    env_file = tmp_path / "ci.env"
    env_file.write_text("ZTGATE_ADMIN_TOKEN=compose-config-check-token\n")
    result = subprocess.run(
        [docker, "compose", "--env-file", str(env_file), "-f", str(COMPOSE_DIR / "docker-compose.yaml"),
         "config", "-q"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr


def test_files_referenced_by_compose_exist(compose):
    for name, service in compose["services"].items():
        build = service.get("build")
        if build:
            context = (COMPOSE_DIR / build["context"]).resolve()
            assert context.is_dir(), f"{name}: build context {context}"
            dockerfile = context / build["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile}"
            assert dockerfile.with_name(dockerfile.name + ".dockerignore").is_file()
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (COMPOSE_DIR / source).exists(), f"{name}: bind mount source {source} does not exist"
            else:
                assert source in compose.get("volumes", {}), f"{name}: named volume {source} is not declared"


def test_dockerfile_runs_ztgate_as_non_root():
    text = (COMPOSE_DIR / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages and all(image == "python:3.12-slim" for image in stages)
    final_stage = text.rsplit("\nFROM ", 1)[1]
    user = re.findall(r"^USER (\S+)", final_stage, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert 'CMD ["run", "--config", "/etc/ztgate/ztgate.yaml"]' in final_stage
    assert 'ENTRYPOINT ["ztgate"]' in final_stage
    # COPY sources (other than from a build stage) exist in the build context, the repository root.
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (REPO / source).exists(), source


def test_dockerfile_installs_the_package_from_pyproject():
    assert (REPO / "pyproject.toml").is_file()
    assert "pip install" in (COMPOSE_DIR / "Dockerfile").read_text()


def test_otel_collector_config_wires_every_pipeline():
    config = yaml.safe_load((COMPOSE_DIR / "otel-collector.yaml").read_text())
    for name, pipeline in config["service"]["pipelines"].items():
        for part in ("receivers", "processors", "exporters"):
            for component in pipeline[part]:
                assert component in config[part], f"pipeline {name}: {part} {component} is not defined"
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")


def test_systemd_unit_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    ztgate = REPO / ".venv" / "bin" / "ztgate"
    if not ztgate.exists():
        pytest.skip(f"{ztgate} is missing (run deploy/bootstrap.sh)")
    # verify checks that ExecStart's binary exists: point it at this checkout's instead of /opt/ztgate/venv.
    unit = (DEPLOY / "systemd" / "ztgate.service").read_text().replace("/opt/ztgate/venv/bin/ztgate", str(ztgate))
    copy = tmp_path / "ztgate.service"
    copy.write_text(unit)
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_systemd_unit_hardening():
    text = (DEPLOY / "systemd" / "ztgate.service").read_text()
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#")
    )
    assert settings["User"] == "ztgate"
    assert settings["ProtectSystem"] == "strict"
    assert settings["NoNewPrivileges"] == "yes"
    assert "/var/lib/ztgate" in settings["ReadWritePaths"]
    assert settings["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert settings["KillSignal"] == "SIGTERM" and settings["TimeoutStopSec"]
    assert settings["AmbientCapabilities"] == "" and settings["CapabilityBoundingSet"] == ""  # ports are > 1024
    sysusers = (DEPLOY / "systemd" / "ztgate.sysusers").read_text()
    assert re.search(r"^u ztgate ", sysusers, re.M)
