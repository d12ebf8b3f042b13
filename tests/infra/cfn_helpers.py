"""Helpers of the template tests: walk resources and IAM statements, resolve simple intrinsics offline."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from deploy.infra import TEMPLATES_DIR

TEMPLATE_PATHS = sorted(TEMPLATES_DIR.glob("*.yaml"))
IAM_POLICY_TYPES = ("AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy")
NO_VALUE = {"Ref": "AWS::NoValue"}


def as_list(value: Any) -> list[Any]:
    """A scalar or a list -> a list."""
    return value if isinstance(value, list) else [value]


def resources(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    """Logical id -> resource, for one resource type."""
    return {k: r for k, r in template["Resources"].items() if r["Type"] == resource_type}


def props(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """Properties of one resource."""
    return template["Resources"][logical_id].get("Properties", {})


def branches(node: Any) -> list[Any]:
    """The possible values of a node: both branches of an Fn::If (without AWS::NoValue), else itself."""
    if isinstance(node, dict) and set(node) == {"Fn::If"}:
        _, yes, no = node["Fn::If"]
        return [b for branch in (yes, no) for b in branches(branch) if b != NO_VALUE]
    return [node]


def policy_documents(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(logical id, policy document) of every identity policy: inline role policies and IAM policies."""
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] not in IAM_POLICY_TYPES:
            continue
        properties = resource.get("Properties", {})
        for policy in properties.get("Policies", []):
            yield logical_id, policy["PolicyDocument"]
        if "PolicyDocument" in properties:
            yield logical_id, properties["PolicyDocument"]


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every statement of a policy document, conditional ones included."""
    return [s for item in as_list(document["Statement"]) for s in branches(item)]


def stringify(node: Any) -> str:
    """A readable string of an ARN-ish node ({"Fn::Sub": "..."} -> its pattern) for wildcard checks."""
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and "Fn::Sub" in node:
        sub = node["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    if isinstance(node, dict) and "Fn::GetAtt" in node:
        return ".".join(as_list(node["Fn::GetAtt"]))
    return repr(node)


def resolve(node: Any, context: dict[str, Any]) -> Any:
    """Resolve Ref, Fn::Sub, Fn::ImportValue, Fn::Join, Fn::If (context["conditions"]) with test values.

    context maps parameter / pseudo-parameter / resource names to values and has "exports" (export name ->
    value) and "conditions" (name -> bool). Enough for event patterns and names; not a CloudFormation.
    """
    if isinstance(node, list):
        return [resolve(item, context) for item in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"Ref"}:
        return context[node["Ref"]]
    if set(node) == {"Fn::Sub"}:
        pattern, variables = (node["Fn::Sub"], {}) if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"]
        values = {**context, **{k: resolve(v, context) for k, v in variables.items()}}
        return re.sub(r"\$\{([^}!]+)\}", lambda m: str(values[m.group(1)]), pattern).replace("${!", "${")
    if set(node) == {"Fn::ImportValue"}:
        return context["exports"][resolve(node["Fn::ImportValue"], context)]
    if set(node) == {"Fn::Join"}:
        separator, items = node["Fn::Join"]
        return separator.join(str(i) for i in resolve(items, context))
    if set(node) == {"Fn::If"}:
        name, yes, no = node["Fn::If"]
        return resolve(yes if context["conditions"][name] else no, context)
    return {key: resolve(value, context) for key, value in node.items()}


def parameter_defaults(template: dict[str, Any]) -> dict[str, Any]:
    """Parameter name -> default value (for resolving with the template's own defaults)."""
    return {k: v.get("Default") for k, v in template.get("Parameters", {}).items()}
