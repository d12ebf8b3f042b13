"""SageMaker Model Monitor requests, built as plain dicts so tests can assert them exactly (Stubber).

Names follow the infra stacks: the CloudWatch alarms in deploy/infra/templates/serving.yaml watch the metrics
of the schedules `<ProjectName>-<Environment>-data-quality` and `<ProjectName>-<Environment>-model-quality`,
so a schedule with any other name would publish metrics no alarm reads, and nothing would retrain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipelines.config import SecurityConfig

DATA_QUALITY, MODEL_QUALITY = "data-quality", "model-quality"
MONITORING_TYPES = {DATA_QUALITY: "DataQuality", MODEL_QUALITY: "ModelQuality"}
HOURLY = "cron(0 * ? * * *)"
PROBLEM_TYPES = {
    "binary": "BinaryClassification",
    "multiclass": "MulticlassClassification",
    "regression": "Regression",
}
# The paths and names the SageMaker SDK's DefaultModelMonitor.suggest_baseline uses
# (sagemaker/core/model_monitor/model_monitoring.py): the analyzer image reads them from its environment.
BASELINE_INPUT_NAME = "baseline_dataset_input"
BASELINE_INPUT_PATH = "/opt/ml/processing/input/baseline_dataset_input"
ENDPOINT_INPUT_PATH = "/opt/ml/processing/input/endpoint"
OUTPUT_NAME = "monitoring_output"
OUTPUT_PATH = "/opt/ml/processing/output"
# Model Monitor's analyzer image lives in a per-region AWS account; the SDK's bundled table has them all.
ANALYZER_FRAMEWORK = "model-monitor"


@dataclass(frozen=True)
class Resources:
    """Cluster of one baselining or monitoring job; an hourly schedule's job must end within the hour."""

    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1
    volume_size_gb: int = 20
    max_runtime_seconds: int = 3600


def schedule_name(project: str, env: str, kind: str) -> str:
    """`<project>-<env>-data-quality` / `-model-quality`: the alarms' MonitoringSchedule dimension."""
    return f"{project}-{env}-{kind}"


def job_definition_name(schedule: str, suffix: str) -> str:
    """A new name per create/update: job definitions are immutable, so an update creates a new one."""
    return f"{schedule[: 62 - len(suffix)]}-{suffix}"


def analyzer_image(region: str) -> str:
    """Model Monitor's analyzer image URI for the region, from the SDK's offline table."""
    from sagemaker.core import image_uris

    return str(image_uris.retrieve(ANALYZER_FRAMEWORK, region=region))


def network_config(security: SecurityConfig) -> dict[str, Any]:
    """NetworkConfig of the jobs: the pipeline's VPC, isolation and inter-container encryption settings.

    Model Monitor's built-in jobs allow network isolation: inputs and outputs are copied by the platform and
    metrics are published by it from the container's output, so the container needs no network itself.
    """
    out: dict[str, Any] = {}
    if security.encrypt_inter_container_traffic:
        out["EnableInterContainerTrafficEncryption"] = True
    if security.enable_network_isolation:
        out["EnableNetworkIsolation"] = True
    if security.subnets:
        out["VpcConfig"] = {
            "SecurityGroupIds": list(security.security_group_ids),
            "Subnets": list(security.subnets),
        }
    return out


def _cluster(resources: Resources, security: SecurityConfig) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "InstanceCount": resources.instance_count,
        "InstanceType": resources.instance_type,
        "VolumeSizeInGB": resources.volume_size_gb,
    }
    if security.volume_kms_key_id:
        cluster["VolumeKmsKeyId"] = security.volume_kms_key_id
    return cluster


def _outputs(uri: str, security: SecurityConfig) -> dict[str, Any]:
    config: dict[str, Any] = {
        "MonitoringOutputs": [
            {"S3Output": {"S3Uri": uri, "LocalPath": OUTPUT_PATH, "S3UploadMode": "EndOfJob"}}
        ]
    }
    if security.kms_key_id:
        config["KmsKeyId"] = security.kms_key_id
    return config


def baseline_job_request(
    name: str,
    image: str,
    dataset_uri: str,
    output_uri: str,
    role: str,
    security: SecurityConfig,
    resources: Resources = Resources(),
) -> dict[str, Any]:
    """CreateProcessingJob of the analyzer's "suggest baseline" mode on a CSV data set with a header."""
    output: dict[str, Any] = {
        "Outputs": [
            {
                "OutputName": OUTPUT_NAME,
                "S3Output": {"S3Uri": output_uri, "LocalPath": OUTPUT_PATH, "S3UploadMode": "EndOfJob"},
            }
        ]
    }
    if security.kms_key_id:
        output["KmsKeyId"] = security.kms_key_id
    request: dict[str, Any] = {
        "ProcessingJobName": name,
        "ProcessingInputs": [
            {
                "InputName": BASELINE_INPUT_NAME,
                "S3Input": {
                    "S3Uri": dataset_uri,
                    "LocalPath": BASELINE_INPUT_PATH,
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": "FullyReplicated",
                },
            }
        ],
        "ProcessingOutputConfig": output,
        "ProcessingResources": {"ClusterConfig": _cluster(resources, security)},
        "StoppingCondition": {"MaxRuntimeInSeconds": resources.max_runtime_seconds},
        "AppSpecification": {"ImageUri": image},
        "Environment": {
            "dataset_format": json.dumps({"csv": {"header": True, "output_columns_position": "START"}}),
            "dataset_source": BASELINE_INPUT_PATH,
            "output_path": OUTPUT_PATH,
            "publish_cloudwatch_metrics": "Disabled",
        },
        "RoleArn": role,
    }
    if network := network_config(security):
        request["NetworkConfig"] = network
    return request


def _endpoint_input(endpoint: str) -> dict[str, Any]:
    return {
        "EndpointName": endpoint,
        "LocalPath": ENDPOINT_INPUT_PATH,
        "S3InputMode": "File",
        "S3DataDistributionType": "FullyReplicated",
    }


def data_quality_job_definition(
    name: str,
    image: str,
    endpoint: str,
    baseline_uri: str,
    output_uri: str,
    role: str,
    security: SecurityConfig,
    resources: Resources = Resources(),
) -> dict[str, Any]:
    """CreateDataQualityJobDefinition: captured requests of `endpoint` against the baseline's files."""
    base = baseline_uri.rstrip("/")
    request: dict[str, Any] = {
        "JobDefinitionName": name,
        "DataQualityBaselineConfig": {
            "ConstraintsResource": {"S3Uri": f"{base}/constraints.json"},
            "StatisticsResource": {"S3Uri": f"{base}/statistics.json"},
        },
        "DataQualityAppSpecification": {
            "ImageUri": image,
            # The drift alarm reads feature_baseline_drift_<feature>: metrics must be published.
            "Environment": {"publish_cloudwatch_metrics": "Enabled"},
        },
        "DataQualityJobInput": {"EndpointInput": _endpoint_input(endpoint)},
        "DataQualityJobOutputConfig": _outputs(output_uri, security),
        "JobResources": {"ClusterConfig": _cluster(resources, security)},
        "RoleArn": role,
        "StoppingCondition": {"MaxRuntimeInSeconds": resources.max_runtime_seconds},
    }
    if network := network_config(security):
        request["NetworkConfig"] = network
    return request


def model_quality_job_definition(
    name: str,
    image: str,
    endpoint: str,
    problem_type: str,
    ground_truth_uri: str,
    output_uri: str,
    role: str,
    security: SecurityConfig,
    resources: Resources = Resources(),
    probability_threshold: float = 0.5,
    constraints_uri: str | None = None,
    start_offset: str = "-PT1H",
    end_offset: str = "-PT0H",
) -> dict[str, Any]:
    """CreateModelQualityJobDefinition: captured predictions joined with ground truth by eventId.

    The model server answers CSV with the prediction in column 0 (model_code/inference.py output_fn): the
    probability of the positive class (binary), the label then the probabilities (multiclass), or the value
    (regression); Model Monitor addresses CSV output columns by index.
    """
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"problem type {problem_type!r}: expected one of {sorted(PROBLEM_TYPES)}")
    endpoint_input = _endpoint_input(endpoint) | {
        "StartTimeOffset": start_offset,
        "EndTimeOffset": end_offset,
    }
    if problem_type == "binary":
        endpoint_input |= {
            "ProbabilityAttribute": "0",
            "ProbabilityThresholdAttribute": probability_threshold,
        }
    else:
        endpoint_input["InferenceAttribute"] = "0"
    request: dict[str, Any] = {
        "JobDefinitionName": name,
        "ModelQualityAppSpecification": {"ImageUri": image, "ProblemType": PROBLEM_TYPES[problem_type]},
        "ModelQualityJobInput": {
            "EndpointInput": endpoint_input,
            "GroundTruthS3Input": {"S3Uri": ground_truth_uri},
        },
        "ModelQualityJobOutputConfig": _outputs(output_uri, security),
        "JobResources": {"ClusterConfig": _cluster(resources, security)},
        "RoleArn": role,
        "StoppingCondition": {"MaxRuntimeInSeconds": resources.max_runtime_seconds},
    }
    if constraints_uri:
        request["ModelQualityBaselineConfig"] = {"ConstraintsResource": {"S3Uri": constraints_uri}}
    if network := network_config(security):
        request["NetworkConfig"] = network
    return request


def schedule_config(kind: str, job_definition: str, expression: str = HOURLY) -> dict[str, Any]:
    """MonitoringScheduleConfig that runs a job definition on a cron schedule."""
    return {
        "ScheduleConfig": {"ScheduleExpression": expression},
        "MonitoringJobDefinitionName": job_definition,
        "MonitoringType": MONITORING_TYPES[kind],
    }
