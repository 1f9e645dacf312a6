"""TLS session-ticket keys rotate (the daemon hands the workers a new key every hour): a
ticket issued under the previous key still resumes, on any worker, and is renewed; one two
keys old makes a full handshake. Renegotiation is refused."""
import socket
import ssl
import subprocess
import time

import pytest
import trustme

from lbfast.enums import CipherSuite, Protocol
from lbfast.l7.tls import new_context
from tests.l7_harness import Backends, L7Runner, backend, free_port, frontend
from tests.test_l7_tls import cert_spec, client_ctx, https_get


@pytest.fixture(scope="module")
def setup():
    ca = trustme.CA()
    b = Backends(1)
    r = L7Runner(workers=2)
    port = free_port()
    r.apply(frontend(port, backend(b.servers), protocol=Protocol.HTTPS, certificates=(cert_spec(ca, 1, "a.test"),)))
    yield ca, r, port
    r.close()
    b.close()


def rotate(runner: L7Runner) -> None:
    runner.lt.call(runner.dp.rotate_ticket_keys)
    time.sleep(0.2)         # the workers take the key from their channel


def new_session(ctx, port):
    _, _, _, session, reused, _ = https_get(ctx, port, "a.test")
    assert not reused and session.has_ticket
    return session


def test_previous_key_resumes_and_older_ones_do_not(setup):
    ca, runner, port = setup
    ctx = client_ctx(ca)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2    # the session is ready after the handshake
    before = new_session(ctx, port)
    rotate(runner)
    assert all(https_get(ctx, port, "a.test", session=before)[4] for _ in range(8))   # both workers
    after = new_session(ctx, port)
    assert after.id != before.id
    rotate(runner)
    assert not https_get(ctx, port, "a.test", session=before)[4]     # two keys old: full handshake
    assert https_get(ctx, port, "a.test", session=after)[4]


def test_renegotiation_is_refused(setup):
    _, _, port = setup
    # set explicitly, not left to the OpenSSL build's default
    assert new_context(CipherSuite.RECOMMENDED).options & ssl.OP_NO_RENEGOTIATION
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "a.test",
                          "-tls1_2", "-no_ign_eof"], input="R\n", capture_output=True, text=True, timeout=10)
    text = out.stdout + out.stderr
    assert "RENEGOTIATING" in text, text
    assert "no renegotiation" in text, text
