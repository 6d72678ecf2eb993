"""FIDO Metadata Service BLOBs for tests: a JWT signed (ES256) by a certificate under a test MDS root, as the FIDO
Alliance signs the real one under its own; the real BLOB cannot be downloaded here (no internet)."""

from __future__ import annotations

import base64
import datetime as dt
import uuid

import jwt
from cryptography.hazmat.primitives.serialization import Encoding

from .softkey import Issuer, root_ca


def entry(aaguid: uuid.UUID | None, roots: list[Issuer], *, statuses=("FIDO_CERTIFIED_L1",),
          attachment=("external", "wired"), description: str = "Test Key") -> dict:
    statement = {"description": description, "attestationRootCertificates":
                 [base64.b64encode(r.der).decode("ascii") for r in roots], "attachmentHint": list(attachment)}
    if aaguid is not None:
        statement["aaguid"] = str(aaguid)
    out = {"metadataStatement": statement,
           "statusReports": [{"status": s, "effectiveDate": "2024-01-0%d" % (i + 1)} for i, s in enumerate(statuses)]}
    if aaguid is not None:
        out["aaguid"] = str(aaguid)
    else:
        out["attestationCertificateKeyIdentifiers"] = ["a" * 40]
    return out


class MdsSigner:
    """The test MDS PKI: a root, an intermediate, and a signing certificate under it."""

    def __init__(self) -> None:
        self.root = root_ca("Test FIDO MDS Root")
        self.intermediate = self.root.intermediate("Test FIDO MDS CA")
        self.key, self.cert = self.intermediate.attestation_cert(uuid.UUID(int=0))

    def blob(self, entries: list[dict], *, no: int = 42, next_update: dt.date | None = None) -> bytes:
        next_update = next_update or dt.date.today() + dt.timedelta(days=30)
        x5c = [base64.b64encode(c).decode("ascii") for c in (self.cert.public_bytes(Encoding.DER), self.intermediate.der)]
        payload = {"legalHeader": "test", "no": no, "nextUpdate": next_update.isoformat(), "entries": entries}
        return jwt.encode(payload, self.key, algorithm="ES256", headers={"x5c": x5c}).encode("ascii")
