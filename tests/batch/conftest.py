"""Fixtures for the batch tests: a small trained artefact (the real inference.py hooks) in a local store."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_code.train import CODE_FILES
from pipelines.local.store import ObjectStore
from tests.serve.serve_helpers import REPO, build_artefact, make_tar

MODEL_URI = "s3://bkt/model/model.tar.gz"
# Raw records in the artefact's raw column order (numeric columns, then `type`), no header.
RECORDS = b"298.1,308.6,1551.0,42.8,0.0,M\n300.2,310.1,1400.0,60.3,210.0,L\n299.0,309.5,1600.0,35.0,5.0,H\n"


@pytest.fixture(scope="session")
def artefact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model dir, model.tar.gz) trained as tests/serve trains it, with model_code's own hooks."""
    root = tmp_path_factory.mktemp("batch-artefact")
    code = [REPO / "model_code" / name for name in CODE_FILES]
    model_dir = build_artefact(root / "model", code, seed=1)
    return model_dir, make_tar(model_dir, root / "model.tar.gz")


@pytest.fixture
def root(tmp_path: Path, artefact: tuple[Path, Path]) -> Path:
    """A local engine root whose store holds the artefact at MODEL_URI."""
    engine = tmp_path / "mlops"
    ObjectStore(engine / "s3").put_file(MODEL_URI, artefact[1])
    return engine
