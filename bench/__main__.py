"""`python -m bench [--quick] [--cases PATTERN ...]`: the micro benchmarks (pytest-benchmark),
then the end-to-end cases on the netns testbed, then the report in bench/results/."""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import report
from bench.e2e.cases import CASES, select
from bench.runner import Runner, Settings

ROOT = Path(__file__).resolve().parent.parent
MICRO_DIR = ROOT / "bench" / "micro"
# Benchmarks other parts of lbfast ship next to the suite (bench/bench_l7.py, ...):
# pytest-benchmark files join the micro run, scripts run on their own.
EXTRA_MICRO_GLOB = "bench_*.py"

FULL = dict(duration_s=8.0, repeats=3, max_reruns=8)
QUICK = dict(duration_s=2.0, repeats=1, max_reruns=2)
BUDGET_S = {False: 19 * 60, True: 150}   # `make bench` within 20 min, QUICK=1 within 3
REPORT_S = 15                 # charts and report after the last run
PER_RUN_OVERHEAD_S = 1.4      # testbed, backends, LB start, check, teardown (measured here)


def micro_paths() -> list[str]:
    paths = [str(MICRO_DIR)]
    for p in sorted((ROOT / "bench").glob(EXTRA_MICRO_GLOB)):
        text = p.read_text(errors="replace")
        if "def test_" in text and "benchmark" in text:     # pytest-benchmark, not a script
            paths.append(str(p))
    return paths


def run_micro(quick: bool) -> dict:
    """pytest-benchmark over bench/micro (and bench/bench_*.py); its JSON plus the skips."""
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "micro.json")
        argv = [sys.executable, "-m", "pytest", *micro_paths(), "--benchmark-only",
                f"--benchmark-json={out}", "-q", "-rs", "-p", "no:cacheprovider",
                "-W", "ignore::DeprecationWarning",
                "--benchmark-columns=median,ops,rounds", "--benchmark-sort=name"]
        if quick:
            argv += ["--benchmark-max-time=0.1", "--benchmark-min-rounds=2", "--benchmark-warmup=off"]
        else:
            argv += ["--benchmark-max-time=0.5", "--benchmark-min-rounds=5"]
        try:
            p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                               timeout=300 if quick else 900)
        except subprocess.TimeoutExpired:
            return {"error": "micro benchmarks timed out", "wall_s": time.monotonic() - t0}
        result: dict = {}
        if os.path.exists(out):
            with open(out) as f:
                result = json.load(f)
        result["skipped"] = re.findall(r"^SKIPPED \[\d+\] ([^:]+:\d+): (.*)$", p.stdout, re.M)
        if p.returncode not in (0, 5):
            tail = "\n".join(p.stdout.strip().splitlines()[-15:])
            result["error"] = f"pytest exited with {p.returncode}:\n{tail}"
        result["wall_s"] = time.monotonic() - t0
        keep = {"benchmarks", "skipped", "error", "wall_s", "machine_info"}
        return {k: v for k, v in result.items() if k in keep}


# Benchmark scripts other parts of lbfast ship as bench/bench_*.py (`python -m bench.X`):
# the arguments for a full and a quick run. A script not listed runs with no arguments in
# a full run only.
COMPANION_ARGS = {
    "bench_l7": (["--seconds", "1"], ["--seconds", "0.1"]),
    "bench_health": ([], ["--seconds", "3"]),
}
COMPANION_TIMEOUT_S = {False: 240, True: 40}


def companion_scripts() -> list[str]:
    out = []
    for p in sorted((ROOT / "bench").glob(EXTRA_MICRO_GLOB)):
        text = p.read_text(errors="replace")
        if "def test_" not in text and '__name__ == "__main__"' in text:
            out.append(p.stem)
    return out


def run_companions(quick: bool) -> list[dict]:
    """Run each bench/bench_*.py script; its output goes into the report as it printed it."""
    results = []
    for name in companion_scripts():
        full_args, quick_args = COMPANION_ARGS.get(name, ([], None))
        args = quick_args if quick else full_args
        if args is None:
            results.append({"name": name, "skipped": "not run in --quick (no quick arguments known)"})
            continue
        argv = [sys.executable, "-m", f"bench.{name}", *args]
        t0 = time.monotonic()
        try:
            p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                               timeout=COMPANION_TIMEOUT_S[quick])
            out, rc = (p.stdout + (p.stderr if p.returncode else "")).strip(), p.returncode
        except subprocess.TimeoutExpired as e:
            out, rc = f"timed out after {e.timeout:g} s", -1
        results.append({"name": name, "command": " ".join(["python", "-m", f"bench.{name}", *args]),
                        "output": out, "returncode": rc, "wall_s": time.monotonic() - t0})
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="1 repeat of 2 s per case (≤ 3 minutes)")
    ap.add_argument("--cases", nargs="+", metavar="PATTERN",
                    help="case keys or globs, e.g. 'l4-ka/*' '*haproxy*' (baselines are added)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--duration", type=float, help="seconds per run")
    ap.add_argument("--repeats", type=int, help="runs per case")
    ap.add_argument("--budget", type=float, metavar="SECONDS",
                    help=f"time budget of the whole run (default {BUDGET_S[False]} s, "
                         f"{BUDGET_S[True]} s with --quick): later runs are left out")
    ap.add_argument("--no-micro", action="store_true", help="skip the micro benchmarks")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end cases")
    ap.add_argument("--out", type=Path, default=report.RESULTS_DIR, help="results directory")
    args = ap.parse_args(argv)

    if args.list:
        for c in CASES:
            reason = c.unavailable()
            print(f"{c.key:<28} {c.label}" + (f"  [not available: {reason}]" if reason else ""))
        return 0
    try:
        cases = [] if args.no_e2e else select(args.cases)
    except ValueError as e:
        ap.error(str(e))
    settings = Settings(quick=args.quick, **(QUICK if args.quick else FULL))
    if args.duration:
        settings.duration_s = args.duration
    if args.repeats:
        settings.repeats = args.repeats

    t0 = time.monotonic()
    runnable = [c for c in cases if not c.unavailable()]
    runs = len(runnable) * settings.repeats + sum(c.is_direct for c in runnable)
    estimate = runs * (settings.duration_s + PER_RUN_OVERHEAD_S)
    print(f"lbfast bench{' (quick)' if args.quick else ''}: {len(cases)} cases, {runs} runs of "
          f"{settings.duration_s:g} s, wrk -t{settings.threads} -c{settings.connections}, "
          f"{settings.workers} worker per proxy; about {estimate / 60 + 0.3:.0f} min", flush=True)

    micro = None
    if not args.no_micro:
        print("micro benchmarks (pytest-benchmark) ...", flush=True)
        micro = run_micro(args.quick)
        n = len(micro.get("benchmarks", []))
        print(f"micro: {n} benchmarks in {micro['wall_s']:.0f} s"
              + (f"; {micro['error'].splitlines()[0]}" if micro.get("error") else ""), flush=True)
        for name, reason in micro.get("skipped", []):
            print(f"micro: {name} not available: {reason}")

    # whatever the micro benchmarks left of the budget: runs stop at the hard deadline,
    # re-runs of disturbed runs early enough that one more run still fits
    left = (args.budget or BUDGET_S[args.quick]) - (time.monotonic() - t0) - REPORT_S
    settings.hard_deadline_s = left - settings.duration_s - 3 * PER_RUN_OVERHEAD_S
    settings.deadline_s = settings.hard_deadline_s - 2 * (settings.duration_s + 6 + PER_RUN_OVERHEAD_S)
    companions = []
    if not args.no_micro:
        for c in run_companions(args.quick):
            companions.append(c)
            if "skipped" in c:
                print(f"{c['name']}: {c['skipped']}")
            else:
                print(f"$ {c['command']}  ({c['wall_s']:.0f} s, exit {c['returncode']})\n{c['output']}",
                      flush=True)

    suite = Runner(cases, settings).run()
    path, lines = report.write(suite.to_json(), micro, args.out, quick=args.quick,
                               companions=companions)
    print("\n== summary (the same figures as the report) ==")
    for line in lines:
        print(line)
    print(f"\nreport: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
          f"(and {args.out / 'latest.md'}); total {(time.monotonic() - t0) / 60:.1f} min")
    failed = (bool(suite.failed) or bool(micro and micro.get("error"))
              or any(c.get("returncode") for c in companions))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
