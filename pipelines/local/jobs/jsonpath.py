"""JSONPath for batch transform filters (DataProcessing): `$`, `.key`, `*`, `[i,j]`, `[a:b]`, `['k','l']`.

These are the operators SageMaker's batch-transform data-processing guide lists (no recursive descent, no
filter expressions), so anything else is refused up front rather than half-applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pipelines.local.errors import UnsupportedError

_SEGMENT = re.compile(r"\.([A-Za-z_][\w-]*|\*)|\[([^\]]*)\]")
_INT = re.compile(r"^-?\d+$")
_SLICE = re.compile(r"^(-?\d*):(-?\d*)$")


class FilterError(ValueError):
    """A filter that does not fit the record (missing key, index out of range)."""


@dataclass(frozen=True)
class JsonPath:
    """A parsed filter; `apply` selects from a parsed record (a list of CSV columns or JSON)."""

    expr: str
    segments: tuple[tuple[str, Any], ...]

    @property
    def is_identity(self) -> bool:
        return not self.segments

    def apply(self, value: Any) -> Any:
        # After a wildcard the path selects several values: later segments apply to each of them.
        current, several = [value], False
        for kind, arg in self.segments:
            if kind == "wildcard":
                current, several = [item for v in current for item in _every(v)], True
            elif kind == "key":
                current = [_key(v, arg) for v in current]
            else:
                current = [_bracket(v, arg) for v in current]
        return current if several else current[0]


def parse(expr: str | None) -> JsonPath:
    """Parse a filter (None or "" means `$`).

    Raises:
        UnsupportedError: syntax outside the subset (filters, wildcards, recursive descent).
    """
    text = (expr or "$").strip()
    if not text.startswith("$"):
        raise UnsupportedError(f"JSONPath {expr!r} must start with '$'")
    segments: list[tuple[str, Any]] = []
    pos = 1
    while pos < len(text):
        match = _SEGMENT.match(text, pos)
        if not match:
            raise UnsupportedError(f"JSONPath {expr!r}: unsupported syntax at {text[pos:]!r}")
        if match.group(1) == "*" or (match.group(2) or "").strip() == "*":
            segments.append(("wildcard", None))
        elif match.group(1) is not None:
            segments.append(("key", match.group(1)))
        else:
            segments.append(("bracket", _items(match.group(2), expr)))
        pos = match.end()
    return JsonPath(text, tuple(segments))


def _items(body: str, expr: str) -> list[Any]:
    items: list[Any] = []
    for raw in body.split(","):
        item = raw.strip()
        if _INT.match(item):
            items.append(int(item))
        elif _SLICE.match(item):
            start, stop = _SLICE.match(item).groups()  # type: ignore[union-attr]
            items.append(slice(int(start) if start else None, int(stop) if stop else None))
        elif len(item) >= 2 and item[0] == item[-1] and item[0] in "'\"":
            items.append(item[1:-1])
        else:
            raise UnsupportedError(f"JSONPath {expr!r}: unsupported selector {item!r}")
    return items


def _every(value: Any) -> list[Any]:
    """`*`: every value of an object, every element of an array."""
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return list(value)
    raise FilterError("wildcard applied to a value that is neither an object nor an array")


def _key(value: Any, key: str) -> Any:
    if not isinstance(value, dict) or key not in value:
        raise FilterError(f"key {key!r} not in record")
    return value[key]


def _bracket(value: Any, items: list[Any]) -> Any:
    if all(isinstance(i, str) for i in items):
        if not isinstance(value, dict):
            raise FilterError(f"keys {items} applied to a non-object record")
        missing = [k for k in items if k not in value]
        if missing:
            raise FilterError(f"key(s) {missing} not in record")
        return value[items[0]] if len(items) == 1 else {k: value[k] for k in items}
    if not isinstance(value, list):
        raise FilterError("index applied to a record that is not an array")
    if len(items) == 1 and isinstance(items[0], int):
        return [_index(value, items[0])] if getattr(value, "csv_row", False) else _index(value, items[0])
    out: list[Any] = []
    for item in items:
        if isinstance(item, int):
            out.append(_index(value, item))
        elif isinstance(item, slice):
            out.extend(value[item])
        else:
            raise FilterError(f"key {item!r} applied to an array")
    return out


def _index(value: list[Any], index: int) -> Any:
    if not -len(value) <= index < len(value):
        raise FilterError(f"index {index} out of range for a record of {len(value)} values")
    return value[index]


class CsvRow(list):  # type: ignore[type-arg]
    """A CSV record's columns; a single index on it still selects a row (one column), not a scalar."""

    csv_row = True
