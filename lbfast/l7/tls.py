"""TLS termination for one frontend: one SSLContext per certificate, picked by SNI (exact
name, then wildcard, else the first certificate), cipher policy from `cipher_suite`, ALPN
http/1.1 and session tickets (rotating keys: lbfast.l7._tickets); no renegotiation. The
listener keeps one front context for its life; a reload swaps the certificates behind it."""
import ctypes
import ctypes.util
import logging
import os
import ssl
import tempfile
import warnings
from collections.abc import Sequence

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from lbfast.enums import CipherSuite
from lbfast.l7 import _tickets
from lbfast.spec import CertificateSpec

log = logging.getLogger("lbfast.l7.tls")

# TLS 1.2 with forward-secret AEAD only; TLS 1.3 suites are all AEAD and always on.
RECOMMENDED_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
# Anything the OpenSSL build still has; security level 0 lets TLS 1.0/1.1 (SHA-1) through.
LEGACY_CIPHERS = "ALL:!aNULL:!eNULL:@SECLEVEL=0"


def certificate_names(chain_pem: str) -> list[str]:
    leaf = x509.load_pem_x509_certificate(chain_pem.encode())
    try:
        ext = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        names = list(ext.get_values_for_type(x509.DNSName))
        names += [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [n.lower() for n in names]


def new_context(cipher_suite: CipherSuite) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    apply_policy(ctx, cipher_suite)
    ctx.set_alpn_protocols(["http/1.1"])
    # renegotiation is a client-driven CPU sink and an old attack surface: TLS 1.3 has none
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    ctx.options &= ~ssl.OP_NO_TICKET        # resumption by tickets (TLS 1.2 and 1.3)
    return ctx


def apply_policy(ctx: ssl.SSLContext, cipher_suite: CipherSuite) -> None:
    if cipher_suite == CipherSuite.LEGACY:
        ctx.set_ciphers(LEGACY_CIPHERS)
        try:
            with warnings.catch_warnings():     # deprecated, and exactly what legacy asks for
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1
        except ValueError:
            log.warning("this OpenSSL build refuses TLS 1.0: legacy keeps its oldest version")
    else:
        ctx.set_ciphers(RECOMMENDED_CIPHERS)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2


_libssl = None


def ssl_ctx_pointer(ctx: ssl.SSLContext) -> int | None:
    """The SSL_CTX behind an ssl.SSLContext, which has no API for it: read from the context
    object (the first field after the object header) and checked against the options
    OpenSSL reports for it before anyone writes through it. None when not possible."""
    global _libssl
    try:
        if _libssl is None:
            _libssl = ctypes.CDLL(ctypes.util.find_library("ssl") or "libssl.so.3")
            _libssl.SSL_CTX_get_options.restype = ctypes.c_uint64
            _libssl.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
        if not ptr or _libssl.SSL_CTX_get_options(ptr) != int(ctx.options):
            return None
        return ptr
    except (OSError, AttributeError, ValueError):
        return None


def share_ticket_keys(ctx: ssl.SSLContext) -> bool:
    """Tickets of this context use the process's rotating keys (lbfast.l7._tickets), the
    same in every worker, so a ticket from one worker resumes on another. False when not
    possible (tickets then resume on their own worker only)."""
    ptr = ssl_ctx_pointer(ctx)
    if ptr is None:
        return False
    try:
        _tickets.install(ptr)
    except ValueError:
        return False
    return True


def load_certificate(ctx: ssl.SSLContext, cert: CertificateSpec) -> None:
    """ssl only loads from files: write the PEMs to a private temporary file, load, remove."""
    fd, path = tempfile.mkstemp(prefix="lbfast-cert-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(cert.chain_pem.rstrip() + "\n" + cert.key_pem.rstrip() + "\n")
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)


class TlsFrontend:
    """The contexts of one https frontend. `context` goes to the listener once."""

    def __init__(self, certificates: Sequence[CertificateSpec], cipher_suite: CipherSuite,
                 ticket_keys: bool = False):
        self.ticket_keys = ticket_keys      # share the process's rotating keys (_tickets.rotate)
        self.context = new_context(cipher_suite)
        self._share(self.context)
        self.context.sni_callback = self._pick
        self._key = None
        self.default: ssl.SSLContext | None = None
        self.by_name: dict[str, ssl.SSLContext] = {}
        self.update(certificates, cipher_suite)

    def update(self, certificates: Sequence[CertificateSpec], cipher_suite: CipherSuite) -> None:
        """Build every context before swapping any, so a bad certificate changes nothing."""
        key = (tuple((c.chain_pem, c.key_pem) for c in certificates), cipher_suite)
        if key == self._key:
            return
        if not certificates:
            raise ValueError("an https frontend needs at least one certificate")
        if cipher_suite == CipherSuite.LEGACY:
            log.warning("cipher_suite legacy: TLS 1.0/1.1 and weak ciphers are accepted where OpenSSL permits")
        built: list[tuple[list[str], ssl.SSLContext]] = []
        for cert in certificates:
            ctx = new_context(cipher_suite)
            self._share(ctx)
            load_certificate(ctx, cert)
            built.append((certificate_names(cert.chain_pem), ctx))
        by_name: dict[str, ssl.SSLContext] = {}
        for names, ctx in built:
            for n in names:
                by_name.setdefault(n, ctx)
        load_certificate(self.context, certificates[0])
        apply_policy(self.context, cipher_suite)
        self.default = built[0][1]
        self.by_name = by_name
        self._key = key

    def _share(self, ctx: ssl.SSLContext) -> None:
        if self.ticket_keys and not share_ticket_keys(ctx):
            log.warning("session-ticket keys not shared: tickets resume on their own worker only")
            self.ticket_keys = None

    def select(self, server_name: str | None) -> ssl.SSLContext:
        if server_name:
            name = server_name.lower().rstrip(".")
            ctx = self.by_name.get(name)
            if ctx is not None:
                return ctx
            dot = name.find(".")
            if dot > 0:
                ctx = self.by_name.get("*" + name[dot:])
                if ctx is not None:
                    return ctx
        return self.default

    def _pick(self, sslobj, server_name, _ctx) -> None:
        ctx = self.select(server_name)
        if ctx is not None and ctx is not self.context:
            sslobj.context = ctx
