"""The `sagemaker` target offline: moto for pipelines and S3, botocore Stubber where moto has no API."""

from __future__ import annotations

import io
import json
import tarfile
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from rich.console import Console

from pipelines import run
from pipelines.follow import follow

BUCKET = "pdm-test-artifacts"
ROLE = "arn:aws:iam::123456789012:role/pdm-pipeline"


@pytest.fixture
def aws(fake_aws_credentials: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PDM_BUCKET", BUCKET)
    monkeypatch.setenv("PDM_ROLE_ARN", ROLE)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield boto3.Session(region_name="us-east-1")


def test_upserts_starts_with_overrides_and_publishes_code(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run.main(
        [
            "--target",
            "sagemaker",
            "--no-wait",
            "--param",
            "GateThreshold=0.9",
            "--param",
            "use_spot=false",
            "--param",
            "data.builtin_rows=200",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    sm, s3 = aws.client("sagemaker"), aws.client("s3")
    pipeline = sm.describe_pipeline(PipelineName="pdm-mlops")
    definition = json.loads(pipeline["PipelineDefinition"])
    assert pipeline["RoleArn"] == ROLE
    train = next(s for s in definition["Steps"] if s["Name"] == "Train")
    assert not train["Arguments"].get("EnableManagedSpotTraining")  # compiled per run
    arn = next(line.split()[-1] for line in out.splitlines() if line.startswith("Started "))
    params = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)["PipelineParameters"]
    assert {"Name": "GateThreshold", "Value": "0.9"} in params
    assert sm.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionArn"] == arn
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    code_uri = train["Arguments"]["HyperParameters"]["sagemaker_submit_directory"]
    code_key = code_uri.split(f"s3://{BUCKET}/", 1)[1]
    assert code_key in keys
    body = s3.get_object(Bucket=BUCKET, Key=code_key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert {"train.py", "features.py", "inference.py", "formatting.py"} <= set(tar.getnames())
    assert "pdm-mlops/data/builtin/200-rows-seed-42/data.csv" in keys

    # A second run updates the same pipeline instead of failing on "already exists".
    assert run.main(["--target", "sagemaker", "--no-wait", "--param", "evaluation.threshold=0.85"]) == 0
    updated = json.loads(sm.describe_pipeline(PipelineName="pdm-mlops")["PipelineDefinition"])
    gate_threshold = next(p for p in updated["Parameters"] if p["Name"] == "GateThreshold")
    assert gate_threshold["DefaultValue"] == 0.85
    assert len(sm.list_pipeline_executions(PipelineName="pdm-mlops")["PipelineExecutionSummaries"]) == 2


def test_unknown_pipeline_parameter_is_a_usage_error(aws: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--target", "sagemaker", "--no-wait", "--param", "GateTreshold=0.9"]) == 2
    assert "GateTreshold" in capsys.readouterr().err


def test_without_credentials_one_line_and_exit_3(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    assert run.main(["--target", "sagemaker", "--wait"]) == 3
    captured = capsys.readouterr()
    assert "no AWS credentials" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert len(captured.err.strip().splitlines()) == 1


def test_follow_polls_until_terminal_with_exact_requests(fake_aws_credentials: None) -> None:
    client = boto3.client("sagemaker", region_name="us-east-1")
    arn = "arn:aws:sagemaker:us-east-1:123456789012:pipeline/pdm-mlops/execution/abc123"
    now = datetime(2026, 1, 1, tzinfo=UTC)
    describe = {"PipelineExecutionArn": arn}
    steps_request = {"PipelineExecutionArn": arn, "SortOrder": "Ascending"}
    with Stubber(client) as stub:
        stub.add_response(
            "describe_pipeline_execution",
            {"PipelineExecutionArn": arn, "PipelineExecutionStatus": "Executing"},
            describe,
        )
        stub.add_response(
            "list_pipeline_execution_steps",
            {
                "PipelineExecutionSteps": [
                    {"StepName": "Preprocess", "StepStatus": "Executing", "StartTime": now}
                ]
            },
            steps_request,
        )
        stub.add_response(
            "describe_pipeline_execution",
            {"PipelineExecutionArn": arn, "PipelineExecutionStatus": "Succeeded"},
            describe,
        )
        stub.add_response(
            "list_pipeline_execution_steps",
            {
                "PipelineExecutionSteps": [
                    {
                        "StepName": "Preprocess",
                        "StepStatus": "Succeeded",
                        "StartTime": now,
                        "EndTime": now,
                        "CacheHitResult": {"SourcePipelineExecutionArn": arn},
                    }
                ]
            },
            steps_request,
        )
        console = Console(file=io.StringIO(), width=120)
        final = follow(client, arn, console, poll_seconds=0)
        stub.assert_no_pending_responses()
    assert final["PipelineExecutionStatus"] == "Succeeded"
    text = console.file.getvalue()
    assert "Preprocess" in text and "Succeeded" in text and "cache hit" in text


def test_champion_is_the_latest_approved_version(fake_aws_credentials: None) -> None:
    client = boto3.client("sagemaker", region_name="us-east-1")
    package_arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/pdm-mlops/3"
    with Stubber(client) as stub:
        stub.add_response(
            "list_model_packages",
            {
                "ModelPackageSummaryList": [
                    {
                        "ModelPackageArn": package_arn,
                        "ModelPackageGroupName": "pdm-mlops",
                        "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
                        "ModelPackageStatus": "Completed",
                    }
                ]
            },
            {
                "ModelPackageGroupName": "pdm-mlops",
                "ModelApprovalStatus": "Approved",
                "SortBy": "CreationTime",
                "SortOrder": "Descending",
                "MaxResults": 1,
            },
        )
        stub.add_response(
            "describe_model_package",
            {
                "ModelPackageName": "pdm-mlops",
                "ModelPackageArn": package_arn,
                "CreationTime": datetime(2026, 1, 1, tzinfo=UTC),
                "ModelPackageStatus": "Completed",
                "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
                "InferenceSpecification": {
                    "Containers": [{"Image": "img", "ModelDataUrl": "s3://b/m/model.tar.gz"}],
                    "SupportedContentTypes": ["text/csv"],
                    "SupportedResponseMIMETypes": ["text/csv"],
                },
            },
            {"ModelPackageName": package_arn},
        )
        assert run.champion_model_uri(client, "pdm-mlops") == "s3://b/m/model.tar.gz"
    with Stubber(client) as stub:
        stub.add_client_error("list_model_packages", "ValidationException", "group does not exist")
        assert run.champion_model_uri(client, "pdm-mlops") is None
