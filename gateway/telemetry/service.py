"""Telemetry: what the rest of the gateway calls. Metrics (Prometheus, plus OTLP when configured), traces (OTLP),
the per-session risk history the dashboard plots, and the instrumentation helpers the proxy addon, the monitor
and the enforcer call.

Per proxied request, with tracing off or the request not sampled: two dict lookups and three integer/float
additions (requests.RequestMetrics; the registry reads them when scraped) and one random number.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from .history import SessionHistory
from .metrics import Metrics
from .otlp_metrics import OtlpMetricsExporter
from .requests import RequestMetrics
from .tracing import Tracing, otlp_url, resource_for

log = logging.getLogger("ztgate.telemetry")

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
SPAN_KEY = "ztgate_span"
VERDICT_KEY = "ztgate_verdict"
ROUTE_KEY = "ztgate_route"
DONE_KEY = "ztgate_counted"


class Telemetry(Metrics):
    def __init__(self, instance: str = "", settings: Any = None) -> None:
        super().__init__(instance)
        self.settings = settings  # gateway.config.TelemetryConfig (None: defaults, no export)
        self.tracing = Tracing()  # disabled until start() finds an exporter to use
        self.history = SessionHistory()
        self.metrics_exporter: OtlpMetricsExporter | None = None
        self.requests = RequestMetrics()  # ztgate_requests_total and ztgate_request_seconds
        self.registry.register(self.requests)

    # ------------------------------------------------------------------ lifecycle

    def start(self, *, span_exporter: Any = None, metrics_url: str | None = None) -> None:
        """Starts OTLP export when `telemetry.otlp_endpoint` is set (tests and benches may pass their own span
        exporter or metrics URL). Metric export then needs `metrics_exporter.run()` as a task of the caller's."""
        s = self.settings
        endpoint = getattr(s, "otlp_endpoint", None)
        if endpoint and span_exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            span_exporter = OTLPSpanExporter(endpoint=otlp_url(endpoint, "traces"), timeout=10)
        if endpoint and metrics_url is None:
            metrics_url = otlp_url(endpoint, "metrics")
        if span_exporter is None and metrics_url is None:
            return
        resource = resource_for(getattr(s, "service_name", "ztgate"), self.instance)
        if span_exporter is not None:
            self.tracing = Tracing(resource, sample_ratio=float(getattr(s, "trace_sample_ratio", 0.1)),
                                   exporter=span_exporter)
        if metrics_url is not None:
            self.metrics_exporter = OtlpMetricsExporter(self.registry, metrics_url, dict(resource.attributes),
                                                        float(getattr(s, "export_interval", 15.0)))
        log.info("OpenTelemetry export on (%s; traces sampled at %.3g)", endpoint or "custom exporters",
                 self.tracing.sample_ratio)

    async def aclose(self) -> None:
        """Flushes what is buffered (the last spans, a final metrics export) and stops the exporters."""
        tracing, self.tracing = self.tracing, Tracing()
        await asyncio.to_thread(tracing.shutdown)
        if self.metrics_exporter is not None:
            exporter, self.metrics_exporter = self.metrics_exporter, None
            try:
                await exporter.close()
            except Exception:
                log.exception("final OTLP metrics export failed")

    # ------------------------------------------------------------------ proxied requests (mitmproxy flows)

    def request_started(self, flow: Any) -> Any:
        """The request's span (None when tracing is off or the request is not sampled), kept on the flow."""
        span = self.tracing.start_request(flow.request.method)
        if span is not None:
            flow.metadata[SPAN_KEY] = span
        return span

    def request_done(self, flow: Any, error: str | None = None) -> None:
        """Counts the request and its latency by route, and ends its span. Called once per flow (response or
        error hook); what it records is route names, the method, the status and ids, never the URL."""
        meta = flow.metadata
        if meta.get(DONE_KEY):  # an error after the response (client gone mid-stream) is not a second request
            return
        meta[DONE_KEY] = True
        state = meta.get("ztgate")
        sid = ""
        if state is not None:
            route, sid, verdict = state.route.name, state.sid, "forward"
        elif meta.get("ztgate_control"):
            route, verdict = "_control", "control"
        else:
            route, verdict = meta.get(ROUTE_KEY) or "_none", meta.get(VERDICT_KEY) or "refused"
        response = flow.response
        status = response.status_code if response is not None else 0
        request = flow.request
        method = request.method
        if method not in _METHODS:
            method = "OTHER"
        ended = (response.timestamp_end if response is not None else None) or time.time()
        self.requests.record(route, method, status, max(0.0, ended - request.timestamp_start))
        span = meta.pop(SPAN_KEY, None)
        if span is not None:
            attributes: dict[str, Any] = {"ztgate.route": route, "ztgate.verdict": verdict,
                                          "http.response.status_code": status}
            if sid:
                attributes["ztgate.sid"] = sid
            self.tracing.end_request(span, attributes, error)

    # ------------------------------------------------------------------ scoring

    def scored(self, sid: str, batch: np.ndarray, assessment: Any, seconds: float) -> None:
        """After a scorer update: its time, the risk on the current span, a point in the session's history."""
        self.observe("ztgate_scorer_seconds", seconds)
        self.tracing.annotate({"ztgate.risk": float(assessment.risk), "ztgate.events": int(len(batch))})
        self.history.record(sid, time.time(), assessment, np.unique(batch["source"]).tolist())
