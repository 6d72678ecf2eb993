"""The FIDO Metadata Service import (gateway.auth.mds) and the attestation policy built from it: a key counts only if
its chain reaches a root listed for the model it claims to be. BLOBs come from tests.support.mdsblob (the real one
cannot be downloaded here); keys from tests.support.softkey, verified by py_webauthn as the gateway does."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid

import pytest

from gateway.auth.attestation import AttestationPolicy, AttestationRefused, fingerprint, judge, still_allowed
from gateway.auth.mds import MdsError, import_blob, read_imported
from tests.support.mdsblob import MdsSigner, entry
from tests.support.softkey import SoftKey, registered, root_ca

TODAY = dt.date.today()
A, B, REVOKED, BYPASS, UNCERTIFIED, PLATFORM, ODD = (uuid.uuid4() for _ in range(7))


@pytest.fixture(scope="module")
def pki():
    vendor_a, vendor_b = root_ca("Maker A"), root_ca("Maker B")
    batch_ca = vendor_a.intermediate("Maker A batch CA")
    signer = MdsSigner()
    entries = [
        entry(A, [vendor_a]),
        entry(B, [vendor_b], statuses=("FIDO_CERTIFIED", "FIDO_CERTIFIED_L2")),
        entry(REVOKED, [vendor_a], statuses=("FIDO_CERTIFIED_L1", "REVOKED")),
        entry(BYPASS, [vendor_a], statuses=("FIDO_CERTIFIED_L1", "USER_VERIFICATION_BYPASS")),
        entry(UNCERTIFIED, [vendor_a], statuses=("NOT_FIDO_CERTIFIED",)),
        entry(PLATFORM, [vendor_a], attachment=("internal",)),
        entry(ODD, [batch_ca]),  # lists an intermediate: no self-signed anchor
        entry(None, [vendor_a]),  # U2F
    ]
    return {"a": vendor_a, "b": vendor_b, "signer": signer, "entries": entries, "blob": signer.blob(entries)}


def test_the_import_keeps_certified_roaming_models_and_says_why_it_skipped_the_rest(pki):
    imported = import_blob(pki["blob"], pki["signer"].root.pem, today=TODAY)
    kept = {m.aaguid: m for m in imported.models}
    assert set(kept) == {str(A), str(B)}
    assert kept[str(A)].roots == (pki["a"].pem,) and kept[str(B)].status == "FIDO_CERTIFIED_L2"
    assert imported.skipped == {"revoked or compromised": 2, "not certified at FIDO_CERTIFIED or above": 1,
                                "platform authenticator": 1, "no usable (self-signed) attestation root": 1,
                                "no AAGUID (U2F or UAF)": 1}
    assert imported.trust_root == fingerprint(pki["signer"].root.pem) and imported.no == 42
    assert read_imported(json.dumps(imported.to_json())) == imported  # the file round-trips
    # asked for, platform authenticators stay; a higher level drops A (L1)
    assert str(PLATFORM) in {m.aaguid for m in import_blob(pki["blob"], pki["signer"].root.pem, today=TODAY,
                                                          include_platform=True).models}
    assert {m.aaguid for m in import_blob(pki["blob"], pki["signer"].root.pem, today=TODAY,
                                          min_level="FIDO_CERTIFIED_L2").models} == {str(B)}


def test_a_blob_that_cannot_be_trusted_is_refused(pki):
    signer, root = pki["signer"], pki["signer"].root.pem
    with pytest.raises(MdsError, match="does not chain to the given trust root"):
        import_blob(pki["blob"], root_ca("Someone else").pem, today=TODAY)
    header, payload, signature = pki["blob"].split(b".")
    # the revoked model certified again, in a payload that comes with the real BLOB's header and signature
    forged = MdsSigner().blob([entry(REVOKED, [pki["a"]])], no=99).split(b".")[1]
    with pytest.raises(MdsError, match="signature does not verify"):
        import_blob(b".".join((header, forged, signature)), root, today=TODAY)
    with pytest.raises(MdsError, match="not an MDS BLOB"):
        import_blob(b"garbage", root, today=TODAY)
    stale = signer.blob(pki["entries"], next_update=TODAY - dt.timedelta(days=1))
    with pytest.raises(MdsError, match="due for replacement"):
        import_blob(stale, root, today=TODAY)
    assert import_blob(stale, root, today=TODAY, allow_stale=True).models
    newer = import_blob(signer.blob(pki["entries"], no=50), root, today=TODAY)
    with pytest.raises(MdsError, match="older than the one imported before"):  # a replayed old BLOB
        import_blob(pki["blob"], root, today=TODAY, previous=newer)


def test_a_key_counts_only_under_the_roots_listed_for_its_own_model(pki):
    imported = import_blob(pki["blob"], pki["signer"].root.pem, today=TODAY)
    policy = AttestationPolicy(model_roots=imported.roots_by_aaguid())
    assert policy.enforced and policy.conveyance == "direct"
    good = registered(SoftKey(pki["a"], aaguid=A))
    assert judge(policy, good) == fingerprint(pki["a"].pem)
    for refused in (SoftKey(pki["a"], aaguid=B),  # maker A's root does not vouch for maker B's model
                    SoftKey(pki["a"], aaguid=REVOKED),  # a model revoked in the metadata
                    SoftKey(pki["a"], aaguid=uuid.uuid4()),  # a model the metadata does not list
                    SoftKey("none", aaguid=A)):  # no attestation at all
        with pytest.raises(AttestationRefused):
            judge(policy, registered(refused))
    stored = {"attestation": {**good.to_json(), "root": judge(policy, good)}}
    assert still_allowed(policy, stored)
    # the next import no longer lists model A (say it was revoked): the key stops counting at the next step-up
    later = import_blob(pki["signer"].blob([pki["entries"][1]], no=43), pki["signer"].root.pem, today=TODAY)
    assert not still_allowed(AttestationPolicy(model_roots=later.roots_by_aaguid()), stored)


def test_the_cli_writes_the_file_and_refuses_an_older_blob(pki, tmp_path):
    blob, root, out = tmp_path / "blob.jwt", tmp_path / "root.pem", tmp_path / "mds.json"
    blob.write_bytes(pki["signer"].blob(pki["entries"], no=60))
    root.write_bytes(pki["signer"].root.pem)
    cmd = [sys.executable, "-m", "gateway.cli.main", "webauthn", "mds-import", str(blob), "--root", str(root),
           "--out", str(out)]
    done = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["models"] == 2 and read_imported(out.read_bytes()).no == 60
    blob.write_bytes(pki["signer"].blob(pki["entries"], no=59))
    older = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert older.returncode == 1 and "older than the one imported before" in older.stderr
    assert read_imported(out.read_bytes()).no == 60  # the earlier import stays
    nowhere = subprocess.run(cmd[:-1] + [str(tmp_path / "missing-dir" / "mds.json")], capture_output=True, text=True,
                             timeout=60)
    assert nowhere.returncode == 2 and "cannot write" in nowhere.stderr and "Traceback" not in nowhere.stderr
