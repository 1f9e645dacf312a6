"""Parsing wrk_stats.lua's lines and merging the two wrk processes of the direct baseline."""
import pytest

from bench.e2e import wrk

GRID = [i * 0.5 for i in range(1, 200)] + [99.6, 99.7, 99.8, 99.9, 99.95, 99.99]


def output(requests: int, lat_us, duration_us: int = 2_000_000) -> str:
    pct = " ".join(f"{p:g}:{lat_us(p)}" for p in GRID)
    return ("Running 2s test @ http://10.200.1.2:80/\n"
            f"LBFAST_SUMMARY duration_us={duration_us} requests={requests} bytes={requests * 150} "
            f"connect=0 read=2 write=0 status=1 timeout=0 min_us={lat_us(0)} max_us={lat_us(100)}\n"
            f"LBFAST_PCT {pct}\n")


def test_parse():
    r = wrk.parse(output(200_000, lambda p: int(100 + 10 * p)))
    assert r.rps == pytest.approx(100_000)
    assert r.error_count == 3 and r.errors["status"] == 1
    assert r.latency_us(50) == pytest.approx(600)
    assert r.latency_us(99) == pytest.approx(1090)
    assert r.latency_us(99.3) == pytest.approx(1093)          # interpolated on the grid


def test_parse_refuses_output_without_summary():
    with pytest.raises(wrk.WrkError, match="no summary"):
        wrk.parse("unable to connect to 10.200.255.1:80 Connection refused\n")


def test_merge_is_the_request_weighted_mixture():
    fast = wrk.parse(output(100_000, lambda p: 100))
    slow = wrk.parse(output(100_000, lambda p: 300, duration_us=2_100_000))
    m = wrk.merge([fast, slow])
    assert m.requests == 200_000 and m.duration_s == pytest.approx(2.1)
    assert m.error_count == 6
    assert m.latency_us(25) == pytest.approx(100, abs=1)
    assert m.latency_us(75) == pytest.approx(300, abs=1)
    assert m.latency_us(99) == pytest.approx(300, abs=1)
    same = wrk.merge([fast, wrk.parse(output(50_000, lambda p: 100))])
    assert same.latency_us(50) == pytest.approx(100)


def test_command_line():
    argv = wrk.command("http://10.200.255.1:80/", 2, 64, 8, close=True)
    assert argv[:7] == ["wrk", "-t", "2", "-c", "64", "-d", "8s"]
    assert argv[-3:] == ["-H", "Connection: close", "http://10.200.255.1:80/"]
    assert argv[argv.index("-s") + 1].endswith("wrk_stats.lua")
