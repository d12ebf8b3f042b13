"""Tests of the serving handlers: CSV and JSON records in, predictions out, InputError for bad requests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model_code import inference
from model_code.features import FeatureSpec
from model_code.inference import InputError, input_fn, model_fn, output_fn, predict_fn
from tests.unit.conftest import Chain

CSV, JSON = "text/csv", "application/json"


class Served:
    """A model loaded by model_fn, with the raw test rows and the predictions they must give."""

    def __init__(self, run: Chain) -> None:
        self.model = model_fn(run.model_dir)
        self.spec: FeatureSpec = self.model.spec
        self.test = pd.read_csv(run.prepared.test_csv).head(40)
        self.raw = self.test[self.spec.raw_columns]
        self.expected = self.model.booster.inplace_predict(self.spec.transform(self.test))

    def serve(self, body: str | bytes, content_type: str = CSV, accept: str = CSV) -> tuple[str, str]:
        return output_fn(predict_fn(input_fn(body, content_type), self.model), accept)

    def records(self) -> list[dict]:
        return json.loads(self.raw.to_json(orient="records"))


@pytest.fixture(scope="module")
def served(chain: Callable[[str], Chain]) -> Callable[[str], Served]:
    cache: dict[str, Served] = {}

    def get(problem: str) -> Served:
        if problem not in cache:
            cache[problem] = Served(chain(problem))
        return cache[problem]

    return get


def csv_scores(body: str) -> np.ndarray:
    assert body.endswith("\n")
    return np.array([float(line) for line in body.splitlines()])


def json_scores(body: str) -> np.ndarray:
    return np.array([p["score"] for p in json.loads(body)["predictions"]])


def test_csv_without_header_many_rows(served: Callable[[str], Served]) -> None:
    s = served("binary")
    body, content_type = s.serve(s.raw.to_csv(header=False, index=False))
    assert content_type == CSV
    np.testing.assert_allclose(csv_scores(body), s.expected, rtol=1e-6)


def test_csv_with_a_header_in_any_order_ignores_extra_columns(served: Callable[[str], Served]) -> None:
    s = served("binary")
    shuffled = s.test[["type", "machine_failure", *reversed(s.spec.numeric)]]
    body, _ = s.serve(shuffled.to_csv(index=False).encode(), "text/csv; charset=utf-8")
    np.testing.assert_allclose(csv_scores(body), s.expected, rtol=1e-6)


def test_single_csv_record_builds_no_dataframe(
    served: Callable[[str], Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = served("binary")
    line = s.raw.head(1).to_csv(header=False, index=False)

    def no_pandas(*args: object, **kwargs: object) -> None:
        raise AssertionError("pandas used on the single-record path")

    monkeypatch.setattr(pd, "DataFrame", no_pandas)
    monkeypatch.setattr(pd, "read_csv", no_pandas)
    body, _ = s.serve(line.rstrip("\n"))
    assert csv_scores(body) == pytest.approx([s.expected[0]], rel=1e-6)


def test_quoted_csv_fields_are_parsed(served: Callable[[str], Served]) -> None:
    s = served("binary")
    body, _ = s.serve(s.raw.head(3).to_csv(header=False, index=False, quoting=1))  # csv.QUOTE_ALL
    np.testing.assert_allclose(csv_scores(body), s.expected[:3], rtol=1e-6)


@pytest.mark.parametrize("shape", ["object", "list of objects", "instances of objects", "instances of lists"])
def test_json_shapes(served: Callable[[str], Served], shape: str) -> None:
    s = served("binary")
    records = s.records()
    body = {
        "object": records[0],
        "list of objects": records,
        "instances of objects": {"instances": records},
        "instances of lists": {"instances": s.raw.astype(object).values.tolist()},
    }[shape]
    expected = s.expected[:1] if shape == "object" else s.expected
    out, content_type = s.serve(json.dumps(body), JSON, JSON)
    assert content_type == JSON
    predictions = json.loads(out)["predictions"]
    np.testing.assert_allclose(json_scores(out), expected, rtol=1e-6)
    assert [p["label"] for p in predictions] == ["1" if p >= 0.5 else "0" for p in expected]


def test_multiclass_gives_label_and_probabilities(served: Callable[[str], Served]) -> None:
    s = served("multiclass")
    classes = list(s.spec.classes)
    out, _ = s.serve(json.dumps(s.records()), JSON, JSON)
    predictions = json.loads(out)["predictions"]
    probabilities = np.array([[p["probabilities"][c] for c in classes] for p in predictions])
    np.testing.assert_allclose(probabilities, s.expected, rtol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert [p["label"] for p in predictions] == [classes[i] for i in s.expected.argmax(axis=1)]
    csv_body, _ = s.serve(s.raw.to_csv(header=False, index=False), CSV, CSV)
    first = csv_body.splitlines()[0].split(",")
    assert first[0] == classes[int(s.expected[0].argmax())] and len(first) == 1 + len(classes)


def test_regression_gives_values(served: Callable[[str], Served]) -> None:
    s = served("regression")
    out, _ = s.serve(s.raw.to_csv(header=False, index=False), CSV, JSON)
    assert set(json.loads(out)["predictions"][0]) == {"score"}
    np.testing.assert_allclose(json_scores(out), s.expected, rtol=1e-6)


def test_accept_defaults(served: Callable[[str], Served], monkeypatch: pytest.MonkeyPatch) -> None:
    s = served("binary")
    prediction = predict_fn(input_fn(s.raw.head(2).to_csv(header=False, index=False), CSV), s.model)
    assert output_fn(prediction, "*/*")[1] == JSON
    assert output_fn(prediction, None)[1] == JSON
    assert output_fn(prediction, "application/xml, text/csv;q=0.5")[1] == CSV
    monkeypatch.setenv("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", CSV)
    assert output_fn(prediction, "*/*")[1] == CSV


def test_predict_fn_takes_an_encoded_matrix(served: Callable[[str], Served]) -> None:
    s = served("binary")
    prediction = predict_fn(s.spec.transform(s.test), s.model)
    np.testing.assert_allclose(prediction.values, s.expected)
    with pytest.raises(InputError, match=r"expected 8 features per record, got shape \(2, 3\)"):
        predict_fn(np.zeros((2, 3), dtype=np.float32), s.model)


GOOD = "300.1,310.2,1500,40.5,120,L"
BAD_REQUESTS = [
    ("empty body", b"", CSV, "empty request body"),
    ("blank lines", "\n\n", CSV, "empty request body"),
    ("too few fields", "300.1,310.2,1500", CSV, "record 1 has 3 fields, expected 6"),
    ("too many fields", f"{GOOD}\n{GOOD},9", CSV, "record 2 has 7 fields, expected 6"),
    (
        "non-numeric",
        "300.1,310.2,fast,40.5,120,L",
        CSV,
        "column 'rotational_speed_rpm': non-numeric value 'fast'",
    ),
    (
        "unknown category",
        "300.1,310.2,1500,40.5,120,Q",
        CSV,
        "column 'type': unknown category 'Q' in record 1",
    ),
    ("header only", "air_temperature_k,type", CSV, "header row but no records"),
    ("not UTF-8", b"\xff\xfe\x00", CSV, "not UTF-8"),
    ("invalid JSON", '{"air_temperature_k": ', JSON, "invalid JSON"),
    ("empty JSON list", "[]", JSON, "non-empty list"),
    ("JSON scalar", "42", JSON, "must be an object"),
    ("mixed JSON records", '[{"a": 1}, [1, 2]]', JSON, "not a mix"),
    ("instances not a list", '{"instances": 5}', JSON, '"instances" must be a list'),
    (
        "missing JSON field",
        '{"air_temperature_k": 300}',
        JSON,
        "record 1 lacks fields: process_temperature_k",
    ),
    ("JSON boolean", json.dumps([[300, 310, True, 40, 120, "L"]]), JSON, "non-numeric value True"),
    ("unsupported content type", GOOD, "text/plain", "unsupported content type 'text/plain'"),
]


@pytest.mark.parametrize(
    ("case", "body", "content_type", "message"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_requests_raise_input_error(
    served: Callable[[str], Served], case: str, body: str | bytes, content_type: str, message: str
) -> None:
    s = served("binary")
    with pytest.raises(InputError) as error:
        s.serve(body, content_type)
    assert message in str(error.value), case
    assert isinstance(error.value, ValueError)


def test_unsupported_accept_raises_input_error(served: Callable[[str], Served]) -> None:
    s = served("binary")
    with pytest.raises(InputError, match="unsupported accept type 'application/xml'"):
        s.serve(GOOD, CSV, "application/xml")


def test_model_fn_needs_the_json_model_and_a_matching_spec(
    chain: Callable[[str], Chain], tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError, match=r"xgboost-model\.json not found"):
        model_fn(tmp_path)
    model_dir = chain("binary").model_dir
    (tmp_path / "xgboost-model.json").write_bytes((model_dir / "xgboost-model.json").read_bytes())
    FeatureSpec("binary", "machine_failure", ("torque_nm",), {}, ("0", "1")).save(
        tmp_path / "feature_spec.json"
    )
    with pytest.raises(ValueError, match=r"model has 8 features but feature_spec\.json defines 1"):
        model_fn(tmp_path)
    assert inference.model_fn(model_dir).encoder.width == 8


def slow_serve(s: Served, text: str, accept: str = CSV) -> tuple[str, str]:
    """The per-record path: the same body parsed as small bodies are (no pandas)."""
    records = inference.Records(rows=list(inference.CsvRows(text.strip("\r\n"))))
    return output_fn(predict_fn(records, s.model), accept)


@pytest.mark.parametrize("header", [False, True])
def test_large_csv_bodies_match_the_per_record_path(
    served: Callable[[str], Served], monkeypatch: pytest.MonkeyPatch, header: bool
) -> None:
    from model_code.data import generate

    s = served("binary")
    frame = generate(3000, 5)
    frame.loc[7, "torque_nm"] = np.nan  # a blank field: missing, both ways
    frame.loc[9, "type"] = np.nan
    columns = ["type", "machine_failure", *reversed(s.spec.numeric)] if header else s.spec.raw_columns
    text = frame[columns].to_csv(header=header, index=False)
    data = input_fn(text.encode(), CSV)
    assert isinstance(data.rows, inference.CsvRows)
    calls = []
    bulk = inference._bulk_features
    monkeypatch.setattr(inference, "_bulk_features", lambda *a: calls.append(1) or bulk(*a))
    fast = predict_fn(data, s.model)
    assert calls and calls[0] == 1
    slow = predict_fn(inference.Records(rows=list(data.rows)), s.model)
    assert fast.values.dtype == slow.values.dtype
    assert fast.values.tobytes() == slow.values.tobytes()  # bit for bit
    x = inference._bulk_features(data.rows.text, s.spec)
    assert x is not None  # the bulk path really served it
    for accept in (CSV, JSON):
        assert output_fn(fast, accept) == slow_serve(s, text, accept)


LARGE_BAD = [
    (5, "300.1,310.2,fast,40.5,120,L", "column 'rotational_speed_rpm': non-numeric value 'fast' in record 6"),
    (40, "300.1,310.2,1500,40.5,120,Q", "column 'type': unknown category 'Q' in record 41"),
    (12, "300.1,310.2,1500,40.5,120", "record 13 has 5 fields, expected 6"),
    (33, "300.1,310.2,1500,40.5,120,L,9", "record 34 has 7 fields, expected 6"),
    (0, "300.1,310.2,1500,40.5,120,L,9", "record 1 has 7 fields, expected 6"),
    (20, "300.1,310.2,inf,40.5,120,L", "non-numeric value 'inf' in record 21"),
    (20, "300.1,NA,1500,40.5,120,L", "column 'process_temperature_k': non-numeric value 'NA' in record 21"),
]


@pytest.mark.parametrize(("at", "line", "message"), LARGE_BAD, ids=[c[2] for c in LARGE_BAD])
def test_bad_record_in_a_large_body_gives_the_per_record_message(
    served: Callable[[str], Served], at: int, line: str, message: str
) -> None:
    s = served("binary")
    lines = [GOOD] * (inference.BULK_LINES + 50)  # large enough for the bulk path
    lines[at] = line
    text = "\n".join(lines) + "\n"
    with pytest.raises(InputError) as fast:
        s.serve(text)
    with pytest.raises(InputError) as slow:
        slow_serve(s, text)
    assert str(fast.value) == str(slow.value)
    assert message in str(fast.value)
