"""The artefact's inference hooks, imported the way SageMaker's inference toolkit imports them.

Why shared: both peers must run exactly the code our server runs (model_fn once, then input_fn ->
predict_fn -> output_fn per request), so the comparison measures the servers, not the models.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

MODEL_DIR_ENV = "BENCH_MODEL_DIR"
# The toolkit decodes these bodies to str before input_fn; anything else stays bytes.
TEXT_TYPES = ("text/csv", "application/json")


class Hooks:
    """model_fn's model plus the three request hooks of `<model_dir>/code/inference.py`."""

    def __init__(self, model_dir: Path) -> None:
        code = str(model_dir / "code")
        if code not in sys.path:
            sys.path.insert(0, code)  # the toolkit puts SAGEMAKER_SUBMIT_DIRECTORY on sys.path
        self.module: ModuleType = importlib.import_module("inference")
        self.model: Any = self.module.model_fn(str(model_dir))
        self.input_error: type[Exception] = getattr(self.module, "InputError", ValueError)

    def run(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        """input_fn -> predict_fn -> output_fn, as the toolkit's default transform_fn chains them."""
        data: bytes | str = body
        if content_type.split(";", 1)[0].strip().lower() in TEXT_TYPES:
            data = body.decode("utf-8")
        prediction = self.module.predict_fn(self.module.input_fn(data, content_type), self.model)
        result = self.module.output_fn(prediction, accept)
        out, out_type = result if isinstance(result, tuple) else (result, accept)
        return (out.encode("utf-8") if isinstance(out, str) else out), out_type


def from_environment() -> Hooks:
    """The hooks of the model dir named by BENCH_MODEL_DIR (set by the benchmark)."""
    return Hooks(Path(os.environ[MODEL_DIR_ENV]))
