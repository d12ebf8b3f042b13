"""Training step: XGBoost script mode under the SageMaker training contract; resumes from checkpoints."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import xgboost as xgb

if __package__:
    from .common import (
        EXIT_SIGTERM,
        BadInputError,
        JobArgumentParser,
        JobError,
        base_dir,
        read_csv_files,
        run_job,
    )
    from .features import FeatureSpec
else:
    from common import (
        EXIT_SIGTERM,
        BadInputError,
        JobArgumentParser,
        JobError,
        base_dir,
        read_csv_files,
        run_job,
    )
    from features import FeatureSpec

MODEL_FILE = "xgboost-model.json"
SPEC_FILE = "feature_spec.json"
CHECKPOINT_NAME = "xgboost-checkpoint"  # files: xgboost-checkpoint_<0-based iteration>.json
CODE_FILES = ("inference.py", "features.py", "formatting.py")
OBJECTIVES = {"binary": "binary:logistic", "multiclass": "multi:softprob", "regression": "reg:squarederror"}
DEFAULT_METRIC = {"binary": "auc", "multiclass": "mlogloss", "regression": "rmse"}
MAXIMIZE = {"auc", "aucpr", "map", "ndcg", "pre"}  # XGBoost eval metrics where larger is better
SEP = "#011"  # how CloudWatch shows the tab XGBoost puts between metrics; regexes match it literally


class Interrupted(JobError):
    """SIGTERM (a Spot interruption or a stop request) arrived; checkpoints written so far are kept."""

    exit_code = EXIT_SIGTERM


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted("stopped by SIGTERM")


def _int(text: str) -> int:
    number = float(text)  # SageMaker may render integers as "10.0"
    if not number.is_integer():
        raise ValueError(text)
    return int(number)


_int.__name__ = "int"  # argparse names the type in its message: "invalid int value: 'ten'"

HYPERPARAMETERS: dict[str, tuple[Any, Any]] = {  # name: (type, default); None = XGBoost's default
    "num_round": (_int, 100),
    "max_depth": (_int, None),
    "eta": (float, None),
    "subsample": (float, None),
    "colsample_bytree": (float, None),
    "min_child_weight": (float, None),
    "gamma": (float, None),
    "lambda": (float, None),
    "alpha": (float, None),
    "early_stopping_rounds": (_int, None),
    "checkpoint_every": (_int, 10),
    "eval_metric": (str, None),
    "seed": (_int, 42),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Hyperparameters as SageMaker passes them (`--key value`), with dashes or underscores."""
    parser = JobArgumentParser(prog="train.py", description=__doc__)
    for name, (kind, default) in HYPERPARAMETERS.items():
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        parser.add_argument(*flags, dest=name, type=kind, default=default)
    args, unknown = parser.parse_known_args(argv)
    ignored = [a for a in unknown if a.startswith("-")]
    if ignored:
        print(f"train: ignoring unknown hyperparameters {' '.join(ignored)}", flush=True)
    if args.num_round < 1:
        raise BadInputError(f"num_round must be >= 1, got {args.num_round}")
    if args.checkpoint_every < 1:
        raise BadInputError(f"checkpoint_every must be >= 1, got {args.checkpoint_every}")
    return args


class JsonCheckPoint(xgb.callback.TrainingCheckPoint):
    """XGBoost's own checkpoint callback, writing the JSON model format instead of UBJSON."""

    default_format = "json"


class MetricLog(xgb.callback.TrainingCallback):
    """Prints `[<iter>]#011train-<m>:<v>#011validation-<m>:<v>` per round, flushed (contracts.md sec. 6)."""

    def __init__(self) -> None:
        super().__init__()
        self.start = 0

    def before_training(self, model: xgb.Booster) -> xgb.Booster:
        self.start = model.num_boosted_rounds()  # global round numbers after a resume
        return model

    def after_iteration(self, model: xgb.Booster, epoch: int, evals_log: dict[str, Any]) -> bool:
        parts = [f"[{self.start + epoch}]"]
        for data, metrics in evals_log.items():
            parts.extend(f"{data}-{metric}:{float(values[-1]):.6g}" for metric, values in metrics.items())
        print(SEP.join(parts), flush=True)
        return False


class ResumableEarlyStopping(xgb.callback.EarlyStopping):
    """XGBoost's early stopping, seeded with the best score a resumed checkpoint carries in its attributes."""

    def before_training(self, model: xgb.Booster) -> xgb.Booster:
        model = super().before_training(model)
        best_score, best_iteration = model.attr("best_score"), model.attr("best_iteration")
        if self.starting_round and best_score is not None and best_iteration is not None:
            assert self.data is not None and self.metric_name is not None
            score = float(best_score)
            self.stopping_history = {self.data: {self.metric_name: [score]}}
            self.best_scores = {self.data: {self.metric_name: [score]}}
            self.current_rounds = self.starting_round - 1 - int(best_iteration)
        return model


def read_channel(name: str, spec: FeatureSpec) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of every CSV in channel `name` (SM_CHANNEL_<NAME>)."""
    path = Path(os.environ.get(f"SM_CHANNEL_{name.upper()}", base_dir() / "input" / "data" / name))
    if not path.is_dir():
        raise BadInputError(
            f"channel '{name}' not found: {path} is not a directory (SM_CHANNEL_{name.upper()})"
        )
    files = sorted(p for p in path.glob("*.csv") if p.is_file())
    if not files:
        raise BadInputError(f"channel '{name}' has no CSV files in {path}")
    df = read_csv_files(files, f"channel '{name}'")
    if spec.target not in df.columns:
        raise BadInputError(f"channel '{name}': target column '{spec.target}' is missing")
    return spec.transform(df), spec.encode_target(df[spec.target])


def latest_checkpoint(directory: Path, num_features: int) -> xgb.Booster | None:
    """The newest checkpoint that loads (a file cut short by a hard kill is skipped), or None."""
    found = []
    for path in directory.glob(f"{CHECKPOINT_NAME}_*.json"):
        match = re.fullmatch(rf"{CHECKPOINT_NAME}_(\d+)\.json", path.name)
        if match:
            found.append((int(match.group(1)), path))
    for _, path in sorted(found, reverse=True):
        booster = xgb.Booster()
        try:
            booster.load_model(path)
        except xgb.core.XGBoostError as exc:
            print(
                f"train: skipping unreadable checkpoint {path.name}: {str(exc).splitlines()[0]}", flush=True
            )
            continue
        if booster.num_features() != num_features:
            raise BadInputError(
                f"checkpoint {path} has {booster.num_features()} features but the data has {num_features}; "
                "use a fresh checkpoint location for a different feature set"
            )
        print(f"train: resuming from {path.name} ({booster.num_boosted_rounds()} rounds)", flush=True)
        return booster
    return None


def xgb_params(args: argparse.Namespace, spec: FeatureSpec, metrics: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {
        "objective": OBJECTIVES[spec.problem_type],
        "eval_metric": metrics,
        "seed": args.seed,
        "tree_method": "hist",
    }
    if spec.problem_type == "multiclass":
        params["num_class"] = len(spec.classes)
    for name in (
        "max_depth",
        "eta",
        "subsample",
        "colsample_bytree",
        "min_child_weight",
        "gamma",
        "lambda",
        "alpha",
    ):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    if _int(os.environ.get("SM_NUM_GPUS", "0") or "0") > 0:
        params["device"] = "cuda"
    return params


def final_score(booster: xgb.Booster, dval: xgb.DMatrix, metric: str) -> float:
    """The kept model's validation metric (correct after a resume, where the log lacks early rounds)."""
    text = booster.eval(dval, "validation")
    match = re.search(rf"validation-{re.escape(metric)}:([^\s]+)", text)
    if match is None:
        raise JobError(f"validation metric {metric} missing from {text!r}")
    return float(match.group(1))


def debugger_hook() -> xgb.callback.TrainingCallback | None:
    """SageMaker Debugger's XGBoost hook when the job has a DebugHookConfig (its rules read `metrics`).

    smdebug ships in SageMaker's XGBoost image, and the platform writes the hook's JSON config only when the
    training request has a DebugHookConfig; anywhere else (the local engine, tests) this returns None.
    """
    default = base_dir() / "input" / "config" / "debughookconfig.json"
    config = Path(os.environ.get("SMDEBUG_CONFIG_FILE_PATH", str(default)))
    if not config.exists():
        return None
    try:
        from smdebug.xgboost import Hook  # type: ignore[import-not-found]
    except ImportError:
        print("train: Debugger hook config found but smdebug is not installed; rules get no data", flush=True)
        return None
    return Hook.create_from_json_file()


def train(args: argparse.Namespace) -> None:
    base = base_dir()
    model_dir = Path(os.environ.get("SM_MODEL_DIR", base / "model"))
    checkpoint_dir = base / "checkpoints"
    train_channel = Path(os.environ.get("SM_CHANNEL_TRAIN", base / "input" / "data" / "train"))
    spec_path = train_channel / SPEC_FILE
    if not spec_path.is_file():
        raise BadInputError(f"feature spec missing: {spec_path} (the train channel needs {SPEC_FILE})")
    spec = FeatureSpec.load(spec_path)
    x_train, y_train = read_channel("train", spec)
    x_val, y_val = read_channel("validation", spec)
    names = spec.feature_names if not any(ch in n for n in spec.feature_names for ch in "[]<") else None
    dtrain = xgb.DMatrix(x_train, label=y_train, feature_names=names)
    dval = xgb.DMatrix(x_val, label=y_val, feature_names=names)

    metrics = [
        m.strip() for m in (args.eval_metric or DEFAULT_METRIC[spec.problem_type]).split(",") if m.strip()
    ]
    stop_metric = metrics[-1]
    params = xgb_params(args, spec, metrics)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    booster = latest_checkpoint(checkpoint_dir, x_train.shape[1])
    done = booster.num_boosted_rounds() if booster is not None else 0
    remaining = args.num_round - done
    if remaining > 0:
        callbacks: list[xgb.callback.TrainingCallback] = [
            MetricLog(),
            JsonCheckPoint(checkpoint_dir, name=CHECKPOINT_NAME, interval=args.checkpoint_every),
        ]
        if args.early_stopping_rounds:
            callbacks.append(
                ResumableEarlyStopping(
                    rounds=args.early_stopping_rounds,
                    metric_name=stop_metric,
                    data_name="validation",
                    maximize=stop_metric.split("@")[0] in MAXIMIZE,
                )
            )
        hook = debugger_hook()
        if hook is not None:
            callbacks.append(hook)
        print(f"train: {spec.problem_type}, {params}, {remaining} rounds from round {done}", flush=True)
        booster = xgb.train(
            params,
            dtrain,
            num_boost_round=remaining,
            evals=[(dtrain, "train"), (dval, "validation")],
            callbacks=callbacks,
            verbose_eval=False,
            xgb_model=booster,
        )
    assert booster is not None
    keep = min(booster.num_boosted_rounds(), args.num_round)
    best = booster.attr("best_iteration") if args.early_stopping_rounds else None
    if best is not None:
        keep = min(keep, int(best) + 1)
    final = booster[:keep] if keep < booster.num_boosted_rounds() else booster
    score = {m: final_score(final, dval, m) for m in metrics}
    print(f"train: kept {keep} of {booster.num_boosted_rounds()} rounds", flush=True)
    print(SEP.join(["[final]", *(f"validation-{m}:{v:.6g}" for m, v in score.items())]), flush=True)

    model_dir.mkdir(parents=True, exist_ok=True)
    final.save_model(model_dir / MODEL_FILE)
    spec.save(model_dir / SPEC_FILE)
    code_dir = model_dir / "code"
    code_dir.mkdir(exist_ok=True)
    for name in CODE_FILES:
        shutil.copy2(Path(__file__).with_name(name), code_dir / name)


def main(argv: list[str] | None = None) -> int:
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (an in-process caller): SIGTERM stays the caller's business
        return run_job("train", lambda: _interruptible(argv))
    try:
        return run_job("train", lambda: _interruptible(argv))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interruptible(argv: list[str] | None) -> None:
    try:
        train(parse_args(argv))
    except Interrupted:
        kept = sorted(
            (p.name for p in (base_dir() / "checkpoints").glob(f"{CHECKPOINT_NAME}_*.json")),
            key=lambda name: int(re.sub(r"\D", "", name) or 0),
        )
        raise Interrupted(
            f"stopped by SIGTERM (e.g. a Spot interruption); {len(kept)} checkpoint(s) kept in "
            f"{base_dir() / 'checkpoints'}"
            + (f", newest {kept[-1]}" if kept else "")
            + "; a rerun with the same checkpoints resumes from the newest"
        ) from None


if __name__ == "__main__":
    sys.exit(main())
