"""deploy.monitor on SageMaker: the exact Model Monitor requests (Stubber validates each against botocore)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from deploy.clients import Target
from deploy.infra import TEMPLATES_DIR
from deploy.infra.cfn import load_template
from deploy.monitor import cli
from deploy.monitor import context as common
from deploy.monitor import requests as rq

REGION = "eu-west-1"
ROLE = "arn:aws:iam::123456789012:role/pdm-dev-inference-eu-west-1"
KMS = "arn:aws:kms:eu-west-1:123456789012:key/data"
VOLUME_KMS = "arn:aws:kms:eu-west-1:123456789012:key/volume"
IMAGE = "468650794304.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-model-monitor-analyzer"
BUCKET = "pdm-dev-artifacts"
ROOT = f"s3://{BUCKET}/pdm-mlops/monitoring"
BASELINE = f"{ROOT}/data-quality/baseline"
ENDPOINT = "pdm-mlops-dev"
CSV_HEADER = b"air_temperature_k,process_temperature_k,rotational_speed_rpm,torque_nm,tool_wear_min,type\n"
NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)
PARAMS = [
    "--param",
    f"role_arn={ROLE}",
    "--param",
    f"bucket={BUCKET}",
    "--param",
    f"security.kms_key_id={KMS}",
    "--param",
    f"security.volume_kms_key_id={VOLUME_KMS}",
    "--param",
    "security.subnets=[subnet-a, subnet-b]",
    "--param",
    "security.security_group_ids=[sg-1]",
    "--param",
    "security.enable_network_isolation=true",
]
CLUSTER = {
    "InstanceCount": 1,
    "InstanceType": "ml.m5.xlarge",
    "VolumeSizeInGB": 20,
    "VolumeKmsKeyId": VOLUME_KMS,
}
NETWORK = {
    "EnableNetworkIsolation": True,
    "VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-a", "subnet-b"]},
}
ENDPOINT_INPUT = {
    "EndpointName": ENDPOINT,
    "LocalPath": "/opt/ml/processing/input/endpoint",
    "S3InputMode": "File",
    "S3DataDistributionType": "FullyReplicated",
}


@pytest.fixture
def stubs(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Stubber]]:
    """Stubbed SageMaker and S3 clients; job definition names get a fixed suffix, polling never sleeps."""
    monkeypatch.setattr(common, "suffix", lambda: "sfx")
    monkeypatch.setattr(common, "sleep", lambda seconds: None)
    out = {}
    for service in ("sagemaker", "s3"):
        client = boto3.client(service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
        out[service] = Stubber(client)
        out[service].activate()
    yield out
    for stub in out.values():
        stub.assert_no_pending_responses()
        stub.deactivate()


def run(stubs: dict[str, Stubber], *argv: str) -> tuple[int, str]:
    target = Target("sagemaker", stubs["sagemaker"].client, REGION, clients={"s3": stubs["s3"].client})
    out = io.StringIO()
    return cli.main(list(argv), target=target, out=out), out.getvalue()


def not_found(stub: Stubber, name: str) -> None:
    stub.add_client_error(
        "describe_monitoring_schedule",
        service_error_code="ResourceNotFound",
        service_message=f"Monitoring Schedule '{name}' does not exist.",
        expected_params={"MonitoringScheduleName": name},
    )


def expect_baseline(s3: Stubber) -> None:
    for name in ("statistics.json", "constraints.json"):
        key = f"pdm-mlops/monitoring/data-quality/baseline/{name}"
        s3.add_response("list_objects_v2", {"Contents": [{"Key": key}]}, {"Bucket": BUCKET, "Prefix": key})
        body = json.dumps({"version": 0.0, "features": []}).encode()
        s3.add_response(
            "get_object", {"Body": StreamingBody(io.BytesIO(body), len(body))}, {"Bucket": BUCKET, "Key": key}
        )


def expect_endpoint(sm: Stubber, capture: bool = True) -> None:
    response: dict[str, Any] = {
        "EndpointName": ENDPOINT,
        "EndpointArn": f"arn:aws:sagemaker:{REGION}:123456789012:endpoint/{ENDPOINT}",
        "EndpointStatus": "InService",
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
    }
    if capture:
        response["DataCaptureConfig"] = {
            "EnableCapture": True,
            "CaptureStatus": "Started",
            "CurrentSamplingPercentage": 20,
            "DestinationS3Uri": f"s3://{BUCKET}/data-capture/{ENDPOINT}",
            "KmsKeyId": KMS,
        }
    sm.add_response("describe_endpoint", response, {"EndpointName": ENDPOINT})


DATA_DEFINITION = {
    "JobDefinitionName": "pdm-dev-data-quality-sfx",
    "DataQualityBaselineConfig": {
        "ConstraintsResource": {"S3Uri": f"{BASELINE}/constraints.json"},
        "StatisticsResource": {"S3Uri": f"{BASELINE}/statistics.json"},
    },
    "DataQualityAppSpecification": {
        "ImageUri": IMAGE,
        "Environment": {"publish_cloudwatch_metrics": "Enabled"},
    },
    "DataQualityJobInput": {"EndpointInput": ENDPOINT_INPUT},
    "DataQualityJobOutputConfig": {
        "MonitoringOutputs": [
            {
                "S3Output": {
                    "S3Uri": f"{ROOT}/data-quality/reports",
                    "LocalPath": "/opt/ml/processing/output",
                    "S3UploadMode": "EndOfJob",
                }
            }
        ],
        "KmsKeyId": KMS,
    },
    "JobResources": {"ClusterConfig": CLUSTER},
    "RoleArn": ROLE,
    "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    "NetworkConfig": NETWORK,
}
MODEL_DEFINITION = {
    "JobDefinitionName": "pdm-dev-model-quality-sfx",
    "ModelQualityAppSpecification": {"ImageUri": IMAGE, "ProblemType": "BinaryClassification"},
    "ModelQualityJobInput": {
        "EndpointInput": ENDPOINT_INPUT
        | {
            "StartTimeOffset": "-PT1H",
            "EndTimeOffset": "-PT0H",
            "ProbabilityAttribute": "0",
            "ProbabilityThresholdAttribute": 0.5,
        },
        "GroundTruthS3Input": {"S3Uri": f"{ROOT}/ground-truth"},
    },
    "ModelQualityJobOutputConfig": {
        "MonitoringOutputs": [
            {
                "S3Output": {
                    "S3Uri": f"{ROOT}/model-quality/reports",
                    "LocalPath": "/opt/ml/processing/output",
                    "S3UploadMode": "EndOfJob",
                }
            }
        ],
        "KmsKeyId": KMS,
    },
    "JobResources": {"ClusterConfig": CLUSTER},
    "RoleArn": ROLE,
    "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    "NetworkConfig": NETWORK,
}


def schedule_config(kind: str, definition: str) -> dict[str, Any]:
    return {
        "ScheduleConfig": {"ScheduleExpression": "cron(0 * ? * * *)"},
        "MonitoringJobDefinitionName": definition,
        "MonitoringType": kind,
    }


def arn(kind: str, name: str) -> str:
    return f"arn:aws:sagemaker:{REGION}:123456789012:{kind}/{name}"


def test_schedule_creates_both_schedules_named_as_the_alarms_expect(stubs: dict[str, Stubber]) -> None:
    sm = stubs["sagemaker"]
    expect_baseline(stubs["s3"])
    expect_endpoint(sm)
    for kind, definition, create in (
        ("DataQuality", DATA_DEFINITION, "create_data_quality_job_definition"),
        ("ModelQuality", MODEL_DEFINITION, "create_model_quality_job_definition"),
    ):
        schedule = definition["JobDefinitionName"].removesuffix("-sfx")  # type: ignore[union-attr]
        not_found(sm, schedule)
        sm.add_response(create, {"JobDefinitionArn": arn("monitoring-job-definition", "x")}, definition)
        sm.add_response(
            "create_monitoring_schedule",
            {"MonitoringScheduleArn": arn("monitoring-schedule", schedule)},
            {
                "MonitoringScheduleName": schedule,
                "MonitoringScheduleConfig": schedule_config(kind, str(definition["JobDefinitionName"])),
            },
        )
    code, out = run(stubs, "schedule", "--image", IMAGE, *PARAMS)
    assert code == 0, out
    assert "created schedule pdm-dev-data-quality" in out and "created schedule pdm-dev-model-quality" in out


def test_update_points_the_schedule_at_a_new_definition(stubs: dict[str, Stubber]) -> None:
    sm = stubs["sagemaker"]
    expect_baseline(stubs["s3"])
    expect_endpoint(sm)
    sm.add_response(
        "describe_monitoring_schedule",
        {
            "MonitoringScheduleArn": arn("monitoring-schedule", "pdm-dev-data-quality"),
            "MonitoringScheduleName": "pdm-dev-data-quality",
            "MonitoringScheduleStatus": "Scheduled",
            "CreationTime": NOW,
            "LastModifiedTime": NOW,
            "MonitoringScheduleConfig": schedule_config("DataQuality", "pdm-dev-data-quality-old"),
        },
        {"MonitoringScheduleName": "pdm-dev-data-quality"},
    )
    sm.add_response(
        "create_data_quality_job_definition", {"JobDefinitionArn": arn("x", "y")}, DATA_DEFINITION
    )
    sm.add_response(
        "update_monitoring_schedule",
        {"MonitoringScheduleArn": arn("monitoring-schedule", "pdm-dev-data-quality")},
        {
            "MonitoringScheduleName": "pdm-dev-data-quality",
            "MonitoringScheduleConfig": schedule_config("DataQuality", "pdm-dev-data-quality-sfx"),
        },
    )
    sm.add_response(
        "delete_data_quality_job_definition", {}, {"JobDefinitionName": "pdm-dev-data-quality-old"}
    )
    code, out = run(stubs, "schedule", "--image", IMAGE, "--no-model-quality", *PARAMS)
    assert code == 0, out
    assert "updated schedule pdm-dev-data-quality" in out


def test_a_refused_schedule_leaves_no_job_definition(
    stubs: dict[str, Stubber], capsys: pytest.CaptureFixture[str]
) -> None:
    sm = stubs["sagemaker"]
    expect_baseline(stubs["s3"])
    expect_endpoint(sm)
    not_found(sm, "pdm-dev-data-quality")
    sm.add_response(
        "create_data_quality_job_definition", {"JobDefinitionArn": arn("x", "y")}, DATA_DEFINITION
    )
    sm.add_client_error("create_monitoring_schedule", "ResourceLimitExceeded", "too many schedules")
    sm.add_response(
        "delete_data_quality_job_definition", {}, {"JobDefinitionName": "pdm-dev-data-quality-sfx"}
    )
    code, _ = run(stubs, "schedule", "--image", IMAGE, "--no-model-quality", *PARAMS)
    assert code == 1
    assert "CreateMonitoringSchedule: ResourceLimitExceeded: too many schedules" in capsys.readouterr().err


def test_schedule_refuses_an_endpoint_without_capture_or_a_missing_baseline(
    stubs: dict[str, Stubber], capsys: pytest.CaptureFixture[str]
) -> None:
    expect_baseline(stubs["s3"])
    expect_endpoint(stubs["sagemaker"], capture=False)
    assert run(stubs, "schedule", "--image", IMAGE, *PARAMS)[0] == 2
    assert f"endpoint {ENDPOINT} has no data capture" in capsys.readouterr().err
    key = "pdm-mlops/monitoring/data-quality/baseline/statistics.json"
    stubs["s3"].add_response("list_objects_v2", {}, {"Bucket": BUCKET, "Prefix": key})
    assert run(stubs, "schedule", "--image", IMAGE, *PARAMS)[0] == 2
    assert f"no baseline statistics.json at s3://{BUCKET}/{key}" in capsys.readouterr().err


def test_schedule_can_skip_when_there_is_no_baseline_yet(stubs: dict[str, Stubber]) -> None:
    key = "pdm-mlops/monitoring/data-quality/baseline/statistics.json"
    stubs["s3"].add_response("list_objects_v2", {}, {"Bucket": BUCKET, "Prefix": key})
    code, out = run(stubs, "schedule", "--image", IMAGE, "--skip-without-baseline", *PARAMS)
    assert code == 0
    assert f"schedules not created: no baseline statistics.json at s3://{BUCKET}/{key}" in out


def test_schedule_needs_a_real_role(stubs: dict[str, Stubber], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(stubs, "schedule", "--image", IMAGE)[0] == 2
    assert "a real execution role is needed" in capsys.readouterr().err


def test_delete_removes_schedules_then_their_definitions(stubs: dict[str, Stubber]) -> None:
    sm = stubs["sagemaker"]
    name = "pdm-dev-data-quality"
    described = {
        "MonitoringScheduleArn": arn("monitoring-schedule", name),
        "MonitoringScheduleName": name,
        "MonitoringScheduleStatus": "Scheduled",
        "CreationTime": NOW,
        "LastModifiedTime": NOW,
        "MonitoringScheduleConfig": schedule_config("DataQuality", f"{name}-sfx"),
    }
    sm.add_response("describe_monitoring_schedule", described, {"MonitoringScheduleName": name})
    sm.add_response("delete_monitoring_schedule", {}, {"MonitoringScheduleName": name})
    # Still there once (deletion is asynchronous), then gone: only then can the definition go.
    sm.add_response(
        "describe_monitoring_schedule",
        described | {"MonitoringScheduleStatus": "Pending"},
        {"MonitoringScheduleName": name},
    )
    not_found(sm, name)
    sm.add_response("delete_data_quality_job_definition", {}, {"JobDefinitionName": f"{name}-sfx"})
    not_found(sm, "pdm-dev-model-quality")
    code, out = run(stubs, "delete", "--project", "pdm", "--env", "dev")
    assert code == 0, out
    assert f"deleted schedule {name} and job definition {name}-sfx" in out
    assert "no schedule pdm-dev-model-quality" in out


def test_baseline_job_is_model_monitors_suggest_baseline(stubs: dict[str, Stubber]) -> None:
    s3, sm = stubs["s3"], stubs["sagemaker"]
    csv = b"udi,air_temperature_k,process_temperature_k,rotational_speed_rpm,torque_nm,tool_wear_min,type\n"
    csv += b"1,300.1,310.2,1500.0,40.1,3.0,L\n"
    s3.add_response(
        "list_objects_v2",
        {"Contents": [{"Key": "data/train.csv"}]},
        {"Bucket": BUCKET, "Prefix": "data/train.csv"},
    )
    s3.add_response(
        "get_object",
        {"Body": StreamingBody(io.BytesIO(csv), len(csv))},
        {"Bucket": BUCKET, "Key": "data/train.csv"},
    )
    dataset_key = "pdm-mlops/monitoring/data-quality/baseline/dataset/baseline.csv"
    s3.add_response(
        "put_object",
        {},
        {
            "Bucket": BUCKET,
            "Key": dataset_key,
            "Body": CSV_HEADER + b"300.1,310.2,1500.0,40.1,3.0,L\n",
            "ServerSideEncryption": "aws:kms",
            "SSEKMSKeyId": KMS,
        },
    )
    sm.add_response(
        "create_processing_job",
        {"ProcessingJobArn": arn("processing-job", "pdm-dev-baseline-sfx")},
        {
            "ProcessingJobName": "pdm-dev-baseline-sfx",
            "ProcessingInputs": [
                {
                    "InputName": "baseline_dataset_input",
                    "S3Input": {
                        "S3Uri": f"s3://{BUCKET}/{dataset_key}",
                        "LocalPath": "/opt/ml/processing/input/baseline_dataset_input",
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                        "S3DataDistributionType": "FullyReplicated",
                    },
                }
            ],
            "ProcessingOutputConfig": {
                "Outputs": [
                    {
                        "OutputName": "monitoring_output",
                        "S3Output": {
                            "S3Uri": BASELINE,
                            "LocalPath": "/opt/ml/processing/output",
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                ],
                "KmsKeyId": KMS,
            },
            "ProcessingResources": {"ClusterConfig": CLUSTER},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "AppSpecification": {"ImageUri": IMAGE},
            "Environment": {
                "dataset_format": '{"csv": {"header": true, "output_columns_position": "START"}}',
                "dataset_source": "/opt/ml/processing/input/baseline_dataset_input",
                "output_path": "/opt/ml/processing/output",
                "publish_cloudwatch_metrics": "Disabled",
            },
            "RoleArn": ROLE,
            "NetworkConfig": NETWORK,
        },
    )
    sm.add_response(
        "describe_processing_job",
        {
            "ProcessingJobName": "pdm-dev-baseline-sfx",
            "ProcessingJobArn": arn("processing-job", "pdm-dev-baseline-sfx"),
            "ProcessingJobStatus": "Completed",
            "ProcessingResources": {"ClusterConfig": CLUSTER},
            "AppSpecification": {"ImageUri": IMAGE},
            "CreationTime": NOW,
        },
        {"ProcessingJobName": "pdm-dev-baseline-sfx"},
    )
    code, out = run(stubs, "baseline", "--dataset", f"s3://{BUCKET}/data/train.csv", "--wait", *PARAMS)
    assert code == 0, out
    assert "baselining job pdm-dev-baseline-sfx: Completed" in out


def test_analyzer_image_is_model_monitors_regional_image() -> None:
    assert rq.analyzer_image("eu-west-1") == IMAGE
    assert rq.analyzer_image("us-east-1").startswith("156813124566.dkr.ecr.us-east-1.amazonaws.com/")


@pytest.mark.parametrize(
    ("problem", "expected", "attributes"),
    [
        (
            "binary",
            "BinaryClassification",
            {"ProbabilityAttribute": "0", "ProbabilityThresholdAttribute": 0.3},
        ),
        ("multiclass", "MulticlassClassification", {"InferenceAttribute": "0"}),
        ("regression", "Regression", {"InferenceAttribute": "0"}),
    ],
)
def test_problem_types(problem: str, expected: str, attributes: dict[str, Any]) -> None:
    from pipelines.config import SecurityConfig

    request = rq.model_quality_job_definition(
        "d",
        IMAGE,
        "ep",
        problem,
        "s3://b/gt",
        "s3://b/out",
        ROLE,
        SecurityConfig(),
        probability_threshold=0.3,
    )
    assert request["ModelQualityAppSpecification"]["ProblemType"] == expected
    endpoint_input = request["ModelQualityJobInput"]["EndpointInput"]
    assert {k: endpoint_input[k] for k in attributes} == attributes
    assert "NetworkConfig" not in request  # nothing configured, nothing sent
    with pytest.raises(ValueError, match="problem type 'ranking'"):
        rq.model_quality_job_definition(
            "d", IMAGE, "ep", "ranking", "s3://b/gt", "s3://b/o", ROLE, SecurityConfig()
        )


def test_schedule_names_are_the_alarm_dimensions() -> None:
    """serving.yaml's retraining alarms read the metrics of exactly these schedule names."""
    serving = load_template(TEMPLATES_DIR / "serving.yaml")
    dimensions = {}
    for logical_id in ("DataDriftAlarm", "ModelQualityAlarm"):
        props = serving["Resources"][logical_id]["Properties"]
        dimensions[props["Namespace"]] = {d["Name"]: d["Value"] for d in props["Dimensions"]}
    data = dimensions["aws/sagemaker/Endpoints/data-metrics"]["MonitoringSchedule"]
    model = dimensions["aws/sagemaker/Endpoints/model-metrics"]["MonitoringSchedule"]
    assert data == {"Fn::Sub": rq.schedule_name("${ProjectName}", "${Environment}", rq.DATA_QUALITY)}
    assert model == {"Fn::Sub": rq.schedule_name("${ProjectName}", "${Environment}", rq.MODEL_QUALITY)}
    assert serving["Parameters"]["ProjectName"]["Default"] == cli.DEFAULT_PROJECT
    assert serving["Parameters"]["DriftMetricName"]["Default"] == "feature_baseline_drift_tool_wear_min"


def test_the_documented_commands_parse() -> None:
    """Every `python -m deploy.monitor` line of docs/monitoring.md parses with the real CLI."""
    import shlex
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "monitoring.md").read_text()
    lines = [
        line.split("  #", 1)[0] for line in docs.splitlines() if line.startswith("python -m deploy.monitor")
    ]
    assert len(lines) >= 5
    for line in lines:
        args = cli._parser().parse_args([{"$INFRA_ENV": "dev"}.get(w, w) for w in shlex.split(line)[3:]])
        assert args.command in {"baseline", "schedule", "check", "delete"}
