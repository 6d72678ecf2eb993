"""OTLP logs (to a real HTTP receiver process, parsed as an ExportLogsServiceRequest) and syslog (RFC 5424
over UDP and TCP with octet counting, JSON and CEF)."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from gateway.secevents import EventsConfig, SecurityEvents

from .conftest import free_port, make_assessment, make_decision, make_session
from .test_webhook_delivery import received, start_receiver

RFC5424 = re.compile(rb"^<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) ztgate - (ocsf-\d+) "
                     rb"\[ztgate@32473 id=\"([0-9a-f-]+)\" class_uid=\"(\d+)\" correlation_uid=\"([0-9a-f-]+)\"\] (.*)$",
                     re.S)


async def wait_for(pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_otlp_export_is_a_valid_logs_request(tmp_path):
    port, log = free_port(), tmp_path / "otlp.jsonl"
    proc = start_receiver(port, log, "500")  # first export fails: retried
    cfg = EventsConfig.from_dict({"outbox": {"path": str(tmp_path / "outbox")},
                                  "sinks": [{"type": "otlp", "endpoint": f"http://127.0.0.1:{port}/v1/logs",
                                             "min_backoff": 0.02, "max_backoff": 0.1}]})
    events = SecurityEvents(cfg, "gw-otlp", None)
    try:
        await events.start()
        eid = await events.emit_decision(make_decision(), make_session(), make_assessment(), "http://erp:8080")
        await wait_for(lambda: any(r["status"] == 200 for r in received(log)))
    finally:
        await events.stop()
        proc.terminate()
        proc.wait()
    body = [r for r in received(log) if r["status"] == 200][0]["body"]
    req = json_format.Parse(body, ExportLogsServiceRequest())
    rec = req.resource_logs[0].scope_logs[0].log_records[0]
    attrs = {a.key: a.value for a in rec.attributes}
    assert attrs["event.id"].string_value == eid and attrs["ocsf.class_uid"].int_value == 2004
    assert rec.severity_number == 17 and json.loads(rec.body.string_value)["metadata"]["uid"] == eid
    res = {a.key: a.value.string_value for a in req.resource_logs[0].resource.attributes}
    assert res["service.name"] == "ztgate" and res["service.instance.id"] == "gw-otlp"


class Collector(asyncio.DatagramProtocol):
    def __init__(self):
        self.messages: list[bytes] = []

    def datagram_received(self, data, addr):
        self.messages.append(data)


@pytest.mark.slow
async def test_syslog_udp_json_and_tcp_cef(tmp_path):
    loop = asyncio.get_running_loop()
    udp_port, tcp_port = free_port(), free_port()
    udp = Collector()
    transport, _ = await loop.create_datagram_endpoint(lambda: udp, local_addr=("127.0.0.1", udp_port))
    tcp_frames: list[bytes] = []

    async def handle(reader, writer):
        while True:
            try:
                length = int((await reader.readuntil(b" "))[:-1])
                tcp_frames.append(await reader.readexactly(length))
            except (asyncio.IncompleteReadError, ValueError):
                break
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", tcp_port)
    cfg = EventsConfig.from_dict({"outbox": {"path": str(tmp_path / "outbox")}, "sinks": [
        {"type": "syslog", "name": "udp", "address": f"udp://127.0.0.1:{udp_port}"},
        {"type": "syslog", "name": "tcp", "address": f"tcp://127.0.0.1:{tcp_port}", "cef": True, "facility": "local4"},
    ]})
    events = SecurityEvents(cfg, "gw-sys", None)
    await events.start()
    fid = await events.emit_decision(make_decision(), make_session(), make_assessment(), None)
    lid = await events.emit_logoff(make_session(), "terminated | by=policy")
    await wait_for(lambda: len(udp.messages) >= 2 and len(tcp_frames) >= 2)
    await events.stop()
    transport.close()
    server.close()

    m = RFC5424.match(udp.messages[0])
    assert m, udp.messages[0][:200]
    assert int(m.group(1)) == 10 * 8 + 3  # authpriv.err for a High severity termination
    assert m.group(5).decode() == fid and m.group(4) == b"ocsf-2004"
    assert json.loads(m.group(8).removeprefix(b"\xef\xbb\xbf"))["metadata"]["uid"] == fid
    cef = [RFC5424.match(f) for f in tcp_frames]
    assert all(cef) and int(cef[1].group(1)) == 20 * 8 + 6  # local4.info for the logoff
    line = cef[0].group(8).decode()
    assert line.startswith("CEF:0|ztgate|ztgate|") and "|2004:24|Session terminated|8|" in line
    assert f"externalId={fid}" in line and "suser=ana.lima@corp.example" in line and "src=203.0.113.7" in line
    assert "msg=Session ended: terminated | by\\=policy" in cef[1].group(8).decode()
    assert cef[1].group(5).decode() == lid
