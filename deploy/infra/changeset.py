"""CloudFormation change sets: create, wait, describe (the diff), execute or discard; and stack deletion."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError, WaiterError

from deploy.infra.stacks import StackSpec

# CloudFormation reports an empty change set as FAILED with one of these reasons.
NO_CHANGE_REASONS = ("didn't contain changes", "No updates are to be performed")
# An existing stack in one of these states cannot take a change set until someone acts.
BUSY_SUFFIX = "_IN_PROGRESS"
DEAD_STATES = ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED")
SYMBOLS = {"Add": "+", "Modify": "~", "Remove": "-", "Import": "<", "Dynamic": "?"}
# Named IAM roles (fixed names referenced across stacks) need the NAMED_IAM capability.
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"]
# How long each wait may take before giving up (CloudFront-free stacks finish well within these).
CHANGE_SET_TIMEOUT_S = 600
STACK_TIMEOUT_S = 3 * 3600


class StackOperationError(RuntimeError):
    """A stack operation failed; the message names the stack, the status and the failing resources."""

    def __init__(self, message: str, result: ChangeSetResult | None = None) -> None:
        super().__init__(message)
        # The failed change set, when there is one to clean up.
        self.result = result


@dataclass(frozen=True)
class Change:
    """One resource change of a change set."""

    action: str
    logical_id: str
    resource_type: str
    replacement: str = ""
    details: tuple[str, ...] = ()

    def line(self) -> str:
        """`~ Modify  DataBucket (AWS::S3::Bucket) replacement=False: Properties.LifecycleConfiguration`."""
        text = f"{SYMBOLS.get(self.action, '?')} {self.action:<7} {self.logical_id} ({self.resource_type})"
        if self.action == "Modify":
            text += f" replacement={self.replacement or 'False'}"
        if self.details:
            text += ": " + ", ".join(self.details)
        return text


@dataclass
class ChangeSetResult:
    """What a change set would do to one stack."""

    spec: StackSpec
    change_set_name: str
    change_set_type: str
    changes: list[Change] = field(default_factory=list)
    no_changes: bool = False
    status_reason: str = ""
    # False when CloudFormation refused the change set outright, so there is nothing to delete.
    created: bool = True

    def summary(self) -> str:
        """One header line plus one line per change."""
        head = f"{self.spec.stack_name} ({self.spec.region}, {self.change_set_type.lower()})"
        if self.no_changes:
            return f"{head}: no changes"
        lines = [f"{head}: {len(self.changes)} change(s)"]
        lines += [f"  {c.line()}" for c in self.changes]
        return "\n".join(lines)


def _waiter_config(poll_seconds: float, timeout_s: int) -> dict[str, int]:
    delay = max(0, int(poll_seconds))
    return {"Delay": delay, "MaxAttempts": max(1, timeout_s // max(delay, 1))}


def stack_status(cfn: Any, stack_name: str) -> str | None:
    """The stack's status, or None when it does not exist."""
    try:
        stacks = cfn.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in exc.response["Error"].get("Message", ""):
            return None
        raise
    return stacks[0]["StackStatus"] if stacks else None


def _change_set_type(spec: StackSpec, status: str | None) -> str:
    if status is None or status == "REVIEW_IN_PROGRESS":
        # REVIEW_IN_PROGRESS: an earlier CREATE change set was never executed; the stack has no resources.
        return "CREATE"
    if status in DEAD_STATES:
        raise StackOperationError(
            f"{spec.stack_name} is {status}: delete it first "
            f"(python -m deploy.infra delete --env <env> --stack {spec.unit})"
        )
    if status.endswith(BUSY_SUFFIX):
        raise StackOperationError(f"{spec.stack_name} is busy ({status}); wait for it to finish")
    return "UPDATE"


def _parse_changes(response: dict[str, Any]) -> list[Change]:
    changes = []
    for item in response.get("Changes", []):
        rc = item.get("ResourceChange", {})
        details = []
        for detail in rc.get("Details", []):
            target = detail.get("Target", {})
            name = target.get("Name") or target.get("Attribute", "")
            attribute = target.get("Attribute", "")
            label = f"{attribute}.{name}" if name and attribute and name != attribute else name or attribute
            if label and label not in details:
                details.append(label)
        changes.append(
            Change(
                action=rc.get("Action", "?"),
                logical_id=rc.get("LogicalResourceId", "?"),
                resource_type=rc.get("ResourceType", "?"),
                replacement=str(rc.get("Replacement", "")),
                details=tuple(details),
            )
        )
    return changes


def describe_changes(cfn: Any, stack_name: str, change_set_name: str) -> list[Change]:
    """Every change of a change set (DescribeChangeSet pages with NextToken)."""
    changes: list[Change] = []
    kwargs = {"ChangeSetName": change_set_name, "StackName": stack_name}
    while True:
        response = cfn.describe_change_set(**kwargs)
        changes += _parse_changes(response)
        token = response.get("NextToken")
        if not token:
            return changes
        kwargs["NextToken"] = token


def create_change_set(
    cfn: Any,
    spec: StackSpec,
    *,
    template_body: str | None = None,
    template_url: str | None = None,
    poll_seconds: float = 5,
    description: str = "python -m deploy.infra",
) -> ChangeSetResult:
    """Create a change set for `spec`, wait until it is computed, and return its changes."""
    change_set_type = _change_set_type(spec, stack_status(cfn, spec.stack_name))
    name = f"deploy-infra-{time.strftime('%Y%m%d-%H%M%S')}"
    source = {"TemplateURL": template_url} if template_url else {"TemplateBody": template_body or ""}
    result = ChangeSetResult(spec=spec, change_set_name=name, change_set_type=change_set_type)
    try:
        cfn.create_change_set(
            StackName=spec.stack_name,
            ChangeSetName=name,
            ChangeSetType=change_set_type,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(spec.parameters.items())],
            Capabilities=CAPABILITIES,
            Tags=[{"Key": k, "Value": v} for k, v in sorted(spec.tags.items())],
            Description=description,
            **source,
        )
    except ClientError as exc:
        # Some implementations (UpdateStack-style, and moto) refuse an unchanged update up front instead
        # of returning an empty FAILED change set: the same outcome, reported the same way.
        message = exc.response["Error"].get("Message", "")
        if any(marker in message for marker in NO_CHANGE_REASONS):
            result.no_changes, result.status_reason, result.created = True, message, False
            return result
        raise
    try:
        cfn.get_waiter("change_set_create_complete").wait(
            ChangeSetName=name,
            StackName=spec.stack_name,
            WaiterConfig=_waiter_config(poll_seconds, CHANGE_SET_TIMEOUT_S),
        )
    except WaiterError as exc:
        reason = (exc.last_response or {}).get("StatusReason", "")
        if any(marker in reason for marker in NO_CHANGE_REASONS):
            result.no_changes = True
            result.status_reason = reason
            return result
        raise StackOperationError(
            f"{spec.stack_name}: change set {name} failed: {reason or exc}", result
        ) from None
    result.changes = describe_changes(cfn, spec.stack_name, name)
    return result


def discard_change_set(cfn: Any, result: ChangeSetResult) -> None:
    """Delete a change set that will not be executed (and the empty stack a CREATE change set made)."""
    stack = result.spec.stack_name
    if not result.created:
        return
    cfn.delete_change_set(ChangeSetName=result.change_set_name, StackName=stack)
    if result.change_set_type == "CREATE" and stack_status(cfn, stack) == "REVIEW_IN_PROGRESS":
        cfn.delete_stack(StackName=stack)


def failure_events(cfn: Any, stack_name: str, limit: int = 5) -> list[str]:
    """The most recent failed resource events of a stack, newest first, one line each."""
    try:
        events = cfn.describe_stack_events(StackName=stack_name)["StackEvents"]
    except ClientError:
        return []
    failed = [e for e in events if str(e.get("ResourceStatus", "")).endswith("FAILED")]
    return [
        f"{e.get('LogicalResourceId')} {e.get('ResourceStatus')}: {e.get('ResourceStatusReason', '')}"
        for e in failed[:limit]
    ]


def execute_change_set(cfn: Any, result: ChangeSetResult, *, poll_seconds: float = 15) -> str:
    """Execute a computed change set and wait for the stack; returns the final stack status."""
    stack = result.spec.stack_name
    cfn.execute_change_set(ChangeSetName=result.change_set_name, StackName=stack)
    waiter = "stack_create_complete" if result.change_set_type == "CREATE" else "stack_update_complete"
    try:
        cfn.get_waiter(waiter).wait(
            StackName=stack, WaiterConfig=_waiter_config(poll_seconds, STACK_TIMEOUT_S)
        )
    except WaiterError as exc:
        status = ((exc.last_response or {}).get("Stacks") or [{}])[0].get("StackStatus", "unknown")
        events = failure_events(cfn, stack)
        detail = "; ".join(events) if events else str(exc)
        raise StackOperationError(f"{stack} ended {status}: {detail}") from None
    return stack_status(cfn, stack) or "unknown"


def delete_stack(cfn: Any, spec: StackSpec, *, poll_seconds: float = 15) -> bool:
    """Delete a stack and wait; False when it did not exist."""
    if stack_status(cfn, spec.stack_name) is None:
        return False
    cfn.delete_stack(StackName=spec.stack_name)
    try:
        cfn.get_waiter("stack_delete_complete").wait(
            StackName=spec.stack_name, WaiterConfig=_waiter_config(poll_seconds, STACK_TIMEOUT_S)
        )
    except WaiterError as exc:
        events = failure_events(cfn, spec.stack_name)
        raise StackOperationError(
            f"{spec.stack_name}: delete failed: {'; '.join(events) if events else exc}"
        ) from None
    return True
