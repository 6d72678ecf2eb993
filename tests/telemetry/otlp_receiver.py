"""A tiny OTLP/HTTP receiver for tests: POST /v1/traces and /v1/metrics (protobuf), decoded with opentelemetry-proto
and kept in memory, raw bodies included (so a test can search every byte the gateway exported)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (ExportMetricsServiceRequest,
                                                                          ExportMetricsServiceResponse)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (ExportTraceServiceRequest,
                                                                      ExportTraceServiceResponse)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


@dataclass
class Received:
    raw: list[bytes] = field(default_factory=list)
    spans: list[dict] = field(default_factory=list)
    metrics: dict[str, list[dict]] = field(default_factory=dict)  # name -> data points (attributes, value/count)
    resources: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def span_names(self) -> set[str]:
        with self.lock:
            return {s["name"] for s in self.spans}

    def spans_named(self, name: str) -> list[dict]:
        with self.lock:
            return [s for s in self.spans if s["name"] == name]

    def all_bytes(self) -> bytes:
        with self.lock:
            return b"".join(self.raw)


def _points(metric: Any) -> list[dict]:
    kind = metric.WhichOneof("data")
    data = getattr(metric, kind)
    out = []
    for p in data.data_points:
        point = {"kind": kind, "attributes": attributes(p.attributes)}
        if kind in ("sum", "gauge"):
            point["value"] = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
        elif kind == "histogram":
            point["count"], point["sum"] = p.count, p.sum
        out.append(point)
    return out


def build_app(received: Received) -> Starlette:
    async def traces(request: Request) -> Response:
        body = await request.body()
        msg = ExportTraceServiceRequest()
        msg.ParseFromString(body)
        with received.lock:
            received.raw.append(body)
            for rs in msg.resource_spans:
                received.resources.append(attributes(rs.resource.attributes))
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        received.spans.append({
                            "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(), "attributes": attributes(span.attributes),
                            "links": [link.trace_id.hex() for link in span.links], "status": span.status.code})
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type="application/x-protobuf")

    async def metrics(request: Request) -> Response:
        body = await request.body()
        msg = ExportMetricsServiceRequest()
        msg.ParseFromString(body)
        with received.lock:
            received.raw.append(body)
            for rm in msg.resource_metrics:
                received.resources.append(attributes(rm.resource.attributes))
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        received.metrics.setdefault(metric.name, []).extend(_points(metric))
        return Response(ExportMetricsServiceResponse().SerializeToString(), media_type="application/x-protobuf")

    return Starlette(routes=[Route("/v1/traces", traces, methods=["POST"]),
                             Route("/v1/metrics", metrics, methods=["POST"])])


class OtlpReceiver:
    """Runs the receiver on a free loopback port in a thread: `with OtlpReceiver() as r: r.url, r.received`."""

    def __init__(self) -> None:
        self.received = Received()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(build_app(self.received), host="127.0.0.1", port=self.port,
                                                     log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> "OtlpReceiver":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("the OTLP receiver did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(10)
