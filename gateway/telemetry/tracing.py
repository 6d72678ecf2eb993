"""Traces of proxied requests, scoring updates and decisions, exported over OTLP/HTTP.

Sampling is decided here, once per trace root, before any OpenTelemetry object exists: an unsampled request
costs one random number. Children are recorded only under a recorded parent; decisions that change a
session's state are always recorded (they are rare and they are what an investigator looks for), linked to the
unsampled trace they came from when there is one.

The provider is this gateway's own (never the process-global one), so two gateways in one process (tests) do not
share exporters. Attributes never carry URLs, queries, bodies or anything typed: only ids, names and numbers.
"""

from __future__ import annotations

import contextlib
import os
import random
from importlib import metadata
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

AttributeValue = str | int | float | bool


def resource_for(service_name: str, instance: str) -> Resource:
    # several worker processes can share one instance name: the pid tells their series apart
    attrs = {"service.name": service_name, "service.instance.id": f"{instance}:{os.getpid()}",
             "ztgate.instance": instance, "process.pid": os.getpid(), "service.version": _version()}
    return Resource.create(attrs)


def _version() -> str:
    try:
        return metadata.version("ztgate")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def otlp_url(endpoint: str, signal: str) -> str:
    """The OTLP/HTTP URL of one signal: `endpoint` is the collector's base (http://collector:4318), as in
    OTEL_EXPORTER_OTLP_ENDPOINT; a URL already ending in /v1/<signal> is taken as given."""
    base = endpoint.rstrip("/")
    for known in ("/v1/traces", "/v1/metrics", "/v1/logs"):
        if base.endswith(known):
            base = base[: -len(known)]
    return f"{base}/v1/{signal}"


class Tracing:
    """One gateway's tracer. `enabled` is False without an exporter: every method is then a cheap no-op."""

    def __init__(self, resource: Resource | None = None, *, sample_ratio: float = 0.1,
                 exporter: SpanExporter | None = None, processor: SpanProcessor | None = None,
                 rng: random.Random | None = None) -> None:
        self.sample_ratio = min(1.0, max(0.0, sample_ratio))
        self._rng = rng or random.Random()
        self.provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        if exporter is not None or processor is not None:
            # Sampling happens before spans are created (see module doc): the SDK records whatever it is given.
            self.provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
            self.provider.add_span_processor(processor or BatchSpanProcessor(
                exporter, max_queue_size=4096, schedule_delay_millis=1000, max_export_batch_size=512))
            self._tracer = self.provider.get_tracer("ztgate")

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def sampled(self) -> bool:
        return self._tracer is not None and self.sample_ratio > 0 and (
            self.sample_ratio >= 1.0 or self._rng.random() < self.sample_ratio)

    # ------------------------------------------------------------------ requests (span crosses mitmproxy hooks)

    def start_request(self, method: str) -> Span | None:
        """A root span for one proxied request, or None when not sampled. A client's traceparent is ignored:
        clients do not get to choose what the gateway records."""
        if not self.sampled():
            return None
        assert self._tracer is not None
        return self._tracer.start_span("ztgate.request", context=otel_context.Context(), kind=SpanKind.SERVER,
                                       attributes={"http.request.method": method})

    @staticmethod
    @contextlib.contextmanager
    def active(span: Span | None) -> Iterator[None]:
        """Makes `span` current for the duration (log lines and child spans attach to it); ends nothing."""
        if span is None:
            yield
            return
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield
        finally:
            otel_context.detach(token)

    @staticmethod
    def end_request(span: Span, attributes: Mapping[str, AttributeValue], error: str | None = None) -> None:
        span.set_attributes(attributes)
        status = attributes.get("http.response.status_code")
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        elif isinstance(status, int) and status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    # ------------------------------------------------------------------ in-process work

    @contextlib.contextmanager
    def root(self, name: str, attributes: Mapping[str, AttributeValue]) -> Iterator[Span | None]:
        """A span for background work (a scoring update): a child of the current recorded span if there is
        one, otherwise a new sampled-by-ratio root."""
        if self._tracer is None:
            yield None
            return
        parent = trace.get_current_span()
        if parent.is_recording():
            with self._tracer.start_as_current_span(name, attributes=attributes) as span:
                yield span
            return
        if not self.sampled():
            yield None
            return
        with self._tracer.start_as_current_span(name, context=otel_context.Context(), attributes=attributes) as span:
            yield span

    @contextlib.contextmanager
    def decision(self, decision: Mapping[str, Any], sid: str = "") -> Iterator[Span | None]:
        """Always recorded: a child of the current recorded span, else a root linked to the current trace."""
        if self._tracer is None:
            yield None
            return
        attributes = decision_attributes(decision)
        if sid:
            attributes["ztgate.sid"] = sid
        parent = trace.get_current_span()
        if parent.is_recording():
            with self._tracer.start_as_current_span("ztgate.decision", attributes=attributes) as span:
                yield span
            return
        ctx = parent.get_span_context()
        links = [Link(ctx)] if ctx.is_valid else None
        with self._tracer.start_as_current_span("ztgate.decision", context=otel_context.Context(), links=links,
                                                attributes=attributes) as span:
            yield span

    @staticmethod
    def annotate(attributes: Mapping[str, AttributeValue]) -> None:
        """Adds attributes to the current span if it is recorded (e.g. the risk a scoring update produced)."""
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(attributes)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()
            self.provider, self._tracer = None, None

    def force_flush(self, timeout_millis: int = 5000) -> None:
        if self.provider is not None:
            self.provider.force_flush(timeout_millis)


def decision_attributes(d: Mapping[str, Any]) -> dict[str, AttributeValue]:
    out: dict[str, AttributeValue] = {"ztgate.decision.action": str(d.get("action", ""))}
    for key, attr in (("rule_id", "ztgate.decision.rule_id"), ("policy_file", "ztgate.decision.policy_file"),
                      ("policy_id", "ztgate.decision.policy_id")):
        value = d.get(key)
        if value:
            out[attr] = str(value)
    out["ztgate.decision.shadow"] = bool(d.get("shadow"))
    signals = d.get("signals")
    if signals:
        out["ztgate.decision.signals"] = ",".join(sorted(str(s) for s in signals))
    return out
