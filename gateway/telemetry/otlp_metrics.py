"""OTLP/HTTP metric export read from the Prometheus registry: one source of truth, no second instrument to update
per request.

Every `export_interval` seconds the registry is collected (counters, gauges, histograms and the observable
gauges' callbacks) and sent as one ExportMetricsServiceRequest (protobuf, cumulative temporality) to
<otlp_endpoint>/v1/metrics. Recording a request therefore costs the same whether or not OTLP export is on. A
failed export is logged and retried at the next interval (values are cumulative: nothing is lost, only delayed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PbResource
from prometheus_client import CollectorRegistry

log = logging.getLogger("ztgate.telemetry")

_CUMULATIVE = pb.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


def _kv(attrs: dict[str, Any]) -> list[KeyValue]:
    out = []
    for key, value in attrs.items():
        if isinstance(value, bool):
            v = AnyValue(bool_value=value)
        elif isinstance(value, int):
            v = AnyValue(int_value=value)
        elif isinstance(value, float):
            v = AnyValue(double_value=value)
        else:
            v = AnyValue(string_value=str(value))
        out.append(KeyValue(key=key, value=v))
    return out


def _series_key(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != "le"))


def to_otlp(registry: CollectorRegistry, resource: dict[str, Any], start_ns: int, now_ns: int) -> bytes:
    """The registry's current values as a serialized ExportMetricsServiceRequest. Names are the Prometheus
    family names (counters without `_total`); `_seconds` metrics carry the unit "s"."""
    metrics: list[pb.Metric] = []
    for family in registry.collect():
        unit = "s" if family.name.endswith("_seconds") else "1"
        if family.type == "counter":
            points = [pb.NumberDataPoint(attributes=_kv(s.labels), start_time_unix_nano=start_ns,
                                         time_unix_nano=now_ns, as_double=float(s.value))
                      for s in family.samples if s.name.endswith("_total")]
            if points:
                metrics.append(pb.Metric(name=family.name, unit=unit, description=family.documentation,
                                         sum=pb.Sum(data_points=points, aggregation_temporality=_CUMULATIVE,
                                                    is_monotonic=True)))
        elif family.type == "gauge":
            points = [pb.NumberDataPoint(attributes=_kv(s.labels), time_unix_nano=now_ns, as_double=float(s.value))
                      for s in family.samples]
            if points:
                metrics.append(pb.Metric(name=family.name, unit=unit, description=family.documentation,
                                         gauge=pb.Gauge(data_points=points)))
        elif family.type == "histogram":
            series: dict[tuple, dict[str, Any]] = {}
            for s in family.samples:
                entry = series.setdefault(_series_key(s.labels), {"buckets": [], "count": 0.0, "sum": 0.0})
                if s.name.endswith("_bucket"):
                    entry["buckets"].append((float(s.labels["le"]), s.value))
                elif s.name.endswith("_count"):
                    entry["count"] = s.value
                elif s.name.endswith("_sum"):
                    entry["sum"] = s.value
            points = []
            for key, entry in series.items():
                buckets = sorted(entry["buckets"])
                bounds = [le for le, _ in buckets if le != float("inf")]
                cumulative = [c for _, c in buckets]
                counts = [int(c - (cumulative[i - 1] if i else 0)) for i, c in enumerate(cumulative)]
                points.append(pb.HistogramDataPoint(attributes=_kv(dict(key)), start_time_unix_nano=start_ns,
                                                    time_unix_nano=now_ns, count=int(entry["count"]),
                                                    sum=float(entry["sum"]), bucket_counts=counts,
                                                    explicit_bounds=bounds))
            if points:
                metrics.append(pb.Metric(name=family.name, unit=unit, description=family.documentation,
                                         histogram=pb.Histogram(data_points=points,
                                                                aggregation_temporality=_CUMULATIVE)))
    request = ExportMetricsServiceRequest(resource_metrics=[pb.ResourceMetrics(
        resource=PbResource(attributes=_kv(resource)),
        scope_metrics=[pb.ScopeMetrics(scope=InstrumentationScope(name="ztgate"), metrics=metrics)])])
    return request.SerializeToString()


class OtlpMetricsExporter:
    """Sends the registry every `interval` seconds (an asyncio task: the proxy's loop does the I/O, the
    conversion is a few milliseconds for a few hundred series)."""

    def __init__(self, registry: CollectorRegistry, url: str, resource: dict[str, Any], interval: float,
                 timeout: float = 10.0) -> None:
        self.registry, self.url, self.resource, self.interval, self.timeout = registry, url, resource, interval, timeout
        self.start_ns = time.time_ns()
        self.exports = 0
        self.failures = 0
        self._client: Any = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.export_once()

    async def export_once(self) -> bool:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout)
        body = to_otlp(self.registry, self.resource, self.start_ns, time.time_ns())
        try:
            r = await self._client.post(self.url, content=body, headers={"Content-Type": "application/x-protobuf"})
            ok = r.status_code < 300
            if not ok:
                log.warning("OTLP metrics export to %s refused: HTTP %d", self.url, r.status_code)
        except httpx.HTTPError as exc:
            log.warning("OTLP metrics export to %s failed: %s", self.url, exc)
            ok = False
        self.exports += ok
        self.failures += not ok
        return ok

    async def close(self) -> None:
        """One last export (what happened since the previous one), then the client goes."""
        try:
            await self.export_once()
        finally:
            if self._client is not None:
                await self._client.aclose()
                self._client = None
