"""Runs the end-to-end cases: interleaved repeats (A, B, A, B ...) of the same duration,
a fresh testbed and fresh processes for every run, a functional check before each, CPU
accounting from /proc, and bounded re-runs of runs that other work on the host disturbed."""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field

from bench.e2e import wrk
from bench.e2e.backends import private_dir, start_backends
from bench.e2e.cases import Case
from bench.e2e.check import CheckFailed, run_check
from bench.e2e.cpu import CpuWindow, quiet_share
from bench.e2e.proxies import NotAvailable, RunContext
from bench.e2e.tls import make_certificate

PORT_RANGE = "1024 65000"


@dataclass
class Settings:
    duration_s: float = 8.0
    repeats: int = 3
    threads: int = 2              # wrk -t (split over the two wrk processes of direct)
    connections: int = 64         # wrk -c
    workers: int = 1              # worker processes/threads of every proxy and backend
    timeout_s: float = 2.0        # wrk --timeout
    disturb_threshold: float = 0.10   # other work above this share of the machine: re-run
    max_reruns: int = 8
    deadline_s: float = 15 * 60   # no re-runs once the end-to-end part has run this long
    hard_deadline_s: float = 17 * 60  # and no runs at all: the suite's time budget holds
    quick: bool = False


@dataclass
class RunResult:
    case: str
    repeat: int                   # 1..repeats; 0 for the baseline repeated at the end (drift)
    attempt: int = 1              # which attempt this result is (re-runs of a disturbed run)
    attempts: int = 1             # how many were made; the least disturbed one is kept
    ok: bool = False
    error: str = ""
    requests: int = 0
    duration_s: float = 0.0
    rps: float = 0.0
    errors: int = 0
    p50_us: float = 0.0
    p90_us: float = 0.0
    p99_us: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)   # client, lb, backends, softirq
    testbed_cpu_s: float = 0.0
    other_share: float = 0.0
    other_peak: float = 0.0
    disturbed: bool = False
    tls: str = ""
    backends_seen: dict[str, int] = field(default_factory=dict)
    lb_cpu: str = "process"
    wall_s: float = 0.0           # whole run including set-up and teardown
    started: float = 0.0

    @property
    def testbed_us_per_request(self) -> float:
        return self.testbed_cpu_s * 1e6 / self.requests if self.requests else 0.0

    @property
    def lb_cpu_s_per_1k(self) -> float | None:
        if self.lb_cpu != "process" or not self.requests:
            return None
        return self.cpu_s.get("lb", 0.0) * 1000 / self.requests


@dataclass
class SuiteResult:
    settings: Settings
    runs: list[RunResult] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    cases: list[str] = field(default_factory=list)
    reruns: int = 0
    skipped_runs: int = 0         # not run: the time budget was spent
    wall_s: float = 0.0

    def to_json(self) -> dict:
        return {"settings": asdict(self.settings), "runs": [asdict(r) for r in self.runs],
                "unavailable": self.unavailable, "failed": self.failed, "cases": self.cases,
                "reruns": self.reruns, "skipped_runs": self.skipped_runs, "wall_s": self.wall_s}


class Progress:
    """One line per finished run on stdout; on a terminal also a status line with the
    position in the schedule and the time left."""

    def __init__(self, total: int, stream=None):
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.per_run: list[float] = []

    def eta(self) -> str:
        if not self.per_run:
            return "?"
        left = (self.total - self.done) * statistics.median(self.per_run)
        return f"{int(left // 60)}m{int(left % 60):02d}s"

    def status(self, text: str) -> None:
        if self.tty:
            elapsed = time.monotonic() - self.start
            line = f"[{self.done + 1:>3}/{self.total}] {int(elapsed // 60)}m{int(elapsed % 60):02d}s, ~{self.eta()} left | {text}"
            self.stream.write("\r\x1b[K" + line[:160])
            self.stream.flush()

    def finished(self, line: str, seconds: float, counts: bool = True) -> None:
        if counts:
            self.done += 1
            self.per_run.append(seconds)
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(f"[{self.done:>3}/{self.total}] {line}\n")
        self.stream.flush()

    def note(self, line: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
        self.stream.write(line + "\n")
        self.stream.flush()


def run_line(r: RunResult) -> str:
    tag = "end" if r.repeat == 0 else f"#{r.repeat}"
    if r.attempt > 1:
        tag += f" (re-run {r.attempt - 1})"
    if not r.ok:
        return f"{r.case:<28} {tag:<14} FAILED: {r.error.splitlines()[0][:120] if r.error else '?'}"
    return (f"{r.case:<28} {tag:<14} {r.rps:>9,.0f} req/s  p99 {r.p99_us / 1000:6.2f} ms  "
            f"testbed {r.testbed_us_per_request:6.1f} µs/req  other CPU {r.other_share:4.0%}"
            + ("  DISTURBED" if r.disturbed else "")
            + (f"  errors {r.errors}" if r.errors else ""))


class Runner:
    def __init__(self, cases: list[Case], settings: Settings, progress_stream=None):
        self.cases = cases
        self.settings = settings
        self.stream = progress_stream
        self.root = ""
        self.cert = None
        self.n = 0

    # -- one run ----------------------------------------------------------------------
    def run_once(self, case: Case, repeat: int, attempt: int, progress: Progress) -> RunResult:
        from control.testbed import Testbed

        s = self.settings
        r = RunResult(case=case.key, repeat=repeat, attempt=attempt, started=time.time())
        t0 = time.monotonic()
        self.n += 1
        try:
            with Testbed(backends=2) as tb:
                rundir = private_dir(self.root, f"run-{self.n:03d}")
                client = {"net.ipv4.ip_local_port_range": PORT_RANGE}
                if case.close:
                    # a single client's TIME_WAIT sockets would exhaust its ports
                    client["net.ipv4.tcp_max_tw_buckets"] = 0
                tb.client.sysctls(client)
                tb.lb.sysctls({"net.ipv4.ip_local_port_range": PORT_RANGE})
                progress.status(f"{case.key}: starting backends and LB")
                start_backends(tb, rundir, self.cert)
                target = case.start(RunContext(tb, rundir, self.cert, s.workers))
                r.lb_cpu = target.lb_cpu
                progress.status(f"{case.key}: functional check")
                check = tb.client.in_ns(run_check, target.urls, len(tb.backends),
                                        self.cert.ca if self.cert else None, case.sticky,
                                        case.is_l4)
                r.tls, r.backends_seen = check.tls, check.backends_seen
                progress.status(f"{case.key} #{repeat}: wrk {s.duration_s:g}s")
                self._measure(tb, case, target.urls, r)
        except NotAvailable:
            raise
        except (CheckFailed, wrk.WrkError) as e:
            r.error = f"{type(e).__name__}: {e}"
        except Exception as e:     # one broken case must not stop the suite
            r.error = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"
        r.wall_s = time.monotonic() - t0
        return r

    def _measure(self, tb, case: Case, urls: list[str], r: RunResult) -> None:
        s = self.settings
        n = len(urls)
        threads = max(1, s.threads // n)
        conns = max(threads, s.connections // n)
        window = CpuWindow({"client": [tb.client.name], "lb": [tb.lb.name],
                            "backends": [b.name for b in tb.backends]})
        window.start()
        procs = [tb.client.popen(wrk.command(u, threads, conns, s.duration_s, s.timeout_s, case.close),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for u in urls]
        # bounded: wrk stops itself after the duration; this kills it if it does not
        watchdog = threading.Timer(s.duration_s + 20, lambda: [p.kill() for p in procs if p.returncode is None])
        watchdog.start()
        outputs, wrk_cpu, codes = [], 0.0, []
        try:
            for p in procs:
                outputs.append(p.stdout.read().decode(errors="replace"))
                code, cpu = wrk.wait_rusage(p.pid)
                p.returncode = code
                codes.append(code)
                wrk_cpu += cpu
        finally:
            watchdog.cancel()
        usage = window.stop({"client": wrk_cpu})
        bad = [(c, o) for c, o in zip(codes, outputs) if c != 0]
        if bad:
            raise wrk.WrkError(f"wrk exited with {bad[0][0]}: {bad[0][1].strip()[-300:]}")
        res = wrk.merge([wrk.parse(o) for o in outputs])
        r.requests, r.duration_s, r.rps, r.errors = res.requests, res.duration_s, res.rps, res.error_count
        r.p50_us, r.p90_us, r.p99_us = res.latency_us(50), res.latency_us(90), res.latency_us(99)
        r.cpu_s = {**usage.roles, "softirq": usage.softirq_s}
        r.testbed_cpu_s = usage.testbed_s
        r.other_share = usage.other_share
        r.other_peak = max(usage.samples_other, default=0.0)
        r.disturbed = usage.other_share > s.disturb_threshold
        r.ok = res.requests > 0
        if not r.ok:
            r.error = f"no request completed ({res.errors})"

    # -- the suite ----------------------------------------------------------------------
    def run(self) -> SuiteResult:
        s = self.settings
        suite = SuiteResult(settings=s)
        t0 = time.monotonic()
        runnable = []
        for c in self.cases:
            reason = c.unavailable()
            if reason:
                suite.unavailable[c.key] = reason
            else:
                runnable.append(c)
        suite.cases = [c.key for c in self.cases]
        drift = [c for c in runnable if c.is_direct and not c.baseline]
        schedule = [(c, rep) for rep in range(1, s.repeats + 1) for c in runnable]
        schedule += [(c, 0) for c in drift]     # the baselines again at the end: drift
        progress = Progress(len(schedule), self.stream)
        for key, reason in suite.unavailable.items():
            progress.note(f"{key:<28} not available: {reason}")
        self.root = tempfile.mkdtemp(prefix="lbfast-bench-")
        os.chmod(self.root, 0o755)
        try:
            if any(c.tls for c in runnable):
                from control.testbed import VIP
                self.cert = make_certificate(self.root, [VIP, "10.200.1.2", "10.200.2.2"])
            else:
                self.cert = None
            for case, rep in schedule:
                if case.key in suite.unavailable or case.key in suite.failed:
                    progress.total -= 1
                    continue
                if time.monotonic() - t0 > s.hard_deadline_s:
                    suite.skipped_runs += 1
                    progress.note(f"{case.key:<28} #{rep} skipped: the time budget is spent")
                    continue
                try:
                    r = self.run_once(case, rep, 1, progress)
                except NotAvailable as e:
                    suite.unavailable[case.key] = str(e)
                    progress.note(f"{case.key:<28} not available: {e}")
                    progress.total -= 1
                    continue
                progress.finished(run_line(r), r.wall_s)
                attempts = 1
                # bounded: at most two re-runs of a run, max_reruns in all, none past the deadline
                while (r.ok and r.disturbed and attempts < 3 and suite.reruns < s.max_reruns
                       and time.monotonic() - t0 < s.deadline_s):
                    suite.reruns += 1
                    attempts += 1
                    progress.status(f"{case.key}: disturbed, waiting for a quieter host")
                    wait_quiet(s.disturb_threshold)
                    again = self.run_once(case, rep, attempts, progress)
                    progress.finished(run_line(again), again.wall_s, counts=False)
                    if again.ok and again.other_share < r.other_share:
                        r = again
                r.attempts = attempts
                suite.runs.append(r)
                if not r.ok and rep == 1:
                    suite.failed[case.key] = r.error
                    progress.note(f"{case.key:<28} failed; its other repeats are skipped")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
        suite.wall_s = time.monotonic() - t0
        return suite


def wait_quiet(threshold: float, limit_s: float = 6.0) -> None:
    """Wait (bounded) until the host's busy share drops below the threshold."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if quiet_share(1.0) < threshold:
            return
