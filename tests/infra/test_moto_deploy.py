"""`python -m deploy.infra deploy` against moto's CloudFormation, for the templates moto can run.

moto runs network, alerts, storage, serving (with a real model, endpoint config and endpoint) and
streaming. It cannot run the others: keys and replica (moto's KMS model fails on CloudFormation-style
Key/Value tags), governance, cicd, api and batch (CloudTrail, CodeBuild, CloudWatch alarms referenced with
GetAtt, and a required Batch ServiceRole are not modelled). Those are covered by cfn-lint, checkov and
the structural tests instead.

Two gaps of moto's change-set support are bridged here, because the CLI only uses change sets: stacks
created by a CREATE change set get neither the account's exports (Fn::ImportValue) nor publish their own.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from deploy.infra.cli import run

REGION = "eu-west-1"
MOTO_UNITS = ("network", "alerts", "storage", "serving", "streaming")
KEY_EXPORTS = ("data", "model", "logs", "endpoint")
MODEL = {
    "ModelDataUrl": "s3://pdm-dev-artifacts-123456789012-eu-west-1/pipelines/exec-1/model.tar.gz",
    "ImageUri": "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-xgboost:1.7-1",
}


@pytest.fixture
def moto_cloudformation(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """mock_aws with cross-stack exports working for change-set-created stacks."""
    from moto.cloudformation import models

    backend = models.CloudFormationBackend
    create, execute = backend.create_change_set, backend.execute_change_set

    def create_change_set(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = create(self, *args, **kwargs)
        for stack in self.stacks.values():
            stack.cross_stack_resources = self.exports
            stack.resource_map.cross_stack_resources = self.exports
        return result

    def execute_change_set(self: Any, change_set_name: str, stack_name: str | None = None) -> None:
        execute(self, change_set_name, stack_name)
        for stack in self.stacks.values():
            if stack.name == stack_name:
                stack._parse_template()
                stack.output_map = stack._create_output_map()
                for export in stack.exports:
                    self.exports[export.name] = export

    monkeypatch.setattr(backend, "create_change_set", create_change_set)
    monkeypatch.setattr(backend, "execute_change_set", execute_change_set)
    with mock_aws():
        # The keys stack's exports, from real (moto) KMS keys: moto cannot create the keys stack itself.
        kms = boto3.client("kms", region_name=REGION)
        outputs = {
            name: {
                "Value": kms.create_key()["KeyMetadata"]["Arn"],
                "Export": {"Name": f"pdm-dev-{name}-key-arn"},
            }
            for name in KEY_EXPORTS
        }
        stub = {
            "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
            "Outputs": outputs,
        }
        boto3.client("cloudformation", region_name=REGION).create_stack(
            StackName="pdm-dev-keys-exports", TemplateBody=json.dumps(stub)
        )
        yield


def _deploy(*extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(
        ["deploy", "--env", "dev", "--yes", "--poll-seconds", "0", *extra],
        client_factory=lambda service, region: boto3.client(service, region_name=region),
        out=out,
        err=err,
    )
    return code, out.getvalue(), err.getvalue()


@pytest.mark.filterwarnings("ignore::UserWarning")  # moto warns about each resource type it skips
def test_deploy_then_redeploy_then_update(moto_cloudformation: None) -> None:
    model = [f"--param={k}={v}" for k, v in MODEL.items()]
    code, out, err = _deploy("--stack", ",".join(MOTO_UNITS), *model)
    assert (code, err) == (0, ""), out
    for unit in MOTO_UNITS:
        assert f"pdm-dev-{unit}: CREATE_COMPLETE" in out

    ec2 = boto3.client("ec2", region_name=REGION)
    (vpc,) = ec2.describe_vpcs(Filters=[{"Name": "tag:project", "Values": ["pdm"]}])["Vpcs"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    assert len({s["AvailabilityZone"] for s in subnets}) == 2
    assert sorted(s["CidrBlock"] for s in subnets) == ["10.40.0.0/20", "10.40.16.0/20"]
    services = {e["ServiceName"] for e in ec2.describe_vpc_endpoints()["VpcEndpoints"]}
    assert {
        f"com.amazonaws.{REGION}.{s}" for s in ("s3", "sagemaker.api", "sagemaker.runtime", "sts")
    } <= services

    s3 = boto3.client("s3", region_name=REGION)
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert sorted(buckets) == [
        "pdm-dev-artifacts-123456789012-eu-west-1",
        "pdm-dev-data-123456789012-eu-west-1",
    ]
    # moto applies a bucket's encryption and tags from CloudFormation (not versioning or lifecycle).
    for bucket in buckets:
        rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        assert rule["ApplyServerSideEncryptionByDefault"]["KMSMasterKeyID"].startswith("arn:aws:kms:")
        tags = {t["Key"]: t["Value"] for t in s3.get_bucket_tagging(Bucket=bucket)["TagSet"]}
        assert tags["cost-center"] == "ml-platform"

    sagemaker = boto3.client("sagemaker", region_name=REGION)
    # moto names CloudFormation endpoints itself (it ignores EndpointName), so look it up.
    (summary,) = sagemaker.list_endpoints()["Endpoints"]
    endpoint = sagemaker.describe_endpoint(EndpointName=summary["EndpointName"])
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    assert config["KmsKeyId"].startswith("arn:aws:kms:")
    assert config["DataCaptureConfig"]["EnableCapture"] is True

    queues = boto3.client("sqs", region_name=REGION).list_queues()["QueueUrls"]
    assert sorted(q.rsplit("/", 1)[1] for q in queues) == ["pdm-dev-maintenance", "pdm-dev-maintenance-dlq"]
    assert boto3.client("kinesis", region_name=REGION).describe_stream_summary(StreamName="pdm-dev-telemetry")

    # Nothing changed: every change set comes back empty and is deleted, nothing is executed.
    code, out, err = _deploy("--stack", ",".join(MOTO_UNITS), *model)
    assert (code, err) == (0, "")
    assert out.count(": no changes") == len(MOTO_UNITS)

    # A new model updates the serving stack in place.
    code, out, err = _deploy(
        "--stack", "serving", "--param=ModelDataUrl=s3://b/exec-2/model.tar.gz", model[1]
    )
    assert (code, err) == (0, "")
    assert "pdm-dev-serving (eu-west-1, update)" in out and "pdm-dev-serving: UPDATE_COMPLETE" in out
