"""Tracing sampling and parenting, JSON logs with trace ids, metrics mirrored to OpenTelemetry, the history ring,
and the telemetry config fields. In-process exporters (the SDK's in-memory ones): the OTLP wire is tested e2e."""

from __future__ import annotations

import io
import json
import logging
import random
import textwrap

import numpy as np
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway import config as config_mod
from gateway.telemetry import SessionHistory, Tracing
from gateway.telemetry.logs import JsonFormatter
from gateway.telemetry.metrics import Metrics
from gateway.telemetry.tracing import otlp_url
from scoring.events import Source
from scoring.signals import Assessment, Evidence, Signal


def tracing(ratio: float) -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    return Tracing(sample_ratio=ratio, processor=SimpleSpanProcessor(exporter), rng=random.Random(7)), exporter


def test_disabled_tracing_creates_nothing():
    t = Tracing()
    assert not t.enabled and t.start_request("GET") is None
    with t.root("x", {}) as span, t.decision({"action": "terminate"}) as d:
        assert span is None and d is None


def test_request_sampling_follows_the_ratio():
    t, exporter = tracing(0.25)
    spans = [t.start_request("GET") for _ in range(4000)]
    kept = [s for s in spans if s is not None]
    assert 800 < len(kept) < 1200
    for s in kept:
        t.end_request(s, {"ztgate.route": "app", "http.response.status_code": 200})
    assert len(exporter.get_finished_spans()) == len(kept)


def test_children_follow_their_parent_and_decisions_are_always_recorded():
    t, exporter = tracing(0.0)
    with t.root("ztgate.score", {"ztgate.sid": "s1"}) as score:
        assert score is None  # ratio 0: no scoring span
        with t.decision({"action": "terminate", "rule_id": "r1", "policy_file": "p.yaml", "signals": ["relay"]},
                        "s1"):
            pass
    (decision,) = exporter.get_finished_spans()
    assert decision.name == "ztgate.decision" and decision.parent is None
    assert dict(decision.attributes) == {"ztgate.decision.action": "terminate", "ztgate.decision.rule_id": "r1",
                                         "ztgate.decision.policy_file": "p.yaml", "ztgate.decision.shadow": False,
                                         "ztgate.decision.signals": "relay", "ztgate.sid": "s1"}
    t, exporter = tracing(1.0)
    request = t.start_request("POST")
    with t.active(request):
        with t.root("ztgate.score", {"ztgate.sid": "s1"}):
            t.annotate({"ztgate.risk": 0.9})
            with t.decision({"action": "step_up"}):
                pass
    t.end_request(request, {"http.response.status_code": 503})
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["ztgate.score"].parent.span_id == spans["ztgate.request"].context.span_id
    assert spans["ztgate.decision"].parent.span_id == spans["ztgate.score"].context.span_id
    assert spans["ztgate.score"].attributes["ztgate.risk"] == 0.9
    assert not spans["ztgate.request"].status.is_ok


def test_otlp_url_accepts_a_base_or_a_signal_url():
    assert otlp_url("http://c:4318", "traces") == "http://c:4318/v1/traces"
    assert otlp_url("http://c:4318/", "metrics") == "http://c:4318/v1/metrics"
    assert otlp_url("http://c:4318/v1/traces", "metrics") == "http://c:4318/v1/metrics"


def test_json_logs_carry_trace_and_span_ids_only_under_a_span():
    t, _ = tracing(1.0)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ztgate.test-telemetry")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("outside")
        span = t.start_request("GET")
        with t.active(span):
            logger.warning("inside")
        span.end()
    finally:
        logger.removeHandler(handler)
    outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "trace_id" not in outside
    assert inside["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert inside["span_id"] == format(span.get_span_context().span_id, "016x")


def test_registry_converts_to_otlp_with_observable_gauges_and_histograms():
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    from gateway.telemetry.otlp_metrics import to_otlp

    m = Metrics("gw")
    m.count("ztgate_requests_total", route="app", method="GET", code="200")
    m.count("ztgate_requests_total", route="app", method="GET", code="200")
    m.observable_gauge("ztgate_sessions", ("state",), lambda: [(3, {"state": "active"}), (1, {"state": "terminated"})])
    m.observable_gauge("ztgate_broken", (), lambda: 1 / 0)
    for v in (0.0002, 0.003, 0.003, 7.0):
        m.observe("ztgate_request_seconds", v, route="app")
    m.gauge("ztgate_scored_sessions", 2)
    text = m.exposition().decode()
    assert 'ztgate_requests_total{code="200",method="GET",route="app"} 2.0' in text
    assert 'ztgate_sessions{state="active"} 3.0' in text and "ztgate_broken" in text

    msg = ExportMetricsServiceRequest()
    msg.ParseFromString(to_otlp(m.registry, {"service.name": "ztgate", "process.pid": 7}, 1, 2))
    (rm,) = msg.resource_metrics
    assert {kv.key for kv in rm.resource.attributes} == {"service.name", "process.pid"}
    metrics = {x.name: x for x in rm.scope_metrics[0].metrics}
    (point,) = metrics["ztgate_requests"].sum.data_points
    assert metrics["ztgate_requests"].sum.is_monotonic and point.as_double == 2.0
    assert {kv.key: kv.value.string_value for kv in point.attributes} == {"route": "app", "method": "GET",
                                                                          "code": "200"}
    gauge = {p.attributes[0].value.string_value: p.as_double for p in metrics["ztgate_sessions"].gauge.data_points}
    assert gauge == {"active": 3.0, "terminated": 1.0}
    (h,) = metrics["ztgate_request_seconds"].histogram.data_points
    assert metrics["ztgate_request_seconds"].unit == "s"
    assert h.count == 4 and abs(h.sum - 7.0062) < 1e-9
    assert len(h.bucket_counts) == len(h.explicit_bounds) + 1 and sum(h.bucket_counts) == 4
    assert h.bucket_counts[-1] == 1  # 7 s: above the last bound
    assert metrics["ztgate_scored_sessions"].gauge.data_points[0].as_double == 2.0


def _assessment(risk: float, relay_ms: float | None = None) -> Assessment:
    signals = {"cadence": Signal("cadence", risk, True, Evidence(10), "")}
    if relay_ms is not None:
        signals["relay"] = Signal("relay", 0.5, True, Evidence(), "", {"added_latency_ms": relay_ms})
    return Assessment(risk, signals, {}, Evidence(10), True)


def test_history_is_bounded_merges_bursts_and_counts_sources():
    h = SessionHistory(points_per_session=3, max_sessions=2, min_interval=1.0)
    h.record("a", 100.0, _assessment(0.1), [int(Source.SENSOR)])
    h.record("a", 100.5, _assessment(0.2, 80.0), [int(Source.SENSOR), int(Source.GATEWAY)])  # replaces the last
    assert [p["risk"] for p in h.points("a")] == [0.2] and h.points("a")[0]["added_latency_ms"] == 80.0
    for i in range(5):
        h.record("a", 102.0 + i, _assessment(0.3 + i / 10), [int(Source.TERMINAL)])
    assert [p["risk"] for p in h.points("a")] == [0.5, 0.6, 0.7]
    assert [p["risk"] for p in h.points("a", since=104.5)] == [0.6, 0.7]
    assert h.sources("a") == {"sensor": 2, "gateway": 1, "terminal": 5}
    h.record("b", 1.0, _assessment(0.1), [])
    h.record("c", 1.0, _assessment(0.1), [])
    assert len(h) == 2 and h.points("a") == []  # the oldest session went first


def _telemetry_config(body: str):
    text = textwrap.dedent("""
        listeners: [{address: "127.0.0.1:0"}]
        routes: [{name: app, upstream: "http://127.0.0.1:9"}]
        telemetry:
    """) + textwrap.indent(textwrap.dedent(body), "  ")
    return config_mod.loads(text, file="ztgate.yaml")


def test_config_fields_are_validated_with_file_and_line():
    cfg = _telemetry_config("otlp_endpoint: http://collector:4318\ntrace_sample_ratio: 1\nexport_interval: 2\n")
    t = cfg.telemetry
    assert (t.otlp_endpoint, t.trace_sample_ratio, t.export_interval) == ("http://collector:4318", 1.0, 2.0)
    assert _telemetry_config("log_level: info\n").telemetry.trace_sample_ratio == 0.1
    with pytest.raises(config_mod.ConfigInvalid, match=r"ztgate.yaml:\d+.*between 0 and 1"):
        _telemetry_config("trace_sample_ratio: 1.5\n")
    with pytest.raises(config_mod.ConfigInvalid, match=r"ztgate.yaml:\d+.*http\(s\) URL"):
        _telemetry_config("otlp_endpoint: collector:4318\n")


def test_scored_records_history_on_the_telemetry_object():
    from gateway.telemetry import Telemetry

    t = Telemetry("gw")
    batch = np.zeros(4, dtype=[("source", "u1")])
    batch["source"] = [Source.SENSOR, Source.SENSOR, Source.GATEWAY, Source.SENSOR]
    t.scored("s1", batch, _assessment(0.4, 120.0), 0.0005)
    assert t.history.points("s1")[0]["risk"] == 0.4 and t.history.sources("s1") == {"sensor": 1, "gateway": 1}
    assert "ztgate_scorer_seconds_count 1.0" in t.exposition().decode()


def test_text_logs_keep_one_record_per_line_whatever_a_client_sends():
    # an OIDC error_description or a WebAuthn origin reaches log messages: CR LF once forged whole records
    import logging
    import sys

    from gateway.telemetry.logs import TextFormatter

    fmt = TextFormatter()
    forged = "x\r\n2099-01-01 00:00:00,000 INFO ztgate.login: session FAKE started\x1b[2K\u2028"
    line = fmt.format(logging.LogRecord("ztgate.login", logging.WARNING, __file__, 1, "refused: %s", (forged,), None))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert "\\x0d\\x0a2099" in line
    try:
        raise ValueError("origin " + forged)
    except ValueError:
        record = logging.LogRecord("ztgate.webauthn", logging.ERROR, __file__, 1, "refused", (), sys.exc_info())
    lines = fmt.format(record).split("\n")
    assert lines[0].endswith("refused") and all(rest.startswith("  ") for rest in lines[1:])
