"""Evaluate step: test metrics of candidate and champion -> evaluation.json (the gate reads it) + report."""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn import metrics as skm

if __package__:
    from .common import BadInputError, JobArgumentParser, add_schema_args, base_dir, read_csv_files, run_job
    from .features import FeatureError, FeatureSpec
else:
    from common import BadInputError, JobArgumentParser, add_schema_args, base_dir, read_csv_files, run_job
    from features import FeatureError, FeatureSpec

MODEL_FILE = "xgboost-model.json"
SPEC_FILE = "feature_spec.json"
SECTION = {
    "binary": "binary_classification_metrics",
    "multiclass": "multiclass_classification_metrics",
    "regression": "regression_metrics",
}
DIRECTION = {
    "auc": "maximize",
    "pr_auc": "maximize",
    "f1": "maximize",
    "precision": "maximize",
    "recall": "maximize",
    "accuracy": "maximize",
    "recall_at_precision": "maximize",
    "weighted_f1": "maximize",
    "macro_f1": "maximize",
    "mlogloss": "minimize",
    "rmse": "minimize",
    "mae": "minimize",
    "r2": "maximize",
    "mse": "minimize",
}
METRICS = {
    "binary": ("auc", "pr_auc", "f1", "precision", "recall", "accuracy", "recall_at_precision"),
    "multiclass": ("accuracy", "weighted_f1", "macro_f1", "mlogloss"),
    "regression": ("rmse", "mae", "r2", "mse"),
}
DEFAULT_GATE = {"binary": "auc", "multiclass": "accuracy", "regression": "rmse"}


@dataclass(frozen=True)
class LoadedModel:
    booster: xgb.Booster
    spec: FeatureSpec
    source: Path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = JobArgumentParser(prog="evaluate.py", description=__doc__)
    add_schema_args(parser, required=False)
    parser.add_argument("--gate-metric", help="metric the gate compares (default auc / accuracy / rmse)")
    parser.add_argument("--decision-threshold", type=float, default=0.5, help="binary: P(positive) cut-off")
    parser.add_argument("--precision-target", type=float, default=0.9, help="binary: precision for recall@p")
    parser.add_argument("--model-dir", type=Path, help="default BASE/processing/model")
    parser.add_argument("--test-dir", type=Path, help="default BASE/processing/test")
    parser.add_argument("--champion-dir", type=Path, help="default BASE/processing/champion")
    parser.add_argument("--output-dir", type=Path, help="default BASE/processing/evaluation")
    return parser.parse_args(argv)


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a model.tar.gz, refusing absolute paths, `..`, links and devices before writing anything."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                name = member.name
                if (
                    name.startswith(("/", "\\"))
                    or PureWindowsPath(name).drive
                    or ".." in PurePosixPath(name.replace("\\", "/")).parts
                ):
                    raise BadInputError(
                        f"{archive}: refusing archive member {name!r} (absolute path or '..')"
                    )
                if not (member.isfile() or member.isdir()):
                    raise BadInputError(
                        f"{archive}: refusing archive member {name!r} (only regular files and directories)"
                    )
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise BadInputError(f"{archive}: corrupt or unreadable model archive ({exc})") from None


def find_archive(directory: Path) -> Path | None:
    """`model.tar.gz` in `directory`, else its only *.tar.gz, else None."""
    preferred = directory / "model.tar.gz"
    if preferred.is_file():
        return preferred
    found = sorted(directory.glob("*.tar.gz")) if directory.is_dir() else []
    return found[0] if len(found) == 1 else None


def load_model(archive: Path, dest: Path) -> LoadedModel:
    safe_extract(archive, dest)
    candidates = sorted(dest.rglob(MODEL_FILE), key=lambda p: len(p.parts))
    if not candidates:
        inside = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())[:10]
        raise BadInputError(f"{archive}: no {MODEL_FILE} inside (found: {', '.join(inside) or 'nothing'})")
    root = candidates[0].parent
    booster = xgb.Booster()
    try:
        booster.load_model(root / MODEL_FILE)
    except xgb.core.XGBoostError as exc:
        raise BadInputError(f"{archive}: cannot load {MODEL_FILE}: {str(exc).splitlines()[0]}") from None
    try:
        spec = FeatureSpec.load(root / SPEC_FILE)
    except FeatureError as exc:
        raise BadInputError(f"{archive}: {exc}") from None
    if booster.num_features() != len(spec.feature_names):
        raise BadInputError(
            f"{archive}: model has {booster.num_features()} features, its spec {len(spec.feature_names)}"
        )
    return LoadedModel(booster, spec, archive)


def read_test(directory: Path) -> pd.DataFrame:
    files = sorted(directory.glob("*.csv")) if directory.is_dir() else []
    if not files:
        raise BadInputError(f"no test CSV in {directory}")
    return read_csv_files(files, f"test data in {directory}")


def compute_metrics(
    model: LoadedModel, df: pd.DataFrame, threshold: float, precision_target: float
) -> tuple[dict[str, float], np.ndarray]:
    """Metrics of one model on raw test rows, transformed with the model's own feature spec."""
    spec = model.spec
    if spec.target not in df.columns:
        raise BadInputError(f"test data lacks the target column '{spec.target}' of {model.source}")
    try:
        x = spec.transform(df)
        y = spec.encode_target(df[spec.target])
    except FeatureError as exc:
        raise BadInputError(f"test data does not fit the feature spec of {model.source}: {exc}") from None
    raw = np.asarray(model.booster.inplace_predict(x), dtype=np.float64)
    if spec.problem_type == "regression":
        mse = skm.mean_squared_error(y, raw)
        values = {
            "rmse": np.sqrt(mse),
            "mae": skm.mean_absolute_error(y, raw),
            "r2": skm.r2_score(y, raw),
            "mse": mse,
        }
        return {k: float(v) for k, v in values.items()}, raw
    if spec.problem_type == "multiclass":
        probs = raw.reshape(len(y), len(spec.classes))
        pred = probs.argmax(axis=1)
        values = {
            "accuracy": skm.accuracy_score(y, pred),
            "weighted_f1": skm.f1_score(y, pred, average="weighted", zero_division=0),
            "macro_f1": skm.f1_score(y, pred, average="macro", zero_division=0),
            "mlogloss": skm.log_loss(y, probs, labels=list(range(len(spec.classes)))),
        }
        return {k: float(v) for k, v in values.items()}, pred
    if len(np.unique(y)) < 2:
        raise BadInputError(f"test split has only class {spec.classes[int(y[0])]!r}: AUC is undefined")
    pred = (raw >= threshold).astype(int)
    precision, recall, _ = skm.precision_recall_curve(y, raw)
    reachable = recall[precision >= precision_target]
    values = {
        "auc": skm.roc_auc_score(y, raw),
        "pr_auc": skm.average_precision_score(y, raw),
        "f1": skm.f1_score(y, pred, zero_division=0),
        "precision": skm.precision_score(y, pred, zero_division=0),
        "recall": skm.recall_score(y, pred, zero_division=0),
        "accuracy": skm.accuracy_score(y, pred),
        "recall_at_precision": reachable.max() if reachable.size else 0.0,
    }
    return {k: float(v) for k, v in values.items()}, pred


def confusion_table(model: LoadedModel, df: pd.DataFrame, pred: np.ndarray) -> str:
    classes = list(model.spec.classes)
    y = model.spec.encode_target(df[model.spec.target])
    matrix = skm.confusion_matrix(y, pred, labels=list(range(len(classes))))
    lines = ["| actual \\ predicted | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
    lines += [
        f"| {c} | " + " | ".join(str(n) for n in row) + " |" for c, row in zip(classes, matrix, strict=True)
    ]
    return "\n".join(lines)


def render_report(evaluation: dict, problem: str, rows: int, threshold: float, confusion: str | None) -> str:
    candidate = {k: v["value"] for k, v in evaluation[SECTION[problem]].items()}
    champion = evaluation["champion"]["metrics"]
    gate = evaluation["gate"]
    lines = [
        "# Model evaluation",
        "",
        f"Problem type **{problem}**, {rows} test rows, champion "
        f"{'present' if evaluation['champion']['present'] else 'absent (first model)'}.",
        "",
        "| metric | candidate | champion |",
        "|---|---|---|",
    ]
    for name, value in candidate.items():
        other = f"{champion[name]:.4f}" if name in champion else "-"
        lines.append(f"| {name} | {value:.4f} | {other} |")
    champ_text = f"{gate['champion']:.4f}" if gate["champion"] is not None else "none"
    lines += [
        "",
        f"Gate metric **{gate['metric']}** ({gate['direction']}): candidate {gate['candidate']:.4f}, "
        f"champion {champ_text}, improvement {gate['improvement']:+.4f} (positive is better).",
    ]
    if confusion:
        cut = f" (threshold {threshold})" if problem == "binary" else ""
        lines += ["", f"Candidate confusion matrix{cut}:", "", confusion]
    return "\n".join(lines) + "\n"


def evaluate(args: argparse.Namespace) -> None:
    processing = base_dir() / "processing"
    model_dir = args.model_dir or processing / "model"
    champion_dir = args.champion_dir or processing / "champion"
    output_dir = args.output_dir or processing / "evaluation"
    if not 0.0 <= args.decision_threshold <= 1.0 or not 0.0 < args.precision_target <= 1.0:
        raise BadInputError("--decision-threshold must be in [0, 1] and --precision-target in (0, 1]")
    archive = find_archive(model_dir)
    if archive is None:
        raise BadInputError(f"candidate model archive not found: {model_dir / 'model.tar.gz'}")
    df = read_test(args.test_dir or processing / "test")
    with tempfile.TemporaryDirectory() as tmp:
        candidate = load_model(archive, Path(tmp) / "candidate")
        problem = candidate.spec.problem_type
        if args.problem_type and args.problem_type != problem:
            raise BadInputError(f"--problem-type {args.problem_type} but the candidate model is {problem}")
        if args.target_column and args.target_column != candidate.spec.target:
            raise BadInputError(
                f"--target-column {args.target_column} but the candidate predicts {candidate.spec.target}"
            )
        gate_metric = args.gate_metric or DEFAULT_GATE[problem]
        if gate_metric not in METRICS[problem]:
            raise BadInputError(
                f"--gate-metric {gate_metric!r} is not a {problem} metric: {', '.join(METRICS[problem])}"
            )
        scores, pred = compute_metrics(candidate, df, args.decision_threshold, args.precision_target)
        champion_archive = find_archive(champion_dir)
        champion_scores: dict[str, float] = {}
        if champion_archive is not None:
            champion = load_model(champion_archive, Path(tmp) / "champion")
            if champion.spec.problem_type != problem:
                raise BadInputError(
                    f"champion is a {champion.spec.problem_type} model, the candidate {problem}"
                )
            champion_scores, _ = compute_metrics(champion, df, args.decision_threshold, args.precision_target)
        confusion = confusion_table(candidate, df, pred) if problem != "regression" else None

    direction = DIRECTION[gate_metric]
    ours = scores[gate_metric]
    theirs = champion_scores.get(gate_metric)
    improvement = 0.0 if theirs is None else (ours - theirs if direction == "maximize" else theirs - ours)
    evaluation = {
        SECTION[problem]: {k: {"value": v, "standard_deviation": "NaN"} for k, v in scores.items()},
        "champion": {"present": champion_archive is not None, "metrics": champion_scores},
        "gate": {
            "metric": gate_metric,
            "direction": direction,
            "candidate": ours,
            "champion": theirs,
            "improvement": improvement,
            "shortfall": -improvement if theirs is not None else 0.0,  # the gate needs <= ChampionTolerance
            "champion_display": "none" if theirs is None else f"{theirs:.4f}",  # for the Fail step's message
        },
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "evaluation.json").write_text(json.dumps(evaluation, indent=2) + "\n", encoding="utf-8")
    report = render_report(evaluation, problem, len(df), args.decision_threshold, confusion)
    (output_dir / "report.md").write_text(report, encoding="utf-8")
    print(
        f"evaluate: {gate_metric} candidate {ours:.4f}, champion "
        f"{'none' if theirs is None else f'{theirs:.4f}'}, improvement {improvement:+.4f}"
    )


def main(argv: list[str] | None = None) -> int:
    return run_job("evaluate", lambda: evaluate(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
