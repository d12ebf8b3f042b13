"""Exact requests (Stubber) of `stop` deleting the rollback alarms, a failed deploy removing what it created,
and CreateModel/CreateEndpointConfig carrying the pipeline config's VPC, network isolation and KMS keys."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.stub import Stubber

from deploy import endpoint as ep
from deploy.clients import OperationFailed, run_cli
from deploy.endpoint import SINGLE_VARIANT, VariantSpec
from tests.deploy.test_aws_requests import (
    CAPTURE,
    KMS,
    PACKAGE,
    ROLE,
    described_config,
    described_endpoint,
    expect_model_and_config,
    instance_variant,
    settings,
    target_of,
)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Stubber]]:
    """Stubbed SageMaker, CloudWatch and Application Auto Scaling clients; names get a fixed suffix."""
    monkeypatch.setattr(ep, "unique_suffix", lambda: "sfx")
    stubs = {}
    for service in ("sagemaker", "cloudwatch", "application-autoscaling"):
        client = boto3.client(
            service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        stubs[service] = Stubber(client)
        stubs[service].activate()
    yield stubs
    for stub in stubs.values():
        stub.assert_no_pending_responses()
        stub.deactivate()


SUBNETS = ["subnet-0a1b2c3d", "subnet-4e5f6a7b"]
GROUPS = ["sg-0123456789abcdef0"]
VOLUME_KMS = "arn:aws:kms:us-east-1:123456789012:key/volume-key"
NOT_FOUND = 'Could not find endpoint "ep".'


def alarm(name: str, endpoint: str, variant: str, namespace: str = "AWS/SageMaker") -> dict[str, Any]:
    return {
        "AlarmName": name,
        "Namespace": namespace,
        "MetricName": "Invocation5XXErrors",
        "Dimensions": [
            {"Name": "EndpointName", "Value": endpoint},
            {"Name": "VariantName", "Value": variant},
        ],
    }


def expect_alarm_cleanup(cw: Stubber) -> None:
    """Two pages under the prefix `ep-`: ours (both variants) mixed with alarms that are not ours."""
    cw.add_response(
        "describe_alarms",
        {
            "MetricAlarms": [
                alarm("ep-A-5xx-errors", "ep", "A"),
                alarm("ep-A-p99-model-latency", "ep", "A"),
                alarm("ep-2-A-5xx-errors", "ep-2", "A"),  # another endpoint whose name starts with ep-
                alarm("ep-A-high-cpu", "ep", "A"),  # someone else's alarm on our endpoint
                alarm("ep-B-5xx-errors", "ep", "B", namespace="Custom"),  # same name, not SageMaker's
            ],
            "NextToken": "page-2",
        },
        {"AlarmNamePrefix": "ep-"},
    )
    cw.add_response(
        "describe_alarms",
        {"MetricAlarms": [alarm("ep-B-p99-model-latency", "ep", "B")]},
        {"AlarmNamePrefix": "ep-", "NextToken": "page-2"},
    )
    cw.add_response(
        "delete_alarms",
        {},
        {"AlarmNames": ["ep-A-5xx-errors", "ep-A-p99-model-latency", "ep-B-p99-model-latency"]},
    )


def test_stop_on_aws_deletes_the_rollback_alarms_deploy_created_and_no_others(
    aws: dict[str, Stubber],
) -> None:
    aws["sagemaker"].add_response("delete_endpoint", {}, {"EndpointName": "ep"})
    expect_alarm_cleanup(aws["cloudwatch"])
    out = io.StringIO()
    assert ep.main_with_target(["stop", "ep"], target_of(aws), out) == 0
    assert out.getvalue().splitlines() == [
        "deleted alarms ep-A-5xx-errors, ep-A-p99-model-latency, ep-B-p99-model-latency",
        "deleted endpoint ep",
    ]


def test_stop_of_an_endpoint_already_gone_still_deletes_its_alarms_and_exits_1(
    aws: dict[str, Stubber], capsys: pytest.CaptureFixture[str]
) -> None:
    aws["sagemaker"].add_client_error(
        "delete_endpoint", "ValidationException", NOT_FOUND, expected_params={"EndpointName": "ep"}
    )
    expect_alarm_cleanup(aws["cloudwatch"])
    assert ep.main_with_target(["stop", "ep"], target_of(aws), io.StringIO()) == 1
    assert capsys.readouterr().err.startswith("error: DeleteEndpoint: ValidationException: Could not find")


def expect_create(sm: Stubber) -> None:
    expect_model_and_config(
        sm, instance_variant("ep-AllTraffic-v3-sfx"), KmsKeyId=KMS, DataCaptureConfig=CAPTURE
    )
    sm.add_client_error(
        "describe_endpoint", "ValidationException", NOT_FOUND, expected_params={"EndpointName": "ep"}
    )


def expect_removal(sm: Stubber) -> None:
    sm.add_response("delete_endpoint_config", {}, {"EndpointConfigName": "ep-sfx"})
    sm.add_response("delete_model", {}, {"ModelName": "ep-AllTraffic-v3-sfx"})


def test_a_refused_create_endpoint_removes_the_model_and_config_it_created(aws: dict[str, Stubber]) -> None:
    sm = aws["sagemaker"]
    expect_create(sm)
    sm.add_client_error(
        "create_endpoint",
        "ResourceLimitExceeded",
        "The account-level service limit 'ml.m5.large for endpoint usage' is 0 Instances.",
        expected_params={"EndpointName": "ep", "EndpointConfigName": "ep-sfx"},
    )
    sm.add_client_error(
        "describe_endpoint", "ValidationException", NOT_FOUND, expected_params={"EndpointName": "ep"}
    )
    expect_removal(sm)
    err = io.StringIO()
    spec = [VariantSpec(SINGLE_VARIANT, PACKAGE)]
    code = run_cli(lambda: ep.deploy(target_of(aws), "ep", spec, settings(), out=io.StringIO()) and 0, err)
    assert code == 1
    assert err.getvalue() == (
        "error: CreateEndpoint: ResourceLimitExceeded: The account-level service limit 'ml.m5.large for "
        "endpoint usage' is 0 Instances.; removed what this deploy created: endpoint config ep-sfx, "
        "model ep-AllTraffic-v3-sfx\n"
    )


def test_a_new_endpoint_that_ends_failed_is_removed_with_its_model_and_config(
    aws: dict[str, Stubber],
) -> None:
    sm = aws["sagemaker"]
    expect_create(sm)
    sm.add_response(
        "create_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep"}, None
    )
    failed = described_endpoint(
        "ep-sfx", status="Failed", FailureReason="The primary container did not pass the ping health check."
    )
    for _ in range(3):  # the waiter's poll (Failed stops it), wait_in_service's describe, the cleanup's
        sm.add_response("describe_endpoint", failed, {"EndpointName": "ep"})
    sm.add_response("delete_endpoint", {}, {"EndpointName": "ep"})
    expect_removal(sm)
    with pytest.raises(OperationFailed) as raised:
        ep.deploy(target_of(aws), "ep", [VariantSpec(SINGLE_VARIANT, PACKAGE)], settings(), out=io.StringIO())
    assert str(raised.value) == (
        "endpoint ep is Failed: The primary container did not pass the ping health check.; removed what this "
        "deploy created: the failed endpoint ep, endpoint config ep-sfx, model ep-AllTraffic-v3-sfx"
    )


def test_a_failure_after_the_endpoint_serves_the_new_config_removes_nothing(aws: dict[str, Stubber]) -> None:
    sm = aws["sagemaker"]
    expect_create(sm)
    sm.add_response(
        "create_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep"}, None
    )
    for _ in range(2):
        sm.add_response("describe_endpoint", described_endpoint("ep-sfx"), {"EndpointName": "ep"})
    aws["application-autoscaling"].add_client_error("register_scalable_target", "ValidationException", "bad")
    sm.add_response("describe_endpoint", described_endpoint("ep-sfx"), {"EndpointName": "ep"})
    with pytest.raises(OperationFailed, match=r"left model ep-AllTraffic-v3-sfx, endpoint config ep-sfx \("):
        ep.deploy(target_of(aws), "ep", [VariantSpec(SINGLE_VARIANT, PACKAGE)], settings(), out=io.StringIO())


def pipeline_config(tmp_path: Path, **security: Any) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"security": security}), encoding="utf-8")
    return path


def test_models_and_configs_get_the_pipeline_configs_vpc_isolation_and_kms(
    aws: dict[str, Stubber], tmp_path: Path
) -> None:
    config = pipeline_config(
        tmp_path,
        subnets=SUBNETS,
        security_group_ids=GROUPS,
        enable_network_isolation=True,
        kms_key_id=KMS,
        volume_kms_key_id=VOLUME_KMS,
    )
    argv = ["deploy", "ep", "--config", str(config), "--role-arn", ROLE, "--capture-percent", "25"]
    argv += ["--capture-uri", "s3://artifacts/pdm-mlops/capture", "--no-wait"]
    chosen = ep.settings_from_args(ep._parser().parse_args(argv))
    sm = aws["sagemaker"]
    sm.add_response(
        "create_model",
        {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/ep-alltraffic-v3-sfx"},
        {
            "ModelName": "ep-AllTraffic-v3-sfx",
            "PrimaryContainer": {"ModelPackageName": PACKAGE},
            "ExecutionRoleArn": ROLE,
            "VpcConfig": {"Subnets": SUBNETS, "SecurityGroupIds": GROUPS},
            "EnableNetworkIsolation": True,
        },
    )
    variant = instance_variant("ep-AllTraffic-v3-sfx")
    sm.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/ep-sfx"},
        # The volume key is security.volume_kms_key_id, captured data uses security.kms_key_id (as the
        # pipeline's deploy step does).
        {"EndpointConfigName": "ep-sfx", "ProductionVariants": [variant], "KmsKeyId": VOLUME_KMS,
         "DataCaptureConfig": CAPTURE},
    )  # fmt: skip
    sm.add_response(
        "describe_endpoint_config", described_config("ep-sfx", [variant]), {"EndpointConfigName": "ep-sfx"}
    )
    sm.add_client_error("describe_endpoint", "ValidationException", NOT_FOUND)
    sm.add_response(
        "create_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep"}
    )
    sm.add_response(
        "describe_endpoint", described_endpoint("ep-sfx", status="Creating"), {"EndpointName": "ep"}
    )
    ep.deploy(
        target_of(aws), "ep", [VariantSpec(SINGLE_VARIANT, PACKAGE)], chosen, wait=False, out=io.StringIO()
    )


@pytest.mark.parametrize(
    "security",
    [{"subnets": SUBNETS}, {"security_group_ids": GROUPS}],
    ids=["subnets-only", "security-groups-only"],
)
def test_a_half_configured_vpc_is_a_usage_error_before_any_call(
    aws: dict[str, Stubber], tmp_path: Path, security: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config = pipeline_config(tmp_path, **security)
    argv = ["deploy", "ep", "--config", str(config), "--role-arn", ROLE, "--version", "3"]
    assert ep.main_with_target(argv, target_of(aws), io.StringIO()) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "subnets and security_group_ids must be set together" in error
    # The same check on settings built another way (a deploy settings file's own `security` section).
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump({"security": security}), encoding="utf-8")
    with pytest.raises(ep.UsageError, match="subnets and security_group_ids must be set together"):
        ep.load_settings(path)
    half = ep.SecurityConfig.model_construct(subnets=SUBNETS, security_group_ids=[])
    with pytest.raises(ep.UsageError, match="must be set together"):
        ep.model_request("m", PACKAGE, ROLE, half)
