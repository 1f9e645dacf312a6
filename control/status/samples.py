"""The last minutes of counters, sampled only when someone looks (the page, its JSON,
`lbfast top`): nobody looking costs nothing, and the charts show what was watched."""
import time
from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 600.0        # what the charts can show
MIN_GAP_S = 1.0         # two viewers refreshing at once share one sample
GAP_S = 15.0            # longer without a look: the series breaks (no rate across the gap)


@dataclass(slots=True)
class Sample:
    at: float
    # frontend id -> (connections total, requests total, active)
    frontends: dict[int, tuple[int, int, int]]
    # "backend id/server key" -> display state ("up", "down", ...)
    servers: dict[str, str]
    # frontend id -> (connections/s, requests/s) since the previous sample; absent after a gap
    rates: dict[int, tuple[float, float]] = field(default_factory=dict)


class SampleRing:
    def __init__(self, window_s: float = WINDOW_S, min_gap_s: float = MIN_GAP_S, gap_s: float = GAP_S):
        self.window_s = window_s
        self.min_gap_s = min_gap_s
        self.gap_s = gap_s
        self.samples: deque[Sample] = deque()

    def look(self, frontends: dict[int, tuple[int, int, int]], servers: dict[str, str],
             now: float | None = None) -> Sample:
        """Record what a viewer sees (unless the last sample is under min_gap_s old) and
        return the newest sample, whose rates the viewer shows."""
        now = time.time() if now is None else now
        last = self.samples[-1] if self.samples else None
        if last is not None and now - last.at < self.min_gap_s:
            return last
        sample = Sample(now, frontends, servers)
        if last is not None and now - last.at <= self.gap_s:
            dt = now - last.at
            for fid, (conns, reqs, _) in frontends.items():
                before = last.frontends.get(fid)
                if before is not None:
                    # counters restart with a re-created listener: never a negative rate
                    sample.rates[fid] = (max(0, conns - before[0]) / dt, max(0, reqs - before[1]) / dt)
        self.samples.append(sample)
        while self.samples and self.samples[0].at < now - self.window_s:
            self.samples.popleft()
        return sample

    def peak(self, frontend_id: int) -> int:
        """The most open connections seen while someone looked."""
        return max((s.frontends[frontend_id][2] for s in self.samples if frontend_id in s.frontends), default=0)

    def series(self) -> dict:
        """Columns for the charts: sample times (epoch ms), per frontend conn/s and req/s
        (null across a gap), per server its state at each sample (null before it existed)."""
        times = [int(s.at * 1000) for s in self.samples]
        fids = sorted({fid for s in self.samples for fid in s.frontends})
        keys = sorted({k for s in self.samples for k in s.servers})
        frontends = {}
        for fid in fids:
            rates = [s.rates.get(fid) for s in self.samples]
            frontends[str(fid)] = {"conn_rate": [None if r is None else round(r[0], 2) for r in rates],
                                   "req_rate": [None if r is None else round(r[1], 2) for r in rates]}
        servers = {k: [s.servers.get(k) for s in self.samples] for k in keys}
        return {"t": times, "frontends": frontends, "servers": servers}
