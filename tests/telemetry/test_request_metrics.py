"""ztgate_requests_total and ztgate_request_seconds, recorded as plain numbers (telemetry/requests.py), expose what
the prometheus_client Counter and Histogram they replaced exposed: the same text on /metrics (but for the
`_created` timestamps) and the same OTLP points. Real mitmproxy flows through Telemetry.request_done."""

from __future__ import annotations

import random

import pytest
from mitmproxy.test import tflow
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from prometheus_client import generate_latest

from gateway.telemetry import Telemetry
from gateway.telemetry.metrics import LATENCY_BUCKETS, Metrics
from gateway.telemetry.otlp_metrics import to_otlp


class _Route:
    def __init__(self, name: str) -> None:
        self.name = name


class _State:
    def __init__(self, route: str) -> None:
        self.route, self.sid = _Route(route), "sid-0123456789abcdef"


def _flows() -> list[tuple[object, str | None]]:
    """Forwarded, refused, control-plane and failed requests; latencies on, between and beyond the bounds."""
    rng = random.Random(11)
    latencies = [0.0, *LATENCY_BUCKETS, 0.00011, 0.003, 7.0, 1e9] + [rng.expovariate(200) for _ in range(300)]
    out = []
    for i, seconds in enumerate(latencies):
        f = tflow.tflow(resp=True)
        f.request.method = ("GET", "POST", "HEAD", "PURGE")[i % 4]
        f.response.status_code = (200, 200, 302, 404, 500)[i % 5]
        f.request.timestamp_start = 1_700_000_000.0 + i
        f.response.timestamp_end = f.request.timestamp_start + seconds
        error = None
        if i % 7 == 0:
            f.metadata["ztgate"] = _State("app")
        elif i % 7 == 1:
            f.metadata["ztgate"] = _State("wiki")
        elif i % 7 == 2:
            f.metadata["ztgate_control"] = True
        elif i % 7 == 3:
            f.metadata["ztgate_route"], f.metadata["ztgate_verdict"] = "app", "login"
        elif i % 7 == 4:
            f.response, error = None, "connection refused"  # an error before any response: status 0
        out.append((f, error))
    return out


def _reference(flows: list[tuple[object, str | None]]) -> Metrics:
    """What request_done recorded before: prometheus_client children, through the generic Metrics API."""
    m = Metrics("gw")
    for f, _ in flows:
        meta = f.metadata
        if "ztgate" in meta:
            route = meta["ztgate"].route.name
        elif meta.get("ztgate_control"):
            route = "_control"
        else:
            route = meta.get("ztgate_route") or "_none"
        status = f.response.status_code if f.response is not None else 0
        method = f.request.method if f.request.method in ("GET", "HEAD", "POST") else "OTHER"
        m.count("ztgate_requests_total", route=route, method=method, code=str(status))
        ended = f.response.timestamp_end if f.response is not None else None
        if ended is not None:
            m.observe("ztgate_request_seconds", max(0.0, ended - f.request.timestamp_start), route=route)
    return m


def _without_created(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if "_created" not in line]


def test_exposition_and_otlp_match_the_prometheus_client_metrics():
    flows = [(f, e) for f, e in _flows() if e is None]  # failed flows end "now": compared separately below
    t = Telemetry("gw")
    assert b"ztgate_requests" not in t.exposition()  # no family before the first request, as before
    for f, error in flows:
        t.request_done(f, error=error)
    ref = _reference(flows)

    assert _without_created(t.exposition()) == _without_created(generate_latest(ref.registry))
    created = [line for line in t.exposition().decode().splitlines() if line.startswith("ztgate_request")
               and "_created" in line]
    reference_created = [line for line in ref.exposition().decode().splitlines() if line.startswith("ztgate_request")
                         and "_created" in line]
    assert [line.split(" ")[0] for line in created] == [line.split(" ")[0] for line in reference_created]

    def points(metrics: Metrics) -> dict:
        msg = ExportMetricsServiceRequest()
        msg.ParseFromString(to_otlp(metrics.registry, {"service.name": "ztgate"}, 1, 2))
        return {m.name: m for m in msg.resource_metrics[0].scope_metrics[0].metrics
                if m.name.startswith("ztgate_request")}

    ours, theirs = points(t), points(ref)
    assert set(ours) == {"ztgate_requests", "ztgate_request_seconds"}
    for name in ours:
        assert ours[name] == theirs[name], name


def test_failed_requests_count_with_status_0_and_a_latency():
    t = Telemetry("gw")
    f = tflow.tflow()
    f.metadata["ztgate"] = _State("app")
    t.request_done(f, error="connection refused")
    t.request_done(f, error="again")  # one request, however many hooks report it
    registry = t.registry
    assert registry.get_sample_value("ztgate_requests_total", {"code": "0", "method": "GET", "route": "app"}) == 1.0
    assert registry.get_sample_value("ztgate_request_seconds_count", {"route": "app"}) == 1.0
    assert registry.get_sample_value("ztgate_request_seconds_bucket", {"route": "app", "le": "+Inf"}) == 1.0


def test_a_second_metric_of_the_same_name_is_refused():
    t = Telemetry("gw")
    with pytest.raises(ValueError):
        t.count("ztgate_requests_total", route="app", method="GET", code="200")


def test_latencies_on_the_bounds_fall_in_the_same_buckets():
    from gateway.telemetry.requests import RequestMetrics

    ours, ref = RequestMetrics(), Metrics("gw")
    values = [0.0, *LATENCY_BUCKETS, *(b * (1 + 1e-12) for b in LATENCY_BUCKETS), float("inf"), 1e-300]
    for v in values:
        ours.record("app", "GET", 200, v)
        ref.observe("ztgate_request_seconds", v, route="app")
    (family,) = [f for f in ours.collect() if f.name == "ztgate_request_seconds"]
    (reference,) = [f for f in ref.registry.collect() if f.name == "ztgate_request_seconds"]
    assert [s[:3] for s in family.samples if not s.name.endswith("_created")] == \
        [s[:3] for s in reference.samples if not s.name.endswith("_created")]
