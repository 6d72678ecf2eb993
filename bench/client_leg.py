"""How well the page's pings stand for the client's network round trip behind a load balancer.

Behind a trusted load balancer the gateway has no TCP RTT of the client (that connection ends at the balancer), so
arrival-clock reactions have the fastest recent page ping taken out instead (scoring.detectors.network). This
measures what that ping is worth: real Chromium signs in through a delay relay (bench.scenarios.relay: each chunk
held for half the round trip in each direction) to the gateway, once on a listener that trusts loopback as its
balancer (pings only) and once on a plain listener (kernel TCP RTT), and idles on the demo form while the gateway
pings the page every 2 s (and the page calls the app every 5.5 s, which gives the gateway its TCP RTT
samples on the plain listener). The result is what the session's network signal reports, against the relay's round trip.

    python -m bench.client_leg [--rtt 0,40,110] [--seconds 40] [--json] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import time
from typing import Any

import httpx

from .docs import publish
from .scenarios.browser import chromium
from .scenarios.relay import DelayRelay
from .scenarios.stack import Stack

FORM_PATH = "/form"
MODES = ("hop trusted (page pings)", "hop not declared (TCP RTT)")


async def _session(stack: Stack, browser: Any, participant: str, port: int, rtt_ms: float, seconds: float) -> str:
    """Signs in through a relay adding `rtt_ms` and stays on the form for `seconds`; returns the session id."""
    import jwt
    import pyotp

    user = stack.users[participant]
    async with DelayRelay(("127.0.0.1", port), delay_ms=rtt_ms / 2.0) as relay:
        context = await browser.new_context()
        try:
            page = await context.new_page()
            await page.goto(f"http://127.0.0.1:{relay.port}/.ztgate/login?next={FORM_PATH}")
            await page.fill("#username", user.name)
            await page.fill("#password", user.password)
            await page.fill("#otp", pyotp.TOTP(user.totp_secret).now())
            async with page.expect_navigation(url=f"**{FORM_PATH}", timeout=30_000):
                await page.click("button[type=submit]")
            cookie = next(c["value"] for c in await context.cookies() if c["name"] == "ztgate_session")
            deadline = time.monotonic() + seconds  # the gateway pings the page every 2 s meanwhile
            while time.monotonic() < deadline:  # and the page asks the app now and then, as pages do
                await page.evaluate("fetch('/api/items', {headers: {Accept: 'application/json'}}).then(r => r.status)")
                await asyncio.sleep(min(5.5, max(0.0, deadline - time.monotonic())))
            return jwt.decode(cookie, options={"verify_signature": False})["sid"]
        finally:
            await context.close()


async def measure(rtts: list[float], seconds: float) -> dict[str, Any]:
    cases = [(mode, rtt) for rtt in rtts for mode in MODES]
    participants = [f"leg{i}" for i in range(len(cases))]
    async with Stack(participants, store="memory", behind_proxy_port=True) as stack, chromium() as browser:
        started = time.monotonic()
        sids = await asyncio.gather(*(
            _session(stack, browser, participants[i], stack.proxied_port if mode == MODES[0] else stack.port, rtt,
                     seconds)
            for i, (mode, rtt) in enumerate(cases)))
        elapsed = time.monotonic() - started
        rows = []
        async with httpx.AsyncClient(base_url=f"{stack.url}/.ztgate/admin/api", timeout=10,
                                     headers={"Authorization": f"Bearer {stack.admin_token}"}) as admin:
            for (mode, rtt), sid in zip(cases, sids):
                record = (await admin.get(f"/sessions/{sid}")).json()
                details = ((record.get("assessment") or {}).get("signals", {}).get("network", {})
                           .get("details", {}))
                row = {"mode": mode, "relay_rtt_ms": rtt, "tcp_samples": details.get("tcp_samples", 0.0),
                       "app_samples": details.get("app_samples", 0.0)}
                for key in ("tcp_rtt_ms", "app_fastest_ms", "app_rtt_ms"):
                    if key in details:
                        row[key] = round(float(details[key]), 1)
                leg = row.get("tcp_rtt_ms") if mode == MODES[1] else row.get("app_fastest_ms")
                row["client_leg_ms"] = leg
                row["client_leg_minus_relay_ms"] = None if leg is None else round(leg - rtt, 1)
                rows.append(row)
    return {"rtts_ms": rtts, "seconds_per_session": seconds, "wall_seconds": round(elapsed, 1), "rows": rows,
            "machine": f"{platform.machine()}, {platform.python_version()}"}


def render(result: dict[str, Any]) -> str:
    lines = [
        "## Client leg behind a load balancer (`python -m bench.client_leg`)",
        "",
        "Real Chromium through a delay relay to the gateway, idle on the demo form for "
        f"{result['seconds_per_session']:.0f} s while the gateway pings the page every 2 s; all sessions at once "
        f"({result['machine']}). *Client leg* is what scoring takes out of arrival-clock reactions: behind a "
        "trusted balancer the fastest page ping, otherwise the kernel's TCP RTT (median). The relay ends TCP as a "
        "balancer does, so on the listener that does not trust it the TCP RTT is the relay's loopback leg: a distant "
        "client's whole round trip then stays in its reactions, and it reads as relayed by that much.",
        "",
        "| relay round trip | mode | TCP samples | page pings | fastest ping | median ping | TCP RTT | client leg - relay |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]

    def ms(value: Any) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    for r in result["rows"]:
        lines.append(f"| {r['relay_rtt_ms']:.0f} ms | {r['mode']} | {r['tcp_samples']:.0f} | {r['app_samples']:.0f} | "
                     f"{ms(r.get('app_fastest_ms'))} | {ms(r.get('app_rtt_ms'))} | {ms(r.get('tcp_rtt_ms'))} | "
                     f"{ms(r.get('client_leg_minus_relay_ms'))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.client_leg", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt", default="0,40,110", help="relay round trips in ms, comma-separated")
    parser.add_argument("--seconds", type=float, default=40.0, help="seconds each session stays on the form")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args(argv)
    rtts = [float(x) for x in args.rtt.split(",") if x.strip()]
    result = asyncio.run(measure(rtts, args.seconds))
    return publish(result, render, as_json=args.json, write=not args.no_write)


if __name__ == "__main__":
    raise SystemExit(main())
