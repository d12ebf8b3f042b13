"""Default input/predict/output hooks as in SageMaker's XGBoost script-mode container (no model_fn)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from deploy.serve import constants as c
from deploy.serve.errors import ModelFailure


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def default_input_fn(body: bytes | str, content_type: str) -> Any:
    """Decode CSV rows (no header) or a JSON array into an xgboost DMatrix, like the container's decoder."""
    import xgboost as xgb  # deferred: only artefacts without input_fn need it

    media = _media(content_type)
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    if media == c.CSV:
        rows = [
            [float(v) if v.strip() else np.nan for v in line.split(",")] for line in text.splitlines() if line
        ]
        array = np.asarray(rows, dtype=np.float32)
    elif media == c.JSON:
        array = np.asarray(json.loads(text), dtype=np.float32)
    else:
        raise ModelFailure(415, f"content type {content_type!r} is not supported; use {c.CSV} or {c.JSON}")
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"expected one or more records of numbers, got an array of shape {array.shape}")
    return xgb.DMatrix(array)


def default_predict_fn(data: Any, model: Any) -> Any:
    """`model.predict(data, validate_features=False)`, the container's default."""
    return model.predict(data, validate_features=False)


def default_output_fn(prediction: Any, accept: str) -> tuple[str, str]:
    """Encode as JSON (`tolist()`) or CSV (one record per line), like sagemaker-containers' encoders."""
    media = _media(accept)
    array = np.asarray(prediction)
    if media == c.JSON:
        return json.dumps(array.tolist()), c.JSON
    if media == c.CSV:
        rows = array.reshape(-1, 1) if array.ndim == 1 else array
        return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in rows), c.CSV
    raise ModelFailure(406, f"accept {accept!r} is not supported; use {c.CSV} or {c.JSON}")
