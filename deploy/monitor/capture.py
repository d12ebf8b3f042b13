"""Captured requests (SageMaker's data-capture JSONL) and training data, read as frames of strings.

Model Monitor reads captured CSV requests without a header and names their columns after the baseline's
features by position; the same is done here, so a check here and a monitoring execution on AWS see the same
columns. Values stay strings: the type checks need the text ("12" vs "12.0"), not a parsed float.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from deploy.clients import ObjectReader, UsageError


@dataclass(frozen=True)
class CapturedRecord:
    """One input record of a captured request, with the request's event id and output text."""

    values: list[str | None]
    event_id: str | None
    output: dict[str, Any] | None


def _text(payload: dict[str, Any]) -> tuple[str, str]:
    """(media type, text) of a captured endpointInput/endpointOutput, whatever its encoding."""
    data = str(payload.get("data", ""))
    if str(payload.get("encoding", "")).upper() == "BASE64":
        data = base64.b64decode(data).decode("utf-8")
    media = str(payload.get("observedContentType", "")).split(";", 1)[0].strip().lower()
    return media, data


def _cell(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def parse_input(payload: dict[str, Any], columns: list[str]) -> list[list[str | None]]:
    """Records of one captured request: CSV lines, or JSON objects/lists (objects mapped to `columns`).

    Raises:
        ValueError: a body that is neither CSV nor JSON records.
    """
    media, text = _text(payload)
    if "json" in media:
        data = json.loads(text)
        if isinstance(data, dict) and "instances" in data:
            data = data["instances"]
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise ValueError("JSON body is not a record, a list of records or {'instances': [...]}")
        if data and not isinstance(data[0], dict | list):
            data = [data]  # one record as a flat list
        rows: list[list[str | None]] = []
        for item in data:
            if isinstance(item, dict):
                extra = [k for k in item if k not in columns]
                rows.append([_cell(item.get(c)) for c in columns] + [_cell(item[k]) for k in extra])
            else:
                rows.append([_cell(v) for v in item])
        return rows
    rows = [[c if c != "" else None for c in row] for row in csv.reader(io.StringIO(text)) if row]
    # The model server accepts CSV with a header row (model_code/inference.py); it is not a record.
    if rows and [c.strip() if c else c for c in rows[0]] == columns:
        rows = rows[1:]
    return rows


def capture_prefix(destination: str, endpoint: str) -> str:
    """Where SageMaker writes an endpoint's captures: `<DestinationS3Uri>/<endpoint>/`."""
    return f"{destination.rstrip('/')}/{endpoint}/"


def read_captures(objects: ObjectReader, prefix: str, columns: list[str]) -> list[CapturedRecord]:
    """Every captured input record under the prefix, in key (time) order.

    Raises:
        UsageError: a line that is not a capture record, naming the object and the line.
    """
    records: list[CapturedRecord] = []
    for uri in objects.list(prefix):
        if not uri.endswith(".jsonl"):
            continue
        lines = objects.read(uri).decode("utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
                data = event["captureData"]
                meta = event.get("eventMetadata", {})
                if "endpointInput" not in data:
                    continue  # captured without Input: no features to profile
                for row in parse_input(data["endpointInput"], columns):
                    records.append(CapturedRecord(row, meta.get("eventId"), data.get("endpointOutput")))
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                raise UsageError(f"{uri} line {number} is not a readable capture record: {exc}") from None
    return records


def records_frame(records: list[CapturedRecord]) -> pd.DataFrame:
    """A frame of strings, one column per position (short rows padded with missing values)."""
    width = max((len(r.values) for r in records), default=0)
    rows = [r.values + [None] * (width - len(r.values)) for r in records]
    return pd.DataFrame(rows, columns=[f"_c{i}" for i in range(width)], dtype="string")


def read_dataset(objects: ObjectReader, uri: str, columns: list[str]) -> pd.DataFrame:
    """The CSV file(s) at or under `uri` (with a header), reduced to `columns` in that order.

    The endpoint receives the model's raw input columns only (numeric, then categorical: the feature spec's
    `raw_columns`), so the baseline profiles exactly those, whatever else the training CSV holds.

    Raises:
        UsageError: no CSV there, or one without some of the columns (named).
    """
    uris = [u for u in objects.list(uri) if u.endswith(".csv")]
    if not uris:
        raise UsageError(f"no CSV data set at or under {uri}")
    frames = []
    for item in uris:
        frame = pd.read_csv(io.BytesIO(objects.read(item)), dtype=str, keep_default_na=False, na_values=[""])
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise UsageError(f"{item} lacks the model's input column(s) {missing}")
        frames.append(frame[columns])
    return pd.concat(frames, ignore_index=True).astype("string")
