"""Tests of the preprocess step: each bad input exits 2 naming columns and rows; good input is split."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model_code import preprocess
from model_code.data import generate
from tests.unit.conftest import NUMERIC, Prepared, run_script, schema_args

FEATURES = [*NUMERIC.split(","), "type"]


def write_inputs(base: Path, files: dict[str, str | bytes | pd.DataFrame]) -> Path:
    data = base / "processing" / "input" / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = data / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, pd.DataFrame):
            content.to_csv(path, index=False)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return data


def run(
    base: Path, capsys: pytest.CaptureFixture[str], args: list[str] | None = None
) -> tuple[int, str, str]:
    """preprocess.main in-process under SAGEMAKER_BASE_DIR=base (see `job_base`)."""
    code = preprocess.main(args if args is not None else schema_args("binary"))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def small(rows: int = 40, seed: int = 5) -> pd.DataFrame:
    return generate(rows, seed)


def _torque_text(df: pd.DataFrame) -> pd.DataFrame:
    df = df.astype({"torque_nm": object})
    df.loc[2, "torque_nm"] = "abc"
    df.loc[6, "torque_nm"] = "12,5"
    return df


def _sparse_air(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[[1, 4, 9, 20], "air_temperature_k"] = np.nan  # 4 of 40 = 10 % > 5 %
    return df


def _unknown_type(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[3, "type"] = "X"
    return df


def _one_class(df: pd.DataFrame) -> pd.DataFrame:
    df["machine_failure"] = 0
    return df


def _three_classes(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[:2, "machine_failure"] = 2
    return df


BAD_FRAMES: list[tuple[str, Callable[[pd.DataFrame], pd.DataFrame], list[str]]] = [
    ("missing column", lambda df: df.drop(columns=["torque_nm"]), ["missing columns: torque_nm"]),
    ("extra column", lambda df: df.assign(vibration=1.0), ["unexpected columns", "vibration"]),
    ("non-numeric", _torque_text, ["column 'torque_nm'", "non-numeric", "rows 3 ('abc'), 7 ('12,5')"]),
    (
        "too many NaN",
        _sparse_air,
        ["column 'air_temperature_k'", "10.0% missing", "limit 5.0%", "rows 2, 5, 10, 21"],
    ),
    (
        "unknown category",
        _unknown_type,
        ["column 'type'", "unknown categories", "row 4 ('X')", "allowed: H, L, M"],
    ),
    ("one class", _one_class, ["target 'machine_failure'", "1 class (0)"]),
    ("three classes for binary", _three_classes, ["target 'machine_failure' has 3 classes", "multiclass"]),
]


@pytest.mark.parametrize(("case", "corrupt", "expected"), BAD_FRAMES, ids=[c[0] for c in BAD_FRAMES])
def test_bad_data_fails_with_exit_2_naming_columns_and_rows(
    job_base: Path, capsys: pytest.CaptureFixture[str], case: str, corrupt: Callable, expected: list[str]
) -> None:
    write_inputs(job_base, {"data.csv": corrupt(small())})
    code, _, err = run(job_base, capsys)
    assert code == 2
    for text in expected:
        assert text in err, f"{case}: {text!r} not in {err!r}"
    assert (job_base / "output" / "failure").read_text().strip() == err.strip()
    assert not (job_base / "processing" / "output" / "train").exists()  # validation comes first


def test_all_problems_are_reported_together(job_base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    df = _unknown_type(_torque_text(small().assign(vibration=0)))
    write_inputs(job_base, {"data.csv": df})
    code, _, err = run(job_base, capsys)
    assert code == 2
    assert "3 problems" in err and "vibration" in err and "'torque_nm'" in err and "'type'" in err


def test_many_bad_rows_list_the_first_five(job_base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    df = small().astype({"rotational_speed_rpm": object})
    df.loc[10:17, "rotational_speed_rpm"] = "fast"
    write_inputs(job_base, {"data.csv": df})
    code, _, err = run(job_base, capsys)
    assert code == 2
    assert "rows 11 ('fast'), 12 ('fast'), 13 ('fast'), 14 ('fast'), 15 ('fast') and 3 more" in err


FILE_CASES: list[tuple[str, dict[str, str | bytes], list[str]]] = [
    ("zero-byte file", {"data.csv": b""}, ["data.csv: empty file (0 bytes"]),
    ("header only", {"data.csv": ",".join(generate(1, 1).columns) + "\n"}, ["no data rows", "header only"]),
    ("no CSV in the directory", {"readme.txt": "hello"}, ["no *.csv files under", "readme.txt"]),
    ("ragged CSV", {"data.csv": "a,b\n1,2\n3,4,5\n"}, ["data.csv: not a readable CSV file"]),
]


@pytest.mark.parametrize(("case", "files", "expected"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_files_fail_with_exit_2(
    job_base: Path, capsys: pytest.CaptureFixture[str], case: str, files: dict, expected: list[str]
) -> None:
    write_inputs(job_base, files)
    code, _, err = run(job_base, capsys)
    assert code == 2
    for text in expected:
        assert text in err, f"{case}: {text!r} not in {err!r}"


def test_files_with_different_columns_are_refused(job_base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_inputs(job_base, {"a.csv": small(), "b.csv": small().drop(columns=["udi"]).assign(extra=1)})
    code, _, err = run(job_base, capsys)
    assert code == 2
    assert "b.csv: columns differ from a.csv (missing: udi; extra: extra)" in err


def test_bad_rows_in_several_files_name_the_file(job_base: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_inputs(job_base, {"a.csv": small(), "b.csv": _torque_text(small())})
    code, _, err = run(job_base, capsys)
    assert code == 2 and "b.csv:3 ('abc')" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--split", "0.8,0.1"], "--split '0.8,0.1': expected three positive fractions"),
        (["--problem-type", "ranking"], "bad arguments: argument --problem-type: invalid choice: 'ranking'"),
        (["--categories", "type"], "--categories 'type': expected COLUMN=VALUE|VALUE"),
        (["--categories", "udi=1|2"], "--categories given for columns that are not categorical: udi"),
        (["--drop-columns", "torque_nm"], "--drop-columns also lists feature or target columns: torque_nm"),
        (["--max-nan-ratio", "2"], "--max-nan-ratio 2.0"),
    ],
)
def test_bad_arguments_fail_with_exit_2(
    job_base: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    write_inputs(job_base, {"data.csv": small()})
    code, _, err = run(job_base, capsys, [*schema_args("binary"), *args])
    assert code == 2
    assert expected in err
    assert (job_base / "output" / "failure").read_text().strip() == err.strip()


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"data.csv": b""}, "empty file (0 bytes"),
        ({"data.csv": _torque_text(small())}, "column 'torque_nm': non-numeric values at rows 3 ('abc')"),
    ],
    ids=["zero-byte", "non-numeric"],
)
def test_a_real_process_exits_2_with_the_message_on_stderr(
    tmp_path: Path, files: dict, expected: str
) -> None:
    write_inputs(tmp_path, files)
    result = run_script("preprocess.py", schema_args("binary"), tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    assert expected in (tmp_path / "output" / "failure").read_text()


def test_outputs_follow_the_contract(prepared: Callable[[str], Prepared]) -> None:
    pre = prepared("binary")
    splits = {
        name: pd.read_csv(pre.output / name / f"{name}.csv") for name in ("train", "validation", "test")
    }
    for frame in splits.values():
        assert list(frame.columns) == [*FEATURES, "machine_failure"]
    sizes = {name: len(frame) for name, frame in splits.items()}
    assert sum(sizes.values()) == 3000
    assert sizes == {"train": 2100, "validation": 450, "test": 450}
    rates = [frame["machine_failure"].mean() for frame in splits.values()]
    assert max(rates) - min(rates) < 0.01  # stratified: the rare class is spread evenly
    spec = json.loads((pre.train / "feature_spec.json").read_text())
    assert spec["feature_names"] == [*NUMERIC.split(","), "type=H", "type=L", "type=M"]
    assert spec["classes"] == ["0", "1"]
    data_report = json.loads((pre.output / "report" / "data_report.json").read_text())
    assert data_report["rows"] == {
        "input": 3000,
        "dropped_missing_target": 0,
        "clean": 3000,
        **sizes,
    }
    assert data_report["stratified"] is True
    counts = splits["test"]["machine_failure"].value_counts()
    assert data_report["class_balance"]["test"] == {str(k): int(v) for k, v in counts.items()}
    assert set(data_report["class_balance"]["train"]) == {"0", "1"}


def test_regression_uses_a_plain_shuffled_split(prepared: Callable[[str], Prepared]) -> None:
    pre = prepared("regression")
    train = pd.read_csv(pre.train / "train.csv")
    assert train["remaining_tool_life_min"].dtype == np.float64
    data_report = json.loads((pre.output / "report" / "data_report.json").read_text())
    assert data_report["stratified"] is False
    assert set(data_report["target_summary"]) == {"all", "train", "validation", "test"}


def test_several_files_are_concatenated_and_nan_kept(
    job_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = small(60, 1)
    first.loc[5, "torque_nm"] = np.nan  # 1 of 100 rows: under the limit, kept for XGBoost
    header_only = small(1, 1).iloc[:0]
    write_inputs(job_base, {"a.csv": first, "nested/b.csv": small(40, 2), "c.csv": header_only})
    code, out, err = run(job_base, capsys)
    assert code == 0, err
    assert "100 rows from 3 file(s)" in out
    output = job_base / "processing" / "output"
    frames = [pd.read_csv(output / n / f"{n}.csv") for n in ("train", "validation", "test")]
    assert sum(len(f) for f in frames) == 100
    assert sum(int(f["torque_nm"].isna().sum()) for f in frames) == 1
    data_report = json.loads((output / "report" / "data_report.json").read_text())
    assert data_report["input_files"] == ["a.csv", "c.csv", "nested/b.csv"]


def test_rows_without_target_are_dropped_and_counted(
    job_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    df = small(100, 3).astype({"machine_failure": object})
    df.loc[[7, 8], "machine_failure"] = ""
    write_inputs(job_base, {"data.csv": df})
    code, out, err = run(job_base, capsys)
    assert code == 0, err
    data_report = json.loads((job_base / "processing" / "output" / "report" / "data_report.json").read_text())
    assert data_report["rows"]["dropped_missing_target"] == 2 and data_report["rows"]["clean"] == 98
    assert "dropped 2 rows without a target value" in out


def test_same_seed_same_split(job_base: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write_inputs(job_base, {"data.csv": small(200, 4)})
    args = [*schema_args("binary")]
    assert run(job_base, capsys, [*args, "--output-dir", str(tmp_path / "one")])[0] == 0
    assert run(job_base, capsys, [*args, "--output-dir", str(tmp_path / "two")])[0] == 0
    assert run(job_base, capsys, [*args, "--output-dir", str(tmp_path / "three"), "--seed", "7"])[0] == 0
    one, two, three = (pd.read_csv(tmp_path / d / "test" / "test.csv") for d in ("one", "two", "three"))
    pd.testing.assert_frame_equal(one, two)
    assert not one.equals(three)


def test_a_class_too_rare_to_stratify_falls_back_with_a_warning(
    job_base: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    df = small(60, 6)
    df["failure_type"] = ["none"] * 57 + ["TWF", "HDF", "HDF"]
    write_inputs(job_base, {"data.csv": df})
    code, _, err = run(job_base, capsys, schema_args("multiclass"))
    assert code == 0
    assert "too rare to stratify" in err
    data_report = json.loads((job_base / "processing" / "output" / "report" / "data_report.json").read_text())
    assert data_report["stratified"] is False
