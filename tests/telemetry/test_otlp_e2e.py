"""A real gateway process exports traces and metrics over OTLP/HTTP to a receiver the test runs; nothing typed,
no URL query, ever reaches spans, metrics or logs."""

from __future__ import annotations

import asyncio
import json
import secrets

import httpx
import jwt
import pytest
import websockets

from tests.support.processes import free_port, gateway_config, login, make_users, run_gateway, run_upstream, wait_until
from tests.telemetry.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.slow

SECRET = "Tr0ub4dor-zebra-7781"  # typed through the gateway into the demo terminal
QUERY_SECRET = "qsecret-5c1e7a"


async def type_like_a_script(base: str, cookie: str, text: str, repeats: int) -> None:
    """Machine-regular typing into the demo web terminal: one character per frame, exactly every 25 ms."""
    uri = base.replace("http://", "ws://") + "/ws/terminal"
    async with websockets.connect(uri, additional_headers={"Cookie": f"ztgate_session={cookie}"}) as ws:
        await ws.recv()  # the banner
        try:
            for _ in range(repeats):
                for ch in text + "\r":
                    await ws.send(json.dumps({"type": "input", "data": ch}))
                    await asyncio.sleep(0.025)
        except websockets.exceptions.ConnectionClosed:
            pass  # the gateway ended the session: what this input should lead to


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("otlp")
    users = make_users(tmp / "users.yaml", [{"username": "carol"}])
    port = free_port()
    with OtlpReceiver() as receiver, run_upstream(tmp, jwks_port=port) as upstream:
        cfg = gateway_config(port=port, upstream=upstream, tmp=tmp, users_file=tmp / "users.yaml",
                             admin_token=secrets.token_urlsafe(24),
                             extra_routes=[{"name": "echo", "upstream": upstream, "path_prefix": "/echo",
                                            "audience": "demo"}],
                             telemetry={"log_format": "json", "otlp_endpoint": receiver.url,
                                        "trace_sample_ratio": 1.0, "export_interval": 1})
        with run_gateway(tmp, cfg) as gw:
            with httpx.Client(base_url=gw.url) as c:
                login(c, users["carol"])
                sid = jwt.decode(c.cookies.get("ztgate_session"), options={"verify_signature": False})["sid"]
                for _ in range(5):
                    c.get(f"/api/whoami?token={QUERY_SECRET}", headers={"Accept": "application/json"})
                asyncio.run(type_like_a_script(gw.url, c.cookies.get("ztgate_session"), SECRET, 8))
            wait_until(lambda: gw.admin("GET", f"/sessions/{sid}").json()["state"] == "terminated", timeout=20,
                       what="the scripted session to be terminated")
            wait_until(lambda: {"ztgate.request", "ztgate.score", "ztgate.decision"} <= receiver.received.span_names()
                       and any(p["attributes"].get("action") == "terminate"
                               for p in receiver.received.metrics.get("ztgate_decisions", [])),
                       timeout=20, what="spans and metrics")
            wait_until(lambda: "ztgate_sessions" in receiver.received.metrics, timeout=10, what="session gauges")
            scrape = httpx.get(f"{gw.url}/metrics").text
            yield receiver.received, sid, gw, scrape
        # the gateway has stopped: its last export (shutdown flush) is in too


def test_request_spans_carry_route_sid_verdict_method_status_and_no_url(env):
    received, sid, _, _ = env
    forwarded = [s for s in received.spans_named("ztgate.request") if s["attributes"].get("ztgate.sid") == sid]
    assert forwarded, received.spans_named("ztgate.request")[:3]
    a = next(s for s in forwarded if s["attributes"]["ztgate.route"] == "app")["attributes"]
    assert a["ztgate.verdict"] == "forward" and a["http.request.method"] == "GET"
    assert a["http.response.status_code"] == 200
    control = [s for s in received.spans_named("ztgate.request") if s["attributes"]["ztgate.route"] == "_control"]
    assert control  # the login itself
    for span in received.spans:
        for value in span["attributes"].values():
            assert "whoami" not in str(value) and "?" not in str(value)


def test_scoring_and_decision_spans(env):
    received, sid, _, _ = env
    scores = [s for s in received.spans_named("ztgate.score") if s["attributes"]["ztgate.sid"] == sid]
    assert scores and max(s["attributes"].get("ztgate.risk", 0.0) for s in scores) > 0.5
    decision = next(s for s in received.spans_named("ztgate.decision") if s["attributes"]["ztgate.sid"] == sid)
    a = decision["attributes"]
    assert a["ztgate.decision.action"] == "terminate"
    assert a["ztgate.decision.rule_id"] and a["ztgate.decision.policy_file"].endswith(".yaml")
    # scored under a traced scoring update: the decision is that update's child
    parents = {s["span_id"] for s in scores}
    assert decision["parent_span_id"] in parents


def test_metrics_arrive_with_the_expected_labels(env):
    received, _, _, _ = env
    m = received.metrics
    requests = [p for p in m["ztgate_requests"] if p["attributes"].get("route") == "app"]
    assert requests and requests[-1]["attributes"]["method"] == "GET" and requests[-1]["value"] >= 5
    assert any(p["count"] > 0 for p in m["ztgate_request_seconds"] if p["attributes"].get("route") == "app")
    assert any(p["count"] > 0 for p in m["ztgate_scorer_seconds"])
    assert any(p["count"] > 0 for p in m["ztgate_risk"])
    assert any(p["attributes"].get("action") == "terminate" for p in m["ztgate_decisions"])
    states = {p["attributes"]["state"] for p in m["ztgate_sessions"]}
    assert {"active", "terminated"} <= states
    sinks = {p["attributes"]["sink"] for p in m["ztgate_events_backlog"]}
    assert sinks and sinks == {p["attributes"]["sink"] for p in m["ztgate_events_lag_seconds"]}
    resource = received.resources[0]
    assert resource["service.name"] == "ztgate" and resource["ztgate.instance"] == "gw"


def test_prometheus_endpoint_has_the_same_families(env):
    _, _, _, scrape = env
    for family in ("ztgate_requests_total", "ztgate_request_seconds_bucket", "ztgate_sessions{",
                   "ztgate_events_backlog{", "ztgate_events_lag_seconds{", "ztgate_decisions_total",
                   "ztgate_scorer_seconds_bucket", "ztgate_risk_bucket"):
        assert family in scrape, family


def test_json_logs_carry_trace_ids_of_the_decision(env):
    received, sid, gw, _ = env
    decision = next(s for s in received.spans_named("ztgate.decision") if s["attributes"]["ztgate.sid"] == sid)
    lines = [json.loads(line) for line in gw.proc.log().splitlines() if line.startswith("{")]
    logged = [line for line in lines if sid in line["msg"] and "terminate" in line["msg"]]
    assert logged and logged[0]["trace_id"] == decision["trace_id"] and logged[0]["span_id"] == decision["span_id"]


def test_nothing_typed_and_no_query_is_exported_or_logged(env):
    received, _, gw, scrape = env
    exported = received.all_bytes()
    log_text = gw.proc.log()
    for secret in (SECRET, QUERY_SECRET):
        assert secret.encode() not in exported
        assert secret not in scrape
        assert secret not in log_text
    assert len(exported) > 1000  # the search above looked at real exports
