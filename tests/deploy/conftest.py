"""Fixtures for the deploy tools: real model artefacts, a local engine with registry state, its cleanup."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deploy.clients import Target
from deploy.endpoint import DeploySettings, load_settings
from model_code.train import CODE_FILES
from pipelines.local.client import LocalSageMaker
from pipelines.local.worker import pid_alive
from tests.serve.serve_helpers import RECORD, REPO, build_artefact, csv_line, make_tar

GROUP = "pdm-test"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:3.0-5"
SERVING_ENV = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}
CSV_RECORD = csv_line(RECORD)


@dataclass(frozen=True)
class Artefact:
    """A model.tar.gz and the score its model gives RECORD (so a test can tell which model answered)."""

    tar: bytes
    score: float


def _score(model_dir: Path) -> float:
    from model_code import inference

    model = inference.model_fn(model_dir)
    prediction = inference.predict_fn(inference.input_fn(CSV_RECORD, "text/csv"), model)
    return float(prediction.values.reshape(-1)[0])


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Artefact]:
    """Three real XGBoost artefacts laid out as train.py writes them, each scoring RECORD differently."""
    root = tmp_path_factory.mktemp("deploy-artefacts")
    code = [REPO / "model_code" / name for name in CODE_FILES]
    out: dict[str, Artefact] = {}
    for name, seed, rounds in (("v1", 1, 2), ("v2", 2, 6), ("v3", 3, 12)):
        model_dir = build_artefact(root / name, code, seed=seed, rounds=rounds)
        tar = make_tar(model_dir, root / f"{name}.tar.gz").read_bytes()
        out[name] = Artefact(tar, _score(model_dir))
    assert len({a.score for a in out.values()}) == 3, "the artefacts must be told apart by their scores"
    # A model whose model_fn fails at once: the server exits before it is healthy (no xgboost import).
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        source = b"def model_fn(model_dir):\n    raise RuntimeError('corrupt model')\n"
        info = tarfile.TarInfo("code/inference.py")
        info.size = len(source)
        archive.addfile(info, io.BytesIO(source))
    out["broken"] = Artefact(buffer.getvalue(), float("nan"))
    return out


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Target]:
    """The local engine on a fresh root; every server a test started is killed afterwards."""
    client = LocalSageMaker(root=tmp_path / ".mlops")
    yield Target("local", client)
    kill_servers(client)


def kill_servers(client: LocalSageMaker) -> None:
    for endpoint in client._backend.records.list_resources("endpoint"):
        pid = endpoint.extra.get("pid")
        if pid and pid != os.getpid() and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def register(
    client: Any, artefact: Artefact, status: str = "Approved", group: str = GROUP, key: str | None = None
) -> str:
    """A new version of `group` serving the artefact (stored under a key of its own); returns its ARN."""
    with contextlib.suppress(Exception):
        client.create_model_package_group(ModelPackageGroupName=group)
    uri = f"s3://bucket/models/{key or os.urandom(4).hex()}/model.tar.gz"
    client.store.put_bytes(uri, artefact.tar)
    return client.create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [{"Image": IMAGE, "ModelDataUrl": uri, "Environment": SERVING_ENV}],
            "SupportedContentTypes": ["text/csv", "application/json"],
            "SupportedResponseMIMETypes": ["text/csv", "application/json"],
        },
    )["ModelPackageArn"]


def dev_settings(**overrides: Any) -> DeploySettings:
    """One-instance dev endpoints with capture under s3://bucket/capture, the test group."""
    values = {
        "model_package_group": GROUP,
        "endpoint.production": False,
        "endpoint.instance_count": 1,
        "endpoint.data_capture.destination_s3_uri": "s3://bucket/capture",
        **overrides,
    }
    return load_settings(None, values)


def serving(client: Any, endpoint: str) -> dict[str, str]:
    """Variant -> ModelDataUrl of the model it serves now (what the endpoint's record points at)."""
    described = client.describe_endpoint(EndpointName=endpoint)
    config = client.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    out = {}
    for variant in config["ProductionVariants"]:
        model = client.describe_model(ModelName=variant["ModelName"])
        out[variant["VariantName"]] = model["PrimaryContainer"]["ModelDataUrl"]
    return out


def score(target: Target, endpoint: str, variant: str | None = None) -> tuple[float, str]:
    """Invoke with RECORD (CSV out) through deploy.endpoint.invoke; (score, invoked variant)."""
    from deploy.endpoint import invoke

    body, invoked, _ = invoke(target, endpoint, CSV_RECORD.encode(), "text/csv", "text/csv", variant)
    return float(body.decode().strip()), invoked
