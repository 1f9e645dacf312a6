"""The benchmark report: per-case summaries (medians, ratios to direct and to HAProxy, CPU
per request), the markdown file in bench/results/ with the machine and the settings, PNG
charts, and the terminal summary lines, built from the same cells as the table."""
from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.e2e.cases import BY_KEY, GROUPS

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# -- summaries ---------------------------------------------------------------------------
@dataclass
class CaseSummary:
    key: str
    label: str
    group: str
    runs: int = 0
    disturbed: int = 0               # runs kept although still disturbed
    attempts: int = 0                # runs made, re-runs included
    rps: float = 0.0                 # median
    rps_min: float = 0.0
    rps_max: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    testbed_us: float = 0.0          # testbed CPU µs per request (median)
    extra_us: float | None = None    # testbed µs/req minus the direct baseline's
    lb_cpu_1k: float | None = None   # LB CPU-seconds per 1,000 requests (median)
    lb_cpu: str = "process"
    ratio_direct: float | None = None
    ratio_peer: float | None = None
    errors: int = 0
    tls: str = ""
    status: str = "ok"               # ok | not available | failed
    reason: str = ""

    @property
    def spread(self) -> float:
        return (self.rps_max - self.rps_min) / self.rps if self.rps else 0.0


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else 0.0


def summarize(suite: dict) -> dict[str, CaseSummary]:
    """CaseSummary per case key, in suite order, from SuiteResult.to_json()."""
    out: dict[str, CaseSummary] = {}
    for key in suite["cases"]:
        case = BY_KEY.get(key)
        s = CaseSummary(key, case.label if case else key, key.split("/", 1)[0])
        runs = [r for r in suite["runs"] if r["case"] == key and r["ok"] and r["repeat"] > 0]
        if key in suite["unavailable"]:
            s.status, s.reason = "not available", suite["unavailable"][key]
        elif not runs:
            s.status = "failed"
            s.reason = (suite["failed"].get(key) or "no successful run").splitlines()[0]
        else:
            rps = [r["rps"] for r in runs]
            s.runs, s.rps, s.rps_min, s.rps_max = len(runs), _median(rps), min(rps), max(rps)
            s.disturbed = sum(r["disturbed"] for r in runs)
            s.attempts = sum(r.get("attempts", 1) for r in runs)
            s.p50_ms = _median([r["p50_us"] for r in runs]) / 1000
            s.p99_ms = _median([r["p99_us"] for r in runs]) / 1000
            s.testbed_us = _median([r["testbed_cpu_s"] * 1e6 / r["requests"] for r in runs])
            s.lb_cpu = runs[0]["lb_cpu"]
            if s.lb_cpu == "process":
                s.lb_cpu_1k = _median([r["cpu_s"].get("lb", 0.0) * 1000 / r["requests"] for r in runs])
            s.errors = sum(r["errors"] for r in runs)
            s.tls = runs[0].get("tls", "")
        out[key] = s
    for key, s in out.items():
        case = BY_KEY.get(key)
        if not case or s.status != "ok":
            continue
        base = out.get(case.baseline)
        if base and base.status == "ok" and base.rps:
            s.ratio_direct = s.rps / base.rps
            s.extra_us = s.testbed_us - base.testbed_us
        peer = out.get(case.peer)
        if peer and peer.status == "ok" and peer.rps:
            s.ratio_peer = s.rps / peer.rps
    return out


def drift(suite: dict) -> list[tuple[str, float, float]]:
    """(baseline, median req/s of the repeats, req/s of the run at the end)."""
    out = []
    for key in suite["cases"]:
        end = [r for r in suite["runs"] if r["case"] == key and r["repeat"] == 0 and r["ok"]]
        main = [r["rps"] for r in suite["runs"] if r["case"] == key and r["repeat"] > 0 and r["ok"]]
        if end and main:
            out.append((key, _median(main), end[0]["rps"]))
    return out


def furthest_behind(summaries: dict[str, CaseSummary]) -> tuple[CaseSummary, CaseSummary, float] | None:
    """The lbfast case with the lowest req/s ratio to the best non-lbfast LB of its row set
    (same group, same stickiness), with that peer and the ratio."""
    worst = None
    for key, s in summaries.items():
        case = BY_KEY.get(key)
        if not case or not case.is_lbfast or s.status != "ok":
            continue
        peers = [p for k, p in summaries.items() if p.status == "ok" and BY_KEY.get(k)
                 and BY_KEY[k].group == case.group and BY_KEY[k].sticky == case.sticky
                 and not BY_KEY[k].is_lbfast and not BY_KEY[k].is_direct]
        if not peers:
            continue
        best = max(peers, key=lambda p: p.rps)
        ratio = s.rps / best.rps if best.rps else 0.0
        if worst is None or ratio < worst[2]:
            worst = (s, best, ratio)
    return worst


# -- cells: one formatting for the table and the terminal -----------------------------------
def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def cells(s: CaseSummary) -> dict[str, str]:
    if s.status != "ok":
        return {"case": s.key, "label": s.label, "status": f"{s.status}: {s.reason}"}
    runs = f"{s.runs}"
    if s.attempts > s.runs:
        runs += f" ({s.attempts - s.runs} re-run)"
    if s.disturbed:
        runs += f", {s.disturbed} disturbed"
    if s.lb_cpu == "process":
        lb = f"{s.lb_cpu_1k:.4f}"
    else:
        lb = "none" if s.lb_cpu == "none" else "kernel¹"
    return {
        "case": s.key, "label": s.label,
        "rps": f"{s.rps:,.0f}",
        "spread": f"±{s.spread / 2:.0%}",
        "x_direct": _x(s.ratio_direct),
        "x_haproxy": _x(s.ratio_peer),
        "p50": f"{s.p50_ms:.2f}",
        "p99": f"{s.p99_ms:.2f}",
        "testbed_us": f"{s.testbed_us:.1f}",
        "extra_us": "—" if s.extra_us is None else f"{s.extra_us:+.1f}",
        "lb_cpu": lb,
        "runs": runs,
        "errors": f"{s.errors:,}",
    }


COLUMNS = [("label", "case"), ("rps", "req/s (median)"), ("spread", "spread"),
           ("x_direct", "× direct"), ("x_haproxy", "× HAProxy"), ("p50", "p50 ms"),
           ("p99", "p99 ms"), ("testbed_us", "testbed CPU µs/req"),
           ("extra_us", "extra µs/req vs direct"), ("lb_cpu", "LB CPU-s / 1k req"),
           ("runs", "runs"), ("errors", "wrk errors")]


def summary_line(s: CaseSummary) -> str:
    """The terminal line for one case: the same cells as its row in the report."""
    c = cells(s)
    if s.status != "ok":
        return f"{s.key:<28} {c['status']}"
    return (f"{s.key:<28} {c['rps']:>9} req/s {c['spread']:>4}  {c['x_direct']:>6} direct  "
            f"{c['x_haproxy']:>6} HAProxy  p50 {c['p50']} ms  p99 {c['p99']} ms  "
            f"testbed {c['testbed_us']} µs/req ({c['extra_us']} vs direct)  "
            f"LB {c['lb_cpu']} CPU-s/1k  runs {c['runs']}")


def table(summaries: list[CaseSummary]) -> str:
    head = "| " + " | ".join(h for _, h in COLUMNS) + " |"
    sep = "|" + "|".join("---" if k == "label" else "---:" for k, _ in COLUMNS) + "|"
    rows = [head, sep]
    for s in summaries:
        c = cells(s)
        if s.status != "ok":
            rows.append(f"| {s.label} (`{s.key}`) | {c['status']} |" + " |" * (len(COLUMNS) - 2))
        else:
            rows.append("| " + " | ".join(
                f"{c['label']} (`{s.key}`)" if k == "label" else c[k] for k, _ in COLUMNS) + " |")
    return "\n".join(rows)


# -- machine and settings --------------------------------------------------------------------
def _first_line(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "not installed"
    text = (p.stdout or p.stderr).strip()
    return text.splitlines()[0] if text else "?"


def machine() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    osname = "?"
    try:
        m = re.search(r'^PRETTY_NAME="?([^"\n]*)', Path("/etc/os-release").read_text(), re.M)
        osname = m.group(1) if m else "?"
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    root = Path(__file__).resolve().parent.parent
    commit = _first_line(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    return {
        "CPU": f"{cpu}, {os.cpu_count()} CPUs",
        "memory": mem,
        "OS": osname,
        "kernel": platform.release(),
        "HAProxy": _first_line(["haproxy", "-v"]),
        "nginx": _first_line(["nginx", "-v"]),
        "wrk": re.sub(r"\s+Copyright.*", "", _first_line(["wrk", "-v"])),
        "nftables": _first_line(["nft", "--version"]),
        "OpenSSL": _first_line(["openssl", "version"]),
        "Python": platform.python_version(),
        "lbfast commit": commit,
    }


def settings_lines(suite: dict) -> list[str]:
    st = suite["settings"]
    from bench.e2e import proxies, tls
    return [
        f"- Duration {st['duration_s']:g} s per run, {st['repeats']} repeat(s), interleaved "
        "(every case once, then every case again); a fresh testbed (namespaces) and fresh "
        "processes for every run; a functional check before each run.",
        f"- Load: wrk -t{st['threads']} -c{st['connections']} --timeout {st['timeout_s']:g}s "
        "from the client namespace; the direct baseline splits threads and connections over "
        "one wrk per backend. One connection per request: `-H \"Connection: close\"` and "
        "`net.ipv4.tcp_max_tw_buckets=0` in the client namespace.",
        f"- Workers: {st['workers']} for every proxy (HAProxy nbthread, nginx "
        "worker_processes, lbfast L7 workers) and 1 nginx worker per backend; 2 backends "
        "(nginx, a 3-byte text body).",
        f"- HAProxy maxconn {proxies.MAXCONN}; nginx upstream keepalive "
        f"{proxies.UPSTREAM_KEEPALIVE}; nftables: conntrack TIME_WAIT/CLOSE timeouts 1 s in "
        "the LB namespace (the default 120 s fills the table at these rates).",
        "- lbfast XDP cases: the client's and the backends' tx checksum offload off (XDP on "
        "veth cannot update a partial checksum), GRO on for native mode; the direct "
        "baseline keeps the defaults, `direct-offload-off` shows what the setting alone "
        "costs.",
        "- TLS: the same certificate and cipher for every TLS case: an ECDSA P-256 leaf "
        f"from a throwaway CA (trustme), {tls.TLS_VERSION} {tls.CIPHERSUITE}.",
        f"- Disturbance: a run is disturbed when work outside it took more than "
        f"{st['disturb_threshold']:.0%} of the machine (from /proc/stat minus the testbed's "
        f"processes); disturbed runs are re-run (at most {st['max_reruns']} re-runs, two per "
        f"run), keeping the least disturbed. Re-runs used: {suite['reruns']}."
        + (f" Runs left out because the time budget was spent: {suite['skipped_runs']}."
           if suite.get("skipped_runs") else ""),
    ]


METHOD = """\
How to read it:
- **req/s** is the median of the repeats; *spread* is half the range between the slowest
  and the fastest repeat. Ratios divide medians: *× direct* by the direct baseline of the
  same traffic (L7 rows by the keep-alive baseline), *× HAProxy* by HAProxy's row of the
  same traffic and stickiness.
- **testbed CPU µs/req**: user + system CPU of wrk, the LB's processes, the backends and
  the kernel's softirq threads during the run, per request (from /proc tick counts; wrk from
  its rusage). On a shared 2-core machine this moves less than req/s does. **extra µs/req
  vs direct** is what the LB adds per request.
- **LB CPU-s / 1k req**: the LB namespace's processes only. ¹ Kernel-path LBs (nftables,
  XDP) have no process of their own: their work runs in softirq, charged to whichever
  process it interrupted (wrk, nginx), so it shows in *extra µs/req* instead.
- p50/p99 are wrk's, measured after the TCP (and TLS) handshake: the new-connection rows
  understate the connection cost in latency; it shows in req/s and CPU.
- wrk keeps no cookies: the cookie rows measure cookie insertion on every response, not
  the sticky lookup of a returning client (the functional check tests that it sticks)."""


# -- charts ----------------------------------------------------------------------------------
COLORS = {"lbfast": "#1f77b4", "direct": "#9e9e9e", "haproxy": "#ff7f0e", "nginx": "#2ca02c",
          "nft": "#9467bd"}


def _color(key: str) -> str:
    lb = key.split("/", 1)[1]
    return next((c for prefix, c in COLORS.items() if lb.startswith(prefix)), "#444444")


def charts(summaries: dict[str, CaseSummary], out_prefix: Path, title: str) -> list[Path]:
    """Two PNGs: requests/s and p99 latency per case, one panel per group."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    groups = [(g, [s for s in summaries.values() if s.group == g]) for g in GROUPS]
    groups = [(g, rows) for g, rows in groups if rows]
    paths = []
    for metric, unit, fname in (("rps", "requests/s (median of repeats; bars: min–max)", "rps"),
                                ("p99_ms", "p99 latency, ms (median of repeats)", "p99")):
        heights = [max(1, len(rows)) for _, rows in groups]
        fig, axes = plt.subplots(len(groups), 1, figsize=(10, 1.0 + 0.42 * sum(heights) + 0.5 * len(groups)),
                                 gridspec_kw={"height_ratios": heights}, squeeze=False)
        for ax, (g, rows) in zip(axes[:, 0], groups):
            labels = [s.label if s.status == "ok" else f"{s.label} ({s.status})" for s in rows]
            vals = [getattr(s, metric) if s.status == "ok" else 0 for s in rows]
            ys = list(range(len(rows)))[::-1]
            xerr = None
            if metric == "rps":
                xerr = [[max(0, s.rps - s.rps_min) if s.status == "ok" else 0 for s in rows],
                        [max(0, s.rps_max - s.rps) if s.status == "ok" else 0 for s in rows]]
            ax.barh(ys, vals, color=[_color(s.key) for s in rows], xerr=xerr, capsize=3,
                    error_kw={"elinewidth": 0.8, "ecolor": "#333333"})
            ax.set_yticks(ys, labels, fontsize=9)
            ax.set_title(GROUPS[g], fontsize=10, loc="left", fontweight="bold")
            ends = [max(v, s.rps_max) if metric == "rps" else v for v, s in zip(vals, rows)]
            top = max(ends + [0])
            if top > 0:
                ax.set_xlim(0, top * 1.32)
                if metric == "rps":
                    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
            else:
                ax.set_xticks([])
            for y, v, end, s in zip(ys, vals, ends, rows):
                if s.status != "ok":
                    text = s.status
                elif metric == "rps":
                    text = f"{v:,.0f}" + (f"  ({s.ratio_direct:.2f}× direct)" if s.ratio_direct else "")
                else:
                    text = f"{v:.2f} ms"
                ax.text(end + top * 0.01, y, text, va="center", fontsize=8)
            ax.grid(axis="x", alpha=0.3)
            ax.tick_params(axis="x", labelsize=8)
        axes[-1, 0].set_xlabel(unit, fontsize=9)
        fig.suptitle(f"{title}: {'requests/s' if metric == 'rps' else 'p99 latency'}", fontsize=11)
        fig.tight_layout(rect=(0, 0, 1, 0.985))
        path = out_prefix.with_name(f"{out_prefix.name}-{fname}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


# -- micro benchmarks ------------------------------------------------------------------------
def micro_rows(micro: dict | None) -> list[str]:
    """Markdown lines for pytest-benchmark's JSON: per group, the median time, and for a
    pure-Python twin of a Cython path (`[python-...]` beside `[cython-...]`) the factor."""
    if not micro:
        return ["(micro benchmarks not run)"]
    lines = []
    if micro.get("error"):
        lines += [f"micro benchmarks failed: {micro['error'].splitlines()[0]}", ""]
    benches = micro.get("benchmarks", [])
    if benches:
        medians = {b["name"]: b["stats"]["median"] for b in benches}
        lines += ["| group | benchmark | median | ops/s | Cython speed-up | rounds |",
                  "|---|---|---:|---:|---:|---:|"]
        for b in sorted(benches, key=lambda b: (b.get("group") or "", b["name"])):
            med = b["stats"]["median"]
            twin = medians.get(b["name"].replace("[python", "[cython"))
            speedup = f"{med / twin:.0f}× (Cython)" if "[python" in b["name"] and twin else ""
            lines.append(f"| {b.get('group') or ''} | {b['name']} | {_duration(med)} | "
                         f"{1 / med:,.1f} | {speedup} | {b['stats']['rounds']} |")
    for name, reason in micro.get("skipped", []):
        lines.append(f"- {name}: not available: {reason}")
    return lines or ["(no micro benchmark ran)"]


def _duration(s: float) -> str:
    for unit, f in (("s", 1), ("ms", 1e3), ("µs", 1e6)):
        if s * f >= 1:
            return f"{s * f:.3g} {unit}"
    return f"{s * 1e9:.3g} ns"


# -- the report --------------------------------------------------------------------------------
def render(suite: dict, summaries: dict[str, CaseSummary], micro: dict | None,
           chart_names: list[str], machine_info: dict[str, str], stamp: str,
           quick: bool, companions: list[dict] | None = None) -> str:
    lines = [f"# lbfast benchmark {stamp}{' (quick)' if quick else ''}", ""]
    worst = furthest_behind(summaries)
    if worst:
        s, peer, ratio = worst
        lines += [f"lbfast is furthest behind its best peer in **{s.label}** (`{s.key}`): "
                  f"{s.rps:,.0f} req/s, {ratio:.2f}× of {peer.label} ({peer.rps:,.0f} req/s).", ""]
    lines += ["## End to end", ""]
    for g, title in GROUPS.items():
        rows = [s for s in summaries.values() if s.group == g]
        if rows:
            lines += [f"### {title}", "", table(rows), ""]
    tls_seen = sorted({s.tls for s in summaries.values() if s.tls})
    if tls_seen:
        lines += [f"Negotiated TLS (functional check): {', '.join(tls_seen)}"
                  + ("" if len(tls_seen) == 1 else " — NOT the same for every case"), ""]
    d = drift(suite)
    if d:
        lines += ["Drift (the baselines run again at the end): " + "; ".join(
            f"`{k}` {m:,.0f} → {e:,.0f} req/s ({e / m - 1:+.0%})" for k, m, e in d), ""]
    lines += [f"![requests/s]({n})" if "rps" in n else f"![p99 latency]({n})" for n in chart_names]
    lines += ["", METHOD, "", "## Micro benchmarks", ""] + micro_rows(micro) + [""]
    for c in companions or []:
        if "skipped" in c:
            lines += [f"`python -m bench.{c['name']}`: {c['skipped']}", ""]
        else:
            lines += [f"`{c['command']}` (exit {c['returncode']}, {c['wall_s']:.0f} s):", "",
                      "```", c["output"], "```", ""]
    lines += ["## Machine", ""] + [f"- {k}: {v}" for k, v in machine_info.items()] + [""]
    lines += ["## Settings", ""] + settings_lines(suite)
    lines += [f"- Wall time: end to end {suite['wall_s'] / 60:.1f} min"
              + (f", micro {micro['wall_s'] / 60:.1f} min" if micro and "wall_s" in micro else "") + ".", ""]
    return "\n".join(lines)


def write(suite: dict, micro: dict | None = None, out_dir: Path = RESULTS_DIR,
          stamp: str | None = None, quick: bool = False,
          machine_info: dict[str, str] | None = None,
          companions: list[dict] | None = None) -> tuple[Path, list[str]]:
    """Write <stamp>.md, <stamp>.json and the charts; copy the report to latest.md.
    Returns the report's path and the terminal summary lines."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    summaries = summarize(suite)
    try:
        chart_names = [p.name for p in charts(summaries, out_dir / stamp, f"lbfast bench {stamp}")]
    except ImportError as e:
        chart_names = []
        print(f"report: no charts: {e} (pip install -e .[bench])")
    text = render(suite, summaries, micro, chart_names,
                  machine_info if machine_info is not None else machine(), stamp, quick,
                  companions)
    report = out_dir / f"{stamp}.md"
    report.write_text(text)
    (out_dir / f"{stamp}.json").write_text(json.dumps(
        {"suite": suite, "micro": micro, "companions": companions}, indent=1))
    shutil.copyfile(report, out_dir / "latest.md")
    return report, [summary_line(s) for s in summaries.values()]
