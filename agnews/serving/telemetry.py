"""What the online server counts, written in Prometheus' text format by hand (no client library needed): requests
by status, rows, refusals by kind, rows per classifier call and request latency; the alias follower, the shadow and
the health windows add their own lines (`extra`)."""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self):
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip(self.buckets, self.counts):
            running += count
            out.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
        out += [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.total:.6g}",
                f"{name}_count {self.count}"]
        return out


def counter(name: str, help_text: str, value: float, kind: str = "counter") -> list[str]:
    """One metric's three lines (HELP, TYPE, value): what the helpers' `metric_lines` are made of."""
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value:g}"]


@dataclass
class Metrics:
    """The server's own counters and histograms."""

    requests: dict[int, int] = field(default_factory=dict)  # by HTTP status
    rows: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # by kind
    batch_rows: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))

    def answered(self, status: int, seconds: float, rows: int = 0) -> None:
        self.requests[status] = self.requests.get(status, 0) + 1
        self.rows += rows
        self.latency.observe(seconds)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def text(self, queue_depth: int, extra: list[str] = ()) -> str:
        lines = ["# HELP agnews_serve_requests_total Requests to /invocations, by HTTP status.",
                 "# TYPE agnews_serve_requests_total counter"]
        lines += [f'agnews_serve_requests_total{{code="{code}"}} {n}' for code, n in sorted(self.requests.items())]
        lines += ["# HELP agnews_serve_rows_total Rows scored.", "# TYPE agnews_serve_rows_total counter",
                  f"agnews_serve_rows_total {self.rows}",
                  "# HELP agnews_serve_errors_total Refused or failed requests, by kind.",
                  "# TYPE agnews_serve_errors_total counter"]
        lines += [f'agnews_serve_errors_total{{kind="{kind}"}} {n}' for kind, n in sorted(self.errors.items())]
        lines += ["# HELP agnews_serve_batch_rows Rows per classifier call.",
                  "# TYPE agnews_serve_batch_rows histogram",
                  *self.batch_rows.lines("agnews_serve_batch_rows"),
                  "# HELP agnews_serve_latency_seconds Time from request to answer.",
                  "# TYPE agnews_serve_latency_seconds histogram",
                  *self.latency.lines("agnews_serve_latency_seconds"),
                  "# HELP agnews_serve_queue_depth Requests waiting for the batcher.",
                  "# TYPE agnews_serve_queue_depth gauge", f"agnews_serve_queue_depth {queue_depth}", *extra]
        return "\n".join(lines) + "\n"
