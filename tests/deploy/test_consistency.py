"""The recipes agree with each other: ports, service names, labels, Secrets, mounts, networks and environment
variables."""

from __future__ import annotations

import ipaddress
import re
import xml.etree.ElementTree as ET
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import yaml

from deploy_paths import (
    COMMAND_MADE_SECRETS,
    COMPOSE_DIR,
    DEPLOY,
    ENV_REF,
    K8S_DIR,
    K8S_GATEWAY_CONFIG,
    SECRET_TEMPLATE,
    find,
    gateway_ports,
    pod_env,
    port_of,
    service_networks,
    share_a_network,
    workloads,
)

GATEWAY_SERVICES = ("ztgate-1", "ztgate-2")
# A finding (OCSF Detection Finding) is about 5 KB in a Redis stream.
EVENT_BYTES = 5 * 1024
# Default maxlen of a redis_stream sink (gateway/secevents/config.py) when the config sets none.
REDIS_SINK_DEFAULT_MAXLEN = 100_000


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


def haproxy_section(name: str) -> list[str]:
    """The directive lines (comments dropped) of one section, e.g. 'backend ztgate_http'."""
    lines, inside = [], False
    for raw in haproxy_config().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if line and not raw[0].isspace():
            inside = line.strip() == name
            continue
        if inside and line.strip():
            lines.append(line.strip())
    return lines


def redis_maxmemory(args: list[str]) -> int:
    value = args[args.index("--maxmemory") + 1].lower()
    number, unit = re.fullmatch(r"(\d+)(mb|gb|kb|)", value).groups()
    return int(number) * {"": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}[unit]


def assert_event_streams_fit(config: dict, maxmemory: int, where: str) -> None:
    """The outbox and every redis_stream sink writing to the same Redis hold at most ~3/4 of maxmemory, leaving
    the rest to sessions, profiles, locks and dead letters: with noeviction a full Redis refuses every write."""
    events = config["events"]
    outbox = events["outbox"].get("maxlen")
    assert outbox is not None, f"{where}: events.outbox.maxlen is left at its default (1,000,000 events, ~5 GB)"
    streams = [s.get("maxlen", REDIS_SINK_DEFAULT_MAXLEN) for s in events.get("sinks", [])
               if s["type"] == "redis_stream" and s["url"] == config["store"]["url"]]
    budget = (outbox + sum(streams)) * EVENT_BYTES
    assert budget <= 0.75 * maxmemory, (
        f"{where}: outbox {outbox} + streams {streams} events x 5 KB = {budget >> 20} MiB "
        f"do not fit Redis maxmemory {maxmemory >> 20} MiB")


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
    (network, settings), = compose["services"]["lb"]["networks"].items()
    lb = settings["ipv4_address"]
    subnet = compose["networks"][network]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(lb) in ipaddress.ip_network(subnet)
    for name in GATEWAY_SERVICES:
        assert network in service_networks(compose["services"][name]), f"{name} is not on the balancer's network"
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


def test_lb_retries_failed_connections_on_another_replica():
    backend = haproxy_section("backend ztgate_http")
    retries = [line for line in backend if line.startswith("retries ")]
    assert retries and int(retries[0].split()[1]) >= 1, "no `retries` in the backend"
    assert any(re.fullmatch(r"option redispatch( \d+)?", line) for line in backend), "no `option redispatch`"
    retry_on = [line.split()[1:] for line in backend if line.startswith("retry-on ")]
    assert retry_on and {"conn-failure", "empty-response"} <= set(retry_on[0])


def test_lb_publishes_what_it_binds(compose):
    published = {int(str(p).split(":")[-2]) for p in compose["services"]["lb"]["ports"]}
    assert haproxy_binds() == published


def test_published_ports_bind_to_loopback(compose):
    """The stack serves plain HTTP and raw VNC: nothing is published beyond this machine."""
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), f"{name} publishes {port} on every address"


def test_gateway_services_share_one_definition_and_differ_by_instance(compose):
    a, b = (compose["services"][name] for name in GATEWAY_SERVICES)
    assert a["command"] == b["command"] and a["networks"] == b["networks"]
    assert a["environment"]["ZTGATE_INSTANCE"] != b["environment"]["ZTGATE_INSTANCE"]
    assert "ports" not in b, "web traffic reaches the gateways only through the load balancer"
    assert all(str(p).split(":")[-1] != "8080" for p in a.get("ports", [])), "raw VNC only bypasses the balancer"
    for service in (a, b):
        healthcheck = " ".join(service["healthcheck"]["test"])
        assert re.search(r"http://127\.0\.0\.1:(\d+)/readyz", healthcheck)
    # the same config, policies, keys and users; each its own state and event log
    shared = {"/etc/ztgate/ztgate.yaml", "/etc/ztgate/policies", "/var/lib/ztgate/keys", "/var/lib/ztgate/users"}
    mounts = [{v.split(":")[1]: v.split(":")[0] for v in s["volumes"]} for s in (a, b)]
    assert mounts[0].keys() == mounts[1].keys()
    for target in mounts[0]:
        same = mounts[0][target] == mounts[1][target]
        assert same == (target in shared), f"{target}: {'shared' if same else 'per replica'}"


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


def test_compose_spool_and_event_log_survive_restarts(compose, compose_gateway_config):
    """state_dir (the security-events spool during a Redis outage) and JSONL sinks are on named volumes, never
    tmpfs: a container restart must not lose undelivered or logged security events."""
    for name in GATEWAY_SERVICES:
        service = compose["services"][name]
        named = {v.split(":")[1] for v in service["volumes"] if not v.startswith((".", "/"))}
        tmpfs = [t.split(":")[0] for t in service.get("tmpfs", [])]
        paths = [compose_gateway_config["state_dir"]]
        paths += [s["path"] for s in compose_gateway_config["events"]["sinks"] if s["type"] == "jsonl"]
        for path in paths:
            assert not any(PurePosixPath(path).is_relative_to(t) for t in tmpfs), f"{name}: {path} is on tmpfs"
            assert any(PurePosixPath(path).is_relative_to(t) for t in named), f"{name}: {path} is not on a volume"


def test_compose_admin_console_has_a_host_of_its_own(compose_gateway_config):
    host = compose_gateway_config["admin"].get("host")
    assert host, "admin.host is not set: the console would share every app's origin"
    assert host.endswith(".localhost"), "browsers resolve *.localhost to this machine"
    assert host not in {r.get("host") for r in compose_gateway_config["routes"]}


def test_compose_env_example_placeholder_is_refused():
    """.env.example copied as it is must not start the stack with a published token: either empty (the compose
    file's ${VAR:?} refuses it) or a REPLACE-ME placeholder (the gateway refuses it)."""
    values = dict(line.split("=", 1) for line in (COMPOSE_DIR / ".env.example").read_text().splitlines()
                  if line and not line.startswith("#"))
    compose_text = (COMPOSE_DIR / "docker-compose.yaml").read_text()
    for name, value in values.items():
        assert value.strip() == "" or "REPLACE-ME" in value, f"{name}={value} would be accepted"
        if not value.strip():
            assert re.search(r"\$\{" + name + r":\?", compose_text), f"an empty {name} is not refused"


def test_compose_env_file_is_git_ignored():
    ignored = (COMPOSE_DIR / ".gitignore").read_text().split()
    assert ".env" in ignored or "/.env" in ignored


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


def compose_connections(compose: dict, config: dict) -> set[tuple[str, str]]:
    """Every (client, server) pair of services that must be able to connect, read from the files themselves."""
    edges = {("lb", host) for _, host, _ in haproxy_servers()}
    upstreams = {urlsplit(r["upstream"]).hostname for r in config["routes"]}
    upstreams.add(urlsplit(config["store"]["url"]).hostname)
    upstreams.add(urlsplit(config["telemetry"]["otlp_endpoint"]).hostname)
    for sink in config["events"]["sinks"]:
        if "url" in sink or "endpoint" in sink:
            upstreams.add(urlsplit(sink.get("url") or sink["endpoint"]).hostname)
    edges |= {(gateway, host) for gateway in GATEWAY_SERVICES for host in upstreams}
    demo = compose["services"]["demo"]["command"]
    edges.add(("demo", urlsplit(demo[demo.index("--jwks-url") + 1]).hostname))
    edges.add(("guacamole", compose["services"]["guacamole"]["environment"]["GUACD_HOSTNAME"]))
    mapping = ET.parse(COMPOSE_DIR / "guacamole" / "user-mapping.xml")
    for param in mapping.iter("param"):
        if param.get("name") == "hostname":
            edges.add(("guacd", param.text))
    return edges


def test_every_compose_connection_has_a_shared_network(compose, compose_gateway_config):
    for client, server in sorted(compose_connections(compose, compose_gateway_config)):
        assert server in compose["services"], f"{client} connects to {server}, which is not a service"
        assert share_a_network(compose, client, server), f"{client} cannot reach {server}: no shared network"


def test_the_desktop_reaches_only_the_gateways_and_guacd_s_outbound_side(compose, compose_gateway_config):
    """The desktop is user-controlled: it must not reach Redis, the collector, Guacamole, the balancer or guacd's
    listener (an open guacd relays to anything it can reach). guacd shares a network with the desktop because it
    opens the VNC connection, so it must listen only on an address of a network the desktop is not on."""
    services = compose["services"]
    desktop = service_networks(services["desktop"])
    assert "default" not in desktop
    for name in ("redis", "otel-collector", "guacamole", "lb", "demo"):
        assert not desktop & service_networks(services[name]), f"the desktop shares a network with {name}"
    guacd = services["guacd"]
    argv = list(guacd.get("entrypoint") or []) + list(guacd["command"])
    assert "-b" in argv, "guacd listens on every address, including the desktop's network"
    bind = argv[argv.index("-b") + 1]
    networks = {name: settings for name, settings in guacd["networks"].items()}
    (listen_net,) = [name for name, s in networks.items() if (s or {}).get("ipv4_address") == bind]
    assert listen_net not in desktop
    assert share_a_network(compose, "guacamole", "guacd") and listen_net in service_networks(services["guacamole"])
    health = " ".join(guacd["healthcheck"]["test"])
    assert bind in health, "the image's health check probes 127.0.0.1, where guacd no longer listens"


def test_compose_redis_is_persistent(compose):
    redis = compose["services"]["redis"]
    args = redis["command"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] in ("everysec", "always")
    data = [v for v in redis.get("volumes", []) if v.split(":")[1] == "/data"]
    assert data and data[0].split(":")[0] in compose.get("volumes", {}), "Redis' /data is not a named volume"


def test_compose_event_streams_fit_redis_memory(compose, compose_gateway_config):
    assert_event_streams_fit(compose_gateway_config, redis_maxmemory(compose["services"]["redis"]["command"]),
                             "compose")


# --- Kubernetes -----------------------------------------------------------------------------------------------


def gateway_pod(k8s_objects) -> tuple[dict, dict]:
    deployment = find(k8s_objects, "Deployment", "ztgate")
    template = deployment["spec"]["template"]
    return template, template["spec"]["containers"][0]


def redis_pod(k8s_objects) -> tuple[dict, dict]:
    (workload,) = [o for o in workloads(k8s_objects) if o["metadata"]["name"] == "redis"]
    template = workload["spec"]["template"]
    return workload, template["spec"]["containers"][0]


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
    pods = {o["metadata"]["name"]: o["spec"]["template"] for o in workloads(k8s_objects)}
    for service in (o for o in k8s_objects if o["kind"] == "Service"):
        selector = service["spec"]["selector"]
        matching = [t for t in pods.values() if selector.items() <= t["metadata"]["labels"].items()]
        assert len(matching) == 1, f"Service {service['metadata']['name']} selects {len(matching)} workloads"
        port_names = {p["name"] for c in matching[0]["spec"]["containers"] for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
        assert service["spec"].get("sessionAffinity", "None") == "None"


def test_raw_vnc_is_not_on_the_public_load_balancer(k8s_objects):
    """Raw VNC is cleartext: it has a Service of its own, limited to source ranges, never the public one."""
    services = [o for o in k8s_objects if o["kind"] == "Service"]
    public = [s for s in services if any(p["targetPort"] == "https" for p in s["spec"]["ports"])]
    assert public and all(p["targetPort"] != "vnc" for s in public for p in s["spec"]["ports"])
    vnc = [s for s in services if any(p["targetPort"] == "vnc" for p in s["spec"]["ports"])]
    assert len(vnc) == 1
    spec = vnc[0]["spec"]
    assert [p["targetPort"] for p in spec["ports"]] == ["vnc"]
    if spec.get("type") == "LoadBalancer":
        ranges = spec.get("loadBalancerSourceRanges") or []
        assert ranges and not any(ipaddress.ip_network(r).prefixlen == 0 for r in ranges)
        # a raw VNC connection joins the session signed in from the same client address
        assert spec.get("externalTrafficPolicy") == "Local"
    assert "internal" in (K8S_DIR / "service.yaml").read_text().lower()


def test_hpa_and_pdb_target_the_gateway(k8s_objects):
    template, _ = gateway_pod(k8s_objects)
    hpa = find(k8s_objects, "HorizontalPodAutoscaler", "ztgate")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ztgate"}
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = find(k8s_objects, "PodDisruptionBudget", "ztgate")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    deployment = find(k8s_objects, "Deployment", "ztgate")
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()


def test_workloads_under_an_hpa_have_no_replicas(k8s_objects):
    """kubectl apply would reset the HPA's count to spec.replicas every time."""
    for hpa in (o for o in k8s_objects if o["kind"] == "HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        workload = find(k8s_objects, target["kind"], target["name"])
        assert "replicas" not in workload["spec"], f"{target['kind']}/{target['name']} sets replicas under an HPA"


def test_volumes_and_secret_keys_exist(k8s_objects, k8s_secret_templates):
    """Every ConfigMap is applied; every Secret a pod uses is in the template or made by a documented command;
    every secretKeyRef names a key the template has."""
    names = {(o["kind"], o["metadata"]["name"]) for o in k8s_objects}
    templates = {o["metadata"]["name"]: o for o in k8s_secret_templates}
    documented = SECRET_TEMPLATE.read_text() + (DEPLOY / "README.md").read_text()
    for workload in workloads(k8s_objects):
        spec = workload["spec"]["template"]["spec"]
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in names
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                assert name in templates or name in COMMAND_MADE_SECRETS, name
                assert "create secret" in documented and name in documented
        for container in spec["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secret = templates[ref["name"]]
                    assert ref["key"] in {**secret.get("data", {}), **secret.get("stringData", {})}, ref
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
            assert mounts == {v["name"] for v in spec.get("volumes", [])} | claims


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


def test_k8s_redis_url_comes_from_a_secret_and_points_at_the_redis_service(k8s_objects, k8s_gateway_config):
    """No Redis URL is written in the config: ${ZTGATE_REDIS_URL}, which the pod builds from the Redis password in
    Secret ztgate-secrets (the one Redis requires), pointing at the Redis Service."""
    cfg = k8s_gateway_config
    assert cfg["store"]["url"] == "${ZTGATE_REDIS_URL}"
    for sink in cfg["events"]["sinks"]:
        if sink["type"] == "redis_stream":
            assert sink["url"] == "${ZTGATE_REDIS_URL}"
    _, container = gateway_pod(k8s_objects)
    url = urlsplit(pod_env(container)["ZTGATE_REDIS_URL"])
    _, redis = redis_pod(k8s_objects)
    redis_password = pod_env(redis)["REDIS_PASSWORD"]
    assert redis_password.startswith("secret(ztgate-secrets,")
    assert url.scheme in ("redis", "rediss") and url.password == redis_password, (
        f"the gateways' Redis password {url.password} is not the one Redis requires ({redis_password})")
    service = find(k8s_objects, "Service", "redis")
    assert url.hostname.split(".")[:2] == [service["metadata"]["name"], service["metadata"]["namespace"]]
    assert url.port == service["spec"]["ports"][0]["port"]


def test_k8s_redis_requires_a_password(k8s_objects):
    _, redis = redis_pod(k8s_objects)
    args = redis["args"]
    assert args[args.index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    env = pod_env(redis)
    assert env["REDIS_PASSWORD"].startswith("secret(ztgate-secrets,")
    # the readiness probe authenticates too (redis-cli reads REDISCLI_AUTH)
    assert "redis-cli" in " ".join(redis["readinessProbe"]["exec"]["command"])
    assert env.get("REDISCLI_AUTH") == env["REDIS_PASSWORD"]


def test_k8s_redis_is_persistent(k8s_objects):
    """A StatefulSet whose /data is a PersistentVolumeClaim, with the append-only file fsync'd every second."""
    workload, redis = redis_pod(k8s_objects)
    assert workload["kind"] == "StatefulSet"
    args = redis["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--appendfsync") + 1] in ("everysec", "always")
    (data,) = [m for m in redis["volumeMounts"] if m["mountPath"] == "/data"]
    claims = {c["metadata"]["name"]: c for c in workload["spec"].get("volumeClaimTemplates", [])}
    assert data["name"] in claims, "/data is not on a PersistentVolumeClaim"
    assert claims[data["name"]]["spec"]["resources"]["requests"]["storage"]
    volumes = {v["name"] for v in workload["spec"]["template"]["spec"].get("volumes", [])}
    assert data["name"] not in volumes, "a pod volume of the same name would shadow the claim"
    assert workload["spec"]["serviceName"] == find(k8s_objects, "Service", "redis")["metadata"]["name"]


def test_k8s_event_streams_fit_redis_memory(k8s_objects, k8s_gateway_config):
    _, redis = redis_pod(k8s_objects)
    assert_event_streams_fit(k8s_gateway_config, redis_maxmemory(redis["args"]), "k8s")


def test_secret_volumes_are_readable_by_the_gateway_alone(k8s_objects):
    """Secret files belong to root; with fsGroup kubelet makes them group-readable whatever defaultMode says. The
    manifest states the mode the pod sees, and that group is the gateway's own."""
    template, _ = gateway_pod(k8s_objects)
    security = template["spec"]["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] != 0
    assert security.get("fsGroup") == security.get("runAsGroup") is not None
    for volume in template["spec"]["volumes"]:
        if "secret" in volume:
            mode = volume["secret"]["defaultMode"]
            assert mode & 0o007 == 0, f"{volume['name']}: readable by others"
            assert mode == 0o440, f"{volume['name']}: defaultMode {mode:o} is not what kubelet applies with fsGroup"


def test_tls_renewal_restarts_the_gateways(k8s_objects):
    """The certificate is read at start only: a renewed ztgate-tls must roll the pods (stakater Reloader)."""
    template, _ = gateway_pod(k8s_objects)
    deployment = find(k8s_objects, "Deployment", "ztgate")
    (tls,) = [v["secret"]["secretName"] for v in template["spec"]["volumes"]
              if "secret" in v and v["name"] == "tls"]
    annotation = deployment["metadata"].get("annotations", {}).get("secret.reloader.stakater.com/reload", "")
    reloaded = {name.strip() for name in annotation.split(",")}
    assert tls in reloaded
    assert "ztgate-keys" not in reloaded, "key files are picked up without a restart"
    assert "rollout restart" in (DEPLOY / "README.md").read_text()


def test_everything_is_in_the_ztgate_namespace(k8s_objects):
    for obj in k8s_objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "ztgate", obj["metadata"]["name"]


# --- Kubernetes NetworkPolicies -------------------------------------------------------------------------------

ANYWHERE = "anywhere"


def selects(selector: dict, labels: dict) -> bool:
    assert not selector.get("matchExpressions"), "only matchLabels are evaluated here"
    return selector.get("matchLabels", {}).items() <= labels.items()


def admitted_from(k8s_objects, labels: dict, port: int) -> list:
    """The peers the namespace's NetworkPolicies admit to `port` of a pod with `labels`: ANYWHERE, or the `from`
    entries (podSelector / namespaceSelector / ipBlock mappings). A pod no ingress policy selects admits anything."""
    policies = [o for o in k8s_objects if o["kind"] == "NetworkPolicy"
                and "Ingress" in o["spec"].get("policyTypes", ["Ingress"]) and selects(o["spec"]["podSelector"], labels)]
    if not policies:
        return [ANYWHERE]
    peers = []
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports is not None and not any(p.get("port") == port for p in ports):
                continue
            peers += rule["from"] if rule.get("from") else [ANYWHERE]
    return peers


def gateway_labels(k8s_objects) -> dict:
    return gateway_pod(k8s_objects)[0]["metadata"]["labels"]


def test_network_policies_deny_ingress_by_default(k8s_objects):
    defaults = [o for o in k8s_objects if o["kind"] == "NetworkPolicy" and o["spec"]["podSelector"] == {}
                and "Ingress" in o["spec"]["policyTypes"] and not o["spec"].get("ingress")]
    assert defaults, "no default-deny ingress NetworkPolicy"
    for workload in workloads(k8s_objects):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert admitted_from(k8s_objects, labels, 9) == [], f"{workload['metadata']['name']}: an unused port is open"


def test_redis_admits_the_gateways_only(k8s_objects):
    workload, _ = redis_pod(k8s_objects)
    peers = admitted_from(k8s_objects, workload["spec"]["template"]["metadata"]["labels"], 6379)
    assert peers, "Redis admits nobody: the gateways cannot reach it"
    for peer in peers:
        assert peer != ANYWHERE and set(peer) == {"podSelector"}, f"Redis admits {peer}"
        assert selects(peer["podSelector"], gateway_labels(k8s_objects)) and peer["podSelector"].get("matchLabels")
        assert peer["podSelector"]["matchLabels"].items() >= {"app.kubernetes.io/component": "gateway"}.items()


def test_gateway_public_ports_are_open_and_plain_http_is_not(k8s_objects, k8s_gateway_config):
    labels = gateway_labels(k8s_objects)
    tls = {port_of(listener["address"]) for listener in k8s_gateway_config["listeners"] if "tls" in listener}
    vnc = {port_of(r["listen"]) for r in k8s_gateway_config["routes"] if r.get("kind") == "vnc"}
    for port in tls | vnc:
        assert ANYWHERE in admitted_from(k8s_objects, labels, port), f"public port {port} is closed"
    plain = {port_of(listener["address"]) for listener in k8s_gateway_config["listeners"] if "tls" not in listener}
    for port in plain:
        peers = admitted_from(k8s_objects, labels, port)
        assert ANYWHERE not in peers and not any("ipBlock" in p for p in peers), f"plain-HTTP {port} is public"
        assert {"podSelector": {}} in peers, f"{port}: pods of the namespace (upstreams fetching the JWKS) refused"
        assert any(set(p) == {"namespaceSelector"} and p["namespaceSelector"].get("matchLabels") for p in peers), \
            f"{port}: no monitoring namespace admitted for Prometheus"


def test_an_egress_policy_if_any_allows_dns(k8s_objects):
    for policy in (o for o in k8s_objects if o["kind"] == "NetworkPolicy"):
        if "Egress" in policy["spec"].get("policyTypes", []):
            ports = [(p.get("port"), p.get("protocol", "TCP")) for rule in policy["spec"].get("egress", [])
                     for p in rule.get("ports", [])]
            assert (53, "UDP") in ports, f"{policy['metadata']['name']} restricts egress without allowing DNS"


def test_k8s_secret_template_is_a_template(k8s_secret_templates):
    """Every value in secret.example.yaml is a REPLACE-ME placeholder (the gateway refuses those)."""
    assert k8s_secret_templates and all(o["kind"] == "Secret" for o in k8s_secret_templates)
    for secret in k8s_secret_templates:
        values = {**secret.get("data", {}), **secret.get("stringData", {})}
        assert values
        for key, value in values.items():
            assert "REPLACE-ME" in str(value), f"{secret['metadata']['name']}/{key} holds a value, not a placeholder"


def test_key_secret_creation_is_documented():
    """The keys Secret is read-only in the pod: it must hold a complete key directory including shared.secret,
    made by `ztgate keys init`."""
    command = "kubectl -n ztgate create secret generic ztgate-keys --from-file=./ztgate-keys"
    for path in (DEPLOY / "README.md", SECRET_TEMPLATE):
        text = " ".join(path.read_text().replace("#", " ").split())
        assert "ztgate keys init ./ztgate-keys" in text, path
        assert command in text, path
        assert "shared.secret" in text, path
    readme = (DEPLOY / "README.md").read_text()
    assert "secret.yaml" not in readme.replace("secret.example.yaml", ""), "README still points at secret.yaml"
    assert "max_lifetime" in readme and "rotate" in readme, "manual key rotation is not documented"
    assert "rediss://" in readme, "TLS to a managed Redis is not recommended"


def test_k8s_config_has_no_literal_redis_url():
    text = yaml.safe_load(K8S_GATEWAY_CONFIG.read_text())
    flat = yaml.safe_dump(text)
    assert "redis://" not in flat and "rediss://" not in flat
