"""The AWS code path against moto (registry, create from a package, autoscaling, weights, alarms)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws

from deploy import abtest, autoscaling, registry
from deploy.clients import Target, make_target
from deploy.endpoint import (
    SINGLE_VARIANT,
    AbVariantSettings,
    VariantSpec,
    alarm_requests,
    deploy,
    deployed_packages,
    load_settings,
)
from pipelines.run import champion_model_uri

GROUP = "pdm-mlops"
ROLE = "arn:aws:iam::123456789012:role/pdm-sagemaker"


@pytest.fixture
def aws(fake_aws_credentials: None) -> Iterator[Target]:
    with mock_aws():
        target = make_target("sagemaker", Path("unused"), "us-east-1")
        client = target.sagemaker
        client.create_model_package_group(ModelPackageGroupName=GROUP)
        for version in (1, 2, 3):
            client.create_model_package(
                ModelPackageGroupName=GROUP,
                ModelApprovalStatus="Approved",
                InferenceSpecification={
                    "Containers": [
                        {"Image": "xgboost:3.0", "ModelDataUrl": f"s3://b/v{version}/model.tar.gz"}
                    ],
                    "SupportedContentTypes": ["text/csv"],
                    "SupportedResponseMIMETypes": ["text/csv"],
                },
            )
        yield target


def arn(version: int) -> str:
    return f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{GROUP}/{version}"


def statuses(target: Target) -> dict[int, str]:
    return {
        v["ModelPackageVersion"]: v["ModelApprovalStatus"] for v in registry.versions(target.sagemaker, GROUP)
    }


def test_registry_reject_and_rollback_move_the_champion_the_gate_sees(aws: Target) -> None:
    client = aws.sagemaker
    assert registry.champion(client, GROUP)["ModelPackageArn"] == arn(3)
    out = io.StringIO()
    # No such endpoint: only the registry changes.
    registry.reject(aws, GROUP, "3", "ops", "drift", endpoint="pdm-mlops-dev", out=out)
    assert registry.champion(client, GROUP)["ModelPackageArn"] == arn(2)
    registry.rollback(aws, GROUP, "ops", "recall dropped", endpoint="pdm-mlops-dev", out=out)
    assert statuses(aws) == {1: "Approved", 2: "Rejected", 3: "Rejected"}
    assert champion_model_uri(client, GROUP) == "s3://b/v1/model.tar.gz"
    note = client.describe_model_package(ModelPackageName=arn(1))["ApprovalDescription"]
    assert note.startswith("re-approved by ops") and "recall dropped" in note
    assert registry.main(["rollback", "--reason", "again"], aws, out) == 2
    assert statuses(aws) == {1: "Approved", 2: "Rejected", 3: "Rejected"}


def test_deploy_creates_from_the_package_and_registers_autoscaling(aws: Target) -> None:
    settings = load_settings(None, {"role_arn": ROLE, "autoscaling.max_capacity": 4})
    described = deploy(aws, "ep", [VariantSpec(SINGLE_VARIANT, arn(2))], settings, out=io.StringIO())
    assert described["EndpointStatus"] == "InService"
    assert deployed_packages(aws, "ep", GROUP) == {SINGLE_VARIANT: arn(2)}
    config = aws.sagemaker.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    assert config["ProductionVariants"][0]["InitialInstanceCount"] == 2
    assert config["DataCaptureConfig"]["DestinationS3Uri"] == "s3://pdm-mlops-local/pdm-mlops/capture"
    scaling = aws.aws("application-autoscaling")
    targets = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [
        ("endpoint/ep/variant/AllTraffic", 2, 4)
    ]
    policy = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"][0]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == autoscaling.METRIC
    assert tracking["ScaleInCooldown"] == 300
    out = io.StringIO()
    assert autoscaling.main(["remove", "ep"], aws, out) == 0
    assert "removed" in out.getvalue()
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


def test_ab_create_and_promote_on_aws(aws: Target) -> None:
    settings = load_settings(None, {"role_arn": ROLE, "autoscaling.enabled": False})
    variants = [
        AbVariantSettings(name="champion", package="2", weight=0.8),
        AbVariantSettings(name="challenger", package="3", weight=0.2),
    ]
    abtest.create(aws, "ab", variants, settings, out=io.StringIO())
    assert deployed_packages(aws, "ab", GROUP) == {"champion": arn(2), "challenger": arn(3)}
    abtest.promote(aws, "ab", "challenger", out=io.StringIO())
    weights = {
        v["VariantName"]: v["CurrentWeight"]
        for v in aws.sagemaker.describe_endpoint(EndpointName="ab")["ProductionVariants"]
    }
    assert weights == {"champion": 0.0, "challenger": 1.0}


def test_rollback_alarms_are_accepted_by_cloudwatch(aws: Target) -> None:
    cloudwatch = aws.aws("cloudwatch")
    rollout = load_settings(None, {"endpoint.rollout.p99_latency_ms": 250}).endpoint.rollout
    for request in alarm_requests("ep", ["A", "B"], rollout):
        cloudwatch.put_metric_alarm(**request)
    alarms = {a["AlarmName"]: a for a in cloudwatch.describe_alarms()["MetricAlarms"]}
    assert sorted(alarms) == [
        "ep-A-5xx-errors",
        "ep-A-p99-model-latency",
        "ep-B-5xx-errors",
        "ep-B-p99-model-latency",
    ]
    latency = alarms["ep-B-p99-model-latency"]
    assert (latency["ExtendedStatistic"], latency["Threshold"]) == ("p99", 250000.0)
    assert alarms["ep-A-5xx-errors"]["MetricName"] == "Invocation5XXErrors"
