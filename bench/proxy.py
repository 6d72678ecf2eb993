"""`ztgate bench proxy [--json] [--seconds S] [--concurrency 1,10,50]`: ztgate against bare mitmproxy.

One run, one process tree: a small fast upstream ("hello", raw asyncio HTTP/1.1 with keep-alive), bare mitmproxy in
reverse mode with no addon of ours (bench/bare_mitmproxy.py), and a real `ztgate run` with a signed-in session, both in front of the same
upstream. A bounded asyncio load generator (keep-alive connections, loopback only, limited in time and count) loads
each at each concurrency; targets alternate in short rounds so that drift on the shared machine affects both alike.
Writes the table into the "## Proxy throughput" section of docs/benchmarks.md (unless --no-write).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from bench.docs import publish

SECTION = "## Proxy throughput"
ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
MAX_REQUESTS_PER_ROUND = 200_000
ROUNDS = 3  # per (target, concurrency): short alternating rounds

HELLO_SERVER = r"""
import asyncio, sys
BODY = b"hello\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(BODY)) + BODY

class Hello(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            self.buffer = self.buffer[length:]
            self.transport.write(RESPONSE)

async def main(port):
    server = await asyncio.get_running_loop().create_server(Hello, "127.0.0.1", port)
    async with server:
        await server.serve_forever()

asyncio.run(main(int(sys.argv[1])))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(port: int, path: str = "/", timeout: float = 30.0, ok=(200,)) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code in ok:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port}{path} within {timeout:.0f} s")


@contextlib.contextmanager
def _process(args: list[str], log: Path, env: dict | None = None) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=str(ROOT),
                                env={**os.environ, **(env or {})}, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _ztgate_config(tmp: Path, port: int, upstream_port: int, users: Path) -> Path:
    import yaml

    doc = {
        "instance": "bench",
        "state_dir": str(tmp / "state"),
        "listeners": [{"address": f"127.0.0.1:{port}"}],
        "routes": [{"name": "app", "upstream": f"http://127.0.0.1:{upstream_port}", "audience": "bench"}],
        "identity": {"directory": str(users)},
        "store": {"url": "memory://"},
        "keys": {"dir": str(tmp / "keys")},
        "telemetry": {"log_format": "text", "log_level": "warning"},
        "events": {"outbox": {"path": str(tmp / "outbox")}, "sinks": [{"type": "jsonl", "path": str(tmp / "ev.jsonl")}]},
    }
    path = tmp / "ztgate.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _sign_in(port: int, username: str, password: str, totp_secret: str) -> str:
    """A browser's sign-in through the real login form; returns the session cookie value."""
    import httpx
    import pyotp

    # the same User-Agent as the load: one client, as a browser would be (another would be judged a replay)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, headers={"User-Agent": "ztgate-bench"}) as c:
        page = c.get("/.ztgate/login", params={"next": "/"}, headers={"Accept": "text/html"})
        csrf = re.search(r"name=csrf value='([^']+)'", page.text).group(1)
        r = c.post("/.ztgate/login", data={"csrf": csrf, "next": "/", "username": username, "password": password,
                                           "otp": pyotp.TOTP(totp_secret).now()})
        if r.status_code != 303 or not c.cookies.get("ztgate_session"):
            raise RuntimeError(f"bench sign-in failed: {r.status_code} {r.text[:200]}")
        return c.cookies.get("ztgate_session")


# ---------------------------------------------------------------------------------------------- load generator


async def _one_connection(port: int, request: bytes, deadline: float, budget: list[int],
                          latencies: list[float], errors: list[str]) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as exc:
        errors.append(f"connect: {exc}")
        return
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            match = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
            if match is None:
                errors.append("response without content-length")
                return
            await reader.readexactly(int(match.group(1)))
            if status != b"200":
                errors.append(f"status {status.decode()}")
                continue
            latencies.append(time.perf_counter() - started)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def load(port: int, concurrency: int, seconds: float, cookie: str | None = None) -> dict[str, Any]:
    """`concurrency` keep-alive connections, each sending one request at a time, for `seconds`."""
    headers = "GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\nUser-Agent: ztgate-bench\r\n"
    if cookie:
        headers += f"Cookie: ztgate_session={cookie}\r\n"
    request = (headers + "\r\n").encode()
    latencies: list[float] = []
    errors: list[str] = []
    budget = [MAX_REQUESTS_PER_ROUND]
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_one_connection(port, request, deadline, budget, latencies, errors)
                           for _ in range(concurrency)))
    return {"latencies": latencies, "elapsed": time.perf_counter() - started, "errors": errors}


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far: what the proxy spent, whatever else the shared
    machine was doing meanwhile. Linux (/proc), like the rest of the deployment."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError as exc:
        raise RuntimeError(f"cannot read the CPU time of process {pid} (/proc is Linux-only): {exc}") from None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime in clock ticks


def _summarise(target: str, concurrency: int, rounds: list[dict]) -> dict[str, Any]:
    latencies = sorted(x for r in rounds for x in r["latencies"])
    elapsed = sum(r["elapsed"] for r in rounds)
    n = len(latencies)

    def pct(p: float) -> float:
        return round(1000 * latencies[min(n - 1, int(p * n))], 3) if n else float("nan")

    errors = [e for r in rounds for e in r["errors"]]
    cpu = sum(r["cpu_seconds"] for r in rounds)
    return {"target": target, "concurrency": concurrency, "requests": n, "rps": round(n / elapsed, 1) if elapsed else 0,
            "cpu_ms_per_request": round(1000 * cpu / n, 3) if n else float("nan"),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "mean_ms": round(1000 * statistics.fmean(latencies), 3) if n else
            float("nan"), "errors": len(errors), "error_examples": sorted(set(errors))[:3]}


def run(seconds: float, concurrencies: list[int]) -> dict[str, Any]:
    from gateway.auth.directory import add_user

    load_before = round(os.getloadavg()[0], 2)  # other work on the machine: absolute numbers depend on it
    tmp = Path(tempfile.mkdtemp(prefix="ztgate-bench-proxy-"))
    up_port, mitm_port, zt_port = _free_port(), _free_port(), _free_port()
    password = secrets.token_urlsafe(12)
    users = tmp / "users.yaml"
    _, totp_secret = add_user(users, "bench", password, [], "bench@example.test", None, None)
    try:
        with _process([sys.executable, "-c", HELLO_SERVER, str(up_port)], tmp / "upstream.log"), \
                _process([sys.executable, "-m", "bench.bare_mitmproxy", str(up_port), str(mitm_port),
                          str(tmp / "mitmproxy")], tmp / "mitmdump.log") as mitm, \
                _process([sys.executable, "-m", "gateway.cli.main", "run", "--config",
                          str(_ztgate_config(tmp, zt_port, up_port, users))], tmp / "ztgate.log") as ztgate:
            _wait_http(up_port, "/hello")
            _wait_http(mitm_port, "/hello")
            try:
                _wait_http(zt_port, "/readyz")
            except RuntimeError:
                raise RuntimeError("ztgate did not start:\n" + (tmp / "ztgate.log").read_text()[-3000:]) from None
            cookie = _sign_in(zt_port, "bench", password, totp_secret)
            targets = {"mitmproxy": (mitm_port, None, mitm.pid), "ztgate": (zt_port, cookie, ztgate.pid)}
            # warm both (imports, first connections, caches)
            for port, c, _ in targets.values():
                asyncio.run(load(port, 4, 0.5, c))
            results = []
            for concurrency in concurrencies:
                rounds: dict[str, list[dict]] = {name: [] for name in targets}
                for i in range(ROUNDS):
                    order = list(targets) if i % 2 == 0 else list(reversed(targets))
                    for name in order:
                        port, c, pid = targets[name]
                        cpu_before = _cpu_seconds(pid)
                        result = asyncio.run(load(port, concurrency, seconds / ROUNDS, c))
                        result["cpu_seconds"] = _cpu_seconds(pid) - cpu_before
                        rounds[name].append(result)
                for name in targets:
                    results.append(_summarise(name, concurrency, rounds[name]))
            if ztgate.poll() is not None:
                raise RuntimeError("ztgate exited during the benchmark")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ratios = []
    for concurrency in concurrencies:
        m = next(r for r in results if r["target"] == "mitmproxy" and r["concurrency"] == concurrency)
        z = next(r for r in results if r["target"] == "ztgate" and r["concurrency"] == concurrency)
        ratios.append({"concurrency": concurrency,
                       "rps_ratio": round(z["rps"] / m["rps"], 3) if m["rps"] else None,
                       "p50_ratio": round(z["p50_ms"] / m["p50_ms"], 3) if m["p50_ms"] else None,
                       "p99_ratio": round(z["p99_ms"] / m["p99_ms"], 3) if m["p99_ms"] else None,
                       "cpu_per_request_ratio": round(z["cpu_ms_per_request"] / m["cpu_ms_per_request"], 3)
                       if m["cpu_ms_per_request"] else None})
    import mitmproxy.version

    return {"results": results, "ratios": ratios, "seconds_per_target": seconds, "load_average_1m": load_before,
            "mitmproxy": mitmproxy.version.VERSION, "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)"}


def render_section(result: dict) -> str:
    lines = [
        SECTION,
        "",
        f"`ztgate bench proxy` (Python {result['python']}, mitmproxy {result['mitmproxy']}, {result['machine']}; "
        "load generator on the same machine): GET /hello against a tiny keep-alive upstream, through bare mitmproxy "
        "(`python -m bench.bare_mitmproxy`: mitmproxy embedded with the same core addons and options as ztgate, and "
        "no addon of ours) and through `ztgate run` with a signed-in session (cookie verified, session looked up, "
        "identity assertion signed and attached, forwarded headers set, telemetry on), "
        f"{result['seconds_per_target']:.0f} s per target and concurrency in alternating rounds.",
        "",
        "| concurrency | target | req/s | p50 (ms) | p99 (ms) | CPU ms/request | errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["results"]:
        lines.append(f"| {r['concurrency']} | {r['target']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                     f"| {r['cpu_ms_per_request']:.3f} | {r['errors']} |")
    lines += ["", "| concurrency | ztgate/mitmproxy req/s | ztgate/mitmproxy p50 | ztgate/mitmproxy p99 "
                  "| ztgate/mitmproxy CPU per request |",
              "| --- | --- | --- | --- | --- |"]
    for q in result["ratios"]:
        lines.append(f"| {q['concurrency']} | {q['rps_ratio']:.2f}x | {q['p50_ratio']:.2f}x | {q['p99_ratio']:.2f}x "
                     f"| {q['cpu_per_request_ratio']:.2f}x |")
    lines += ["", "Goal: ztgate >= 0.85x bare mitmproxy's throughput and <= 1.3x its p50 latency. Run-to-run noise on "
                  "this shared machine is about +-20% in absolute numbers, far more when other work runs (1-minute "
                  f"load average at the start of this run: {result.get('load_average_1m', '?')} on "
                  f"{os.cpu_count()} cores); compare the ratios of one run. CPU per request (the proxy process's user + "
                  "system time over the requests it served) moves least with the machine's other work: it is the "
                  "steadiest of these ratios. Per-hook costs: `python -m bench.proxy_hooks` (section Proxy hooks). "
                  "Rerun with `ztgate bench proxy --json`.",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ztgate bench proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--seconds", type=float, default=6.0, help="load time per target and concurrency")
    parser.add_argument("--concurrency", default="1,10,50", help="comma-separated concurrency levels")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    try:
        concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--concurrency must be comma-separated integers, got {args.concurrency!r}")
    if not concurrencies or any(not 1 <= c <= 500 for c in concurrencies):
        parser.error("--concurrency levels must be between 1 and 500")
    if not 0.3 <= args.seconds <= 120:
        parser.error("--seconds must be between 0.3 and 120")
    try:
        result = run(args.seconds, concurrencies)
    except RuntimeError as exc:
        print(f"ztgate bench proxy: {exc}", file=sys.stderr)
        return 1
    return publish(result, render_section, as_json=args.json, write=not args.no_write, path=DOC)


if __name__ == "__main__":
    sys.exit(main())
