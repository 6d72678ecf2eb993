"""`ztgate run --workers 2` and a Redis outage: real supervisor, real workers, a redis-server of the test's own.

Workers name themselves in an X-Ztgate-Worker header (ZTGATE_WORKER_HEADER=1, a debug/test switch). The outage
is a real one: the redis-server process is stopped and started again on the same port, empty.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path
from collections import Counter
from contextlib import contextmanager

import httpx
import pytest
import redis
import yaml

from tests.ops.redis_server import OwnRedis
from tests.support.processes import (PYTHON, Gateway, free_port, gateway_config, login, make_users, run_upstream,
                                     session_sid, spawn, wait_until)

pytestmark = pytest.mark.slow

GRACE = 5


@contextmanager
def run_workers(tmp, config: dict, workers: int, name: str = "sup"):
    config_path = tmp / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = int(config["listeners"][0]["address"].rsplit(":", 1)[1])
    proc = spawn(name, [PYTHON, "-m", "gateway.cli.main", "run", "--config", str(config_path), "--workers",
                        str(workers)], tmp, env={"ZTGATE_WORKER_HEADER": "1"})
    gw = Gateway(proc, port, config["admin"]["token"], config_path)
    try:
        wait_until(lambda: proc.popen.poll() is not None or len(worker_pids(gw, 30)) == workers, timeout=40,
                   what=f"{workers} workers to serve")
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.popen.returncode}:\n{proc.log()}")
        yield gw
    except BaseException:
        print(f"\n----- {name} log -----\n{proc.log()[-8000:]}")
        raise
    finally:
        proc.stop(timeout=GRACE + 15)


def worker_pids(gw: Gateway, attempts: int) -> set[str]:
    """Which workers answer: every request on a new connection, so the kernel picks a worker each time."""
    pids = set()
    for _ in range(attempts):
        r = httpx.get(f"{gw.url}/healthz", timeout=5)
        if r.status_code == 200:
            pids.add(r.headers["x-ztgate-worker"])
    return pids


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    users = make_users(tmp / "users.yaml", [{"username": f"w{i}"} for i in range(6)])
    own = OwnRedis(tmp)
    own.start()
    port = free_port()
    try:
        with run_upstream(tmp, jwks_port=port) as upstream:
            cfg = gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                                 store=own.url, prefix="ops:", admin_token=secrets.token_urlsafe(24),
                                 shutdown_grace=GRACE)
            with run_workers(tmp, cfg, 2) as gw:
                yield {"gw": gw, "users": users, "redis": own, "cfg": cfg, "tmp": tmp}
    finally:
        own.stop()


def _whoami(gw: Gateway, cookie: str) -> httpx.Response:
    return httpx.get(f"{gw.url}/api/whoami", cookies={"ztgate_session": cookie},
                     headers={"Accept": "application/json"}, timeout=10)


def test_memory_store_refuses_several_workers(tmp_path):
    cfg = gateway_config(port=free_port(), upstream="http://127.0.0.1:9", tmp=tmp_path, users_file=None,
                         admin_token=secrets.token_urlsafe(24))
    path = tmp_path / "mem.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([PYTHON, "-m", "gateway.cli.main", "run", "--config", str(path), "--workers", "2"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "memory:// cannot be shared by 2 worker processes" in out.stderr and "redis://" in out.stderr


def test_both_workers_serve_one_session(env):
    gw = env["gw"]
    with httpx.Client(base_url=gw.url) as c:
        login(c, env["users"]["w0"])
        cookie = c.cookies.get("ztgate_session")
    served = Counter()
    for _ in range(30):
        r = _whoami(gw, cookie)
        assert r.status_code == 200 and r.json()["sub"] == "w0"
        served[r.headers["x-ztgate-worker"]] += 1
    print(f"\nrequests per worker pid: {dict(served)}")
    assert len(served) == 2


def test_a_killed_worker_is_restarted(env):
    gw = env["gw"]
    before = worker_pids(gw, 30)
    victim = sorted(before)[0]
    os.kill(int(victim), signal.SIGKILL)

    def replaced() -> set[str] | None:
        pids = worker_pids(gw, 20)
        return pids if len(pids) == 2 and victim not in pids else None

    after = wait_until(replaced, timeout=30, what="the killed worker to be replaced")
    assert before - {victim} <= after
    assert re.search(rf"worker \d \(pid {victim}\) exited with signal SIGKILL", gw.proc.log())


class Hammer(threading.Thread):
    """Requests with one cookie in a loop, each on a new connection (so both workers are asked)."""

    def __init__(self, gw: Gateway, cookie: str) -> None:
        super().__init__(daemon=True)
        self.gw, self.cookie = gw, cookie
        self.statuses: Counter = Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        # no keep-alive: every request opens a new connection, which the kernel gives to either worker
        with httpx.Client(base_url=self.gw.url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0),
                          headers={"Accept": "application/json", "Cookie": f"ztgate_session={self.cookie}"}) as client:
            while not self.stop.is_set():
                try:
                    r = client.get("/api/whoami")
                    self.statuses[r.status_code] += 1
                except httpx.HTTPError as exc:
                    self.statuses[type(exc).__name__] += 1
                time.sleep(0.005)


def _readyz_all(gw: Gateway, attempts: int = 12) -> list[httpx.Response]:
    return [httpx.get(f"{gw.url}/readyz", timeout=10) for _ in range(attempts)]


def test_redis_outage_never_lets_a_revoked_session_back_and_recovers_without_restart(env):
    gw, users, own, cfg = env["gw"], env["users"], env["redis"], env["cfg"]
    sessions = {}
    for name in ("w1", "w2", "w3"):
        with httpx.Client(base_url=gw.url) as c:
            login(c, users[name])
            sessions[name] = (c.cookies.get("ztgate_session"), session_sid(c))
    revoked_cookie, revoked_sid = sessions["w1"]
    assert gw.admin("POST", f"/sessions/{revoked_sid}/terminate").json()["state"] == "terminated"
    wait_until(lambda: all(_whoami(gw, revoked_cookie).status_code == 401 for _ in range(10)), timeout=10,
               what="both workers to refuse the terminated session")
    live_cookie, live_sid = sessions["w2"]
    assert _whoami(gw, live_cookie).status_code == 200
    during_cookie, during_sid = sessions["w3"]
    with httpx.Client(base_url=gw.url) as c:
        login(c, users["w5"])
        stepped_cookie, stepped_sid = c.cookies.get("ztgate_session"), session_sid(c)
    for _ in range(20):  # both workers now have a view of these sessions
        assert _whoami(gw, during_cookie).status_code == 200
        assert _whoami(gw, stepped_cookie).status_code == 200

    revoked, live = Hammer(gw, revoked_cookie), Hammer(gw, live_cookie)
    revoked.start()
    live.start()
    try:
        own.stop()  # the outage
        down = wait_until(lambda: all(r.status_code == 503 and r.json()["store"] == "unreachable"
                                      for r in _readyz_all(gw)), timeout=20, what="/readyz to report the outage")
        assert down
        page = httpx.Client(base_url=gw.url)
        form = page.get("/.ztgate/login", headers={"Accept": "text/html"})
        assert form.status_code == 200
        csrf = re.search(r"name=csrf value='([^']+)'", form.text).group(1)
        refused = page.post("/.ztgate/login", data={"csrf": csrf, "next": "/", "username": "w4",
                                                    "password": users["w4"].password, "otp": users["w4"].code()})
        assert refused.status_code == 503 and "Sign-in temporarily unavailable" in refused.text
        assert refused.headers["retry-after"]

        # fail_mode open, applied live: ready again (the store still down), new sign-ins still refused
        cfg["store"] = {**cfg["store"], "fail_mode": "open"}
        gw.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        gw.proc.popen.send_signal(signal.SIGHUP)
        wait_until(lambda: all(r.status_code == 200 and r.json()["store"] == "unreachable"
                               and r.json()["fail_mode"] == "open" for r in _readyz_all(gw)),
                   timeout=20, what="/readyz to follow fail_mode open")
        assert httpx.post(f"{gw.url}/.ztgate/login", data={"csrf": csrf, "next": "/", "username": "w4",
                                                        "password": users["w4"].password}).status_code >= 400

        # a termination decided during the outage (open mode: the worker serves the session from its view)
        # stands at once on that worker (202, not yet persisted), and is written back and broadcast, and its
        # security event delivered from the local spool, when the store returns
        answer = gw.admin("POST", f"/sessions/{during_sid}/terminate")
        assert answer.status_code == 202, answer.text
        assert answer.json()["state"] == "terminated" and answer.json()["persisted"] is False
        # so does a step-up (before, it stood only in the deciding worker's memory and was lost on recovery)
        answer = gw.admin("POST", f"/sessions/{stepped_sid}/step-up")
        assert answer.status_code == 202, answer.text
        assert answer.json()["state"] == "step_up_required" and answer.json()["persisted"] is False
        time.sleep(1.0)

        own.start()  # back, and empty
        wait_until(lambda: all(r.status_code == 200 and r.json()["store"] == "ok" for r in _readyz_all(gw)),
                   timeout=30, what="recovery without a restart")
        wait_until(lambda: b'"terminated"' in (redis.Redis.from_url(own.url).get(f"ops:session:{during_sid}") or b""),
                   timeout=15, what="the outage's termination to be written back")
        time.sleep(1.5)  # keep hammering after the recovery too
    finally:
        revoked.stop.set()
        live.stop.set()
        revoked.join(10)
        live.join(10)
    print(f"\nterminated session during outage and recovery: {dict(revoked.statuses)}")
    print(f"live session during outage and recovery: {dict(live.statuses)}")
    assert sum(revoked.statuses.values()) > 20
    assert 200 not in revoked.statuses and set(revoked.statuses) <= {401, 403}
    for _ in range(10):
        assert _whoami(gw, during_cookie).status_code in (401, 403)
        # this Redis came back empty: the stepped-up session is gone, which is stricter than the step-up (the
        # write-back onto a store that kept its data: tests/gateway/test_outage_write_back.py)
        assert _whoami(gw, stepped_cookie).status_code == 401
    events_file = Path(cfg["events"]["sinks"][0]["path"])

    def outage_termination_reported():
        lines = events_file.read_text().splitlines() if events_file.exists() else []
        return any(during_sid in line and '"terminate"' in line for line in lines)
    wait_until(outage_termination_reported, timeout=20, what="the outage's termination event to be delivered")
    with httpx.Client(base_url=gw.url) as c:  # new sessions work again
        assert login(c, users["w5"]).status_code == 303
        assert c.get("/api/whoami", headers={"Accept": "application/json"}).status_code == 200


def test_supervisor_sigterm_drains_workers_and_exits_zero(env):
    gw = env["gw"]
    pids = [int(p) for p in worker_pids(gw, 30)]
    gw.proc.popen.send_signal(signal.SIGTERM)
    assert gw.proc.popen.wait(GRACE + 20) == 0, gw.proc.log()[-4000:]
    for pid in pids:
        wait_until(lambda: not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read(),
                   timeout=5, what=f"worker {pid} to be gone")
