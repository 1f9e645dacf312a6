"""What one refresh of the status page (or of `lbfast top`) costs the daemon's event loop:
build /status.json's document and encode it, for 100 load balancers × 2 TCP frontends ×
10 servers served by the userspace L4 proxy of a real (in-process) daemon.

    python -m pytest bench/bench_status.py --benchmark-only
"""
import asyncio

import orjson
import pytest

from control import config as configfile
from control.daemon import Daemon

LBS, FRONTENDS, SERVERS = 100, 2, 10
GROUP = f"status view: {LBS} LBs × {FRONTENDS} frontends × {SERVERS} servers"


def config_doc() -> dict:
    lbs = []
    for i in range(LBS):
        servers = [{"address": f"10.{100 + i // 250}.{i % 250}.{s + 1}", "label": f"s{s}"} for s in range(SERVERS)]
        lbs.append({"name": f"lb{i}", "vip": f"127.77.{i // 250}.{i % 250 + 1}",
                    "backends": [{"name": "pool", "protocol": "tcp", "forward_port": 8080, "servers": servers}],
                    "frontends": [{"name": f"f{p}", "port": 18080 + p, "backend": "pool"}
                                  for p in range(FRONTENDS)]})
    return {"dataplane": {"mode": "userspace"}, "lbs": lbs}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    path = tmp_path_factory.mktemp("status-bench") / "lbfast.json"
    path.write_bytes(orjson.dumps(config_doc()))
    loop = asyncio.new_event_loop()
    d = Daemon(str(path), socket_path=str(path.parent / "sock"), pidfile=str(path.parent / "pid"))
    loop.run_until_complete(d.apply(configfile.load(str(path))))
    yield d
    loop.run_until_complete(d.l4.close())
    loop.run_until_complete(d.health.close())
    loop.close()


def test_status_refresh(benchmark, daemon):
    benchmark.group = GROUP
    body = benchmark(lambda: orjson.dumps(daemon.view.document()))
    doc = orjson.loads(body)
    assert len(doc["lbs"]) == LBS
    assert sum(len(b["servers"]) for lb in doc["lbs"] for b in lb["backends"]) == LBS * SERVERS
