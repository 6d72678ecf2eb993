"""Fixtures for the deploy/ recipe tests."""

from __future__ import annotations

import pytest
import yaml

from deploy_paths import COMPOSE_DIR, K8S_DIR, find, load_all


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((COMPOSE_DIR / "docker-compose.yaml").read_text())


@pytest.fixture(scope="session")
def compose_gateway_config() -> dict:
    return yaml.safe_load((COMPOSE_DIR / "ztgate.yaml").read_text())


@pytest.fixture(scope="session")
def k8s_objects() -> list[dict]:
    objects = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        objects.extend(load_all(path))
    return objects


@pytest.fixture(scope="session")
def k8s_gateway_config(k8s_objects) -> dict:
    return yaml.safe_load(find(k8s_objects, "ConfigMap", "ztgate-config")["data"]["ztgate.yaml"])
