"""Every event kind validates against the vendored OCSF definitions; the validator itself catches mistakes."""

from __future__ import annotations

import copy
import json
import time

import pytest

from gateway.secevents import ocsf

from .conftest import make_assessment, make_decision, make_session
from .ocsf_schema import SCHEMA


def finding(action="terminate", shadow=False, assessment=True, upstream="http://erp.internal:8080"):
    return ocsf.detection_finding(event_id=ocsf.new_event_id(), decision=make_decision(action, shadow),
                                  session=make_session(), assessment=make_assessment() if assessment else None,
                                  upstream=upstream, instance="gw-a", product_version="0.1.0", now=time.time())


def logoff(reason="terminated by policy"):
    return ocsf.logoff(event_id=ocsf.new_event_id(), session=make_session(), reason=reason, instance="gw-a",
                       product_version="0.1.0", now=time.time())


def rejected():
    return ocsf.policy_rejected(event_id=ocsf.new_event_id(), directory="/etc/ztgate/policies",
                                diagnostics=["relay.yaml:3:7: unknown signal 'rely'"], instance="gw-a",
                                product_version="0.1.0", now=time.time())


def key_event(accepted=True):
    factor = {"format": "packed", "aaguid": "cb69481e-8ff7-4039-93ec-0a2729a154a8"}
    return ocsf.mfa_factor_enable(event_id=ocsf.new_event_id(), session=make_session(), accepted=accepted,
                                  detail="security key registered" if accepted else "not from an approved maker",
                                  factor={**factor, "attested_by": "ab" * 32} if accepted else factor,
                                  instance="gw-a", product_version="0.1.0", now=time.time())


def lock_event(locked=True):
    account = {"sub": "alice", "email": "alice@example.com", "name": "Alice", "groups": ["staff"],
               "client_ip": "203.0.113.7", "user_agent": "Mozilla/5.0"}
    return ocsf.account_lock(event_id=ocsf.new_event_id(), account=account, locked=locked,
                             reason="too many failed sign-ins" if locked else "unlocked by an administrator",
                             by="ztgate" if locked else "admin-bob", instance="gw-a", product_version="0.1.0",
                             now=time.time())


EVENTS = {
    "terminate": lambda: finding("terminate"),
    "step_up": lambda: finding("step_up"),
    "restrict": lambda: finding("restrict"),
    "terminate_shadow": lambda: finding("terminate", shadow=True),
    "no_assessment_no_upstream": lambda: finding("step_up", assessment=False, upstream=None),
    "logoff": logoff,
    "policy_rejected": rejected,
    "key_registered": key_event,
    "key_refused": lambda: key_event(accepted=False),
    "account_locked": lock_event,
    "account_unlocked": lambda: lock_event(locked=False),
}


@pytest.mark.parametrize("kind", sorted(EVENTS))
def test_every_event_kind_is_valid_ocsf(kind):
    event = EVENTS[kind]()
    errors, _warnings = SCHEMA.validate(json.loads(json.dumps(event)))
    assert errors == []


@pytest.mark.parametrize("kind", ["terminate", "step_up", "restrict", "terminate_shadow", "policy_rejected"])
def test_findings_carry_the_security_control_profile(kind):
    event = EVENTS[kind]()
    assert event["class_uid"] == 2004 and "security_control" in event["metadata"]["profiles"]
    for attr in ("action_id", "disposition_id", "is_alert"):  # the profile's `recommended` attributes
        assert attr in event


def test_key_registrations_are_account_changes_correlated_with_the_session():
    added, refused = key_event(), key_event(accepted=False)
    assert (added["class_uid"], added["activity_id"], added["status"]) == (3001, 10, "Success")
    assert (refused["status"], refused["severity"]) == ("Failure", "Medium") and "approved maker" in refused["message"]
    assert added["metadata"]["correlation_uid"] == logoff()["metadata"]["correlation_uid"]
    assert refused["unmapped"]["ztgate"]["factor"]["type"] == "webauthn"


def test_dispositions_follow_the_decision():
    assert (finding("terminate")["action_id"], finding("terminate")["disposition"]) == (2, "Access Revoked")
    assert finding("step_up")["disposition"] == "Challenge"
    assert finding("restrict")["disposition"] == "Blocked"
    shadow = finding("terminate", shadow=True)
    assert (shadow["action"], shadow["disposition"], shadow["is_alert"]) == ("Allowed", "Detected", False)
    assert rejected()["disposition"] == "Rejected"


def test_finding_and_logoff_share_the_session_correlation_id():
    assert finding()["metadata"]["correlation_uid"] == logoff()["metadata"]["correlation_uid"] \
        == ocsf.correlation_uid("s-1")
    assert logoff()["class_uid"] == 3002 and logoff()["activity_id"] == 2


def test_content_who_which_what_why_where():
    ev = finding()
    z = ev["unmapped"]["ztgate"]
    actor = ev["evidences"][0]["actor"]
    # who
    assert actor["user"]["email_addr"] == "ana.lima@corp.example"
    assert [g["name"] for g in actor["user"]["groups"]] == ["finance", "vpn-users"]
    assert z["user"]["site"] == "lisbon"
    # which session
    assert actor["session"]["uid"] == "s-1" and actor["session"]["created_time"] > 0
    assert ev["evidences"][0]["src_endpoint"]["ip"] == "203.0.113.7"
    assert ev["evidences"][0]["http_request"]["user_agent"].startswith("Mozilla")
    assert z["session"]["route"] == "erp" and z["session"]["duration_s"] >= 600
    # what
    assert z["decision"]["rule_id"] == "relay-abroad" and z["decision"]["enforced"] is True
    assert ev["policy"]["name"] == "defaults/laptop-farm.yaml"
    # why
    why = ev["evidences"][0]["data"]
    assert why["signals"]["relay"]["score"] == 0.93 and "180 ms" in why["signals"]["relay"]["explanation"]
    assert why["added_latency_ms"] == 181.0
    assert why["evidence"] == {"keystrokes": 412, "seconds": 95.5, "samples": 37}
    assert {a["name"] for a in ev["finding_info"]["related_analytics"]} >= {"relay", "cadence"}
    assert ev["risk_score"] == 91 and ev["risk_level"] == "Critical"
    # where
    assert z["instance"] == "gw-a" and ev["metadata"]["log_provider"] == "gw-a"
    assert ev["evidences"][0]["dst_endpoint"]["hostname"] == "erp.internal"


def test_no_characters_leak_through_details():
    a = make_assessment()
    a["signals"]["cadence"]["details"] = {"mean_ms": 120.0, "last_key": "p"}  # a non-number must never pass
    ev = ocsf.detection_finding(event_id="x", decision=make_decision(), session=make_session(), assessment=a,
                                upstream=None, instance="gw", product_version="0", now=time.time())
    assert ev["evidences"][0]["data"]["signals"]["cadence"]["details"] == {"mean_ms": 120.0}
    assert '"last_key"' not in json.dumps(ev)


@pytest.mark.parametrize("mutate, expected", [
    (lambda e: e.pop("severity_id"), "severity_id: required attribute missing"),
    (lambda e: e["finding_info"].pop("uid"), "finding_info.uid: required attribute missing"),
    (lambda e: e.__setitem__("time", "yesterday"), "time:"),
    (lambda e: e.__setitem__("disposition_id", 77), "disposition_id: 77 is not one of"),
    (lambda e: e.__setitem__("disposition", "Revoked"), "sibling disposition"),
    (lambda e: e["metadata"].__setitem__("profiles", []), "belongs to profile 'security_control'"),
    (lambda e: e.__setitem__("sid", "s-1"), "sid: not an attribute"),
    (lambda e: e["evidences"][0]["src_endpoint"].__setitem__("ip", "999.1.1.1"), "ip_t pattern"),
    (lambda e: e["evidences"][0]["actor"]["user"].__setitem__("groups", {"name": "x"}), "expected an array"),
    (lambda e: e.__setitem__("type_uid", 200402), "type_uid != class_uid"),
])
def test_validator_rejects_broken_events(mutate, expected):
    ev = copy.deepcopy(finding())
    mutate(ev)
    errors, _ = SCHEMA.validate(ev)
    assert any(expected in e for e in errors), errors


def test_validator_rejects_logoff_without_user_or_target():
    ev = logoff()
    ev.pop("user")
    ev.pop("service")
    errors, _ = SCHEMA.validate(ev)
    assert "user: required attribute missing" in errors
    assert any("at least one of ['service', 'dst_endpoint']" in e for e in errors)


def test_a_rejection_with_thousands_of_diagnostics_carries_a_bounded_sample_and_a_count():
    # a generated policy file with one bad field per rule: thousands of diagnostics, carried three times
    diags = [f"generated.yaml:{10 + 5 * i}:9: unknown field 'acton' (hint: did you mean 'action'?) " + "x" * 900
             for i in range(4000)]
    event = ocsf.policy_rejected(event_id=ocsf.new_event_id(), directory="/etc/ztgate/policies", diagnostics=diags,
                                 instance="gw-a", product_version="0.1.0", now=time.time())
    assert SCHEMA.validate(json.loads(json.dumps(event)))[0] == []
    for carried in (event["evidences"][0]["data"], event["unmapped"]["ztgate"]):
        assert len(carried["diagnostics"]) == ocsf.MAX_DIAGNOSTICS
        assert all(len(d) <= ocsf.MAX_DIAGNOSTIC_CHARS for d in carried["diagnostics"])
        assert carried["diagnostics"][0].startswith("generated.yaml:10:9: unknown field 'acton'")
        assert carried["diagnostics_omitted"] == 4000 - ocsf.MAX_DIAGNOSTICS
    assert event["finding_info"]["desc"].endswith(f"and {4000 - ocsf.MAX_DIAGNOSTICS} more")
    assert len(json.dumps(event)) < 200_000


def test_a_rejection_with_few_diagnostics_carries_them_whole():
    event = rejected()
    assert event["unmapped"]["ztgate"]["diagnostics"] == ["relay.yaml:3:7: unknown signal 'rely'"]
    assert event["unmapped"]["ztgate"]["diagnostics_omitted"] == 0
    assert event["finding_info"]["desc"] == "relay.yaml:3:7: unknown signal 'rely'"
