"""Certificates as the APIs show them: common name, SANs, SHA-1 fingerprint and validity
derived from a PEM chain, and the checks that keep a bad chain or key out of a config
(malformed PEM, key that does not match, expired or not yet valid)."""
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtensionOID, NameOID


class CertificateError(ValueError):
    """A chain or key that cannot be served; `field` is "chain_pem" or "key_pem"."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    common_name: str
    subject_alternative_names: tuple[str, ...]
    fingerprint: str            # SHA-1 of the leaf, "AB:CD:..." (Linode ssl_fingerprint)
    not_valid_before: datetime
    not_valid_after: datetime
    chain_length: int

    def names(self) -> tuple[str, ...]:
        """Host names this certificate answers for: SANs, else the common name."""
        return self.subject_alternative_names or ((self.common_name,) if self.common_name else ())



def describe(chain_pem: str) -> CertificateInfo:
    """What the leaf certificate says; raises CertificateError for a malformed chain."""
    return _describe(chain_pem)


@lru_cache(maxsize=256)
def _describe(chain_pem: str) -> CertificateInfo:
    chain = _load_chain(chain_pem)
    leaf = chain[0]
    cns = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(cns[0].value) if cns else ""
    try:
        ext = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        sans = tuple(ext.get_values_for_type(x509.DNSName)) + tuple(
            str(ip) for ip in ext.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        sans = ()
    digest = leaf.fingerprint(hashes.SHA1()).hex().upper()
    return CertificateInfo(
        common_name=common_name, subject_alternative_names=sans,
        fingerprint=":".join(digest[i:i + 2] for i in range(0, len(digest), 2)),
        not_valid_before=leaf.not_valid_before_utc, not_valid_after=leaf.not_valid_after_utc,
        chain_length=len(chain))


def check(chain_pem: str, key_pem: str, now: datetime | None = None) -> CertificateInfo:
    """Everything a TLS listener needs to hold: a well-formed chain in order, a private
    key that matches its leaf, and a leaf valid now. Raises CertificateError."""
    info = _describe(chain_pem)
    _check_pair(chain_pem, key_pem)
    now = now or datetime.now(timezone.utc)
    if info.not_valid_after < now:
        raise CertificateError("chain_pem", f"certificate {info.common_name or info.fingerprint} "
                               f"expired on {info.not_valid_after.isoformat()}")
    if info.not_valid_before > now:
        raise CertificateError("chain_pem", f"certificate {info.common_name or info.fingerprint} "
                               f"is not valid before {info.not_valid_before.isoformat()}")
    return info


@lru_cache(maxsize=256)
def _check_pair(chain_pem: str, key_pem: str) -> None:
    leaf = _load_chain(chain_pem)[0]
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except TypeError:
        raise CertificateError("key_pem", "private key is encrypted (a passphrase-free key is needed)") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CertificateError("key_pem", f"not a PEM private key: {_short(e)}") from None
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*fmt) != leaf.public_key().public_bytes(*fmt):
        raise CertificateError("chain_pem", "private key does not match the certificate")


def _load_chain(chain_pem: str) -> list[x509.Certificate]:
    if "-----BEGIN CERTIFICATE-----" not in chain_pem:
        raise CertificateError("chain_pem", "no PEM certificate found (-----BEGIN CERTIFICATE-----)")
    try:
        chain = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError as e:
        raise CertificateError("chain_pem", f"malformed PEM certificate: {_short(e)}") from None
    for i in range(len(chain) - 1):
        if chain[i].issuer != chain[i + 1].subject:
            raise CertificateError("chain_pem", f"chain out of order: certificate {i + 1} did not "
                                   f"issue certificate {i}")
    return chain


def _short(e: Exception) -> str:
    """cryptography's messages end with a FAQ link and the parser's detail: keep the detail."""
    text = str(e).split("\n", 1)[0]
    if "more details. " in text:
        text = text.split("more details. ", 1)[1]
    return text[:200] or type(e).__name__
