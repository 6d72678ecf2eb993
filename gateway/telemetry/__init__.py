"""Metrics the gateway keeps about itself (Prometheus exposition; OTLP export when configured), traces, JSON logs
with trace ids, and the per-session risk history the dashboard shows."""

from .history import SessionHistory
from .service import Telemetry
from .tracing import Tracing

__all__ = ["SessionHistory", "Telemetry", "Tracing"]
