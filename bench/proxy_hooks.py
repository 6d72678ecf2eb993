"""`python -m bench.proxy_hooks [--json] [--n N] [--rounds R] [--no-write]`: CPU per mitmproxy hook of one proxied
GET, through mitmproxy's real AddonManager, for bare mitmproxy, mitmproxy plus one addon with empty hooks, and
ztgate (its real addon, a signed-in session in a memory store, the shipped policies).

Where `ztgate bench proxy` measures the whole proxy (sockets, HTTP parsing, the event loop) and is noisy on a
shared machine, this isolates what ztgate adds per request and splits it into the cost of being one more addon
in mitmproxy's chain (the empty-addon column), what ztgate's addon manager saves (bare mitmproxy with
gateway/proxy/dispatch.py) and the work of ztgate's hooks. Thread CPU time per hook call, median
over N flows; each variant runs in its own process (mitmproxy's `ctx` is process-global), in alternating rounds.
Writes the "## Proxy hooks" section of docs/benchmarks.md unless --no-write.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.docs import publish

SECTION = "## Proxy hooks"
ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
VARIANTS = ("mitmproxy", "mitmproxy+empty addon", "mitmproxy+HookDispatch", "ztgate")
HOOKS = ("requestheaders", "request", "responseheaders", "response")


class _EmptyHooks:
    """An addon that defines the four HTTP hooks and does nothing in them."""

    def requestheaders(self, flow: Any) -> None:
        pass

    def request(self, flow: Any) -> None:
        pass

    def responseheaders(self, flow: Any) -> None:
        pass

    def response(self, flow: Any) -> None:
        pass


def _flow(cookie: str | None) -> Any:
    """A flow as mitmproxy builds it for `GET /hello` from the load generator of `ztgate bench proxy`."""
    from mitmproxy import connection, http

    fields = [(b"Host", b"127.0.0.1"), (b"Accept", b"*/*"), (b"User-Agent", b"ztgate-bench")]
    if cookie:
        fields.append((b"Cookie", f"ztgate_session={cookie}".encode()))
    now = time.time()
    req = http.Request("127.0.0.1", 8080, b"GET", b"http", b"", b"/hello", b"HTTP/1.1", http.Headers(fields), b"",
                       None, now, now)
    client = connection.Client(peername=("127.0.0.1", 40000), sockname=("127.0.0.1", 8080), timestamp_start=now)
    flow = http.HTTPFlow(client, connection.Server(address=("127.0.0.1", 9)), live=True)
    flow.request = req
    return flow


def _response() -> Any:
    from mitmproxy import http

    now = time.time()
    return http.Response(b"HTTP/1.1", 200, b"OK", http.Headers([(b"Content-Type", b"text/plain"),
                                                                 (b"Content-Length", b"6")]), b"hello\n", None, now,
                         now)


async def _child(variant: str, n: int) -> dict[str, float]:
    from mitmproxy import hooks, options
    from mitmproxy.addons import core, errorcheck, next_layer, proxyserver, tlsconfig
    from mitmproxy.master import Master
    from mitmproxy.proxy.layers.http import (HttpRequestHeadersHook, HttpRequestHook, HttpResponseHeadersHook,
                                             HttpResponseHook)

    tmp = Path(tempfile.mkdtemp(prefix="ztgate-bench-hooks-"))
    cookie = None
    if variant == "ztgate":
        from gateway.config import loads
        from gateway.proxy.master import build_master
        from gateway.runtime import Gateway
        from gateway.sessions import Identity

        config = loads(f"""
instance: bench
state_dir: {tmp / "state"}
listeners: [{{address: "127.0.0.1:18999"}}]
routes: [{{name: app, upstream: "http://127.0.0.1:9", audience: bench}}]
store: {{url: "memory://"}}
keys: {{dir: {tmp / "keys"}}}
""", file="bench.yaml", env={})
        gw = Gateway(config)
        await gw.store.start()
        await gw.sessions.start()
        gw.policies.load_initial()
        gw.control_port = 9
        master = build_master(gw, gw.lifecycle)
        record = await gw.sessions.create(Identity(sub="bench"), client_ip="127.0.0.1", user_agent="ztgate-bench",
                                          route="app")
        cookie = gw.issue_session_token(record)
    else:
        opts = options.Options(confdir=str(tmp / "mitmproxy"))
        master = Master(opts)
        if variant == "mitmproxy+HookDispatch":
            from gateway.proxy.dispatch import HookDispatch

            master.addons = HookDispatch(master)  # ztgate's dispatch (gateway/proxy/dispatch.py), no ztgate addon
        master.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig(),
                          errorcheck.ErrorCheck())
        if variant == "mitmproxy+empty addon":
            master.addons.add(_EmptyHooks())
        opts.update(mode=["reverse:http://127.0.0.1:9@127.0.0.1:0"], keep_host_header=True,
                    stream_large_bodies="1m", connection_strategy="lazy", websocket=True, http2=True)
    master.addons.trigger(hooks.ConfigureHook(set(master.options.keys())))  # what master.run() does first
    sequence = ((HOOKS[0], HttpRequestHeadersHook), (HOOKS[1], HttpRequestHook), (HOOKS[2], HttpResponseHeadersHook),
                (HOOKS[3], HttpResponseHook))
    times: dict[str, list[int]] = {name: [] for name in HOOKS}
    warmup = 200
    for i in range(n + warmup):
        flow = _flow(cookie)
        response = _response()
        await asyncio.sleep(0)  # background work the hooks started (a session's first evaluation) runs here
        for name, hook in sequence:
            if name == "responseheaders":
                flow.response = response
            started = time.thread_time_ns()
            await master.addons.handle_lifecycle(hook(flow))
            took = time.thread_time_ns() - started
            if i >= warmup:
                times[name].append(took)
        if i == 0 and variant == "ztgate" and "x-ztgate-assertion" not in flow.request.headers:
            raise RuntimeError(f"ztgate did not forward the bench request: {flow.response and flow.response.status_code}")
    return {name: statistics.median(ts) / 1000 for name, ts in times.items()}


def run(n: int, rounds: int) -> dict[str, Any]:
    load_before = round(os.getloadavg()[0], 2)
    samples: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for r in range(rounds):
        order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
        for variant in order:
            out = subprocess.run([sys.executable, "-m", "bench.proxy_hooks", "--child", variant, "--n", str(n)],
                                 cwd=str(ROOT), capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
            samples[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    table = {v: {h: round(statistics.median(s[h] for s in samples[v]), 1) for h in HOOKS} for v in VARIANTS}
    import mitmproxy.version
    import platform

    return {"us_per_hook": table, "us_per_request": {v: round(sum(table[v].values()), 1) for v in VARIANTS},
            "flows": n, "rounds": rounds, "load_average_1m": load_before, "mitmproxy": mitmproxy.version.VERSION,
            "python": platform.python_version(), "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)"}


def render_section(result: dict) -> str:
    t, total = result["us_per_hook"], result["us_per_request"]
    bare, empty, dispatch, zt = VARIANTS
    lines = [
        SECTION,
        "",
        f"`python -m bench.proxy_hooks` (Python {result['python']}, mitmproxy {result['mitmproxy']}, "
        f"{result['machine']}; 1-minute load average at the start: {result['load_average_1m']}): thread CPU time "
        "of each HTTP hook of one proxied GET through mitmproxy's AddonManager (every addon of the chain, and the "
        "`update` hook mitmproxy sends after each), median over "
        f"{result['flows']} flows, median of {result['rounds']} alternating runs, in microseconds. The empty-addon "
        "column is the price of being one more addon in mitmproxy's chain; the HookDispatch column is bare "
        "mitmproxy with ztgate's addon manager (gateway/proxy/dispatch.py: each hook goes only to the addons that "
        "implement it), so ztgate minus that column is the work of ztgate's hooks (session check, identity "
        "assertion, header rewrite, sensor and telemetry bookkeeping) and mitmproxy minus it is what the dispatch "
        "saves.",
        "",
        "| hook | mitmproxy | + empty addon | mitmproxy + HookDispatch | ztgate | ztgate - mitmproxy |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for h in HOOKS:
        lines.append(f"| {h} | {t[bare][h]:.1f} | {t[empty][h]:.1f} | {t[dispatch][h]:.1f} | {t[zt][h]:.1f} | "
                     f"{t[zt][h] - t[bare][h]:+.1f} |")
    lines.append(f"| per request | {total[bare]:.1f} | {total[empty]:.1f} | {total[dispatch]:.1f} | {total[zt]:.1f} | "
                 f"{total[zt] - total[bare]:+.1f} |")
    lines += ["", "Absolute numbers move with the machine's load (thread CPU time still grows when the other core is "
                  "busy); compare the columns of one run.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy_hooks", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--n", type=int, default=5000, help="flows per run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per variant")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 100 <= args.n <= 200_000:
        parser.error("--n must be between 100 and 200000")
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be between 1 and 20")
    if args.child:
        print(json.dumps(asyncio.run(_child(args.child, args.n))))
        return 0
    try:
        result = run(args.n, args.rounds)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"bench proxy_hooks: {exc}", file=sys.stderr)
        return 1
    return publish(result, render_section, as_json=args.json, write=not args.no_write, path=DOC)


if __name__ == "__main__":
    sys.exit(main())
