"""A software WebAuthn authenticator and an attestation PKI for tests.

Not a mock of the gateway: it produces the same bytes a security key would (CBOR attestation object, authenticator
data, ECDSA signatures), so the gateway's real verification (py_webauthn, then the attestation policy) runs on them.
Needed because a real security key cannot run here, and Chromium's virtual authenticator signs its attestation with
a fixed test certificate whose CA we do not hold, so it can show a refusal but never an accepted vendor chain.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass, field

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

FIDO_AAGUID_OID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Issuer:
    """A CA: a vendor's attestation root or an intermediate under it."""

    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)

    def intermediate(self, name: str) -> "Issuer":
        key = ec.generate_private_key(ec.SECP256R1())
        return Issuer(name, key, _cert(_name(name), key, self, ca=True))

    def attestation_cert(self, aaguid: uuid.UUID, *, expired: bool = False) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.name),
                             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
                             x509.NameAttribute(NameOID.COMMON_NAME, f"{self.name} batch")])
        return key, _cert(subject, key, self, ca=False, aaguid=aaguid, expired=expired)


def root_ca(name: str) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    return Issuer(name, key, _cert(_name(name), key, None, ca=True))


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: Issuer | None, *, ca: bool,
          aaguid: uuid.UUID | None = None, expired: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    start, end = (now - dt.timedelta(days=30), now - dt.timedelta(days=1)) if expired else \
        (now - dt.timedelta(days=1), now + dt.timedelta(days=365))
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.cert.subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                        critical=True)
    if aaguid is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(FIDO_AAGUID_OID, b"\x04\x10" + aaguid.bytes),
                                        critical=False)
    return builder.sign(issuer.key if issuer else key, hashes.SHA256())


@dataclass
class SoftKey:
    """One authenticator holding one credential. `attestation`: "none", "self", or an Issuer whose batch
    certificate signs the attestation (with `chain` as the extra certificates it sends, e.g. an intermediate)."""

    attestation: "str | Issuer" = "none"
    aaguid: uuid.UUID = field(default_factory=uuid.uuid4)
    chain: tuple[Issuer, ...] = ()
    credential_id: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    sign_count: int = 0

    def _cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})

    def _auth_data(self, rp_id: str, *, attested: bool) -> bytes:
        self.sign_count += 1
        flags = 0x01 | 0x04 | (0x40 if attested else 0)
        data = hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + self.sign_count.to_bytes(4, "big")
        if attested:
            data += self.aaguid.bytes + len(self.credential_id).to_bytes(2, "big") + self.credential_id + self._cose_key()
        return data

    def register(self, options: dict, origin: str) -> dict:
        """The browser's `navigator.credentials.create()` answer to the gateway's options, as JSON."""
        public_key = options["publicKey"]
        client_data = json.dumps({"type": "webauthn.create", "challenge": public_key["challenge"],
                                  "origin": origin, "crossOrigin": False}).encode()
        auth_data = self._auth_data(public_key["rp"]["id"], attested=True)
        signed = auth_data + hashlib.sha256(client_data).digest()
        if self.attestation == "none":
            fmt, stmt = "none", {}
        elif self.attestation == "self":
            fmt, stmt = "packed", {"alg": -7, "sig": self.key.sign(signed, ec.ECDSA(hashes.SHA256()))}
        else:
            batch_key, batch_cert = self.attestation.attestation_cert(self.aaguid)
            fmt, stmt = "packed", {"alg": -7, "sig": batch_key.sign(signed, ec.ECDSA(hashes.SHA256())),
                                   "x5c": [batch_cert.public_bytes(Encoding.DER), *(c.der for c in self.chain)]}
        attestation_object = cbor2.dumps({"fmt": fmt, "attStmt": stmt, "authData": auth_data})
        return {"id": b64u(self.credential_id), "rawId": b64u(self.credential_id), "type": "public-key",
                "response": {"clientDataJSON": b64u(client_data), "attestationObject": b64u(attestation_object),
                             "transports": ["usb"]},
                "clientExtensionResults": {}}

    def assert_(self, options: dict, origin: str) -> dict:
        """The browser's `navigator.credentials.get()` answer, as JSON."""
        public_key = options["publicKey"]
        client_data = json.dumps({"type": "webauthn.get", "challenge": public_key["challenge"], "origin": origin,
                                  "crossOrigin": False}).encode()
        auth_data = self._auth_data(public_key["rpId"], attested=False)
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        return {"id": b64u(self.credential_id), "rawId": b64u(self.credential_id), "type": "public-key",
                "response": {"clientDataJSON": b64u(client_data), "authenticatorData": b64u(auth_data),
                             "signature": b64u(signature)},
                "clientExtensionResults": {}}


def registered(key: SoftKey, rp_id: str = "gw.example", origin: str = "https://gw.example"):
    """A registration by `key`, verified by py_webauthn as the gateway verifies one, as the policy sees it."""
    import webauthn

    from gateway.auth.attestation import Attestation

    challenge = secrets.token_bytes(32)
    options = {"publicKey": {"challenge": b64u(challenge), "rp": {"id": rp_id}}}
    verified = webauthn.verify_registration_response(credential=key.register(options, origin),
                                                     expected_challenge=challenge, expected_rp_id=rp_id,
                                                     expected_origin=origin)
    return Attestation.of_registration(verified)
