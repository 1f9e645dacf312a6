"""One certificate for every TLS case (backends, lbfast, HAProxy, nginx) and the single
TLS 1.3 cipher they are all pinned to, so the TLS rows compare like with like."""
from __future__ import annotations

import os
from dataclasses import dataclass

TLS_VERSION = "TLSv1.3"
# OpenSSL's first choice for TLS 1.3: what a server left on its defaults negotiates with
# wrk and Python clients, so pinning the peers to it matches lbfast's "recommended" suite.
CIPHERSUITE = "TLS_AES_256_GCM_SHA384"
SERVER_NAME = "bench.lbfast.test"


@dataclass(frozen=True)
class CertFiles:
    cert: str            # leaf + chain, PEM
    key: str             # private key, PEM
    combined: str        # cert then key in one file (HAProxy's `crt`)
    ca: str              # the issuing CA, for the functional check's verification
    description: str

    def chain_pem(self) -> str:
        with open(self.cert) as f:
            return f.read()

    def key_pem(self) -> str:
        with open(self.key) as f:
            return f.read()


def make_certificate(directory: str, addresses: list[str]) -> CertFiles:
    """An ECDSA P-256 server certificate from a throwaway CA (trustme), valid for the
    bench name and every address a client connects to."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert(SERVER_NAME, *addresses)
    cert = os.path.join(directory, "server.crt")
    key = os.path.join(directory, "server.key")
    combined = os.path.join(directory, "server.pem")
    ca_path = os.path.join(directory, "ca.crt")
    chain = b"".join(b.bytes() for b in leaf.cert_chain_pems)
    with open(cert, "wb") as f:
        f.write(chain)
    with open(key, "wb") as f:
        f.write(leaf.private_key_pem.bytes())
    with open(combined, "wb") as f:
        f.write(chain + leaf.private_key_pem.bytes())
    ca.cert_pem.write_to_path(ca_path)
    for path in (key, combined):
        os.chmod(path, 0o600)
    return CertFiles(cert, key, combined, ca_path,
                     f"ECDSA P-256 leaf from a throwaway CA (trustme), {TLS_VERSION} {CIPHERSUITE}")
