"""Local A/B counters outlive server generations (promote, update) and sum the workers of each."""

from __future__ import annotations

import io
import tarfile

from deploy import abtest
from deploy.clients import Target
from deploy.endpoint import invoke
from pipelines.local.worker import pid_alive

# Hooks that import nothing heavy (servers start fast); the answer names the model, a body "fail" is a 4xx.
HOOKS = """
import os

def model_fn(model_dir):
    return open(os.path.join(model_dir, "name.txt")).read()

def input_fn(body, content_type):
    if body.strip() == "fail":
        raise ValueError("unreadable record")
    return body

def predict_fn(data, model):
    return model

def output_fn(prediction, accept):
    return prediction + "\\n", "text/csv"
"""
ROLE = "arn:aws:iam::000000000000:role/r"


def _model(target: Target, name: str, workers: int) -> None:
    """A model whose artefact answers its own name, served by `workers` worker processes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member, text in (("code/inference.py", HOOKS), ("name.txt", name)):
            data = text.encode()
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    uri = f"s3://bucket/models/{name}/model.tar.gz"
    target.sagemaker.store.put_bytes(uri, buffer.getvalue())
    target.sagemaker.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": "local",
            "ModelDataUrl": uri,
            "Environment": {"SAGEMAKER_MODEL_SERVER_WORKERS": str(workers)},
        },
    )


def _config(target: Target, name: str, models: dict[str, str]) -> None:
    target.sagemaker.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": variant,
                "ModelName": model,
                "InitialInstanceCount": 1,
                "InitialVariantWeight": 1.0,
            }
            for variant, model in models.items()
        ],
    )


def _call(target: Target, variant: str, times: int, body: bytes = b"1,2,3") -> None:
    for _ in range(times):
        try:
            answer, invoked, _ = invoke(target, "ab", body, "text/csv", "text/csv", variant)
        except Exception as exc:  # a ModelError from the runtime client for the "fail" body
            assert body == b"fail", exc
            continue
        assert invoked == variant and answer


def _counts(target: Target) -> dict[str, tuple[int, int]]:
    return {
        name: (int(row["invocations"]), int(row["errors_4xx"]))
        for name, row in abtest.counts(target, "ab").items()
    }


def test_counts_carry_over_promote_and_update_once_each(local: Target) -> None:
    client = local.sagemaker
    _model(local, "m1", workers=2)
    _model(local, "m2", workers=2)
    _config(local, "c1", {"A": "m1", "B": "m2"})
    client.create_endpoint(EndpointName="ab", EndpointConfigName="c1")
    first = client.local_endpoint(EndpointName="ab")
    metrics_dir = client.root / "endpoints" / "ab" / "metrics"
    assert len(list(metrics_dir.glob("*.json"))) == 2, "one counters file per worker"
    _call(local, "A", 4)
    _call(local, "B", 3)
    _call(local, "B", 1, b"fail")
    assert _counts(local) == {"A": (4, 0), "B": (4, 1)}

    # Promote: a new server generation; the old one stops, its counts stay in the totals.
    abtest.promote(local, "ab", "B", out=io.StringIO())
    second = client.local_endpoint(EndpointName="ab")
    assert second["generation"] == first["generation"] + 1 and not pid_alive(first["pid"])
    assert _counts(local) == {"A": (4, 0), "B": (4, 1)}
    _call(local, "B", 2)
    _call(local, "A", 1)
    assert _counts(local) == {"A": (5, 0), "B": (6, 1)}

    # An update to other models (B now on m3) starts generation 3: still no reset, no double count.
    _model(local, "m3", workers=1)
    _config(local, "c2", {"A": "m1", "B": "m3"})
    client.update_endpoint(EndpointName="ab", EndpointConfigName="c2")
    third = client.local_endpoint(EndpointName="ab")
    assert third["generation"] == second["generation"] + 1 and not pid_alive(second["pid"])
    _call(local, "B", 1)
    assert _counts(local) == {"A": (5, 0), "B": (7, 1)}

    # A new endpoint of the same name starts from zero.
    client.delete_endpoint(EndpointName="ab")
    client.create_endpoint(EndpointName="ab", EndpointConfigName="c2")
    assert _counts(local) == {"A": (0, 0), "B": (0, 0)}
