"""Typed server settings from the engine's endpoint.json, validated up front, errors naming the field."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.serve import constants as c

# EndpointName / VariantName pattern of the SageMaker API.
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
_CAPTURE_MODES = {"input": (True, False), "output": (False, True), "inputandoutput": (True, True)}


class ConfigError(ValueError):
    """The endpoint configuration is unusable; the message names the field and the bad value."""


@dataclass(frozen=True)
class VariantConfig:
    """One production variant: its name, traffic weight and extracted model directory."""

    name: str
    weight: float
    model_dir: Path | None


@dataclass(frozen=True)
class CaptureConfig:
    """Data capture settings (SageMaker DataCaptureConfig, destination as a local folder)."""

    sampling_percentage: float
    destination_dir: Path
    capture_input: bool = True
    capture_output: bool = True
    # The SageMaker SDK's defaults; other content types are stored base64 as SageMaker does.
    csv_content_types: tuple[str, ...] = (c.CSV,)
    json_content_types: tuple[str, ...] = (c.JSON,)


@dataclass(frozen=True)
class MultiModelConfig:
    """Multi-model endpoint: target models are tar.gz paths under model_root, loaded on first use."""

    model_root: Path
    cache_size: int = 4


@dataclass(frozen=True)
class ServeConfig:
    """Everything the server needs; built only by the entry point and passed inward."""

    endpoint_name: str
    variants: tuple[VariantConfig, ...]
    host: str = "127.0.0.1"
    port: int = 0
    workers: int = 1
    ready_file: Path | None = None
    data_capture: CaptureConfig | None = None
    multi_model: MultiModelConfig | None = None
    program: str = c.DEFAULT_PROGRAM
    default_accept: str = c.JSON
    # Seeds variant routing and capture sampling so tests of weighted routing are deterministic.
    random_seed: int | None = None
    max_payload_bytes: int = c.MAX_PAYLOAD_BYTES
    # Micro-batching of concurrent one-record CSV requests (deploy/serve/batching.py).
    batching: bool = True
    # Where every worker keeps its counters (deploy/serve/metrics.py), so /metrics sums all workers; the
    # local engine passes one folder per endpoint, kept across server generations so counts carry over.
    metrics_dir: Path | None = None


def load_config(path: Path, program: str = c.DEFAULT_PROGRAM, default_accept: str = c.JSON) -> ServeConfig:
    """Read and validate endpoint.json.

    Args:
        path: the JSON file written by the local engine.
        program: user module file name inside `<model_dir>/code` (env SAGEMAKER_PROGRAM).
        default_accept: Accept used when a request sends none or `*/*`.

    Returns:
        The validated configuration.
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read endpoint config {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"endpoint config {path} must be a JSON object")
    return parse_config(raw, program=program, default_accept=default_accept)


def parse_config(
    raw: dict[str, Any], program: str = c.DEFAULT_PROGRAM, default_accept: str = c.JSON
) -> ServeConfig:
    """Validate an endpoint.json object; see `load_config`."""
    name = _name(raw.get("endpoint_name"), "endpoint_name")
    multi = _multi_model(raw.get("multi_model"))
    variants = _variants(raw.get("variants"), need_model_dir=multi is None)
    workers = raw.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")
    port = raw.get("port", 0)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"port must be an integer in 0..65535 (0 = pick a free port), got {port!r}")
    host = raw.get("host") or "127.0.0.1"
    if not isinstance(host, str):
        raise ConfigError(f"host must be a string, got {host!r}")
    ready = raw.get("ready_file")
    seed = raw.get("random_seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ConfigError(f"random_seed must be an integer, got {seed!r}")
    batching = raw.get("batching", True)
    if not isinstance(batching, bool):
        raise ConfigError(f"batching must be true or false, got {batching!r}")
    metrics_dir = raw.get("metrics_dir")
    return ServeConfig(
        endpoint_name=name,
        variants=variants,
        host=host,
        port=port,
        workers=workers,
        ready_file=_abs_path(ready, "ready_file") if ready else None,
        data_capture=_capture(raw.get("data_capture")),
        multi_model=multi,
        program=program,
        default_accept=default_accept,
        random_seed=seed,
        batching=batching,
        metrics_dir=_abs_path(metrics_dir, "metrics_dir") if metrics_dir else None,
    )


def single_model_config(
    model_dir: Path, endpoint_name: str = "local-endpoint", port: int = 0, **kwargs: Any
) -> ServeConfig:
    """Configuration serving one extracted artefact as variant AllTraffic (the `--model-data` form)."""
    variant = VariantConfig(name="AllTraffic", weight=1.0, model_dir=Path(model_dir).resolve())
    return ServeConfig(
        endpoint_name=_name(endpoint_name, "endpoint_name"), variants=(variant,), port=port, **kwargs
    )


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > c.MAX_ENDPOINT_NAME_CHARS or not _NAME.match(value):
        raise ConfigError(
            f"{where} must match {_NAME.pattern}, at most {c.MAX_ENDPOINT_NAME_CHARS} chars; got {value!r}"
        )
    return value


def _abs_path(value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a path string, got {value!r}")
    return Path(value).expanduser().resolve()


def _variants(value: Any, need_model_dir: bool) -> tuple[VariantConfig, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"variants must be a non-empty list, got {value!r}")
    out: list[VariantConfig] = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ConfigError(f"variants[{i}] must be an object, got {item!r}")
        name = _name(item.get("name"), f"variants[{i}].name")
        weight = item.get("weight", 1.0)
        if not isinstance(weight, int | float) or isinstance(weight, bool) or weight < 0:
            raise ConfigError(f"variants[{i}].weight must be a number >= 0, got {weight!r}")
        model_dir = None
        if item.get("model_dir") or need_model_dir:
            model_dir = _abs_path(item.get("model_dir"), f"variants[{i}].model_dir")
            if not model_dir.is_dir():
                raise ConfigError(f"variants[{i}].model_dir {model_dir} is not a directory")
        out.append(VariantConfig(name=name, weight=float(weight), model_dir=model_dir))
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"variant names must be unique, got {names}")
    if sum(v.weight for v in out) <= 0:
        raise ConfigError(f"at least one variant needs a weight > 0, got {[v.weight for v in out]}")
    return tuple(out)


def _capture(value: Any) -> CaptureConfig | None:
    if value is None or (isinstance(value, dict) and not value.get("enabled", True)):
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"data_capture must be an object or null, got {value!r}")
    pct = value.get("sampling_percentage", 100)
    if not isinstance(pct, int | float) or isinstance(pct, bool) or not 0 <= pct <= 100:
        raise ConfigError(f"data_capture.sampling_percentage must be in 0..100, got {pct!r}")
    capture_in = capture_out = False
    options = value.get("capture_options", ["Input", "Output"])
    if not isinstance(options, list) or not options:
        raise ConfigError(f"data_capture.capture_options must be a non-empty list, got {options!r}")
    for opt in options:
        # Accept both the engine's plain strings and the API's {"CaptureMode": ...} objects.
        mode = opt.get("CaptureMode") if isinstance(opt, dict) else opt
        flags = _CAPTURE_MODES.get(str(mode).lower())
        if flags is None:
            raise ConfigError(
                f"data_capture.capture_options: unknown mode {mode!r}; use Input, Output, InputAndOutput"
            )
        capture_in, capture_out = capture_in or flags[0], capture_out or flags[1]
    # Absent: the SDK's defaults. Present (even empty): only the listed types are stored as text.
    csv_types = tuple(value.get("csv_content_types", (c.CSV,)))
    json_types = tuple(value.get("json_content_types", (c.JSON,)))
    return CaptureConfig(
        sampling_percentage=float(pct),
        destination_dir=_abs_path(value.get("destination_dir"), "data_capture.destination_dir"),
        capture_input=capture_in,
        capture_output=capture_out,
        csv_content_types=csv_types,
        json_content_types=json_types,
    )


def _multi_model(value: Any) -> MultiModelConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"multi_model must be an object or null, got {value!r}")
    root = _abs_path(value.get("model_root"), "multi_model.model_root")
    if not root.is_dir():
        raise ConfigError(f"multi_model.model_root {root} is not a directory")
    size = value.get("cache_size", 4)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"multi_model.cache_size must be an integer >= 1, got {size!r}")
    return MultiModelConfig(model_root=root, cache_size=size)
