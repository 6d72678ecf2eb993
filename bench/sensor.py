"""Cost of the browser sensor (`ztgate bench sensor [--json]`).

- script size: sensor.js, sensor.min.js, and sensor.min.js gzipped (what a browser downloads once, then caches);
- browser CPU per 1,000 input events: Chromium's own CDP Performance metrics (ScriptDuration, TaskDuration) while
  1,000 trusted key events and 1,000 pointer moves are dispatched through CDP, for the same page with and without
  the sensor; the difference is the sensor's cost (median of repeats). A real loopback server (uvicorn) serves
  the pages, the script and the WebSocket;
- gateway side: decoding a typical 50-event batch, verifying a page token, the integrity bookkeeping per batch,
  and injecting into a buffered and a streamed (gzip) 100 KB page.
Results go into the "## Browser sensor" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from gateway.sensor import inject, protocol, tokens
from gateway.sensor.integrity import SensorIntegrity
from bench.docs import write_section

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
HEADING = "## Browser sensor"
SENSOR_DIR = Path(inject.__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def sizes() -> dict[str, int]:
    raw = (SENSOR_DIR / "sensor.js").read_bytes()
    minified = (SENSOR_DIR / "sensor.min.js").read_bytes()
    return {"raw_bytes": len(raw), "min_bytes": len(minified), "min_gzip_bytes": len(gzip.compress(minified, 9))}


def typical_batch(n: int = 50) -> str:
    events = []
    t = 1000.0
    for i in range(n):
        t += 37.5
        if i % 10 < 5:
            events.append([1 + i % 2, round(t, 1), 1 + i % 6])
        elif i % 10 < 9:
            events.append([3, round(t, 1), 100 + i, 200 + i])
        else:
            events.append([7, round(t, 1), 5])
    return json.dumps({"v": 1, "s": 7, "o": time.time() * 1000 - 60_000, "e": events}, separators=(",", ":"))


def _time_us(fn, repeats: int = 5, number: int = 2000) -> dict[str, float]:
    per_call = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        per_call.append((time.perf_counter() - t0) / number * 1e6)
    return {"median_us": round(statistics.median(per_call), 2), "min_us": round(min(per_call), 2)}


def gateway_costs() -> dict[str, dict[str, float]]:
    message = typical_batch()
    now_ms = time.time() * 1000
    decoded = protocol.decode(message, session_id="s", page="p", now_ms=now_ms)
    secret = os.urandom(32)
    token = tokens.issue(secret, "sid", time.time())
    integrity = SensorIntegrity()
    seq = iter(range(1, 10**9))

    events = decoded.events.copy()

    def integrity_batch():
        # consecutive batches, 2 s apart on the source clock, as a typing user would send them
        n = next(seq)
        events["t_src"] = decoded.events["t_src"] + n * 2000.0
        integrity.batch("p", n, events, time.time(), time_origin=decoded.time_origin)

    page = (b"<!doctype html><html><head><title>x</title></head><body>" + os.urandom(50_000).hex().encode()
            + b"</body></html>")
    compressed = gzip.compress(page)
    tag = inject.sensor_tag(token, "nonce")

    def stream():
        injector = inject.StreamInjector(tag, content_encoding="gzip")
        for i in range(0, len(compressed), 16384):
            injector(compressed[i : i + 16384])
        injector(b"")

    return {
        "decode_50_event_batch": _time_us(lambda: protocol.decode(message, session_id="s", page="p", now_ms=now_ms)),
        "verify_token": _time_us(lambda: tokens.verify(secret, token, "sid", time.time())),
        "integrity_batch_50_events": _time_us(integrity_batch),
        "inject_buffered_100kb": _time_us(lambda: inject.inject_buffered(page, "utf-8", tag), number=500),
        "stream_inject_gzip_100kb": _time_us(stream, number=100),
    }


def _page_html(with_sensor: bool) -> str:
    tag = '<script src="/.ztgate/sensor.js" data-ztgate-token="bench" async></script>' if with_sensor else ""
    return (
        f"<!doctype html><html><head>{tag}<title>bench</title></head>"
        "<body><input id=f autofocus><div style='height:3000px'></div></body></html>"
    )


class _Server:
    """The pages, the script and a counting WebSocket endpoint on a real loopback server (uvicorn thread), so the
    browser pays exactly what it pays in production (no Playwright shims in the page)."""

    def __init__(self) -> None:
        import socket
        import threading

        import uvicorn
        from starlette.applications import Starlette
        from starlette.responses import HTMLResponse, Response
        from starlette.routing import Route, WebSocketRoute
        from starlette.websockets import WebSocketDisconnect

        sensor_js = (SENSOR_DIR / "sensor.min.js").read_bytes()
        self.received = {"messages": 0, "bytes": 0}

        async def sensor_ws(ws):
            await ws.accept()
            try:
                while True:
                    message = await ws.receive_text()
                    self.received["messages"] += 1
                    self.received["bytes"] += len(message)
            except WebSocketDisconnect:
                pass

        async def with_sensor(request):
            return HTMLResponse(_page_html(True))

        async def without_sensor(request):
            return HTMLResponse(_page_html(False))

        async def script(request):
            return Response(sensor_js, media_type="text/javascript")

        app = Starlette(routes=[
            Route("/with", with_sensor), Route("/without", without_sensor), Route("/.ztgate/sensor.js", script),
            WebSocketRoute("/.ztgate/sensor", sensor_ws),
        ])
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def browser_costs(repeats: int = 3, n_events: int = 1000) -> dict:
    from playwright.sync_api import sync_playwright

    def run(browser, url: str, with_sensor: bool, what: str) -> dict[str, float]:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{url}/{'with' if with_sensor else 'without'}")
        page.click("#f")
        page.wait_for_timeout(300)
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")

        def metrics():
            return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}

        before = metrics()
        t0 = time.perf_counter()
        for i in range(n_events // 2 if what == "keys" else n_events):
            if what == "keys":
                cdp.send("Input.dispatchKeyEvent", {"type": "keyDown", "code": "KeyH", "key": "h",
                                                    "windowsVirtualKeyCode": 72})
                cdp.send("Input.dispatchKeyEvent", {"type": "keyUp", "code": "KeyH", "key": "h",
                                                    "windowsVirtualKeyCode": 72})
            else:
                cdp.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 10 + i % 500, "y": 10 + i % 300})
        page.wait_for_timeout(400)  # the last flush
        after = metrics()
        wall = time.perf_counter() - t0
        context.close()
        return {
            "script_ms": (after["ScriptDuration"] - before["ScriptDuration"]) * 1000,
            "task_ms": (after["TaskDuration"] - before["TaskDuration"]) * 1000,
            "wall_s": wall,
        }

    results: dict = {}
    with _Server() as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for what in ("keys", "pointer_moves"):
                runs = {True: [], False: []}
                for _ in range(repeats):
                    for with_sensor in (False, True):
                        runs[with_sensor].append(run(browser, server.url, with_sensor, what))
                with_s = {k: statistics.median(r[k] for r in runs[True]) for k in ("script_ms", "task_ms")}
                without = {k: statistics.median(r[k] for r in runs[False]) for k in ("script_ms", "task_ms")}
                results[what] = {
                    "script_ms_per_1000_with_sensor": round(with_s["script_ms"], 2),
                    "script_ms_per_1000_without": round(without["script_ms"], 2),
                    "sensor_script_ms_per_1000": round(with_s["script_ms"] - without["script_ms"], 2),
                    "sensor_task_ms_per_1000": round(with_s["task_ms"] - without["task_ms"], 2),
                    "dispatch_wall_s_median": round(statistics.median(r["wall_s"] for r in runs[True]), 2),
                }
        finally:
            browser.close()
    results["ws_messages_received"] = server.received["messages"]
    results["ws_bytes_received"] = server.received["bytes"]
    return results


def render(result: dict) -> str:
    s, g = result["sizes"], result["gateway"]
    lines = [
        HEADING,
        "",
        f"`ztgate bench sensor` (`bench/sensor.py`) on CPython {platform.python_version()}, {platform.machine()}, "
        "shared 2-core VM.",
        "",
        "| script | bytes |",
        "|---|---|",
        f"| sensor.js (source, commented) | {s['raw_bytes']} |",
        f"| sensor.min.js (terser) | {s['min_bytes']} |",
        f"| sensor.min.js, gzip -9 (on the wire, then cached) | {s['min_gzip_bytes']} |",
        "",
    ]
    b = result.get("browser")
    if b:
        lines += [
            "Browser CPU (Chromium headless, CDP `Performance.getMetrics`: main-thread script time while 1,000 "
            "trusted input events are dispatched through CDP; same page with and without the sensor, median of "
            f"{result['browser_repeats']} runs):",
            "",
            "| 1,000 events | script ms, page alone | script ms, with sensor | sensor's share (script ms) | "
            "sensor's share (all tasks, ms) |",
            "|---|---|---|---|---|",
        ]
        for what, label in (("keys", "key down/up (500 presses)"), ("pointer_moves", "pointer moves")):
            r = b[what]
            lines.append(
                f"| {label} | {r['script_ms_per_1000_without']} | {r['script_ms_per_1000_with_sensor']} | "
                f"{r['sensor_script_ms_per_1000']} | {r['sensor_task_ms_per_1000']} |"
            )
        moves_s = b["pointer_moves"].get("dispatch_wall_s_median")
        lines += [
            "",
            f"CDP paces mouse moves by frames (1,000 moves took {moves_s} s), slower than the sensor's 15 ms cap, "
            "so every move was recorded: both rows are the cost of recording, batching and sending every event. "
            "The all-tasks column is mostly noise (it can come out negative); script time is the measure.",
            "",
        ]
    lines += [
        "Gateway side (median and minimum of 5 repeats; the machine is shared, so the median moves with other "
        "jobs' load and the minimum is closer to the cost itself):",
        "",
        "| operation | us (median) | us (min) |",
        "|---|---|---|",
    ]
    labels = {
        "decode_50_event_batch": "decode one 50-event batch (protocol.decode)",
        "verify_token": "verify a page token (tokens.verify)",
        "integrity_batch_50_events": "integrity bookkeeping for that batch (SensorIntegrity.batch)",
        "inject_buffered_100kb": "inject into a buffered 100 KB page",
        "stream_inject_gzip_100kb": "stream-inject a gzip 100 KB page (decompress + inject, 16 KB chunks)",
    }
    for key, label in labels.items():
        lines.append(f"| {label} | {g[key]['median_us']} | {g[key]['min_us']} |")
    lines += ["", "Rerun with `ztgate bench sensor --json` (add `--no-browser` to skip Chromium).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ztgate bench sensor", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium measurement")
    parser.add_argument("--repeats", type=int, default=3, help="browser runs per case (default 3)")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    result: dict = {"sizes": sizes(), "gateway": gateway_costs(), "browser_repeats": args.repeats}
    if not args.no_browser:
        if not os.path.exists(CHROMIUM):
            print(f"no Chromium at {CHROMIUM}; use --no-browser", file=sys.stderr)
            return 2
        result["browser"] = browser_costs(args.repeats)
    if not args.no_write:
        write_section(render(result))
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
