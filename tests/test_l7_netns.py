"""The L7 data plane on the netns testbed: workers in the LB namespace, real backends in
their own namespaces, a client namespace with curl; cookie stickiness across both
backends and PROXY v2 carrying the real client addresses over IPv4 and IPv6."""
import json

import pytest

from lbfast.enums import ProxyProtocol, Stickiness
from tests.l7_harness import L7Runner, backend, frontend

PORT = 8000


@pytest.fixture
def lb(testbed):
    testbed.add_vip_local()
    r = L7Runner(workers=2, netns=testbed.lb.name)
    yield testbed, r
    r.close()


def curl(tb, *args) -> str:
    return tb.client.run(["curl", "-sS", "--max-time", "5", *args]).stdout


def test_cookie_stickiness_between_namespaces(lb, tmp_path):
    tb, r = lb
    servers = [(b.ip, 8080) for b in tb.backends]
    r.apply(frontend(PORT, backend(servers, stickiness=Stickiness.COOKIE, sticky_cookie_name="LB"),
                     address=tb.vip))
    url = f"http://{tb.vip}:{PORT}/"
    pinned = {}
    for client in range(4):
        jar = tmp_path / f"jar{client}"
        names = curl(tb, "-b", str(jar), "-c", str(jar), *[url] * 25, "-w", " ").split()
        assert len(set(names)) == 1, names
        pinned[client] = names[0]
    assert set(pinned.values()) == {"b0", "b1"}


def test_proxy_v2_real_client_addresses(lb):
    tb, r = lb
    r.apply(frontend(PORT, backend([(tb.backends[0].ip, 8080)], proxy_protocol=ProxyProtocol.V2),
                     address=tb.vip),
            frontend(PORT, backend([(tb.backends[1].ip6, 8080)], backend_id=2,
                                   proxy_protocol=ProxyProtocol.V2), address=tb.vip6, frontend_id=2))
    v4 = json.loads(curl(tb, f"http://{tb.vip}:{PORT}/peer"))
    assert v4["proxy"]["version"] == 2
    assert v4["proxy"]["src"][0] == tb.client.ip and v4["proxy"]["dst"] == [tb.vip, PORT]
    v6 = json.loads(curl(tb, f"http://[{tb.vip6}]:{PORT}/peer"))
    assert v6["name"] == "b1" and v6["proxy"]["version"] == 2
    assert v6["proxy"]["src"][0] == tb.client.ip6 and v6["proxy"]["dst"] == [tb.vip6, PORT]
