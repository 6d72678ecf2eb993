"""Which security keys may answer a WebAuthn step-up: the attestation policy.

A `method: webauthn` step-up is worth something only if the key needs a hand on the local machine. Without a policy
any authenticator can be registered, including a software one (a passkey synced into a browser profile, an emulated
authenticator) that a remote operator on a laptop-farm machine can use as easily as the person who sits there. With
`webauthn.attestation_allowed_cas` set, a key must prove at registration, with an attestation certificate chain, that
it was made by a vendor whose CA the admin trusts (the model of Teleport's `attestation_allowed_cas` and
`attestation_denied_cas`); `attestation_allowed_aaguids` narrows that to given models, which only means something once the
chain is checked (an authenticator reports its own AAGUID), so the configuration refuses it without CAs.
`webauthn.attestation_mds` adds the certified models of the FIDO Metadata Service (gateway.auth.mds), each with its
own roots: such a key must chain to a root listed for the model it claims to be.

The chain a key presented is kept with its public key and judged again at every step-up against the policy in force,
so removing a CA from the list or denying one takes effect for keys already registered. Keys registered before a
policy existed carry no chain and do not count under one.

Pure: certificates in, a verdict out. The signature over the attestation statement (that the certificate's key made
it) is checked by the WebAuthn library before this runs.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

NONE_FORMAT = "none"


class AttestationRefused(Exception):
    """A key whose attestation the policy does not accept; the message is safe to show the user."""


@dataclass(frozen=True, slots=True)
class AttestationPolicy:
    allowed_roots: tuple[bytes, ...] = ()  # PEM, one certificate each: self-signed vendor roots
    denied_roots: tuple[bytes, ...] = ()  # PEM: roots or intermediates
    allowed_aaguids: frozenset[str] = field(default_factory=frozenset)  # lower-case UUID strings
    model_roots: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)  # AAGUID -> its PEM roots (MDS)

    @property
    def enforced(self) -> bool:
        return bool(self.allowed_roots or self.denied_roots or self.model_roots)

    @property
    def allow_lists(self) -> bool:
        return bool(self.allowed_roots or self.model_roots)

    @property
    def conveyance(self) -> str:
        """What registration asks the browser for: the chain only when something will judge it (asking for it
        otherwise costs users a privacy prompt in some browsers for nothing)."""
        return "direct" if self.enforced else "none"


@dataclass(frozen=True, slots=True)
class Attestation:
    """What a key presented at registration, kept with the credential (public material only)."""

    fmt: str
    aaguid: str
    x5c: tuple[bytes, ...] = ()  # DER, leaf first
    root: str | None = None  # fingerprint of the allowed root the chain reached when it was registered

    def to_json(self) -> dict:
        return {"fmt": self.fmt, "aaguid": self.aaguid, "root": self.root,
                "x5c": [base64.b64encode(c).decode("ascii") for c in self.x5c]}

    @classmethod
    def of_registration(cls, verified: object) -> "Attestation":
        """From py_webauthn's VerifiedRegistration (its statement's signature already checked)."""
        from webauthn.helpers import parse_attestation_object

        parsed = parse_attestation_object(verified.attestation_object)  # type: ignore[attr-defined]
        fmt = getattr(verified.fmt, "value", verified.fmt)  # type: ignore[attr-defined]
        return cls(str(fmt), str(verified.aaguid).lower(), tuple(parsed.att_stmt.x5c or ()))  # type: ignore[attr-defined]

    @classmethod
    def from_json(cls, data: object) -> "Attestation | None":
        if not isinstance(data, dict):
            return None
        try:
            root = data.get("root")
            return cls(str(data["fmt"]), str(data["aaguid"]).lower(),
                       tuple(base64.b64decode(c, validate=True) for c in data.get("x5c", [])),
                       str(root) if root else None)
        except (KeyError, TypeError, ValueError):
            return None


@functools.lru_cache(maxsize=4096)  # the same few hundred roots are named again at every step-up
def fingerprint(pem: bytes) -> str:
    """SHA-256 of a certificate's DER, hex: how a root is named in logs, security events and stored credentials."""
    return hashlib.sha256(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)).hexdigest()


def split_pem(text: bytes, source: str) -> tuple[bytes, ...]:
    """Each certificate of a PEM bundle on its own; ValueError naming `source` if there is none or one is broken."""
    if b"-----BEGIN CERTIFICATE-----" not in text:
        raise ValueError(f"{source}: no certificate in it")
    try:
        certs = x509.load_pem_x509_certificates(text)
    except ValueError as exc:
        raise ValueError(f"{source}: not a PEM certificate bundle ({exc})") from None
    return tuple(c.public_bytes(Encoding.PEM) for c in certs)


def _chains_to(x5c: tuple[bytes, ...], roots: tuple[bytes, ...]) -> str | None:
    """The fingerprint of the first root the chain validates against, or None."""
    from webauthn.helpers import validate_certificate_chain
    from webauthn.helpers.exceptions import InvalidCertificateChain

    for root in roots:
        try:
            validate_certificate_chain(x5c=list(x5c), pem_root_certs_bytes=[root])
        except InvalidCertificateChain:
            continue
        return fingerprint(root)
    return None


def _tied_to(x5c: tuple[bytes, ...], denied: tuple[bytes, ...]) -> str | None:
    """The fingerprint of a denied certificate that is in the chain or issued one of its certificates, or None.
    A deny list names roots or intermediates (a recalled batch), so it cannot rely on chain validation, which
    needs a self-signed anchor."""
    chain = []
    for der in x5c:
        try:
            chain.append(x509.load_der_x509_certificate(der))
        except ValueError:
            continue
    for pem in denied:
        bad = x509.load_pem_x509_certificate(pem)
        for cert in chain:
            if cert == bad:
                return fingerprint(pem)
            if cert.issuer == bad.subject:
                try:
                    cert.verify_directly_issued_by(bad)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                return fingerprint(pem)
    return None


def judge(policy: AttestationPolicy, attestation: Attestation) -> str | None:
    """None if the policy does not apply, else the fingerprint of the allowed root the key chains to (or "" when
    only denied CAs are configured and it chains to none); AttestationRefused if the key is not acceptable."""
    if not policy.enforced:
        return None
    if attestation.x5c and policy.denied_roots:
        denied = _tied_to(attestation.x5c, policy.denied_roots)
        if denied is not None:
            raise AttestationRefused(f"this security key's maker is not accepted here (CA {denied[:16]})")
    if not policy.allow_lists:
        return ""
    if not attestation.x5c:
        kind = "no attestation" if attestation.fmt == NONE_FORMAT else f"self attestation ({attestation.fmt})"
        raise AttestationRefused(f"this authenticator gave {kind}; only security keys from an approved maker are "
                                 "accepted here")
    allowed = _allowed_root(policy, attestation)
    if allowed is None:
        raise AttestationRefused("this security key is not from an approved maker")
    if policy.allowed_aaguids and attestation.aaguid.lower() not in policy.allowed_aaguids:
        raise AttestationRefused(f"this security key model ({attestation.aaguid}) is not approved here")
    return allowed


def still_allowed(policy: AttestationPolicy, stored: dict) -> bool:
    """Whether a registered credential (as the store keeps it) may answer a step-up under the policy in force.

    The root the chain reached at registration is what is judged again, not the chain's validity today: attestation
    certificates may expire (some vendors' are valid for days) while the key stays as trustworthy as it was."""
    if not policy.enforced:
        return True
    attestation = Attestation.from_json(stored.get("attestation"))
    if attestation is None:
        return False  # registered before any policy: nothing to judge it by
    if attestation.x5c and policy.denied_roots and _tied_to(attestation.x5c, policy.denied_roots) is not None:
        return False
    if not policy.allow_lists:
        return True
    if policy.allowed_aaguids and attestation.aaguid not in policy.allowed_aaguids:
        return False
    if attestation.root is not None:
        roots = policy.allowed_roots + tuple(policy.model_roots.get(attestation.aaguid, ()))
        return attestation.root in {fingerprint(r) for r in roots}
    # registered while no allow-list was in force: its chain is checked now
    return bool(attestation.x5c) and _allowed_root(policy, attestation) is not None


def _allowed_root(policy: AttestationPolicy, attestation: Attestation) -> str | None:
    """The fingerprint of the allowed root the chain reaches: one of the admin's CAs, or one the Metadata Service
    lists for the model the key claims to be."""
    found = _chains_to(attestation.x5c, policy.allowed_roots) if policy.allowed_roots else None
    if found is None and attestation.aaguid in policy.model_roots:
        found = _chains_to(attestation.x5c, policy.model_roots[attestation.aaguid])
    return found
