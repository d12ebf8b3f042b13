"""Counters and timing histograms in shared memory, as Prometheus text, parsed back for A/B reports.

Each server worker process keeps its numbers in its own array of doubles. With a metrics folder (the local
engine gives each endpoint one that outlives its server generations) the array is a memory-mapped file there,
so GET /metrics, whichever worker answers it, sums every worker's file: all workers of this generation, and
the final numbers of earlier generations of the endpoint (a promote or an update with changed models starts a
new server process, and CloudWatch's counts do not reset then either). Each file is written by one process
only, so nothing is counted twice. Without a folder (a standalone one-worker server) the array is in memory.

The hot path stays as cheap as before: updates come only from the event-loop thread (no lock) and are plain
stores into the mapped memory (~70 ns each, no system call); the kernel writes the pages back on its own.
Only a scrape reads files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import re
import secrets
from bisect import bisect_left
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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
# Error codes of requests refused before a variant was chosen (deploy/serve/errors.py); a fixed list, because
# every slot of the shared array is laid out once. Anything else is counted as "Other".
REJECT_CODES = (
    "ValidationError",
    "ModelError",
    "InternalFailure",
    "ServiceUnavailable",
    "UnknownOperationException",
    "MethodNotAllowed",
    "Other",
)
_CODE_SLOT = {code: i for i, code in enumerate(REJECT_CODES)}
_NB = len(BUCKETS) + 1  # bucket counts per histogram; the last one is +Inf
_HIST = _NB + 1  # the counts, then the sum
_INVOCATIONS, _ERRORS_4XX, _ERRORS_5XX, _FIRST_HIST = 0, 1, 2, 3
VARIANT_SLOTS = _FIRST_HIST + len(PHASES) * _HIST
_GLOBALS = ("model_loads", "model_evictions", "models_loaded")
# Files written with another layout (an older version of this module) are not summed with these.
LAYOUT = hashlib.sha256(json.dumps([BUCKETS, PHASES, REJECT_CODES, _GLOBALS]).encode()).hexdigest()[:16]


class Histogram:
    """A fixed-bucket histogram in a slice of the shared array (written by `VariantStats.succeeded`)."""

    __slots__ = ("_base", "_buf")

    def __init__(self, buf: memoryview, base: int) -> None:
        self._buf = buf
        self._base = base

    @property
    def counts(self) -> list[int]:
        """Per-bucket (not cumulative) counts of this process; the last is +Inf."""
        return [int(v) for v in self._buf[self._base : self._base + _NB]]

    @property
    def sum(self) -> float:
        return float(self._buf[self._base + _NB])


class VariantStats:
    """One variant's counters (CloudWatch's Invocations, Invocation4XXErrors, Invocation5XXErrors) and timings
    in this process."""

    __slots__ = ("_base", "_buf", "parse", "predict", "serialise", "total")

    def __init__(self, buf: memoryview, base: int) -> None:
        self._buf = buf
        self._base = base
        first = base + _FIRST_HIST
        self.parse, self.predict, self.serialise, self.total = (
            Histogram(buf, first + i * _HIST) for i in range(len(PHASES))
        )

    def succeeded(self, parse: float, predict: float, serialise: float, total: float) -> None:
        """Count one successful invocation and record its phase timings (the hot path: stores only)."""
        buf, slot = self._buf, self._base
        buf[slot] += 1.0
        slot += _FIRST_HIST  # unrolled over PHASES: this runs for every request
        buf[slot + bisect_left(BUCKETS, parse)] += 1.0
        buf[slot + _NB] += parse
        slot += _HIST
        buf[slot + bisect_left(BUCKETS, predict)] += 1.0
        buf[slot + _NB] += predict
        slot += _HIST
        buf[slot + bisect_left(BUCKETS, serialise)] += 1.0
        buf[slot + _NB] += serialise
        slot += _HIST
        buf[slot + bisect_left(BUCKETS, total)] += 1.0
        buf[slot + _NB] += total

    def failed(self, status: int) -> None:
        """Count one invocation the model failed (4xx or 5xx by its status)."""
        self._buf[self._base] += 1.0
        self._buf[self._base + (_ERRORS_5XX if status >= 500 else _ERRORS_4XX)] += 1.0

    def _get(self, offset: int) -> int:
        return int(self._buf[self._base + offset])

    invocations = property(lambda self: self._get(_INVOCATIONS))
    errors_4xx = property(lambda self: self._get(_ERRORS_4XX))
    errors_5xx = property(lambda self: self._get(_ERRORS_5XX))


class _SharedFile:
    """This process's counters: `<tag>.bin` (doubles, memory-mapped) and `<tag>.json` (what the slots mean).

    The tag is the pid plus random digits: a later process reusing a pid must not overwrite a finished
    generation's numbers. The .json is written (atomically) after the .bin exists, so a reader that finds the
    .json always finds a full-size .bin.
    """

    def __init__(self, directory: Path, endpoint: str, variants: list[str], slots: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.tag = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.path = directory / f"{self.tag}.bin"
        self._file = open(self.path, "w+b")  # noqa: SIM115 - kept open for the mapping, closed in close()
        self._file.truncate(slots * 8)
        self._map = mmap.mmap(self._file.fileno(), slots * 8)
        self._view = memoryview(self._map)
        self.buf = self._view.cast("d")
        meta = {
            "layout": LAYOUT,
            "endpoint": endpoint,
            "pid": os.getpid(),
            "variants": variants,
            "slots": slots,
        }
        tmp = directory / f".{self.tag}.json.tmp"
        tmp.write_text(json.dumps(meta), encoding="utf-8")
        os.replace(tmp, directory / f"{self.tag}.json")

    def close(self) -> None:
        """Unmap (the file stays: it holds this process's final numbers for later scrapes)."""
        with contextlib.suppress(BufferError, ValueError):
            self.buf.release()
            self._view.release()
            self._map.close()
        self._file.close()


class Totals:
    """Numbers summed over processes: per variant slots, rejected requests by code, multi-model numbers."""

    def __init__(self) -> None:
        self.variants: dict[str, list[float]] = {}
        self.rejected = [0.0] * len(REJECT_CODES)
        self.model_loads = 0.0
        self.model_evictions = 0.0
        self.models_loaded = 0.0

    def add(self, variants: list[str], values: Any, live: bool) -> None:
        """Add one process's array (`live`: it is running, so its gauge counts too)."""
        for i, name in enumerate(variants):
            row = self.variants.setdefault(name, [0.0] * VARIANT_SLOTS)
            base = i * VARIANT_SLOTS
            for j in range(VARIANT_SLOTS):
                row[j] += values[base + j]
        base = len(variants) * VARIANT_SLOTS
        for j in range(len(REJECT_CODES)):
            self.rejected[j] += values[base + j]
        base += len(REJECT_CODES)
        self.model_loads += values[base]
        self.model_evictions += values[base + 1]
        if live:
            self.models_loaded += values[base + 2]


class Metrics:
    """This process's numbers, and the endpoint's totals when several processes share a metrics folder."""

    def __init__(self, endpoint: str, variants: Iterable[str], directory: Path | None = None) -> None:
        self.endpoint = endpoint
        self.names = list(variants)
        self.directory = Path(directory) if directory is not None else None
        slots = len(self.names) * VARIANT_SLOTS + len(REJECT_CODES) + len(_GLOBALS)
        self._shared: _SharedFile | None = None
        if self.directory is not None:
            self._shared = _SharedFile(self.directory, endpoint, self.names, slots)
            buf = self._shared.buf
        else:
            buf = memoryview(bytearray(slots * 8)).cast("d")
        self._buf = buf
        self.variants = {name: VariantStats(buf, i * VARIANT_SLOTS) for i, name in enumerate(self.names)}
        self._rejected = len(self.names) * VARIANT_SLOTS
        self._globals = self._rejected + len(REJECT_CODES)

    def reject(self, code: str) -> None:
        """Count a request refused by the runtime front."""
        self._buf[self._rejected + _CODE_SLOT.get(code, len(REJECT_CODES) - 1)] += 1.0

    @property
    def rejected(self) -> dict[str, int]:
        """This process's refused requests by code (codes seen only)."""
        values = self._buf[self._rejected : self._rejected + len(REJECT_CODES)]
        return {code: int(v) for code, v in zip(REJECT_CODES, values, strict=True) if v}

    def _global(self, i: int) -> int:
        return int(self._buf[self._globals + i])

    def _set_global(self, i: int, value: float) -> None:
        self._buf[self._globals + i] = float(value)

    model_loads = property(lambda self: self._global(0), lambda self, v: self._set_global(0, v))
    model_evictions = property(lambda self: self._global(1), lambda self, v: self._set_global(1, v))
    models_loaded = property(lambda self: self._global(2), lambda self, v: self._set_global(2, v))

    def totals(self) -> Totals:
        """This process's numbers plus those of every other process that wrote to the metrics folder."""
        totals = Totals()
        totals.add(self.names, self._buf, live=True)
        if self.directory is None or self._shared is None:
            return totals
        for meta_path in sorted(self.directory.glob("*.json")):
            if meta_path.stem == self._shared.tag:
                continue
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                data = meta_path.with_suffix(".bin").read_bytes()
                slots, names = int(meta["slots"]), list(meta["variants"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # removed meanwhile, or not ours
            if meta.get("layout") != LAYOUT or meta.get("endpoint") != self.endpoint or len(data) < slots * 8:
                continue
            if slots != len(names) * VARIANT_SLOTS + len(REJECT_CODES) + len(_GLOBALS):
                continue
            totals.add(names, memoryview(data)[: slots * 8].cast("d"), live=_alive(meta.get("pid")))
        return totals

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4) of the totals (see `totals`)."""
        totals = self.totals()
        base = f'endpoint="{_escape(self.endpoint)}"'
        # The current variants first, then any that only earlier generations served.
        names = self.names + sorted(set(totals.variants) - set(self.names))
        rows = [(name, totals.variants.get(name) or [0.0] * VARIANT_SLOTS) for name in names]
        out: list[str] = [
            "# HELP serve_invocations_total Requests routed to a variant.",
            "# TYPE serve_invocations_total counter",
        ]
        for name, row in rows:
            out.append(
                f'serve_invocations_total{{{base},variant="{_escape(name)}"}} {_num(row[_INVOCATIONS])}'
            )
        out += [
            "# HELP serve_invocation_errors_total Failed invocations by the model's status class.",
            "# TYPE serve_invocation_errors_total counter",
        ]
        for name, row in rows:
            for cls, value in (("4xx", row[_ERRORS_4XX]), ("5xx", row[_ERRORS_5XX])):
                out.append(
                    f'serve_invocation_errors_total{{{base},variant="{_escape(name)}",class="{cls}"}} '
                    + _num(value)
                )
        out += [
            "# HELP serve_rejected_requests_total Requests refused before reaching a variant, by error code.",
            "# TYPE serve_rejected_requests_total counter",
        ]
        for code, value in sorted(zip(REJECT_CODES, totals.rejected, strict=True)):
            if value:
                out.append(f'serve_rejected_requests_total{{{base},code="{_escape(code)}"}} {_num(value)}')
        out += [
            "# HELP serve_request_duration_seconds Time per successful invocation, by phase.",
            "# TYPE serve_request_duration_seconds histogram",
        ]
        for name, row in rows:
            for p, phase in enumerate(PHASES):
                first = _FIRST_HIST + p * _HIST
                labels = f'{base},variant="{_escape(name)}",phase="{phase}"'
                running = 0.0
                for bound, count in zip((*BUCKETS, float("inf")), row[first : first + _NB], strict=True):
                    running += count
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    out.append(f'serve_request_duration_seconds_bucket{{{labels},le="{le}"}} {_num(running)}')
                out.append(f"serve_request_duration_seconds_sum{{{labels}}} {row[first + _NB]!r}")
                out.append(f"serve_request_duration_seconds_count{{{labels}}} {_num(running)}")
        for metric, kind, value, text in (
            ("serve_model_loads_total", "counter", totals.model_loads, "Multi-model targets loaded."),
            (
                "serve_model_evictions_total",
                "counter",
                totals.model_evictions,
                "Multi-model targets evicted (LRU).",
            ),
            ("serve_models_loaded", "gauge", totals.models_loaded, "Multi-model targets in memory."),
        ):
            out += [f"# HELP {metric} {text}", f"# TYPE {metric} {kind}", f"{metric}{{{base}}} {_num(value)}"]
        return "\n".join(out) + "\n"

    def close(self) -> None:
        """Unmap this process's shared file (its numbers stay in the folder for the processes after it)."""
        if self._shared is not None:
            self._shared.close()


def _num(value: float) -> str:
    """Counts as integers (they are whole numbers stored as doubles)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _alive(pid: Any) -> bool:
    """The process still runs (its gauge values are current, not left over from a stopped generation)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
