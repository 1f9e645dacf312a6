"""TLS termination against a trustme CA: Python ssl, curl and openssl s_client verify the
chain; SNI picks the certificate; `recommended` refuses TLS 1.0; ALPN http/1.1; tickets
resume sessions; the backend sees X-Forwarded-Proto https."""
import json
import re
import socket
import ssl
import subprocess

import pytest
import trustme

from lbfast.enums import CipherSuite, Protocol
from lbfast.spec import CertificateSpec
from tests.l7_harness import Backends, L7Runner, backend, free_port, frontend


def cert_spec(ca: trustme.CA, cid: int, *names: str) -> CertificateSpec:
    c = ca.issue_cert(*names)
    return CertificateSpec(id=cid, name=names[0], chain_pem="".join(b.bytes().decode() for b in c.cert_chain_pems),
                           key_pem=c.private_key_pem.bytes().decode())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    ca = trustme.CA()
    cafile = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    b = Backends(1)
    r = L7Runner(workers=2)
    port, legacy_port = free_port(), free_port()
    certs = (cert_spec(ca, 1, "a.test", "www.a.test"), cert_spec(ca, 2, "b.test", "*.b.test"))
    r.apply(frontend(port, backend(b.servers), protocol=Protocol.HTTPS, certificates=certs),
            frontend(legacy_port, backend(b.servers), protocol=Protocol.HTTPS, certificates=certs,
                     frontend_id=2, cipher_suite=CipherSuite.LEGACY))
    yield ca, str(cafile), port, legacy_port
    r.close()
    b.close()


def client_ctx(ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def https_get(ctx, port, name, path="/", session=None):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name, session=session) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            cert = s.getpeercert()
            return data, cert, s.selected_alpn_protocol(), s.session, s.session_reused, s.version()


def san(cert) -> set[str]:
    return {v for k, v in cert["subjectAltName"]}


def test_python_ssl_sni_picks_certificate(setup):
    ca, _, port, _ = setup
    ctx = client_ctx(ca)
    data, cert, alpn, *_ = https_get(ctx, port, "a.test")
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"b0")
    assert "a.test" in san(cert) and alpn == "http/1.1"
    assert "b.test" in san(https_get(ctx, port, "b.test")[1])
    assert "b.test" in san(https_get(ctx, port, "x.b.test")[1])      # wildcard
    headers = json.loads(https_get(ctx, port, "www.a.test", "/headers")[0].split(b"\r\n\r\n", 1)[1])
    assert headers["x-forwarded-proto"] == "https" and headers["x-forwarded-port"] == str(port)


def serving_pid(port: int, client_port: int) -> int:
    """The worker process holding the accepted end of our connection (ss -p, as root)."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} and dport = :{client_port} )"],
                         capture_output=True, text=True, timeout=5, check=True).stdout
    return int(re.search(r"pid=(\d+)", out).group(1))


def resumed_on(ctx, port, name, session) -> tuple[bool, int]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=name, session=session) as s:
            return s.session_reused, serving_pid(port, s.getsockname()[1])


def test_session_tickets_resume_on_every_worker(setup):
    ca, _, port, _ = setup
    ctx = client_ctx(ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2    # TLS 1.2: the session is ready after the handshake
    _, _, _, session, reused, _ = https_get(ctx, port, "a.test")
    assert not reused and session is not None and session.has_ticket
    # New connections land on either worker (SO_REUSEPORT hash): each resumes, and both
    # workers (2 distinct processes) are seen doing so.
    results = [resumed_on(ctx, port, "a.test", session) for _ in range(24)]
    assert all(reused for reused, _ in results)
    assert len({pid for _, pid in results}) == 2


def test_curl_verifies_against_ca(setup):
    _, cafile, port, _ = setup
    for name in ("a.test", "b.test"):
        out = subprocess.run(["curl", "-sS", "--cacert", cafile, "--resolve", f"{name}:{port}:127.0.0.1",
                              f"https://{name}:{port}/", "-w", " %{http_code} %{ssl_verify_result}"],
                             capture_output=True, text=True, timeout=10)
        assert out.stdout == "b0 200 0", out.stderr


def test_openssl_s_client_sni_and_verify(setup):
    _, cafile, port, _ = setup
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "b.test",
                          "-CAfile", cafile, "-alpn", "http/1.1", "-verify_return_error"],
                         input="", capture_output=True, text=True, timeout=10)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "Verify return code: 0 (ok)" in text, text
    assert "ALPN protocol: http/1.1" in text
    pem = text[text.index("-----BEGIN CERTIFICATE-----"):text.index("-----END CERTIFICATE-----") + 25]
    ext = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName"], input=pem,
                         capture_output=True, text=True, timeout=10).stdout
    assert "DNS:b.test" in ext and "a.test" not in ext


def s_client(port: int, version: str) -> tuple[int, str]:
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", version,
                          "-cipher", "DEFAULT:@SECLEVEL=0", "-servername", "a.test"],
                         input="", capture_output=True, text=True, timeout=10)
    return out.returncode, out.stdout + out.stderr


def test_recommended_refuses_tls10_and_11(setup):
    ca, _, port, legacy_port = setup
    for version, name in (("-tls1", "TLSv1"), ("-tls1_1", "TLSv1.1")):
        code, text = s_client(legacy_port, version)      # this client does speak it...
        assert code == 0 and f"Protocol  : {name}\n" in text, text
        code, text = s_client(port, version)             # ...and `recommended` refuses it
        assert code != 0 and "Cipher is (NONE)" in text, text    # (it closes, no alert sent)
    ctx = client_ctx(ca)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("AES128-SHA")               # no forward secrecy, no AEAD: not offered
    with pytest.raises(ssl.SSLError, match="UNEXPECTED_EOF|HANDSHAKE_FAILURE"):
        https_get(ctx, port, "a.test")         # closed mid-handshake, not a certificate error


def test_legacy_accepts_tls10(setup):
    # No run-time skip: Debian 12's OpenSSL client speaks TLS 1.0 at SECLEVEL=0.
    _, _, _, legacy_port = setup
    code, text = s_client(legacy_port, "-tls1")
    assert code == 0 and "Protocol  : TLSv1\n" in text, text
