"""Time from a termination decision to every connection closed, across two gateway processes
(`ztgate bench enforce [--json]`).

Setup, all real processes on loopback: a redis-server of the bench's own (free port, no persistence), the demo
upstream, and two `ztgate run` processes (A and B) sharing that Redis and one keys directory. For each of
`--terminations` sessions: sign in through A (password + TOTP), open `--sockets` WebSockets to the upstream's
/ws/echo through each of A and B (each echoes once, so it is live end to end), then POST the admin API's
terminate for the session to A and note, on the client side, when each socket sees its connection end.

Reported per process: the time from sending the terminate request (t0, an upper bound on the decision's time:
the decision is taken inside that request) to the last of the session's sockets on that process closing, and to
all sockets on both processes closed; p50/p99/max over the terminations. Also the admin call's own round trip,
and the gateways' own server-side view (`ztgate_termination_close_seconds`: decision time -> this process's
connections cut, from /metrics). Results go into the "## Enforcement" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator
from bench.docs import write_section

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADING = "## Enforcement"
ROOT = Path(__file__).resolve().parent.parent
GOAL_P99_MS = 100.0


# ---------------------------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # not up yet
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


@contextlib.contextmanager
def _process(name: str, args: list[str], workdir: Path) -> Iterator[subprocess.Popen]:
    log = open(workdir / f"{name}.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT), start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.close()
    try:
        yield proc
    except BaseException:
        sys.stderr.write(f"----- {name} log -----\n{(workdir / f'{name}.log').read_text(errors='replace')[-4000:]}\n")
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _connectable(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.3):
        return True


def _ready(url: str) -> bool:
    import httpx

    return httpx.get(url, timeout=1).status_code == 200


@contextlib.contextmanager
def deployment(workdir: Path, users: int) -> Iterator[dict[str, Any]]:
    """Redis, the demo upstream and gateways A and B; yields their URLs, the admin token and the users."""
    import yaml
    from argon2 import PasswordHasher

    from gateway.auth.directory import add_user

    users_file = workdir / "users.yaml"
    hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # the bench measures enforcement
    accounts = []
    for i in range(users):
        password = secrets.token_urlsafe(12)
        _, secret = add_user(users_file, f"bench{i}", password, [], f"bench{i}@example.test", hasher=hasher)
        accounts.append((f"bench{i}", password, secret))
    redis_port, port_a, port_b, upstream_port = (_free_port() for _ in range(4))
    token = secrets.token_urlsafe(24)
    python = sys.executable

    def config(instance: str, port: int) -> Path:
        doc = {
            "instance": instance, "state_dir": str(workdir / f"state-{instance}"),
            "listeners": [{"address": f"127.0.0.1:{port}"}],
            "routes": [{"name": "app", "upstream": f"http://127.0.0.1:{upstream_port}", "audience": "demo"}],
            "store": {"url": f"redis://127.0.0.1:{redis_port}/0", "prefix": "bench:"},
            "keys": {"dir": str(workdir / "keys")}, "admin": {"token": token},
            "identity": {"directory": str(users_file)},
            "telemetry": {"log_format": "text", "log_level": "warning"},
            "events": {"outbox": {"path": str(workdir / f"outbox-{instance}")}, "sinks": []},
        }
        path = workdir / f"gw-{instance}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    with contextlib.ExitStack() as stack:
        stack.enter_context(_process("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                               "--save", "", "--appendonly", "no"], workdir))
        _wait(lambda: _connectable(redis_port), 15, "redis-server")
        stack.enter_context(_process("upstream", [python, "-m", "gateway.cli.main", "demo-upstream", "--listen",
                                                  f"127.0.0.1:{upstream_port}", "--jwks-url",
                                                  f"http://127.0.0.1:{port_a}/.well-known/ztgate/jwks.json"],
                                     workdir))
        _wait(lambda: _connectable(upstream_port), 20, "the demo upstream")
        # A first: it creates the shared keys; B then loads them
        stack.enter_context(_process("gw-a", [python, "-m", "gateway.cli.main", "run", "--config",
                                              str(config("a", port_a))], workdir))
        _wait(lambda: _ready(f"http://127.0.0.1:{port_a}/readyz"), 40, "gateway A")
        stack.enter_context(_process("gw-b", [python, "-m", "gateway.cli.main", "run", "--config",
                                              str(config("b", port_b))], workdir))
        _wait(lambda: _ready(f"http://127.0.0.1:{port_b}/readyz"), 40, "gateway B")
        yield {"a": f"http://127.0.0.1:{port_a}", "b": f"http://127.0.0.1:{port_b}", "token": token,
               "users": accounts}


# ---------------------------------------------------------------------------------------------- measurement


async def _login(http: Any, base: str, username: str, password: str, secret: str) -> str:
    import pyotp

    page = await http.get(f"{base}/.ztgate/login", params={"next": "/"}, headers={"Accept": "text/html"})
    csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
    r = await http.post(f"{base}/.ztgate/login", data={"csrf": csrf, "next": "/", "username": username,
                                                       "password": password, "otp": pyotp.TOTP(secret).now()})
    cookie = r.cookies.get("ztgate_session") or http.cookies.get("ztgate_session")
    if r.status_code != 303 or not cookie:
        raise RuntimeError(f"sign-in of {username} failed: {r.status_code}")
    return cookie


async def _open_socket(url: str, cookie: str) -> Any:
    import websockets

    ws = await websockets.connect(url, additional_headers={"Cookie": f"ztgate_session={cookie}"}, open_timeout=10,
                                  ping_interval=None)
    await ws.send("ping")
    if await asyncio.wait_for(ws.recv(), 5) != "ping":
        raise RuntimeError("the echo WebSocket did not echo")
    return ws


async def _closed_at(ws: Any, timeout: float) -> float | None:
    import websockets

    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed:
        return time.perf_counter()
    except TimeoutError:
        await ws.close()
        return None


async def measure(dep: dict[str, Any], terminations: int, sockets: int) -> dict[str, Any]:
    import httpx

    a, b, token = dep["a"], dep["b"], dep["token"]
    samples: list[dict[str, float]] = []
    missed = 0
    async with httpx.AsyncClient(timeout=10) as admin:
        for i in range(terminations):
            username, password, secret = dep["users"][i]
            async with httpx.AsyncClient(timeout=10) as http:
                cookie = await _login(http, a, username, password, secret)
            sid = _sid(cookie)
            opened = await asyncio.gather(*[_open_socket(f"{base.replace('http', 'ws', 1)}/ws/echo", cookie)
                                            for base in (a, b) for _ in range(sockets)])
            waits = [asyncio.create_task(_closed_at(ws, 10.0)) for ws in opened]
            await asyncio.sleep(0.02)  # the sockets are idle, as a user's would be
            t0 = time.perf_counter()
            r = await admin.post(f"{a}/.ztgate/admin/api/sessions/{sid}/terminate",
                                 headers={"Authorization": f"Bearer {token}"})
            t_answer = time.perf_counter()
            if r.status_code != 200:
                raise RuntimeError(f"terminate failed: {r.status_code} {r.text[:200]}")
            closed = await asyncio.gather(*waits)
            if any(c is None for c in closed):
                missed += sum(c is None for c in closed)
                continue
            on_a, on_b = closed[:sockets], closed[sockets:]
            samples.append({"a_ms": 1000 * (max(on_a) - t0), "b_ms": 1000 * (max(on_b) - t0),
                            "all_ms": 1000 * (max(closed) - t0), "first_ms": 1000 * (min(closed) - t0),
                            "admin_call_ms": 1000 * (t_answer - t0)})
            await asyncio.sleep(0.05)
        server = {name: await _server_view(admin, base) for name, base in (("a", a), ("b", b))}
    return {"samples": samples, "missed_sockets": missed, "server": server}


def _sid(cookie: str) -> str:
    import jwt

    return jwt.decode(cookie, options={"verify_signature": False})["sid"]


async def _server_view(http: Any, base: str) -> dict[str, float]:
    """Mean decision -> connections-cut time as the gateway process itself measured it."""
    text = (await http.get(f"{base}/metrics")).text
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("ztgate_termination_close_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("ztgate_termination_close_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
    return {"count": count, "mean_ms": round(1000 * total / count, 2) if count else None}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = q / 100 * (len(ordered) - 1)
    lo, hi = int(rank), min(int(rank) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    samples = raw["samples"]
    stats = {}
    for key in ("a_ms", "b_ms", "all_ms", "first_ms", "admin_call_ms"):
        values = [s[key] for s in samples]
        stats[key] = {"p50": round(_pct(values, 50), 2), "p99": round(_pct(values, 99), 2),
                      "max": round(max(values), 2) if values else None,
                      "mean": round(statistics.fmean(values), 2) if values else None}
    return {"terminations": len(samples), "missed_sockets": raw["missed_sockets"], "latency": stats,
            "server_view": raw["server"], "goal_p99_ms": GOAL_P99_MS,
            "goal_met": bool(samples) and stats["all_ms"]["p99"] < GOAL_P99_MS}


def render(result: dict[str, Any]) -> str:
    lat = result["latency"]
    rows = [("last socket closed on A (the deciding process)", lat["a_ms"]),
            ("last socket closed on B (via the Redis broadcast)", lat["b_ms"]),
            ("every socket closed, both processes", lat["all_ms"]),
            ("first socket closed", lat["first_ms"]),
            ("the admin terminate call's round trip", lat["admin_call_ms"])]
    server = result["server_view"]
    lines = [
        HEADING, "",
        f"`ztgate bench enforce` ({result['when']}, {result['machine']}): two `ztgate run` processes sharing a "
        f"local redis-server and a keys directory, the demo upstream behind them. {result['terminations']} "
        f"sessions, each signed in through A, each holding {result['sockets']} WebSockets (/ws/echo) through A "
        f"and {result['sockets']} through B; each terminated by the admin API on A. Times are measured by the "
        "client from sending the terminate request (an upper bound on the decision's time) to the socket seeing "
        "its connection end.", "",
        "| ms | p50 | p99 | max | mean |", "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, s in rows:
        lines.append(f"| {label} | {s['p50']} | {s['p99']} | {s['max']} | {s['mean']} |")
    lines += [
        "",
        f"Goal: every connection closed within {GOAL_P99_MS:.0f} ms at p99: "
        f"**{'met' if result['goal_met'] else 'NOT met'}**"
        + (f" ({result['missed_sockets']} socket(s) not closed within 10 s)" if result["missed_sockets"] else "")
        + ".",
        f"The gateways' own view (decision recorded -> this process's connections cut, "
        f"`ztgate_termination_close_seconds`): A mean {server['a']['mean_ms']} ms over "
        f"{int(server['a']['count'])}, B mean {server['b']['mean_ms']} ms over {int(server['b']['count'])}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ztgate bench enforce", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--terminations", type=int, default=50, help="sessions to terminate (default 50)")
    parser.add_argument("--sockets", type=int, default=2, help="WebSockets per session per process (default 2)")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.terminations < 1 or args.sockets < 1:
        parser.error("--terminations and --sockets must be >= 1")
    if shutil.which("redis-server") is None:
        print("redis-server is not on PATH: the bench starts its own", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ztgate-bench-enforce-") as tmp:
        with deployment(Path(tmp), args.terminations) as dep:
            raw = asyncio.run(measure(dep, args.terminations, args.sockets))
    result = summarize(raw)
    result.update({"sockets": args.sockets, "when": time.strftime("%Y-%m-%d"),
                   "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"})
    if not args.no_write:
        write_section(render(result))
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
