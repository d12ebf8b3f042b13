"""Real boto3 sagemaker-runtime against the server: InvokeEndpoint, its headers and modeled errors."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.serve.serve_helpers import ENDPOINT, RECORD, ServerProcess, csv_line


@pytest.fixture(scope="module")
def runtime(server: ServerProcess) -> Any:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=server.url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
        # One attempt: a retried 5xx would hide itself behind a later success.
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
    )


def test_invoke_endpoint_csv_with_custom_attributes(runtime: Any) -> None:
    response = runtime.invoke_endpoint(
        EndpointName=ENDPOINT,
        Body=csv_line(RECORD),
        ContentType="text/csv",
        Accept="text/csv",
        CustomAttributes="trace=abc-123",
        InferenceId="req-1",
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["ContentType"] == "text/csv"
    assert response["InvokedProductionVariant"] in {"A", "B"}
    assert response["CustomAttributes"] == "trace=abc-123"
    assert 0.0 <= float(response["Body"].read().decode()) <= 1.0


def test_invoke_endpoint_json_many_records(runtime: Any) -> None:
    response = runtime.invoke_endpoint(
        EndpointName=ENDPOINT, Body=json.dumps({"instances": [RECORD] * 4}), ContentType="application/json"
    )
    assert len(json.loads(response["Body"].read())["predictions"]) == 4


def test_target_variant_reaches_a_zero_weight_variant(runtime: Any) -> None:
    for _ in range(3):
        response = runtime.invoke_endpoint(
            EndpointName=ENDPOINT, Body=csv_line(RECORD), ContentType="text/csv", TargetVariant="Zero"
        )
        assert response["InvokedProductionVariant"] == "Zero"


def _error(runtime: Any, **kwargs: Any) -> ClientError:
    args = {"EndpointName": ENDPOINT, "Body": csv_line(RECORD), "ContentType": "text/csv", **kwargs}
    with pytest.raises(ClientError) as info:
        runtime.invoke_endpoint(**args)
    return info.value


def test_unknown_variant_is_validation_error(runtime: Any) -> None:
    error = _error(runtime, TargetVariant="Nope")
    assert isinstance(error, runtime.exceptions.ValidationError)
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "Nope" in error.response["Error"]["Message"]


def test_unknown_endpoint_is_validation_error(runtime: Any) -> None:
    error = _error(runtime, EndpointName="other-endpoint")
    assert error.response["Error"]["Code"] == "ValidationError"
    assert "other-endpoint" in error.response["Error"]["Message"]


def test_target_model_on_single_model_endpoint_is_validation_error(runtime: Any) -> None:
    assert _error(runtime, TargetModel="a.tar.gz").response["Error"]["Code"] == "ValidationError"


def test_bad_record_is_model_error_with_original_status(runtime: Any) -> None:
    error = _error(runtime, Body="298.1,308.6")
    assert isinstance(error, runtime.exceptions.ModelError)
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error.response["OriginalStatusCode"] == 400
    assert "fields" in error.response["OriginalMessage"]
    assert error.response["LogStreamArn"].startswith("arn:aws:logs:")
    assert error.response["ResponseMetadata"]["RequestId"]


def test_oversize_body_is_validation_error_413(runtime: Any) -> None:
    error = _error(runtime, Body=b"1" * (6291456 + 1))
    assert isinstance(error, runtime.exceptions.ValidationError)
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 413


def test_payload_at_the_limit_is_accepted_by_the_front(runtime: Any) -> None:
    # Exactly 6291456 bytes passes the size check and reaches the model, which rejects the content (424).
    error = _error(runtime, Body=b"1" * 6291456)
    assert error.response["Error"]["Code"] == "ModelError"


def test_overlong_custom_attributes_are_validation_error(runtime: Any) -> None:
    assert _error(runtime, CustomAttributes="x" * 1025).response["Error"]["Code"] == "ValidationError"
