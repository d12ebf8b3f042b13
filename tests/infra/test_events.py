"""EventBridge rules against real event shapes: what retrains, what deploys, what rolls back.

Patterns are resolved with the dev environment's parameters and evaluated by moto's EventBridge pattern
matcher (moto does not implement TestEventPattern itself); the deploy/rollback input transformers are
rendered and validated against botocore's StartBuild input shape.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import botocore.session
import pytest
from botocore.validate import validate_parameters
from moto.events.models import EventPattern

from deploy.infra.stacks import load_environment, plan
from tests.infra.cfn_helpers import parameter_defaults, props, resolve

ACCOUNT, REGION = "123456789012", "eu-west-1"
DATA_BUCKET = f"pdm-dev-data-{ACCOUNT}-{REGION}"
PACKAGE_ARN = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/pdm-mlops-dev/7"

# Shapes as AWS documents them (S3 EventBridge notifications, SageMaker events, CodeCommit, CloudWatch).
S3_OBJECT_CREATED: dict[str, Any] = {
    "version": "0",
    "id": "17793124-05d4-b198-2fde-7ededc63b103",
    "detail-type": "Object Created",
    "source": "aws.s3",
    "account": ACCOUNT,
    "time": "2024-06-01T03:00:00Z",
    "region": REGION,
    "resources": [f"arn:aws:s3:::{DATA_BUCKET}"],
    "detail": {
        "version": "0",
        "bucket": {"name": DATA_BUCKET},
        "object": {
            "key": "data/2024/06/machines.csv",
            "size": 52117,
            "etag": "b1946ac92492d2347c6235b4d2611184",
            "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mppz",
            "sequencer": "00617F08299329D189",
        },
        "request-id": "N4N7GDK58NMKJ12R",
        "requester": ACCOUNT,
        "source-ip-address": "10.40.1.17",
        "reason": "PutObject",
    },
}
MODEL_PACKAGE_STATE_CHANGE: dict[str, Any] = {
    "version": "0",
    "id": "5b4d4a9c-0d4b-4c34-9a0f-1e8c1e8d9a10",
    "detail-type": "SageMaker Model Package State Change",
    "source": "aws.sagemaker",
    "account": ACCOUNT,
    "time": "2024-06-01T09:30:00Z",
    "region": REGION,
    "resources": [PACKAGE_ARN],
    "detail": {
        "ModelPackageGroupName": "pdm-mlops-dev",
        "ModelPackageVersion": 7,
        "ModelPackageArn": PACKAGE_ARN,
        "CreationTime": 1717230600000,
        "ModelPackageStatus": "Completed",
        "ModelApprovalStatus": "Approved",
    },
}
CODECOMMIT_PUSH: dict[str, Any] = {
    "version": "0",
    "id": "01234567-0123-0123-0123-012345678901",
    "detail-type": "CodeCommit Repository State Change",
    "source": "aws.codecommit",
    "account": ACCOUNT,
    "time": "2024-06-01T08:00:00Z",
    "region": REGION,
    "resources": [f"arn:aws:codecommit:{REGION}:{ACCOUNT}:pdm-mlops"],
    "detail": {
        "event": "referenceUpdated",
        "repositoryName": "pdm-mlops",
        "referenceType": "branch",
        "referenceName": "develop",
        "commitId": "3e5983EXAMPLE",
        "oldCommitId": "3e5a9bEXAMPLE",
    },
}
ALARM_STATE_CHANGE: dict[str, Any] = {
    "version": "0",
    "id": "c4c1c1c9-6542-e61b-6ef0-8c4d36933a92",
    "detail-type": "CloudWatch Alarm State Change",
    "source": "aws.cloudwatch",
    "account": ACCOUNT,
    "time": "2024-06-01T04:00:00Z",
    "region": REGION,
    "resources": [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:pdm-dev-retrain-data-drift"],
    "detail": {
        "alarmName": "pdm-dev-retrain-data-drift",
        "state": {
            "value": "ALARM",
            "reason": "Threshold Crossed",
            "timestamp": "2024-06-01T04:00:00.000+0000",
        },
        "previousState": {"value": "OK", "timestamp": "2024-05-31T04:00:00.000+0000"},
    },
}


def _event(base: dict[str, Any], **detail: Any) -> dict[str, Any]:
    event = copy.deepcopy(base)
    for path, value in detail.items():
        node = event["detail"]
        *parents, leaf = path.split("__")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return event


@pytest.fixture(scope="module")
def cicd_context(templates: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Values to resolve the CI/CD template with: dev parameters, pseudo parameters, storage exports."""
    (spec,) = plan(load_environment("dev"), ["cicd"])
    template = templates["cicd"]
    context: dict[str, Any] = {**parameter_defaults(template), **spec.parameters}
    context.update({"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"})
    context.update({name: name for name in template["Resources"]})
    context["conditions"] = {"UseCodeCommit": True, "UseCodeConnections": False, "DisasterRecovery": False}
    context["exports"] = {
        "pdm-dev-data-bucket": DATA_BUCKET,
        "pdm-dev-data-prefix": spec.parameters.get("DataPrefix", "data/"),
    }
    return context


def _matcher(templates: dict[str, dict[str, Any]], context: dict[str, Any], rule: str) -> EventPattern:
    pattern = resolve(props(templates["cicd"], rule)["EventPattern"], context)
    # EventPattern.load validates the pattern like PutRule does (arrays or objects only, no empty arrays).
    return EventPattern.load(json.dumps(pattern))


def test_new_object_under_the_data_prefix_retrains(
    templates: dict[str, Any], cicd_context: dict[str, Any]
) -> None:
    rule = _matcher(templates, cicd_context, "NewDataRule")
    assert rule.matches_event(S3_OBJECT_CREATED)
    assert rule.matches_event(_event(S3_OBJECT_CREATED, object__key="data/machines.csv"))


@pytest.mark.parametrize(
    "change",
    [
        {"object__key": "stream/telemetry/2024/06/01/part-0001.gz"},  # Firehose output: must not retrain
        {"object__key": "datasets/other.csv"},  # prefix "data" without the slash
        {"object__key": "models/data/x.csv"},
        {"bucket__name": f"pdm-dev-artifacts-{ACCOUNT}-{REGION}"},
    ],
)
def test_objects_elsewhere_do_not_retrain(
    templates: dict[str, Any], cicd_context: dict[str, Any], change: dict[str, str]
) -> None:
    rule = _matcher(templates, cicd_context, "NewDataRule")
    assert not rule.matches_event(_event(S3_OBJECT_CREATED, **change))


def test_deleted_objects_do_not_retrain(templates: dict[str, Any], cicd_context: dict[str, Any]) -> None:
    rule = _matcher(templates, cicd_context, "NewDataRule")
    deleted = {**copy.deepcopy(S3_OBJECT_CREATED), "detail-type": "Object Deleted"}
    assert not rule.matches_event(deleted)


def test_firehose_writes_outside_the_data_prefix(
    templates: dict[str, Any], cicd_context: dict[str, Any]
) -> None:
    destination = props(templates["streaming"], "TelemetryFirehose")["ExtendedS3DestinationConfiguration"]
    for prefix in (destination["Prefix"], destination["ErrorOutputPrefix"]):
        assert not prefix.startswith(cicd_context["exports"]["pdm-dev-data-prefix"])


def test_a_push_to_the_branch_retrains(templates: dict[str, Any], cicd_context: dict[str, Any]) -> None:
    rule = _matcher(templates, cicd_context, "NewCommitRule")
    assert rule.matches_event(CODECOMMIT_PUSH)
    assert not rule.matches_event(_event(CODECOMMIT_PUSH, referenceName="feature/x"))
    assert not rule.matches_event(_event(CODECOMMIT_PUSH, referenceType="tag"))


def test_drift_and_quality_alarms_retrain(templates: dict[str, Any], cicd_context: dict[str, Any]) -> None:
    rule = _matcher(templates, cicd_context, "DriftAlarmRule")
    assert rule.matches_event(ALARM_STATE_CHANGE)
    assert rule.matches_event(_event(ALARM_STATE_CHANGE, alarmName="pdm-dev-retrain-model-quality"))
    assert not rule.matches_event(_event(ALARM_STATE_CHANGE, state={"value": "OK"}))
    # An endpoint 5XX alarm is an operations problem, not a reason to retrain.
    assert not rule.matches_event(_event(ALARM_STATE_CHANGE, alarmName="pdm-dev-endpoint-5xx"))


def test_the_serving_alarms_are_named_for_the_retrain_rule(templates: dict[str, Any]) -> None:
    prefix = props(templates["cicd"], "DriftAlarmRule")["EventPattern"]["detail"]["alarmName"][0]["prefix"]
    names = [
        props(templates["serving"], a)["AlarmName"]["Fn::Sub"]
        for a in ("DataDriftAlarm", "ModelQualityAlarm")
    ]
    assert all(name.startswith(prefix["Fn::Sub"]) for name in names)


def test_retraining_rules_start_the_pipeline(templates: dict[str, Any]) -> None:
    cicd = templates["cicd"]
    for rule in ("NewCommitRule", "NewDataRule", "ScheduledRetrainRule", "DriftAlarmRule"):
        (target,) = props(cicd, rule)["Targets"]
        assert target["Arn"]["Fn::Sub"].endswith(":codepipeline:${AWS::Region}:${AWS::AccountId}:${Pipeline}")
        assert target["RoleArn"] == {"Fn::GetAtt": ["PipelineTriggerRole", "Arn"]}
    assert re.fullmatch(r"(cron|rate)\(.+\)", parameter_defaults(cicd)["RetrainSchedule"])
    assert props(cicd, "ScheduledRetrainRule")["ScheduleExpression"] == {"Ref": "RetrainSchedule"}


@pytest.mark.parametrize(
    ("status", "group", "deploys", "rolls_back"),
    [
        ("Approved", "pdm-mlops-dev", True, False),
        ("Rejected", "pdm-mlops-dev", False, True),
        ("PendingManualApproval", "pdm-mlops-dev", False, False),
        ("Approved", "someone-elses-models", False, False),
    ],
)
def test_model_package_approval_deploys_and_rejection_rolls_back(
    templates: dict[str, Any],
    cicd_context: dict[str, Any],
    status: str,
    group: str,
    deploys: bool,
    rolls_back: bool,
) -> None:
    event = _event(MODEL_PACKAGE_STATE_CHANGE, ModelApprovalStatus=status, ModelPackageGroupName=group)
    assert _matcher(templates, cicd_context, "ModelApprovedRule").matches_event(event) is deploys
    assert _matcher(templates, cicd_context, "ModelRejectedRule").matches_event(event) is rolls_back


def _render(transformer: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """EventBridge's input transformer for string values: <name> -> the JSON value at its path."""
    rendered = transformer["InputTemplate"]
    for name, path in transformer["InputPathsMap"].items():
        value: Any = event
        for part in path.removeprefix("$.").split("."):
            value = value[part]
        rendered = rendered.replace(f"<{name}>", json.dumps(value))
    return json.loads(rendered)


@pytest.mark.parametrize(
    ("rule", "project"), [("ModelApprovedRule", "DeployProject"), ("ModelRejectedRule", "RollbackProject")]
)
def test_release_builds_get_the_model_package_arn(templates: dict[str, Any], rule: str, project: str) -> None:
    (target,) = props(templates["cicd"], rule)["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [project, "Arn"]}
    request = _render(target["InputTransformer"], MODEL_PACKAGE_STATE_CHANGE)
    # The rendered input is a StartBuild request body: validate it against botocore's model.
    shape = (
        botocore.session.get_session()
        .get_service_model("codebuild")
        .operation_model("StartBuild")
        .input_shape
    )
    validate_parameters({"projectName": "pdm-dev-deploy", **request}, shape)
    assert request["environmentVariablesOverride"] == [
        {"name": "MODEL_PACKAGE_ARN", "type": "PLAINTEXT", "value": PACKAGE_ARN}
    ]


def test_release_commands_are_the_deploy_clis(templates: dict[str, Any]) -> None:
    """The default release commands parse with the real CLIs (a renamed flag would fail here, not in AWS)."""
    import shlex

    from deploy import endpoint, registry
    from deploy.monitor import cli as monitor

    cicd = templates["cicd"]
    defaults = parameter_defaults(cicd)
    env = {"$PDM_REGION": "eu-west-1", "$PDM_REGISTRY__MODEL_PACKAGE_GROUP": "pdm-dev",
           "$MODEL_PACKAGE_ARN": "arn:aws:sagemaker:eu-west-1:123456789012:model-package/pdm-dev/3",
           "$PDM_DEPLOY__ENDPOINT_NAME": "pdm-dev", "$INFRA_PROJECT": "pdm", "$INFRA_ENV": "dev",
           "$MONITOR_ROLE_ARN": "arn:aws:iam::123456789012:role/pdm-dev-exec"}  # fmt: skip
    expected = (
        ("PromoteCommand", registry, "approve"),
        ("DeployCommand", endpoint, "deploy"),
        ("RollbackCommand", endpoint, "deploy"),
        ("MonitorCommand", monitor, "schedule"),
    )
    for name, module, command in expected:
        argv = [env.get(word, word) for word in shlex.split(defaults[name])]
        assert argv[:3] == ["python", "-m", module.__name__.removesuffix(".cli")], name
        args = module._parser().parse_args(argv[3:])
        assert args.command == command and args.target == "sagemaker" and args.region == "eu-west-1", name
    # The schedules the monitor names are the ones the retraining alarms watch; the build passes both parts.
    variables = props(cicd, "DeployProject")["Environment"]["EnvironmentVariables"]
    deploy_env = {v["Name"]: v["Value"] for v in variables}
    assert deploy_env["INFRA_PROJECT"] == {"Ref": "ProjectName"}
    assert deploy_env["INFRA_ENV"] == {"Ref": "Environment"}
    assert deploy_env["MONITOR_ROLE_ARN"] == {"Fn::GetAtt": ["SageMakerExecutionRole", "Arn"]}
    deploy_spec = props(cicd, "DeployProject")["Source"]["BuildSpec"]["Fn::Sub"]
    assert deploy_spec.index("${DeployCommand}") < deploy_spec.index("${MonitorCommand}")
    rollback = shlex.split(defaults["RollbackCommand"])
    assert "--package" not in rollback and "--version" not in rollback  # deploys the remaining champion
    buildspec = props(cicd, "RollbackProject")["Source"]["BuildSpec"]["Fn::Sub"]
    assert "${RollbackCommand}" in buildspec
    assert "${DeployCommand}" in props(cicd, "DeployProject")["Source"]["BuildSpec"]["Fn::Sub"]
