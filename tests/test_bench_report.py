"""The benchmark report on synthetic results: the table, the ratios to direct and to
HAProxy, CPU per request, drift, unavailable/failed cases, the charts, and terminal
summary lines that carry the same figures as the report."""
import re

import pytest

from bench import report



def run(case, rps, repeat=1, p99_us=2000.0, lb_s=1.0, testbed_s=3.0, lb_cpu="process",
        disturbed=False, attempts=1, tls=""):
    requests = int(rps * 10)
    return {"case": case, "repeat": repeat, "attempt": 1, "attempts": attempts, "ok": True,
            "error": "", "requests": requests, "duration_s": 10.0, "rps": rps, "errors": 0,
            "p50_us": p99_us / 4, "p90_us": p99_us / 2, "p99_us": p99_us,
            "cpu_s": {"client": 1.0, "lb": lb_s, "backends": 1.0, "softirq": 0.0},
            "testbed_cpu_s": testbed_s, "other_share": 0.2 if disturbed else 0.01,
            "other_peak": 0.0, "disturbed": disturbed, "tls": tls, "backends_seen": {"b0": 3, "b1": 3},
            "lb_cpu": lb_cpu, "wall_s": 11.0, "started": 0.0}


@pytest.fixture
def suite():
    runs = []
    for rep in (1, 2, 3):
        runs += [
            run("l4-ka/direct", [100_000, 110_000, 90_000][rep - 1], rep, lb_cpu="none", testbed_s=2.0),
            run("l4-ka/haproxy-tcp", 40_000, rep, lb_s=0.8, testbed_s=1.6),
            run("l4-ka/lbfast-l4", [50_000, 52_000, 48_000][rep - 1], rep, lb_s=0.5,
                disturbed=rep == 2, attempts=2 if rep == 2 else 1),
            run("l4-ka/nft-dnat", 80_000, rep, lb_s=0.0, lb_cpu="kernel"),
        ]
    runs.append(run("l4-ka/direct", 95_000, 0, lb_cpu="none"))
    return {
        "settings": {"duration_s": 10.0, "repeats": 3, "threads": 2, "connections": 64,
                     "workers": 1, "timeout_s": 2.0, "disturb_threshold": 0.1, "max_reruns": 8,
                     "deadline_s": 960, "quick": False},
        "runs": runs,
        "unavailable": {"l4-ka/lbfast-xdp": "the XDP data plane is not in this tree yet"},
        "failed": {"l4-ka/nginx-stream": "CheckFailed: only ['b0'] answered"},
        "cases": ["l4-ka/direct", "l4-ka/lbfast-xdp", "l4-ka/lbfast-l4", "l4-ka/haproxy-tcp",
                  "l4-ka/nginx-stream", "l4-ka/nft-dnat"],
        "reruns": 1, "wall_s": 300.0,
    }


def test_summaries_ratios_and_cpu(suite):
    s = report.summarize(suite)
    lb = s["l4-ka/lbfast-l4"]
    assert lb.rps == 50_000 and (lb.rps_min, lb.rps_max) == (48_000, 52_000)
    assert lb.ratio_direct == pytest.approx(0.5)           # direct median 100k
    assert lb.ratio_peer == pytest.approx(1.25)            # HAProxy 40k
    assert lb.testbed_us == pytest.approx(3.0 * 1e6 / 500_000)     # 6 µs/req
    assert lb.extra_us == pytest.approx(6.0 - 2.0 * 1e6 / 1_000_000)  # direct: 2 µs/req
    assert lb.lb_cpu_1k == pytest.approx(0.5 * 1000 / 500_000)
    assert lb.disturbed == 1 and lb.attempts == 4
    assert s["l4-ka/nft-dnat"].lb_cpu_1k is None           # kernel path: no process
    assert s["l4-ka/lbfast-xdp"].status == "not available"
    assert s["l4-ka/nginx-stream"].status == "failed"
    assert report.drift(suite) == [("l4-ka/direct", 100_000, 95_000)]
    worst, peer, ratio = report.furthest_behind(s)
    assert worst.key == "l4-ka/lbfast-l4" and peer.key == "l4-ka/nft-dnat"
    assert ratio == pytest.approx(50_000 / 80_000)


def test_report_files_table_and_terminal_lines_agree(suite, tmp_path):
    companions = [{"name": "bench_l7", "command": "python -m bench.bench_l7 --seconds 1",
                   "output": "request head  5.67 µs  37.80 µs  6.7x", "returncode": 0, "wall_s": 11.0}]
    path, lines = report.write(suite, micro=None, out_dir=tmp_path, stamp="20250101-000000",
                               machine_info={"CPU": "test CPU", "kernel": "6.x"},
                               companions=companions)
    text = path.read_text()
    assert (tmp_path / "latest.md").read_text() == text
    assert (tmp_path / "20250101-000000.json").exists()
    for name in ("20250101-000000-rps.png", "20250101-000000-p99.png"):
        png = tmp_path / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"]({name})" in text
    assert "| case | req/s (median) |" in text and "× direct" in text and "× HAProxy" in text
    row = next(r for r in text.splitlines() if r.startswith("|") and "`l4-ka/lbfast-l4`" in r)
    for cell in ("50,000", "0.50×", "1.25×", "6.0", "+4.0", "0.0010", "3 (1 re-run), 1 disturbed"):
        assert f"| {cell} |" in row, cell
    assert "not available: the XDP data plane is not in this tree yet" in text
    assert "failed: CheckFailed" in text
    assert "100,000 → 95,000 req/s (-5%)" in text
    assert "- CPU: test CPU" in text and "wrk -t2 -c64" in text and "Workers: 1" in text
    assert "furthest behind its best peer in **lbfast userspace L4**" in text
    assert "`python -m bench.bench_l7 --seconds 1` (exit 0, 11 s):" in text
    assert "request head  5.67 µs  37.80 µs  6.7x" in text

    # every figure of a terminal line is in that case's row of the report
    assert len(lines) == len(suite["cases"])
    for line in lines:
        key = line.split()[0]
        row = next(r for r in text.splitlines() if r.startswith("|") and f"`{key}`" in r)
        if "not available" in line or "failed" in line:
            assert line.split(None, 1)[1].strip() in row
            continue
        numbers = re.findall(r"(?<![\w/])[+-]?\d[\d,]*(?:\.\d+)?×?", line.split(None, 1)[1])
        assert len(numbers) >= 5, line
        for n in numbers:
            assert n in row, (n, line, row)


def test_micro_rows_show_cython_speedup():
    micro = {"benchmarks": [
        {"name": "test_maglev_build[cython-10]", "group": "maglev", "stats": {"median": 0.0002, "rounds": 50}},
        {"name": "test_maglev_build[python-10]", "group": "maglev", "stats": {"median": 0.014, "rounds": 5}},
    ], "skipped": [("bench/micro/test_xdp_maps.py:10", "no XDP loader")]}
    text = "\n".join(report.micro_rows(micro))
    assert "70× (Cython)" in text and "200 µs" in text and "14 ms" in text
    assert "not available: no XDP loader" in text
