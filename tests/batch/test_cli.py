"""`python -m deploy.batch`: request shapes, SageMaker calls (botocore Stubber), exit codes, local runs."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from deploy import batch
from pipelines.local.api_common import validation_report
from pipelines.local.client import LocalSageMaker
from pipelines.local.store import ObjectStore
from tests.batch.conftest import MODEL_URI, RECORDS
from tests.serve.serve_helpers import REPO

ROLE = "arn:aws:iam::123456789012:role/pdm-batch"
PACKAGE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/pdm-mlops/3"
XGBOOST = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:3.0-5"


def stubbed_client() -> tuple[Any, Stubber]:
    client = boto3.client(
        "sagemaker", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    return client, Stubber(client)


def cli(*extra: str) -> list[str]:
    return ["--input", "s3://data/in/", "--output", "s3://data/out/", "--job-name", "job-1", *extra]


def test_request_has_the_create_transform_job_shape() -> None:
    settings = batch.BatchSettings(concurrency=4, join_source="Input", input_filter="$[1:]")
    request = batch.transform_request(
        "job", "model", "s3://b/in/", "s3://b/out/", settings, "kms-out", "kms-vol"
    )
    assert validation_report("CreateTransformJob", request) is None
    assert request["TransformInput"]["SplitType"] == "Line" and request["BatchStrategy"] == "MultiRecord"
    assert request["MaxConcurrentTransforms"] == 4 and request["MaxPayloadInMB"] == 6
    assert request["DataProcessing"] == {"InputFilter": "$[1:]", "OutputFilter": "$", "JoinSource": "Input"}
    assert request["TransformOutput"]["KmsKeyId"] == "kms-out"
    assert request["TransformResources"]["VolumeKmsKeyId"] == "kms-vol"
    # Unset concurrency is left to the container (SageMaker asks its /execution-parameters).
    assert "MaxConcurrentTransforms" not in batch.transform_request(
        "j", "m", "s3://b/i", "s3://b/o", batch.BatchSettings()
    )


def test_sagemaker_target_creates_model_then_job(fake_aws_credentials: None) -> None:
    client, stub = stubbed_client()
    stub.add_response(
        "create_model",
        {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/job-1"},
        {"ModelName": "job-1", "ExecutionRoleArn": ROLE, "PrimaryContainer": {"ModelPackageName": PACKAGE}},
    )
    stub.add_response(
        "create_transform_job",
        {"TransformJobArn": "arn:aws:sagemaker:us-east-1:123456789012:transform-job/job-1"},
        {
            "TransformJobName": "job-1",
            "ModelName": "job-1",
            "BatchStrategy": "MultiRecord",
            "MaxPayloadInMB": 2,
            "MaxConcurrentTransforms": 8,
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://data/in/"}},
                "ContentType": "text/csv",
                "CompressionType": "None",
                "SplitType": "Line",
            },
            "TransformOutput": {
                "S3OutputPath": "s3://data/out/",
                "Accept": "text/csv",
                "AssembleWith": "Line",
            },
            "TransformResources": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 2},
            "DataProcessing": {"InputFilter": "$[1:]", "OutputFilter": "$[0,-1]", "JoinSource": "Input"},
        },
    )
    argv = cli(
        "--target", "sagemaker", "--model-package", PACKAGE, "--role-arn", ROLE, "--max-payload-mb", "2",
        "--concurrency", "8", "--instance-type", "ml.c5.xlarge", "--instance-count", "2",
        "--join-source", "Input", "--input-filter", "$[1:]", "--output-filter", "$[0,-1]",
    )  # fmt: skip
    with stub:
        assert batch.main(argv, client_factory=lambda region: client) == batch.EXIT_OK
        stub.assert_no_pending_responses()


def test_sagemaker_model_data_uses_the_xgboost_image_and_waits(
    fake_aws_credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    client, stub = stubbed_client()
    stub.add_response(
        "create_model",
        {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/job-1"},
        {
            "ModelName": "job-1",
            "ExecutionRoleArn": ROLE,
            "PrimaryContainer": {
                "Image": XGBOOST,
                "ModelDataUrl": "s3://models/model.tar.gz",
                "Environment": batch.SERVING_ENV,
            },
        },
    )
    keys = ["TransformJobName", "ModelName", "BatchStrategy", "MaxPayloadInMB", "TransformInput"]
    keys += ["TransformOutput", "TransformResources", "DataProcessing"]  # no MaxConcurrentTransforms
    stub.add_response("create_transform_job", {"TransformJobArn": "arn:job"}, dict.fromkeys(keys, ANY))
    stub.add_response("describe_transform_job", _described("InProgress"), {"TransformJobName": "job-1"})
    stub.add_response(
        "describe_transform_job", _described("Failed", "ClientError: bad row"), {"TransformJobName": "job-1"}
    )
    with stub, pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch.time, "sleep", lambda seconds: None)
        code = batch.main(
            cli(
                "--target",
                "sagemaker",
                "--model-data",
                "s3://models/model.tar.gz",
                "--role-arn",
                ROLE,
                "--wait",
            ),
            client_factory=lambda region: client,
        )
    assert code == batch.EXIT_FAILED
    assert "Failed: ClientError: bad row" in capsys.readouterr().out


def _described(status: str, reason: str | None = None) -> dict[str, Any]:
    now = "2026-01-01T00:00:00Z"
    described: dict[str, Any] = {
        "TransformJobName": "job-1",
        "TransformJobArn": "arn:job",
        "TransformJobStatus": status,
        "ModelName": "job-1",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://data/in/"}}
        },
        "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
        "CreationTime": now,
    }
    if reason:
        described["FailureReason"] = reason
    return described


def test_sagemaker_refusal_is_one_line_and_exit_1(
    fake_aws_credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    client, stub = stubbed_client()
    stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/job-1"})
    stub.add_client_error("create_transform_job", "ValidationException", "MaxPayloadInMB too large for model")
    with stub:
        code = batch.main(
            cli("--target", "sagemaker", "--model-package", PACKAGE, "--role-arn", ROLE), lambda r: client
        )
    err = capsys.readouterr().err
    assert code == batch.EXIT_FAILED and err.count("\n") == 1 and "ValidationException" in err


def test_sagemaker_without_credentials_exits_3_in_one_line(tmp_path: Path) -> None:
    # tests/conftest.py already points the AWS config files at /dev/null and disables instance metadata.
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    result = subprocess.run(
        [sys.executable, "-m", "deploy.batch", "--target", "sagemaker", "--model-package", PACKAGE, *cli()],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == batch.EXIT_TARGET, result.stderr
    assert result.stderr.count("\n") == 1 and "credentials" in result.stderr and result.stdout == ""


def test_placeholder_role_is_refused_for_sagemaker(fake_aws_credentials: None) -> None:
    client, stub = stubbed_client()
    with stub:  # no response queued: any call would fail the test
        assert batch.main(cli("--target", "sagemaker", "--model-package", PACKAGE), lambda r: client) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--concurrency", "20"], "must not exceed 100 MB"),
        (["--max-payload-mb", "101"], "between 0 and 100"),
        (["--split-type", "None", "--strategy", "MultiRecord"], "needs --split-type Line"),
        (["--input-filter", "$..x"], "--input-filter"),
        (["--output-filter", "$[" + "1," * 40 + "2]"], "longer than 63"),
    ],
)
def test_bad_settings_exit_2_naming_the_option(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = batch.main(cli("--model-data", MODEL_URI, "--root", str(tmp_path), *extra))
    assert code == batch.EXIT_USAGE and message in capsys.readouterr().err


def test_inputs_must_be_s3_uris(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "--model-data",
        MODEL_URI,
        "--input",
        "/data/in",
        "--output",
        "s3://b/o/",
        "--root",
        str(tmp_path),
    ]
    assert batch.main(argv) == batch.EXIT_USAGE and "--input must be an s3:// URI" in capsys.readouterr().err


def expected_scores(model_dir: Path, records: bytes) -> list[str]:
    """What the artefact's own hooks answer for these records, one score per line."""
    sys.path.insert(0, str(model_dir / "code"))
    try:
        import importlib

        inference = importlib.import_module("inference")
        model = inference.model_fn(str(model_dir))
        body, _ = inference.output_fn(
            inference.predict_fn(inference.input_fn(records, "text/csv"), model), "text/csv"
        )
    finally:
        sys.path.remove(str(model_dir / "code"))
        sys.modules.pop("inference", None)
        sys.modules.pop("features", None)
    return body.splitlines()


def test_local_run_with_model_data_joins_input_and_scores(
    root: Path, artefact: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store = ObjectStore(root / "s3")
    store.put_bytes("s3://data/in/part-1.csv", RECORDS)
    store.put_bytes("s3://data/in/nested/part-2.csv", RECORDS[: RECORDS.index(b"\n") + 1])
    code = batch.main(cli("--model-data", MODEL_URI, "--root", str(root), "--join-source", "Input"))
    out = capsys.readouterr().out
    assert code == batch.EXIT_OK, out
    assert "job-1: Completed" in out and "log: " in out
    rows = store.get_bytes("s3://data/out/part-1.csv.out").decode().splitlines()
    scores = expected_scores(artefact[0], RECORDS)
    assert rows == [
        f"{record},{score}" for record, score in zip(RECORDS.decode().splitlines(), scores, strict=True)
    ]
    assert store.exists("s3://data/out/nested/part-2.csv.out")
    assert not (root / "batch" / "job-1").exists()  # the extracted model copy is removed
    assert (root / "logs" / "TransformJobs" / "job-1.log").is_file()


def register(root: Path, image: str = XGBOOST) -> str:
    """A model package of the artefact in the local registry under `root`; returns its ARN."""
    client = LocalSageMaker(root=root)
    if not client.list_model_package_groups()["ModelPackageGroupSummaryList"]:
        client.create_model_package_group(ModelPackageGroupName="pdm-mlops")
    container = {"Image": image, "ModelDataUrl": MODEL_URI, "Environment": batch.SERVING_ENV}
    return client.create_model_package(
        ModelPackageGroupName="pdm-mlops",
        InferenceSpecification={
            "Containers": [container],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
    )["ModelPackageArn"]


def test_local_run_with_a_registered_model_package(root: Path, artefact: tuple[Path, Path]) -> None:
    package = register(root)
    ObjectStore(root / "s3").put_bytes("s3://data/in/records.csv", RECORDS)
    assert batch.main(cli("--model-package", package, "--root", str(root))) == batch.EXIT_OK
    scores = ObjectStore(root / "s3").get_bytes("s3://data/out/records.csv.out").decode().splitlines()
    assert scores == expected_scores(artefact[0], RECORDS)


def test_local_target_refuses_an_image_it_cannot_run(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    package = register(root, image="123456789012.dkr.ecr.us-east-1.amazonaws.com/my-own-server:1")
    ObjectStore(root / "s3").put_bytes("s3://data/in/records.csv", RECORDS)
    assert batch.main(cli("--model-package", package, "--root", str(root))) == batch.EXIT_TARGET
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot run this job" in err and "my-own-server" in err


def test_local_unknown_package_and_failed_job(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = "arn:aws:sagemaker:us-east-1:000000000000:model-package/nope/1"
    assert batch.main(cli("--model-package", missing, "--root", str(root))) == batch.EXIT_USAGE
    assert "--model-package" in capsys.readouterr().err
    ObjectStore(root / "s3").put_bytes("s3://data/in/bad.csv", b"1,2,3\n")  # too few fields
    assert batch.main(cli("--model-data", MODEL_URI, "--root", str(root))) == batch.EXIT_FAILED
    out = capsys.readouterr().out
    assert "job-1: Failed: ClientError: bad.csv" in out and "expected 6" in out
    assert not ObjectStore(root / "s3").exists("s3://data/out/bad.csv.out")


def test_module_runs_as_a_command(root: Path) -> None:
    ObjectStore(root / "s3").put_bytes("s3://data/in/records.csv", RECORDS)
    result = subprocess.run(
        [sys.executable, "-m", "deploy.batch", "--model-data", MODEL_URI, "--root", str(root), *cli()],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert ObjectStore(root / "s3").get_bytes("s3://data/out/records.csv.out").count(b"\n") == 3
    assert io.StringIO(result.stdout).readline().startswith("transform job job-1: Completed in ")
