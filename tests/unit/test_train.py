"""Tests of the training script: SageMaker contract, log lines, early stopping, checkpoint resume, SIGTERM."""

from __future__ import annotations

import filecmp
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from model_code import train
from model_code.features import FeatureSpec
from tests.unit.conftest import MODEL_CODE, Chain, Prepared, training_env

LINE = re.compile(r"^\[(\d+)\]#011train-auc:([-+0-9.eE]+)#011validation-auc:([-+0-9.eE]+)$")
METRIC_DEFINITION = re.compile(r"validation-auc:([-+0-9.eE]+)")  # {"Name": "validation:auc", "Regex": ...}
SCORE = {"binary": "auc", "multiclass": "mlogloss", "regression": "rmse"}


def rounds(line_log: str) -> list[int]:
    return [int(m.group(1)) for m in map(LINE.match, line_log.splitlines()) if m]


def final_value(stdout: str, metric: str = "auc") -> float:
    return float(re.findall(rf"validation-{metric}:([-+0-9.eE]+)", stdout)[-1])


def booster(model_dir: Path) -> xgb.Booster:
    model = xgb.Booster()
    model.load_model(model_dir / "xgboost-model.json")
    return model


def validation_auc(model: xgb.Booster, pre: Prepared) -> float:
    spec = FeatureSpec.load(pre.train / "feature_spec.json")
    frame = pd.read_csv(pre.validation / "validation.csv")
    return float(
        roc_auc_score(spec.encode_target(frame[spec.target]), model.inplace_predict(spec.transform(frame)))
    )


def in_process(
    base: Path,
    pre: Prepared,
    args: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str, str]:
    for name, value in training_env(base, pre.train, pre.validation).items():
        monkeypatch.setenv(name, value)
    code = train.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_log_lines_match_the_metric_definition(chain: Callable[[str], Chain]) -> None:
    run = chain("binary")
    lines = [line for line in run.train.stdout.splitlines() if line.startswith("[")]
    per_round = lines[:-1]
    assert per_round and all(LINE.match(line) for line in per_round), per_round[:3]
    assert rounds(run.train.stdout) == list(range(len(per_round)))
    assert re.fullmatch(r"\[final\]#011validation-auc:[-+0-9.eE]+", lines[-1])
    # The last regex match (what SageMaker reports as final) is the kept model's own validation score.
    kept = booster(run.model_dir)
    last = float(METRIC_DEFINITION.findall(run.train.stdout)[-1])
    assert last == pytest.approx(validation_auc(kept, run.prepared), abs=1e-5)
    best = max(float(LINE.match(line).group(3)) for line in per_round)
    assert last == pytest.approx(best, abs=1e-5)


@pytest.mark.parametrize(
    ("problem", "objective"),
    [("binary", "binary:logistic"), ("multiclass", "multi:softprob"), ("regression", "reg:squarederror")],
)
def test_objective_and_artefacts_per_problem_type(
    chain: Callable[[str], Chain], problem: str, objective: str
) -> None:
    run = chain(problem)
    model_dir = run.model_dir
    config = json.loads(booster(model_dir).save_config())
    assert config["learner"]["objective"]["name"] == objective
    spec = FeatureSpec.load(model_dir / "feature_spec.json")
    assert spec == FeatureSpec.load(run.prepared.train / "feature_spec.json")
    if problem == "multiclass":
        assert config["learner"]["learner_model_param"]["num_class"] == str(len(spec.classes)) == "6"
    json.loads((model_dir / "xgboost-model.json").read_text())  # JSON model format, never pickle
    for name in ("inference.py", "features.py", "formatting.py"):
        assert filecmp.cmp(model_dir / "code" / name, MODEL_CODE / name, shallow=False)
    assert re.search(rf"\[final\]#011validation-{SCORE[problem]}:[-+0-9.eE]+", run.train.stdout)


def test_early_stopping_keeps_the_best_round(
    job_base: Path,
    prepared: Callable[[str], Prepared],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pre = prepared("binary")
    args = ["--num-round", "300", "--eta", "0.8", "--max-depth", "6", "--early-stopping-rounds", "4"]
    code, out, err = in_process(job_base, pre, args, monkeypatch, capsys)
    assert code == 0, err
    logged = {int(m.group(1)): float(m.group(3)) for m in map(LINE.match, out.splitlines()) if m}
    assert len(logged) < 300  # it stopped early
    best_round = max(logged, key=lambda r: (logged[r], -r))
    assert max(logged) == best_round + 4
    kept = booster(job_base / "model")
    assert kept.num_boosted_rounds() == best_round + 1
    assert final_value(out) == pytest.approx(logged[best_round], abs=1e-5)


def test_resume_trains_only_the_remaining_rounds(
    tmp_path: Path,
    prepared: Callable[[str], Prepared],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pre = prepared("binary")
    hp = ["--max_depth", "4", "--eta", "0.2", "--checkpoint_every", "10"]
    base = tmp_path / "resumed"
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base))
    code, first, err = in_process(base, pre, ["--num_round", "20", *hp], monkeypatch, capsys)
    assert code == 0, err
    assert rounds(first) == list(range(20))
    assert sorted(p.name for p in (base / "checkpoints").iterdir()) == ["xgboost-checkpoint_10.json"]
    code, second, err = in_process(base, pre, ["--num_round", "40", *hp], monkeypatch, capsys)
    assert code == 0, err
    assert "resuming from xgboost-checkpoint_10.json (11 rounds)" in second
    assert rounds(second) == list(range(11, 40))
    assert booster(base / "model").num_boosted_rounds() == 40

    straight = tmp_path / "straight"
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(straight))
    code, out, err = in_process(straight, pre, ["--num_round", "40", *hp], monkeypatch, capsys)
    assert code == 0, err
    assert rounds(out) == list(range(40))
    assert final_value(second) == pytest.approx(final_value(out), abs=1e-3)


def test_sigterm_keeps_checkpoints_and_a_rerun_finishes(
    tmp_path: Path,
    prepared: Callable[[str], Prepared],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pre = prepared("binary")
    base = tmp_path / "spot"
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), **training_env(base, pre.train, pre.validation)}
    args = [sys.executable, str(MODEL_CODE / "train.py"), "--num_round", "300", "--max_depth", "4"]
    args += ["--checkpoint_every", "10"]
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not list((base / "checkpoints").glob("xgboost-checkpoint_*.json")):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        out, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert time.monotonic() - stopped < 5  # prompt exit
    assert process.returncode == 143, err
    assert "stopped by SIGTERM" in err and "checkpoint(s) kept" in err
    assert "stopped by SIGTERM" in (base / "output" / "failure").read_text()
    assert not (base / "model" / "xgboost-model.json").exists()
    kept = list((base / "checkpoints").glob("xgboost-checkpoint_*.json"))
    assert kept
    assert max(rounds(out)) < 299  # interrupted before the end

    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(base))  # the restarted job, in-process to save a start-up
    code, rerun, err = in_process(base, pre, args[2:], monkeypatch, capsys)
    assert code == 0, err
    assert "resuming from xgboost-checkpoint_" in rerun
    assert rounds(rerun)[0] > 0 and rounds(rerun)[-1] == 299
    assert booster(base / "model").num_boosted_rounds() == 300


def test_hyperparameters_accept_dashes_underscores_and_sagemaker_rendering(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = train.parse_args(
        [
            *("--num-round", "15.0", "--max_depth", "3", "--lambda", "1.5", "--early-stopping-rounds", "2"),
            *("--eval_metric", "logloss,auc", "--_tuning_objective_metric", "validation:auc"),
        ]
    )
    assert (args.num_round, args.max_depth, getattr(args, "lambda"), args.early_stopping_rounds) == (
        15,
        3,
        1.5,
        2,
    )
    assert args.checkpoint_every == 10 and args.seed == 42 and args.eta is None
    assert "ignoring unknown hyperparameters --_tuning_objective_metric" in capsys.readouterr().out
    spec = FeatureSpec("multiclass", "y", ("a",), {}, ("x", "y", "z"))
    params = train.xgb_params(args, spec, ["mlogloss"])
    assert params["objective"] == "multi:softprob" and params["num_class"] == 3 and params["lambda"] == 1.5
    assert "eta" not in params and "device" not in params


def test_gpus_select_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SM_NUM_GPUS", "1")
    params = train.xgb_params(train.parse_args([]), FeatureSpec("regression", "y", ("a",)), ["rmse"])
    assert params["device"] == "cuda"


def test_eval_metric_list_logs_each_and_stops_on_the_last(
    job_base: Path,
    prepared: Callable[[str], Prepared],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--num_round", "5", "--eval_metric", "logloss,auc", "--early_stopping_rounds", "3"]
    code, out, err = in_process(job_base, prepared("binary"), args, monkeypatch, capsys)
    assert code == 0, err
    assert re.search(r"^\[0\]#011train-logloss:\S+#011train-auc:\S+#011validation-logloss:\S+", out, re.M)
    assert re.search(r"^\[final\]#011validation-logloss:\S+#011validation-auc:\S+$", out, re.M)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("no validation channel", "channel 'validation' not found"),
        ("header-only train data", "channel 'train' has no data rows"),
        ("no feature spec", "feature spec missing"),
        ("bad hyperparameter", "argument --num_round/--num-round: invalid int value: 'ten'"),
        ("checkpoint of another feature set", "has 3 features but the data has 8"),
    ],
)
def test_bad_inputs_fail_clearly(
    job_base: Path,
    prepared: Callable[[str], Prepared],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    damage: str,
    expected: str,
) -> None:
    pre = prepared("binary")
    env = training_env(job_base, pre.train, pre.validation)
    channels = job_base / "input" / "data"
    args = ["--num_round", "3"]
    if damage == "no validation channel":
        env["SM_CHANNEL_VALIDATION"] = str(channels / "missing")
    elif damage == "header-only train data":
        (channels / "train" / "train.csv").write_text(
            pd.read_csv(channels / "train" / "train.csv").iloc[:0].to_csv(index=False)
        )
    elif damage == "no feature spec":
        (channels / "train" / "feature_spec.json").unlink()
    elif damage == "bad hyperparameter":
        args = ["--num_round", "ten"]
    else:
        other = xgb.train({}, xgb.DMatrix(np.zeros((4, 3)), label=np.zeros(4)), 1)
        (job_base / "checkpoints").mkdir()
        other.save_model(job_base / "checkpoints" / "xgboost-checkpoint_0.json")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = train.main(args)
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert expected in (job_base / "output" / "failure").read_text()


def test_an_unreadable_newest_checkpoint_is_skipped(
    job_base: Path,
    prepared: Callable[[str], Prepared],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pre = prepared("binary")
    code, _, err = in_process(
        job_base, pre, ["--num_round", "12", "--checkpoint_every", "5"], monkeypatch, capsys
    )
    assert code == 0, err
    (job_base / "checkpoints" / "xgboost-checkpoint_20.json").write_text(
        '{"learner": '
    )  # cut short by a kill
    code, out, err = in_process(
        job_base, pre, ["--num_round", "15", "--checkpoint_every", "5"], monkeypatch, capsys
    )
    assert code == 0, err
    assert "skipping unreadable checkpoint xgboost-checkpoint_20.json" in out
    assert "resuming from xgboost-checkpoint_10.json (11 rounds)" in out
    assert rounds(out) == [11, 12, 13, 14]
