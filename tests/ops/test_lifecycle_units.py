"""The pure parts of running as workers, draining and reloading: what a reload may apply, when --workers is
refused, and which connections the drain counts as busy. No processes here."""

from __future__ import annotations

import textwrap
from types import SimpleNamespace

import pytest

from gateway.config import ConfigInvalid, loads
from gateway.proxy.master import Lifecycle
from gateway.runtime import live_config
from gateway.supervisor import worker_problems

BASE = """
instance: a
listeners: [{address: "127.0.0.1:18080"}]
routes:
  - {name: app, upstream: "http://127.0.0.1:9000"}
store: {url: "redis://127.0.0.1:6379/0", prefix: "p:"}
admin: {token: "0123456789abcdef-one"}
"""


def _cfg(text: str = BASE, **replace: str):
    for old, new in replace.items():
        text = text.replace(old, new)
    return loads(textwrap.dedent(text), file="ztgate.yaml")


def test_shutdown_grace_defaults_and_validates():
    assert _cfg().shutdown_grace == 30.0
    assert _cfg(BASE + "shutdown_grace: 5\n").shutdown_grace == 5.0
    with pytest.raises(ConfigInvalid) as err:
        _cfg(BASE + "shutdown_grace: -1\n")
    assert "ztgate.yaml:" in str(err.value) and "shutdown_grace" in str(err.value)


def test_reload_applies_routes_session_admin_and_log_level_live():
    running = _cfg()
    fresh = _cfg(BASE.replace("0123456789abcdef-one", "0123456789abcdef-two").replace(
        "routes:\n", "routes:\n  - {name: extra, upstream: \"http://127.0.0.1:9001\", path_prefix: /x}\n")
        + "session: {idle_timeout: 60}\ntelemetry: {log_level: debug}\nshutdown_grace: 7\n")
    merged, needs_restart = live_config(running, fresh)
    assert needs_restart == []
    assert [r.name for r in merged.routes] == ["extra", "app"]
    assert merged.admin.token == "0123456789abcdef-two" and merged.session.idle_timeout == 60
    assert merged.telemetry.log_level == "debug" and merged.shutdown_grace == 7


def test_reload_keeps_what_needs_a_restart_and_names_it():
    running = _cfg()
    fresh = _cfg(BASE.replace("18080", "18081").replace('prefix: "p:"', 'prefix: "q:", fail_mode: open')
                 .replace("instance: a", "instance: b"))
    merged, needs_restart = live_config(running, fresh)
    # the outbox stream follows store.prefix, so the events section changes with it
    assert set(needs_restart) == {"listeners", "store.prefix", "instance", "events"}
    assert merged.listeners == running.listeners and merged.store.prefix == "p:" and merged.instance == "a"
    assert merged.store.fail_mode == "open"  # fail_mode is live


def test_workers_need_a_shared_store_and_fixed_ports():
    assert worker_problems(_cfg(), 2) == []
    assert worker_problems(_cfg(BASE.replace('url: "redis://127.0.0.1:6379/0"', 'url: "memory://"')), 1) == []
    problems = worker_problems(_cfg(BASE.replace('url: "redis://127.0.0.1:6379/0"', 'url: "memory://"')
                                    .replace("18080", "0")), 2)
    assert len(problems) == 2 and "memory://" in problems[0] and "port 0" in problems[1]


def _flow(client_id: str, status: int = 200, http_version: str = "HTTP/1.1", stream: bool = False):
    response = SimpleNamespace(status_code=status, headers={}, stream=stream)
    return SimpleNamespace(client_conn=SimpleNamespace(id=client_id), response=response, websocket=None,
                           request=SimpleNamespace(http_version=http_version))


def test_drain_bookkeeping_busy_idle_and_connection_close():
    life = Lifecycle()
    for cid in ("idle", "request", "ws"):
        life.client_connected(SimpleNamespace(id=cid))
    life.requestheaders(_flow("request"))
    upgrade = _flow("ws", status=101)
    life.requestheaders(upgrade)
    life.response(upgrade)  # 101: the connection stays busy until the WebSocket ends
    assert life.idle_clients(["idle", "request", "ws"], 0) == ["idle"]

    life.draining = True
    done = _flow("request")
    life.response(done)
    assert done.response.headers["connection"] == "close"
    assert "connection" not in _answer(life, _flow("x", http_version="HTTP/2.0")).response.headers
    assert set(life.idle_clients(["idle", "request", "ws"], 0)) == {"idle", "request"}
    life.websocket_end(upgrade)
    assert set(life.idle_clients(["idle", "request", "ws"], 0)) == {"idle", "request", "ws"}
    assert life.idle_clients(["idle"], 3600) == []  # not idle long enough


def _answer(life: Lifecycle, flow):
    life.requestheaders(flow)
    life.response(flow)
    return flow
