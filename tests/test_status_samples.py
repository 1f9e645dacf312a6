"""The status view's samples: taken only when someone looks (at most one a second however
many look), rates between looks and none across a gap, never negative when a listener
restarts its counters, kept for the window only, and the display state of a server."""
from types import SimpleNamespace

from control.status.samples import SampleRing
from control.status.view import server_state
from lbfast.enums import Health, ServerMode


def test_no_look_no_sample():
    ring = SampleRing()
    assert ring.series() == {"t": [], "frontends": {}, "servers": {}}
    assert ring.peak(1) == 0


def test_rates_between_looks_and_gaps():
    ring = SampleRing(window_s=600, min_gap_s=1.0, gap_s=15.0)
    first = ring.look({1: (100, 50, 3)}, {"1/a:80": "up"}, now=1000.0)
    assert first.rates == {}                                    # nothing to compare with yet
    assert ring.look({1: (200, 60, 9)}, {"1/a:80": "up"}, now=1000.5) is first   # two viewers: one sample
    second = ring.look({1: (300, 90, 4)}, {"1/a:80": "down"}, now=1002.0)
    assert second.rates[1] == (100.0, 20.0)
    assert ring.peak(1) == 4
    restarted = ring.look({1: (10, 5, 1)}, {}, now=1004.0)
    assert restarted.rates[1] == (0.0, 0.0)                     # counters restarted: no negative rate
    after_gap = ring.look({1: (50, 9, 1)}, {}, now=1100.0)
    assert 1 not in after_gap.rates                             # nobody looked for 96 s: no rate across it
    series = ring.series()
    assert series["frontends"]["1"]["conn_rate"] == [None, 100.0, 0.0, None]
    assert series["servers"]["1/a:80"] == ["up", "down", None, None]


def test_window():
    ring = SampleRing(window_s=60, min_gap_s=1.0)
    for i in range(200):
        ring.look({1: (i, 0, 0)}, {}, now=float(i))
    assert len(ring.samples) == 61 and ring.samples[0].at == 139.0


def status(health, ok=True, successes=0, failures=0):
    return SimpleNamespace(health=health, last_ok=ok, successes=successes, failures=failures)


def test_server_states():
    up, down = status(Health.UP), status(Health.DOWN, ok=False)
    assert server_state(ServerMode.ACCEPT, True, up, True) == ("up", "UP")
    assert server_state(ServerMode.ACCEPT, True, down, False) == ("down", "DOWN")
    assert server_state(ServerMode.ACCEPT, True, status(Health.UP, failures=1), True)[0] == "going-down"
    assert server_state(ServerMode.ACCEPT, True, status(Health.DOWN, successes=1), False)[0] == "going-up"
    assert server_state(ServerMode.ACCEPT, True, status(Health.DOWN, ok=None), False)[0] == "init"
    assert server_state(ServerMode.DRAIN, True, up, True)[0] == "drain"
    assert server_state(ServerMode.DRAIN, True, down, False)[0] == "down"
    assert server_state(ServerMode.BACKUP, True, up, True)[0] == "backup"
    assert server_state(ServerMode.REJECT, True, up, True)[0] == "maint"
    assert server_state(ServerMode.ACCEPT, False, None, True) == ("nocheck", "no check")
    assert server_state(ServerMode.ACCEPT, False, None, False)[0] == "down"     # passive failure, no check
