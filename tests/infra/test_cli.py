"""`python -m deploy.infra`: plan, the change-set flow (botocore Stubber), package, errors and exit codes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from deploy.infra.cli import run
from deploy.infra.package import build_api_bundle
from deploy.infra.stacks import PlanError, load_environment, plan

REPO = Path(__file__).resolve().parents[2]
STACK = "pdm-dev-keys"
STACK_ID = f"arn:aws:cloudformation:eu-west-1:123456789012:stack/{STACK}/0b1c2d3e"
NOW = "2024-06-01T00:00:00Z"


class Tty(io.StringIO):
    """stdin that claims to be a terminal and answers the confirmation prompt."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def cfn() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("cloudformation", region_name="eu-west-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _invoke(client: Any, *argv: str, stdin: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run(
        [*argv, "--poll-seconds", "0"],
        client_factory=lambda service, region: client,
        out=out,
        err=err,
        stdin=stdin or io.StringIO(),
    )
    return code, out.getvalue(), err.getvalue()


def _stack(status: str) -> dict[str, Any]:
    return {"Stacks": [{"StackName": STACK, "StackId": STACK_ID, "StackStatus": status, "CreationTime": NOW}]}


def _missing(stubber: Stubber) -> None:
    stubber.add_client_error(
        "describe_stacks",
        service_error_code="ValidationError",
        service_message=f"Stack with id {STACK} does not exist",
        expected_params={"StackName": STACK},
    )


def _create(stubber: Stubber, change_set_type: str) -> None:
    spec = plan(load_environment("dev"), ["keys"])[0]
    stubber.add_response(
        "create_change_set",
        {"Id": f"{STACK_ID}/changeSet/x", "StackId": STACK_ID},
        {
            "StackName": STACK,
            "ChangeSetName": ANY,
            "ChangeSetType": change_set_type,
            "TemplateBody": ANY,
            "Parameters": [
                {"ParameterKey": k, "ParameterValue": v} for k, v in sorted(spec.parameters.items())
            ],
            "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
            "Tags": [{"Key": k, "Value": v} for k, v in sorted(spec.tags.items())],
            "Description": ANY,
        },
    )


def _change_set(status: str, changes: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"ChangeSetName": "cs", "StackName": STACK, "Status": status, "Changes": changes or [], **extra}


def _resource_change(action: str, logical_id: str, resource_type: str, **extra: Any) -> dict[str, Any]:
    return {
        "Type": "Resource",
        "ResourceChange": {
            "Action": action,
            "LogicalResourceId": logical_id,
            "ResourceType": resource_type,
            **extra,
        },
    }


ADD_KEYS = [
    _resource_change("Add", "DataKey", "AWS::KMS::Key"),
    _resource_change("Add", "DataKeyAlias", "AWS::KMS::Alias"),
]
MODIFY_KEY = _resource_change(
    "Modify",
    "LogsKey",
    "AWS::KMS::Key",
    Replacement="False",
    Details=[{"Target": {"Attribute": "Properties", "Name": "KeyPolicy", "RequiresRecreation": "Never"}}],
)


def test_deploy_creates_a_new_stack_through_a_change_set(cfn: tuple[Any, Stubber]) -> None:
    client, stubber = cfn
    _missing(stubber)
    _create(stubber, "CREATE")
    stubber.add_response("describe_change_set", _change_set("CREATE_COMPLETE"))  # the waiter
    # The diff has two pages.
    stubber.add_response("describe_change_set", _change_set("CREATE_COMPLETE", ADD_KEYS[:1], NextToken="t1"))
    stubber.add_response(
        "describe_change_set",
        _change_set("CREATE_COMPLETE", ADD_KEYS[1:]),
        {"ChangeSetName": ANY, "StackName": STACK, "NextToken": "t1"},
    )
    stubber.add_response("execute_change_set", {}, {"ChangeSetName": ANY, "StackName": STACK})
    stubber.add_response("describe_stacks", _stack("CREATE_COMPLETE"), {"StackName": STACK})  # the waiter
    stubber.add_response("describe_stacks", _stack("CREATE_COMPLETE"), {"StackName": STACK})
    code, out, err = _invoke(client, "deploy", "--env", "dev", "--stack", "keys", "--yes")
    assert (code, err) == (0, "")
    assert "pdm-dev-keys (eu-west-1, create): 2 change(s)" in out
    assert "+ Add     DataKey (AWS::KMS::Key)" in out
    assert "+ Add     DataKeyAlias (AWS::KMS::Alias)" in out
    assert "pdm-dev-keys: CREATE_COMPLETE" in out


def test_diff_prints_the_changes_and_discards_the_change_set(cfn: tuple[Any, Stubber]) -> None:
    client, stubber = cfn
    stubber.add_response("describe_stacks", _stack("UPDATE_COMPLETE"))
    _create(stubber, "UPDATE")
    stubber.add_response("describe_change_set", _change_set("CREATE_COMPLETE"))
    stubber.add_response("describe_change_set", _change_set("CREATE_COMPLETE", [MODIFY_KEY]))
    stubber.add_response("delete_change_set", {}, {"ChangeSetName": ANY, "StackName": STACK})
    code, out, _ = _invoke(client, "diff", "--env", "dev", "--stack", "keys")
    assert code == 0
    assert "~ Modify  LogsKey (AWS::KMS::Key) replacement=False: Properties.KeyPolicy" in out


def test_diff_of_a_new_stack_leaves_nothing_behind(cfn: tuple[Any, Stubber]) -> None:
    client, stubber = cfn
    _missing(stubber)
    _create(stubber, "CREATE")
    stubber.add_response("describe_change_set", _change_set("CREATE_COMPLETE"))
    stubber.add_response("describe_change_set", _change_set("CREATE_COMPLETE", ADD_KEYS))
    stubber.add_response("delete_change_set", {})
    # A CREATE change set makes an empty REVIEW_IN_PROGRESS stack: the diff removes it again.
    stubber.add_response("describe_stacks", _stack("REVIEW_IN_PROGRESS"))
    stubber.add_response("delete_stack", {}, {"StackName": STACK})
    code, out, _ = _invoke(client, "diff", "--env", "dev", "--stack", "keys")
    assert code == 0 and "2 change(s)" in out


def test_a_change_set_without_changes_is_reported_and_deleted(cfn: tuple[Any, Stubber]) -> None:
    client, stubber = cfn
    stubber.add_response("describe_stacks", _stack("UPDATE_COMPLETE"))
    _create(stubber, "UPDATE")
    stubber.add_response(
        "describe_change_set",
        _change_set(
            "FAILED",
            StatusReason=(
                "The submitted information didn't contain changes. Submit different information to create a"
                " change set."
            ),
        ),
    )
    stubber.add_response("delete_change_set", {}, {"ChangeSetName": ANY, "StackName": STACK})
    code, out, err = _invoke(client, "deploy", "--env", "dev", "--stack", "keys", "--yes")
    assert (code, err) == (0, "")
    assert "pdm-dev-keys (eu-west-1, update): no changes" in out


def test_an_update_refused_up_front_for_having_no_changes_is_no_change(cfn: tuple[Any, Stubber]) -> None:
    # UpdateStack-style behaviour (moto does this for change sets): nothing was created, nothing to delete.
    client, stubber = cfn
    stubber.add_response("describe_stacks", _stack("UPDATE_COMPLETE"))
    stubber.add_client_error(
        "create_change_set",
        service_error_code="ValidationError",
        service_message="No updates are to be performed.",
    )
    code, out, _ = _invoke(client, "diff", "--env", "dev", "--stack", "keys")
    assert code == 0 and "no changes" in out


def test_a_failed_change_set_is_an_error_with_its_reason(cfn: tuple[Any, Stubber]) -> None:
    client, stubber = cfn
    stubber.add_response("describe_stacks", _stack("UPDATE_COMPLETE"))
    _create(stubber, "UPDATE")
    stubber.add_response(
        "describe_change_set", _change_set("FAILED", StatusReason="No export named pdm-dev-vpc-id found")
    )
    code, _, err = _invoke(client, "deploy", "--env", "dev", "--stack", "keys", "--yes")
    assert code == 1
    assert err.strip().endswith("No export named pdm-dev-vpc-id found")
    assert len(err.strip().splitlines()) == 1


def test_diff_reports_a_failed_change_set_cleans_up_and_fails(cfn: tuple[Any, Stubber]) -> None:
    client, stubber = cfn
    _missing(stubber)
    _create(stubber, "CREATE")
    stubber.add_response(
        "describe_change_set", _change_set("FAILED", StatusReason="No export named pdm-dev-x")
    )
    stubber.add_response("delete_change_set", {})
    stubber.add_response("describe_stacks", _stack("REVIEW_IN_PROGRESS"))
    stubber.add_response("delete_stack", {}, {"StackName": STACK})
    code, out, _ = _invoke(client, "diff", "--env", "dev", "--stack", "keys")
    assert code == 1 and "No export named pdm-dev-x" in out


def test_a_failed_update_names_the_failing_resources(cfn: tuple[Any, Stubber]) -> None:
    client, stubber = cfn
    stubber.add_response("describe_stacks", _stack("UPDATE_COMPLETE"))
    _create(stubber, "UPDATE")
    stubber.add_response("describe_change_set", _change_set("CREATE_COMPLETE"))
    stubber.add_response("describe_change_set", _change_set("CREATE_COMPLETE", [MODIFY_KEY]))
    stubber.add_response("execute_change_set", {})
    stubber.add_response("describe_stacks", _stack("UPDATE_ROLLBACK_COMPLETE"))
    stubber.add_response(
        "describe_stack_events",
        {
            "StackEvents": [
                {
                    "StackId": STACK_ID,
                    "EventId": "e1",
                    "StackName": STACK,
                    "Timestamp": NOW,
                    "LogicalResourceId": "LogsKey",
                    "ResourceStatus": "UPDATE_FAILED",
                    "ResourceStatusReason": "MalformedPolicyDocumentException",
                }
            ]
        },
    )
    code, _, err = _invoke(client, "deploy", "--env", "dev", "--stack", "keys", "--yes")
    assert code == 1
    assert (
        "UPDATE_ROLLBACK_COMPLETE" in err and "LogsKey UPDATE_FAILED: MalformedPolicyDocumentException" in err
    )


def test_a_stack_whose_creation_failed_must_be_deleted_first(cfn: tuple[Any, Stubber]) -> None:
    client, stubber = cfn
    stubber.add_response("describe_stacks", _stack("ROLLBACK_COMPLETE"))
    code, _, err = _invoke(client, "deploy", "--env", "dev", "--stack", "keys", "--yes")
    assert code == 1 and "delete it first" in err


def test_deploy_asks_before_executing(cfn: tuple[Any, Stubber]) -> None:
    client, stubber = cfn
    stubber.add_response("describe_stacks", _stack("UPDATE_COMPLETE"))
    _create(stubber, "UPDATE")
    stubber.add_response("describe_change_set", _change_set("CREATE_COMPLETE"))
    stubber.add_response("describe_change_set", _change_set("CREATE_COMPLETE", [MODIFY_KEY]))
    stubber.add_response("delete_change_set", {})
    code, out, _ = _invoke(client, "deploy", "--env", "dev", "--stack", "keys", stdin=Tty("n\n"))
    assert code == 0 and "skipped" in out


def test_non_interactive_deploy_needs_yes(cfn: tuple[Any, Stubber]) -> None:
    client, stubber = cfn
    stubber.add_response("describe_stacks", _stack("UPDATE_COMPLETE"))
    _create(stubber, "UPDATE")
    stubber.add_response("describe_change_set", _change_set("CREATE_COMPLETE"))
    stubber.add_response("describe_change_set", _change_set("CREATE_COMPLETE", [MODIFY_KEY]))
    code, _, err = _invoke(client, "deploy", "--env", "dev", "--stack", "keys")
    assert code == 2 and "--yes" in err


def test_no_execute_leaves_the_change_set_for_review(cfn: tuple[Any, Stubber]) -> None:
    client, stubber = cfn
    stubber.add_response("describe_stacks", _stack("UPDATE_COMPLETE"))
    _create(stubber, "UPDATE")
    stubber.add_response("describe_change_set", _change_set("CREATE_COMPLETE"))
    stubber.add_response("describe_change_set", _change_set("CREATE_COMPLETE", [MODIFY_KEY]))
    code, out, _ = _invoke(client, "deploy", "--env", "dev", "--stack", "keys", "--no-execute")
    assert code == 0 and "left for review" in out


def test_delete_waits_for_the_stack_to_go(cfn: tuple[Any, Stubber]) -> None:
    client, stubber = cfn
    stubber.add_response("describe_stacks", _stack("UPDATE_COMPLETE"))
    stubber.add_response("delete_stack", {}, {"StackName": STACK})
    stubber.add_client_error(
        "describe_stacks",
        service_error_code="ValidationError",
        service_message=f"Stack with id {STACK} does not exist",
    )
    code, out, _ = _invoke(client, "delete", "--env", "dev", "--stack", "keys", "--yes")
    assert code == 0 and "pdm-dev-keys (eu-west-1): deleted" in out


def test_delete_needs_explicit_stacks(cfn: tuple[Any, Stubber]) -> None:
    code, _, err = _invoke(cfn[0], "delete", "--env", "dev", "--yes")
    assert code == 2 and "--stack" in err


def test_validate_asks_cloudformation(cfn: tuple[Any, Stubber]) -> None:
    client, stubber = cfn
    stubber.add_response(
        "validate_template",
        {"Parameters": [{"ParameterKey": "ProjectName"}], "Capabilities": ["CAPABILITY_NAMED_IAM"]},
        {"TemplateBody": ANY},
    )
    code, out, _ = _invoke(client, "validate", "--env", "dev", "--stack", "network")
    assert code == 0 and "network.yaml: valid (1 parameters; capabilities CAPABILITY_NAMED_IAM)" in out


def test_expired_credentials_are_a_one_line_usage_error(cfn: tuple[Any, Stubber]) -> None:
    client, stubber = cfn
    stubber.add_client_error("describe_stacks", service_error_code="ExpiredToken", service_message="expired")
    code, _, err = _invoke(client, "diff", "--env", "dev", "--stack", "keys")
    assert code == 2
    assert err.startswith("error: no usable AWS credentials") and len(err.strip().splitlines()) == 1


def test_missing_credentials_exit_2_in_one_line_without_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(REPO),
    )
    done = subprocess.run(
        [sys.executable, "-m", "deploy.infra", "diff", "--env", "dev", "--stack", "keys"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: no usable AWS credentials")
    assert len(done.stderr.strip().splitlines()) == 1


def test_plan_lists_stacks_in_order_offline() -> None:
    out = io.StringIO()
    assert run(["plan", "--env", "prod", "--stack", "serving@dr,storage", "--show-parameters"], out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["storage", "eu-west-1", "pdm-prod-storage"]
    assert "    EnableReplication=true" in lines
    assert any(line.split()[:2] == ["serving@dr", "eu-central-1"] for line in lines)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan", "--env", "dev", "--stack", "nope"], "unknown stack 'nope'"),
        (["plan", "--env", "dev", "--stack", "serving@dr"], "disaster recovery is off"),
        (["plan", "--env", "dev", "--stack", "keys", "--param", "Nope=1"], "not a parameter"),
        (["plan", "--env", "dev", "--param", "broken"], "expected Key=Value"),
        (
            ["diff", "--env", "staging", "--stack", "cicd"],
            "placeholder value of ConnectionArn, FullRepositoryId",
        ),
    ],
)
def test_bad_requests_exit_2_before_any_aws_call(argv: list[str], message: str) -> None:
    err = io.StringIO()
    code = run(argv, client_factory=lambda *_: pytest.fail("no AWS call expected"), err=err)
    assert code == 2 and message in err.getvalue()


def test_environment_files_cannot_override_derived_parameters(tmp_path: Path) -> None:
    source = (
        (load_environment("dev").source)
        .read_text()
        .replace('"KeyDeletionWindowDays"', '"ProjectName": "x", "K"')
    )
    (tmp_path / "dev.json").write_text(source)
    with pytest.raises(PlanError, match="ProjectName"):
        load_environment("dev", tmp_path)


def test_parameters_reach_only_the_templates_that_declare_them() -> None:
    specs = {s.unit: s for s in plan(load_environment("dev"), overrides={"EndpointName": "x"})}
    assert specs["serving"].parameters["EndpointName"] == "x"
    assert "EndpointName" not in specs["keys"].parameters
    assert specs["cicd"].parameters["ConnectionArn"] == ""  # explicit empty strings are values
    assert specs["keys"].tags == {
        "project": "pdm",
        "environment": "dev",
        "cost-center": "ml-platform",
        "owner": "ml-platform-team",
    }


def test_api_bundle_is_deterministic(tmp_path: Path) -> None:
    (tmp_path / "deploy" / "api").mkdir(parents=True)
    (tmp_path / "deploy" / "__init__.py").write_text('"""d."""\n')
    (tmp_path / "deploy" / "api" / "handler.py").write_text("def handler(event, context):\n    return {}\n")
    first, second = build_api_bundle(tmp_path), build_api_bundle(tmp_path)
    assert first is not None and first == second
    names = zipfile.ZipFile(io.BytesIO(first[0])).namelist()
    assert names == ["deploy/__init__.py", "deploy/api/handler.py"]
    assert build_api_bundle(tmp_path / "elsewhere") is None


def test_package_uploads_templates_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="bucket", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})

        def factory(service: str, region: str) -> Any:
            return boto3.client(service, region_name=region)

        for _ in range(2):
            out = io.StringIO()
            code = run(
                ["package", "--env", "dev", "--stack", "network,api", "--bucket", "bucket"],
                client_factory=factory,
                out=out,
            )
            assert code == 0
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="bucket")["Contents"]]
        templates = [k for k in keys if "/templates/" in k]
        assert len(templates) == 2 and all(k.startswith("infra/dev/templates/") for k in templates)
        assert "https://bucket.s3.eu-west-1.amazonaws.com/infra/dev/templates/network-" in out.getvalue()
