"""Loads a batch-transform model (inference hooks or built-in XGBoost) here or in each worker process."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import pickle
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.local.errors import StoreError, UnsupportedError
from pipelines.local.jobs.context import JobContext
from pipelines.local.jobs.images import resolve_image
from pipelines.local.jobs.transfer import fetch_and_extract

# The serving containers' worker-process count (sagemaker-inference-toolkit, deploy/serve).
WORKERS_ENV = "SAGEMAKER_MODEL_SERVER_WORKERS"
# sys.path and sys.modules are process-wide: user modules are imported one at a time.
_IMPORT_LOCK = threading.Lock()


class ModelError(Exception):
    """The model could not handle a request (bad input, predict failure); fails that input object."""


class LoadedModel:
    """A model ready to answer `invoke(body, content_type, accept) -> (body, content_type)`."""

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        raise NotImplementedError


class ScriptModel(LoadedModel):
    """The SageMaker inference hooks of a user module (model_fn, input_fn, predict_fn, output_fn)."""

    def __init__(self, module: Any, model_dir: Path) -> None:
        self.module = module
        if not hasattr(module, "model_fn"):
            raise UnsupportedError(f"{module.__file__}: no model_fn(model_dir)")
        self.model = module.model_fn(str(model_dir))

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        mod = self.module
        try:
            if hasattr(mod, "transform_fn"):
                result = mod.transform_fn(self.model, body, content_type, accept)
            else:
                data = (
                    mod.input_fn(body, content_type)
                    if hasattr(mod, "input_fn")
                    else _default_input(body, content_type)
                )
                prediction = (
                    mod.predict_fn(data, self.model)
                    if hasattr(mod, "predict_fn")
                    else self.model.predict(data)
                )
                result = (
                    mod.output_fn(prediction, accept)
                    if hasattr(mod, "output_fn")
                    else _default_output(prediction, accept)
                )
        except Exception as exc:
            raise ModelError(f"{type(exc).__name__}: {exc}") from exc
        out, out_type = result if isinstance(result, tuple) else (result, accept)
        return (out.encode("utf-8") if isinstance(out, str) else bytes(out)), out_type


class XGBoostAlgorithmModel(LoadedModel):
    """The built-in XGBoost algorithm's serving: CSV/libsvm in, one score (or score vector) per record."""

    def __init__(self, model_dir: Path) -> None:
        import xgboost as xgb

        files = [p for p in sorted(model_dir.rglob("*")) if p.is_file() and not p.name.startswith(".")]
        if not files:
            raise StoreError("model artefact has no model file")
        raw = files[0].read_bytes()
        try:
            self.booster = pickle.loads(raw)  # the container tries pickle first, as here
        except Exception:
            self.booster = xgb.Booster()
            self.booster.load_model(bytearray(raw))
        self._xgb = xgb

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        kind = content_type.split(";")[0].strip().lower()
        try:
            if kind in ("text/csv", "csv"):
                data = np.loadtxt(io.StringIO(body.decode("utf-8")), delimiter=",", ndmin=2, dtype=np.float32)
                matrix = self._xgb.DMatrix(data)
            elif kind in ("text/libsvm", "text/x-libsvm", "libsvm"):
                from pipelines.local.jobs.xgboost_algorithm import parse_libsvm_text

                matrix = self._xgb.DMatrix(parse_libsvm_text(body.decode("utf-8"))[0])
            else:
                raise ModelError(f"content type {content_type!r} is not supported by the XGBoost algorithm")
            scores = self.booster.predict(matrix, validate_features=False)
        except (ValueError, self._xgb.core.XGBoostError) as exc:
            raise ModelError(str(exc).splitlines()[0]) from exc
        return _default_output(scores, accept), (accept if accept in ("application/json",) else "text/csv")


def _default_input(body: bytes, content_type: str) -> Any:
    text = body.decode("utf-8")
    if content_type.startswith("application/json"):
        return json.loads(text)
    return np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2)


def _default_output(prediction: Any, accept: str) -> bytes:
    values = np.asarray(prediction).tolist()
    if accept.startswith("application/json"):
        return json.dumps({"predictions": [{"score": v} for v in values]}).encode("utf-8")
    rows = [",".join(str(x) for x in v) if isinstance(v, list) else str(v) for v in values]
    return ("\n".join(rows) + "\n").encode("utf-8")


@contextlib.contextmanager
def _user_code() -> Iterator[None]:
    """The user's code failing (import or model_fn) fails the job with a ModelError naming why."""
    try:
        yield
    except (UnsupportedError, ModelError):
        raise
    except Exception as exc:
        raise ModelError(f"loading the model failed: {type(exc).__name__}: {exc}") from exc


def _exec_hooks(path: Path, name: str) -> Any:
    """Import the hooks module at `path` as `name` (its folder must already be on sys.path)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UnsupportedError(f"cannot import inference script {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered under its name: dataclasses and pickle look classes up through sys.modules.
    sys.modules[spec.name] = module
    with _user_code():
        spec.loader.exec_module(module)
    return module


def _import_user_module(path: Path, model_dir: Path) -> LoadedModel:
    """Import `path` under a unique name with its folder on sys.path, then forget its sibling imports.

    The module keeps references to what it imported (e.g. its `features` helper), so evicting them
    from sys.modules afterwards lets another model with a same-named helper load its own copy.
    """
    folder = str(path.parent)
    with _IMPORT_LOCK:
        before = set(sys.modules)
        sys.path.insert(0, folder)
        try:
            module = _exec_hooks(path, f"_local_inference_{uuid.uuid4().hex}")
            with _user_code():  # model_fn runs here too: a helper it imports lazily is still on sys.path
                model = ScriptModel(module, model_dir)
        finally:
            sys.path.remove(folder)
            for name in set(sys.modules) - before:
                file = getattr(sys.modules[name], "__file__", None) or ""
                if file.startswith(folder) and not name.startswith("_local_inference_"):
                    del sys.modules[name]
    return model


@dataclass(frozen=True)
class ModelSource:
    """An extracted model ready to load, picklable so worker processes can each load their own copy.

    Attributes:
        kind: "script" (inference hooks of a user module) or "xgboost" (built-in algorithm serving).
        model_dir: the extracted ModelDataUrl (what model_fn receives).
        script: the user module for "script".
    """

    kind: str
    model_dir: Path
    script: Path | None = None
    workers: int = 0  # SAGEMAKER_MODEL_SERVER_WORKERS when the model or job sets it, else 0

    def load(self) -> LoadedModel:
        """Import the hooks and run model_fn (or load the booster) in this process."""
        if self.kind == "xgboost":
            return self._booster()
        assert self.script is not None
        return _import_user_module(self.script, self.model_dir)

    def preload(self) -> Callable[[], LoadedModel]:
        """Import the hooks (and what they import) in this process, which serves only this model; the
        returned call runs model_fn (or loads the booster).

        Split so that worker processes can be forked between the two: the imports (a second or more:
        `import xgboost` imports scikit-learn and SciPy) happen once, and each worker loads its own model
        without having run any of the model's threads before the fork.
        """
        if self.kind == "xgboost":
            import xgboost  # noqa: F401  (the slow part, shared by the workers)

            return self._booster
        assert self.script is not None
        sys.path.insert(0, str(self.script.parent))  # kept: this process serves this model only
        module = _exec_hooks(self.script, "_local_inference")

        def finish() -> LoadedModel:
            with _user_code():
                return ScriptModel(module, self.model_dir)

        return finish

    def _booster(self) -> LoadedModel:
        try:
            return XGBoostAlgorithmModel(self.model_dir)
        except StoreError:
            raise
        except (ValueError, OSError) as exc:  # XGBoostError is a ValueError
            raise ModelError(f"loading the model failed: {exc}") from exc


def prepare_model(model: Mapping[str, Any], ctx: JobContext, environment: Mapping[str, str]) -> ModelSource:
    """Fetch and extract the DescribeModel's container into the job folder; nothing is imported yet.

    Raises:
        UnsupportedError: several containers, an unknown image, a missing inference script.
        ModelError: an invalid SAGEMAKER_MODEL_SERVER_WORKERS.
        StoreError / NoSuchKey: the model artefact cannot be fetched.
    """
    containers = model.get("Containers") or (
        [model["PrimaryContainer"]] if model.get("PrimaryContainer") else []
    )
    if len(containers) != 1:
        raise UnsupportedError(
            f"model {model.get('ModelName')!r}: exactly one container is supported locally"
        )
    container = containers[0]
    image = resolve_image(container.get("Image", ""))
    model_dir = ctx.job_dir / "model"
    url = container.get("ModelDataUrl")
    if url:
        fetch_and_extract(ctx.store, url, ctx.job_dir / "_scratch", model_dir)
    env = {**container.get("Environment", {}), **environment}
    workers = _workers(env.get(WORKERS_ENV))
    program = env.get("SAGEMAKER_PROGRAM")
    if not program and image.framework == "xgboost":
        return ModelSource("xgboost", model_dir, workers=workers)
    submit = env.get("SAGEMAKER_SUBMIT_DIRECTORY", "/opt/ml/model/code")
    if submit.startswith("s3://"):
        code_dir = ctx.job_dir / "code"
        fetch_and_extract(ctx.store, submit, ctx.job_dir / "_scratch", code_dir)
    elif submit.rstrip("/").startswith("/opt/ml/model"):
        code_dir = model_dir / submit.rstrip("/")[len("/opt/ml/model") :].lstrip("/")
    else:
        raise UnsupportedError(
            f"SAGEMAKER_SUBMIT_DIRECTORY {submit!r}: use an s3:// URI or /opt/ml/model/..."
        )
    script = code_dir / (program or "inference.py")
    if not script.is_file():
        raise UnsupportedError(f"inference script {script.name!r} not found in the model's code folder")
    return ModelSource("script", model_dir, script, workers)


def _workers(value: str | None) -> int:
    """The model server's worker count asked for (0: not set), as the serving containers read it."""
    if value is None or not value.strip():
        return 0
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ModelError(f"{WORKERS_ENV} must be a positive integer, got {value!r}")
    return count


def load_model(model: Mapping[str, Any], ctx: JobContext, environment: Mapping[str, str]) -> LoadedModel:
    """Fetch, extract and load the DescribeModel's container for in-process invocation.

    Raises:
        UnsupportedError: several containers, an unknown image, a missing inference script.
        StoreError / NoSuchKey: the model artefact cannot be fetched.
    """
    return prepare_model(model, ctx, environment).load()
