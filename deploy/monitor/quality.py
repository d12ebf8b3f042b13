"""Model quality from captured predictions joined with ground truth, as Model Monitor's model-quality job.

Ground truth is Model Monitor's format: JSON lines `{"groundTruthData": {"data": "1", "encoding": "CSV"},
"eventMetadata": {"eventId": "<the captured request's eventId>"}, "eventVersion": "0"}`, joined on eventId;
like Model Monitor, only requests holding one record can be joined (one label per eventId). The statistics
use Model Monitor's section names (`binary_classification_metrics`, `multiclass_classification_metrics`,
`regression_metrics`) and metric names, which are also the CloudWatch metric names the model-quality alarm
reads (`auc` by default).
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np

from deploy.abtest import parse_output
from deploy.clients import ObjectReader, UsageError
from deploy.monitor.capture import CapturedRecord

SECTIONS = {
    "binary": "binary_classification_metrics",
    "multiclass": "multiclass_classification_metrics",
    "regression": "regression_metrics",
}


def read_ground_truth(objects: ObjectReader, prefix: str) -> dict[str, str]:
    """eventId -> label text of every ground-truth record under the prefix.

    Raises:
        UsageError: a line that is not a ground-truth record, naming the object and the line.
    """
    labels: dict[str, str] = {}
    for uri in objects.list(prefix):
        if not uri.endswith((".jsonl", ".json")):
            continue
        for number, line in enumerate(objects.read(uri).decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                data = record["groundTruthData"]
                text = str(data["data"])
                if str(data.get("encoding", "")).upper() == "BASE64":
                    text = base64.b64decode(text).decode("utf-8")
                labels[str(record["eventMetadata"]["eventId"])] = text.strip()
            except (ValueError, KeyError, TypeError) as exc:
                raise UsageError(f"{uri} line {number} is not a ground-truth record: {exc}") from None
    return labels


def join(records: list[CapturedRecord], labels: dict[str, str]) -> list[tuple[Any, str]]:
    """(prediction, label) of each single-record captured request with a ground-truth label."""
    per_event: dict[str, int] = {}
    for record in records:
        if record.event_id:
            per_event[record.event_id] = per_event.get(record.event_id, 0) + 1
    pairs = []
    seen: set[str] = set()
    for record in records:
        event = record.event_id
        if not event or event in seen or per_event[event] != 1 or event not in labels or not record.output:
            continue
        seen.add(event)
        predictions = parse_output(record.output)
        if len(predictions) == 1:
            pairs.append((predictions[0], labels[event]))
    return pairs


def _value(value: float) -> dict[str, float]:
    return {"value": float(value)}


def model_quality(
    pairs: list[tuple[Any, str]], problem_type: str, threshold: float
) -> tuple[dict[str, Any], dict[str, float]]:
    """(statistics in Model Monitor's model-quality shape, CloudWatch metric values)."""
    from sklearn import metrics as skm

    if not pairs:
        raise UsageError("no captured prediction matched a ground-truth eventId")
    metrics: dict[str, float] = {}
    section: dict[str, Any] = {}
    try:
        if problem_type == "regression":
            y_true = np.array([float(label) for _, label in pairs])
            y_pred = np.array([float(p.score) for p, _ in pairs])
            mse = skm.mean_squared_error(y_true, y_pred)
            metrics = {"mae": skm.mean_absolute_error(y_true, y_pred), "mse": mse, "rmse": math.sqrt(mse)}
            if len(pairs) > 1:
                metrics["r2"] = skm.r2_score(y_true, y_pred)
        elif problem_type == "binary":
            y_true = np.array([int(float(label)) for _, label in pairs])
            scores = np.array([float(p.score) for p, _ in pairs])
            y_pred = (scores >= threshold).astype(int)
            metrics = {
                "accuracy": skm.accuracy_score(y_true, y_pred),
                "precision": skm.precision_score(y_true, y_pred, zero_division=0),
                "recall": skm.recall_score(y_true, y_pred, zero_division=0),
                "f1": skm.f1_score(y_true, y_pred, zero_division=0),
            }
            if len(set(y_true.tolist())) == 2:  # AUC needs both classes
                metrics["auc"] = skm.roc_auc_score(y_true, scores)
            matrix = skm.confusion_matrix(y_true, y_pred, labels=[0, 1])
            section["confusion_matrix"] = {
                str(a): {str(b): int(matrix[a][b]) for b in (0, 1)} for a in (0, 1)
            }
        else:
            y_true = np.array([label for _, label in pairs])
            y_pred = np.array([str(p.label if p.label is not None else p.score) for p, _ in pairs])
            metrics = {
                "accuracy": skm.accuracy_score(y_true, y_pred),
                "weighted_f1": skm.f1_score(y_true, y_pred, average="weighted", zero_division=0),
                "weighted_precision": skm.precision_score(
                    y_true, y_pred, average="weighted", zero_division=0
                ),
                "weighted_recall": skm.recall_score(y_true, y_pred, average="weighted", zero_division=0),
            }
    except (TypeError, ValueError) as exc:
        raise UsageError(
            f"ground truth and predictions do not fit problem type {problem_type}: {exc}"
        ) from None
    metrics = {k: float(v) for k, v in metrics.items()}
    section |= {name: _value(value) for name, value in metrics.items()}
    stats = {"version": 0.0, "dataset": {"item_count": len(pairs)}, SECTIONS[problem_type]: section}
    return stats, metrics
