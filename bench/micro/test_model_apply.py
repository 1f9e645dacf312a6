"""Control-plane cost of a config change at scale, 1,000 load balancers × 10 servers: parse
and validate the file, derive the data-plane specs, diff them against the running ones
(the decisions the userspace L4 proxy makes, without its sockets), and update the pools of
the backends that changed."""
import orjson
import pytest

from control import config as configfile
from control.sync import frontend_specs
from lbfast.routing import Pool

LBS, SERVERS = 1000, 10
GROUP = f"model: {LBS:,} LBs × {SERVERS} servers"


def config_doc(weight_of_first: int = 100) -> dict:
    lbs = []
    for i in range(LBS):
        servers = [{"address": f"10.{100 + i // 250}.{i % 250}.{s + 1}",
                    "weight": weight_of_first if (i, s) == (0, 0) else 100} for s in range(SERVERS)]
        lbs.append({
            "name": f"lb{i}", "vip": f"10.{50 + i // 250}.{i % 250}.1",
            "backends": [{"name": "web", "protocol": "tcp", "forward_port": 8080,
                          "algorithm": "roundrobin", "servers": servers}],
            "frontends": [{"name": "web", "port": 80, "backend": "web"}]})
    return {"lbs": lbs}


def spec_diff(old: list, new: list) -> tuple[list, list, list]:
    """(added, removed, changed) frontends by listener key, as a data plane sees them."""
    before = {f.listen_key: f for f in old}
    after = {f.listen_key: f for f in new}
    added = [f for k, f in after.items() if k not in before]
    removed = [f for k, f in before.items() if k not in after]
    changed = [f for k, f in after.items() if k in before and before[k] != f]
    return added, removed, changed


@pytest.fixture(scope="module")
def raw():
    return orjson.dumps(config_doc()), orjson.dumps(config_doc(weight_of_first=50))


@pytest.fixture(scope="module")
def running(raw):
    specs = frontend_specs(configfile.parse(raw[0]))
    pools = {f.backend.id: Pool(f.backend) for f in specs}
    return specs, pools


def test_parse(benchmark, raw):
    benchmark.group = GROUP
    config = benchmark(configfile.parse, raw[1])
    assert len(config.lbs) == LBS


def test_frontend_specs(benchmark, raw):
    benchmark.group = GROUP
    config = configfile.parse(raw[1])
    specs = benchmark(frontend_specs, config)
    assert len(specs) == LBS


def test_spec_diff(benchmark, raw, running):
    benchmark.group = GROUP
    new = frontend_specs(configfile.parse(raw[1]))
    added, removed, changed = benchmark(spec_diff, running[0], new)
    assert (len(added), len(removed), len(changed)) == (0, 0, 1)


def test_apply_change(benchmark, raw, running):
    """The whole path of a one-field change: parse, specs, diff, pool update."""
    benchmark.group = GROUP
    old, pools = running

    def apply():
        new = frontend_specs(configfile.parse(raw[1]))
        _, _, changed = spec_diff(old, new)
        for f in changed:
            pools[f.backend.id].update(f.backend)
        return changed

    assert len(benchmark(apply)) == 1
