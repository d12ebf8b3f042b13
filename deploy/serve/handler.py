"""Loads an artefact's user module once and runs its hooks per request, as SageMaker's inference toolkit."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from types import ModuleType
from typing import Any

from deploy.serve import constants as c
from deploy.serve import defaults
from deploy.serve.errors import ModelFailure, from_hook_exception

# Importing juggles process-global sys.modules/sys.path; multi-model loads run in worker threads.
_IMPORT_LOCK = threading.Lock()
_MODULE_IDS = itertools.count()


class LoadError(RuntimeError):
    """An artefact cannot be served (missing user module, conflicting hooks, model_fn failed)."""


@dataclass(frozen=True)
class ModelHandler:
    """One loaded artefact: the model returned by model_fn and the hooks resolved at load time."""

    model_dir: Path
    model: Any
    input_fn: Callable[[Any, str], Any]
    predict_fn: Callable[[Any, Any], Any]
    output_fn: Callable[[Any, str], Any]
    transform_fn: Callable[[Any, Any, str, str], Any] | None = None

    def run(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str, float, float, float]:
        """Run input_fn -> predict_fn -> output_fn on one request body.

        Args:
            body: the raw request body.
            content_type: the request's Content-Type, as sent.
            accept: the Accept to answer with (already defaulted).

        Returns:
            Response body, its content type, and the parse, predict and serialise seconds.

        Raises:
            ModelFailure: the status and message a SageMaker container would have answered with.
        """
        try:
            t0 = perf_counter()
            # The toolkit hands CSV and JSON bodies to input_fn as str, everything else as bytes.
            data: bytes | str = body
            if content_type.split(";", 1)[0].strip().lower() in c.UTF8_TYPES:
                try:
                    data = body.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ModelFailure(
                        400, f"request body is not valid UTF-8 ({exc.reason} at byte {exc.start})"
                    ) from exc
            if self.transform_fn is not None:
                # transform_fn does all three steps; its whole time is reported as predict time.
                t1 = t0
                result = self.transform_fn(self.model, data, content_type, accept)
                t2 = perf_counter()
            else:
                parsed = self.input_fn(data, content_type)
                t1 = perf_counter()
                prediction = self.predict_fn(parsed, self.model)
                t2 = perf_counter()
                result = self.output_fn(prediction, accept)
            out, out_type = result if isinstance(result, tuple) else (result, accept)
            t3 = perf_counter()
        except Exception as exc:
            raise from_hook_exception(exc) from exc
        if isinstance(out, str):
            out = out.encode("utf-8")
        elif isinstance(out, bytearray | memoryview):
            out = bytes(out)
        elif not isinstance(out, bytes):
            raise ModelFailure(500, f"output_fn returned {type(out).__name__}; expected str or bytes")
        return out, str(out_type), t1 - t0, t2 - t1, t3 - t2


def load_handler(model_dir: Path, program: str = c.DEFAULT_PROGRAM) -> ModelHandler:
    """Import `<model_dir>/code/<program>`, resolve its hooks and call model_fn(model_dir).

    Missing input/predict/output hooks fall back to the XGBoost container's defaults; model_fn has no
    default there, so neither here. transform_fn together with any of those three is refused, as the
    toolkit refuses it, at load time rather than per request.
    """
    model_dir = Path(model_dir).resolve()
    module = import_user_module(model_dir / c.CODE_DIR, program)
    model_fn = getattr(module, "model_fn", None)
    if model_fn is None:
        raise LoadError(
            f"{module.__file__} defines no model_fn (SageMaker's XGBoost container has no default)"
        )
    transform_fn = getattr(module, "transform_fn", None)
    split_hooks = [n for n in ("input_fn", "predict_fn", "output_fn") if hasattr(module, n)]
    if transform_fn is not None and split_hooks:
        raise LoadError(f"{module.__file__}: transform_fn cannot be combined with {', '.join(split_hooks)}")
    try:
        model = model_fn(str(model_dir))
    except Exception as exc:
        raise LoadError(f"model_fn({model_dir}) failed: {type(exc).__name__}: {exc}") from exc
    return ModelHandler(
        model_dir=model_dir,
        model=model,
        input_fn=getattr(module, "input_fn", defaults.default_input_fn),
        predict_fn=getattr(module, "predict_fn", defaults.default_predict_fn),
        output_fn=getattr(module, "output_fn", defaults.default_output_fn),
        transform_fn=transform_fn,
    )


def import_user_module(code_dir: Path, program: str) -> ModuleType:
    """Import the user module with its folder first on sys.path, isolated from other artefacts' code.

    Two variants (A/B) or several multi-model targets each ship their own `inference.py` and `features.py`.
    Each load gets a unique module name, and the sibling modules it imports are taken out of sys.modules
    afterwards, so the next artefact's `import features` loads its own copy instead of reusing this one.
    """
    path = code_dir / program
    if not path.is_file():
        raise LoadError(f"user module {path} not found (SAGEMAKER_PROGRAM={program})")
    siblings = {p.stem for p in code_dir.glob("*.py")} | {
        p.name for p in code_dir.iterdir() if (p / "__init__.py").is_file()
    }
    name = f"_serve_user_{next(_MODULE_IDS)}_{path.stem}"
    with _IMPORT_LOCK:
        stashed = _pop_modules(siblings)
        folder = str(code_dir)
        if folder in sys.path:
            sys.path.remove(folder)
        # Kept on sys.path afterwards (as the toolkit does) so imports made lazily inside hooks still resolve.
        sys.path.insert(0, folder)
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise LoadError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise LoadError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            _pop_modules(siblings)
            sys.modules.update(stashed)
    return module


def _pop_modules(names: set[str]) -> dict[str, ModuleType]:
    """Remove the named modules (and their submodules) from sys.modules, returning what was removed."""
    popped: dict[str, ModuleType] = {}
    for key in list(sys.modules):
        if key in names or key.split(".", 1)[0] in names:
            popped[key] = sys.modules.pop(key)
    return popped
