"""The unit's CapabilityBoundingSet is enough: the daemon, started with exactly that set
(setpriv, as systemd would) and no new privileges, attaches XDP and forwards traffic."""
import os
import re
from collections import Counter
from pathlib import Path

import pytest

from tests.lbrun import Daemon
from tests.test_daemon_xdp import config, fetch, xdp_testbed  # noqa: F401 - the fixture

UNIT = Path(__file__).resolve().parent.parent / ".ci/packaging/lbfast.service.in"
CAP_NUMBERS = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21,
               "CAP_SYS_RESOURCE": 24, "CAP_PERFMON": 38, "CAP_BPF": 39}


def unit_capabilities() -> list[str]:
    (line,) = re.findall(r"^CapabilityBoundingSet=(.*)$", UNIT.read_text(), re.M)
    return line.split()


def effective_capabilities(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^CapEff:\s*([0-9a-f]+)$", status, re.M).group(1), 16)


@pytest.mark.xdp
def test_xdp_runs_with_the_units_capabilities(xdp_testbed, tmp_path):  # noqa: F811
    caps = unit_capabilities()
    bounding = "-all," + ",".join("+" + c.removeprefix("CAP_").lower() for c in caps)
    setpriv = ["setpriv", "--bounding-set", bounding, "--inh-caps", "-all", "--no-new-privs", "--"]
    tb, pin_dir = xdp_testbed
    d = Daemon(tmp_path, config(tb, pin_dir), wrap=["ip", "netns", "exec", tb.lb.name, *setpriv])
    try:
        wanted = sum(1 << CAP_NUMBERS[c] for c in caps)
        # exactly the unit's set, less what this host's own bounding set lacks
        assert effective_capabilities(d.proc.pid) == wanted & effective_capabilities(os.getpid())
        assert d.status()["dataplane"]["name"] == "xdp"
        assert Counter(fetch(tb) for _ in range(20)) == {"b0": 10, "b1": 10}
    finally:
        d.close()
