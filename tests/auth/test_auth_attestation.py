"""The WebAuthn attestation policy (pure): which registered keys may answer a step-up.

Registrations come from tests.support.softkey (real CBOR and ECDSA, verified by py_webauthn as the gateway does),
because no physical security key can run here."""

from __future__ import annotations

import uuid

import pytest

from gateway.auth.attestation import Attestation, AttestationPolicy, AttestationRefused, fingerprint, judge, split_pem, still_allowed
from tests.support.softkey import SoftKey, registered, root_ca


@pytest.fixture(scope="module")
def vendor():
    return root_ca("Good Keys AB")


@pytest.fixture(scope="module")
def other():
    return root_ca("Other Keys Ltd")


def test_without_a_policy_every_key_counts(vendor):
    policy = AttestationPolicy()
    assert policy.conveyance == "none"
    for key in (SoftKey("none"), SoftKey("self"), SoftKey(vendor)):
        assert judge(policy, registered(key)) is None
        assert still_allowed(policy, {"id": "x"})  # even one registered before attestation was kept


def test_a_key_chaining_to_an_allowed_ca_is_accepted_and_named_by_that_root(vendor, other):
    policy = AttestationPolicy(allowed_roots=(other.pem, vendor.pem))
    assert policy.conveyance == "direct"
    attestation = registered(SoftKey(vendor))
    assert attestation.fmt == "packed" and len(attestation.x5c) == 1
    assert judge(policy, attestation) == fingerprint(vendor.pem)


def test_an_intermediate_sent_by_the_key_completes_the_chain(vendor):
    batch_ca = vendor.intermediate("Good Keys batch CA")
    attestation = registered(SoftKey(batch_ca, chain=(batch_ca,)))
    assert judge(AttestationPolicy(allowed_roots=(vendor.pem,)), attestation) == fingerprint(vendor.pem)
    # without the intermediate in x5c the leaf cannot be tied to the root
    with pytest.raises(AttestationRefused, match="approved maker"):
        judge(AttestationPolicy(allowed_roots=(vendor.pem,)), registered(SoftKey(batch_ca)))


@pytest.mark.parametrize(("kind", "said"), [("none", "no attestation"), ("self", r"self attestation \(packed\)")])
def test_software_and_self_attested_keys_are_refused_under_an_allow_list(vendor, kind, said):
    with pytest.raises(AttestationRefused, match=said):
        judge(AttestationPolicy(allowed_roots=(vendor.pem,)), registered(SoftKey(kind)))


def test_a_key_from_another_vendor_is_refused(vendor, other):
    with pytest.raises(AttestationRefused, match="not from an approved maker"):
        judge(AttestationPolicy(allowed_roots=(vendor.pem,)), registered(SoftKey(other)))


def test_a_denied_ca_wins_over_an_allowed_one(vendor):
    batch_ca = vendor.intermediate("recalled batch")
    attestation = registered(SoftKey(batch_ca, chain=(batch_ca,)))
    policy = AttestationPolicy(allowed_roots=(vendor.pem,), denied_roots=(batch_ca.pem,))
    with pytest.raises(AttestationRefused, match="not accepted here"):
        judge(policy, attestation)
    # a deny list alone lets everything else through, chain or not (Teleport's semantics)
    only_denied = AttestationPolicy(denied_roots=(batch_ca.pem,))
    assert judge(only_denied, registered(SoftKey("none"))) == ""
    assert judge(only_denied, registered(SoftKey(vendor))) == ""


def test_models_can_be_narrowed_by_aaguid(vendor):
    approved = uuid.uuid4()
    policy = AttestationPolicy(allowed_roots=(vendor.pem,), allowed_aaguids=frozenset({str(approved)}))
    assert judge(policy, registered(SoftKey(vendor, aaguid=approved))) == fingerprint(vendor.pem)
    with pytest.raises(AttestationRefused, match="model"):
        judge(policy, registered(SoftKey(vendor, aaguid=uuid.uuid4())))


def test_a_stored_key_is_judged_again_by_the_policy_in_force(vendor, other):
    stored = {"id": "k", "attestation": registered(SoftKey(vendor)).to_json()}
    assert still_allowed(AttestationPolicy(allowed_roots=(vendor.pem,)), stored)
    assert not still_allowed(AttestationPolicy(allowed_roots=(other.pem,)), stored)  # its CA was taken off the list
    assert not still_allowed(AttestationPolicy(allowed_roots=(vendor.pem,), denied_roots=(vendor.pem,)), stored)
    # registered before attestation was kept, or the stored chain is garbage: nothing to judge it by
    assert not still_allowed(AttestationPolicy(allowed_roots=(vendor.pem,)), {"id": "old"})
    assert not still_allowed(AttestationPolicy(allowed_roots=(vendor.pem,)),
                             {"id": "bad", "attestation": {"fmt": "packed", "aaguid": "x", "x5c": ["%%%"]}})


def test_a_registered_key_outlives_its_attestation_certificate(vendor, other):
    # some vendors' attestation certificates are valid for days; the key stays what it was at registration
    _, cert = vendor.attestation_cert(uuid.uuid4(), expired=True)
    from cryptography.hazmat.primitives.serialization import Encoding

    chain = (cert.public_bytes(Encoding.DER),)
    policy = AttestationPolicy(allowed_roots=(vendor.pem,))
    with pytest.raises(AttestationRefused):
        judge(policy, Attestation("packed", str(uuid.uuid4()), chain))  # an expired chain is not accepted anew
    kept = Attestation("packed", str(uuid.uuid4()), chain, root=fingerprint(vendor.pem))
    assert still_allowed(policy, {"id": "k", "attestation": kept.to_json()})
    assert not still_allowed(AttestationPolicy(allowed_roots=(other.pem,)), {"id": "k", "attestation": kept.to_json()})


def test_the_stored_form_round_trips():
    attestation = Attestation("packed", str(uuid.uuid4()), (b"\x30\x03abc", b"\x30\x01z"), root="ab" * 32)
    assert Attestation.from_json(attestation.to_json()) == attestation
    assert Attestation.from_json(None) is None and Attestation.from_json({"fmt": "none"}) is None


def test_pem_bundles_are_split_and_broken_ones_named(vendor, other):
    assert split_pem(vendor.pem + other.pem, "cas.pem") == (vendor.pem, other.pem)
    with pytest.raises(ValueError, match="cas.pem"):
        split_pem(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", "cas.pem")
    with pytest.raises(ValueError, match="no certificate"):
        split_pem(b"just text", "empty.pem")
