"""Graceful shutdown and live reload of one `ztgate run` process, with a WebSocket open through it.

Real processes: the gateway, the demo upstream (its /ws/echo) and an echo app; the `websockets` package is the
client. Every gateway here listens on the same port one after the other, so the demo upstream (which fetches the
gateway's JWKS from that port) and the shared keys directory stay valid across them.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
import yaml
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support.processes import (ROOT, free_port, gateway_config, login, make_users, run_echo, run_gateway,
                                     run_upstream, wait_until)

pytestmark = pytest.mark.slow

GRACE = 4  # seconds of drain in these tests


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ops")
    users = make_users(tmp / "users.yaml", [{"username": f"o{i}"} for i in range(4)])
    port = free_port()
    with run_echo(tmp) as echo, run_upstream(tmp, jwks_port=port) as upstream:
        yield {"tmp": tmp, "users": users, "port": port, "upstream": upstream, "echo": echo}


def _config(env: dict, **overrides) -> dict:
    return gateway_config(port=env["port"], upstream=env["upstream"], tmp=env["tmp"],
                          users_file=env["tmp"] / "users.yaml", admin_token=secrets.token_urlsafe(24), **overrides)


def _signed_in(gw, user) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=gw.url, timeout=10)
    login(client, user)
    return client, client.cookies.get("ztgate_session")


def _echo_socket(port: int, cookie: str):
    return connect(f"ws://127.0.0.1:{port}/ws/echo", additional_headers={"Cookie": f"ztgate_session={cookie}"},
                   open_timeout=10)


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_drains_open_websocket_refuses_new_connections_and_exits_zero(env):
    with run_gateway(env["tmp"], _config(env, shutdown_grace=GRACE), name="drain") as gw:
        client, cookie = _signed_in(gw, env["users"]["o0"])
        with _echo_socket(gw.port, cookie) as ws:
            ws.send("before")
            assert ws.recv(timeout=5) == "before"
            probe = httpx.Client(base_url=gw.url, timeout=5)  # a keep-alive connection opened before the signal
            assert probe.get("/readyz").status_code == 200

            signalled = time.monotonic()
            gw.proc.popen.send_signal(signal.SIGTERM)
            draining = wait_until(lambda: (r := probe.get("/readyz")).status_code == 503 and r, timeout=5,
                                  interval=0.02, what="/readyz to report the drain")
            assert draining.json()["ready"] is False
            assert draining.headers.get("connection") == "close"  # keep-alive clients are told to go elsewhere
            wait_until(lambda: _refused(gw.port), timeout=5, what="new connections to be refused")

            for i in range(5):  # the open WebSocket keeps working during the drain
                ws.send(f"during-{i}")
                assert ws.recv(timeout=5) == f"during-{i}"
                time.sleep(0.2)

            code = gw.proc.popen.wait(GRACE + 20)
            took = time.monotonic() - signalled
            assert code == 0, gw.proc.log()[-3000:]
            with pytest.raises(ConnectionClosed):  # cut at the deadline
                ws.send("after")
                ws.recv(timeout=5)
            print(f"\nexit {took:.1f} s after SIGTERM (shutdown_grace {GRACE} s)")
            log = gw.proc.log()
            assert "draining" in log and "drain deadline reached" in log
            probe.close()
            client.close()


def test_sigterm_without_open_connections_exits_at_once(env):
    with run_gateway(env["tmp"], _config(env, shutdown_grace=30), name="quick") as gw:
        assert httpx.get(f"{gw.url}/readyz").status_code == 200
        signalled = time.monotonic()
        gw.proc.popen.send_signal(signal.SIGTERM)
        assert gw.proc.popen.wait(25) == 0
        print(f"\nexit {time.monotonic() - signalled:.1f} s after SIGTERM with nothing open (grace 30 s)")


def test_sighup_applies_route_and_policy_changes_keeps_websocket_and_refuses_bad_config(env):
    tmp: Path = env["tmp"]
    policies_dir = tmp / "policies-hup"
    shutil.copytree(ROOT / "policies" / "defaults", policies_dir, dirs_exist_ok=True)
    # the watcher is slowed right down: what changes here changes because of SIGHUP
    cfg = _config(env, policies={"dir": str(policies_dir), "reload_interval": 3600})
    with run_gateway(tmp, cfg, name="hup") as gw:
        client, cookie = _signed_in(gw, env["users"]["o1"])
        with _echo_socket(gw.port, cookie) as ws:
            _reload_scenario(env, cfg, gw, client, ws, policies_dir)
        client.close()


def _reload_scenario(env: dict, cfg: dict, gw, client: httpx.Client, ws, policies_dir: Path) -> None:
    ws.send("one")
    assert ws.recv(timeout=5) == "one"
    before = httpx.get(f"{gw.url}/readyz").json()["policies"]
    assert client.get("/echo/x", headers={"Accept": "application/json"}).status_code == 404  # demo app: no page

    cfg["routes"].append({"name": "echo", "upstream": env["echo"], "path_prefix": "/echo", "audience": "echo"})
    cfg["session"] = {"idle_timeout": 1800}
    gw.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    session_file = policies_dir / "session.yaml"
    session_file.write_text(session_file.read_text() + """
      - id: ops-reload-marker
        description: Added by the reload test (trial)
        when: risk >= 0.99
        action: step_up
        shadow: true
""")
    gw.proc.popen.send_signal(signal.SIGHUP)
    seen = wait_until(lambda: (r := client.get("/echo/x", headers={"Accept": "application/json"})).status_code
                      == 200 and r, timeout=10, what="the new route to take effect")
    assert seen.json()["path"] == "/echo/x"
    assert httpx.get(f"{gw.url}/readyz").json()["policies"] != before
    ws.send("two")  # the WebSocket opened before the reload is still there
    assert ws.recv(timeout=5) == "two"

    # a broken file is refused with its file:line, and the running config (with the new route) stays
    gw.config_path.write_text(gw.config_path.read_text() + "\nroutes: [oops\n")
    gw.proc.popen.send_signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in gw.proc.log(), timeout=10, what="the refusal in the log")
    assert f"{gw.config_path}:" in gw.proc.log().split("reload refused", 1)[1]
    assert client.get("/echo/y", headers={"Accept": "application/json"}).status_code == 200
    ws.send("three")
    assert ws.recv(timeout=5) == "three"

    # a change that needs a restart is reported as such
    cfg["store"] = {**cfg["store"], "prefix": "other:"}
    gw.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    gw.proc.popen.send_signal(signal.SIGHUP)
    wait_until(lambda: "store.prefix changed; this needs a restart" in gw.proc.log(), timeout=10,
               what="the restart notice in the log")
    assert httpx.get(f"{gw.url}/readyz").status_code == 200
