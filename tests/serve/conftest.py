"""Fixtures for the model server tests: one trained artefact per session and a shared endpoint server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from model_code.train import CODE_FILES
from tests.serve.serve_helpers import ENDPOINT, REPO, WEIGHTS, ServerProcess, build_artefact, make_tar


@pytest.fixture(scope="session")
def code_files() -> list[Path]:
    """The artefact's serving code, copied from model_code/ as train.py copies it into code/."""
    files = [REPO / "model_code" / name for name in CODE_FILES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        pytest.fail(f"serving code missing: {', '.join(missing)}")
    return files


@pytest.fixture(scope="session")
def artefact_root(tmp_path_factory: pytest.TempPathFactory, code_files: list[Path]) -> Path:
    root = tmp_path_factory.mktemp("artefacts")
    build_artefact(root / "model", code_files, seed=0)
    make_tar(root / "model", root / "model.tar.gz")
    return root


@pytest.fixture(scope="session")
def model_dir(artefact_root: Path) -> Path:
    """An extracted artefact: xgboost-model.json, feature_spec.json, code/inference.py, code/features.py."""
    return artefact_root / "model"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artefact whose hooks import nothing heavy: process tests start in a fraction of the time."""
    root = tmp_path_factory.mktemp("tiny") / "model"
    (root / "code").mkdir(parents=True)
    (root / "code" / "inference.py").write_text(
        "def model_fn(model_dir):\n    return 0.5\n"
        "def input_fn(body, content_type):\n    return body\n"
        "def predict_fn(data, model):\n    return model\n"
        "def output_fn(prediction, accept):\n    return f'{prediction}\\n', 'text/csv'\n"
    )
    return root


@pytest.fixture(scope="session")
def model_tar(artefact_root: Path) -> Path:
    return artefact_root / "model.tar.gz"


@pytest.fixture(scope="session")
def capture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("capture")


@pytest.fixture(scope="session")
def server(
    tmp_path_factory: pytest.TempPathFactory, model_dir: Path, capture_dir: Path
) -> Iterator[ServerProcess]:
    """The shared endpoint: three variants on one artefact, data capture of everything, seeded routing."""
    tmp = tmp_path_factory.mktemp("endpoint")
    config = {
        "endpoint_name": ENDPOINT,
        "variants": [{"name": n, "weight": w, "model_dir": str(model_dir)} for n, w in WEIGHTS.items()],
        "data_capture": {
            "enabled": True,
            "sampling_percentage": 100,
            "destination_dir": str(capture_dir),
            "capture_options": ["Input", "Output"],
        },
        "multi_model": None,
        "random_seed": 7,
    }
    proc = ServerProcess.from_config(tmp, config)
    yield proc
    proc.stop()


@pytest.fixture()
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
