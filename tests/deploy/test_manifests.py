"""deploy/ recipes validated without a container engine or a cluster: YAML parses, Kubernetes objects validate
against the official schemas (kubernetes-validate bundles them), the compose file against the compose-spec schema
(vendored by check-jsonschema), and referenced files exist."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy_paths import (
    COMPOSE_DIR,
    DEPLOY,
    K8S_DIR,
    POLICY_DEFAULTS,
    REPO,
    SECRET_TEMPLATE,
    find,
    kubectl_kustomize,
    kustomization,
    load_all,
    workloads,
)

KUBERNETES_VERSION = "1.33.0"  # preStop `sleep` needs >= 1.30
MANIFESTS = sorted(p for p in K8S_DIR.glob("*.yaml") if p.name != "kustomization.yaml")


def all_yaml_files():
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


@pytest.mark.parametrize("path", all_yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path):
    assert load_all(path), f"{path} is empty"


def test_embedded_gateway_config_parses(k8s_gateway_config):
    assert {"listeners", "routes", "store", "keys"} <= set(k8s_gateway_config)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_kubernetes_objects_validate_against_official_schemas(path):
    for obj in load_all(path):
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_kubernetes_validation_is_not_a_no_op():
    deployment = load_all(K8S_DIR / "deployment.yaml")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_and_nothing_missing():
    listed = set(kustomization()["resources"])
    present = {p.name for p in MANIFESTS} - {SECRET_TEMPLATE.name}
    assert listed == present


def test_kustomization_applies_no_secret():
    """`kubectl apply -k` after creating the real Secrets must never overwrite them (with placeholders or else)."""
    k = kustomization()
    assert SECRET_TEMPLATE.name not in k["resources"]
    assert not k.get("secretGenerator"), "a secretGenerator would put secret values in the repository"
    for name in k["resources"]:
        for obj in load_all(K8S_DIR / name):
            assert obj["kind"] != "Secret", f"{name} holds Secret {obj['metadata']['name']}"
            assert "REPLACE-ME" not in json.dumps(obj), f"{name} holds a placeholder"


def test_gateway_config_is_generated_so_changes_roll_the_pods():
    """The config is read at start only: kustomize's configMapGenerator names the ConfigMap after its content, so a
    change is a new name in the pod template and so a rollout."""
    k = kustomization()
    (generator,) = [g for g in k.get("configMapGenerator", []) if g["name"] == "ztgate-config"]
    assert not generator.get("options", {}).get("disableNameSuffixHash")
    assert all(not name.startswith("configmap-config") for name in k["resources"])


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    objects = kubectl_kustomize()
    if objects is None:
        pytest.skip("kubectl is not installed")
    return objects


def test_kubectl_kustomize_renders_valid_objects_without_secrets(rendered):
    assert not [o for o in rendered if o["kind"] == "Secret"]
    assert "REPLACE-ME" not in json.dumps(rendered)
    for obj in rendered:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    kinds = {o["kind"] for o in rendered}
    assert {"NetworkPolicy", "StatefulSet", "Deployment", "HorizontalPodAutoscaler"} <= kinds


def test_kubectl_kustomize_points_the_pods_at_the_hashed_config(rendered):
    (config,) = [o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("ztgate-config-")]
    deployment = find(rendered, "Deployment", "ztgate")
    names = {v["configMap"]["name"] for v in deployment["spec"]["template"]["spec"]["volumes"] if "configMap" in v}
    assert config["metadata"]["name"] in names
    assert config["data"]["ztgate.yaml"] == (K8S_DIR / "config" / "ztgate.yaml").read_text()
    assert "ztgate-policies" in names, "the policies ConfigMap must keep its name: it is updated in place"


def test_policies_configmap_is_exactly_policies_defaults():
    """The shipped policies ConfigMap holds exactly the files of policies/defaults (one key per *.yaml, byte for
    byte). Regenerate it when they change:
      kubectl -n ztgate create configmap ztgate-policies --from-file=policies/defaults --dry-run=client -o yaml"""
    (configmap,) = load_all(K8S_DIR / "configmap-policies.yaml")
    defaults = {p.name: p.read_text() for p in sorted(POLICY_DEFAULTS.glob("*.yaml"))}
    assert defaults, "policies/defaults is empty"
    data = configmap.get("data") or {}
    assert sorted(data) == sorted(defaults), "configmap-policies.yaml and policies/defaults hold different files"
    for name, text in defaults.items():
        assert data[name] == text, f"{name} in configmap-policies.yaml differs from policies/defaults/{name}"


ZTGATE = REPO / ".venv" / "bin" / "ztgate"


@pytest.mark.skipif(not ZTGATE.exists(), reason="needs .venv/bin/ztgate (deploy/bootstrap.sh)")
def test_policies_configmap_passes_policy_check(tmp_path):
    """Mounted as a directory, the ConfigMap is a policy set the gateway accepts (it refuses an empty one)."""
    (configmap,) = load_all(K8S_DIR / "configmap-policies.yaml")
    assert configmap.get("data"), "an empty policy directory: the gateways refuse to start"
    for name, text in configmap["data"].items():
        (tmp_path / name).write_text(text)
    result = subprocess.run([str(ZTGATE), "policy", "check", str(tmp_path)], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_prestop_sleep_documents_its_kubernetes_version():
    text = (K8S_DIR / "deployment.yaml").read_text()
    deployment = load_all(K8S_DIR / "deployment.yaml")[0]
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        if "sleep" in container.get("lifecycle", {}).get("preStop", {}):
            assert "1.30" in text, "the preStop sleep action needs Kubernetes >= 1.30: say so"
            assert "1.30" in (K8S_DIR / "kustomization.yaml").read_text() + (DEPLOY / "README.md").read_text()


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
    assert stages and len(set(stages)) == 1, "both stages share one base: the runtime reuses the build's packages"
    assert re.fullmatch(r"python:3\.12\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", stages[0]), stages[0]
    final_stage = text.rsplit("\nFROM ", 1)[1]
    user = re.findall(r"^USER (\S+)", final_stage, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert 'CMD ["run", "--config", "/etc/ztgate/ztgate.yaml"]' in final_stage
    assert 'ENTRYPOINT ["ztgate"]' in final_stage
    # COPY sources (other than from a build stage) exist in the build context, the repository root.
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (REPO / source).exists(), source


def test_runtime_image_has_no_package_installer():
    final_stage = (COMPOSE_DIR / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]
    uninstall = re.search(r"pip uninstall[^\n]*\bpip\b[^\n]*", final_stage)
    assert uninstall and "setuptools" in uninstall.group(0), "pip/setuptools stay in the runtime image"
    assert final_stage.index(uninstall.group(0)) < final_stage.index("COPY --from=build"), \
        "uninstall before ztgate arrives: its own files must not be touched"
    assert "pip install" not in final_stage


def all_images() -> list[tuple[str, str]]:
    compose = yaml.safe_load((COMPOSE_DIR / "docker-compose.yaml").read_text())
    images = [(f"compose {name}", s["image"]) for name, s in compose["services"].items() if "build" not in s
              and s["image"] != "ztgate:local"]
    for path in sorted(K8S_DIR.glob("*.yaml")):
        for obj in load_all(path):
            for workload in workloads([obj]):
                for container in workload["spec"]["template"]["spec"]["containers"]:
                    images.append((f"{path.name} {container['name']}", container["image"]))
    return images


@pytest.mark.parametrize("where,image", all_images(), ids=lambda v: str(v))
def test_images_are_pinned_to_a_version(where, image):
    """No floating tags (latest, a bare major): at least major.minor, or a digest."""
    if "@sha256:" in image:
        return
    tag = image.rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
    assert tag and tag != "latest", f"{where}: {image} has no version tag"
    assert re.search(r"\d+\.\d+", tag), f"{where}: {image} floats over minor releases"


@pytest.mark.parametrize("path", [COMPOSE_DIR / "docker-compose.yaml", COMPOSE_DIR / "Dockerfile",
                                  K8S_DIR / "deployment.yaml", K8S_DIR / "redis.yaml"], ids=lambda p: p.name)
def test_image_references_say_to_pin_digests_in_production(path):
    assert "digest" in path.read_text(), f"{path.name}: tags move; say to pin images by digest in production"


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


def test_haproxy_config_is_valid():
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed")
    result = subprocess.run([haproxy, "-c", "-f", str(COMPOSE_DIR / "haproxy.cfg")], capture_output=True, text=True)
    # the compose service names do not resolve here: those warnings are expected, nothing else
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if ("[WARNING]" in line or "[ALERT]" in line) and "could not resolve address" not in line]
    assert result.returncode == 0 and problems == [], result.stdout + result.stderr


def test_systemd_unit_has_no_dangling_documentation():
    text = (DEPLOY / "systemd" / "ztgate.service").read_text()
    for line in text.splitlines():
        if line.startswith("Documentation="):
            for uri in line.split("=", 1)[1].split():
                assert uri.startswith(("https://", "http://", "man:", "info:")), uri


def test_systemd_env_file_lists_every_variable_of_the_example():
    from deploy_paths import ENV_REF

    unit = (DEPLOY / "systemd" / "ztgate.service").read_text()
    needed = set(ENV_REF.findall((DEPLOY / "examples" / "ztgate.yaml").read_text()))
    header = "\n".join(line for line in unit.splitlines() if line.startswith("#"))
    missing = [var for var in sorted(needed) if f"{var}=" not in header]
    assert needed and missing == [], f"the env-file comment does not list {missing}"


# --- bootstrap.sh ---------------------------------------------------------------------------------------------

BOOTSTRAP = DEPLOY / "bootstrap.sh"


def run_bootstrap(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """deploy/bootstrap.sh, copied into a throwaway checkout (fake_checkout): never against this repository, so
    that even a broken argument parser cannot touch the real .venv."""
    return subprocess.run(["bash", str(root / "deploy" / "bootstrap.sh"), *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=root)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_bootstrap_help(flag, fake_checkout):
    root, log, env = fake_checkout
    result = run_bootstrap(root, env, flag)
    assert result.returncode == 0 and "usage:" in result.stdout and "--test" in result.stdout
    assert not log.exists() and not (root / ".venv").exists(), "--help went on to set up the venv"


@pytest.mark.parametrize("args", [["--bogus"], ["--test", "--tset"], ["test"]])
def test_bootstrap_refuses_unknown_arguments(args, fake_checkout):
    """Before doing anything: a typo must not silently run the non-test setup."""
    root, log, env = fake_checkout
    result = run_bootstrap(root, env, *args)
    assert result.returncode == 2, result.stderr
    assert "unknown argument" in result.stderr and "usage:" in result.stderr
    assert not log.exists() and not (root / ".venv").exists()


def write_exe(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def fake_checkout(tmp_path):
    """A throwaway checkout with fake interpreters, so that the venv logic runs without touching the real .venv,
    creating a real venv or installing anything. The fake python3.13 answers the version probe and, for
    `-m venv`, records the call and writes a .venv (emptied first with --clear) whose python is >= 3.12 and whose
    pip records its arguments."""
    root = tmp_path / "checkout"
    (root / "deploy").mkdir(parents=True)
    (root / "deploy" / "bootstrap.sh").write_text(BOOTSTRAP.read_text())
    (root / "pyproject.toml").write_text("[project]\nname = 'fake'\n")
    log = tmp_path / "calls.log"
    bin_dir = tmp_path / "bin"
    write_exe(bin_dir / "python3.13", f"""#!/bin/sh
if [ "$1" = "-c" ]; then echo "$0"; exit 0; fi
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    echo "venv $*" >> {log}
    case " $* " in *" --clear "*) rm -rf .venv ;; esac
    mkdir -p .venv/bin
    printf '#!/bin/sh\\nexit 0\\n' > .venv/bin/python
    printf '#!/bin/sh\\necho "pip $*" >> {log}\\n' > .venv/bin/pip
    chmod +x .venv/bin/python .venv/bin/pip
    exit 0
fi
exit 1
""")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "PYENV_ROOT": str(tmp_path / "no-pyenv")}
    return root, log, env


def test_bootstrap_creates_a_missing_venv(fake_checkout):
    root, log, env = fake_checkout
    result = run_bootstrap(root, env)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0].endswith("-m venv .venv") and any(c.startswith("pip install") and "-e ." in c for c in calls)
    assert (root / ".venv" / ".installed").exists()
    log.write_text("")
    assert run_bootstrap(root, env).returncode == 0
    assert log.read_text() == "", "a second run reinstalled although nothing changed"


def test_bootstrap_recreates_a_venv_of_an_old_python(fake_checkout):
    root, log, env = fake_checkout
    write_exe(root / ".venv" / "bin" / "python", "#!/bin/sh\nif [ \"$1\" = -V ]; then echo 'Python 3.11.2'; fi\nexit 1\n")
    (root / ".venv" / ".installed").touch()
    result = run_bootstrap(root, env)
    assert result.returncode == 0, result.stderr
    assert "3.11.2" in result.stderr and "recreating" in result.stderr
    calls = log.read_text().splitlines()
    assert calls[0].endswith("-m venv --clear .venv"), calls
    assert any(c.startswith("pip install") for c in calls)


def test_bootstrap_keeps_a_good_venv(fake_checkout):
    root, log, env = fake_checkout
    write_exe(root / ".venv" / "bin" / "python", "#!/bin/sh\nexit 0\n")
    (root / ".venv" / ".installed").touch()
    os.utime(root / "pyproject.toml", (1, 1))  # older than the stamp
    result = run_bootstrap(root, env)
    assert result.returncode == 0 and not log.exists(), result.stderr
