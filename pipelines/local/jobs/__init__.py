"""Job runners of the local engine: one SageMaker job each, boto3 request in, Describe* response out."""

from __future__ import annotations

import importlib
from typing import Any

# Imported lazily (PEP 562): a job subprocess such as the XGBoost emulation imports this package and
# must not pay for optuna or pandas it never uses.
_EXPORTS = {
    "JobContext": "pipelines.local.jobs.context",
    "run_processing_job": "pipelines.local.jobs.processing",
    "run_training_job": "pipelines.local.jobs.training",
    "run_tuning_job": "pipelines.local.jobs.tuning",
    "run_transform_job": "pipelines.local.jobs.transform",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
