"""Tests of the built-in data generator: columns, determinism, and each AI4I 2020 rule on its rows."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model_code import data
from model_code.data import COLUMNS, generate
from tests.unit.conftest import run_script

STEP = {"L": 2.0, "M": 3.0, "H": 5.0}
OSF_LIMIT = {"L": 11000.0, "M": 12000.0, "H": 13000.0}


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return generate(10000, 7)


@pytest.mark.parametrize("rows", [0, 1, 7, 10000])
def test_any_row_count_gives_the_contract_columns(rows: int) -> None:
    frame = generate(rows, 3)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == rows
    assert frame["udi"].tolist() == list(range(1, rows + 1))
    for column in ("air_temperature_k", "process_temperature_k", "rotational_speed_rpm", "torque_nm"):
        assert frame[column].dtype == np.float64, column
    assert frame["tool_wear_min"].dtype == np.float64
    assert set(frame["machine_failure"].unique()) <= {0, 1}
    assert frame[["air_temperature_k", "torque_nm", "remaining_tool_life_min"]].notna().all().all()
    if rows:
        assert frame["product_id"].str.fullmatch(r"[LMH]\d{5}").all()
        assert (frame["product_id"].str[0] == frame["type"]).all()


def test_same_seed_same_data_other_seed_other_data() -> None:
    pd.testing.assert_frame_equal(generate(500, 3), generate(500, 3))
    assert not generate(500, 3)["torque_nm"].equals(generate(500, 4)["torque_nm"])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_failure_rate_is_a_few_percent(seed: int) -> None:
    rate = generate(10000, seed)["machine_failure"].mean()
    assert 0.025 <= rate <= 0.055


def test_heat_dissipation_failure_follows_its_rule(df: pd.DataFrame) -> None:
    rule = (df.process_temperature_k - df.air_temperature_k < 8.6) & (df.rotational_speed_rpm < 1380)
    assert rule.sum() > 10
    assert (df.hdf == rule.astype(int)).all()


def test_power_failure_follows_its_rule(df: pd.DataFrame) -> None:
    power = df.torque_nm * df.rotational_speed_rpm * 2 * np.pi / 60
    rule = (power < 3500) | (power > 9000)
    assert rule.sum() > 10
    assert (df.pwf == rule.astype(int)).all()


def test_overstrain_failure_follows_its_per_type_limit(df: pd.DataFrame) -> None:
    rule = df.tool_wear_min * df.torque_nm > df["type"].map(OSF_LIMIT)
    assert rule.sum() > 10
    assert (df.osf == rule.astype(int)).all()


def test_tool_wear_failure_happens_at_end_of_tool_life(df: pd.DataFrame) -> None:
    twf = df[df.twf == 1]
    assert len(twf) > 5
    assert twf.tool_wear_min.between(200, 245, inclusive="left").all()
    assert (twf.remaining_tool_life_min == 0).all()
    after = df.index.intersection(twf.index + 1)
    assert (df.loc[after, "tool_wear_min"] == 0).all()  # the failed tool is replaced


def test_random_failures_are_rare(df: pd.DataFrame) -> None:
    assert 1 <= df.rnf.sum() <= 30  # 0.1 % of 10000


def test_label_columns_agree_with_the_failure_modes(df: pd.DataFrame) -> None:
    modes = df[["twf", "hdf", "pwf", "osf", "rnf"]]
    assert (df.machine_failure == modes.max(axis=1)).all()
    first = modes.idxmax(axis=1).str.upper().where(modes.any(axis=1), "none")
    assert (df.failure_type == first).all()
    assert set(df.failure_type) == {"none", "TWF", "HDF", "PWF", "OSF", "RNF"}


def test_tool_wear_grows_by_type_and_resets_only_after_tool_end(df: pd.DataFrame) -> None:
    wear = df.tool_wear_min.to_numpy()
    step = df["type"].map(STEP).to_numpy()
    life = df.remaining_tool_life_min.to_numpy()
    reset = wear[1:] == 0
    assert (wear[1:][~reset] - wear[:-1][~reset] == step[:-1][~reset]).all()
    assert reset.sum() > 50
    assert (life[:-1][reset] == 0).all() and (wear[:-1][reset] >= 200).all()
    running = life > 0  # wear + remaining life = that tool's end-of-life wear in [200, 240] min
    assert (wear[running] + life[running]).min() >= 200 - 1e-9
    assert (wear[running] + life[running]).max() <= 240 + 1e-9


def test_sensor_marginals_follow_ai4i(df: pd.DataFrame) -> None:
    assert abs(df.air_temperature_k.mean() - 300) < 1.5
    assert 1.2 < df.air_temperature_k.std() < 2.8
    difference = df.process_temperature_k - df.air_temperature_k
    assert abs(difference.mean() - 10) < 0.5 and 0.5 < difference.std() < 1.5
    assert df.torque_nm.min() >= 0 and abs(df.torque_nm.mean() - 40) < 1 and abs(df.torque_nm.std() - 10) < 1
    assert abs(df.rotational_speed_rpm.mean() - 1540) < 40
    assert df.rotational_speed_rpm.corr(df.torque_nm) < -0.8
    shares = df["type"].value_counts(normalize=True)
    assert abs(shares["L"] - 0.5) < 0.03 and abs(shares["M"] - 0.3) < 0.03 and abs(shares["H"] - 0.2) < 0.03


def test_cli_writes_the_generated_rows(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "pdm.csv"
    result = run_script("data.py", ["--rows", "50", "--seed", "5", "--out", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr
    pd.testing.assert_frame_equal(pd.read_csv(out), generate(50, 5), check_dtype=False)
    stdout = run_script("data.py", ["--rows", "7", "--seed", "5", "--out", "-"], tmp_path)
    assert stdout.returncode == 0, stdout.stderr
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(stdout.stdout)), generate(7, 5), check_dtype=False)


def test_cli_rejects_a_negative_row_count(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        data.main(["--rows", "-1"])
    assert exit_info.value.code == 2
    assert "--rows must be >= 0" in capsys.readouterr().err
