"""PROXY protocol v1/v2 to servers, for HTTP and plain TCP frontends, IPv4 and IPv6: the
test backend parses the header and reports the client and VIP addresses it carried."""
import json
import socket

import pytest

from lbfast import proxy_header
from lbfast.enums import Protocol, ProxyProtocol
from tests.l7_harness import Backends, L7Runner, backend, free_port, frontend, read_response


@pytest.fixture(scope="module")
def runner():
    r = L7Runner(workers=2)
    yield r
    r.close()


@pytest.fixture(scope="module")
def v4():
    b = Backends(1)
    yield b
    b.close()


@pytest.fixture(scope="module")
def v6():
    b = Backends(1, bind="::1")
    yield b
    b.close()


def peer_via(host: str, port: int, tcp: bool) -> tuple[dict, tuple]:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam) as s:
        s.settimeout(5)
        s.connect((host, port))
        me = s.getsockname()
        s.sendall(b"GET /peer HTTP/1.1\r\nHost: a\r\n\r\n")
        f = s.makefile("rb")
        status, _, body = read_response(f)
        assert status == 200
        if not tcp:             # a second request on the same client connection
            s.sendall(b"GET /peer HTTP/1.1\r\nHost: a\r\n\r\n")
            again = json.loads(read_response(f)[2])
            assert again["peer"] == json.loads(body)["peer"], "PROXY connections are never shared"
    return json.loads(body), me


@pytest.mark.parametrize("version", [ProxyProtocol.V1, ProxyProtocol.V2])
@pytest.mark.parametrize("proto", [Protocol.HTTP, Protocol.TCP])
@pytest.mark.parametrize("family", ["v4", "v6", "v6-to-v4"])
def test_proxy_header_carries_client_and_vip(runner, v4, v6, version, proto, family):
    vip = "127.0.0.1" if family == "v4" else "::1"
    servers = v6.servers if family == "v6" else v4.servers
    port = free_port(vip)
    runner.apply(frontend(port, backend(servers, proxy_protocol=version, protocol=proto),
                          address=vip, protocol=proto))
    info, me = peer_via(vip, port, proto == Protocol.TCP)
    got = info["proxy"]
    assert got["version"] == (1 if version == ProxyProtocol.V1 else 2)
    assert got["src"] == [me[0], me[1]]
    assert got["dst"] == [vip, port]


def test_encoder_matches_reference_and_parser():
    cases = [("10.0.0.1", 1234, "10.200.255.1", 80), ("fd00::2", 40000, "fd00:200:ffff::1", 443),
             ("::ffff:192.0.2.7", 5, "192.0.2.1", 8080), ("192.0.2.7", 5, "2001:db8::1", 8080)]
    for version in (1, 2):
        for c in cases:
            data = proxy_header.encode(version, *c)
            assert data == proxy_header.reference_encode(version, *c)
            info, n = proxy_header.parse(data + b"GET")
            assert n == len(data) and info["src"][1] == c[1] and info["dst"][1] == c[3]
    with pytest.raises(ValueError):
        proxy_header.encode(2, "not-an-ip", 1, "10.0.0.1", 2)
