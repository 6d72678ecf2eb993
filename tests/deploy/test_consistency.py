"""The recipes agree with each other: ports, service names, labels, Secrets, mounts and environment variables."""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from deploy_paths import COMPOSE_DIR, ENV_REF, find, gateway_ports, port_of

GATEWAY_SERVICES = ("ztgate-1", "ztgate-2")
# Created out of band (documented in deploy/k8s/kustomization.yaml): certificates never live in the repository.
EXTERNAL_SECRETS = {"ztgate-tls"}


def haproxy_config() -> str:
    return (COMPOSE_DIR / "haproxy.cfg").read_text()


def haproxy_servers() -> list[tuple[str, str, int]]:
    """(backend, host, port) of every `server` line."""
    servers, backend = [], None
    for line in haproxy_config().splitlines():
        words = line.split()
        if words[:1] == ["backend"]:
            backend = words[1]
        elif words[:1] == ["server"]:
            host, _, port = words[2].rpartition(":")
            servers.append((backend, host, int(port)))
    return servers


def haproxy_binds() -> set[int]:
    return {int(m) for m in re.findall(r"^\s*bind\s+\S*:(\d+)", haproxy_config(), re.M)}


# --- compose --------------------------------------------------------------------------------------------------


def test_lb_backends_are_the_gateway_services_on_gateway_ports(compose, compose_gateway_config):
    servers = haproxy_servers()
    assert {host for _, host, _ in servers} == set(GATEWAY_SERVICES)
    assert set(GATEWAY_SERVICES) <= set(compose["services"])
    ports = gateway_ports(compose_gateway_config)
    web = {port_of(listener["address"]) for listener in compose_gateway_config["listeners"]}
    for backend, host, port in servers:
        assert port in ports, f"haproxy backend {backend} sends to {host}:{port}, where ztgate does not listen"
    # Every web port is reachable through the load balancer; raw VNC is not (it binds by the client's address,
    # which a balancer that ends TCP hides): ztgate-1 publishes it itself
    assert {port for _, _, port in servers} == web
    direct = {int(str(p).split(":")[-1]) for p in compose["services"]["ztgate-1"].get("ports", [])}
    assert direct == ports - web


def test_gateways_trust_forwarded_headers_from_the_balancer_alone(compose, compose_gateway_config):
    lb = compose["services"]["lb"]["networks"]["default"]["ipv4_address"]
    subnet = compose["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(lb) in ipaddress.ip_network(subnet)
    for listener in compose_gateway_config["listeners"]:
        assert listener.get("trusted_proxies") == [lb]
    assert "option forwardfor" in haproxy_config()


def test_lb_health_checks_use_readyz_on_the_http_listener(compose_gateway_config):
    config = haproxy_config()
    assert config.count("http-check send meth GET uri /readyz") == 1  # the one (web) backend
    http_ports = {port_of(listener["address"]) for listener in compose_gateway_config["listeners"]}
    for port in re.findall(r"check port (\d+)", config):
        assert int(port) in http_ports


def test_lb_has_no_stickiness():
    config = "\n".join(line.split("#", 1)[0] for line in haproxy_config().splitlines())
    assert "cookie" not in config and "stick" not in config and "balance source" not in config
    assert "timeout tunnel" in config  # WebSockets and raw VNC outlive the HTTP timeouts


def test_lb_publishes_what_it_binds(compose):
    published = {int(str(p).split(":")[-2]) for p in compose["services"]["lb"]["ports"]}
    assert haproxy_binds() == published


def test_gateway_services_share_one_definition_and_differ_by_instance(compose):
    a, b = (compose["services"][name] for name in GATEWAY_SERVICES)
    assert a["volumes"] == b["volumes"] and a["command"] == b["command"]
    assert a["environment"]["ZTGATE_INSTANCE"] != b["environment"]["ZTGATE_INSTANCE"]
    assert "ports" not in b, "web traffic reaches the gateways only through the load balancer"
    assert all(str(p).split(":")[-1] != "8080" for p in a.get("ports", [])), "raw VNC only bypasses the balancer"
    for service in (a, b):
        healthcheck = " ".join(service["healthcheck"]["test"])
        assert re.search(r"http://127\.0\.0\.1:(\d+)/readyz", healthcheck)


def test_compose_gateway_config_env_vars_are_provided(compose, compose_gateway_config):
    text = (COMPOSE_DIR / "ztgate.yaml").read_text()
    for name in GATEWAY_SERVICES:
        env = compose["services"][name]["environment"]
        for var in ENV_REF.findall(text):
            assert var in env, f"{name}: ztgate.yaml uses ${{{var}}} but the service does not set it"


def test_compose_gateway_mounts_what_its_config_uses(compose, compose_gateway_config):
    service = compose["services"]["ztgate-1"]
    targets = [v.split(":")[1] for v in service["volumes"]] + [t.split(":")[0] for t in service["tmpfs"]]

    def mounted(path: str) -> bool:
        return any(PurePosixPath(path).is_relative_to(t) for t in targets)

    cfg = compose_gateway_config
    assert "/etc/ztgate/ztgate.yaml" in targets
    for path in (cfg["policies"]["dir"], cfg["keys"]["dir"], cfg["identity"]["directory"], cfg["state_dir"]):
        assert mounted(path), f"{path} is not on a volume"
    for sink in cfg["events"]["sinks"]:
        if sink["type"] == "jsonl":
            assert mounted(sink["path"])


def test_route_upstreams_are_compose_services(compose, compose_gateway_config):
    for route in compose_gateway_config["routes"]:
        host = urlsplit(route["upstream"]).hostname
        assert host in compose["services"], f"route {route['name']}: upstream host {host} is not a service"


def test_demo_listens_where_the_routes_send_and_trusts_the_lb_jwks(compose, compose_gateway_config):
    command = compose["services"]["demo"]["command"]
    assert command[0] == "demo-upstream"
    listen_port = port_of(command[command.index("--listen") + 1])
    for route in compose_gateway_config["routes"]:
        upstream = urlsplit(route["upstream"])
        if upstream.hostname == "demo":
            assert upstream.port == listen_port
            assert route["audience"] == command[command.index("--audience") + 1]
    jwks = urlsplit(command[command.index("--jwks-url") + 1])
    assert jwks.hostname == "lb" and jwks.port in haproxy_binds()
    assert jwks.path == "/.well-known/ztgate/jwks.json"


def test_compose_store_and_telemetry_point_at_compose_services(compose, compose_gateway_config):
    assert urlsplit(compose_gateway_config["store"]["url"]).hostname in compose["services"]
    assert urlsplit(compose_gateway_config["telemetry"]["otlp_endpoint"]).hostname in compose["services"]


# --- Kubernetes -----------------------------------------------------------------------------------------------


def gateway_pod(k8s_objects) -> tuple[dict, dict]:
    deployment = find(k8s_objects, "Deployment", "ztgate")
    template = deployment["spec"]["template"]
    return template, template["spec"]["containers"][0]


def test_container_ports_cover_the_gateway_config(k8s_objects, k8s_gateway_config):
    _, container = gateway_pod(k8s_objects)
    declared = {p["containerPort"] for p in container["ports"]}
    assert gateway_ports(k8s_gateway_config) == declared


def test_probes_use_named_ports_on_a_plain_http_listener(k8s_objects, k8s_gateway_config):
    _, container = gateway_pod(k8s_objects)
    by_name = {p["name"]: p["containerPort"] for p in container["ports"]}
    plain = {port_of(listener["address"]) for listener in k8s_gateway_config["listeners"] if "tls" not in listener}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert by_name[container[probe]["httpGet"]["port"]] in plain
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]


def test_services_select_the_pods_and_target_named_ports(k8s_objects):
    pods = {o["metadata"]["name"]: o["spec"]["template"] for o in k8s_objects if o["kind"] == "Deployment"}
    for service in (o for o in k8s_objects if o["kind"] == "Service"):
        selector = service["spec"]["selector"]
        matching = [t for t in pods.values() if selector.items() <= t["metadata"]["labels"].items()]
        assert len(matching) == 1, f"Service {service['metadata']['name']} selects {len(matching)} Deployments"
        port_names = {p["name"] for c in matching[0]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
        assert service["spec"].get("sessionAffinity", "None") == "None"


def test_hpa_and_pdb_target_the_gateway(k8s_objects):
    template, _ = gateway_pod(k8s_objects)
    hpa = find(k8s_objects, "HorizontalPodAutoscaler", "ztgate")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ztgate"}
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = find(k8s_objects, "PodDisruptionBudget", "ztgate")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    deployment = find(k8s_objects, "Deployment", "ztgate")
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()


def test_volumes_and_secret_keys_exist(k8s_objects):
    template, container = gateway_pod(k8s_objects)
    names = {(o["kind"], o["metadata"]["name"]) for o in k8s_objects}
    for volume in template["spec"]["volumes"]:
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in names
        if "secret" in volume:
            name = volume["secret"]["secretName"]
            assert ("Secret", name) in names or name in EXTERNAL_SECRETS
    for env in container["env"]:
        ref = env.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            secret = find(k8s_objects, "Secret", ref["name"])
            assert ref["key"] in {**secret.get("data", {}), **secret.get("stringData", {})}
    volume_names = {v["name"] for v in template["spec"]["volumes"]}
    assert {m["name"] for m in container["volumeMounts"]} == volume_names


def test_k8s_config_env_vars_are_set_in_the_pod(k8s_objects):
    _, container = gateway_pod(k8s_objects)
    text = find(k8s_objects, "ConfigMap", "ztgate-config")["data"]["ztgate.yaml"]
    env = {e["name"] for e in container["env"]}
    assert set(ENV_REF.findall(text)) <= env


def test_k8s_config_paths_are_mounted(k8s_objects, k8s_gateway_config):
    _, container = gateway_pod(k8s_objects)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}

    def mount_of(path: str) -> dict:
        candidates = [m for p, m in mounts.items() if PurePosixPath(path).is_relative_to(p)]
        assert candidates, f"{path} is not on any volume"
        return candidates[0]

    cfg = k8s_gateway_config
    for listener in cfg["listeners"]:
        if "tls" in listener:
            mount_of(listener["tls"]["cert"]), mount_of(listener["tls"]["key"])
    mount_of(cfg["keys"]["dir"])
    mount_of(cfg["state_dir"])
    policies = mount_of(cfg["policies"]["dir"])
    assert "subPath" not in policies, "kubelet never updates subPath mounts: policies would not hot-reload"
    assert mounts["/etc/ztgate/ztgate.yaml"]["subPath"] == "ztgate.yaml"
    assert container["args"] == ["run", "--config", "/etc/ztgate/ztgate.yaml"]


def test_k8s_store_points_at_the_redis_service(k8s_objects, k8s_gateway_config):
    redis = find(k8s_objects, "Service", "redis")
    url = urlsplit(k8s_gateway_config["store"]["url"])
    assert url.hostname.split(".")[:2] == [redis["metadata"]["name"], redis["metadata"]["namespace"]]
    assert url.port == redis["spec"]["ports"][0]["port"]


def test_everything_is_in_the_ztgate_namespace(k8s_objects):
    for obj in k8s_objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "ztgate", obj["metadata"]["name"]
