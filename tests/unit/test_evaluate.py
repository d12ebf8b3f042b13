"""Tests of the evaluate step: the full chain, evaluation.json, champion comparison, archive safety."""

from __future__ import annotations

import io
import json
import math
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.metrics import mean_squared_error, roc_auc_score

from model_code import evaluate
from model_code.features import FeatureSpec
from tests.unit.conftest import GATE, TARGETS, Chain, evaluation_layout, run_script, schema_args

SECTION = {
    "binary": "binary_classification_metrics",
    "multiclass": "multiclass_classification_metrics",
    "regression": "regression_metrics",
}
KEYS = {
    "binary": {"auc", "pr_auc", "f1", "precision", "recall", "accuracy", "recall_at_precision"},
    "multiclass": {"accuracy", "weighted_f1", "macro_f1", "mlogloss"},
    "regression": {"rmse", "mae", "r2", "mse"},
}
DIRECTION = {"binary": "maximize", "multiclass": "maximize", "regression": "minimize"}
FLOOR = {"binary": ("auc", 0.9), "multiclass": ("macro_f1", 0.5), "regression": ("r2", 0.5)}


def run(base: Path, capsys: pytest.CaptureFixture[str], problem: str, *extra: str) -> tuple[int, str]:
    """evaluate.main in-process under SAGEMAKER_BASE_DIR=base (see `job_base`)."""
    code = evaluate.main([*schema_args(problem), "--gate-metric", GATE[problem], *extra])
    return code, capsys.readouterr().err


def result(base: Path) -> dict:
    return json.loads((base / "processing" / "evaluation" / "evaluation.json").read_text())


def small_model(chain: Chain, folder: Path, numeric: tuple[str, ...], rounds: int = 1) -> Path:
    """A deliberately weak model trained on `numeric` only (its own, different feature spec)."""
    spec = FeatureSpec.load(chain.prepared.train / "feature_spec.json")
    own = FeatureSpec(spec.problem_type, spec.target, numeric, {}, spec.classes)
    train = pd.read_csv(chain.prepared.train / "train.csv")
    objective = "binary:logistic" if spec.problem_type == "binary" else "reg:squarederror"
    dtrain = xgb.DMatrix(own.transform(train), label=own.encode_target(train[own.target]))
    model = xgb.train({"objective": objective, "max_depth": 1}, dtrain, rounds)
    folder.mkdir(parents=True)
    model.save_model(folder / "xgboost-model.json")
    own.save(folder / "feature_spec.json")
    return folder


def score(model_dir: Path, test: pd.DataFrame) -> np.ndarray:
    model = xgb.Booster()
    model.load_model(model_dir / "xgboost-model.json")
    return model.inplace_predict(FeatureSpec.load(model_dir / "feature_spec.json").transform(test))


@pytest.mark.parametrize("problem", list(TARGETS))
def test_chain_writes_evaluation_in_model_quality_shape(chain: Callable[[str], Chain], problem: str) -> None:
    run_ = chain(problem)
    evaluation = run_.evaluation
    assert set(evaluation) == {SECTION[problem], "champion", "gate"}
    metrics = evaluation[SECTION[problem]]
    assert set(metrics) == KEYS[problem]
    for entry in metrics.values():
        assert entry["standard_deviation"] == "NaN"
        assert isinstance(entry["value"], float) and math.isfinite(entry["value"])
    assert evaluation["champion"] == {"present": False, "metrics": {}}
    assert evaluation["gate"] == {
        "metric": GATE[problem],
        "direction": DIRECTION[problem],
        "candidate": metrics[GATE[problem]]["value"],
        "champion": None,
        "improvement": 0.0,
        "shortfall": 0.0,
        "champion_display": "none",
    }
    name, floor = FLOOR[problem]
    assert metrics[name]["value"] > floor  # the chain trains a model that learned something
    report = (run_.eval_base / "processing" / "evaluation" / "report.md").read_text()
    assert f"| {GATE[problem]} | {metrics[GATE[problem]]['value']:.4f} | - |" in report
    assert "champion absent" in report


def test_binary_metrics_match_a_direct_computation(chain: Callable[[str], Chain]) -> None:
    run_ = chain("binary")
    test = pd.read_csv(run_.prepared.test_csv)
    y = test["machine_failure"].to_numpy()
    p = score(run_.model_dir, test).astype(np.float64)
    predicted = p >= 0.5
    tp, fp, fn = (predicted & (y == 1)).sum(), (predicted & (y == 0)).sum(), (~predicted & (y == 1)).sum()
    recall_at_90 = 0.0
    for cut in np.unique(p):  # brute force over every threshold: best recall with precision >= 0.9
        chosen = p >= cut
        hits = (chosen & (y == 1)).sum()
        if hits / chosen.sum() >= 0.9:
            recall_at_90 = max(recall_at_90, hits / (y == 1).sum())
    values = {k: v["value"] for k, v in run_.evaluation["binary_classification_metrics"].items()}
    assert values["auc"] == pytest.approx(roc_auc_score(y, p))
    assert values["precision"] == pytest.approx(tp / (tp + fp))
    assert values["recall"] == pytest.approx(tp / (tp + fn))
    assert values["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert values["accuracy"] == pytest.approx((predicted == (y == 1)).mean())
    assert values["recall_at_precision"] == pytest.approx(recall_at_90)


def test_decision_threshold_and_precision_target_are_used(
    job_base: Path, chain: Callable[[str], Chain], capsys: pytest.CaptureFixture[str]
) -> None:
    run_ = chain("binary")
    evaluation_layout(job_base, run_.model_dir, run_.prepared.test_csv)
    code, err = run(job_base, capsys, "binary", "--decision-threshold", "0.05", "--precision-target", "0.5")
    assert code == 0, err
    test = pd.read_csv(run_.prepared.test_csv)
    y, p = test["machine_failure"].to_numpy(), score(run_.model_dir, test)
    values = {k: v["value"] for k, v in result(job_base)["binary_classification_metrics"].items()}
    assert values["recall"] == pytest.approx(((p >= 0.05) & (y == 1)).sum() / (y == 1).sum())
    default = run_.evaluation["binary_classification_metrics"]
    assert values["recall_at_precision"] >= default["recall_at_precision"]["value"]


@pytest.mark.parametrize("problem", ["binary", "regression"])
def test_champion_comparison_sign(
    job_base: Path,
    tmp_path: Path,
    chain: Callable[[str], Chain],
    capsys: pytest.CaptureFixture[str],
    problem: str,
) -> None:
    """improvement > 0 when the candidate is better, for a maximise (auc) and a minimise (rmse) metric."""
    run_ = chain(problem)
    weak = small_model(run_, tmp_path / "weak", ("torque_nm", "tool_wear_min"))  # other columns, other order
    test = pd.read_csv(run_.prepared.test_csv)
    y = test[TARGETS[problem]].to_numpy()
    measure = roc_auc_score if problem == "binary" else lambda t, s: math.sqrt(mean_squared_error(t, s))

    evaluation_layout(job_base, run_.model_dir, run_.prepared.test_csv, champion=weak)
    code, err = run(job_base, capsys, problem)
    assert code == 0, err
    gate = result(job_base)["gate"]
    champion_value = measure(y, score(weak, test))  # the champion scored through its own feature spec
    assert result(job_base)["champion"]["present"] is True
    assert result(job_base)["champion"]["metrics"][GATE[problem]] == pytest.approx(champion_value)
    assert gate["champion"] == pytest.approx(champion_value)
    assert gate["improvement"] > 0
    sign = 1 if gate["direction"] == "maximize" else -1
    assert gate["improvement"] == pytest.approx(sign * (gate["candidate"] - gate["champion"]))
    assert gate["shortfall"] == -gate["improvement"]
    assert gate["champion_display"] == f"{champion_value:.4f}"

    swapped = tmp_path / "swapped"
    swapped.mkdir()
    evaluation_layout(swapped, weak, run_.prepared.test_csv, champion=run_.model_dir)
    processing = swapped / "processing"
    evaluation = evaluate.main(
        [
            *schema_args(problem),
            *("--gate-metric", GATE[problem], "--output-dir", str(swapped / "out")),
            *("--model-dir", str(processing / "model"), "--test-dir", str(processing / "test")),
            *("--champion-dir", str(processing / "champion")),
        ]
    )
    assert evaluation == 0
    reversed_gate = json.loads((swapped / "out" / "evaluation.json").read_text())["gate"]
    assert reversed_gate["improvement"] == pytest.approx(-gate["improvement"])
    assert reversed_gate["shortfall"] > 0  # a worse candidate falls short of the champion


def write_archive(path: Path, members: list[tuple[str, str]]) -> Path:
    """A tar.gz with regular files (name, text), or a symlink when the name starts with 'link:'."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members:
            if name.startswith("link:"):
                info = tarfile.TarInfo(name.removeprefix("link:"))
                info.type, info.linkname = tarfile.SYMTYPE, content
                tar.addfile(info)
                continue
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([("../evil.txt", "x")], "refusing archive member '../evil.txt' (absolute path or '..')"),
        ([("/tmp/evil.txt", "x")], "refusing archive member '/tmp/evil.txt'"),
        ([("code/../../evil.txt", "x")], "refusing archive member 'code/../../evil.txt'"),
        ([("link:xgboost-model.json", "/etc/passwd")], "(only regular files and directories)"),
        ([("notes.txt", "hello")], "no xgboost-model.json inside (found: notes.txt)"),
        ([("xgboost-model.json", "{broken"), ("feature_spec.json", "{}")], "cannot load xgboost-model.json"),
    ],
    ids=["dot-dot", "absolute", "nested dot-dot", "symlink", "no model", "corrupt model"],
)
def test_unsafe_or_incomplete_archives_are_refused(
    job_base: Path, capsys: pytest.CaptureFixture[str], members: list, expected: str
) -> None:
    processing = job_base / "processing"
    write_archive(processing / "model" / "model.tar.gz", members)
    (processing / "test").mkdir()
    (processing / "test" / "test.csv").write_text("a,machine_failure\n1,0\n")
    code, err = run(job_base, capsys, "binary")
    assert code == 2
    assert expected in err
    assert not (job_base / "evil.txt").exists() and not (processing / "evil.txt").exists()
    assert expected in (job_base / "output" / "failure").read_text()


def test_corrupt_missing_or_mismatched_archives_fail(
    job_base: Path, chain: Callable[[str], Chain], capsys: pytest.CaptureFixture[str]
) -> None:
    run_ = chain("binary")
    processing = evaluation_layout(job_base, run_.model_dir, run_.prepared.test_csv)
    archive = processing / "model" / "model.tar.gz"
    good = archive.read_bytes()

    archive.write_bytes(good[: len(good) // 2])  # cut short in transfer
    code, err = run(job_base, capsys, "binary")
    assert code == 2 and "corrupt or unreadable model archive" in err

    archive.write_bytes(good)
    (processing / "champion" / "model.tar.gz").write_bytes(b"not a tarball")
    code, err = run(job_base, capsys, "binary")
    assert code == 2 and f"{processing / 'champion' / 'model.tar.gz'}: corrupt" in err

    (processing / "champion" / "model.tar.gz").unlink()
    code, err = run(job_base, capsys, "binary", "--gate-metric", "rmse")
    assert code == 2 and "--gate-metric 'rmse' is not a binary metric" in err
    code, err = run(job_base, capsys, "regression")
    assert code == 2 and "--problem-type regression but the candidate model is binary" in err

    archive.unlink()
    code, err = run(job_base, capsys, "binary")
    assert code == 2 and "candidate model archive not found" in err


def test_a_real_process_exits_non_zero_on_a_corrupt_archive(tmp_path: Path) -> None:
    processing = tmp_path / "processing"
    (processing / "model").mkdir(parents=True)
    (processing / "model" / "model.tar.gz").write_bytes(b"\x1f\x8b\x08garbage")
    (processing / "test").mkdir()
    (processing / "test" / "test.csv").write_text("a,machine_failure\n1,0\n")
    completed = run_script("evaluate.py", schema_args("binary"), tmp_path)
    assert completed.returncode == 2
    assert "corrupt or unreadable model archive" in completed.stderr
