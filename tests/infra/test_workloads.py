"""CI/CD, serving, API, reliability, cost and observability requirements of the templates."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

from deploy.infra.stacks import load_environment, plan
from tests.infra.cfn_helpers import as_list, branches, parameter_defaults, props, resources

COST_TAGS = {"project", "environment", "cost-center"}


# ------------------------------------------------------------------------------------------------ CI/CD
def test_pipeline_tests_and_trains_then_waits_for_approval_then_deploys(templates: dict[str, Any]) -> None:
    stages = props(templates["cicd"], "Pipeline")["Stages"]
    assert [s["Name"] for s in stages] == ["Source", "TestAndTrain", "ApproveProduction", "DeployProduction"]
    (source,) = stages[0]["Actions"]
    providers = [b["ActionTypeId"]["Provider"] for b in branches(source)]
    assert providers == ["CodeCommit", "CodeStarSourceConnection"]
    assert source["Fn::If"][0] == "UseCodeCommit"
    train = stages[1]["Actions"][0]
    assert train["ActionTypeId"]["Provider"] == "CodeBuild"
    assert train["Configuration"]["ProjectName"] == {"Ref": "TrainProject"}
    (approval,) = stages[2]["Actions"]
    assert approval["ActionTypeId"] == {
        "Category": "Approval",
        "Owner": "AWS",
        "Provider": "Manual",
        "Version": "1",
    }
    assert "approvals-topic-arn" in approval["Configuration"]["NotificationArn"]["Fn::ImportValue"]["Fn::Sub"]
    (deploy,) = stages[3]["Actions"]
    assert deploy["Configuration"]["ProjectName"] == {"Ref": "PromoteProject"}


def test_codebuild_runs_buildspec_with_role_bucket_and_params(templates: dict[str, Any]) -> None:
    project = props(templates["cicd"], "TrainProject")
    assert project["Source"] == {"Type": "CODEPIPELINE", "BuildSpec": "buildspec.yml"}
    env = {v["Name"]: v["Value"] for v in project["Environment"]["EnvironmentVariables"]}
    assert env["PDM_ROLE_ARN"] == {"Fn::GetAtt": ["SageMakerExecutionRole", "Arn"]}
    assert env["PDM_BUCKET"] == {
        "Fn::ImportValue": {"Fn::Sub": "${ProjectName}-${Environment}-artifacts-bucket"}
    }
    assert env["PDM_PARAMS"] == {"Ref": "PipelineParameters"}
    assert env["PDM_REGION"] == {"Ref": "AWS::Region"}
    assert project["Environment"]["PrivilegedMode"] is False
    assert project["EncryptionKey"]


# Sample values for every PDM_* variable the CodeBuild projects set (the values only need to be valid).
SAMPLE_VALUES = {
    "PDM_ROLE_ARN": "arn:aws:iam::123456789012:role/pdm-dev-sagemaker-exec-eu-west-1",
    "PDM_BUCKET": "pdm-dev-artifacts-123456789012-eu-west-1",
    "PDM_REGION": "eu-west-1",
    "PDM_PIPELINE_NAME": "pdm-mlops-dev",
    "PDM_REGISTRY__APPROVAL_STATUS": "PendingManualApproval",
    "PDM_DATA__INPUT_URI": "s3://pdm-dev-data-123456789012-eu-west-1/data/",
    "PDM_SECURITY__SUBNETS": "[subnet-0a, subnet-0b]",
    "PDM_SECURITY__SECURITY_GROUP_IDS": "[sg-0a]",
    "PDM_SECURITY__ENABLE_NETWORK_ISOLATION": "true",
}


def test_codebuild_variables_are_settings_the_pipeline_config_knows(templates: dict[str, Any]) -> None:
    """pipelines/config.py rejects unknown PDM_* variables: every one set here must be one of its settings."""
    config = pytest.importorskip("pipelines.config")
    names = {
        v["Name"]
        for project in resources(templates["cicd"], "AWS::CodeBuild::Project").values()
        for v in project["Properties"]["Environment"].get("EnvironmentVariables", [])
        if v["Name"].startswith("PDM_")
    }
    assert {"PDM_ROLE_ARN", "PDM_BUCKET", "PDM_PARAMS"} <= names
    environ = {name: SAMPLE_VALUES.get(name, "pdm-value") for name in names}
    loaded = config.load_config(environ={**environ, "PDM_PARAMS": "tuning.max_jobs=4"})
    assert loaded.region == "eu-west-1"
    assert loaded.security.subnets == ["subnet-0a", "subnet-0b"]
    assert loaded.registry.approval_status == "PendingManualApproval"


def test_release_projects_run_the_published_source(templates: dict[str, Any]) -> None:
    cicd = templates["cicd"]
    publish = props(cicd, "Pipeline")["Stages"][1]["Actions"][1]
    assert publish["ActionTypeId"]["Provider"] == "S3"
    key = publish["Configuration"]["ObjectKey"]
    for project in ("DeployProject", "RollbackProject"):
        source = props(cicd, project)["Source"]
        assert source["Type"] == "S3"
        assert source["Location"]["Fn::Sub"][0].endswith(key)


def test_pipeline_failures_alarm(templates: dict[str, Any]) -> None:
    cicd = templates["cicd"]
    alarm = props(cicd, "SageMakerPipelineFailedAlarm")
    assert (alarm["Namespace"], alarm["MetricName"]) == (
        "AWS/Sagemaker/ModelBuildingPipeline",
        "ExecutionFailed",
    )
    assert props(cicd, "TrainBuildFailedAlarm")["MetricName"] == "FailedBuilds"
    pattern = props(cicd, "ReleaseBuildFailedRule")["EventPattern"]["$or"]
    assert {p["source"][0] for p in pattern} == {"aws.codebuild", "aws.codepipeline"}


# ---------------------------------------------------------------------------------------- serving / API
def test_serving_alarms(templates: dict[str, Any]) -> None:
    serving = templates["serving"]
    assert props(serving, "Endpoint5xxAlarm")["MetricName"] == "Invocation5XXErrors"
    latency = props(serving, "EndpointLatencyAlarm")
    assert (latency["MetricName"], latency["ExtendedStatistic"]) == ("ModelLatency", "p99")
    spike = props(serving, "InvocationSpikeAlarm")
    assert spike["ComparisonOperator"] == "GreaterThanUpperThreshold"
    assert any("ANOMALY_DETECTION_BAND" in m.get("Expression", "") for m in spike["Metrics"])
    for alarm in resources(serving, "AWS::CloudWatch::Alarm").values():
        assert "alerts-topic-arn" in json.dumps(alarm["Properties"]["AlarmActions"])


def test_endpoint_autoscaling_and_blue_green(templates: dict[str, Any]) -> None:
    serving = templates["serving"]
    policy = props(serving, "InvocationsScalingPolicy")["TargetTrackingScalingPolicyConfiguration"]
    assert (
        policy["PredefinedMetricSpecification"]["PredefinedMetricType"]
        == "SageMakerVariantInvocationsPerInstance"
    )
    routing = props(serving, "Endpoint")["DeploymentConfig"]["BlueGreenUpdatePolicy"][
        "TrafficRoutingConfiguration"
    ]
    assert routing["Type"] == "CANARY"


def test_api_lambda_is_shifted_by_codedeploy_canary_with_rollback(templates: dict[str, Any]) -> None:
    api = templates["api"]
    group = props(api, "ApiDeploymentGroup")
    assert re.fullmatch(r"CodeDeployDefault\.LambdaCanary\d+Percent\d+Minutes", group["DeploymentConfigName"])
    assert group["AutoRollbackConfiguration"]["Enabled"] is True
    assert set(group["AutoRollbackConfiguration"]["Events"]) == {
        "DEPLOYMENT_FAILURE",
        "DEPLOYMENT_STOP_ON_ALARM",
    }
    assert group["AlarmConfiguration"]["Enabled"] is True and group["AlarmConfiguration"]["Alarms"]
    alias = api["Resources"]["ApiFunctionAlias"]
    assert alias["UpdatePolicy"]["CodeDeployLambdaAliasUpdate"] == {
        "ApplicationName": {"Ref": "ApiDeployApplication"},
        "DeploymentGroupName": {"Ref": "ApiDeploymentGroup"},
    }
    for method in ("PredictMethod", "HealthMethod"):
        assert "${ApiFunctionAlias}" in props(api, method)["Integration"]["Uri"]["Fn::Sub"]


def test_api_requires_cognito_and_an_api_key(templates: dict[str, Any]) -> None:
    api = templates["api"]
    predict = props(api, "PredictMethod")
    assert predict["AuthorizationType"] == "COGNITO_USER_POOLS"
    assert predict["AuthorizerId"] == {"Ref": "CognitoAuthorizer"}
    assert predict["ApiKeyRequired"] is True and predict["AuthorizationScopes"]
    assert props(api, "UsagePlanKey")["KeyId"] == {"Ref": "ApiKey"}
    assert props(api, "MachineClient")["AllowedOAuthFlows"] == ["client_credentials"]


def test_waf_blocks_sql_injection_and_xss(templates: dict[str, Any]) -> None:
    api = templates["api"]
    rules = props(api, "WebAcl")["Rules"]
    managed = {
        r["Statement"]["ManagedRuleGroupStatement"]["Name"]
        for r in rules
        if "ManagedRuleGroupStatement" in r["Statement"]
    }
    # SQLi rule set; the common rule set carries AWS's cross-site scripting rules.
    assert {"AWSManagedRulesSQLiRuleSet", "AWSManagedRulesCommonRuleSet"} <= managed
    for rule in rules:
        if "ManagedRuleGroupStatement" in rule["Statement"]:
            assert rule["OverrideAction"] == {"None": {}}, f"{rule['Name']} would only count"
    association = props(api, "WebAclAssociation")
    assert "/restapis/${RestApi}/stages/v1" in association["ResourceArn"]["Fn::Sub"]


def test_custom_domain_tls12_health_check_and_failover(templates: dict[str, Any]) -> None:
    api = templates["api"]
    assert props(api, "Certificate")["ValidationMethod"] == "DNS"
    domain = props(api, "ApiDomain")
    assert domain["SecurityPolicy"] == "TLS_1_2"
    assert domain["RegionalCertificateArn"] == {"Ref": "Certificate"}
    check = props(api, "ApiHealthCheck")["HealthCheckConfig"]
    assert (check["Type"], check["ResourcePath"], check["Port"]) == ("HTTPS", "/v1/health", 443)
    record = props(api, "FailoverRecord")
    assert record["Failover"] == {"Fn::If": ["IsPrimary", "PRIMARY", "SECONDARY"]}
    assert record["HealthCheckId"] == {"Ref": "ApiHealthCheck"}
    assert record["AliasTarget"]["EvaluateTargetHealth"] is True


def test_dashboard_shows_the_endpoint_and_the_api(templates: dict[str, Any]) -> None:
    body = props(templates["api"], "Dashboard")["DashboardBody"]["Fn::Sub"]
    dashboard = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))
    namespaces = {
        m[0] for w in dashboard["widgets"] for m in w["properties"]["metrics"] if m[0] not in (".", "...")
    }
    assert {"AWS/SageMaker", "AWS/ApiGateway", "AWS/Lambda"} <= namespaces


# ------------------------------------------------------------------------------------- reliability / DR
def test_prod_has_a_secondary_region_endpoint_and_api(templates: dict[str, Any]) -> None:
    env = load_environment("prod")
    specs = {s.unit: s for s in plan(env)}
    units = list(specs)
    assert units.index("replica@dr") < units.index("storage")
    for unit in ("serving@dr", "api@dr"):
        assert specs[unit].region == env.secondary_region != env.primary_region
        assert specs[unit].parameters["RegionRole"] == "secondary"
    assert specs["storage"].parameters["EnableReplication"] == "true"
    assert specs["serving@dr"].parameters["ImageUri"].startswith("492215442770.dkr.ecr.eu-central-1.")


def test_dev_has_no_disaster_recovery_stacks() -> None:
    specs = plan(load_environment("dev"))
    assert all(s.region_role == "primary" for s in specs)
    assert {s.parameters.get("EnableReplication") for s in specs} <= {None, "false"}


# ----------------------------------------------------------------------------------------------- cost
def test_efs_is_encrypted_in_private_subnets_with_an_access_point(templates: dict[str, Any]) -> None:
    storage = templates["storage"]
    fs = props(storage, "SharedFileSystem")
    assert fs["Encrypted"] is True and fs["KmsKeyId"]
    targets = resources(storage, "AWS::EFS::MountTarget")
    subnets = [t["Properties"]["SubnetId"]["Fn::ImportValue"]["Fn::Sub"] for t in targets.values()]
    assert all("-private-subnet-" in s for s in subnets) and len(subnets) >= 2
    assert props(storage, "DatasetsAccessPoint")["RootDirectory"]["Path"] == "/datasets"


def test_budget_alerts_at_80_actual_and_100_forecast(templates: dict[str, Any]) -> None:
    budget = props(templates["governance"], "MonthlyBudget")
    notes = {
        (n["Notification"]["NotificationType"], n["Notification"]["Threshold"]): n["Subscribers"]
        for n in budget["NotificationsWithSubscribers"]
    }
    assert set(notes) == {("ACTUAL", 80), ("FORECASTED", 100)}
    for subscribers in notes.values():
        assert subscribers[0]["SubscriptionType"] == "SNS"
    tags = {f["Tags"]["Key"] for f in budget["Budget"]["FilterExpression"]["And"]}
    assert tags == {"project", "environment"}


def _tag_keys(value: Any) -> set[str]:
    if isinstance(value, dict):  # map-style tags (Batch, Cognito)
        return set(value)
    return {t["Key"] for t in value}


def test_every_taggable_resource_carries_the_cost_allocation_tags(templates: dict[str, Any]) -> None:
    checked = 0
    for name, template in templates.items():
        for logical_id, resource in template["Resources"].items():
            schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", resource["Type"]).schema
            tagging = schema.get("tagging", {})
            if not tagging.get("taggable") or "tagProperty" not in tagging:
                continue
            prop = tagging["tagProperty"].removeprefix("/properties/")
            if "/" in prop:  # nested tag property (e.g. Budget's ResourceTags is top-level; none nested here)
                continue
            tags = resource.get("Properties", {}).get(prop)
            assert tags is not None, f"{name}/{logical_id} ({resource['Type']}) has no {prop}"
            assert _tag_keys(tags) >= COST_TAGS, f"{name}/{logical_id}"
            checked += 1
    assert checked >= 100


# -------------------------------------------------------------------------------------- observability
def test_cloudtrail_is_multi_region_validated_encrypted_with_data_events(templates: dict[str, Any]) -> None:
    trail = props(templates["governance"], "Trail")
    assert trail["IsMultiRegionTrail"] is True
    assert trail["EnableLogFileValidation"] is True
    assert "logs-key-arn" in json.dumps(trail["KMSKeyId"])
    (selector,) = trail["EventSelectors"]
    (data,) = selector["DataResources"]
    assert data["Type"] == "AWS::S3::Object"
    assert "artifacts-bucket-arn" in json.dumps(data["Values"])


def test_alerts_topic_is_encrypted_and_open_to_alarms_only(templates: dict[str, Any]) -> None:
    policy = props(templates["alerts"], "AlertsTopicPolicy")["PolicyDocument"]["Statement"]
    allow = [s for s in policy if s["Effect"] == "Allow"]
    assert all(s["Condition"]["StringEquals"]["aws:SourceAccount"] for s in allow)
    assert "cloudwatch.amazonaws.com" in allow[0]["Principal"]["Service"]


# ------------------------------------------------------------------------------ streaming, events, batch
def test_streaming_and_maintenance_actions(templates: dict[str, Any]) -> None:
    streaming = templates["streaming"]
    assert props(streaming, "TelemetryStream")["StreamEncryption"]["EncryptionType"] == "KMS"
    firehose = props(streaming, "TelemetryFirehose")
    assert firehose["DeliveryStreamType"] == "KinesisStreamAsSource"
    assert "data-bucket-arn" in json.dumps(firehose["ExtendedS3DestinationConfiguration"]["BucketARN"])
    telemetry = props(streaming, "TelemetryRule")["TopicRulePayload"]
    assert "Kinesis" in telemetry["Actions"][0]
    maintenance = props(streaming, "MaintenanceRule")["TopicRulePayload"]
    assert "WHERE failure_probability >=" in maintenance["Sql"]["Fn::Sub"]
    assert {next(iter(a)) for a in maintenance["Actions"]} == {"Sns", "Republish"}
    queue = props(streaming, "MaintenanceQueue")
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["MaintenanceDeadLetterQueue", "Arn"]
    }
    assert props(streaming, "MaintenanceSubscription")["Protocol"] == "sqs"


def test_batch_runs_on_spot_in_private_subnets(templates: dict[str, Any]) -> None:
    batch = templates["batch"]
    compute = props(batch, "SpotComputeEnvironment")["ComputeResources"]
    assert compute["Type"] in ("SPOT", "FARGATE_SPOT")
    assert "private-subnet-ids" in json.dumps(compute["Subnets"])
    job = props(batch, "ScoringJobDefinition")
    assert job["ContainerProperties"]["NetworkConfiguration"]["AssignPublicIp"] == "DISABLED"
    assert any(e["Action"] == "RETRY" for e in job["RetryStrategy"]["EvaluateOnExit"])


def test_inline_lambda_code_compiles(templates: dict[str, Any]) -> None:
    inline = [
        (name, lid, branch["ZipFile"])
        for name, t in templates.items()
        for lid, r in resources(t, "AWS::Lambda::Function").items()
        for branch in branches(r["Properties"]["Code"])
        if "ZipFile" in branch
    ]
    assert inline
    for name, logical_id, code in inline:
        compile(code, f"{name}/{logical_id}", "exec")
        assert len(code) <= 4096, "ZipFile code is limited to 4 KB"


def test_every_template_declares_the_common_parameters(templates: dict[str, Any]) -> None:
    for name, template in templates.items():
        defaults = parameter_defaults(template)
        assert {"ProjectName", "Environment", "CostCenter"} <= set(defaults), name
        assert as_list(template["Parameters"]["Environment"]["AllowedValues"]) == ["dev", "staging", "prod"]
