"""Paths and loaders for the deploy/ recipes, shared by the tests in this folder."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
K8S_DIR = DEPLOY / "k8s"
K8S_GATEWAY_CONFIG = K8S_DIR / "config" / "ztgate.yaml"
SECRET_TEMPLATE = K8S_DIR / "secret.example.yaml"
POLICY_DEFAULTS = REPO / "policies" / "defaults"
ENV_REF = re.compile(r"\$\{(ZTGATE_[A-Z0-9_]+)\}")
# Secrets created with a command rather than from a template (deploy/README.md, secret.example.yaml): a key
# directory and a certificate have no placeholder form.
COMMAND_MADE_SECRETS = {"ztgate-keys", "ztgate-tls"}


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def find(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected exactly one {kind}/{name}, found {len(matches)}"
    return matches[0]


def port_of(address: str) -> int:
    return int(str(address).rpartition(":")[2])


def gateway_ports(config: dict) -> set[int]:
    """Every TCP port a ztgate config listens on: its listeners and the vnc routes' own listeners."""
    ports = {port_of(listener["address"]) for listener in config["listeners"]}
    ports |= {port_of(route["listen"]) for route in config["routes"] if route.get("kind") == "vnc"}
    return ports


# --- Kubernetes: what `kubectl apply -k deploy/k8s` applies ----------------------------------------------------


def kustomization(k8s_dir: Path = K8S_DIR) -> dict:
    return yaml.safe_load((k8s_dir / "kustomization.yaml").read_text())


def kustomize_objects(k8s_dir: Path = K8S_DIR) -> list[dict]:
    """The objects the kustomization applies, without a kustomize binary: its resources, and its generated
    ConfigMaps under their base names (kustomize adds a content-hash suffix and rewrites the references to it)."""
    k = kustomization(k8s_dir)
    objects = [obj for name in k.get("resources", []) for obj in load_all(k8s_dir / name)]
    for gen in k.get("configMapGenerator", []):
        data = {}
        for entry in gen.get("files", []):
            key, _, source = entry.rpartition("=") if "=" in entry else (Path(entry).name, "", entry)
            data[key] = (k8s_dir / source).read_text()
        labels = gen.get("options", {}).get("labels", {})
        objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": gen["name"], "namespace": k.get("namespace"), "labels": labels},
                        "data": data})
    return objects


def kubectl_kustomize(k8s_dir: Path = K8S_DIR) -> list[dict] | None:
    """`kubectl kustomize` output (what `kubectl apply -k` sends), or None without kubectl."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    result = subprocess.run([kubectl, "kustomize", str(k8s_dir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc is not None]


def workloads(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]


def pod_env(container: dict) -> dict[str, str]:
    """A container's env with $(VAR) references expanded the way kubelet does (earlier variables only); a value
    from a Secret or the downward API stands as secret(NAME,KEY) or field(PATH) (URL-safe, for URLs built of them)."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                       lambda m: env.get(m.group(1), m.group(0)), item["value"])
        elif "secretKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = f"secret({ref['name']},{ref['key']})"
        elif "fieldRef" in item.get("valueFrom", {}):
            env[item["name"]] = f"field({item['valueFrom']['fieldRef']['fieldPath']})"
    return env


# --- compose ------------------------------------------------------------------------------------------------


def service_networks(service: dict) -> set[str]:
    networks = service.get("networks", ["default"])
    return set(networks) if isinstance(networks, (list, dict)) else {networks}


def share_a_network(compose: dict, a: str, b: str) -> bool:
    return bool(service_networks(compose["services"][a]) & service_networks(compose["services"][b]))
