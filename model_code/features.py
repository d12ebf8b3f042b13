"""Feature spec: which raw columns a model reads and how they are encoded, saved as JSON beside the model."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SPEC_VERSION = 1
PROBLEM_TYPES = ("binary", "multiclass", "regression")
_SHOWN = 5  # bad rows named in a message


class FeatureError(ValueError):
    """Data does not fit the feature spec; the message names the column, the value and the row."""


def label_str(value: object) -> str:
    """Canonical text of a class label or category, so that 1, 1.0, "1" and " 1 " are the same value."""
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return text
        return _number_str(number) if math.isfinite(number) else text
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return _number_str(float(value))
    return str(value).strip()


def _number_str(number: float) -> str:
    return str(int(number)) if number.is_integer() else repr(number)


def _class_sort_key(label: str) -> tuple[int, float, str]:
    """Numeric labels sort by value ("2" before "10"), then text labels alphabetically."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _rows_text(rows: Sequence[int], values: Sequence[object] | None = None, noun: str = "row") -> str:
    """'rows 3 ('x'), 9 ('y') and 4 more' from 1-based row numbers (at most _SHOWN are listed)."""
    shown = []
    for i, row in enumerate(rows[:_SHOWN]):
        shown.append(f"{row} ({values[i]!r})" if values is not None else str(row))
    more = f" and {len(rows) - _SHOWN} more" if len(rows) > _SHOWN else ""
    return f"{noun}{'s' if len(rows) > 1 else ''} {', '.join(shown)}{more}"


def _numeric_values(series: pd.Series, column: str, what: str = "column") -> np.ndarray:
    """Float64 values of a column; blanks are NaN; non-numeric or infinite values raise FeatureError."""
    if pd.api.types.is_numeric_dtype(series.dtype):
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        text = series.astype("string")
        blank = text.str.strip().fillna("").eq("").to_numpy(dtype=bool)
        coerced = pd.to_numeric(text.where(~blank), errors="coerce")
        bad = np.flatnonzero(coerced.isna().to_numpy(dtype=bool) & ~blank)
        if bad.size:
            shown = [series.iloc[i] for i in bad[:_SHOWN]]
            raise FeatureError(f"{what} '{column}': non-numeric values at {_rows_text(list(bad + 1), shown)}")
        values = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
    infinite = np.flatnonzero(np.isinf(values))
    if infinite.size:
        shown = [values[i] for i in infinite[:_SHOWN]]
        raise FeatureError(f"{what} '{column}': infinite values at {_rows_text(list(infinite + 1), shown)}")
    return values


def _codes(series: pd.Series, column: str, index: Mapping[str, int], what: str) -> np.ndarray:
    """Position of each value in `index` (-1 for missing); a value not in `index` raises FeatureError."""
    if isinstance(series.dtype, pd.CategoricalDtype):  # read as such by a CSV reader: no str per row
        codes, uniques = series.cat.codes.to_numpy(), series.cat.categories
    else:
        codes, uniques = pd.factorize(series.astype(object), use_na_sentinel=True)
    table = np.empty(len(uniques) + 1, dtype=np.int64)
    table[-1] = -1  # the NaN sentinel -1 indexes the last slot
    unknown: list[int] = []
    for i, value in enumerate(uniques):
        key = label_str(value)
        if key == "":
            table[i] = -1
        elif key in index:
            table[i] = index[key]
        else:
            table[i] = -2
            unknown.append(i)
    out = table[codes]
    if unknown:
        bad = np.flatnonzero(out == -2)
        shown = [series.iloc[i] for i in bad[:_SHOWN]]
        allowed = ", ".join(index)
        raise FeatureError(
            f"{what} '{column}': unknown values at {_rows_text(list(bad + 1), shown)} (allowed: {allowed})"
        )
    return out


@dataclass(frozen=True)
class FeatureSpec:
    """Columns, types and encodings of a model's input; `classes[1]` is a binary model's positive class."""

    problem_type: str
    target: str
    numeric: tuple[str, ...]
    categorical: dict[str, tuple[str, ...]] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        if self.problem_type not in PROBLEM_TYPES:
            raise FeatureError(f"problem type {self.problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}")
        names = [*self.numeric, *self.categorical]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise FeatureError(f"columns listed twice: {', '.join(duplicated)}")
        if self.target in names:
            raise FeatureError(f"target column '{self.target}' is also listed as a feature")
        if not names:
            raise FeatureError("no feature columns: give numeric and/or categorical columns")
        for column, categories in self.categorical.items():
            if not categories:
                raise FeatureError(f"categorical column '{column}' has no categories")
            if len(set(categories)) != len(categories):
                raise FeatureError(
                    f"categorical column '{column}' lists a category twice: {list(categories)}"
                )
        if self.problem_type == "binary" and len(self.classes) != 2:
            raise FeatureError(
                f"binary target '{self.target}' needs exactly 2 classes, found {len(self.classes)}: "
                f"{list(self.classes)}"
            )
        if self.problem_type == "multiclass" and len(self.classes) < 2:
            raise FeatureError(
                f"multiclass target '{self.target}' needs at least 2 classes, found {list(self.classes)}"
            )

    @property
    def raw_columns(self) -> list[str]:
        """Raw input columns in the order CSV records without a header use: numeric, then categorical."""
        return [*self.numeric, *self.categorical]

    @property
    def feature_names(self) -> list[str]:
        """Model feature names: numeric columns, then one `column=category` per category."""
        return [*self.numeric, *(f"{c}={v}" for c, cats in self.categorical.items() for v in cats)]

    @classmethod
    def fit(
        cls,
        df: pd.DataFrame,
        *,
        target: str,
        problem_type: str,
        numeric: Sequence[str],
        categorical: Sequence[str] = (),
        categories: Mapping[str, Sequence[object]] | None = None,
    ) -> FeatureSpec:
        """Spec for `df`: categories from `categories` when given, else sorted from the data."""
        missing = [c for c in [*numeric, *categorical, target] if c not in df.columns]
        if missing:
            raise FeatureError(f"missing columns: {', '.join(missing)}")
        given = categories or {}
        cats: dict[str, tuple[str, ...]] = {}
        for column in categorical:
            if column in given:
                values = [label_str(v) for v in given[column]]
            else:
                values = sorted(
                    {label_str(v) for v in df[column].dropna().unique()} - {""}, key=_class_sort_key
                )
            cats[column] = tuple(dict.fromkeys(values))
        classes: tuple[str, ...] = ()
        if problem_type != "regression":
            labels = {label_str(v) for v in df[target].dropna().unique()} - {""}
            classes = tuple(sorted(labels, key=_class_sort_key))
        return cls(problem_type, target, tuple(numeric), cats, classes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "problem_type": self.problem_type,
            "target": self.target,
            "numeric": list(self.numeric),
            "categorical": {c: list(v) for c, v in self.categorical.items()},
            "classes": list(self.classes),
            "feature_names": self.feature_names,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        if not isinstance(data, Mapping):
            raise FeatureError(f"feature spec must be a JSON object, got {type(data).__name__}")
        if data.get("version") != SPEC_VERSION:
            raise FeatureError(f"feature spec version {data.get('version')!r} is not supported (want 1)")
        missing = [k for k in ("problem_type", "target", "numeric", "categorical") if k not in data]
        if missing:
            raise FeatureError(f"feature spec lacks keys: {', '.join(missing)}")
        categorical = data["categorical"]
        if not isinstance(categorical, Mapping) or not isinstance(data["numeric"], list):
            raise FeatureError("feature spec: 'numeric' must be a list and 'categorical' an object")
        spec = cls(
            problem_type=str(data["problem_type"]),
            target=str(data["target"]),
            numeric=tuple(str(c) for c in data["numeric"]),
            categorical={str(c): tuple(str(v) for v in vals) for c, vals in categorical.items()},
            classes=tuple(str(c) for c in data.get("classes") or ()),
        )
        if "feature_names" in data and list(data["feature_names"]) != spec.feature_names:
            raise FeatureError(
                f"feature spec: feature_names {data['feature_names']} do not match the columns "
                f"(expected {spec.feature_names})"
            )
        return spec

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the spec as JSON (atomically: temp file then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureSpec:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FeatureError(f"feature spec not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FeatureError(f"feature spec {path} is not valid JSON: {exc}") from None
        try:
            return cls.from_dict(data)
        except FeatureError as exc:
            raise FeatureError(f"{path}: {exc}") from None

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """Float32 model matrix of `df`: numeric as is (NaN kept), categoricals one-hot (missing: zeros)."""
        missing = [c for c in self.raw_columns if c not in df.columns]
        if missing:
            raise FeatureError(f"missing columns: {', '.join(missing)}")
        out = np.zeros((len(df), len(self.feature_names)), dtype=np.float32)
        for j, column in enumerate(self.numeric):
            out[:, j] = _numeric_values(df[column], column)
        offset = len(self.numeric)
        for column, categories in self.categorical.items():
            codes = _codes(df[column], column, {c: i for i, c in enumerate(categories)}, "column")
            rows = np.flatnonzero(codes >= 0)
            out[rows, offset + codes[rows]] = 1.0
            offset += len(categories)
        return out

    def encode_target(self, series: pd.Series) -> np.ndarray:
        """Class index (int64, order of `classes`) for classification, float64 value for regression."""
        what = "target"
        if self.problem_type == "regression":
            values = _numeric_values(series, self.target, what)
            codes = values
        else:
            codes = _codes(series, self.target, {c: i for i, c in enumerate(self.classes)}, what)
            values = np.where(codes < 0, np.nan, 0.0)
        missing = np.flatnonzero(np.isnan(values))
        if missing.size:
            raise FeatureError(f"target '{self.target}': missing values at {_rows_text(list(missing + 1))}")
        return codes

    def record_encoder(self) -> RecordEncoder:
        return RecordEncoder(self)


class RecordEncoder:
    """Encodes raw records (in `raw_columns` order, or mappings) without pandas: the serving hot path."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec  # large CSV bodies are encoded by `spec.transform` (inference._bulk_features)
        self.columns: list[str] = spec.raw_columns
        self.width = len(spec.feature_names)
        self._n_numeric = len(spec.numeric)
        # (raw position, column, category -> output index); built once, used for every request.
        self._categorical: list[tuple[int, str, dict[str, int]]] = []
        offset = self._n_numeric
        for position, (column, categories) in enumerate(spec.categorical.items(), start=self._n_numeric):
            self._categorical.append((position, column, {c: offset + i for i, c in enumerate(categories)}))
            offset += len(categories)

    def encode(self, rows: Sequence[Sequence[object]]) -> np.ndarray:
        """Model matrix of records given in `raw_columns` order."""
        expected = len(self.columns)
        for i, row in enumerate(rows):
            if len(row) != expected:
                raise FeatureError(
                    f"record {i + 1} has {len(row)} fields, expected {expected} ({','.join(self.columns)})"
                )
        out = np.zeros((len(rows), self.width), dtype=np.float32)
        k = self._n_numeric
        if k:
            out[:, :k] = self._numeric_block(rows, k)
        for position, column, index in self._categorical:
            for i, row in enumerate(rows):
                value = row[position]
                if value is None or value == "":
                    continue
                j = index.get(value) if type(value) is str else None
                if j is None:
                    key = label_str(value)
                    if key == "":
                        continue
                    j = index.get(key)
                    if j is None:
                        raise FeatureError(
                            f"column '{column}': unknown category {value!r} in record {i + 1} "
                            f"(allowed: {', '.join(index)})"
                        )
                out[i, j] = 1.0
        return out

    def encode_header(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> np.ndarray:
        """Model matrix of records whose fields follow `header` (any order; extra columns are ignored)."""
        names = [h.strip() for h in header]
        missing = [c for c in self.columns if c not in names]
        if missing:
            raise FeatureError(f"header lacks columns: {', '.join(missing)}")
        positions = [names.index(c) for c in self.columns]
        for i, row in enumerate(rows):
            if len(row) != len(names):
                raise FeatureError(f"record {i + 1} has {len(row)} fields, the header has {len(names)}")
        return self.encode([[row[p] for p in positions] for row in rows])

    def encode_mappings(self, records: Sequence[Mapping[str, object]]) -> np.ndarray:
        """Model matrix of records given as {column: value} (extra keys are ignored)."""
        rows = []
        for i, record in enumerate(records):
            missing = [c for c in self.columns if c not in record]
            if missing:
                raise FeatureError(f"record {i + 1} lacks fields: {', '.join(missing)}")
            rows.append([record[c] for c in self.columns])
        return self.encode(rows)

    def _numeric_block(self, rows: Sequence[Sequence[object]], k: int) -> np.ndarray:
        if len(rows) > 16:  # vectorised parse; the per-value loop below explains any failure
            try:
                block = np.array([row[:k] for row in rows], dtype=np.float64)
                if not np.isinf(block).any():
                    return block
            except (ValueError, TypeError):
                pass
        block = np.empty((len(rows), k), dtype=np.float64)
        for i, row in enumerate(rows):
            for j in range(k):
                block[i, j] = self._number(row[j], j, i)
        return block

    def _number(self, value: object, j: int, i: int) -> float:
        if value is None:
            return math.nan
        if isinstance(value, bool):
            number = math.inf  # rejected below: true/false is not a measurement
        elif isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            text = value.strip()
            if not text:
                return math.nan
            try:
                number = float(text)
            except ValueError:
                number = math.inf
        else:
            number = math.inf
        if math.isinf(number):
            raise FeatureError(f"column '{self.columns[j]}': non-numeric value {value!r} in record {i + 1}")
        return number
