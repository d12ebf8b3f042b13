"""Exact AWS requests via Stubber, which also validates each against botocore's model as AWS would."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from deploy import abtest, autoscaling, registry
from deploy import endpoint as ep
from deploy.clients import OperationFailed, Target
from deploy.endpoint import SINGLE_VARIANT, VariantSpec, load_settings

ROLE = "arn:aws:iam::123456789012:role/pdm-sagemaker"
KMS = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
PACKAGE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/pdm-mlops/3"
NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
CAPTURE = {
    "EnableCapture": True,
    "InitialSamplingPercentage": 25,
    "DestinationS3Uri": "s3://artifacts/pdm-mlops/capture",
    "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    "CaptureContentTypeHeader": {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]},
    "KmsKeyId": KMS,
}


class Matches:
    """Equal to any string matching the pattern (for values with a timestamp in them)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(self.pattern, other) is not None

    def __repr__(self) -> str:
        return f"Matches({self.pattern!r})"


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


def target_of(stubs: dict[str, Stubber]) -> Target:
    return Target(
        "sagemaker",
        stubs["sagemaker"].client,
        clients={
            "cloudwatch": stubs["cloudwatch"].client,
            "application-autoscaling": stubs["application-autoscaling"].client,
        },
    )


def settings(**extra: Any) -> ep.DeploySettings:
    values = {
        "role_arn": ROLE,
        "endpoint.kms_key_id": KMS,
        "endpoint.data_capture.destination_s3_uri": "s3://artifacts/pdm-mlops/capture",
        "endpoint.data_capture.sampling_percentage": 25,
        **extra,
    }
    return load_settings(None, values)


def described_endpoint(config: str, status: str = "InService", **extra: Any) -> dict[str, Any]:
    return {
        "EndpointName": "ep",
        "EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep",
        "EndpointConfigName": config,
        "EndpointStatus": status,
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
        **extra,
    }


def described_config(name: str, variants: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "EndpointConfigName": name,
        "EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/{name}",
        "ProductionVariants": variants,
        "CreationTime": NOW,
    }


def instance_variant(model: str, instance_type: str = "ml.m5.large") -> dict[str, Any]:
    return {
        "VariantName": SINGLE_VARIANT,
        "ModelName": model,
        "InitialVariantWeight": 1.0,
        "InstanceType": instance_type,
        "InitialInstanceCount": 2,
    }


def expect_model_and_config(sm: Stubber, variant: dict[str, Any], **config: Any) -> None:
    sm.add_response(
        "create_model",
        {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/ep-alltraffic-v3-sfx"},
        {
            "ModelName": "ep-AllTraffic-v3-sfx",
            "PrimaryContainer": {"ModelPackageName": PACKAGE},
            "ExecutionRoleArn": ROLE,
        },
    )
    sm.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/ep-sfx"},
        {"EndpointConfigName": "ep-sfx", "ProductionVariants": [variant], **config},
    )
    sm.add_response(
        "describe_endpoint_config", described_config("ep-sfx", [variant]), {"EndpointConfigName": "ep-sfx"}
    )


def expect_wait(sm: Stubber, config: str) -> None:
    for _ in range(2):  # the waiter's poll, then the final describe
        sm.add_response("describe_endpoint", described_endpoint(config), {"EndpointName": "ep"})


def expect_autoscaling(aas: Stubber, variant: str = SINGLE_VARIANT, low: int = 2, high: int = 6) -> None:
    resource = f"endpoint/ep/variant/{variant}"
    aas.add_response(
        "register_scalable_target",
        {"ScalableTargetARN": "arn:aws:application-autoscaling:us-east-1:123456789012:scalable-target/x"},
        {
            "ServiceNamespace": "sagemaker",
            "ResourceId": resource,
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
            "MinCapacity": low,
            "MaxCapacity": high,
        },
    )
    aas.add_response(
        "put_scaling_policy",
        {"PolicyARN": "arn:aws:autoscaling:us-east-1:123456789012:scalingPolicy:x", "Alarms": []},
        {
            "PolicyName": f"ep-{variant}-invocations-per-instance",
            "ServiceNamespace": "sagemaker",
            "ResourceId": resource,
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": 100.0,
                "PredefinedMetricSpecification": {
                    "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                },
                "ScaleInCooldown": 300,
                "ScaleOutCooldown": 60,
            },
        },
    )


def test_create_builds_the_model_from_the_package_with_capture_kms_two_instances_and_autoscaling(
    aws: dict[str, Stubber],
) -> None:
    sm = aws["sagemaker"]
    expect_model_and_config(
        sm, instance_variant("ep-AllTraffic-v3-sfx"), KmsKeyId=KMS, DataCaptureConfig=CAPTURE
    )
    sm.add_client_error(
        "describe_endpoint",
        "ValidationException",
        'Could not find endpoint "ep".',
        expected_params={"EndpointName": "ep"},
    )
    sm.add_response(
        "create_endpoint",
        {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep"},
        {"EndpointName": "ep", "EndpointConfigName": "ep-sfx"},
    )
    expect_wait(sm, "ep-sfx")
    expect_autoscaling(aws["application-autoscaling"])
    described = ep.deploy(
        target_of(aws), "ep", [VariantSpec(SINGLE_VARIANT, PACKAGE)], settings(), out=io.StringIO()
    )
    assert described["EndpointStatus"] == "InService"


def test_update_is_a_canary_blue_green_that_rolls_back_on_5xx_and_p99_alarms(aws: dict[str, Stubber]) -> None:
    sm, cw = aws["sagemaker"], aws["cloudwatch"]
    expect_model_and_config(
        sm, instance_variant("ep-AllTraffic-v3-sfx"), KmsKeyId=KMS, DataCaptureConfig=CAPTURE
    )
    sm.add_response("describe_endpoint", described_endpoint("ep-old"), {"EndpointName": "ep"})
    dimensions = [{"Name": "EndpointName", "Value": "ep"}, {"Name": "VariantName", "Value": SINGLE_VARIANT}]
    common = {
        "Namespace": "AWS/SageMaker",
        "Dimensions": dimensions,
        "Period": 60,
        "EvaluationPeriods": 2,
        "TreatMissingData": "notBreaching",
    }
    cw.add_response(
        "put_metric_alarm",
        {},
        {
            "AlarmName": "ep-AllTraffic-5xx-errors",
            "AlarmDescription": "Rolls back a deployment of ep on 5XX errors of AllTraffic.",
            "MetricName": "Invocation5XXErrors",
            "Statistic": "Sum",
            "Threshold": 1.0,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            **common,
        },
    )
    cw.add_response(
        "put_metric_alarm",
        {},
        {
            "AlarmName": "ep-AllTraffic-p99-model-latency",
            "AlarmDescription": "Rolls back a deployment of ep on slow p99 of AllTraffic.",
            "MetricName": "ModelLatency",
            "ExtendedStatistic": "p99",
            "Threshold": 500000.0,  # 500 ms in ModelLatency's microseconds
            "ComparisonOperator": "GreaterThanThreshold",
            **common,
        },
    )
    sm.add_response(
        "describe_endpoint_config",
        described_config("ep-old", [instance_variant("ep-AllTraffic-v2-old")]),
        {"EndpointConfigName": "ep-old"},
    )
    sm.add_response(
        "update_endpoint",
        {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep"},
        {
            "EndpointName": "ep",
            "EndpointConfigName": "ep-sfx",
            "DeploymentConfig": {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "CANARY",
                        "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 1},
                        "WaitIntervalInSeconds": 300,
                    },
                    "TerminationWaitInSeconds": 300,
                    "MaximumExecutionTimeoutInSeconds": 3600,
                },
                "AutoRollbackConfiguration": {
                    "Alarms": [
                        {"AlarmName": "ep-AllTraffic-5xx-errors"},
                        {"AlarmName": "ep-AllTraffic-p99-model-latency"},
                    ]
                },
            },
        },
    )
    expect_wait(sm, "ep-sfx")
    expect_autoscaling(aws["application-autoscaling"])
    ep.deploy(target_of(aws), "ep", [VariantSpec(SINGLE_VARIANT, PACKAGE)], settings(), out=io.StringIO())


def test_an_instance_type_change_releases_autoscaling_and_an_alarm_rollback_is_reported(
    aws: dict[str, Stubber],
) -> None:
    sm, aas = aws["sagemaker"], aws["application-autoscaling"]
    new = instance_variant("ep-AllTraffic-v3-sfx", "ml.c5.xlarge")
    expect_model_and_config(sm, new, KmsKeyId=KMS, DataCaptureConfig=CAPTURE)
    sm.add_response("describe_endpoint", described_endpoint("ep-old"), {"EndpointName": "ep"})
    aws["cloudwatch"].add_response("put_metric_alarm", {}, None)
    aws["cloudwatch"].add_response("put_metric_alarm", {}, None)
    sm.add_response(
        "describe_endpoint_config",
        described_config("ep-old", [instance_variant("ep-AllTraffic-v2-old")]),
        {"EndpointConfigName": "ep-old"},
    )
    target = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": "endpoint/ep/variant/AllTraffic",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
    }
    aas.add_response(
        "describe_scalable_targets",
        {
            "ScalableTargets": [
                {**target, "MinCapacity": 2, "MaxCapacity": 6, "RoleARN": ROLE, "CreationTime": NOW}
            ]
        },
        {**{k: v for k, v in target.items() if k != "ResourceId"}, "ResourceIds": [target["ResourceId"]]},
    )
    aas.add_response(
        "delete_scaling_policy", {}, {"PolicyName": "ep-AllTraffic-invocations-per-instance", **target}
    )
    aas.add_response("deregister_scalable_target", {}, target)
    sm.add_response(
        "update_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep"}, None
    )
    # An alarm fired during the canary: SageMaker rolled back, the endpoint is InService on the old config.
    expect_wait(sm, "ep-old")
    # The model and config this deploy created serve nothing: removed (the endpoint has settled on ep-old).
    sm.add_response("describe_endpoint", described_endpoint("ep-old"), {"EndpointName": "ep"})
    sm.add_response("delete_endpoint_config", {}, {"EndpointConfigName": "ep-sfx"})
    sm.add_response("delete_model", {}, {"ModelName": "ep-AllTraffic-v3-sfx"})
    with pytest.raises(OperationFailed, match=r"did not move to ep-sfx.*keeps serving ep-old") as failed:
        ep.deploy(
            target_of(aws),
            "ep",
            [VariantSpec(SINGLE_VARIANT, PACKAGE)],
            settings(**{"endpoint.instance_type": "ml.c5.xlarge"}),
            out=io.StringIO(),
        )
    assert str(failed.value).endswith(
        "removed what this deploy created: endpoint config ep-sfx, model ep-AllTraffic-v3-sfx"
    )


def test_a_serverless_config_has_no_instances_kms_volume_or_capture(aws: dict[str, Stubber]) -> None:
    sm = aws["sagemaker"]
    variant = {
        "VariantName": SINGLE_VARIANT,
        "ModelName": "ep-AllTraffic-v3-sfx",
        "InitialVariantWeight": 1.0,
        "ServerlessConfig": {"MemorySizeInMB": 3072, "MaxConcurrency": 8},
    }
    expect_model_and_config(sm, variant)
    sm.add_client_error("describe_endpoint", "ValidationException", 'Could not find endpoint "ep".')
    sm.add_response(
        "create_endpoint", {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep"}, None
    )
    sm.add_response(
        "describe_endpoint", described_endpoint("ep-sfx", status="Creating"), {"EndpointName": "ep"}
    )
    serverless = settings(
        **{"endpoint.serverless.memory_size_mb": 3072, "endpoint.serverless.max_concurrency": 8}
    )
    assert serverless.endpoint.rollout.canary_size.type == "CAPACITY_PERCENT"  # no instances to count
    described = ep.deploy(
        target_of(aws),
        "ep",
        [VariantSpec(SINGLE_VARIANT, PACKAGE)],
        serverless,
        wait=False,
        out=io.StringIO(),
    )
    assert described["EndpointStatus"] == "Creating"


def test_autoscaling_cli_registers_each_variant_with_target_tracking(aws: dict[str, Stubber]) -> None:
    variants = [
        {"VariantName": name, "CurrentWeight": 0.5, "DesiredWeight": 0.5, "CurrentInstanceCount": 2}
        for name in ("A", "B")
    ]
    aws["sagemaker"].add_response(
        "describe_endpoint", described_endpoint("ep-sfx", ProductionVariants=variants), {"EndpointName": "ep"}
    )
    aas = aws["application-autoscaling"]
    for variant in ("A", "B"):
        resource = f"endpoint/ep/variant/{variant}"
        aas.add_response(
            "register_scalable_target",
            {},
            {
                "ServiceNamespace": "sagemaker",
                "ResourceId": resource,
                "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
                "MinCapacity": 3,
                "MaxCapacity": 10,
            },
        )
        aas.add_response(
            "put_scaling_policy",
            {"PolicyARN": "arn:x", "Alarms": []},
            {
                "PolicyName": f"ep-{variant}-invocations-per-instance",
                "ServiceNamespace": "sagemaker",
                "ResourceId": resource,
                "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": {
                    "TargetValue": 250.0,
                    "PredefinedMetricSpecification": {
                        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                    },
                    "ScaleInCooldown": 900,
                    "ScaleOutCooldown": 60,
                },
            },
        )
    argv = [
        "apply",
        "ep",
        "--min",
        "3",
        "--max",
        "10",
        "--target-invocations",
        "250",
        "--scale-in-cooldown",
        "900",
    ]
    out = io.StringIO()
    assert autoscaling.main(argv, target_of(aws), out) == 0
    assert "3..10 instances" in out.getvalue()
    assert autoscaling.main(["apply", "ep", "--min", "5", "--max", "4"], target_of(aws), out) == 2


def test_promote_sends_weight_one_to_the_winner_and_zero_to_the_rest(aws: dict[str, Stubber]) -> None:
    sm = aws["sagemaker"]

    def variants(a: float, b: float) -> list[dict[str, Any]]:
        return [
            {"VariantName": "champion", "CurrentWeight": a, "DesiredWeight": a},
            {"VariantName": "challenger", "CurrentWeight": b, "DesiredWeight": b},
        ]

    sm.add_response(
        "describe_endpoint",
        described_endpoint("ab", ProductionVariants=variants(0.9, 0.1)),
        {"EndpointName": "ep"},
    )
    sm.add_response(
        "update_endpoint_weights_and_capacities",
        {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep"},
        {
            "EndpointName": "ep",
            "DesiredWeightsAndCapacities": [
                {"VariantName": "champion", "DesiredWeight": 0.0},
                {"VariantName": "challenger", "DesiredWeight": 1.0},
            ],
        },
    )
    for _ in range(2):
        sm.add_response(
            "describe_endpoint", described_endpoint("ab", ProductionVariants=variants(0.0, 1.0)), None
        )
    assert abtest.main(["promote", "ep", "challenger"], target_of(aws), io.StringIO()) == 0


def test_counts_on_aws_sum_cloudwatch_per_variant(aws: dict[str, Stubber]) -> None:
    variants = [{"VariantName": "A"}, {"VariantName": "B"}]
    aws["sagemaker"].add_response(
        "describe_endpoint", described_endpoint("ab", ProductionVariants=variants), {"EndpointName": "ep"}
    )
    values = {"A": (100.0, 2.0, 1.0), "B": (40.0, 0.0, 3.0)}
    for variant in ("A", "B"):
        for metric, value in zip(
            ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors"), values[variant], strict=True
        ):
            aws["cloudwatch"].add_response(
                "get_metric_statistics",
                {"Label": metric, "Datapoints": [{"Sum": value / 2}, {"Sum": value / 2}]},
                {
                    "Namespace": "AWS/SageMaker",
                    "MetricName": metric,
                    "Dimensions": [
                        {"Name": "EndpointName", "Value": "ep"},
                        {"Name": "VariantName", "Value": variant},
                    ],
                    "StartTime": datetime(2026, 1, 30, 12, 0, tzinfo=UTC),
                    "EndTime": NOW,
                    "Period": 86400,
                    "Statistics": ["Sum"],
                },
            )
    counted = abtest.counts(target_of(aws), "ep", hours=24, now=NOW)
    assert counted == {
        "A": {"invocations": 100.0, "errors_4xx": 2.0, "errors_5xx": 1.0},
        "B": {"invocations": 40.0, "errors_4xx": 0.0, "errors_5xx": 3.0},
    }


def test_registry_changes_send_status_and_a_who_when_why_description(aws: dict[str, Stubber]) -> None:
    sm = aws["sagemaker"]
    described = {
        "ModelPackageName": "pdm-mlops",
        "ModelPackageArn": PACKAGE,
        "ModelPackageVersion": 3,
        "CreationTime": NOW,
        "ModelPackageStatus": "Completed",
        "ModelPackageStatusDetails": {"ValidationStatuses": []},
    }
    sm.add_response("describe_model_package", described, {"ModelPackageName": PACKAGE})
    sm.add_response(
        "update_model_package",
        {"ModelPackageArn": PACKAGE},
        {
            "ModelPackageArn": PACKAGE,
            "ModelApprovalStatus": "Approved",
            "ApprovalDescription": Matches(
                r"approved by alice at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ: passed review"
            ),
        },
    )
    out = io.StringIO()
    assert (
        registry.main(["approve", PACKAGE, "--reason", "passed review", "--by", "alice"], target_of(aws), out)
        == 0
    )
