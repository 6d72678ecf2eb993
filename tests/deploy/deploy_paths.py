"""Paths and loaders for the deploy/ recipes, shared by the tests in this folder."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
K8S_DIR = DEPLOY / "k8s"
ENV_REF = re.compile(r"\$\{(ZTGATE_[A-Z0-9_]+)\}")


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
