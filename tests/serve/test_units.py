"""In-process checks of config validation, user-module loading and error mapping (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy.serve.config import ConfigError, parse_config
from deploy.serve.errors import ModelFailure, for_container, for_runtime, from_hook_exception
from deploy.serve.handler import LoadError, load_handler
from deploy.serve.metrics import Metrics, parse_prometheus, variant_counts


def _config(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    return {"endpoint_name": "ep", "variants": [{"name": "A", "model_dir": str(tmp_path)}], **overrides}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"endpoint_name": "bad_name"}, "endpoint_name"),
        ({"variants": []}, "variants"),
        ({"variants": [{"name": "A", "weight": 0}]}, "weight > 0"),
        ({"variants": [{"name": "A", "weight": -1}]}, "variants[0].weight"),
        ({"workers": 0}, "workers"),
        ({"port": 70000}, "port"),
        ({"data_capture": {"sampling_percentage": 101, "destination_dir": "/tmp/x"}}, "sampling_percentage"),
        (
            {"data_capture": {"capture_options": ["Everything"], "destination_dir": "/tmp/x"}},
            "capture_options",
        ),
        ({"multi_model": {"model_root": "/nonexistent"}}, "multi_model.model_root"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, overrides: dict[str, Any], field: str) -> None:
    raw = _config(tmp_path, **overrides)
    if overrides.get("variants") and "model_dir" not in overrides["variants"][0]:
        raw["variants"][0]["model_dir"] = str(tmp_path)
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_config(raw)


def test_config_defaults(tmp_path: Path) -> None:
    config = parse_config(_config(tmp_path, data_capture={"destination_dir": str(tmp_path)}))
    assert (config.host, config.port, config.workers) == ("127.0.0.1", 0, 1)
    assert config.variants[0].weight == 1.0
    assert config.data_capture is not None and config.data_capture.capture_input
    assert config.max_payload_bytes == 6291456


def _artefact(root: Path, marker: str, extra: str = "") -> Path:
    """A fake artefact whose inference.py imports its own features.py (as the real one does)."""
    code = root / "code"
    code.mkdir(parents=True)
    (code / "features.py").write_text(f"MARKER = {marker!r}\n")
    (code / "inference.py").write_text(
        "import features\n"
        "def model_fn(model_dir):\n    return features.MARKER\n"
        "def input_fn(body, content_type):\n    return body\n"
        "def predict_fn(data, model):\n    return f'{model}:{data}'\n"
        "def output_fn(prediction, accept):\n    return prediction, 'text/plain'\n" + extra
    )
    return root


def test_each_artefact_imports_its_own_sibling_modules(tmp_path: Path) -> None:
    first = load_handler(_artefact(tmp_path / "one", "one"))
    second = load_handler(_artefact(tmp_path / "two", "two"))
    assert first.run(b"x", "text/csv", "text/plain")[:2] == (b"one:x", "text/plain")
    assert second.run(b"x", "text/csv", "text/plain")[0] == b"two:x"


def test_transform_fn_with_input_fn_is_refused_at_load(tmp_path: Path) -> None:
    root = _artefact(tmp_path, "m", extra="def transform_fn(model, data, ct, accept):\n    return data\n")
    with pytest.raises(LoadError, match="transform_fn cannot be combined"):
        load_handler(root)


def test_missing_model_fn_is_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text("def input_fn(body, ct):\n    return body\n")
    with pytest.raises(LoadError, match="no model_fn"):
        load_handler(tmp_path)


def test_hook_exceptions_map_to_container_statuses(tmp_path: Path) -> None:
    handler = load_handler(_artefact(tmp_path, "m"))
    assert from_hook_exception(ValueError("bad")).status == 400
    assert from_hook_exception(KeyError("k")).status == 400
    assert from_hook_exception(RuntimeError("boom")).status == 500
    with pytest.raises(ModelFailure) as info:
        handler.run(b"\xff", "text/csv", "text/plain")
    assert info.value.status == 400 and "UTF-8" in info.value.message


def test_runtime_wraps_model_failures_as_model_error() -> None:
    failure = ModelFailure(400, "record 1 has 2 fields")
    runtime = for_runtime(failure, "ep")
    body = json.loads(runtime.body())
    assert (runtime.status, runtime.code, body["__type"]) == (424, "ModelError", "ModelError")
    assert body["OriginalStatusCode"] == 400 and body["OriginalMessage"] == "record 1 has 2 fields"
    assert "Received client error (400)" in body["message"]
    container = for_container(ModelFailure(500, "boom"))
    assert (container.status, container.code) == (500, "InternalFailure")


def test_metrics_render_round_trips() -> None:
    metrics = Metrics('ep"1', ["A", "B"])
    for _ in range(3):
        metrics.variants["A"].succeeded(0.001, 0.002, 0.0001, 0.004)
    for _ in range(2):
        metrics.variants["A"].failed(400)
    metrics.variants["B"].succeeded(0.001, 0.002, 0.0001, 0.004)
    metrics.reject("ValidationError")
    samples = parse_prometheus(metrics.render())
    assert any(dict(labels).get("endpoint") == 'ep\\"1' for _, labels in samples)
    assert variant_counts(metrics.render())["A"] == {"invocations": 5.0, "errors_4xx": 2.0, "errors_5xx": 0.0}
    with pytest.raises(ValueError):
        parse_prometheus("not a metric line at all\n")
