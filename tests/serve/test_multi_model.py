"""Multi-model endpoint: TargetModel loaded on first use, shared concurrent loads, LRU eviction."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from deploy.serve.metrics import parse_prometheus
from tests.serve.serve_helpers import RECORD, ServerProcess, csv_line

TARGETS = ["a.tar.gz", "b.tar.gz", "nested/c.tar.gz", "d.tar.gz"]


@pytest.fixture(scope="module")
def mme(tmp_path_factory: pytest.TempPathFactory, model_tar: Path) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("mme")
    root = tmp / "models"
    for target in TARGETS:
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(model_tar, root / target)
    (root / "broken.tar.gz").write_bytes(b"not a tarball")
    (tmp / "outside.tar.gz").write_bytes(model_tar.read_bytes())
    config = {
        "endpoint_name": "pdm-mme",
        "variants": [{"name": "AllTraffic", "weight": 1.0}],
        "multi_model": {"model_root": str(root), "cache_size": 2},
    }
    proc = ServerProcess.from_config(tmp, config)
    yield proc
    proc.stop()


def invoke(client: httpx.Client, target: str | None) -> httpx.Response:
    headers = {"content-type": "text/csv", "accept": "text/csv"}
    if target is not None:
        headers["x-amzn-sagemaker-target-model"] = target
    return client.post("/endpoints/pdm-mme/invocations", content=csv_line(RECORD), headers=headers)


def loads(client: httpx.Client) -> tuple[float, float, float]:
    samples = parse_prometheus(client.get("/metrics").text)
    by_name = {name: value for (name, _), value in samples.items()}
    return (
        by_name["serve_model_loads_total"],
        by_name["serve_model_evictions_total"],
        by_name["serve_models_loaded"],
    )


def test_load_on_first_use_and_lru_eviction(mme: ServerProcess) -> None:
    with httpx.Client(base_url=mme.url, timeout=30) as client:
        assert loads(client) == (0, 0, 0), "nothing is loaded before the first request"
        steps = [  # (target, loads, evictions) after the request; cache holds 2
            ("a.tar.gz", 1, 0),
            ("b.tar.gz", 2, 0),
            ("a.tar.gz", 2, 0),  # hit: a becomes most recently used
            ("nested/c.tar.gz", 3, 1),  # evicts b, the least recently used
            ("a.tar.gz", 3, 1),  # still cached
            ("b.tar.gz", 4, 2),  # reloaded, evicts c
        ]
        for target, n_loads, n_evictions in steps:
            response = invoke(client, target)
            assert response.status_code == 200, response.text
            assert 0.0 <= float(response.text) <= 1.0
            assert loads(client) == (n_loads, n_evictions, 2 if n_loads > 1 else 1), target


def test_concurrent_first_requests_share_one_load(mme: ServerProcess) -> None:
    with httpx.Client(base_url=mme.url, timeout=30) as client:
        before = loads(client)[0]

        def one(_: int) -> int:
            with httpx.Client(base_url=mme.url, timeout=30) as own:
                return invoke(own, "d.tar.gz").status_code

        with ThreadPoolExecutor(6) as pool:
            assert list(pool.map(one, range(6))) == [200] * 6
        assert loads(client)[0] == before + 1


@pytest.mark.parametrize(
    ("target", "status"),
    [
        (None, 400),  # TargetModel is required on a multi-model endpoint
        ("missing.tar.gz", 400),
        ("../outside.tar.gz", 400),
        ("/etc/passwd", 400),
        ("a.zip", 400),
        ("broken.tar.gz", 424),  # the artefact itself is bad: the model's failure, not the request's
    ],
)
def test_bad_targets_are_4xx(mme: ServerProcess, target: str | None, status: int) -> None:
    with httpx.Client(base_url=mme.url, timeout=30) as client:
        response = invoke(client, target)
        assert response.status_code == status, response.text
        assert response.json()["message"]
        assert client.get("/ping").status_code == 200


def test_boto3_target_model(mme: ServerProcess) -> None:
    runtime: Any = boto3.client(
        "sagemaker-runtime",
        endpoint_url=mme.url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    response = runtime.invoke_endpoint(
        EndpointName="pdm-mme", TargetModel="a.tar.gz", Body=csv_line(RECORD), ContentType="text/csv"
    )
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert "predictions" in response["Body"].read().decode()
    with pytest.raises(ClientError) as info:
        runtime.invoke_endpoint(
            EndpointName="pdm-mme", TargetModel="nope.tar.gz", Body=csv_line(RECORD), ContentType="text/csv"
        )
    assert info.value.response["Error"]["Code"] == "ValidationError"
