"""Emulates SageMaker's built-in XGBoost algorithm inside a local job (`python -m` this module).

Follows sagemaker-xgboost-container's algorithm mode: channels `train`/`validation` as CSV (label in
column 0, no header, optional weight column with `csv_weights=1`) or libsvm (the default without a
ContentType); its hyperparameter names; `[i]#011train-m:v#011validation-m:v` log lines;
`xgboost-checkpoint.<iteration>` checkpoints (resumed from); the model saved as `model/xgboost-model`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.local.jobs.xgboost_spec import (
    CONTAINER_ONLY,
    FLOAT_HPS,
    HYPERPARAMETERS,
    INT_HPS,
    MAXIMIZE,
)

CHECKPOINT_PREFIX = "xgboost-checkpoint."
KEEP_CHECKPOINTS = 5


class UserError(Exception):
    """Bad data or hyperparameters: exit code 2 with the message in output/failure."""


def parse_hyperparameters(raw: dict[str, str]) -> dict[str, Any]:
    """Validate names and convert values; unknown names are refused by name."""
    unknown = sorted(set(raw) - HYPERPARAMETERS)
    if unknown:
        raise UserError(f"Hyperparameter(s) not supported by the XGBoost algorithm: {', '.join(unknown)}")
    if "num_round" not in raw:
        raise UserError("Missing required hyperparameter: num_round")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        text = str(value).strip().strip('"')
        try:
            if key in INT_HPS:
                number = float(text)
                if not number.is_integer():
                    raise ValueError(text)
                out[key] = int(number)
            elif key in FLOAT_HPS:
                out[key] = float(text)
            else:
                out[key] = text
        except ValueError:
            raise UserError(f"Hyperparameter {key}: invalid value {value!r}") from None
    return out


def content_format(content_type: str | None) -> str:
    """'csv' or 'libsvm' from a channel ContentType (parameters after ';' ignored, case-insensitive)."""
    if not content_type:
        return "libsvm"
    base = content_type.split(";")[0].strip().lower()
    if base in ("csv", "text/csv"):
        return "csv"
    if base in ("libsvm", "text/libsvm", "text/x-libsvm"):
        return "libsvm"
    raise UserError(
        f"ContentType {content_type!r} is not supported by the local XGBoost emulation (csv, libsvm)"
    )


def _files(folder: Path) -> list[Path]:
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith((".", "_"))]
    if not files:
        raise UserError(f"No data files in channel folder {folder.name}")
    return files


Data = tuple[Any, Any, Any]  # features (dense or CSR), labels, weights or None


def load_csv(folder: Path, weights: bool) -> Data:
    """CSV channel: label column 0, optional weight column 1, no header; delimiter sniffed."""
    parts = []
    for path in _files(folder):
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            continue
        try:
            delimiter = csv.Sniffer().sniff(text.splitlines()[0], delimiters=",;\t| ").delimiter
        except csv.Error:
            delimiter = ","
        try:
            parts.append(np.loadtxt(io.StringIO(text), delimiter=delimiter, ndmin=2, dtype=np.float32))
        except ValueError as exc:
            raise UserError(f"{path.name}: not numeric CSV without header ({exc})") from exc
    if not parts:
        raise UserError(f"Channel {folder.name} has no data")
    data = np.vstack(parts)
    first = 2 if weights else 1
    if data.shape[1] <= first:
        raise UserError(
            f"Channel {folder.name}: no feature columns after the label{'/weight' if weights else ''}"
        )
    return data[:, first:], data[:, 0], (data[:, 1] if weights else None)


def parse_libsvm_text(text: str, source: str = "libsvm") -> Data:
    """Parse `<label>[:<weight>] <index>:<value> ...` lines into (CSR features, labels, weights)."""
    import scipy.sparse as sp

    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    labels: list[float] = []
    weights: list[float] = []
    for number, line in enumerate(text.splitlines(), 1):
        tokens = line.split("#")[0].split()
        if not tokens:
            continue
        try:
            label, _, weight = tokens[0].partition(":")
            labels.append(float(label))
            weights.append(float(weight) if weight else 1.0)
            for token in tokens[1:]:
                index, _, value = token.partition(":")
                rows.append(len(labels) - 1)
                cols.append(int(index))
                vals.append(float(value))
        except ValueError as exc:
            raise UserError(f"{source} line {number}: not libsvm ({exc})") from exc
    matrix = sp.csr_matrix((vals, (rows, cols)), shape=(len(labels), (max(cols) + 1) if cols else 1))
    return matrix, np.array(labels), np.array(weights)


def load_libsvm(folder: Path) -> Data:
    """libsvm channel: every file parsed and stacked."""
    import scipy.sparse as sp

    parts = [parse_libsvm_text(p.read_text(encoding="utf-8"), p.name) for p in _files(folder)]
    width = max(m.shape[1] for m, _, _ in parts)
    matrix = sp.vstack(
        [sp.csr_matrix((m.data, m.indices, m.indptr), shape=(m.shape[0], width)) for m, _, _ in parts]
    )
    return matrix.tocsr(), np.concatenate([y for _, y, _ in parts]), np.concatenate([w for _, _, w in parts])


def _latest_checkpoint(folder: Path) -> tuple[int, Path] | None:
    found = []
    for path in folder.glob(CHECKPOINT_PREFIX + "*"):
        suffix = path.name[len(CHECKPOINT_PREFIX) :]
        if suffix.isdigit():
            found.append((int(suffix), path))
    return max(found) if found else None


def _progress_callback(offset: int, checkpoints: Path | None, scratch: Path) -> Any:
    """Callback printing the container's log line per round and writing a checkpoint after each one."""
    import xgboost as xgb

    def existing() -> list[tuple[int, Path]]:
        assert checkpoints is not None
        found = [(p.name[len(CHECKPOINT_PREFIX) :], p) for p in checkpoints.glob(CHECKPOINT_PREFIX + "*")]
        return sorted((int(n), p) for n, p in found if n.isdigit())

    class Progress(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
            iteration = offset + epoch
            parts = [f"{d}-{m}:{values[-1]:.5f}" for d, log in evals_log.items() for m, values in log.items()]
            print(f"[{iteration}]#011" + "#011".join(parts), flush=True)
            if checkpoints is not None:
                # Written next door then renamed in: the checkpoint sync never sees half a file.
                tmp = scratch / f"{CHECKPOINT_PREFIX}{iteration}.tmp"
                tmp.write_bytes(bytes(model.save_raw("ubj")))
                os.replace(tmp, checkpoints / f"{CHECKPOINT_PREFIX}{iteration}")
                for _number, path in existing()[:-KEEP_CHECKPOINTS]:
                    path.unlink(missing_ok=True)
            return False

    return Progress()


def train(base: Path) -> None:
    """Train as the built-in algorithm would, from the job's config files under `base` (/opt/ml)."""
    config = base / "input" / "config"
    hps = parse_hyperparameters(json.loads((config / "hyperparameters.json").read_text()))
    data_config = json.loads((config / "inputdataconfig.json").read_text())
    if "train" not in data_config:
        raise UserError("Channel 'train' is required")
    unknown = sorted(set(data_config) - {"train", "validation"})
    if unknown:
        raise UserError(f"Channel(s) not supported by the XGBoost algorithm: {', '.join(unknown)}")
    loaded = {}
    for name, channel in data_config.items():
        folder = base / "input" / "data" / name
        if content_format(channel.get("ContentType")) == "csv":
            loaded[name] = load_csv(folder, weights=hps.get("csv_weights", 0) == 1)
        else:
            loaded[name] = load_libsvm(folder)
    # Imported only now: a bad request fails fast, without paying for xgboost's import.
    import xgboost as xgb

    matrices = {name: xgb.DMatrix(x, label=y, weight=w) for name, (x, y, w) in loaded.items()}
    params = {k: v for k, v in hps.items() if k not in CONTAINER_ONLY}
    metrics = [m for m in str(params.pop("eval_metric", "")).split(",") if m]
    # The container evaluates the tuning objective too, so the tuner always finds its metric.
    objective = str(hps.get("_tuning_objective_metric", "")).split(":")[-1]
    if objective and objective not in metrics:
        metrics.append(objective)
    if metrics:
        params["eval_metric"] = metrics
    evals = [(matrices[n], n) for n in ("train", "validation") if n in matrices]

    checkpoints, start, model = None, 0, None
    ckpt_file = config / "checkpointconfig.json"
    if ckpt_file.is_file():
        local = json.loads(ckpt_file.read_text()).get("LocalPath") or "/opt/ml/checkpoints"
        checkpoints = base / os.path.relpath(local, "/opt/ml")
        checkpoints.mkdir(parents=True, exist_ok=True)
        latest = _latest_checkpoint(checkpoints)
        if latest is not None:
            model = xgb.Booster()
            model.load_model(bytearray(latest[1].read_bytes()))
            start = latest[0] + 1
            print(
                f"Resuming from checkpoint {latest[1].name}: {start} of {hps['num_round']} rounds done",
                flush=True,
            )
    callbacks = [_progress_callback(start, checkpoints, base / "output" / "intermediate")]
    rounds = hps.get("early_stopping_rounds")
    if rounds and "validation" in matrices:
        metric = objective or (metrics[-1] if metrics else None)
        callbacks.append(
            xgb.callback.EarlyStopping(
                rounds=rounds, metric_name=metric, data_name="validation", maximize=metric in MAXIMIZE
            )
        )
    try:
        booster = xgb.train(
            params, matrices["train"], max(0, hps["num_round"] - start), evals=evals, callbacks=callbacks,
            verbose_eval=False, xgb_model=model,
        )  # fmt: skip
    except xgb.core.XGBoostError as exc:
        # XGBoost rejects bad parameter values (e.g. an unknown objective): a user error, as in the container.
        raise UserError(str(exc).splitlines()[0]) from exc
    (base / "model").mkdir(parents=True, exist_ok=True)
    (base / "model" / "xgboost-model").write_bytes(bytes(booster.save_raw("ubj")))
    print(f"Model saved: {booster.num_boosted_rounds()} rounds", flush=True)


def main() -> int:
    """Entry point: exit 0, or 2 with output/failure written for a user error."""
    base = Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
    try:
        train(base)
    except UserError as exc:
        message = f"ClientError: {exc}"
        print(message, file=sys.stderr, flush=True)
        (base / "output").mkdir(parents=True, exist_ok=True)
        (base / "output" / "failure").write_text(message, encoding="utf-8")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
