"""In-process counters and timing histograms, rendered as Prometheus text and parsed back for A/B reports.

Updated only from the event-loop thread, so plain integer increments need no lock. With several workers each
process keeps its own numbers (a scrape reaches one worker); the `worker` label tells them apart.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_left
from collections.abc import Iterable

# Upper bounds (seconds): single-record requests take ~0.1-1 ms, 6 MB batches up to seconds.
BUCKETS: tuple[float, ...] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
PHASES = ("parse", "predict", "serialise", "total")


class Histogram:
    """A fixed-bucket histogram: one list increment and two additions per observation."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # the last slot is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        """Record one duration."""
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds


class VariantStats:
    """Per-variant counters (CloudWatch's Invocations, Invocation4XXErrors, Invocation5XXErrors), timings."""

    __slots__ = ("errors_4xx", "errors_5xx", "invocations", "parse", "predict", "serialise", "total")

    def __init__(self) -> None:
        self.invocations = 0
        self.errors_4xx = 0
        self.errors_5xx = 0
        self.parse = Histogram()
        self.predict = Histogram()
        self.serialise = Histogram()
        self.total = Histogram()

    def observe(self, parse: float, predict: float, serialise: float, total: float) -> None:
        """Record the phase timings of one successful invocation."""
        self.parse.observe(parse)
        self.predict.observe(predict)
        self.serialise.observe(serialise)
        self.total.observe(total)


class Metrics:
    """All of one server process's numbers."""

    def __init__(self, endpoint: str, variants: Iterable[str]) -> None:
        self.endpoint = endpoint
        self.variants = {name: VariantStats() for name in variants}
        # Requests refused before a variant was chosen, by error code (unknown endpoint, oversize, ...).
        self.rejected: dict[str, int] = {}
        self.model_loads = 0
        self.model_evictions = 0
        self.models_loaded = 0

    def reject(self, code: str) -> None:
        """Count a request refused by the runtime front."""
        self.rejected[code] = self.rejected.get(code, 0) + 1

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4)."""
        ep = _escape(self.endpoint)
        base = f'endpoint="{ep}",worker="{os.getpid()}"'
        out: list[str] = []
        out += [
            "# HELP serve_invocations_total Requests routed to a variant.",
            "# TYPE serve_invocations_total counter",
        ]
        for name, st in self.variants.items():
            out.append(f'serve_invocations_total{{{base},variant="{_escape(name)}"}} {st.invocations}')
        out += [
            "# HELP serve_invocation_errors_total Failed invocations by the model's status class.",
            "# TYPE serve_invocation_errors_total counter",
        ]
        for name, st in self.variants.items():
            for cls, value in (("4xx", st.errors_4xx), ("5xx", st.errors_5xx)):
                out.append(
                    f'serve_invocation_errors_total{{{base},variant="{_escape(name)}",class="{cls}"}} {value}'
                )
        out += [
            "# HELP serve_rejected_requests_total Requests refused before reaching a variant, by error code.",
            "# TYPE serve_rejected_requests_total counter",
        ]
        for code, value in sorted(self.rejected.items()):
            out.append(f'serve_rejected_requests_total{{{base},code="{_escape(code)}"}} {value}')
        out += [
            "# HELP serve_request_duration_seconds Time per successful invocation, by phase.",
            "# TYPE serve_request_duration_seconds histogram",
        ]
        for name, st in self.variants.items():
            for phase in PHASES:
                hist: Histogram = getattr(st, phase)
                labels = f'{base},variant="{_escape(name)}",phase="{phase}"'
                running = 0
                for bound, count in zip((*BUCKETS, float("inf")), hist.counts, strict=True):
                    running += count
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    out.append(f'serve_request_duration_seconds_bucket{{{labels},le="{le}"}} {running}')
                out.append(f"serve_request_duration_seconds_sum{{{labels}}} {hist.sum!r}")
                out.append(f"serve_request_duration_seconds_count{{{labels}}} {running}")
        for metric, kind, value, text in (
            ("serve_model_loads_total", "counter", self.model_loads, "Multi-model targets loaded."),
            (
                "serve_model_evictions_total",
                "counter",
                self.model_evictions,
                "Multi-model targets evicted (LRU).",
            ),
            ("serve_models_loaded", "gauge", self.models_loaded, "Multi-model targets in memory."),
        ):
            out += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}", f"{metric}{{{base}}} {value}"]
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')

Sample = tuple[str, frozenset[tuple[str, str]]]


def parse_prometheus(text: str) -> dict[Sample, float]:
    """Parse Prometheus text into {(name, labels): value}; strict, so malformed lines raise ValueError."""
    samples: dict[Sample, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise ValueError(f"not a Prometheus sample line: {line!r}")
        name, label_text, value = match.groups()
        labels: list[tuple[str, str]] = []
        pos = 0
        while label_text and pos < len(label_text):
            lm = _LABEL.match(label_text, pos)
            if lm is None:
                raise ValueError(f"bad labels in line: {line!r}")
            labels.append((lm.group(1), lm.group(2)))
            pos = lm.end()
        samples[(name, frozenset(labels))] = float(value)
    return samples


def variant_counts(text: str) -> dict[str, dict[str, float]]:
    """Per-variant invocations and 4xx/5xx errors from /metrics text, summed over workers (A/B reports)."""
    out: dict[str, dict[str, float]] = {}
    for (name, labels), value in parse_prometheus(text).items():
        lab = dict(labels)
        if name == "serve_invocations_total":
            key = "invocations"
        elif name == "serve_invocation_errors_total":
            key = f"errors_{lab['class']}"
        else:
            continue
        row = out.setdefault(lab["variant"], {"invocations": 0.0, "errors_4xx": 0.0, "errors_5xx": 0.0})
        row[key] += value
    return out
