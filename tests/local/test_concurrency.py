"""Runs started at once each finish correctly: separate workers, one records file, unique package versions."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.local.conftest import create, processing_step, put_text, steps_of, wait_for

MADE = {"Get": "Steps.Make.ProcessingOutputConfig.Outputs['model'].S3Output.S3Uri"}
WRITE = """
import os, pathlib, sys
base = pathlib.Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
out = base / "processing/output/model"
out.mkdir(parents=True, exist_ok=True)
(out / "model.tar.gz").write_bytes(b"not really a tarball")
"""


def test_two_executions_started_at_once_both_succeed(client: Any) -> None:
    put_text(client, "s3://bucket/code/write.py", WRITE)
    register = {
        "Name": "Register",
        "Type": "RegisterModel",
        "Arguments": {
            "ModelPackageGroupName": "shared-group",
            "InferenceSpecification": {
                "Containers": [
                    {
                        "Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
                        "ModelDataUrl": {
                            "Std:Join": {
                                "On": "/",
                                "Values": [
                                    MADE,
                                    "model.tar.gz",
                                ],
                            }
                        },
                    }
                ],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["text/csv"],
            },
        },
    }
    create(
        client, "twice", [processing_step("Make", "s3://bucket/code/write.py", outputs=["model"]), register]
    )
    with ThreadPoolExecutor(2) as pool:
        arns = list(
            pool.map(
                lambda _: client.start_pipeline_execution(PipelineName="twice")["PipelineExecutionArn"],
                range(2),
            )
        )
    assert len(set(arns)) == 2
    workers = {client._backend.records.get_execution(a)["worker_pid"] for a in arns}
    assert len(workers) == 2  # one detached worker per execution
    for arn in arns:
        assert wait_for(client, arn)["PipelineExecutionStatus"] == "Succeeded", steps_of(client, arn)
    packages = client.list_model_packages(ModelPackageGroupName="shared-group")["ModelPackageSummaryList"]
    assert sorted(p["ModelPackageVersion"] for p in packages) == [1, 2]
    registered = {steps_of(client, a)["Register"]["Metadata"]["RegisterModel"]["Arn"] for a in arns}
    assert registered == {p["ModelPackageArn"] for p in packages}
    # Each execution registered its own job's output.
    for arn in arns:
        package = client.describe_model_package(
            ModelPackageName=steps_of(client, arn)["Register"]["Metadata"]["RegisterModel"]["Arn"]
        )
        assert arn.rsplit("/", 1)[-1] in package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]


def test_concurrent_registrations_get_distinct_versions(client: Any) -> None:
    client.create_model_package_group(ModelPackageGroupName="g")
    spec = {
        "Containers": [{"Image": "img", "ModelDataUrl": "s3://b/m.tar.gz"}],
        "SupportedContentTypes": ["text/csv"],
        "SupportedResponseMIMETypes": ["text/csv"],
    }
    with ThreadPoolExecutor(8) as pool:
        arns = list(
            pool.map(
                lambda _: client.create_model_package(ModelPackageGroupName="g", InferenceSpecification=spec)[
                    "ModelPackageArn"
                ],
                range(16),
            )
        )
    assert sorted(int(a.rsplit("/", 1)[-1]) for a in arns) == list(range(1, 17))
