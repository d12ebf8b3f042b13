"""Settings: precedence, validation and `--param` parsing, each bad value named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import ConfigError, load_config


def test_defaults_are_valid_and_derive_paths() -> None:
    config = load_config(environ={})
    assert config.training.use_spot is True
    assert config.metric_direction == "maximize"
    assert config.metric_json_path == "binary_classification_metrics.auc.value"
    assert config.input_uri == "s3://pdm-mlops-local/pdm-mlops/data/builtin/10000-rows-seed-42/"


def test_precedence_file_then_env_then_param(tmp_path: Path) -> None:
    path = tmp_path / "pdm.yaml"
    path.write_text("training:\n  max_run: 1000\n  max_wait: 2000\nevaluation:\n  threshold: 0.7\n")
    config = load_config(path, environ={"PDM_TRAINING__MAX_RUN": "1500"})
    assert config.training.max_run == 1500 and config.training.max_wait == 2000
    assert config.evaluation.threshold == 0.7
    config = load_config(path, ["max_run=1700", "gate_threshold=0.9"], {"PDM_TRAINING__MAX_RUN": "1500"})
    assert config.training.max_run == 1700 and config.evaluation.threshold == 0.9


@pytest.mark.parametrize(
    ("overrides", "environ", "fragment"),
    [
        (["usespot=false"], {}, "'usespot': unknown setting (did you mean 'use_spot'?)"),
        (["training.max_run=abc"], {}, "training.max_run"),
        (["evaluation.metric=rmse"], {}, "not valid for problem type 'binary'"),
        (["use_spot=true", "max_wait=100", "max_run=200"], {}, "max_wait (100) must be >= max_run (200)"),
        (["role_arn=not-an-arn"], {}, "role_arn"),
        (["bucket=Bad_Bucket"], {}, "not a valid S3 bucket name"),
        (["deploy.endpoint_name=has spaces"], {}, "not a valid endpoint name"),
        (["numeric_columns=[machine_failure]"], {}, "'machine_failure' is listed in both"),
        (["expire_after=30 days"], {}, "ISO-8601"),
        (["tuning.max_parallel=9"], {}, "max_parallel (9) exceeds max_jobs (4)"),
        (["noequals"], {}, "expected key=value"),
        ([], {"PDM_TRAINING__USE_SPT": "false"}, "PDM_TRAINING__USE_SPT: unknown setting"),
    ],
)
def test_bad_settings_name_the_key(overrides: list[str], environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(overrides=overrides, environ=environ)
    assert fragment in str(err.value)


def test_unknown_key_in_yaml_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("training:\n  use_spott: false\n")
    with pytest.raises(ConfigError, match=r"training\.use_spott"):
        load_config(path, environ={})


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "env.yaml"
    path.write_text("evaluation:\n  threshold: 0.66\n")
    assert load_config(environ={"PDM_CONFIG": str(path)}).evaluation.threshold == 0.66
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(environ={"PDM_CONFIG": str(tmp_path / "nope.yaml")})


def test_missing_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", environ={})
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path, environ={})


@pytest.mark.parametrize("name", ["binary", "multiclass", "regression"])
def test_shipped_example_configs_load(name: str) -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "configs" / f"{name}.yaml", environ={})
    assert config.schema_.problem_type == name
