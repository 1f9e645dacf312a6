"""Active-active with BGP and ECMP: lbfast drives BIRD on two LB hosts, each announcing the
VIP /32 to a router namespace whose BIRD merges both paths into one multipath route
(L4 hashing). Flows from many client addresses spread over both hosts; when one host loses
its servers, stops, is killed or hangs, its route goes (at once, or within the hold time
when it falls silent) and its clients' new connections land on the other host and reach
the same backend server: `source` hashing uses the same Maglev table on both hosts.

The userspace data plane serves the VIP here: the daemon does not run the XDP data plane
yet (lbfast/xdp is not wired into control/daemon.py)."""
import json
import os
import signal
import subprocess
import time

import pytest

from control import config as configfile
from control.ha import bird
from control.ha.topology import HaTestbed
from tests.hawatch import RouteWatch
from tests.lbrun import LBFAST, Daemon, wait_for

ROUTER_AS, LB_AS = 65000, 65001
HOLD_S = 3
SOURCES = 16


def router_conf(bed: HaTestbed) -> str:
    neighbors = "".join(f"protocol bgp lb{i} from lbs {{ neighbor {lb.ip} as {LB_AS}; }}\n"
                        for i, lb in enumerate(bed.lbs))
    return f"""router id {bed.router.ip};
log stderr {{ info, warning, error, fatal, remote }};
protocol device {{ }}
protocol kernel {{
    ipv4 {{ import none; export all; }};
    merge paths on;
}}
template bgp lbs {{
    local as {ROUTER_AS};
    hold time {HOLD_S};
    keepalive time 1;
    connect delay time 1;
    connect retry time 1;
    error wait time 1, 2;
    graceful restart off;
    ipv4 {{ import all; export none; }};
}}
{neighbors}"""


def lb_config(bed: HaTestbed, i: int, servers_mode: str = "accept") -> dict:
    return {
        "dataplane": {"mode": "userspace"},
        "ha": {"mode": "bgp", "bgp": {"local_as": LB_AS, "hold_time_s": HOLD_S, "connect_retry_s": 1,
                                      "neighbors": [{"address": bed.router_lb_ips[i], "as": ROUTER_AS}]}},
        "lbs": [{"name": "web", "vip": bed.vip,
                 "backends": [{"name": "pool", "forward_port": bed.http_port, "algorithm": "source",
                               "servers": [{"address": b.ip, "mode": servers_mode} for b in bed.backends]}],
                 "frontends": [{"name": "http", "port": 80, "backend": "pool"}]}]}


# -- generated configuration (no namespaces needed) ----------------------------------------
def test_bird_config_announces_only_the_given_vips_to_every_neighbor():
    cfg = configfile.parse({"ha": {"mode": "bgp", "bgp": {
        "local_as": 65001, "hold_time_s": 6, "connect_retry_s": 2,
        "neighbors": [{"address": "10.0.0.1", "as": 65000}, {"address": "fd00::1", "as": 65002, "multihop": 2}]}}})
    text = bird.render(cfg.ha, "10.0.0.2", ["10.9.0.2", "10.9.0.1", "fd00:9::1"])
    assert "router id 10.0.0.2;" in text
    assert "ipv4;\n    route 10.9.0.1/32 blackhole;\n    route 10.9.0.2/32 blackhole;\n}" in text
    assert "ipv6;\n    route fd00:9::1/128 blackhole;\n}" in text
    assert "neighbor 10.0.0.1 as 65000;\n    hold time 6;\n    keepalive time 2;" in text
    assert "neighbor fd00::1 as 65002;\n    multihop 2;" in text
    assert text.count("graceful restart off;") == 2
    assert 'export where proto = "lbfast_vip4";' in text and 'export where proto = "lbfast_vip6";' in text
    withdrawn = bird.render(cfg.ha, "10.0.0.2", [])
    assert "route" not in withdrawn.replace("router id", "")


def test_bird_accepts_the_generated_config(tmp_path):
    cfg = configfile.parse({"ha": {"mode": "bgp", "bgp": {"local_as": 4200000000, "neighbors": [
        {"address": "10.0.0.1", "as": 65000}, {"address": "fd00::1", "as": 65000, "multihop": 3}]}}})
    for announce in ([], ["10.9.0.1", "fd00:9::1"]):
        conf = tmp_path / "bird.conf"
        conf.write_text(bird.render(cfg.ha, "10.0.0.2", announce))
        check = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("ha, path, fragment", [
    ({"mode": "bgp"}, "ha.bgp", "needs local_as"),
    ({"mode": "bgp", "bgp": {"local_as": 1}}, "ha.bgp", "at least one neighbor"),
    ({"bgp": {"local_as": 0}}, "ha.bgp.local_as", "1..4294967295"),
    ({"bgp": {"router_id": "fd00::1"}}, "ha.bgp.router_id", "not an IPv4 address"),
    ({"bgp": {"neighbors": [{"address": "10.0.0.1"}]}}, "ha.bgp.neighbors[0].as", "required"),
    ({"bgp": {"hold_time_s": 2}}, "ha.bgp.hold_time_s", "3..65535"),
])
def test_bad_bgp_settings_are_named(ha, path, fragment):
    with pytest.raises(configfile.ConfigError) as e:
        configfile.parse({"ha": ha})
    assert [p for p, _ in e.value.problems] == [path]
    assert fragment in str(e.value)


# -- netns --------------------------------------------------------------------------------
class Flow:
    """One keep-alive HTTP connection from a client source address to the VIP."""

    def __init__(self, bed: HaTestbed, source: str):
        self.source = source
        self.sock = bed.client.connect(bed.vip, 80, timeout=2.0, source=source)
        self.buf = b""

    def ask(self) -> tuple[str, str]:
        """(backend server name, LB back address the server saw)."""
        self.sock.sendall(b"GET /peer HTTP/1.1\r\nHost: t\r\n\r\n")
        while b"\r\n\r\n" not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        while len(self.buf) < length:
            self._more()
        body, self.buf = self.buf[:length], self.buf[length:]
        peer = json.loads(body)
        return peer["name"], peer["peer"][0]

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("closed by the LB")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def nexthops(bed: HaTestbed) -> set[str]:
    routes = json.loads(bed.router.run(["ip", "-j", "route", "show", bed.vip]).stdout or "[]")
    hops = set()
    for r in routes:
        hops |= {n["gateway"] for n in r.get("nexthops", [])} | ({r["gateway"]} if "gateway" in r else set())
    return hops


class Tier:
    """The router's BIRD (whole module) and both LB daemons (restarted by `ensure()`)."""

    def __init__(self, bed: HaTestbed, tmp):
        self.bed, self.tmp = bed, tmp
        conf = tmp / "router-bird.conf"
        conf.write_text(router_conf(bed))
        self.router_ctl = str(tmp / "router-bird.ctl")
        self.router_bird = bed.router.popen(["bird", "-f", "-c", str(conf), "-s", self.router_ctl,
                                             "-P", str(tmp / "router-bird.pid")])
        self.daemons: list[Daemon | None] = [None] * len(bed.lbs)
        self.lb_ips = [lb.ip for lb in bed.lbs]
        self.routes = RouteWatch(bed.router, bed.vip)
        self.runs = 0

    def start(self, i: int, servers_mode: str = "accept") -> Daemon:
        self.runs += 1
        run_dir = self.tmp / f"lb{i}-{self.runs}"
        run_dir.mkdir()
        self.daemons[i] = Daemon(run_dir, lb_config(self.bed, i, servers_mode),
                                 wrap=["ip", "netns", "exec", self.bed.lbs[i].name])
        return self.daemons[i]

    def ensure(self) -> None:
        """Both LBs running with accept servers, both paths in the router."""
        for i, d in enumerate(self.daemons):
            if d is None or d.proc.poll() is not None:
                if d is not None:
                    d.close()
                self.start(i)
        wait_for(lambda: nexthops(self.bed) == set(self.lb_ips), timeout=15, what="both paths")

    def lb_of(self, back_ip: str) -> int:
        return self.bed.lb_back_ips.index(back_ip)

    def flows(self) -> dict[str, tuple[Flow, str, int]]:
        """A flow per source address: (flow, server name, LB index)."""
        out = {}
        for src in self.bed.sources:
            f = Flow(self.bed, src)
            server, lb = f.ask()
            out[src] = (f, server, self.lb_of(lb))
        return out

    def withdrawn_after(self, t0: float, gone: str, timeout: float) -> float:
        """Seconds from t0 to the router's route change (the kernel event's timestamp)."""
        wait_for(lambda: gone not in nexthops(self.bed), timeout=timeout, interval=0.02,
                 what=f"route via {gone} withdrawn")
        when, text = wait_for(lambda: self.routes.first_after(t0), timeout=2, what="the route event")
        assert gone not in text or text.startswith("Deleted"), text
        return when - t0

    def close(self) -> None:
        for d in self.daemons:
            if d is not None:
                d.close()
        self.routes.close()


@pytest.fixture(scope="module")
def tier(tmp_path_factory):
    with HaTestbed("bgp", sources=SOURCES) as bed:
        bed.start_backend_servers()
        t = Tier(bed, tmp_path_factory.mktemp("bgp"))
        try:
            yield t
        finally:
            t.close()


@pytest.mark.netns
def test_flows_spread_over_both_hosts_with_one_server_per_client(tier):
    tier.ensure()
    flows = tier.flows()
    try:
        assert {lb for _, _, lb in flows.values()} == {0, 1}
        assert {server for _, server, _ in flows.values()} == {"b0", "b1"}
        # the same client address gets the same server through either host
        for src, (_, server, _) in flows.items():
            again = [Flow(tier.bed, src) for _ in range(4)]
            assert {f.ask()[0] for f in again} == {server}
            for f in again:
                f.close()
        for i, d in enumerate(tier.daemons):
            ha = d.status()["ha"]
            assert (ha["role"], ha["bgp"]["announced"], ha["bgp"]["router_id"]) == \
                ("active", [tier.bed.vip], tier.bed.lbs[i].ip)
            wait_for(lambda: d.status()["ha"]["bgp"]["neighbors"][0]["info"] == "Established", timeout=5,
                     what="session state in status")
            assert tier.bed.lbs[i].run(["ip", "-o", "addr", "show", "dev", "lo"]).stdout.count(tier.bed.vip) == 1
        out = subprocess.run([*LBFAST, "status", "--socket", tier.daemons[0].socket], capture_output=True,
                             text=True, check=True).stdout
        assert "ha: bgp, role active" in out and f"  announced: {tier.bed.vip}\n" in out
        assert f"neighbors: {tier.bed.router_lb_ips[0]} AS{ROUTER_AS} Established" in out
    finally:
        for f, _, _ in flows.values():
            f.close()


@pytest.mark.netns
def test_host_without_usable_server_withdraws_and_announces_again(tier, record_property):
    tier.ensure()
    d1 = tier.daemons[1]
    d1.write(lb_config(tier.bed, 1, servers_mode="reject"))
    t0 = time.time()
    d1.reload()
    took = tier.withdrawn_after(t0, tier.bed.lbs[1].ip, timeout=HOLD_S)
    ha = d1.status()["ha"]
    assert ha["role"] == "withdrawn" and ha["bgp"]["withdrawn"] == {tier.bed.vip: "no usable server"}
    assert {lb for _, _, lb in tier.flows().values()} == {0}
    d1.write(lb_config(tier.bed, 1))
    d1.reload()
    wait_for(lambda: nexthops(tier.bed) == set(tier.lb_ips), timeout=5, what="route back")
    assert d1.status()["ha"]["counters"]["lbfast_ha_bgp_withdrawals_total"] == 1
    record_property("withdrawn_after_s", round(took, 3))


@pytest.mark.netns
@pytest.mark.parametrize("how", ["stop", "kill", "hang"])
def test_lost_host_is_withdrawn_and_its_clients_keep_their_server(tier, how, record_property):
    tier.ensure()
    flows = tier.flows()
    assert {lb for _, _, lb in flows.values()} == {0, 1}
    d0, gone = tier.daemons[0], tier.bed.lbs[0].ip
    bird_pid = d0.status()["ha"]["engine"]["pid"]
    t0 = time.time()
    if how == "stop":
        d0.proc.send_signal(signal.SIGTERM)     # BIRD stops: a Cease to the router
    elif how == "kill":
        d0.proc.kill()                          # BIRD dies with lbfast (parent-death signal)
    else:
        os.kill(bird_pid, signal.SIGSTOP)       # silent: only the router's hold timer notices
    try:
        took = tier.withdrawn_after(t0, gone, timeout=HOLD_S + 2)
        # stop/kill: a Cease at once; hang: the router's hold timer (plus its firing and
        # the route update on a loaded machine)
        assert took < (HOLD_S + 0.75 if how == "hang" else 0.5)
        for src, (flow, server, lb) in flows.items():
            if lb == 1:                         # flows on the surviving host go on as they were
                assert flow.ask() == (server, tier.bed.lb_back_ips[1])
            again = Flow(tier.bed, src)         # every client's next connection: same server
            assert again.ask() == (server, tier.bed.lb_back_ips[1])
            again.close()
    finally:
        if how == "hang":
            os.kill(bird_pid, signal.SIGCONT)
        # A stopping lb0 drains sessions whose clients now reach lb1: they would idle out
        # only after the frontend's timeout.
        d0.proc.kill()
        for f, _, _ in flows.values():
            f.close()
        d0.close()
        tier.daemons[0] = None
    record_property("withdrawn_after_s", round(took, 3))
