"""A raw VNC route with its own listener: x11vnc on Xvfb behind a real `ztgate run`, vncdotool's `vncdo` as the
client (in its own process: Twisted's reactor cannot restart inside pytest).

Raw VNC carries no cookie: a connection belongs to the newest live session signed in from the same address.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import (free_port, gateway_config, login, make_users, run_echo, run_gateway,
                                     run_vnc_server, session_sid, shadow_default_policies, wait_until)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("x11vnc")),
                                                   reason="Xvfb and x11vnc are needed for the VNC route")]
VNCDO = Path(sys.executable).parent / "vncdo"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vnc")
    users = make_users(tmp / "users.yaml", [{"username": "v1"}, {"username": "v2"}])
    port, vnc_listen = free_port(), free_port()
    with run_echo(tmp) as echo, run_vnc_server(tmp) as vnc_port:
        cfg = gateway_config(port=port, upstream=echo, tmp=tmp, users_file=tmp / "users.yaml",
                             admin_token=secrets.token_urlsafe(24),
                             extra_routes=[{"name": "desk", "kind": "vnc", "upstream": f"tcp://127.0.0.1:{vnc_port}",
                                            "listen": f"127.0.0.1:{vnc_listen}"}],
                             # vncdo is a program typing at a fixed delay, and the shipped automation rules rightly
                             # terminate it within a second; this test is about capture and admin termination
                             policies_dir=str(shadow_default_policies(tmp / "policies")))
        with run_gateway(tmp, cfg) as gw:
            gw.extra_ports["vnc"] = vnc_listen
            yield gw, users, tmp


def _vncdo(port: int, *actions: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(VNCDO), "-s", f"127.0.0.1::{port}", "--delay", "40", *actions],
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def test_no_session_no_vnc(env):
    gw, _, _ = env
    with socket.create_connection(("127.0.0.1", gw.extra_ports["vnc"]), timeout=10) as s:
        s.settimeout(10)
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
    assert data == b""  # closed before the server's banner could reach the client


def test_vnc_input_reaches_the_sessions_scorer_and_terminate_cuts_it(env):
    gw, users, tmp = env
    with httpx.Client(base_url=gw.url) as c:
        assert login(c, users["v1"]).status_code == 303
        sid = session_sid(c)
    # types and clicks, then stays connected so the registration can be checked
    client = _vncdo(gw.extra_ports["vnc"], "move", "100", "120", "click", "1", "type", "hello world",
                    "key", "enter", "type", "the quick brown fox", "pause", "30", log=tmp / "vncdo-1.log")
    try:
        view = wait_until(lambda: (v := gw.admin("GET", f"/sessions/{sid}").json())["connections"] == 1 and v,
                          timeout=20, what="the VNC connection to be registered")
        evidence = wait_until(lambda: (gw.admin("GET", f"/sessions/{sid}").json().get("assessment") or {})
                              .get("evidence", {}).get("keystrokes", 0) >= 20 and
                              gw.admin("GET", f"/sessions/{sid}").json()["assessment"]["evidence"],
                              timeout=20, what="keystrokes to reach the scorer")
        print(f"\nscorer evidence from the VNC client: {evidence}")
        automation = gw.admin("GET", f"/sessions/{sid}").json()["assessment"]["signals"].get("automation", {})
        print(f"vncdo's typing as the automation detector sees it: {automation.get('score')} {automation.get('explanation')}")
        assert view["sid"] == sid
        t0 = time.perf_counter()
        assert gw.admin("POST", f"/sessions/{sid}/terminate").status_code == 200
        client.wait(10)  # vncdo ends when the gateway cuts its connection (its pause had 30 s left)
        print(f"terminate call -> vncdo exited: {1000 * (time.perf_counter() - t0):.0f} ms")
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(5)
    assert gw.admin("GET", f"/sessions/{sid}").json()["connections"] == 0
    # and a new connection from this address is refused now that its only session is over
    test_no_session_no_vnc(env)
