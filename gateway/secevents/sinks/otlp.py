"""OpenTelemetry logs sink: one OTLP/HTTP export (JSON encoding) per event, to e.g. http://collector:4318/v1/logs.

Sent directly rather than through the SDK's batching exporter, which swallows failures: here a record counts as
delivered only when the collector answered 2xx.
"""

from __future__ import annotations

import httpx

from ..config import OtlpSinkConfig
from ..outbox import Record
from .base import DeliveryError, event_body, is_transient_http

# OCSF severity_id -> OpenTelemetry SeverityNumber
OTEL_SEVERITY = {0: (0, "UNSPECIFIED"), 1: (9, "INFO"), 2: (10, "INFO2"), 3: (13, "WARN"), 4: (17, "ERROR"),
                 5: (21, "FATAL"), 6: (21, "FATAL")}


def _attr(key: str, value: str | int | bool) -> dict:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": str(value)}}


def otlp_logs_request(record: Record, *, instance: str, version: str) -> dict:
    ev = record.event
    meta = ev.get("metadata") or {}
    number, text = OTEL_SEVERITY.get(int(ev.get("severity_id", 0)), (0, "UNSPECIFIED"))
    attrs = [
        _attr("event.id", record.id),
        _attr("event.name", f"ocsf.{ev.get('class_uid')}"),
        _attr("ocsf.class_uid", int(ev.get("class_uid", 0))),
        _attr("ocsf.type_uid", int(ev.get("type_uid", 0))),
        _attr("ocsf.correlation_uid", str(meta.get("correlation_uid", ""))),
    ]
    if record.sid:
        attrs.append(_attr("ztgate.sid", record.sid))
    if "disposition" in ev:
        attrs.append(_attr("ocsf.disposition", str(ev["disposition"])))
    time_ns = str(int(ev.get("time", record.enqueued_ms)) * 1_000_000)
    return {"resourceLogs": [{
        "resource": {"attributes": [_attr("service.name", "ztgate"), _attr("service.instance.id", instance),
                                    _attr("service.version", version)]},
        "scopeLogs": [{
            "scope": {"name": "ztgate.secevents", "version": version},
            "logRecords": [{
                "timeUnixNano": time_ns,
                "observedTimeUnixNano": str(record.enqueued_ms * 1_000_000),
                "severityNumber": number,
                "severityText": text,
                "body": {"stringValue": event_body(record).decode()},
                "attributes": attrs,
            }],
        }],
    }]}


class OtlpSink:
    type = "otlp"

    def __init__(self, cfg: OtlpSinkConfig, *, instance: str, version: str):
        self.cfg = cfg
        self.name = cfg.name
        self.instance = instance
        self.version = version
        self._client = httpx.AsyncClient(follow_redirects=False, timeout=httpx.Timeout(cfg.timeout),
                                         headers=dict(cfg.headers))

    async def deliver(self, record: Record) -> None:
        payload = otlp_logs_request(record, instance=self.instance, version=self.version)
        try:
            resp = await self._client.post(self.cfg.endpoint, json=payload)
        except httpx.HTTPError as err:
            raise DeliveryError(f"{type(err).__name__}: {err}") from None
        if 200 <= resp.status_code < 300:
            return
        code = resp.status_code
        raise DeliveryError(f"OTLP export answered HTTP {code}", permanent=not is_transient_http(code), status=code)

    async def close(self) -> None:
        await self._client.aclose()
