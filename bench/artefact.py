"""The benchmarks' model: trained by model_code/train.py on model_code/data.py with the pipeline defaults.

Why not a synthetic booster: the figures must describe what the pipeline deploys (same hyperparameters, same
inference.py), so the artefact is built exactly as the Train step builds it, once per benchmark run.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODEL_CODE = REPO / "model_code"
TRAIN_ROWS, SEED = 10_000, 42


@dataclass(frozen=True)
class Artefact:
    """An extracted model dir (xgboost-model.json, feature_spec.json, code/) and its model.tar.gz."""

    model_dir: Path
    tarball: Path
    raw_columns: list[str]


def _schema_arguments() -> list[str]:
    """The default schema as preprocess arguments (contracts sec. 3), as steps/context.py passes it."""
    from pipelines.config import SchemaConfig

    schema = SchemaConfig()
    args = [
        "--target-column", schema.target_column,
        "--problem-type", schema.problem_type,
        "--numeric-columns", ",".join(schema.numeric_columns),
        "--categorical-columns", ",".join(schema.categorical_columns),
    ]  # fmt: skip
    for column, values in schema.categorical_columns.items():
        args += ["--categories", f"{column}={'|'.join(values)}"]
    split = ",".join(str(v) for v in schema.split)
    args += ["--drop-columns", ",".join(schema.drop_columns), "--max-nan-ratio", str(schema.max_nan_ratio)]
    return [*args, "--seed", str(SEED), "--split", split]


def _hyperparameters() -> list[str]:
    """The pipeline's default training hyperparameters (pipelines/config.py) as train.py arguments."""
    from pipelines.config import TrainingConfig

    args: list[str] = []
    for name, value in TrainingConfig().hyperparameters.items():
        args += [f"--{name}", str(value)]
    return args


def _run(script: str, args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, str(MODEL_CODE / script), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{script} failed ({result.returncode}):\n{result.stderr[-2000:]}")


@functools.cache
def build() -> Artefact:
    """Preprocess the built-in data and train with the pipeline's defaults; cached for the whole run."""
    root = Path(tempfile.mkdtemp(prefix="pdm-bench-model-"))
    atexit.register(shutil.rmtree, root, True)
    pre, train = root / "preprocess", root / "train"
    data = pre / "processing" / "input" / "data"
    data.mkdir(parents=True)
    from model_code.data import generate

    generate(TRAIN_ROWS, SEED).to_csv(data / "pdm.csv", index=False)
    _run("preprocess.py", _schema_arguments(), {"SAGEMAKER_BASE_DIR": str(pre)})
    out = pre / "processing" / "output"
    _run(
        "train.py",
        _hyperparameters(),
        {
            "SAGEMAKER_BASE_DIR": str(train),
            "SM_CHANNEL_TRAIN": str(out / "train"),
            "SM_CHANNEL_VALIDATION": str(out / "validation"),
            "SM_MODEL_DIR": str(train / "model"),
            "SM_NUM_GPUS": "0",
        },
    )
    model_dir = train / "model"
    tarball = root / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:  # contents at the archive root (contracts sec. 6)
        for item in sorted(model_dir.iterdir()):
            tar.add(item, arcname=item.name)
    from model_code.features import FeatureSpec

    spec = FeatureSpec.load(model_dir / "feature_spec.json")
    return Artefact(model_dir, tarball, spec.raw_columns)
