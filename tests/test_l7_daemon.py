"""The daemon runs the L7 data plane: no worker until an http/https (or PROXY-protocol TCP)
frontend exists, N workers on SO_REUSEPORT listeners that survive reloads, L7 frontends in
status and stats, and a bad certificate rejected at config time naming its field."""
import os
import socket
import time

import pytest
import trustme

from control import config as configfile
from tests.l7_harness import read_response
from tests.lbrun import Backends, Daemon, ask, free_port, wait_for

VIP = "127.0.0.12"


def children(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out += [int(p) for p in f.read().split()]
    return out


def lb(port: int, backends: Backends, **extra) -> dict:
    return {"dataplane": {"workers": 2},
            "lbs": [{"name": "t", "vip": VIP,
                     "backends": [{"name": "web", "protocol": "http", "forward_port": 1,
                                   "servers": [{"address": "127.0.0.1", "port": p} for p in backends.http.values()],
                                   **extra.pop("backend", {})}],
                     "frontends": [{"name": "www", "port": port, "backend": "web", **extra.pop("frontend", {})}],
                     **extra}]}


def test_workers_start_lazily_and_listeners_survive_reload(tmp_path):
    backends = Backends(["a", "b"])
    port = free_port(VIP)
    cfg = lb(port, backends)
    cfg["lbs"][0]["backends"][0]["protocol"] = "tcp"
    d = Daemon(tmp_path, cfg)
    try:
        assert children(d.proc.pid) == []              # TCP only: no L7 worker
        d.write(lb(port, backends))
        d.reload()
        assert len(children(d.proc.pid)) == 2
        assert wait_for(lambda: ask(VIP, port) in ("a", "b"), what="L7 answer")
        status = d.status()
        row = [f for f in status["frontends"] if f["listen"] == f"{VIP}:{port}"][0]
        assert row["dataplane"] == "l7" and row["protocol"] == "http"
        # a connection open across a reload keeps working; the listener never closes
        s = socket.create_connection((VIP, port), timeout=5)
        f = s.makefile("rb")
        pids = children(d.proc.pid)
        for i in range(3):
            d.write(lb(port, backends, backend={"stickiness": "cookie"} if i % 2 else {}))
            d.reload()
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(f)[0] == 200
            assert ask(VIP, port) in ("a", "b")
        s.close()
        assert children(d.proc.pid) == pids            # same workers: reloads never restart them
        time.sleep(1.2)
        stats = d.stats()
        assert any(f["port"] == port and f["requests"] >= 5 for f in stats["frontends"])
        d.write(cfg)                                    # back to TCP only: workers stop
        d.reload()
        assert wait_for(lambda: children(d.proc.pid) == [], what="workers gone")
        assert ask(VIP, port) in ("a", "b")             # now served by the L4 proxy
    finally:
        d.close()
        backends.close()


def test_bad_certificates_are_config_errors():
    ca = trustme.CA()
    good, other = ca.issue_cert("a.test"), ca.issue_cert("b.test")
    chain = good.cert_chain_pems[0].bytes().decode()
    cases = {
        "chain_pem": (chain, other.private_key_pem.bytes().decode()),          # key of another cert
        "key_pem": (chain, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
    }
    for field, (chain_pem, key_pem) in cases.items():
        cfg = {"lbs": [{"name": "t", "vip": VIP, "certificates": [
            {"name": "c", "chain_pem": chain_pem, "key_pem": key_pem}]}]}
        with pytest.raises(configfile.ConfigError) as e:
            configfile.parse(cfg)
        assert e.value.problems[0][0] == f"lbs[0].certificates[0].{field}"
    cfg = {"lbs": [{"name": "t", "vip": VIP, "certificates": [
        {"name": "c", "chain_pem": chain[:100] + "!" + chain[101:], "key_pem": "x"}]}]}
    with pytest.raises(configfile.ConfigError) as e:
        configfile.parse(cfg)
    assert e.value.problems[0][0] == "lbs[0].certificates[0].chain_pem"


def test_expired_certificate_and_derived_fields():
    import datetime
    from control.certificates import CertificateError, check, describe
    ca = trustme.CA()
    old = ca.issue_cert("old.test", not_after=datetime.datetime(2001, 1, 1, tzinfo=datetime.timezone.utc))
    with pytest.raises(CertificateError, match="expired"):
        check(old.cert_chain_pems[0].bytes().decode(), old.private_key_pem.bytes().decode())
    cert = ca.issue_cert("shop.test", "www.shop.test")
    info = describe("".join(b.bytes().decode() for b in cert.cert_chain_pems))
    assert info.subject_alternative_names == ("shop.test", "www.shop.test")
    assert len(info.fingerprint.split(":")) == 20
    assert info.names() == ("shop.test", "www.shop.test")


def test_killed_worker_is_restarted_and_listener_kept():
    import signal
    from tests.l7_harness import Backends as LoopBackends, L7Runner, backend, frontend
    from tests.l7_harness import free_port as lfree_port
    b = LoopBackends(1)
    r = L7Runner(workers=2)
    try:
        port = lfree_port()
        r.apply(frontend(port, backend(b.servers)))
        old = r.worker_pids()
        os.kill(old[0], signal.SIGKILL)
        wait_for(lambda: all(r.worker_pids()) and r.worker_pids()[0] != old[0], what="restart")
        for _ in range(20):     # both workers' listeners answer again
            assert ask("127.0.0.1", port) == "b0"
    finally:
        r.close()
        b.close()
