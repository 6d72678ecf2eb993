"""One registry per gateway (no process-global metrics), metrics created on first use by name.

Names end in `_total` for counters, `_seconds` for latency histograms; anything else observed is a histogram
with buckets over [0, 1] (risk) and anything set is a gauge. Label values never carry user input.

The Prometheus registry is the one source of truth: /metrics scrapes it, and OTLP export (otlp_metrics.py)
reads it. State the gateway reads on demand (sessions by state, event backlog and delivery lag) is registered as
observable gauges whose callbacks run at collection time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("ztgate.telemetry")

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_UNIT_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)

# What an observable gauge's callback returns: (value, labels) per series.
Observations = Iterable[tuple[float, dict[str, str]]]


class _ObservedGauges:
    """A Prometheus collector over the registered callbacks (read at scrape / export time)."""

    def __init__(self) -> None:
        self.gauges: dict[str, tuple[str, tuple[str, ...], Callable[[], Observations]]] = {}

    def collect(self):
        for name, (doc, labels, callback) in self.gauges.items():
            family = GaugeMetricFamily(name, doc, labels=list(labels))
            try:
                for value, attrs in callback():
                    family.add_metric([attrs.get(k, "") for k in labels], float(value))
            except Exception:  # a broken reading must not break the scrape
                log.exception("reading gauge %s failed", name)
            yield family

    def describe(self):
        return []


class Metrics:
    def __init__(self, instance: str = "") -> None:
        self.instance = instance
        self.registry = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Any] = {}
        # labelled children by (name, label items): prometheus_client's labels() validates and sorts every call,
        # which is most of a counter's cost on the per-request path
        self._children: dict[tuple, Any] = {}
        self._observed = _ObservedGauges()
        self.registry.register(self._observed)

    def _metric(self, kind: type, name: str, labels: tuple[str, ...]):
        metric = self._metrics.get(name)
        if metric is None:
            extra = {}
            if kind is Histogram:
                extra["buckets"] = LATENCY_BUCKETS if name.endswith("_seconds") else _UNIT_BUCKETS
            doc = name.replace("_", " ")
            metric = kind(name.removesuffix("_total") if kind is Counter else name, doc, labels,
                          registry=self.registry, **extra)
            self._metrics[name] = metric
        return metric

    def _child(self, kind: type, name: str, labels: dict[str, str]):
        key = (name, *labels.items())
        child = self._children.get(key)
        if child is None:
            m = self._metric(kind, name, tuple(sorted(labels)))
            child = m.labels(**labels) if labels else m
            if len(self._children) > 100_000:  # label values are bounded; this only guards a mistake
                self._children.clear()
            self._children[key] = child
        return child

    def count(self, name: str, value: float = 1, **labels: str) -> None:
        self._child(Counter, name, labels).inc(value)

    def gauge(self, name: str, value: float, **labels: str) -> None:
        self._child(Gauge, name, labels).set(value)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._child(Histogram, name, labels).observe(value)

    def observable_gauge(self, name: str, labels: tuple[str, ...], callback: Callable[[], Observations],
                         doc: str = "") -> None:
        """State read when collected (Prometheus scrape, OTLP export interval), not pushed by the code."""
        self._observed.gauges[name] = (doc or name.replace("_", " "), labels, callback)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
