"""Tests of the feature spec: fitting, JSON persistence, encoding, errors naming column, value and row."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_code.features import FeatureError, FeatureSpec, label_str


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "torque": ["40.5", "12", "", "33"],
            "speed": [1500.0, 1700.0, 1400.0, np.nan],
            "type": ["L", "H", "M", None],
            "failure": ["0", "1", "0", "1"],
            "udi": [1, 2, 3, 4],
        }
    )


@pytest.fixture
def spec(frame: pd.DataFrame) -> FeatureSpec:
    return FeatureSpec.fit(
        frame, target="failure", problem_type="binary", numeric=["torque", "speed"], categorical=["type"]
    )


def test_fit_orders_features_and_classes(spec: FeatureSpec) -> None:
    assert spec.raw_columns == ["torque", "speed", "type"]
    assert spec.feature_names == ["torque", "speed", "type=H", "type=L", "type=M"]
    assert spec.categorical == {"type": ("H", "L", "M")}
    assert spec.classes == ("0", "1")


def test_classes_sort_numerically_and_labels_are_canonical() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [10, 2, 2.0, " 10 "]})
    spec = FeatureSpec.fit(df, target="y", problem_type="multiclass", numeric=["x"])
    assert spec.classes == ("2", "10")
    assert [label_str(v) for v in (1, 1.0, "1", " 1 ", np.int64(1), "1.50", 2.5)] == ["1"] * 5 + [
        "1.5",
        "2.5",
    ]
    assert spec.encode_target(pd.Series(["10", 2, 2.0])).tolist() == [1, 0, 0]


def test_given_categories_keep_their_order(frame: pd.DataFrame) -> None:
    spec = FeatureSpec.fit(
        frame,
        target="failure",
        problem_type="binary",
        numeric=["torque"],
        categorical=["type"],
        categories={"type": ["M", "L", "H"]},
    )
    assert spec.feature_names == ["torque", "type=M", "type=L", "type=H"]


def test_json_round_trip_with_the_contract_keys(spec: FeatureSpec, tmp_path: Path) -> None:
    path = spec.save(tmp_path / "sub" / "feature_spec.json")
    data = json.loads(path.read_text())  # JSON, never pickle
    assert data == {
        "version": 1,
        "problem_type": "binary",
        "target": "failure",
        "numeric": ["torque", "speed"],
        "categorical": {"type": ["H", "L", "M"]},
        "classes": ["0", "1"],
        "feature_names": ["torque", "speed", "type=H", "type=L", "type=M"],
    }
    assert FeatureSpec.load(path) == spec
    assert [p.name for p in path.parent.iterdir()] == ["feature_spec.json"]  # no temp file left behind


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"version": 2}', "version 2 is not supported"),
        ('{"version": 1, "problem_type": "binary"}', "lacks keys: target, numeric, categorical"),
        (
            '{"version": 1, "problem_type": "regression", "target": "y", "numeric": ["a"], "categorical": {},'
            ' "feature_names": ["b"]}',
            "do not match",
        ),
        (
            '{"version": 1, "problem_type": "binary", "target": "y", "numeric": ["a"], "categorical": {},'
            ' "classes": ["0", "1", "2"]}',
            "exactly 2 classes",
        ),
        (
            '{"version": 1, "problem_type": "ranking", "target": "y", "numeric": ["a"], "categorical": {}}',
            "ranking",
        ),
    ],
)
def test_load_rejects_bad_specs(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "feature_spec.json"
    path.write_text(content)
    with pytest.raises(FeatureError, match=message) as error:
        FeatureSpec.load(path)
    assert str(path) in str(error.value)


def test_transform_one_hot_and_missing_values(spec: FeatureSpec, frame: pd.DataFrame) -> None:
    x = spec.transform(frame[["type", "speed", "torque"]])  # column order of the frame does not matter
    assert x.dtype == np.float32
    expected = np.array(
        [
            [40.5, 1500, 0, 1, 0],
            [12, 1700, 1, 0, 0],
            [np.nan, 1400, 0, 0, 1],
            [33, np.nan, 0, 0, 0],  # a missing category is all zeros
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(x, expected)


def test_unknown_category_names_column_value_and_row(spec: FeatureSpec, frame: pd.DataFrame) -> None:
    frame.loc[2, "type"] = "X"
    with pytest.raises(FeatureError) as error:
        spec.transform(frame)
    message = str(error.value)
    assert "'type'" in message and "'X'" in message and "row 3" in message and "allowed: H, L, M" in message


def test_non_numeric_value_names_column_value_and_row(spec: FeatureSpec, frame: pd.DataFrame) -> None:
    frame.loc[1, "torque"] = "fast"
    with pytest.raises(FeatureError, match=r"column 'torque': non-numeric values at row 2 \('fast'\)"):
        spec.transform(frame)


def test_many_bad_rows_are_summarised(spec: FeatureSpec) -> None:
    df = pd.DataFrame({"torque": ["x"] * 8, "speed": [1.0] * 8, "type": ["L"] * 8})
    with pytest.raises(
        FeatureError, match=r"rows 1 \('x'\), 2 \('x'\), 3 \('x'\), 4 \('x'\), 5 \('x'\) and 3 more"
    ):
        spec.transform(df)


def test_infinite_value_is_rejected(spec: FeatureSpec, frame: pd.DataFrame) -> None:
    frame["speed"] = [1.0, math.inf, 2.0, 3.0]
    with pytest.raises(FeatureError, match=r"column 'speed': infinite values at row 2"):
        spec.transform(frame)


def test_missing_columns_are_named(spec: FeatureSpec, frame: pd.DataFrame) -> None:
    with pytest.raises(FeatureError, match="missing columns: speed, type"):
        spec.transform(frame.drop(columns=["speed", "type"]))


def test_encode_target_per_problem_type(spec: FeatureSpec, frame: pd.DataFrame) -> None:
    assert spec.encode_target(pd.Series([1, 0, "1", 0.0])).tolist() == [1, 0, 1, 0]
    with pytest.raises(FeatureError, match=r"target 'failure': unknown values at row 2 \('yes'\)"):
        spec.encode_target(pd.Series(["0", "yes"]))
    with pytest.raises(FeatureError, match="target 'failure': missing values at row 2"):
        spec.encode_target(pd.Series(["0", None]))
    regression = FeatureSpec("regression", "life", ("torque",))
    assert regression.encode_target(pd.Series(["1.5", 2])).tolist() == [1.5, 2.0]
    with pytest.raises(FeatureError, match="missing values at row 1"):
        regression.encode_target(pd.Series([np.nan, 2.0]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"problem_type": "binary", "classes": ("0",)}, "exactly 2 classes"),
        ({"problem_type": "multiclass", "classes": ("a",)}, "at least 2 classes"),
        ({"problem_type": "regression", "numeric": ("a", "a")}, "listed twice: a"),
        ({"problem_type": "regression", "numeric": ("y",)}, "also listed as a feature"),
        ({"problem_type": "regression", "numeric": (), "categorical": {"t": ()}}, "has no categories"),
    ],
)
def test_inconsistent_specs_are_refused(kwargs: dict, message: str) -> None:
    values = {"target": "y", "numeric": ("a",), **kwargs}
    with pytest.raises(FeatureError, match=message):
        FeatureSpec(**values)


def test_record_encoder_errors_name_the_problem(spec: FeatureSpec) -> None:
    encoder = spec.record_encoder()
    with pytest.raises(FeatureError, match=r"record 2 has 2 fields, expected 3 \(torque,speed,type\)"):
        encoder.encode([["1", "2", "L"], ["1", "2"]])
    with pytest.raises(FeatureError, match=r"column 'speed': non-numeric value 'abc' in record 1"):
        encoder.encode([["1", "abc", "L"]])
    with pytest.raises(FeatureError, match=r"column 'speed': non-numeric value True"):
        encoder.encode([[1, True, "L"]])
    with pytest.raises(FeatureError, match=r"column 'type': unknown category 'Q' in record 1"):
        encoder.encode([["1", "2", "Q"]])
    with pytest.raises(FeatureError, match="record 1 lacks fields: type"):
        encoder.encode_mappings([{"torque": 1, "speed": 2}])
    with pytest.raises(FeatureError, match="header lacks columns: speed"):
        encoder.encode_header(["torque", "type"], [["1", "L"]])


def test_record_encoder_takes_headers_and_mappings(spec: FeatureSpec) -> None:
    encoder = spec.record_encoder()
    by_order = encoder.encode([["1.5", "1500", "M"]])
    by_header = encoder.encode_header(["type", "id", "speed", "torque"], [["M", "7", "1500", "1.5"]])
    by_name = encoder.encode_mappings([{"type": "M", "speed": 1500, "torque": 1.5, "extra": "ignored"}])
    np.testing.assert_array_equal(by_order, [[1.5, 1500, 0, 0, 1]])
    np.testing.assert_array_equal(by_header, by_order)
    np.testing.assert_array_equal(by_name, by_order)


number = st.one_of(
    st.none(),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, width=32),
    st.integers(min_value=-(10**6), max_value=10**6),
)
record = st.tuples(number, number, st.sampled_from(["H", "L", "M", "", None]))


SPEC = FeatureSpec("binary", "failure", ("torque", "speed"), {"type": ("H", "L", "M")}, ("0", "1"))


@settings(max_examples=60, deadline=None)
@given(st.lists(record, min_size=1, max_size=40), st.booleans())
def test_record_encoder_matches_dataframe_transform(rows: list, as_text: bool) -> None:
    """The serving encoder and the training transform must agree on every input (both parse paths)."""
    spec = SPEC
    if as_text:  # CSV gives text; JSON gives numbers and nulls
        rows = [[("" if v is None else repr(v)) if i < 2 else v for i, v in enumerate(r)] for r in rows]
    df = pd.DataFrame(rows, columns=spec.raw_columns, dtype=object)
    expected = spec.transform(df)
    np.testing.assert_array_equal(spec.record_encoder().encode(rows), expected)
