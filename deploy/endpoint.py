"""`python -m deploy.endpoint`: deploy registered versions and call endpoints, one code path per target."""

# The same SageMaker API calls run on boto3's client and on the local engine's `LocalSageMaker`; only what
# has no local counterpart (CloudWatch alarms, auto scaling) is skipped locally.

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml
from botocore.exceptions import BotoCoreError, ClientError, WaiterError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deploy import autoscaling
from deploy.autoscaling import AutoscalingSettings
from deploy.clients import (
    OperationFailed,
    Target,
    TargetError,
    UsageError,
    cli_parser,
    error_text,
    is_not_found,
    is_target_error,
    paginate,
    run_cli,
    target_from_args,
)
from pipelines.config import ConfigError, SecurityConfig

# The pipeline's defaults (pipelines/config.py): group, endpoint, bucket/prefix -> capture prefix.
DEFAULT_GROUP = "pdm-mlops"
DEFAULT_ENDPOINT = "pdm-mlops-dev"
DEFAULT_CAPTURE_URI = "s3://pdm-mlops-local/pdm-mlops/capture"
# Only the local engine accepts this placeholder; on SageMaker a real role is required.
LOCAL_ROLE = "arn:aws:iam::000000000000:role/pdm-mlops-local"
SINGLE_VARIANT = "AllTraffic"
CAPTURE_CONTENT_TYPES = {"CsvContentTypes": ["text/csv"], "JsonContentTypes": ["application/json"]}
MULTI_MODEL_CACHE_ENV = "PDM_MULTI_MODEL_CACHE_SIZE"  # read by the local engine (backend_hosting.py)
SERVING_ENV = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}
_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"


# --- settings ------------------------------------------------------------------------------------------
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CaptureSettings(_Section):
    """DataCaptureConfig: which share of requests is stored, and where (the variant is in the key)."""

    enabled: bool = True
    sampling_percentage: int = Field(100, ge=0, le=100)
    destination_s3_uri: str = DEFAULT_CAPTURE_URI

    @field_validator("destination_s3_uri")
    @classmethod
    def _s3(cls, value: str) -> str:
        if not value.startswith("s3://") or len(value) <= 5:
            raise ValueError(f"{value!r} is not an s3:// URI")
        return value.rstrip("/")


class ServerlessSettings(_Section):
    """ProductionVariantServerlessConfig (memory in 1 GB steps, 1024..6144 MB)."""

    memory_size_mb: int = Field(2048, ge=1024, le=6144, multiple_of=1024)
    max_concurrency: int = Field(5, ge=1, le=200)


class CanarySize(_Section):
    type: Literal["INSTANCE_COUNT", "CAPACITY_PERCENT"] = "INSTANCE_COUNT"
    value: int = Field(1, ge=1)


class RolloutSettings(_Section):
    """Blue/green canary of an update and the two CloudWatch alarms that roll it back (AWS only)."""

    canary_size: CanarySize = CanarySize()
    wait_interval_seconds: int = Field(300, ge=0, le=3600)
    termination_wait_seconds: int = Field(300, ge=0, le=3600)
    max_execution_timeout_seconds: int = Field(3600, ge=600, le=28800)
    max_5xx_errors: float = Field(1.0, ge=0, description="5XX errors per period that trip the alarm")
    p99_latency_ms: float = Field(500.0, gt=0, description="p99 ModelLatency that trips the alarm")
    alarm_period_seconds: int = Field(60, ge=10)
    alarm_evaluation_periods: int = Field(2, ge=1)


class EndpointSettings(_Section):
    instance_type: str = "ml.m5.large"
    instance_count: int = Field(2, ge=1)
    # Production endpoints need two or more instances: SageMaker spreads them over Availability Zones.
    production: bool = True
    serverless: ServerlessSettings | None = None
    kms_key_id: str | None = None
    data_capture: CaptureSettings = CaptureSettings()
    rollout: RolloutSettings = RolloutSettings()

    @model_validator(mode="after")
    def _shape(self) -> EndpointSettings:
        if self.serverless is None and self.production and self.instance_count < 2:
            raise ValueError(
                f"instance_count must be >= 2 when production is true (got {self.instance_count}): "
                "SageMaker spreads instances across Availability Zones; use --dev (production: false) "
                "for a dev endpoint"
            )
        if self.serverless is not None and self.rollout.canary_size.type == "INSTANCE_COUNT":
            # A serverless endpoint has no instances to count.
            self.rollout.canary_size = CanarySize(type="CAPACITY_PERCENT", value=10)
        return self


class AbVariantSettings(_Section):
    name: str = Field(pattern=_NAME_PATTERN)
    package: str = Field(description="version number in the group, or a model package ARN")
    weight: float = Field(1.0, ge=0)

    @field_validator("package", mode="before")
    @classmethod
    def _version_number(cls, value: Any) -> Any:
        # YAML reads `package: 3` as an int; a version number is meant.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class MultiModelSettings(_Section):
    cache_size: int = Field(4, ge=1)
    image: str | None = None


class DeploySettings(_Section):
    """Everything `deploy.endpoint`, `deploy.registry`, `deploy.abtest` and `deploy.autoscaling` read."""

    model_package_group: str = DEFAULT_GROUP
    endpoint_name: str = Field(DEFAULT_ENDPOINT, pattern=_NAME_PATTERN)
    role_arn: str | None = None
    endpoint: EndpointSettings = EndpointSettings()
    # Named like the module: annotations use the imported class, not `autoscaling.`.
    autoscaling: AutoscalingSettings = AutoscalingSettings()
    abtest: list[AbVariantSettings] = []
    multi_model: MultiModelSettings = MultiModelSettings()
    # The pipeline config's `security` section (pipelines/config.py), so that models deployed here get the
    # same VPC, network isolation and KMS keys as the ones the pipeline deploys; `--config` fills it.
    security: SecurityConfig = SecurityConfig()

    @model_validator(mode="after")
    def _capacity(self) -> DeploySettings:
        scaling = self.autoscaling
        if scaling.enabled and self.endpoint.production and scaling.min_capacity < 2:
            raise ValueError("autoscaling.min_capacity must be >= 2 when endpoint.production is true")
        return self

    def role(self, target: Target) -> str:
        """The execution role: settings, else $PDM_ROLE_ARN, else (local only) the engine's placeholder."""
        role = self.role_arn or os.environ.get("PDM_ROLE_ARN")
        if role:
            return role
        if target.is_local:
            return LOCAL_ROLE
        raise UsageError("an execution role is needed on SageMaker: --role-arn, role_arn or PDM_ROLE_ARN")


def load_settings(path: Path | None, overrides: dict[str, Any] | None = None) -> DeploySettings:
    """Settings from a YAML (or JSON) file plus dotted-key overrides; errors name the key (UsageError)."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise UsageError(f"cannot read settings {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise UsageError(f"settings {path} are not valid YAML: {' '.join(str(exc).split())}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"settings {path} must be a mapping of keys")
        raw = loaded
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[leaf] = value
    try:
        return DeploySettings.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in item['loc']) or 'settings'}: {item['msg']}" for item in exc.errors()
        ]
        raise UsageError("bad settings: " + "; ".join(problems)) from None


# --- request builders (pure: the Stubber tests assert what they return) --------------------------------
@dataclass(frozen=True)
class VariantSpec:
    """One production variant to deploy: its name, the model package it serves, its traffic weight."""

    name: str
    package_arn: str
    weight: float = 1.0


def unique_suffix() -> str:
    """UTC time to the second plus 4 random hex digits: new model/config names never collide."""
    return time.strftime("%y%m%d%H%M%S", time.gmtime()) + secrets.token_hex(2)


def resource_name(*parts: str, suffix: str) -> str:
    """A SageMaker name (<= 63 chars, letters/digits/hyphens) from parts, the suffix always kept."""
    base = "-".join(p for p in parts if p)
    base = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in base)
    return f"{base[: 62 - len(suffix)].strip('-')}-{suffix}"


def model_request(
    name: str, package_arn: str, role_arn: str, security: SecurityConfig | None = None
) -> dict[str, Any]:
    """CreateModel from a registered version: SageMaker takes image, data and environment from it.

    The VPC and network isolation come from the pipeline config's security section, as for the pipeline's
    jobs and deploy.batch's transform models: a model deployed by hand must not bypass the network rules.
    """
    request: dict[str, Any] = {
        "ModelName": name,
        "PrimaryContainer": {"ModelPackageName": package_arn},
        "ExecutionRoleArn": role_arn,
    }
    return request | network_settings(security)


def network_settings(security: SecurityConfig | None) -> dict[str, Any]:
    """CreateModel's VpcConfig (subnets + security groups) and EnableNetworkIsolation, when configured.

    Raises:
        UsageError: subnets without security groups or the reverse (SageMaker needs both for a VPC).
    """
    if security is None:
        return {}
    if bool(security.subnets) != bool(security.security_group_ids):
        raise UsageError(
            "security.subnets and security.security_group_ids must be set together "
            f"(got {len(security.subnets)} subnet(s), {len(security.security_group_ids)} security group(s))"
        )
    out: dict[str, Any] = {}
    if security.subnets:
        out["VpcConfig"] = {
            "Subnets": list(security.subnets),
            "SecurityGroupIds": list(security.security_group_ids),
        }
    if security.enable_network_isolation:
        out["EnableNetworkIsolation"] = True
    return out


def production_variant(
    name: str, model_name: str, weight: float, settings: EndpointSettings
) -> dict[str, Any]:
    variant: dict[str, Any] = {"VariantName": name, "ModelName": model_name, "InitialVariantWeight": weight}
    if settings.serverless is not None:
        variant["ServerlessConfig"] = {
            "MemorySizeInMB": settings.serverless.memory_size_mb,
            "MaxConcurrency": settings.serverless.max_concurrency,
        }
    else:
        variant["InstanceType"] = settings.instance_type
        variant["InitialInstanceCount"] = settings.instance_count
    return variant


def capture_config(settings: EndpointSettings, security: SecurityConfig | None = None) -> dict[str, Any]:
    """DataCaptureConfig; captured data is encrypted with endpoint.kms_key_id, else security.kms_key_id
    (the key the pipeline's deploy step uses for capture)."""
    capture = settings.data_capture
    config: dict[str, Any] = {
        "EnableCapture": True,
        "InitialSamplingPercentage": capture.sampling_percentage,
        "DestinationS3Uri": capture.destination_s3_uri,
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        # Listed types are stored as text; anything else base64 (SageMaker's rule).
        "CaptureContentTypeHeader": CAPTURE_CONTENT_TYPES,
    }
    key = settings.kms_key_id or (security.kms_key_id if security is not None else None)
    if key:
        config["KmsKeyId"] = key
    return config


def endpoint_config_request(
    name: str,
    variants: Sequence[dict[str, Any]],
    settings: EndpointSettings,
    security: SecurityConfig | None = None,
) -> dict[str, Any]:
    """CreateEndpointConfig: variants, volume KMS key and data capture.

    The volume key is endpoint.kms_key_id, else security.volume_kms_key_id (what the pipeline's deploy step
    uses). Serverless endpoints get neither: they have no ML storage volume to encrypt and data capture is
    among SageMaker's Serverless Inference feature exclusions.
    """
    request: dict[str, Any] = {"EndpointConfigName": name, "ProductionVariants": list(variants)}
    if settings.serverless is None:
        key = settings.kms_key_id or (security.volume_kms_key_id if security is not None else None)
        if key:
            request["KmsKeyId"] = key
        if settings.data_capture.enabled:
            request["DataCaptureConfig"] = capture_config(settings, security)
    return request


def alarm_names(endpoint: str, variant: str) -> tuple[str, str]:
    return f"{endpoint}-{variant}-5xx-errors", f"{endpoint}-{variant}-p99-model-latency"


def alarm_requests(endpoint: str, variants: Sequence[str], rollout: RolloutSettings) -> list[dict[str, Any]]:
    """PutMetricAlarm requests: 5XX errors (Sum) and p99 ModelLatency per variant, missing data = OK.

    Missing data must not breach: a canary fleet with no traffic yet is not failing.
    """
    requests = []
    for variant in variants:
        errors_name, latency_name = alarm_names(endpoint, variant)
        dimensions = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]
        common = {
            "Namespace": "AWS/SageMaker",
            "Dimensions": dimensions,
            "Period": rollout.alarm_period_seconds,
            "EvaluationPeriods": rollout.alarm_evaluation_periods,
            "TreatMissingData": "notBreaching",
        }
        requests.append(
            {
                "AlarmName": errors_name,
                "AlarmDescription": f"Rolls back a deployment of {endpoint} on 5XX errors of {variant}.",
                "MetricName": "Invocation5XXErrors",
                "Statistic": "Sum",
                "Threshold": float(rollout.max_5xx_errors),
                "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                **common,
            }
        )
        requests.append(
            {
                "AlarmName": latency_name,
                "AlarmDescription": f"Rolls back a deployment of {endpoint} on slow p99 of {variant}.",
                "MetricName": "ModelLatency",
                "ExtendedStatistic": "p99",
                # ModelLatency is reported in microseconds.
                "Threshold": float(rollout.p99_latency_ms * 1000.0),
                "ComparisonOperator": "GreaterThanThreshold",
                **common,
            }
        )
    return requests


def deployment_config(alarms: Sequence[str], rollout: RolloutSettings) -> dict[str, Any]:
    """Blue/green with a canary: a slice of traffic first, the rest after the wait, rollback on any alarm."""
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": "CANARY",
                "CanarySize": {"Type": rollout.canary_size.type, "Value": rollout.canary_size.value},
                "WaitIntervalInSeconds": rollout.wait_interval_seconds,
            },
            "TerminationWaitInSeconds": rollout.termination_wait_seconds,
            "MaximumExecutionTimeoutInSeconds": rollout.max_execution_timeout_seconds,
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in alarms]},
    }


# --- operations --------------------------------------------------------------------------------------
def find_endpoint(client: Any, name: str) -> dict[str, Any] | None:
    """DescribeEndpoint, or None when there is no such endpoint."""
    try:
        return client.describe_endpoint(EndpointName=name)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def deploy(
    target: Target,
    endpoint: str,
    variants: Sequence[VariantSpec],
    settings: DeploySettings,
    wait: bool = True,
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    """Create the endpoint, or update it blue/green, to serve these model package versions.

    Returns:
        DescribeEndpoint after the change (as submitted when `wait` is False).

    Raises:
        UsageError: no variants, duplicate names, or several variants on a serverless endpoint.
        OperationFailed: the endpoint did not reach InService on the new config (an update that failed its
            health check or tripped an alarm leaves the old config serving).
    """
    names = [v.name for v in variants]
    if not variants or len(set(names)) != len(names):
        raise UsageError(f"need one or more variants with distinct names, got {names}")
    if settings.endpoint.serverless is not None and len(variants) > 1:
        raise UsageError("a serverless endpoint has one production variant (SageMaker's serverless limits)")
    role = settings.role(target)
    network_settings(settings.security)  # a half-configured VPC fails before anything is created
    suffix = unique_suffix()
    production = []
    created = Created()
    try:
        for spec in variants:
            model_name = resource_name(endpoint, spec.name, f"v{version_of(spec.package_arn)}", suffix=suffix)
            target.sagemaker.create_model(
                **model_request(model_name, spec.package_arn, role, settings.security)
            )
            created.models.append(model_name)
            production.append(production_variant(spec.name, model_name, spec.weight, settings.endpoint))
        config_name = resource_name(endpoint, suffix=suffix)
        target.sagemaker.create_endpoint_config(
            **endpoint_config_request(config_name, production, settings.endpoint, settings.security)
        )
        created.config = config_name
        return apply_config(target, endpoint, config_name, settings, wait, out, created)
    except (ClientError, BotoCoreError, OperationFailed, UsageError, TargetError) as exc:
        raise failed_deploy(target, endpoint, created, exc) from None


@dataclass
class Created:
    """What one deploy run created, so that a failure removes exactly that and never what served before."""

    models: list[str] = field(default_factory=list)
    config: str | None = None
    endpoint: bool = False  # this run called CreateEndpoint (the endpoint did not exist before)


# Endpoint states in which nothing is being switched to or from a config any more.
_SETTLED = ("InService", "Failed", "OutOfService")


def failed_deploy(target: Target, endpoint: str, created: Created, error: Exception) -> Exception:
    """Remove what the failed run created once nothing uses it; the error to raise says what happened.

    The endpoint is described first: its resources are deleted only when it does not exist, or has settled
    on another config (a failed or rolled-back update keeps serving the old one), or is an endpoint this run
    created that ended Failed (then it goes too: it never served). While the endpoint is still creating or
    updating (a wait that timed out) or serves the new config, everything is left in place and named.
    """
    message = error_text(error)
    names = [f"model {m}" for m in created.models] + (
        [f"endpoint config {created.config}"] if created.config else []
    )
    if names:
        message += "; " + _clean_up(target, endpoint, created, names)
    if isinstance(error, UsageError | TargetError):
        return type(error)(message)  # keeps its exit code
    if is_target_error(error):
        return TargetError(message)
    return OperationFailed(message)


def _clean_up(target: Target, endpoint: str, created: Created, names: list[str]) -> str:
    client = target.sagemaker
    left = ", ".join(names)
    try:
        described = find_endpoint(client, endpoint)
    except (ClientError, BotoCoreError) as exc:
        return f"left {left} (cannot tell whether endpoint {endpoint} uses them: {error_text(exc)})"
    removed: list[str] = []
    if described is not None:
        status, current = described["EndpointStatus"], described.get("EndpointConfigName")
        if current == created.config and created.endpoint and status == "Failed":
            try:
                client.delete_endpoint(EndpointName=endpoint)
            except (ClientError, BotoCoreError) as exc:
                return f"left {left} and the failed endpoint {endpoint} ({error_text(exc)})"
            removed.append(f"the failed endpoint {endpoint}")
        elif current == created.config or status not in _SETTLED:
            return f"left {left} (endpoint {endpoint} is {status} on {current}, they may be in use)"
    calls: list[tuple[str, Any, dict[str, str]]] = []
    if created.config:
        calls.append((f"endpoint config {created.config}", client.delete_endpoint_config,
                      {"EndpointConfigName": created.config}))  # fmt: skip
    calls += [(f"model {m}", client.delete_model, {"ModelName": m}) for m in created.models]
    failures: list[str] = []
    for what, call, request in calls:
        try:
            call(**request)
            removed.append(what)
        except (ClientError, BotoCoreError) as exc:
            if isinstance(exc, ClientError) and is_not_found(exc):
                continue
            failures.append(f"{what} ({error_text(exc)})")
    text = "removed what this deploy created: " + (", ".join(removed) or "nothing")
    return text + (f"; could not remove {', '.join(failures)}" if failures else "")


def apply_config(
    target: Target,
    endpoint: str,
    config_name: str,
    settings: DeploySettings,
    wait: bool = True,
    out: TextIO = sys.stdout,
    created: Created | None = None,
) -> dict[str, Any]:
    """Point the endpoint at a config: create it, or update it (canary + alarm rollback on AWS).

    `created` records that this call created the endpoint (what `failed_deploy` may remove).
    """
    client = target.sagemaker
    config = client.describe_endpoint_config(EndpointConfigName=config_name)
    variants = [v["VariantName"] for v in config["ProductionVariants"]]
    serverless = any("ServerlessConfig" in v for v in config["ProductionVariants"])
    existing = find_endpoint(client, endpoint)
    scaling = target.aws("application-autoscaling")
    if existing is None:
        if created is not None:
            created.endpoint = True
        client.create_endpoint(EndpointName=endpoint, EndpointConfigName=config_name)
        print(f"creating endpoint {endpoint} with {config_name}", file=out)
    else:
        request: dict[str, Any] = {"EndpointName": endpoint, "EndpointConfigName": config_name}
        cloudwatch = target.aws("cloudwatch")
        if cloudwatch is not None:
            alarms = alarm_requests(endpoint, variants, settings.endpoint.rollout)
            for alarm in alarms:
                cloudwatch.put_metric_alarm(**alarm)
            request["DeploymentConfig"] = deployment_config(
                [a["AlarmName"] for a in alarms], settings.endpoint.rollout
            )
        if scaling is not None:
            old = client.describe_endpoint_config(EndpointConfigName=existing["EndpointConfigName"])
            autoscaling.release_for_update(scaling, endpoint, old["ProductionVariants"], config)
        client.update_endpoint(**request)
        how = "canary blue/green, rollback on alarms" if "DeploymentConfig" in request else "blue/green"
        print(f"updating endpoint {endpoint} to {config_name} ({how})", file=out)
    if not wait:
        return client.describe_endpoint(EndpointName=endpoint)
    described = wait_in_service(client, endpoint)
    if described["EndpointConfigName"] != config_name:
        reason = described.get("FailureReason") or "rolled back"
        raise OperationFailed(
            f"endpoint {endpoint} did not move to {config_name}: {reason}; "
            f"it keeps serving {described['EndpointConfigName']}"
        )
    if scaling is not None and settings.autoscaling.enabled and not serverless:
        for variant in variants:
            autoscaling.apply(scaling, endpoint, variant, settings.autoscaling)
        print(f"autoscaling {endpoint}: {autoscaling.summary(settings.autoscaling)}", file=out)
    print(f"endpoint {endpoint}: {described['EndpointStatus']} on {config_name}", file=out)
    return described


def wait_in_service(client: Any, endpoint: str) -> dict[str, Any]:
    """Wait for InService (botocore's waiter: 30 s polls on AWS, immediate locally)."""
    try:
        client.get_waiter("endpoint_in_service").wait(EndpointName=endpoint)
    except WaiterError:
        described = client.describe_endpoint(EndpointName=endpoint)
        raise OperationFailed(
            f"endpoint {endpoint} is {described['EndpointStatus']}: "
            f"{described.get('FailureReason', 'no reason given')}"
        ) from None
    described = client.describe_endpoint(EndpointName=endpoint)
    if described["EndpointStatus"] != "InService":
        raise OperationFailed(f"endpoint {endpoint} is {described['EndpointStatus']}")
    return described


def version_of(package_arn: str) -> str:
    """The version of a versioned package ARN (`.../<group>/<version>`), else its last segment."""
    return package_arn.rsplit("/", 1)[-1]


@cache
def _input_members(shape: str) -> frozenset[str]:
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return frozenset(model.shape_for(shape).members)


def replace_models(
    target: Target,
    endpoint: str,
    replacements: dict[str, str],
    settings: DeploySettings,
    wait: bool = True,
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    """Redeploy the endpoint's current config with some variants on other package versions.

    Everything else (instance types and counts, weights, capture, KMS) is copied from the config being
    replaced, so a rollback changes the model and nothing else.

    Args:
        replacements: variant name -> model package ARN.
    """
    client = target.sagemaker
    current = client.describe_endpoint(EndpointName=endpoint)
    config = client.describe_endpoint_config(EndpointConfigName=current["EndpointConfigName"])
    network_settings(settings.security)
    suffix = unique_suffix()
    variants = []
    created = Created()
    try:
        for variant in config["ProductionVariants"]:
            copy = {k: v for k, v in variant.items() if k in _input_members("ProductionVariant")}
            if (package_arn := replacements.get(variant["VariantName"])) is not None:
                old_model = client.describe_model(ModelName=variant["ModelName"])
                role = old_model.get("ExecutionRoleArn") or settings.role(target)
                name = resource_name(
                    endpoint, variant["VariantName"], f"v{version_of(package_arn)}", suffix=suffix
                )
                model = model_request(name, package_arn, role, settings.security)
                # Without a configured VPC, the replaced model's network settings are kept like the rest.
                for key in ("VpcConfig", "EnableNetworkIsolation"):
                    if key not in model and old_model.get(key):
                        model[key] = old_model[key]
                client.create_model(**model)
                created.models.append(name)
                copy["ModelName"] = name
            variants.append(copy)
        request = {
            k: v
            for k, v in config.items()
            if k in _input_members("CreateEndpointConfigInput") and k not in ("EndpointConfigName", "Tags")
        }
        request.update(
            {"EndpointConfigName": resource_name(endpoint, suffix=suffix), "ProductionVariants": variants}
        )
        client.create_endpoint_config(**request)
        created.config = request["EndpointConfigName"]
        return apply_config(target, endpoint, request["EndpointConfigName"], settings, wait, out, created)
    except (ClientError, BotoCoreError, OperationFailed, UsageError, TargetError) as exc:
        raise failed_deploy(target, endpoint, created, exc) from None


def deployed_packages(target: Target, endpoint: str, group: str) -> dict[str, str | None]:
    """Variant -> model package ARN it serves (by the model's ModelPackageName, else its ModelDataUrl)."""
    from deploy import registry

    client = target.sagemaker
    described = client.describe_endpoint(EndpointName=endpoint)
    config = client.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    by_data: dict[str, str] | None = None
    out: dict[str, str | None] = {}
    for variant in config["ProductionVariants"]:
        model = client.describe_model(ModelName=variant["ModelName"])
        container = model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]
        package = container.get("ModelPackageName")
        if package is None and container.get("ModelDataUrl"):
            # Models the pipeline created point at the artefact, not the package: match the artefact.
            if by_data is None:
                by_data = registry.data_urls(client, group)
            package = by_data.get(container["ModelDataUrl"])
        out[variant["VariantName"]] = package
    return out


def invoke(
    target: Target,
    endpoint: str,
    body: bytes,
    content_type: str = "text/csv",
    accept: str | None = None,
    target_variant: str | None = None,
    target_model: str | None = None,
    inference_id: str | None = None,
) -> tuple[bytes, str, str]:
    """InvokeEndpoint through boto3's sagemaker-runtime client; returns (body, variant, content type)."""
    request: dict[str, Any] = {"EndpointName": endpoint, "Body": body, "ContentType": content_type}
    for key, value in (
        ("Accept", accept),
        ("TargetVariant", target_variant),
        ("TargetModel", target_model),
        ("InferenceId", inference_id),
    ):
        if value:
            request[key] = value
    response = target.runtime(endpoint).invoke_endpoint(**request)
    return (
        response["Body"].read(),
        response.get("InvokedProductionVariant", ""),
        response.get("ContentType", ""),
    )


def create_multi_model(
    target: Target,
    endpoint: str,
    model_prefix: str,
    settings: DeploySettings,
    image: str | None = None,
    wait: bool = True,
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    """A multi-model endpoint: every model.tar.gz under the prefix, chosen per request by TargetModel.

    The container runs in MultiModel mode: a target model is loaded on first use and kept in an LRU cache
    (`multi_model.cache_size` models on the local engine; SageMaker sizes it by instance memory).
    """
    if not model_prefix.startswith("s3://"):
        raise UsageError(f"--model-prefix must be an s3:// prefix, got {model_prefix!r}")
    prefix = model_prefix.rstrip("/") + "/"
    if not [uri for uri in target.objects().list(prefix) if uri.endswith(".tar.gz")]:
        raise UsageError(f"no .tar.gz model artefacts under {prefix}")
    image = image or settings.multi_model.image
    if image is None:
        if not target.is_local:
            raise UsageError("a multi-model endpoint on SageMaker needs --image (or multi_model.image)")
        image = "local/multi-model"
    if settings.endpoint.serverless is not None:
        raise UsageError("serverless endpoints cannot be multi-model (SageMaker's serverless limits)")
    role = settings.role(target)
    network = network_settings(settings.security)
    suffix = unique_suffix()
    model_name = resource_name(endpoint, "multi", suffix=suffix)
    created = Created()
    try:
        target.sagemaker.create_model(
            ModelName=model_name,
            PrimaryContainer={
                "Image": image,
                "Mode": "MultiModel",
                "ModelDataUrl": prefix,
                "MultiModelConfig": {"ModelCacheSetting": "Enabled"},
                "Environment": {**SERVING_ENV, MULTI_MODEL_CACHE_ENV: str(settings.multi_model.cache_size)},
            },
            ExecutionRoleArn=role,
            **network,
        )
        created.models.append(model_name)
        config_name = resource_name(endpoint, suffix=suffix)
        variant = production_variant(SINGLE_VARIANT, model_name, 1.0, settings.endpoint)
        target.sagemaker.create_endpoint_config(
            **endpoint_config_request(config_name, [variant], settings.endpoint, settings.security)
        )
        created.config = config_name
        return apply_config(target, endpoint, config_name, settings, wait, out, created)
    except (ClientError, BotoCoreError, OperationFailed, UsageError, TargetError) as exc:
        raise failed_deploy(target, endpoint, created, exc) from None


# --- CLI ---------------------------------------------------------------------------------------------
def make_client(target: str, root: Path, region: str) -> Any:
    """The SageMaker client of the target (kept for callers of the first version of this module)."""
    from deploy.clients import make_target

    return make_target(target, root, region).sagemaker


def list_endpoints(client: Any, out: TextIO) -> int:
    rows = list(paginate(client.list_endpoints, "Endpoints"))
    if not rows:
        print("no endpoints", file=out)
        return 0
    for row in rows:
        when = f"{row['LastModifiedTime']:%Y-%m-%d %H:%M:%S}"
        line = f"{row['EndpointName']:<40} {row['EndpointStatus']:<12} {when}"
        print(line + _local_url(client, row["EndpointName"]), file=out)
    return 0


def _local_url(client: Any, name: str) -> str:
    """Where a local endpoint listens (the local client's extension; SageMaker endpoints have no URL here)."""
    local = getattr(client, "local_endpoint", None)
    if local is None:
        return ""
    url = local(EndpointName=name).get("url")
    return f" {url}" if url else ""


def describe(client: Any, name: str, out: TextIO) -> int:
    response = {
        k: v for k, v in client.describe_endpoint(EndpointName=name).items() if k != "ResponseMetadata"
    }
    if hasattr(client, "local_endpoint"):
        local = client.local_endpoint(EndpointName=name)
        response["Local"] = {k: local[k] for k in ("url", "pid", "port", "generation") if k in local}
    print(json.dumps(response, indent=2, default=str), file=out)
    return 0


def stop(client: Any, name: str, out: TextIO, cloudwatch: Any = None) -> int:
    """DeleteEndpoint, then (AWS) DeleteAlarms of the rollback alarms deploy created for it.

    The alarms go even when the endpoint is already gone (a stop that failed half-way is re-run); the
    missing endpoint is still reported as the error it is.
    """
    missing: ClientError | None = None
    try:
        client.delete_endpoint(EndpointName=name)
    except ClientError as exc:
        if cloudwatch is None or not is_not_found(exc):
            raise
        missing = exc
    if cloudwatch is not None:
        alarms = rollback_alarms(cloudwatch, name)
        for start in range(0, len(alarms), 100):  # DeleteAlarms takes up to 100 names
            cloudwatch.delete_alarms(AlarmNames=alarms[start : start + 100])
        if alarms:
            print(f"deleted alarms {', '.join(alarms)}", file=out)
    if missing is not None:
        raise missing
    print(f"deleted endpoint {name}", file=out)
    return 0


def rollback_alarms(cloudwatch: Any, endpoint: str) -> list[str]:
    """The alarms `deploy` created for this endpoint (alarm_requests): their names on their own dimensions.

    Matching the name alone is not enough: endpoint `ep`'s prefix also lists `ep-2`'s alarms, and someone
    else's alarm may share a name pattern; ours watch AWS/SageMaker for exactly this endpoint and a variant.
    """
    found: list[str] = []
    for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=f"{endpoint}-"):
        for alarm in page.get("MetricAlarms", []):
            dimensions = {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}
            variant = dimensions.get("VariantName")
            if (
                alarm.get("Namespace") == "AWS/SageMaker"
                and dimensions.get("EndpointName") == endpoint
                and variant is not None
                and alarm["AlarmName"] in alarm_names(endpoint, variant)
            ):
                found.append(alarm["AlarmName"])
    return found


def stop_all(target: Target, out: TextIO) -> int:
    """Local only: stop every local endpoint server (`make clean`); on AWS that would be far too broad."""
    if not target.is_local:
        raise UsageError("stop --all is for the local target only; name the SageMaker endpoint to delete")
    names = [row["EndpointName"] for row in paginate(target.sagemaker.list_endpoints, "Endpoints")]
    for name in names:
        stop(target.sagemaker, name, out)
    if not names:
        print("no endpoints", file=out)
    return 0


def read_body(value: str) -> bytes:
    """--body TEXT, or @FILE for a file's bytes (as the AWS CLI's file:// does)."""
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read body file {value[1:]}: {exc.strerror or exc}") from None
    return value.encode("utf-8")


def settings_from_args(args: argparse.Namespace) -> DeploySettings:
    """--settings FILE with the command's flags on top (flags absent on a command stay None)."""

    def flag(name: str) -> Any:
        return getattr(args, name, None)

    overrides: dict[str, Any] = {
        "role_arn": flag("role_arn"),
        "endpoint.instance_type": flag("instance_type"),
        "endpoint.instance_count": flag("instance_count"),
        "endpoint.kms_key_id": flag("kms_key"),
        "endpoint.data_capture.sampling_percentage": flag("capture_percent"),
        "endpoint.data_capture.destination_s3_uri": flag("capture_uri"),
        "multi_model.cache_size": flag("cache_size"),
        "multi_model.image": flag("image"),
        "model_package_group": flag("group"),
    }
    if flag("no_capture"):
        overrides["endpoint.data_capture.enabled"] = False
    if flag("dev"):
        overrides["endpoint.production"] = False
    if flag("serverless_memory") or flag("serverless_concurrency"):
        overrides["endpoint.serverless.memory_size_mb"] = flag("serverless_memory") or 2048
        overrides["endpoint.serverless.max_concurrency"] = flag("serverless_concurrency") or 5
    if hasattr(args, "config") and (pipeline := args.config or os.environ.get("PDM_CONFIG")):
        overrides["security"] = pipeline_security(Path(pipeline)).model_dump()
    return load_settings(getattr(args, "settings", None), overrides)


def pipeline_security(path: Path) -> SecurityConfig:
    """The `security` section of a pipeline config (validated there: subnets need security groups)."""
    from pipelines.config import load_config

    try:
        return load_config(path).security
    except ConfigError as exc:
        raise UsageError(f"pipeline config {path}: {exc}") from None


def add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    """Flags that shape a new endpoint config (each overrides the settings file)."""
    parser.add_argument("--role-arn", help="execution role (default role_arn, $PDM_ROLE_ARN)")
    parser.add_argument("--instance-type", help="e.g. ml.m5.large")
    parser.add_argument("--instance-count", type=int, help="instances per variant (>= 2 unless --dev)")
    parser.add_argument("--dev", action="store_true", help="not a production endpoint: one instance is fine")
    parser.add_argument("--serverless-memory", type=int, help="serverless endpoint with this memory (MB)")
    parser.add_argument("--serverless-concurrency", type=int, help="serverless max concurrency")
    parser.add_argument("--kms-key", help="KMS key for the instance volume and the captured data")
    parser.add_argument("--capture-percent", type=int, help="data capture sampling percentage")
    parser.add_argument("--capture-uri", help="data capture destination (s3://...)")
    parser.add_argument("--no-capture", action="store_true", help="no data capture")
    parser.add_argument(
        "--config",
        type=Path,
        help="pipeline config whose `security` section (VPC subnets and security groups, network isolation, "
        "KMS keys) the models and endpoint config get (default $PDM_CONFIG)",
    )
    parser.add_argument("--no-wait", action="store_true", help="return once the change is submitted")


def _parser() -> argparse.ArgumentParser:
    parser, sub, common = cli_parser("python -m deploy.endpoint", __doc__)
    sub.add_parser("list", parents=[common], help="endpoints with status (and URL when local)")
    sub.add_parser("describe", parents=[common], help="DescribeEndpoint of one endpoint").add_argument("name")
    stop_parser = sub.add_parser(
        "stop", parents=[common], help="delete the endpoint (local: stop its server)"
    )
    stop_parser.add_argument("name", nargs="?")
    stop_parser.add_argument("--all", action="store_true", help="every local endpoint")

    deploy_parser = sub.add_parser(
        "deploy", parents=[common], help="create or update an endpoint from a registered model version"
    )
    deploy_parser.add_argument("name", help="endpoint name")
    which = deploy_parser.add_mutually_exclusive_group()
    which.add_argument("--version", help="version number in the group (default: the champion)")
    which.add_argument("--package", help="model package ARN")
    add_endpoint_options(deploy_parser)

    invoke_parser = sub.add_parser(
        "invoke", parents=[common], help="InvokeEndpoint; prints the response body"
    )
    invoke_parser.add_argument("name")
    invoke_parser.add_argument("--body", required=True, help="request body, or @FILE")
    invoke_parser.add_argument("--content-type", default="text/csv")
    invoke_parser.add_argument("--accept")
    invoke_parser.add_argument("--target-variant", help="route to this production variant")
    invoke_parser.add_argument("--target-model", help="multi-model endpoints: model path under the prefix")
    invoke_parser.add_argument("--inference-id", help="stored with the captured request (A/B joins)")

    multi = sub.add_parser(
        "create-multi-model", parents=[common], help="one endpoint serving every model under an S3 prefix"
    )
    multi.add_argument("name")
    multi.add_argument("--model-prefix", required=True, help="s3://.../ holding <name>.tar.gz artefacts")
    multi.add_argument(
        "--cache-size", type=int, help="models kept loaded (LRU; default multi_model.cache_size)"
    )
    multi.add_argument("--image", help="serving image (required on SageMaker)")
    add_endpoint_options(multi)
    return parser


def main(argv: list[str] | None = None, client: Any = None, out: TextIO = sys.stdout) -> int:
    """Entry point; `client` (a SageMaker client) lets tests run the CLI on a given local client."""
    parser = _parser()
    args = parser.parse_args(argv)

    def work() -> int:
        if client is not None:
            target = Target("local" if hasattr(client, "local_endpoint") else "sagemaker", client)
        else:
            target = target_from_args(args)
        return _run(args, target, out)

    return run_cli(work)


def main_with_target(argv: list[str], target: Target, out: TextIO = sys.stdout) -> int:
    """Entry point for tests that bring a whole Target (stubbed AWS clients, a local runtime)."""
    args = _parser().parse_args(argv)
    return run_cli(lambda: _run(args, target, out))


def _run(args: argparse.Namespace, target: Target, out: TextIO) -> int:
    from deploy import registry

    client = target.sagemaker
    if args.command == "list":
        return list_endpoints(client, out)
    if args.command == "describe":
        return describe(client, args.name, out)
    if args.command == "stop":
        if args.all:
            return stop_all(target, out)
        if not args.name:
            raise UsageError("stop needs an endpoint name (or --all for every local endpoint)")
        return stop(client, args.name, out, target.aws("cloudwatch"))
    if args.command == "invoke":
        body, variant, _ = invoke(
            target,
            args.name,
            read_body(args.body),
            args.content_type,
            args.accept,
            args.target_variant,
            args.target_model,
            args.inference_id,
        )
        text = body.decode("utf-8", errors="replace")
        print(text.rstrip("\n"), file=out)
        print(f"variant: {variant}", file=sys.stderr)
        return 0
    settings = settings_from_args(args)
    wait = not args.no_wait
    if args.command == "deploy":
        package = registry.resolve(client, settings.model_package_group, args.package or args.version)
        spec = VariantSpec(SINGLE_VARIANT, package["ModelPackageArn"], 1.0)
        deploy(target, args.name, [spec], settings, wait, out)
        return 0
    create_multi_model(target, args.name, args.model_prefix, settings, args.image, wait, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
