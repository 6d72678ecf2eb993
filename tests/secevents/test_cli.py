from __future__ import annotations

import json
import time

from gateway.secevents import EventsConfig, SecurityEvents
from gateway.secevents.cli import main
from gateway.secevents.outbox import Record
from gateway.secevents.signing import signed_headers
from gateway.secevents.sinks.base import event_body

from .conftest import make_decision, make_session

SECRET = "0123456789abcdef-cli"


async def test_tail_and_status_read_the_outbox_without_the_gateway(tmp_path, capsys):
    cfg = EventsConfig.from_dict({"outbox": {"path": str(tmp_path / "outbox")},
                                  "sinks": [{"type": "webhook", "name": "siem", "url": "http://127.0.0.1:9/x",
                                             "secret": SECRET, "min_backoff": 5}]})
    events = SecurityEvents(cfg, "gw", None)  # workers not started: the sink never receives anything
    ids = [await events.emit_decision(make_decision(a), make_session(sid=f"s-{i}"), None, None)
           for i, a in enumerate(["terminate", "step_up"])]
    ids.append(await events.emit_logoff(make_session(sid="s-0"), "terminated"))
    ids.append(await events.emit_mfa_factor(make_session(sid="s-1"), accepted=False, detail="no attestation",
                                            factor={"format": "none", "aaguid": "0" * 8}))
    await events.stop()

    assert await_main(["tail", "--json", "-n", "10"], cfg) == 0
    out = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
    assert [e["metadata"]["uid"] for e in out] == ids
    assert await_main(["tail", "-n", "3"], cfg) == 0
    text = capsys.readouterr().out
    assert "STEP_UP" in text and "LOGOFF" in text and "ana.lima@corp.example" in text
    assert "KEY REFUSED" in text and "no attestation" in text
    assert await_main(["status", "--json"], cfg) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["sinks"][0]["name"] == "siem" and st["sinks"][0]["backlog"] == 4 and st["sinks"][0]["lag_seconds"] >= 0


def await_main(argv, cfg):
    import asyncio
    import threading
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", main(argv, cfg, None)))  # main runs its own loop
    t.start()
    t.join()
    return result["rc"]


def test_verify_json_and_raw_http(tmp_path, capsys):
    rec = Record(pos="1", id="d-1", kind="finding", sid="s", enqueued_ms=0,
                 event={"class_uid": 2004, "time": 1, "metadata": {"uid": "d-1"}})
    body = event_body(rec)
    headers = signed_headers(SECRET, "d-1", body, now=time.time())
    f = tmp_path / "delivery.json"
    f.write_text(json.dumps({"headers": headers, "body": body.decode()}))
    assert main(["verify", "--secret", SECRET, "--file", str(f)], EventsConfig(), None) == 0
    assert "VALID" in capsys.readouterr().out
    raw = tmp_path / "delivery.http"
    raw.write_bytes(b"POST /hook HTTP/1.1\r\nHost: siem\r\n" +
                    b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n" + body)
    assert main(["verify", "--secret", SECRET, "--file", str(raw)], EventsConfig(), None) == 0
    assert main(["verify", "--secret", "wrong-secret-0123456", "--file", str(raw)], EventsConfig(), None) == 1
    tampered = tmp_path / "tampered.http"
    tampered.write_bytes(raw.read_bytes().replace(b'"time":1', b'"time":2'))
    assert main(["verify", "--secret", SECRET, "--file", str(tampered)], EventsConfig(), None) == 1
    old = signed_headers(SECRET, "d-1", body, now=time.time() - 3600)
    f.write_text(json.dumps({"headers": old, "body": body.decode()}))
    assert main(["verify", "--secret", SECRET, "--file", str(f), "--max-age", "300"], EventsConfig(), None) == 1
    assert "replay" in capsys.readouterr().out
    # the delivery header is not signed: a replay under a new id would pass a receiver's de-duplication, so it must
    # agree with the signed body's metadata.uid
    f.write_text(json.dumps({"headers": {**headers, "X-Ztgate-Delivery": "d-2"}, "body": body.decode()}))
    assert main(["verify", "--secret", SECRET, "--file", str(f)], EventsConfig(), None) == 1
    assert "a replay under a new delivery id" in capsys.readouterr().out
