"""Serving handlers (model_fn/input_fn/predict_fn/output_fn): raw records in, predictions out, no pickle."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xgboost as xgb

if __package__:
    from .features import FeatureError, FeatureSpec, RecordEncoder, label_str
    from .formatting import csv_lines, quoted
else:
    from features import FeatureError, FeatureSpec, RecordEncoder, label_str
    from formatting import csv_lines, quoted

MODEL_FILE = "xgboost-model.json"
SPEC_FILE = "feature_spec.json"
CSV = "text/csv"
JSON = "application/json"
DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
# CSV bodies with this many lines are encoded by pandas' C reader (see _bulk_features). Below it the
# per-record path wins: read_csv + transform cost ~1.4 ms per call whatever the size (measured on
# 100-record bodies), against ~4.5 µs per record on the per-record path; they break even near 300.
BULK_LINES = 500
_ODD_CHARS = "\x00\x0b\x0c\x1c\x1d\x1e"  # NUL, and ASCII line breaks str.splitlines knows but pandas not
# CSV answers with this many numbers are formatted by numpy (formatting.csv_lines: ~0.15 µs a number plus
# ~130 µs a call), smaller ones by one "%.9g" format string (~0.19 µs a number): the same text either way.
BULK_NUMBERS = 4096


class InputError(ValueError):
    """The request cannot be served as sent (servers answer 4xx); the message names the problem."""


@dataclass(frozen=True)
class Model:
    """A loaded model: booster, its feature spec and the precomputed record encoder."""

    booster: xgb.Booster
    spec: FeatureSpec
    encoder: RecordEncoder


@dataclass(frozen=True)
class Records:
    """Parsed request body: rows (raw column order, or under a header row) or JSON objects."""

    rows: Sequence[Sequence[object]] = ()
    objects: Sequence[Mapping[str, object]] = ()


@dataclass(frozen=True)
class Prediction:
    """Raw model output plus what output_fn needs to label it."""

    problem_type: str
    classes: tuple[str, ...]
    values: np.ndarray  # binary: P(classes[1]); multiclass: (n, k) probabilities; regression: values


def model_fn(model_dir: str | os.PathLike[str]) -> Model:
    """Load `xgboost-model.json` and `feature_spec.json` from `model_dir` (JSON formats only)."""
    directory = Path(model_dir)
    model_path = directory / MODEL_FILE
    if not model_path.is_file():
        raise FileNotFoundError(f"{MODEL_FILE} not found in {directory}")
    booster = xgb.Booster()
    booster.load_model(model_path)
    spec = FeatureSpec.load(directory / SPEC_FILE)
    if booster.num_features() != len(spec.feature_names):
        raise ValueError(
            f"model has {booster.num_features()} features but {SPEC_FILE} defines {len(spec.feature_names)}"
        )
    return Model(booster=booster, spec=spec, encoder=spec.record_encoder())


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def input_fn(body: bytes | str, content_type: str | None) -> Records:
    """Parse CSV (with or without a header row) or JSON (object, list, {"instances": [...]}) records."""
    media = _media_type(content_type) or JSON  # SageMaker's worker defaults a missing Content-Type to JSON
    if media not in (CSV, JSON):
        raise InputError(f"unsupported content type {content_type!r}: use {CSV} or {JSON}")
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"request body is not UTF-8 text: {exc}") from None
    else:
        text = body
    if not text.strip():
        raise InputError("empty request body: send at least one record")
    return _parse_csv(text) if media == CSV else _parse_json(text)


class CsvRows(Sequence[list[str]]):
    """Rows of a large unquoted ASCII CSV body, split only when asked: predict_fn encodes the raw text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._rows: list[list[str]] | None = None

    def _split(self) -> list[list[str]]:
        if self._rows is None:
            self._rows = [line.split(",") for line in self.text.splitlines() if line.strip()]
        return self._rows

    def __len__(self) -> int:
        return len(self._split())

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        return self._split()[index]

    def __iter__(self) -> Iterator[list[str]]:
        return iter(self._split())


def _parse_csv(text: str) -> Records:
    text = text.strip("\r\n")
    if (
        text.count("\n") >= BULK_LINES - 1
        and text.isascii()
        and '"' not in text
        and not any(c in text for c in _ODD_CHARS)
    ):
        return Records(rows=CsvRows(text))  # not empty: input_fn saw a non-blank character
    if '"' in text:
        rows = [row for row in csv.reader(io.StringIO(text)) if row]
    else:  # the common case: split by hand, several times faster than csv.reader for one record
        rows = [line.split(",") for line in text.splitlines() if line.strip()]
    if not rows:
        raise InputError("empty request body: send at least one record")
    return Records(rows=rows)


def _parse_json(text: str) -> Records:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc}") from None
    if isinstance(data, Mapping) and "instances" in data:
        data = data["instances"]
        if not isinstance(data, list):
            raise InputError('"instances" must be a list of records')
    if isinstance(data, Mapping):
        return Records(objects=[data])
    if not isinstance(data, list) or not data:
        raise InputError('JSON body must be an object, a non-empty list of records or {"instances": [...]}')
    if all(isinstance(item, Mapping) for item in data):
        return Records(objects=data)
    if all(isinstance(item, list) for item in data):
        return Records(rows=data)
    if not any(isinstance(item, Mapping | list) for item in data):
        return Records(rows=[data])  # one record as a flat list in raw column order
    raise InputError("JSON records must be all objects or all lists (raw column order), not a mix")


def _bulk_features(text: str, spec: FeatureSpec) -> np.ndarray | None:
    """Encode a large CSV body with pandas' C reader and `spec.transform`; None when it cannot be sure.

    Only bodies this path reads exactly as the per-record path does are accepted (checked here, or by an
    exception), so anything unusual (bad values, wrong field counts, odd headers) goes the per-record way
    and gets its precise error message.
    """
    import pandas as pd  # only here: single-record requests never import or build pandas objects

    if any(label_str(c) != c for cats in spec.categorical.values() for c in cats):
        return None  # a non-canonical category: the record path's exact-match lookup could differ
    end = text.find("\n")
    first = text[:end].split(",")
    if not "".join(first).strip():
        return None
    names = [field.strip() for field in first]
    header = any(name in spec.raw_columns for name in names)
    if header:
        if len(set(names)) != len(names) or not set(spec.raw_columns) <= set(names):
            return None
    elif len(names) != len(spec.raw_columns):
        return None  # pandas would make the extra leading fields of the first record an index
    else:
        names = spec.raw_columns
    # Categoricals as pandas categories: the reader keeps one string per distinct value, not per row.
    dtype = {**{c: "float64" for c in spec.numeric}, **{c: "category" for c in spec.categorical}}
    frame = pd.read_csv(
        # Bytes, not StringIO: the C reader then skips its own chunked re-encoding (~20% faster). CsvRows
        # bodies are ASCII, so this encode is a copy.
        io.BytesIO(text.encode("ascii")),
        header=None,
        names=names,
        skiprows=1 if header else 0,
        usecols=spec.raw_columns,
        dtype=dtype,
        keep_default_na=False,
        na_values=[""],
        engine="c",
    )
    # Every record has exactly len(names) fields iff the body has that many commas (pandas pads short rows).
    if not len(frame) or text.count(",") != (len(names) - 1) * (len(frame) + header):
        return None
    return spec.transform(frame)


def _features(data: Records, encoder: RecordEncoder) -> np.ndarray:
    if data.objects:
        return encoder.encode_mappings(data.objects)
    rows = data.rows
    if isinstance(rows, CsvRows):
        try:
            x = _bulk_features(rows.text, encoder.spec)
        except Exception:  # any doubt: the per-record path decides, with its precise message
            x = None
        if x is not None:
            return x
    first = [str(v).strip() for v in rows[0]]
    if any(name in encoder.columns for name in first):  # a header row names the columns
        if len(rows) == 1:
            raise InputError("CSV body has a header row but no records")
        return encoder.encode_header(first, rows[1:])
    return encoder.encode(rows)


def predict_fn(data: Records | np.ndarray, model: Model) -> Prediction:
    """Encode the records with the model's feature spec and predict with `inplace_predict`."""
    try:
        x = data if isinstance(data, np.ndarray) else _features(data, model.encoder)
    except FeatureError as exc:
        raise InputError(str(exc)) from None
    if x.ndim != 2 or x.shape[1] != model.encoder.width:
        raise InputError(f"expected {model.encoder.width} features per record, got shape {x.shape}")
    values = model.booster.inplace_predict(x)
    return Prediction(model.spec.problem_type, model.spec.classes, np.asarray(values))


def _accept(accept: str | None) -> str:
    for option in (accept or "*/*").split(","):
        media = _media_type(option)
        if media in ("", "*/*"):
            return _media_type(os.environ.get(DEFAULT_ACCEPT_ENV)) or JSON
        if media in (CSV, JSON):
            return media
    raise InputError(f"unsupported accept type {accept!r}: use {CSV} or {JSON}")


def output_fn(prediction: Prediction, accept: str | None) -> tuple[str | bytes, str]:
    """Serialise: CSV one line per record, or JSON {"predictions": [...]}; returns (body, content type).

    CSV numbers are C's "%.9g" of the float32 prediction: nine significant digits give back every float32
    exactly, and the text is the same however many records a request has.
    """
    media = _accept(accept)
    values = np.asarray(prediction.values, dtype=np.float32)  # XGBoost's own type; "%.9g" is exact for it
    if prediction.problem_type == "multiclass":
        matrix = values.reshape(len(values), -1)
        winners = np.argmax(matrix, axis=1)
        if media == CSV:
            if matrix.size >= BULK_NUMBERS:
                return csv_lines(matrix, prediction.classes, winners), CSV
            names = [quoted(c) for c in prediction.classes]
            fields = [
                v for w, row in zip(winners.tolist(), matrix.tolist(), strict=True) for v in (names[w], *row)
            ]
            line = "%s" + ",%.9g" * matrix.shape[1] + "\n"
            return (line * len(matrix)) % tuple(fields), CSV  # one C call for the whole answer
        probs = matrix.tolist()
        records = [
            {
                "label": prediction.classes[w],
                "score": max(row),
                "probabilities": dict(zip(prediction.classes, row, strict=True)),
            }
            for w, row in zip(winners.tolist(), probs, strict=True)
        ]
    else:
        if media == CSV:
            if values.size >= BULK_NUMBERS:
                return csv_lines(values.reshape(-1)), CSV
            scores = values.reshape(-1).tolist()
            return ("%.9g\n" * len(scores)) % tuple(scores), CSV  # one C call for the whole answer
        scores = values.reshape(-1).tolist()
        if prediction.problem_type == "binary":
            negative, positive = prediction.classes
            records = [{"score": s, "label": positive if s >= 0.5 else negative} for s in scores]
        else:
            records = [{"score": s} for s in scores]
    return json.dumps({"predictions": records}), JSON
