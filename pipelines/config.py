"""Typed settings: one place that turns YAML, environment and `--param` into validated values.

Precedence, highest first: `--param key=value` overrides, environment variables (`PDM_<FIELD>`, nested with
`__`, e.g. `PDM_TRAINING__USE_SPOT=false`), the YAML file, the defaults below. Unknown keys and bad values are
errors that name the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ProblemType = Literal["binary", "multiclass", "regression"]

# Metric name -> (section of evaluation.json, direction). The section names follow the Model Registry's
# ModelQuality statistics shape, so the same file serves the gate and the registry.
GATE_METRICS: dict[ProblemType, dict[str, str]] = {
    "binary": {
        "auc": "maximize",
        "pr_auc": "maximize",
        "f1": "maximize",
        "recall_at_precision": "maximize",
        "accuracy": "maximize",
    },
    "multiclass": {
        "accuracy": "maximize",
        "macro_f1": "maximize",
        "weighted_f1": "maximize",
        "mlogloss": "minimize",
    },
    "regression": {"rmse": "minimize", "mae": "minimize", "mse": "minimize", "r2": "maximize"},
}
METRIC_SECTIONS: dict[ProblemType, str] = {
    "binary": "binary_classification_metrics",
    "multiclass": "multiclass_classification_metrics",
    "regression": "regression_metrics",
}
# The XGBoost eval metric each problem type trains and tunes on (printed by model_code/train.py).
TRAIN_METRICS: dict[ProblemType, tuple[str, Literal["Maximize", "Minimize"]]] = {
    "binary": ("auc", "Maximize"),
    "multiclass": ("mlogloss", "Minimize"),
    "regression": ("rmse", "Minimize"),
}

_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
DEFAULT_CONFIG_FILE = Path("pdm.yaml")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the input CSV comes from; without `input_uri` the built-in generator makes one."""

    input_uri: str | None = None
    builtin_rows: int = Field(10_000, ge=100, le=50_000_000)
    seed: int = 42


class SchemaConfig(_Section):
    """The input CSV's columns; preprocessing validates every file against it before anything else."""

    target_column: str = "machine_failure"
    problem_type: ProblemType = "binary"
    numeric_columns: list[str] = [
        "air_temperature_k",
        "process_temperature_k",
        "rotational_speed_rpm",
        "torque_nm",
        "tool_wear_min",
    ]
    categorical_columns: dict[str, list[str]] = {"type": ["H", "L", "M"]}
    drop_columns: list[str] = [
        "udi",
        "product_id",
        "failure_type",
        "twf",
        "hdf",
        "pwf",
        "osf",
        "rnf",
        "remaining_tool_life_min",
    ]
    max_nan_ratio: float = Field(0.05, ge=0.0, le=1.0)
    split: tuple[float, float, float] = (0.70, 0.15, 0.15)

    @model_validator(mode="after")
    def _columns_disjoint(self) -> SchemaConfig:
        seen: dict[str, str] = {}
        groups = {
            "target_column": [self.target_column],
            "numeric_columns": self.numeric_columns,
            "categorical_columns": list(self.categorical_columns),
            "drop_columns": self.drop_columns,
        }
        for group, cols in groups.items():
            for col in cols:
                if col in seen:
                    raise ValueError(f"column {col!r} is listed in both {seen[col]} and {group}")
                seen[col] = group
        if not self.numeric_columns and not self.categorical_columns:
            raise ValueError("schema needs at least one numeric or categorical feature column")
        if abs(sum(self.split) - 1.0) > 1e-6 or min(self.split) <= 0:
            raise ValueError(f"split {self.split} must be three positive fractions summing to 1")
        for col, values in self.categorical_columns.items():
            if not values:
                raise ValueError(f"categorical column {col!r} needs its allowed values")
        return self


class TrainingConfig(_Section):
    """Training job settings; Spot and max wait are compiled in (SDK v3 rejects parameters there)."""

    instance_type: str = "ml.m5.xlarge"
    instance_count: int = Field(1, ge=1, le=1)  # XGBoost script mode here trains on one host
    gpu_instance_types: list[str] = ["ml.g4dn.xlarge", "ml.g5.xlarge", "ml.p3.2xlarge"]
    use_spot: bool = True
    max_run: int = Field(3600, ge=60, le=432_000)
    max_wait: int = Field(7200, ge=60, le=432_000)
    checkpoint_every: int = Field(10, ge=1)
    framework_version: str = "3.0-5"
    debugger_rules: bool = True
    hyperparameters: dict[str, int | float | str] = {
        "num_round": 150,
        "max_depth": 5,
        "eta": 0.1,
        "subsample": 0.9,
        "colsample_bytree": 0.9,
        "min_child_weight": 1,
        "early_stopping_rounds": 20,
        "seed": 42,
    }

    @model_validator(mode="after")
    def _spot_wait(self) -> TrainingConfig:
        if self.use_spot and self.max_wait < self.max_run:
            raise ValueError(f"max_wait ({self.max_wait}) must be >= max_run ({self.max_run}) with Spot on")
        return self


class TuningConfig(_Section):
    """Hyperparameter tuning over the training job; budget is compiled in (SDK v3 types it as int)."""

    enabled: bool = True
    strategy: Literal["Bayesian", "Random", "Grid", "Hyperband"] = "Bayesian"
    max_jobs: int = Field(4, ge=1, le=500)
    max_parallel: int = Field(2, ge=1, le=100)
    ranges: dict[str, tuple[float, float]] = {
        "eta": (0.05, 0.3),
        "max_depth": (3, 8),
        "min_child_weight": (1, 8),
    }
    integer_parameters: list[str] = ["max_depth", "min_child_weight", "num_round"]

    @model_validator(mode="after")
    def _ranges(self) -> TuningConfig:
        for name, (low, high) in self.ranges.items():
            if low >= high:
                raise ValueError(f"tuning range {name!r}: min {low} must be below max {high}")
        if self.max_parallel > self.max_jobs:
            raise ValueError(f"max_parallel ({self.max_parallel}) exceeds max_jobs ({self.max_jobs})")
        return self


class EvaluationConfig(_Section):
    """The gate: candidate metric against a threshold and against the current champion."""

    metric: str = "auc"
    threshold: float = 0.80
    champion_tolerance: float = Field(0.0, ge=0.0)
    decision_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    precision_target: float = Field(0.9, gt=0.0, le=1.0)


class RegistryConfig(_Section):
    """Model Registry group and the approval status new versions get."""

    model_package_group: str = "pdm-mlops"
    approval_status: Literal["Approved", "PendingManualApproval", "Rejected"] = "Approved"


class DataCaptureConfig(_Section):
    enabled: bool = True
    sampling_percentage: int = Field(100, ge=0, le=100)


class DeployConfig(_Section):
    """Conditional deployment after registration (only when enabled and the package is Approved)."""

    enabled: bool = True
    endpoint_name: str = "pdm-mlops-dev"
    instance_type: str = "ml.m5.large"
    instance_count: int = Field(1, ge=1)
    data_capture: DataCaptureConfig = DataCaptureConfig()

    @field_validator("endpoint_name")
    @classmethod
    def _endpoint_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a valid endpoint name (letters, digits, hyphens; max 63)")
        return value


class BatchConfig(_Section):
    """Optional batch scoring in the pipeline: a TransformStep with the newly deployed model."""

    enabled: bool = False
    input_uri: str | None = None  # S3 prefix of raw CSV records (no header); required when enabled
    strategy: Literal["MultiRecord", "SingleRecord"] = "MultiRecord"
    max_payload_mb: int = Field(6, ge=1, le=100)
    input_filter: str | None = None
    output_filter: str | None = None

    @model_validator(mode="after")
    def _input(self) -> BatchConfig:
        if self.enabled and not (self.input_uri or "").startswith("s3://"):
            raise ValueError("batch.input_uri (an s3:// prefix of raw CSV records) is required when enabled")
        return self


class ProcessingConfig(_Section):
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = Field(1, ge=1, le=1)


class SecurityConfig(_Section):
    """KMS and network settings applied to every job and endpoint when set."""

    kms_key_id: str | None = None
    volume_kms_key_id: str | None = None
    subnets: list[str] = []
    security_group_ids: list[str] = []
    enable_network_isolation: bool = False
    encrypt_inter_container_traffic: bool = False

    @model_validator(mode="after")
    def _network(self) -> SecurityConfig:
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError("subnets and security_group_ids must be set together")
        return self


class CacheConfigSettings(_Section):
    enabled: bool = True
    expire_after: str = "P30D"

    @field_validator("expire_after")
    @classmethod
    def _iso_duration(cls, value: str) -> str:
        if not re.fullmatch(r"P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?", value):
            raise ValueError(f"{value!r} is not an ISO-8601 duration such as P30D or PT12H")
        return value


class RetryConfig(_Section):
    max_attempts: int = Field(3, ge=1, le=20)
    interval_seconds: int = Field(5, ge=1)
    backoff_rate: float = Field(2.0, ge=1.0)


class PipelineConfig(BaseModel):
    """Everything one pipeline run needs; see README "Configuration"."""

    # A plain model, not pydantic-settings' BaseSettings: its environment source silently ignores unknown
    # PDM_* names, and a mistyped variable must be an error (see _env_values).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    pipeline_name: str = "pdm-mlops"
    region: str = "us-east-1"
    role_arn: str = "arn:aws:iam::000000000000:role/pdm-mlops-local"
    bucket: str = "pdm-mlops-local"
    prefix: str = "pdm-mlops"
    data: DataConfig = DataConfig()
    schema_: SchemaConfig = Field(SchemaConfig(), alias="schema")
    processing: ProcessingConfig = ProcessingConfig()
    training: TrainingConfig = TrainingConfig()
    tuning: TuningConfig = TuningConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    registry: RegistryConfig = RegistryConfig()
    deploy: DeployConfig = DeployConfig()
    batch: BatchConfig = BatchConfig()
    security: SecurityConfig = SecurityConfig()
    cache: CacheConfigSettings = CacheConfigSettings()
    retry: RetryConfig = RetryConfig()

    @field_validator("pipeline_name")
    @classmethod
    def _pipeline_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a valid pipeline name (letters, digits, hyphens; max 63)")
        return value

    @field_validator("role_arn")
    @classmethod
    def _role(cls, value: str) -> str:
        if not re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+", value):
            raise ValueError(f"{value!r} is not an IAM role ARN (arn:aws:iam::<12 digits>:role/<name>)")
        return value

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value) or ".." in value:
            raise ValueError(f"{value!r} is not a valid S3 bucket name")
        return value

    @model_validator(mode="after")
    def _gate_metric(self) -> PipelineConfig:
        allowed = GATE_METRICS[self.schema_.problem_type]
        if self.evaluation.metric not in allowed:
            raise ValueError(
                f"evaluation.metric {self.evaluation.metric!r} is not valid for problem type "
                f"{self.schema_.problem_type!r}; choose one of {sorted(allowed)}"
            )
        return self

    # Derived values ---------------------------------------------------------------------------------------
    @property
    def s3_root(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def input_uri(self) -> str:
        # Built-in data goes under a prefix per (rows, seed): preprocessing reads every CSV under its input.
        return (
            self.data.input_uri
            or f"{self.s3_root}/data/builtin/{self.data.builtin_rows}-rows-seed-{self.data.seed}/"
        )

    @property
    def metric_direction(self) -> str:
        return GATE_METRICS[self.schema_.problem_type][self.evaluation.metric]

    @property
    def metric_json_path(self) -> str:
        return f"{METRIC_SECTIONS[self.schema_.problem_type]}.{self.evaluation.metric}.value"

    @property
    def uses_gpu(self) -> bool:
        return self.training.instance_type in self.training.gpu_instance_types


class ConfigError(ValueError):
    """A configuration problem, worded for the command line."""


def _field_map(model: type[BaseModel], prefix: str = "") -> dict[str, tuple[str, ...]]:
    """Dotted key -> attribute path for every leaf; short keys are added where unambiguous."""
    out: dict[str, tuple[str, ...]] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub, path in _field_map(annotation).items():
                out[f"{key}.{sub}"] = (key, *path)
        else:
            out[key] = (key,)
    return out


def known_keys() -> dict[str, tuple[str, ...]]:
    """All `--param` keys: dotted paths, plus each leaf's own name when no other section uses it."""
    dotted = _field_map(PipelineConfig)
    leaves: dict[str, list[str]] = {}
    for key in dotted:
        leaves.setdefault(key.rsplit(".", 1)[-1], []).append(key)
    aliases = {
        leaf: dotted[keys[0]] for leaf, keys in leaves.items() if len(keys) == 1 and leaf not in dotted
    }
    # The spelling `use_spot`, `max_wait` etc. are leaf aliases; a few friendlier ones are added.
    aliases.update({"spot": dotted["training.use_spot"], "gate_threshold": dotted["evaluation.threshold"]})
    return {**dotted, **aliases}


def _parse_value(raw: str) -> Any:
    """`--param` values are YAML scalars or flow collections (`true`, `0.8`, `[a, b]`, `{type: [L, M]}`)."""
    try:
        return yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        return raw


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` strings -> nested dict; unknown keys name themselves and the closest known key."""
    keys = known_keys()
    nested: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--param {pair!r}: expected key=value")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if key not in keys:
            import difflib

            close = difflib.get_close_matches(key, list(keys), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"--param {key!r}: unknown setting{hint}")
        node = nested
        path = keys[key]
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_value(raw)
    return nested


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_values(environ: dict[str, str]) -> dict[str, Any]:
    """PDM_* variables -> nested dict, validated against the known keys (unknown PDM_ names are errors)."""
    keys = _field_map(PipelineConfig)
    by_env = {"PDM_" + k.upper().replace(".", "__"): path for k, path in keys.items()}
    ignored = {"PDM_CONFIG", "PDM_PARAMS", "PDM_LOCAL_SPOT_INTERRUPTIONS", "PDM_ROOT"}
    nested: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith("PDM_") or name in ignored:
            continue
        if name not in by_env:
            raise ConfigError(f"environment variable {name}: unknown setting")
        node = nested
        path = by_env[name]
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _parse_value(raw)
    return nested


def _format_validation(err: ValidationError) -> str:
    lines = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"] if p != "schema_") or "config"
        loc = loc.replace("schema_", "schema")
        lines.append(f"{loc}: {item['msg']}")
    return "; ".join(lines)


def load_config(
    path: Path | str | None = None,
    overrides: list[str] | None = None,
    environ: dict[str, str] | None = None,
) -> PipelineConfig:
    """Build the validated config: defaults < YAML file < environment < `--param` overrides.

    The file is `path`, else $PDM_CONFIG, else ./pdm.yaml when it exists.
    """
    env = dict(os.environ if environ is None else environ)
    file_values: dict[str, Any] = {}
    if path is None and env.get("PDM_CONFIG"):
        path = env["PDM_CONFIG"]  # CodeBuild and shells can name the file without a flag
    chosen = Path(path) if path else (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None)
    if chosen is not None:
        if not chosen.exists():
            raise ConfigError(f"config file {chosen} does not exist")
        try:
            loaded = yaml.safe_load(chosen.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {chosen} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {chosen} must hold a mapping of settings")
        file_values = loaded
    merged = _deep_merge(_deep_merge(file_values, _env_values(env)), parse_overrides(overrides or []))
    try:
        return PipelineConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc)) from None
