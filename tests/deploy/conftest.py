"""Fixtures for the deploy/ recipe tests."""

from __future__ import annotations

import pytest
import yaml

from deploy_paths import COMPOSE_DIR, K8S_GATEWAY_CONFIG, SECRET_TEMPLATE, kustomize_objects, load_all


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((COMPOSE_DIR / "docker-compose.yaml").read_text())


@pytest.fixture(scope="session")
def compose_gateway_config() -> dict:
    return yaml.safe_load((COMPOSE_DIR / "ztgate.yaml").read_text())


@pytest.fixture(scope="session")
def k8s_objects() -> list[dict]:
    """What `kubectl apply -k deploy/k8s` applies (generated ConfigMaps under their base names)."""
    return kustomize_objects()


@pytest.fixture(scope="session")
def k8s_secret_templates() -> list[dict]:
    """The Secrets an operator creates before applying (deploy/k8s/secret.example.yaml): never applied by -k."""
    return load_all(SECRET_TEMPLATE)


@pytest.fixture(scope="session")
def k8s_gateway_config() -> dict:
    return yaml.safe_load(K8S_GATEWAY_CONFIG.read_text())
