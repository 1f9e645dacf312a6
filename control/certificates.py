"""Certificates as the APIs show them: common name, SANs, SHA-1 fingerprint and validity
derived from a PEM chain, and the checks that keep a bad chain or key out of a config
(malformed PEM, key that does not match, expired or not yet valid). Verdicts are kept,
so a config validated again (every API change) does not parse its certificates again.
PEM is split line by line and every field is capped: hostile input costs linear time."""
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtensionOID, NameOID

MAX_PEM_BYTES = 64 * 1024       # one chain, or one key; a real chain is a few KB
CACHE_SIZE = 256                # verdicts kept (certificates of the running config and recent requests)
_PEM_LINE = re.compile(r"-----(BEGIN|END) ([A-Z0-9 ]{1,64})-----")


class CertificateError(ValueError):
    """A chain or key that cannot be served; `field` is "chain_pem" or "key_pem"."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)

    def __reduce__(self):                   # raised in control.api.offload's worker process
        return type(self), (self.field, str(self))


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
    info = _infos.get(chain_pem)
    if info is None:
        info = _parse(chain_pem)
        _keep(_infos, chain_pem, info)
    return info


def _parse(chain_pem: str) -> CertificateInfo:
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
    info = describe(chain_pem)
    if (chain_pem, key_pem) not in _pairs:
        _check_pair(chain_pem, key_pem)
        _keep(_pairs, (chain_pem, key_pem), True)
    now = now or datetime.now(timezone.utc)
    if info.not_valid_after < now:
        raise CertificateError("chain_pem", f"certificate {info.common_name or info.fingerprint} "
                               f"expired on {info.not_valid_after.isoformat()}")
    if info.not_valid_before > now:
        raise CertificateError("chain_pem", f"certificate {info.common_name or info.fingerprint} "
                               f"is not valid before {info.not_valid_before.isoformat()}")
    return info


def known(chain_pem: str, key_pem: str) -> bool:
    """Both the chain and the pair were checked already: check() costs nothing."""
    return chain_pem in _infos and (chain_pem, key_pem) in _pairs


def remember(chain_pem: str, key_pem: str, info: CertificateInfo) -> None:
    """Keep a verdict reached in another process (control.api.offload checks API input off
    the event loop), so that validating the config here finds it."""
    _keep(_infos, chain_pem, info)
    _keep(_pairs, (chain_pem, key_pem), True)


_infos: dict[str, CertificateInfo] = {}
_pairs: dict[tuple[str, str], bool] = {}


def _keep(cache: dict, key, value) -> None:
    cache[key] = value
    if len(cache) > CACHE_SIZE:
        del cache[next(iter(cache))]        # the oldest


def _check_pair(chain_pem: str, key_pem: str) -> None:
    leaf = _load_chain(chain_pem)[0]
    if len(key_pem) > MAX_PEM_BYTES:
        raise CertificateError("key_pem", f"longer than {MAX_PEM_BYTES} bytes")
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except TypeError:
        raise CertificateError("key_pem", "private key is encrypted (a passphrase-free key is needed)") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CertificateError("key_pem", f"not a PEM private key: {_short(e)}") from None
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if key.public_key().public_bytes(*fmt) != leaf.public_key().public_bytes(*fmt):
        raise CertificateError("chain_pem", "private key does not match the certificate")


def pem_blocks(text: str) -> list[tuple[str, str]]:
    """(label, block) of every complete PEM block in `text`, in order, in one pass over its
    lines: a BEGIN inside an open block starts that block over, a block never ended is
    dropped."""
    blocks, label, lines = [], None, []
    for line in text.splitlines():
        line = line.strip()
        m = _PEM_LINE.fullmatch(line)
        if m and m[1] == "BEGIN":
            label, lines = m[2], [line]
        elif label is not None:
            lines.append(line)
            if m and m[2] == label:
                blocks.append((label, "\n".join(lines)))
                label = None
    return blocks


def _load_chain(chain_pem: str) -> list[x509.Certificate]:
    if len(chain_pem) > MAX_PEM_BYTES:
        raise CertificateError("chain_pem", f"longer than {MAX_PEM_BYTES} bytes")
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
