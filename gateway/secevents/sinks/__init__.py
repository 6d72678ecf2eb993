"""Sinks: where delivered security events go. `make_sink` builds one from its validated config."""

from __future__ import annotations

from ..config import (JsonlSinkConfig, OtlpSinkConfig, RedisStreamSinkConfig, SinkConfig, SyslogSinkConfig,
                      WebhookSinkConfig)
from .base import DeliveryError, Sink, event_body


def make_sink(cfg: SinkConfig, *, instance: str, version: str) -> Sink:
    if isinstance(cfg, WebhookSinkConfig):
        from .webhook import WebhookSink
        return WebhookSink(cfg, user_agent=f"ztgate/{version}")
    if isinstance(cfg, RedisStreamSinkConfig):
        from .redis_stream import RedisStreamSink
        return RedisStreamSink(cfg)
    if isinstance(cfg, JsonlSinkConfig):
        from .jsonl import JsonlSink
        return JsonlSink(cfg)
    if isinstance(cfg, OtlpSinkConfig):
        from .otlp import OtlpSink
        return OtlpSink(cfg, instance=instance, version=version)
    if isinstance(cfg, SyslogSinkConfig):
        from .syslog import SyslogSink
        return SyslogSink(cfg, version=version)
    raise TypeError(f"unknown sink config {type(cfg).__name__}")


__all__ = ["DeliveryError", "Sink", "event_body", "make_sink"]
