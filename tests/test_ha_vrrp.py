"""VRRP master/backup with keepalived run by lbfast. Two LB hosts and a client on one
bridge, backends behind (control.ha.topology). A bounded client keeps opening connections
to the VIP while the master's lbfast is killed, its keepalived is killed, its link is cut,
or it hangs: the backup must own the VIP within 3 s and serve new connections, the first
host comes back as backup (nopreempt) or master again (preempt), and the VIP is never on
both hosts: neither in their address events nor in the ARP answers the client sees."""
import asyncio
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from control import config as configfile
from control.ha import HaManager, keepalived
from control.ha.manager import instance_id
from control.ha.topology import HaTestbed
from tests.hawatch import AddressWatch, ArpProbe, Load
from tests.lbrun import Daemon, wait_for

TAKEOVER_MAX_S = 3.0
HANDOVER_MAX_S = 0.01
ADVERT_MS = 500
PRIORITIES = (150, 100)
SECOND_VIP = "10.210.0.11"


def ha_config(bed: HaTestbed, i: int, preempt: bool) -> dict:
    me = bed.lbs[i]
    return {
        "dataplane": {"mode": "userspace"},
        "ha": {"mode": "vrrp", "interface": "eth0", "virtual_router_id": 42, "priority": PRIORITIES[i],
               "advert_int_ms": ADVERT_MS, "source_address": me.ip,
               "peers": [h.ip for h in bed.lbs if h is not me], "preempt": preempt},
        # Short timeouts: a session whose client moved to the other host with the VIP
        # never sees that client again, and would hold up the daemon's stop.
        "lbs": [{"name": "web", "vip": bed.vip,
                 "backends": [{"name": "pool", "forward_port": bed.http_port, "timeout_server_ms": 2000,
                               "servers": [{"address": b.ip} for b in bed.backends]}],
                 "frontends": [{"name": "http", "port": 80, "backend": "pool", "timeout_client_ms": 2000}]}]}


# -- generated configuration (no namespaces needed) ----------------------------------------
def test_keepalived_config_carries_every_vip_peer_auth_and_preemption(tmp_path):
    cfg = configfile.parse({
        "ha": {"mode": "vrrp", "interface": "eth0", "virtual_router_id": 7, "priority": 120,
               "vrrp_version": 2, "advert_int_ms": 2000, "auth_pass": "s3cret", "peers": ["10.0.0.2"],
               "source_address": "10.0.0.1", "preempt_delay_ms": 1500},
        "lbs": [{"name": f"lb{i}", "vip": f"10.0.1.{i}"} for i in range(1, 23)]
        + [{"name": "v6", "vip": "fd00::5"}]})
    paths = keepalived.Paths.under(tmp_path)
    text = keepalived.render(cfg.ha, [lb.vip for lb in cfg.lbs], paths, ["/probe", "sock"])
    assert "    state BACKUP\n    interface eth0\n    virtual_router_id 7\n    priority 120\n" in text
    assert "    version 2\n    advert_int 2\n    preempt_delay 1.5\n" in text
    assert "auth_type PASS\n        auth_pass s3cret\n" in text
    assert "unicast_src_ip 10.0.0.1\n    unicast_peer {\n        10.0.0.2\n    }" in text
    advertised, excluded = text.split("virtual_ipaddress {")[1].split("virtual_ipaddress_excluded {")
    assert advertised.count("/32 dev eth0") == keepalived.ADVERTISED_MAX
    assert "10.0.1.21/32 dev eth0" in excluded and "fd00::5/128 dev eth0" in excluded
    assert f"vrrp_notify_fifo {paths.fifo}" in text and 'script "/probe sock"' in text

    nopreempt = cfg.ha.model_copy(update={"preempt": False, "auth_pass": "", "vrrp_version": 3,
                                          "advert_int_ms": 250, "peers": []})
    text = keepalived.render(nopreempt, ["10.0.1.1"], paths, ["/probe"])
    assert "    version 3\n    advert_int 0.25\n    nopreempt\n" in text
    assert "authentication" not in text and "unicast" not in text and "preempt_delay" not in text


@pytest.mark.parametrize("ha, path, fragment", [
    ({"mode": "vrrp"}, "ha.interface", "required for mode vrrp"),
    ({"interface": "eth0\n}"}, "ha.interface", "not an interface name"),
    ({"vrrp_version": 2, "advert_int_ms": 500}, "ha.advert_int_ms", "whole seconds"),
    ({"auth_pass": "x"}, "ha.auth_pass", "VRRPv3 has no authentication"),
    ({"vrrp_version": 2, "auth_pass": "toolongpass"}, "ha.auth_pass", "0..8 characters"),
    ({"priority": 255}, "ha.priority", "1..254"),
    ({"virtual_router_id": 0}, "ha.virtual_router_id", "1..255"),
    ({"peers": ["nope"]}, "ha.peers[0]", "not an IPv4 or IPv6 address"),
])
def test_bad_vrrp_settings_are_named(ha, path, fragment):
    with pytest.raises(configfile.ConfigError) as e:
        configfile.parse({"ha": ha})
    assert [p for p, _ in e.value.problems] == [path]
    assert fragment in str(e.value)


def test_keepalived_states_drive_the_role_failover_count_and_instances(tmp_path):
    daemon = SimpleNamespace(socket_path=str(tmp_path / "lbfast.sock"), stopping=asyncio.Event(),
                             l4=SimpleNamespace(frontends={}))
    ha = HaManager(daemon)
    ha.ha = configfile.parse({"ha": {"mode": "vrrp", "interface": "eth0", "peers": ["10.0.0.2"]}}).ha
    ha.local_address = "10.0.0.1"
    fifo = keepalived.Keepalived(tmp_path, ha._keepalived_state, lambda: None)
    for line in ['INSTANCE "lbfast" BACKUP 100', 'INSTANCE "other" MASTER 100', 'GROUP "lbfast" MASTER 100',
                 'INSTANCE "lbfast" MASTER 100', 'INSTANCE "lbfast" MASTER_RX_LOWER_PRI 100']:
        fifo._parse(line)
    assert ha.status()["instances"] == [
        {"id": instance_id("10.0.0.1"), "address": "10.0.0.1", "role": "master", "status": "ready", "local": True},
        {"id": instance_id("10.0.0.2"), "address": "10.0.0.2", "role": "backup", "status": "unknown",
         "local": False}]
    for line in ['INSTANCE "lbfast" FAULT 100', 'INSTANCE "lbfast" BACKUP 100']:
        fifo._parse(line)
    assert [(e["from"], e["to"]) for e in ha.events] == [
        ("standalone", "backup"), ("backup", "master"), ("master", "fault"), ("fault", "backup")]
    assert [i["role"] for i in ha.instances()] == ["backup", "master"]
    counters = ha.counters()
    assert (counters["lbfast_ha_failovers_total"], counters["lbfast_ha_role_changes_total"],
            counters["lbfast_ha_serving"]) == (2, 4, 0)
    daemon.stopping.set()
    assert ha.instances()[0]["status"] == "error"


# -- netns --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bed():
    with HaTestbed("vrrp") as tb:
        tb.start_backend_servers()
        yield tb


class Pair:
    """Both LB daemons of one test, the observers, and the checks every scenario ends with."""

    def __init__(self, bed: HaTestbed, tmp: Path):
        self.bed, self.tmp = bed, tmp
        self.daemons: list[Daemon | None] = [None, None]
        self.runs = 0
        self.watch = AddressWatch(bed.lbs, bed.vip)
        self.arp = ArpProbe(bed.client.name, "eth0", bed.client.ip, bed.vip)
        self.load = Load(bed.client.name, bed.vip, 80)
        self.lb_macs = [self.mac(h) for h in bed.lbs]

    def mac(self, host) -> str:
        return host.run(["cat", f"/sys/class/net/{host.ifname}/address"]).stdout.strip()

    def start(self, i: int, preempt: bool) -> Daemon:
        self.runs += 1
        run_dir = self.tmp / f"lb{i}-{self.runs}"
        run_dir.mkdir()
        d = Daemon(run_dir, ha_config(self.bed, i, preempt), wrap=["ip", "netns", "exec", self.bed.lbs[i].name])
        self.daemons[i] = d
        return d

    def role(self, i: int) -> str:
        return self.daemons[i].status()["ha"]["role"]

    def wait_role(self, i: int, role: str, timeout: float = 10.0) -> None:
        wait_for(lambda: self.role(i) == role, timeout=timeout, what=f"lb{i} {role}")

    def up(self, preempt: bool) -> None:
        """lb0 master, lb1 backup, observers running."""
        for d in (self.daemons[0], self.daemons[1]):
            assert d is None
        self.start(0, preempt)
        self.wait_role(0, "master")
        self.start(1, preempt)
        self.wait_role(1, "backup")
        self.arp.start()
        self.load.start()
        wait_for(lambda: any(ok for _, ok, _ in self.load.results), what="first connection")

    def takeover(self, t0: float, to: int) -> float:
        """Seconds from t0 until host `to` owned the VIP; asserts the 3 s bound and that new
        connections succeed after it."""
        wait_for(lambda: self.watch.gained(to, t0) is not None, timeout=TAKEOVER_MAX_S + 2,
                 what=f"lb{to} to take the VIP")
        took = self.watch.gained(to, t0) - t0
        assert took < TAKEOVER_MAX_S, f"lb{to} owned the VIP only after {took:.2f}s"
        wait_for(lambda: self.load.ok_after(t0 + took) is not None, timeout=3,
                 what="a connection through the new master")
        return took

    def finish(self, handovers: int = 0) -> dict:
        """The VIP was never on both hosts, except, when a master hands over to a preempting
        host (`handovers` times), for the instant VRRP itself needs: the new master installs
        the VIP as it sends its first advert, the old one removes it on receiving that
        advert. Those instants must stay under HANDOVER_MAX_S; no ARP sample may ever see
        two answers."""
        self.load.stop()
        self.arp.stop()
        overlaps = self.watch.overlaps()
        assert len(overlaps) <= handovers and all(s < HANDOVER_MAX_S for _, s in overlaps), \
            f"the VIP was on both LB hosts: {overlaps}"
        assert self.arp.double_answers() == [], "two MACs answered ARP for the VIP"
        assert self.arp.samples and {m for _, macs in self.arp.samples for m in macs} <= set(self.lb_macs)
        return {"connections": len(self.load.results), "failed": sum(1 for r in self.load.results if not r[1]),
                "arp_samples": len(self.arp.samples),
                "overlap_us": [round(s * 1e6) for _, s in overlaps]}

    def close(self) -> None:
        for d in self.daemons:
            if d is not None:
                d.close()
        for t in (self.load, self.arp):
            if t.is_alive():
                t.stopped.set()
                t.join(5)
        self.watch.close()


@pytest.fixture
def pair(bed, tmp_path):
    p = Pair(bed, tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.mark.netns
def test_killed_master_lbfast_hands_over_and_comes_back_as_backup(pair, record_property):
    pair.up(preempt=False)
    t0 = time.time()
    pair.daemons[0].proc.kill()             # SIGKILL: keepalived dies with it, giving the VIP up
    took = pair.takeover(t0, to=1)
    assert pair.role(1) == "master"
    st = pair.daemons[1].status()["ha"]
    assert st["failovers"] == 1             # BACKUP -> MASTER
    pair.daemons[0].close()
    pair.daemons[0] = None
    pair.start(0, preempt=False)
    pair.wait_role(0, "backup")
    time.sleep(3 * ADVERT_MS / 1000 + 0.5)  # longer than a master-down interval: nopreempt holds
    assert (pair.role(0), pair.role(1)) == ("backup", "master")
    assert pair.watch.holders_at(time.time()) == {1}
    inst = pair.daemons[0].status()["ha"]["instances"]
    assert [(i["address"], i["role"], i["status"], i["local"]) for i in inst] == [
        (pair.bed.lbs[0].ip, "backup", "ready", True), (pair.bed.lbs[1].ip, "master", "ready", False)]
    # A config change reaches the running keepalived as a reload: the new VIP comes up on
    # the master, which stays master.
    master = pair.daemons[1]
    pid = master.status()["ha"]["engine"]["pid"]
    cfg = ha_config(pair.bed, 1, preempt=False)
    cfg["lbs"].append({**cfg["lbs"][0], "name": "api", "vip": SECOND_VIP})
    master.write(cfg)
    master.reload()
    wait_for(lambda: f" {SECOND_VIP}/32 " in pair.bed.lbs[1].run(["ip", "-o", "addr", "show", "dev", "eth0"]).stdout,
             timeout=5, what="the new VIP on the master")
    st = master.status()["ha"]
    assert (st["engine"]["pid"], st["role"], st["failovers"]) == (pid, "master", 1)
    assert st["vips"] == [pair.bed.vip, SECOND_VIP]
    record_property("takeover_s", round(took, 3))
    record_property("observed", pair.finish())


@pytest.mark.netns
def test_killed_keepalived_is_restarted_and_the_first_host_preempts_back(pair, record_property):
    pair.up(preempt=True)
    engine = pair.daemons[0].status()["ha"]["engine"]
    t0 = time.time()
    os.kill(engine["pid"], signal.SIGKILL)
    took = pair.takeover(t0, to=1)
    # lbfast restarts keepalived; with preemption the higher priority takes the VIP back
    back = pair.takeover(t0 + took, to=0)
    pair.wait_role(0, "master")
    pair.wait_role(1, "backup")
    engine = pair.daemons[0].status()["ha"]["engine"]
    assert engine["running"] and engine["restarts"] == 1
    assert pair.watch.holders_at(time.time()) == {0}
    record_property("takeover_s", round(took, 3))
    record_property("preempted_back_after_s", round(back, 3))
    record_property("observed", pair.finish(handovers=1))


@pytest.mark.netns
def test_cut_link_puts_the_master_in_fault_and_it_returns_as_backup(pair, record_property):
    pair.up(preempt=False)
    t0 = time.time()
    pair.bed.set_front_link(pair.bed.lbs[0], up=False)
    took = pair.takeover(t0, to=1)
    pair.wait_role(0, "fault")
    pair.bed.set_front_link(pair.bed.lbs[0], up=True)
    pair.wait_role(0, "backup")
    time.sleep(3 * ADVERT_MS / 1000 + 0.5)
    assert (pair.role(0), pair.role(1)) == ("backup", "master")
    assert pair.watch.holders_at(time.time()) == {1}
    record_property("takeover_s", round(took, 3))
    record_property("observed", pair.finish())


@pytest.mark.netns
def test_hung_lbfast_fails_its_track_script(pair, record_property):
    """A daemon that stops answering (SIGSTOP) keeps its keepalived alive: the track script
    must notice, within its 1 s interval x fall 2 (+ 1 s timeout)."""
    pair.up(preempt=False)
    t0 = time.time()
    os.kill(pair.daemons[0].proc.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: pair.watch.gained(1, t0) is not None, timeout=6, what="lb1 to take the VIP")
        took = pair.watch.gained(1, t0) - t0
        wait_for(lambda: pair.load.ok_after(t0 + took) is not None, timeout=3, what="a connection")
    finally:
        os.kill(pair.daemons[0].proc.pid, signal.SIGCONT)
    pair.wait_role(0, "backup")
    assert pair.role(1) == "master"
    events = [(e["from"], e["to"]) for e in pair.daemons[0].status()["ha"]["events"]]
    assert ("master", "fault") in events and events[-1] == ("fault", "backup")
    record_property("takeover_s", round(took, 3))
    record_property("observed", pair.finish())
