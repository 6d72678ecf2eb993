"""When Redis is unreachable: at start ztgate refuses to run with a clear message; at run time it follows
store.fail_mode (see gateway/sessions.py), keeps terminated sessions terminated, and recovers without a restart.

Uses a redis-server of its own on a free port, so stopping it disturbs no one else.
"""

from __future__ import annotations

import secrets
import subprocess
import time

import httpx
import pytest
import yaml

from tests.support.processes import (PYTHON, ROOT, free_port, gateway_config, login, make_users, run_echo,
                                     run_gateway, run_redis, session_sid, wait_until)

pytestmark = pytest.mark.slow

CACHE_SECONDS = 1.0


def test_run_refuses_to_start_when_redis_is_unreachable(tmp_path):
    closed = free_port()
    cfg = gateway_config(port=free_port(), upstream="http://127.0.0.1:9", tmp=tmp_path, users_file=None,
                         store=f"redis://127.0.0.1:{closed}/0", admin_token=secrets.token_urlsafe(24))
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg))
    started = time.monotonic()
    out = subprocess.run([PYTHON, "-m", "gateway.cli.main", "run", "--config", str(path)], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert f"127.0.0.1:{closed}" in text and "Redis" in text, text  # names the store
    assert "hint:" in text and "store.url" in text, text
    assert "Traceback" not in text, text
    assert time.monotonic() - started < 30


def _get(gw, token: str) -> int:
    return httpx.get(f"{gw.url}/echo/x", cookies={"ztgate_session": token}, headers={"Accept": "application/json"},
                     timeout=10).status_code


def test_outage_follows_fail_mode_and_recovers_without_restart(tmp_path):
    users = make_users(tmp_path / "users.yaml", [{"username": "live"}, {"username": "gone"}, {"username": "later"}])
    token = secrets.token_urlsafe(24)
    port_closed, port_open = free_port(), free_port()
    with run_redis(tmp_path) as redis, run_echo(tmp_path) as echo:
        def config(instance: str, port: int, fail_mode: str) -> dict:
            cfg = gateway_config(port=port, upstream=echo, tmp=tmp_path, users_file=tmp_path / "users.yaml",
                                 store=redis.url, admin_token=token, instance=instance,
                                 extra_routes=[{"name": "echo", "upstream": echo, "path_prefix": "/echo",
                                                "audience": "echo", "sensor": False}])
            cfg["store"].update(fail_mode=fail_mode, cache_seconds=CACHE_SECONDS)
            return cfg

        with run_gateway(tmp_path, config("closed", port_closed, "closed"), name="gw-closed") as closed, \
                run_gateway(tmp_path, config("open", port_open, "open"), name="gw-open") as fail_open:
            tokens = {}
            for name in ("live", "gone"):
                with httpx.Client(base_url=closed.url) as c:
                    login(c, users[name])
                    tokens[name] = c.cookies.get("ztgate_session")
                    if name == "gone":
                        assert closed.admin("POST", f"/sessions/{session_sid(c)}/terminate").status_code == 200
            for gw in (closed, fail_open):  # both processes have a view of both sessions
                assert _get(gw, tokens["live"]) == 200
                assert _get(gw, tokens["gone"]) == 401

            redis.stop(keep_data=True)
            wait_until(lambda: httpx.get(f"{closed.url}/readyz").status_code == 503, timeout=10,
                       what="readyz to report the store down")
            assert httpx.get(f"{fail_open.url}/readyz").json()["store"] == "unreachable"
            time.sleep(CACHE_SECONDS + 0.3)  # the cached views are now stale
            assert _get(closed, tokens["live"]) == 503  # closed: no fresh view, no access
            assert _get(fail_open, tokens["live"]) == 200  # open: the cached session continues
            for gw in (closed, fail_open):  # terminated before the outage: stays terminated during it
                assert _get(gw, tokens["gone"]) == 401
            with httpx.Client(base_url=closed.url) as c:  # no new sessions while the store is down
                r = login(c, users["later"])
                assert r.status_code == 503 and "unavailable" in r.text.lower()

            redis.start()
            for gw in (closed, fail_open):
                wait_until(lambda: _get(gw, tokens["live"]) == 200, timeout=15,
                           what=f"{gw.proc.name} to serve again after the store came back")
                assert _get(gw, tokens["gone"]) == 401
                assert httpx.get(f"{gw.url}/readyz").status_code == 200
            with httpx.Client(base_url=closed.url) as c:  # and new sessions are admitted again
                assert login(c, users["later"]).status_code == 303
                assert c.get("/echo/x", headers={"Accept": "application/json"}).status_code == 200
                sid = session_sid(c)
            # broadcasts work again: a termination on one process is seen at once by the other
            later = c.cookies.get("ztgate_session")
            assert _get(fail_open, later) == 200
            closed.admin("POST", f"/sessions/{sid}/terminate")
            assert _get(fail_open, later) == 401
