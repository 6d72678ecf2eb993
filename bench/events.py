"""`ztgate bench events`: outbox append rate, webhook sink delivery rate, decision-to-delivery latency.

Runs a real webhook receiver process (tests/secevents/receiver.py is not used: this one is a minimal uvicorn-free
asyncio HTTP server in a subprocess) on loopback and a file outbox in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

RECEIVER = textwrap.dedent('''
    import asyncio, json, sys, time
    port, log = int(sys.argv[1]), sys.argv[2]
    out = open(log, "a", buffering=1)
    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\\r\\n\\r\\n")
                length, delivery = 0, ""
                for line in head.split(b"\\r\\n"):
                    k, _, v = line.partition(b":")
                    if k.lower() == b"content-length": length = int(v)
                    if k.lower() == b"x-ztgate-delivery": delivery = v.strip().decode()
                body = await reader.readexactly(length)
                t = json.loads(body)["time"]
                out.write(f"{delivery} {time.time()*1000 - t:.3f}\\n")
                writer.write(b"HTTP/1.1 204 No Content\\r\\nContent-Length: 0\\r\\n\\r\\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        print("ready", flush=True)
        await server.serve_forever()
    asyncio.run(main())
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def _run(n: int, rate: float) -> dict:
    from gateway.secevents import EventsConfig, SecurityEvents
    from tests.secevents.conftest import make_assessment, make_decision, make_session

    tmp = Path(tempfile.mkdtemp(prefix="ztgate-bench-events-"))
    port, log = _free_port(), tmp / "received.txt"
    script = tmp / "receiver.py"
    script.write_text(RECEIVER)
    proc = subprocess.Popen([sys.executable, str(script), str(port), str(log)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    decision, session, assessment = make_decision(), make_session(), make_assessment()
    results: dict = {}
    try:
        # 1. outbox alone (no sinks): concurrent emits share fsyncs (group commit)
        cfg = EventsConfig.from_dict({"outbox": {"path": str(tmp / "outbox-only")}})
        ev = SecurityEvents(cfg, "bench", None)
        t0 = time.perf_counter()
        await asyncio.gather(*(ev.emit_decision(decision, session, assessment, "http://erp:8080") for _ in range(n)))
        dt = time.perf_counter() - t0
        t1 = time.perf_counter()
        for _ in range(min(n, 500)):
            await ev.emit_decision(decision, session, assessment, "http://erp:8080")
        seq_dt = time.perf_counter() - t1
        await ev.stop()
        results["outbox_concurrent_events_per_s"] = round(n / dt, 1)
        results["outbox_sequential_events_per_s"] = round(min(n, 500) / seq_dt, 1)

        # 2. webhook sink throughput: a backlog of n events drained by one sink
        cfg = EventsConfig.from_dict({"outbox": {"path": str(tmp / "outbox-hook")}, "sinks": [
            {"type": "webhook", "name": "bench", "url": f"http://127.0.0.1:{port}/hook",
             "secret": "bench-secret-0123456789"}]})
        ev = SecurityEvents(cfg, "bench", None)
        await asyncio.gather(*(ev.emit_decision(decision, session, assessment, "http://erp:8080") for _ in range(n)))
        t0 = time.perf_counter()
        await ev.start()
        while ev.status()["sinks"][0]["backlog"] > 0:
            await asyncio.sleep(0.01)
        dt = time.perf_counter() - t0
        results["webhook_drain_events_per_s"] = round(n / dt, 1)

        # 3. decision-to-delivery latency at a steady rate with a healthy receiver
        log.write_text("")
        m = min(n, 1000)
        for _ in range(m):
            await ev.emit_decision(decision, session, assessment, "http://erp:8080")
            await asyncio.sleep(1 / rate)
        while ev.status()["sinks"][0]["backlog"] > 0:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        await ev.stop()
        lat = [float(l.split()[1]) for l in log.read_text().splitlines() if l.strip()]
        results.update(latency_events=len(lat), latency_rate_per_s=rate,
                       latency_p50_ms=round(statistics.median(lat), 2), latency_p99_ms=round(_pct(lat, 99), 2),
                       latency_max_ms=round(max(lat), 2))
    finally:
        proc.terminate()
        proc.wait()
    results.update(events=n, cpu_count=os.cpu_count(), python=sys.version.split()[0])
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ztgate bench events")
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--rate", type=float, default=200.0, help="events/s for the latency run")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = asyncio.run(_run(args.events, args.rate))
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        for k, v in r.items():
            print(f"{k:34} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
