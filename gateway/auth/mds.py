"""The FIDO Metadata Service (MDS3) BLOB: which security key models are certified, and their attestation roots.

An admin downloads the BLOB (https://mds3.fidoalliance.org/) and the FIDO Alliance's trust root, and
`ztgate webauthn mds-import` turns them into the file that `webauthn.attestation_mds` names. Each model (AAGUID) kept
brings its own roots, so a key is accepted only if its chain reaches a root listed for the model it claims to be: a
vendor's root does not vouch for a model the vendor had revoked.

What is kept, and why:
- FIDO2 models (an AAGUID); U2F and UAF entries carry none and are skipped.
- Certified models (a FIDO_CERTIFIED* status report, at least the level asked for) that never had a REVOKED,
  compromise or user-verification-bypass report.
- By default only roaming authenticators (`attachmentHint` other than "internal"): the relay-suspected step-up asks
  for a hand on the local machine, and a platform authenticator unlocked with a PIN can be answered by whoever controls
  that machine remotely. `include_platform` keeps them.
- Self-signed roots only: ztgate validates a chain up to a self-signed anchor.

The BLOB is a JWT whose x5c chain must reach the trust root and whose signature must verify with the chain's leaf;
one whose nextUpdate has passed, or whose serial number `no` is below the last import's, is refused (a replayed old
BLOB would bring back models revoked since). Pure: the caller passes today's date and the previous import.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .attestation import fingerprint

FORMAT = "ztgate-mds/1"
BAD_STATUSES = frozenset({"REVOKED", "ATTESTATION_KEY_COMPROMISE", "USER_VERIFICATION_BYPASS",
                          "USER_KEY_REMOTE_COMPROMISE", "USER_KEY_PHYSICAL_COMPROMISE"})
LEVELS = ("FIDO_CERTIFIED", "FIDO_CERTIFIED_L1", "FIDO_CERTIFIED_L1plus", "FIDO_CERTIFIED_L2",
          "FIDO_CERTIFIED_L2plus", "FIDO_CERTIFIED_L3", "FIDO_CERTIFIED_L3plus")
JWT_ALGORITHMS = ["ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"]


class MdsError(Exception):
    """A BLOB or imported file that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Model:
    aaguid: str  # lower-case UUID
    description: str
    roots: tuple[bytes, ...]  # PEM, self-signed
    status: str  # the highest certification level reached
    attachment: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Imported:
    no: int
    next_update: str  # ISO date
    trust_root: str  # fingerprint of the root the BLOB chained to
    models: tuple[Model, ...]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> entries

    def roots_by_aaguid(self) -> dict[str, tuple[bytes, ...]]:
        return {m.aaguid: m.roots for m in self.models}

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "no": self.no, "next_update": self.next_update, "trust_root": self.trust_root,
                "skipped": self.skipped,
                "models": [{"aaguid": m.aaguid, "description": m.description, "status": m.status,
                            "attachment": list(m.attachment), "roots": [r.decode("ascii") for r in m.roots]}
                           for m in self.models]}

    @classmethod
    def from_json(cls, data: Any) -> "Imported":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise MdsError(f"not a file written by 'ztgate webauthn mds-import' (format {FORMAT})")
        try:
            models = tuple(Model(str(uuid.UUID(m["aaguid"])), str(m.get("description", "")),
                                 tuple(r.encode("ascii") for r in m["roots"]), str(m.get("status", "")),
                                 tuple(m.get("attachment", ()))) for m in data["models"])
            for m in models:
                for root in m.roots:
                    x509.load_pem_x509_certificate(root)
            return cls(int(data["no"]), str(data["next_update"]), str(data["trust_root"]), models,
                       dict(data.get("skipped", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MdsError(f"damaged imported metadata: {exc}") from None


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def verify_blob(blob: bytes, trust_root_pem: bytes) -> dict[str, Any]:
    """The BLOB's payload, once its x5c chain reaches `trust_root_pem` and its signature verifies; MdsError if not."""
    import jwt
    from webauthn.helpers import validate_certificate_chain
    from webauthn.helpers.exceptions import InvalidCertificateChain

    token = blob.strip().decode("ascii", "replace")
    try:
        header = jwt.get_unverified_header(token)
        x5c = [_b64(c) for c in header.get("x5c") or []]
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise MdsError(f"not an MDS BLOB (a JWT with an x5c header): {exc}") from None
    if not x5c:
        raise MdsError("the BLOB names no signing certificate (x5c)")
    try:
        validate_certificate_chain(x5c=x5c, pem_root_certs_bytes=[trust_root_pem])
    except InvalidCertificateChain:
        raise MdsError("the BLOB's signing certificate does not chain to the given trust root") from None
    try:
        leaf = x509.load_der_x509_certificate(x5c[0])
        payload = jwt.decode(token, key=leaf.public_key(), algorithms=JWT_ALGORITHMS,
                             options={"verify_aud": False, "verify_iss": False})
    except (jwt.PyJWTError, ValueError) as exc:
        raise MdsError(f"the BLOB's signature does not verify: {exc}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("entries"), list):
        raise MdsError("the BLOB's payload has no entries")
    return payload


def _self_signed(pem: bytes) -> bool:
    cert = x509.load_pem_x509_certificate(pem)
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # noqa: BLE001 - any failure means it is not a usable anchor
        return False
    return True


def _judge_entry(entry: Any, min_level: str, include_platform: bool) -> Model | str:
    """The model to keep, or the reason it is skipped."""
    if not isinstance(entry, dict) or not entry.get("aaguid"):
        return "no AAGUID (U2F or UAF)"
    try:
        aaguid = str(uuid.UUID(str(entry["aaguid"])))
    except ValueError:
        return "malformed AAGUID"
    reports = [r for r in entry.get("statusReports") or [] if isinstance(r, dict)]
    statuses = {str(r.get("status", "")) for r in reports}
    if statuses & BAD_STATUSES:
        return "revoked or compromised"
    levels = [LEVELS.index(s) for s in statuses if s in LEVELS]
    if not levels or max(levels) < LEVELS.index(min_level):
        return f"not certified at {min_level} or above"
    statement = entry.get("metadataStatement") or {}
    attachment = tuple(str(a) for a in statement.get("attachmentHint") or ())
    if not include_platform and attachment and set(attachment) <= {"internal"}:
        return "platform authenticator"
    roots = []
    for text in statement.get("attestationRootCertificates") or []:
        try:
            pem = x509.load_der_x509_certificate(_b64(str(text))).public_bytes(Encoding.PEM)
        except ValueError:
            continue
        if _self_signed(pem):
            roots.append(pem)
    if not roots:
        return "no usable (self-signed) attestation root"
    return Model(aaguid, str(statement.get("description", ""))[:200], tuple(roots), LEVELS[max(levels)], attachment)


def import_blob(blob: bytes, trust_root_pem: bytes, *, today: dt.date, previous: Imported | None = None,
                min_level: str = "FIDO_CERTIFIED", include_platform: bool = False,
                allow_stale: bool = False) -> Imported:
    """The models to trust from a verified BLOB; MdsError for a BLOB that must not be used."""
    if min_level not in LEVELS:
        raise MdsError(f"min_level must be one of {', '.join(LEVELS)}")
    payload = verify_blob(blob, trust_root_pem)
    try:
        no = int(payload["no"])
        next_update = dt.date.fromisoformat(str(payload["nextUpdate"]))
    except (KeyError, TypeError, ValueError):
        raise MdsError("the BLOB has no serial number (no) or nextUpdate date") from None
    if next_update < today and not allow_stale:
        raise MdsError(f"the BLOB was due for replacement on {next_update}: download the current one")
    if previous is not None and no < previous.no:
        raise MdsError(f"the BLOB is number {no}, older than the one imported before ({previous.no}): "
                       "an old BLOB would bring back models revoked since")
    models, skipped = [], Counter()
    for entry in payload["entries"]:
        judged = _judge_entry(entry, min_level, include_platform)
        if isinstance(judged, Model):
            models.append(judged)
        else:
            skipped[judged] += 1
    return Imported(no, next_update.isoformat(), fingerprint(trust_root_pem), tuple(models), dict(skipped))


def read_imported(text: str | bytes) -> Imported:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MdsError(f"not JSON: {exc}") from None
    return Imported.from_json(data)
