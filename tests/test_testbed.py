"""The netns testbed itself: real traffic through the LB namespace, servers, teardown."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from control.testbed import Testbed, cleanup_stale, ethtool_offload_off, gro_on
from control.testbed_servers import HTTP_PORT, TCP_ECHO_PORT, UDP_ECHO_PORT, pattern

pytestmark = pytest.mark.netns

VIP6 = "fd00:200:ffff::1"


def recv_all(s: socket.socket) -> bytes:
    out = bytearray()
    while chunk := s.recv(65536):
        out += chunk
    return bytes(out)


def read_response(f) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response with Content-Length from a socket file."""
    status = f.readline().decode()
    code = int(status.split()[1])
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers["content-length"]))
    return code, headers, body


def http(host, addr, path, method="GET", body=b"", extra=b"") -> tuple[int, dict, bytes]:
    with host.connect(addr, HTTP_PORT) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  f"Content-Length: {len(body)}\r\n".encode() + extra + b"\r\n" + body)
        return read_response(s.makefile("rb"))


def ns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                          check=True).stdout


def test_layout_and_sysctls(testbed):
    tb = testbed
    assert tb.client.ip == "10.200.0.2" and tb.client.ip6 == "fd00:200::2"
    assert (tb.lb_client_ip, tb.lb_client_ip6) == ("10.200.0.1", "fd00:200::1")
    assert [b.ip for b in tb.backends] == ["10.200.1.2", "10.200.2.2"]
    assert tb.lb_backend_ips == ["10.200.1.1", "10.200.2.1"]
    assert tb.lb_backend_ip6s == ["fd00:200:1::1", "fd00:200:2::1"]
    names = [tb.lb_client_if, *tb.lb_backend_ifs, tb.client.ifname,
             *(b.ifname for b in tb.backends)]
    assert len(set(names)) == len(names) and all(len(n) <= 15 for n in names)
    listed = ns_list()
    assert all(h.name in listed for h in tb.hosts)
    lb_keys = ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
               *(f"net.ipv4.conf.{i}.forwarding" for i in [tb.lb_client_if, *tb.lb_backend_ifs])]
    out = tb.lb.run(["sysctl", "-n", *lb_keys]).stdout.split()
    assert tb.lb.ifindex(tb.lb_client_if) > 1
    assert out == ["1"] * len(lb_keys)
    routes = tb.client.run(["ip", "-j", "route", "show", "default"]).stdout
    assert json.loads(routes)[0]["gateway"] == "10.200.0.1"
    routes6 = tb.client.run(["ip", "-j", "-6", "route", "show", "default"]).stdout
    assert json.loads(routes6)[0]["gateway"] == "fd00:200::1"
    ethtool_offload_off(tb.client, tb.client.ifname)
    gro_on(tb.lb, tb.lb_client_if)
    feats = tb.client.run(["ethtool", "-k", tb.client.ifname]).stdout
    assert "tx-checksumming: off" in feats
    assert "generic-receive-offload: on" in tb.lb.run(["ethtool", "-k", tb.lb_client_if]).stdout


def test_http_routed_through_lb_v4_v6(testbed):
    tb = testbed
    for i, b in enumerate(tb.backends):
        # curl in the client namespace, by routing through the LB namespace
        assert tb.client.run(["curl", "-sS", "--max-time", "5",
                              f"http://10.200.{i + 1}.2:{HTTP_PORT}/"]).stdout == f"b{i}"
        assert tb.client.run(["curl", "-sS", "-g", "--max-time", "5",
                              f"http://[fd00:200:{i + 1}::2]:{HTTP_PORT}/"]).stdout == f"b{i}"
        # Python sockets created inside the client namespace; not NATed: peer is the client
        for addr, src in ((b.ip, tb.client.ip), (b.ip6, tb.client.ip6)):
            code, hdrs, body = http(tb.client, addr, "/peer")
            info = json.loads(body)
            assert code == 200 and hdrs["x-backend"] == f"b{i}"
            assert info["name"] == f"b{i}" and info["peer"][0] == src
            assert info["local"] == [addr, HTTP_PORT]


def test_http_endpoints_keepalive_and_proxy_header(testbed):
    c, b0 = testbed.client, testbed.backends[0]
    with c.connect(b0.ip, HTTP_PORT) as s:  # keep-alive: several requests, one connection
        f = s.makefile("rb")
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /bytes/200000 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(f)[2] == b"b0"
        code, _, body = read_response(f)
        assert code == 200 and body == pattern(200000)
        payload = os.urandom(300000)
        s.sendall(b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + b"".join(b"%x\r\n%s\r\n" % (len(p), p)
                             for p in (payload[:100000], payload[100000:]))
                  + b"0\r\n\r\n")
        code, _, body = read_response(f)
        assert json.loads(body) == {"length": len(payload),
                                    "sha256": hashlib.sha256(payload).hexdigest()}
        s.sendall(b"GET /headers HTTP/1.1\r\nHost: x\r\nX-Test: a\r\nX-Test: b\r\n\r\n")
        assert json.loads(read_response(f)[2])["x-test"] == "a, b"
    code, _, body = http(c, b0.ip, "/sink", "POST", b"hello")
    assert json.loads(body) == {"length": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}
    assert http(c, b0.ip, "/nope")[0] == 404
    assert http(c, b0.ip, "/status/503")[0] == 503
    assert http(c, b0.ip, "/health", "POST")[0] == 404
    assert http(c, b0.ip, "/health/down", "POST")[0] == 200
    assert http(c, b0.ip, "/health")[0] == 503
    assert http(c, b0.ip, "/health/up", "POST")[0] == 200
    assert http(c, b0.ip, "/health")[0] == 200
    # PROXY protocol v1 and v2 headers are parsed and reported
    with c.connect(b0.ip, HTTP_PORT) as s:
        s.sendall(b"PROXY TCP4 192.0.2.7 10.200.255.1 4242 80\r\n"
                  b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        proxy = json.loads(read_response(s.makefile("rb"))[2])["proxy"]
        assert proxy == {"version": 1, "src": ["192.0.2.7", 4242], "dst": ["10.200.255.1", 80]}
    v2 = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x21]) + (36).to_bytes(2, "big")
          + socket.inet_pton(socket.AF_INET6, "2001:db8::7")
          + socket.inet_pton(socket.AF_INET6, VIP6) + (4242).to_bytes(2, "big")
          + (443).to_bytes(2, "big"))
    with c.connect(b0.ip6, HTTP_PORT) as s:
        s.sendall(v2 + b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
        proxy = json.loads(read_response(s.makefile("rb"))[2])["proxy"]
        assert proxy["src"] == ["2001:db8::7", 4242] and proxy["dst"] == [VIP6, 443]



def test_tcp_echo_half_close_and_udp_echo(testbed):
    c = testbed.client
    for i, b in enumerate(testbed.backends):
        for addr in (b.ip, b.ip6):
            with c.connect(addr, TCP_ECHO_PORT) as s:
                data = os.urandom(100000)
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)  # half-close: the server echoes all, then FINs
                assert recv_all(s) == data
            fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
            with c.socket(fam, socket.SOCK_DGRAM) as u:
                u.settimeout(5)
                u.sendto(b"ping", (addr, UDP_ECHO_PORT))
                assert u.recvfrom(2048)[0] == f"b{i}:ping".encode()


def test_vip_local_on_lb(testbed):
    tb = testbed
    assert tb.vip == "10.200.255.1" and tb.vip6 == VIP6
    tb.add_vip_local()
    tb.add_vip_local()  # idempotent
    tb.lb.python(["-m", "control.testbed_servers", "--name", "lb", "--http", str(HTTP_PORT),
                  "--bind", tb.vip, "--bind", tb.vip6],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tb.wait_port(tb.client, tb.vip, HTTP_PORT)
    assert http(tb.client, tb.vip, "/")[2] == b"lb"
    assert http(tb.client, tb.vip6, "/")[2] == b"lb"


def test_teardown_removes_everything(testbed_factory):
    a = testbed_factory(backends=3, servers=("http",))
    b = testbed_factory(backends=1, servers=False)
    assert a.prefix != b.prefix and a.lb.name != b.lb.name
    assert [http(a.client, x.ip, "/")[2] for x in a.backends] == [b"b0", b"b1", b"b2"]
    names = [h.name for h in a.hosts]
    # an untracked process inside a namespace is killed too
    stray = subprocess.Popen(["ip", "netns", "exec", a.backends[0].name, "sleep", "60"])
    workdir = a.workdir
    a.close()
    a.close()  # idempotent
    assert stray.wait(timeout=5) != 0
    listed = ns_list().split()
    assert not any(n in listed for n in names)
    assert not os.path.exists(workdir)
    for p in a.server_procs:  # reaped by close()
        assert p.returncode is not None
        assert not os.path.exists(f"/proc/{p.pid}")
    assert b.lb.name in ns_list()  # the other testbed is untouched


def test_teardown_after_exception():
    names = []
    with pytest.raises(RuntimeError, match="boom"):
        with Testbed(backends=1) as tb:
            names = [h.name for h in tb.hosts]
            tb.client.popen(["sleep", "60"])
            raise RuntimeError("boom")
    assert tb.closed
    listed = ns_list().split()
    assert names and not any(n in listed for n in names)


def test_atexit_cleans_up_in_child_process():
    code = textwrap.dedent("""
        import os
        from control.testbed import Testbed
        tb = Testbed(backends=1)
        tb.client.popen(["sleep", "60"])
        print(" ".join(h.name for h in tb.hosts), flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    listed = ns_list().split()
    assert len(out) == 3 and not any(n in listed for n in out)


def test_stale_namespaces_of_a_killed_run_are_removed():
    code = textwrap.dedent("""
        import os, signal, subprocess
        from control.testbed import Testbed
        tb = Testbed(backends=1)
        tb.client.popen(["sleep", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print(" ".join(h.name for h in tb.hosts), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    names = r.stdout.split()
    assert r.returncode == -9 and len(names) == 3
    assert all(n in ns_list().split() for n in names)
    assert set(names) <= set(cleanup_stale())
    listed = ns_list().split()
    assert not any(n in listed for n in names)


CI_PROBE = '''
import pytest

@pytest.mark.netns
def test_netns_skipped():
    pytest.skip("simulated: no namespaces")

@pytest.mark.xdp
def test_xdp_skipped():
    pytest.skip("simulated: no bcc")

def test_plain_skipped():
    pytest.skip("fine")
'''


@pytest.mark.parametrize("ci", ["true", ""])
def test_ci_turns_netns_skips_into_failures(tmp_path, ci):
    here = os.path.dirname(__file__)
    (tmp_path / "conftest.py").write_text(open(os.path.join(here, "conftest.py")).read())
    (tmp_path / "test_probe.py").write_text(CI_PROBE)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "CI": ci, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-rA", str(tmp_path)], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120)
    if ci:
        assert "2 failed, 1 skipped" in r.stdout, r.stdout + r.stderr
        assert "CI=true: test marked netns was skipped" in r.stdout
    else:
        assert "3 skipped" in r.stdout, r.stdout + r.stderr
