"""The two metrics every proxied request updates, kept as plain numbers and read by the registry when collected.

`ztgate_requests_total{code,method,route}` and `ztgate_request_seconds{route}` used to be prometheus_client
Counter and Histogram children: each update takes the child's lock, and the histogram walks its bounds in Python,
about 3 us per request on the 2-core dev machine (`python -m bench.proxy_hooks`). Here a request is a dict lookup,
an integer increment, a C bisect and a float addition; RequestMetrics is a custom collector in the gateway's
registry, so /metrics and the OTLP export (both read the registry) see the same families, series, label order,
values and `_created` samples as before. `tests/telemetry/test_request_metrics.py` compares the two exposition
texts.

Not thread-safe by design, like the rest of the proxy: the event loop that runs mitmproxy records, and the
/metrics endpoint and the OTLP exporter collect on that same loop.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

import prometheus_client.metrics as _prometheus_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import INF, floatToGoString

from .metrics import LATENCY_BUCKETS

REQUESTS = "ztgate_requests"  # a counter: exposed as ztgate_requests_total
REQUESTS_DOC = "ztgate requests total"  # what Metrics.count gives a counter named ztgate_requests_total
SECONDS = "ztgate_request_seconds"
SECONDS_DOC = "ztgate request seconds"
_COUNTER_LABELS = ("code", "method", "route")  # sorted, as Metrics gives them to prometheus_client
_BOUNDS = (*LATENCY_BUCKETS, INF)
_LE = tuple(floatToGoString(b) for b in _BOUNDS)


class _Latency:
    __slots__ = ("buckets", "total", "created")

    def __init__(self) -> None:
        self.buckets = [0] * len(_BOUNDS)  # per bucket, not cumulative: bisect picks the one to count in
        self.total = 0.0  # summed in request order, as Histogram.observe sums: the same float
        self.created = time.time()


class RequestMetrics:
    def __init__(self) -> None:
        # (route, method, status) -> [requests, created]; route -> _Latency. Label values are bounded (route
        # names, the methods telemetry keeps, status codes), as the prometheus_client children were.
        self._counts: dict[tuple[str, str, int], list] = {}
        self._latency: dict[str, _Latency] = {}

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        series = self._counts.get(key)
        if series is None:
            series = self._counts[key] = [0, time.time()]
        series[0] += 1
        latency = self._latency.get(route)
        if latency is None:
            latency = self._latency[route] = _Latency()
        # bisect_left finds the first bound >= seconds: Histogram.observe's `amount <= bound`
        latency.buckets[bisect_left(_BOUNDS, seconds)] += 1
        latency.total += seconds

    # ------------------------------------------------------------------ prometheus_client collector

    def collect(self) -> Iterator[Metric]:
        created = getattr(_prometheus_metrics, "_use_created", True)  # PROMETHEUS_DISABLE_CREATED_SERIES
        requests = CounterMetricFamily(REQUESTS, REQUESTS_DOC, labels=_COUNTER_LABELS)
        for (route, method, status), (n, since) in list(self._counts.items()):
            requests.add_metric([str(status), method, route], float(n), created=since if created else None)
        if requests.samples:  # before the first request there is no family at all, as with prometheus_client
            yield requests
        seconds = HistogramMetricFamily(SECONDS, SECONDS_DOC, labels=("route",))
        for route, latency in list(self._latency.items()):
            cumulative, acc = [], 0.0
            for le, n in zip(_LE, latency.buckets):
                acc += n
                cumulative.append((le, acc))
            seconds.add_metric([route], cumulative, latency.total)
            if created:
                seconds.samples.append(Sample(SECONDS + "_created", {"route": route}, latency.created))
        if seconds.samples:
            yield seconds

    def describe(self) -> list[Metric]:
        # the names, so that the registry refuses a second metric of the same name
        return [CounterMetricFamily(REQUESTS, REQUESTS_DOC, labels=_COUNTER_LABELS),
                HistogramMetricFamily(SECONDS, SECONDS_DOC, labels=("route",))]
