"""`ztgate bench workers [--json] [--seconds S] [--concurrency C]`: requests/s with 1 and with 2 worker processes.

One process tree on loopback: a redis-server of its own (free port, no persistence), a small fast upstream (raw
asyncio HTTP/1.1 "hello"), and `ztgate run` in front of it, first as one process and then with `--workers 2`
(SO_REUSEPORT; the kernel spreads the load generator's connections over the workers), both with the same Redis
store and a session signed in through the real login form. The load generator (bench.proxy's: keep-alive
connections, one request in flight each, bounded in time and count) runs in this process, on the same two cores.
Reports requests/s, latency percentiles and the CPU seconds each gateway process used while loaded, and writes the
table into the "## Workers" section of docs/benchmarks.md (unless --no-write).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.proxy import HELLO_SERVER, _free_port, _process, _sign_in, _summarise, _wait_http, load
from bench.docs import publish

SECTION = "## Workers"
ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _config(tmp: Path, port: int, upstream_port: int, users: Path, redis_url: str) -> Path:
    import yaml

    doc = {
        "instance": "bench-workers",
        "state_dir": str(tmp / "state"),
        "listeners": [{"address": f"127.0.0.1:{port}"}],
        "routes": [{"name": "app", "upstream": f"http://127.0.0.1:{upstream_port}", "audience": "bench"}],
        "identity": {"directory": str(users)},
        "store": {"url": redis_url, "prefix": f"bench-{secrets.token_hex(4)}:"},
        "keys": {"dir": str(tmp / "keys")},
        "shutdown_grace": 5,
        "telemetry": {"log_format": "text", "log_level": "warning"},
        "events": {"outbox": {"path": str(tmp / "outbox")}, "sinks": [{"type": "jsonl", "path": str(tmp / "ev.jsonl")}]},
    }
    path = tmp / f"ztgate-{port}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _measure(tmp: Path, workers: int, upstream_port: int, users: Path, redis_url: str, user: tuple[str, str, str],
             seconds: float, concurrency: int) -> dict[str, Any]:
    port = _free_port()
    config = _config(tmp, port, upstream_port, users, redis_url)
    args = [sys.executable, "-m", "gateway.cli.main", "run", "--config", str(config)]
    if workers > 1:
        args += ["--workers", str(workers)]
    with _process(args, tmp / f"ztgate-{workers}w.log") as proc:
        _wait_http(port, "/readyz", timeout=90)
        time.sleep(1.0 if workers == 1 else 3.0)  # every worker up: the supervisor starts them together
        cookie = _sign_in(port, *user)
        asyncio.run(load(port, concurrency, min(1.0, seconds), cookie))  # warm-up, not counted
        gateways = _children(proc.pid) if workers > 1 else [proc.pid]
        cpu_before = {pid: _cpu_seconds(pid) for pid in gateways}
        generator_before = time.process_time()
        result = asyncio.run(load(port, concurrency, seconds, cookie))
        generator_cpu = time.process_time() - generator_before
        cpu = {pid: round(_cpu_seconds(pid) - cpu_before[pid], 2) for pid in gateways}
        proc.terminate()
        proc.wait(30)
    summary = _summarise(f"{workers} worker{'s' if workers > 1 else ''}", concurrency, [result])
    total_cpu = sum(cpu.values())
    summary.update(workers=workers, gateway_cpu_seconds=sorted(cpu.values(), reverse=True),
                   gateway_cpu_ms_per_request=round(1000 * total_cpu / summary["requests"], 2)
                   if summary["requests"] else None,
                   gateway_cores_used=round(total_cpu / result["elapsed"], 2),
                   generator_cpu_seconds=round(generator_cpu, 2), seconds=round(result["elapsed"], 2))
    return summary


def run(seconds: float, concurrency: int) -> dict[str, Any]:
    from gateway.auth.directory import add_user

    if not shutil.which("redis-server"):
        raise RuntimeError("redis-server not found on PATH (the workers share a Redis store)")
    tmp = Path(tempfile.mkdtemp(prefix="ztgate-bench-workers-"))
    try:
        users = tmp / "users.yaml"
        password = secrets.token_urlsafe(16)
        # one user per run: TOTP codes are single-use, and both runs sign in within the same 30 s step
        secrets_by_user = {name: add_user(users, name, password, [], f"{name}@example.test", None, None)[1]
                           for name in ("bench1", "bench2")}
        redis_port, upstream_port = _free_port(), _free_port()
        with _process(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                       "--appendonly", "no"], tmp / "redis.log"), \
                _process([sys.executable, "-c", HELLO_SERVER, str(upstream_port)], tmp / "hello.log"):
            _wait_http(upstream_port)
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            rows = []
            for workers in (1, 2):
                user = f"bench{workers}"
                rows.append(_measure(tmp, workers, upstream_port, users, redis_url,
                                     (user, password, secrets_by_user[user]), seconds, concurrency))
        ratio = rows[1]["rps"] / rows[0]["rps"] if rows[0]["rps"] else float("nan")
        return {"cpus": os.cpu_count(), "python": platform.python_version(), "seconds": seconds,
                "load_average_1m": round(os.getloadavg()[0], 1),
                "concurrency": concurrency, "rows": rows, "speedup": round(ratio, 2)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def render_section(result: dict) -> str:
    lines = [SECTION, "",
             f"`ztgate bench workers`: {result['concurrency']} keep-alive connections for {result['seconds']:.0f} s "
             f"against one `ztgate run` process and against `--workers 2` (SO_REUSEPORT), a signed-in session, a fast "
             f"local upstream, Redis store; {result['cpus']} cores shared by the gateway processes and the Python "
             f"load generator (Python {result['python']}); 1-minute load average at the end of the run: "
             f"{result['load_average_1m']} (other work on the machine takes its share).", "",
             "| gateway | requests/s | p50 ms | p99 ms | errors | CPU s per gateway process | cores used | "
             "CPU ms per request |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(f"| {row['target']} | {row['rps']:,.0f} | {row['p50_ms']} | {row['p99_ms']} | {row['errors']} | "
                     f"{' + '.join(str(c) for c in row['gateway_cpu_seconds'])} | {row['gateway_cores_used']} | "
                     f"{row['gateway_cpu_ms_per_request']} |")
    lines += ["", f"2 workers / 1 worker, requests/s: **{result['speedup']}x**. Read it with the `cores used` column: "
              "a worker is one mitmproxy event loop and can use at most one core, so requests/s scale with the cores "
              "the workers actually get. When the machine is busy (a load average well above its core count), the "
              "scheduler gives the gateway's processes about the same total share whether there are one or two of "
              "them, and the ratio stays near (or below) 1: what a second worker buys is only measurable where a "
              "second core is free. The CPU cost per request is the number that carries over: expected "
              "throughput is about (free cores) / (CPU ms per request). Rerun with `ztgate bench workers --json` "
              "on a quiet machine.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ztgate bench workers", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--seconds", type=float, default=8.0, help="load time per configuration (1-60)")
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive connections (1-256)")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    if not 1 <= args.seconds <= 60:
        parser.error("--seconds must be between 1 and 60")
    if not 1 <= args.concurrency <= 256:
        parser.error("--concurrency must be between 1 and 256")
    try:
        result = run(args.seconds, args.concurrency)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"ztgate bench workers: {exc}", file=sys.stderr)
        return 1
    return publish(result, render_section, as_json=args.json, write=not args.no_write, path=DOC)


if __name__ == "__main__":
    sys.exit(main())
