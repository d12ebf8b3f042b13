"""Metric extraction from a job's log with the request's MetricDefinitions, as SageMaker does."""

from __future__ import annotations

import datetime as dt
import math
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from pipelines.local.errors import UnsupportedError
from pipelines.local.jobs.context import now

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class MetricParser:
    """Feeds log lines through each definition's regex and keeps the last value of every metric."""

    def __init__(self, definitions: Sequence[Mapping[str, str]]) -> None:
        self._defs: list[tuple[str, re.Pattern[str]]] = []
        for definition in definitions:
            try:
                self._defs.append((definition["Name"], re.compile(definition["Regex"])))
            except (KeyError, re.error) as exc:
                raise UnsupportedError(f"bad MetricDefinitions entry {dict(definition)!r}: {exc}") from exc
        self._last: dict[str, tuple[float, dt.datetime]] = {}
        self._lock = threading.Lock()

    def feed(self, line: str) -> None:
        """Parse one log line.

        CloudWatch shows a tab as `#011` and SageMaker's regexes (e.g. the built-in XGBoost ones)
        are written against that form, so tabs are turned into `#011` before matching.
        """
        if not self._defs:
            return
        line = line.replace("\t", "#011")
        for name, pattern in self._defs:
            match = pattern.search(line)
            if not match:
                continue
            text = match.group(1) if match.groups() else match.group(0)
            # A greedy `(\S+)` before another `#011field` captures it too: take the leading number.
            number = _NUMBER.match(text or "")
            if number is None:
                continue
            value = float(number.group(0))
            if math.isfinite(value):
                with self._lock:
                    self._last[name] = (value, now())

    def final(self) -> list[dict[str, Any]]:
        """FinalMetricDataList: the last value seen for each metric, in definition order."""
        with self._lock:
            return [
                {"MetricName": name, "Value": self._last[name][0], "Timestamp": self._last[name][1]}
                for name, _ in self._defs
                if name in self._last
            ]
