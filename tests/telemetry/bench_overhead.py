"""What telemetry adds to one proxied request, measured on real mitmproxy flow objects.

    .venv/bin/python tests/telemetry/bench_overhead.py [--n 50000] [--json]

Modes: metrics only (tracing off, the default without an OTLP endpoint; OTLP metric export reads the same
Prometheus registry, so it adds nothing per request), tracing at ratio 0.1 and 1.0, spans going through the SDK's
batch processor to an exporter that drops them (encoding and sending happen on the exporter's thread). Reported: microseconds per
request for request_started + request_done, and the share of a 1 ms request budget (~1,000 req/s per core).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from mitmproxy.test import tflow
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from gateway.telemetry import Telemetry


class DropExporter(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


class Settings:
    def __init__(self, ratio: float) -> None:
        self.otlp_endpoint, self.service_name, self.trace_sample_ratio, self.export_interval = None, "ztgate", ratio, 60


class _Route:
    name = "app"


class _State:
    route, sid = _Route(), "sid-0123456789abcdef"


def make(mode: str) -> Telemetry:
    if mode == "metrics-only":
        return Telemetry("bench")
    t = Telemetry("bench", Settings(0.1 if mode == "traces-0.1" else 1.0))
    t.start(span_exporter=DropExporter())
    return t


def run(mode: str, n: int) -> float:
    t = make(mode)
    flows = [tflow.tflow(resp=True) for _ in range(256)]
    for f in flows:
        f.metadata["ztgate"] = _State()
    for f in flows[:64]:  # warm up: metric children, instruments
        t.request_started(f)
        t.request_done(f)
    start = time.perf_counter()
    for i in range(n):
        f = flows[i & 255]
        f.metadata.pop("ztgate_counted", None)
        t.request_started(f)
        t.request_done(f)
    elapsed = time.perf_counter() - start
    t.tracing.shutdown()
    return elapsed / n * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    results = {}
    for mode in ("metrics-only", "traces-0.1", "traces-1.0"):
        us = statistics.median(run(mode, args.n) for _ in range(args.repeats))
        results[mode] = {"us_per_request": round(us, 2), "share_of_1ms_budget": round(us / 1000, 4)}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for mode, r in results.items():
            print(f"{mode:<14} {r['us_per_request']:7.2f} us/request  ({r['share_of_1ms_budget']:.2%} of 1 ms)")


if __name__ == "__main__":
    main()
