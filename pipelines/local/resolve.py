"""Pure resolution of a definition's Get, Std:Join, Std:JsonGet and conditions, as SageMaker does."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EXPRESSION_KEYS = frozenset({"Get", "Std:Join", "Std:JsonGet"})
# Lists that property paths address by a member's name, e.g. ProcessingOutputConfig.Outputs['train'],
# FinalMetricDataList['validation:auc'] (the SDK and SageMaker's local mode key these lists by name).
NAME_KEYS = ("OutputName", "InputName", "MetricName", "ChannelName", "VariantName", "Name")
COMPARISONS = {
    "Equals",
    "GreaterThan",
    "GreaterThanOrEqualTo",
    "LessThan",
    "LessThanOrEqualTo",
}
_TOKEN = re.compile(
    r"""\.?(?P<name>[A-Za-z0-9_\-:$@]+)|\[(?P<index>-?\d+)\]|\['(?P<sq>(?:[^'\\]|\\.)*)'\]|\["(?P<dq>(?:[^"\\]|\\.)*)"\]"""
)


class ResolveError(Exception):
    """An expression that cannot be resolved; the message names the reference. Fails the step."""


@dataclass
class Scope:
    """What expressions resolve against during one execution.

    Attributes:
        parameters: parameter values already typed (Integer -> int, Boolean -> bool...).
        execution: execution variables (PipelineExecutionId, PipelineExecutionArn, PipelineName,
            PipelineArn, StartDateTime); CurrentDateTime is computed at each use.
        steps: properties of the steps that succeeded (their Describe* response, Outcome, ...).
        property_files: step name -> the PropertyFiles the definition declares on it.
        experiment: the definition's PipelineExperimentConfig (values may be expressions).
        read_bytes: reads an `s3://` object (for Std:JsonGet); raises on a missing object.
    """

    parameters: Mapping[str, Any] = field(default_factory=dict)
    execution: Mapping[str, Any] = field(default_factory=dict)
    steps: Mapping[str, Any] = field(default_factory=dict)
    property_files: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)
    experiment: Mapping[str, Any] = field(default_factory=dict)
    read_bytes: Callable[[str], bytes] | None = None


def is_expression(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in EXPRESSION_KEYS


def resolve(value: Any, scope: Scope) -> Any:
    """Replace every expression inside `value` (dicts and lists walked recursively) by its value."""
    if is_expression(value):
        key, spec = next(iter(value.items()))
        if key == "Get":
            return get(spec, scope)
        if key == "Std:Join":
            return join(spec, scope)
        return json_get(spec, scope)
    if isinstance(value, dict):
        return {k: resolve(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, scope) for v in value]
    return value


def parse_path(path: str) -> list[str | int]:
    """`a.b[0]['c d'].e` -> ['a', 'b', 0, 'c d', 'e']; raises ResolveError on anything else."""
    tokens: list[str | int] = []
    pos = 0
    while pos < len(path):
        match = _TOKEN.match(path, pos)
        if not match or match.end() == pos:
            raise ResolveError(f"malformed path {path!r} at character {pos + 1}")
        if match["name"] is not None:
            tokens.append(match["name"])
        elif match["index"] is not None:
            tokens.append(int(match["index"]))
        else:
            quoted = match["sq"] if match["sq"] is not None else match["dq"]
            tokens.append(re.sub(r"\\(.)", r"\1", quoted))
        pos = match.end()
    return tokens


def walk(value: Any, tokens: list[str | int], where: str) -> Any:
    """Follow `tokens` into `value`; lists accept an index or the name of a member (see NAME_KEYS)."""
    for depth, token in enumerate(tokens):
        here = f"{where}{_render(tokens[: depth + 1])}"
        if isinstance(value, list):
            if isinstance(token, int):
                if not -len(value) <= token < len(value):
                    raise ResolveError(f"{here}: index {token} out of range (list has {len(value)} items)")
                value = value[token]
                continue
            named = [v for v in value if isinstance(v, dict) and any(v.get(k) == token for k in NAME_KEYS)]
            if not named:
                names = sorted(
                    {str(v.get(k)) for v in value if isinstance(v, dict) for k in NAME_KEYS if k in v}
                )
                raise ResolveError(f"{here}: no item named {token!r} (names: {', '.join(names) or 'none'})")
            value = named[0]
            if set(value) == {"Name", "Value"}:
                # OutputParameters-style lists ({Name, Value}) resolve to the value itself.
                value = value["Value"]
            continue
        if isinstance(value, dict):
            if token not in value:
                raise ResolveError(f"{here}: no such property")
            value = value[token]
            continue
        raise ResolveError(f"{here}: cannot index into a {type(value).__name__}")
    return value


def _render(tokens: list[str | int]) -> str:
    out = ""
    for token in tokens:
        if isinstance(token, int):
            out += f"[{token}]"
        elif re.fullmatch(r"[A-Za-z0-9_\-]+", token):
            out += f".{token}"
        else:
            out += f"['{token}']"
    return out


def get(ref: Any, scope: Scope) -> Any:
    """Resolve `{"Get": ref}` over parameters, execution variables, experiment config and step properties."""
    if not isinstance(ref, str) or not ref:
        raise ResolveError(f"invalid Get reference {ref!r}")
    label = f"{{'Get': '{ref}'}}"
    root, _, rest = ref.partition(".")
    try:
        tokens = parse_path(rest)
    except ResolveError as exc:
        raise ResolveError(f"Unable to resolve {label}: {exc}") from None
    if not tokens:
        raise ResolveError(f"Unable to resolve {label}: nothing after {root!r}")
    head = tokens[0]
    try:
        if root == "Parameters":
            if head not in scope.parameters:
                raise ResolveError(f"the pipeline has no parameter {head!r}")
            return walk(scope.parameters[head], tokens[1:], f"Parameters.{head}")
        if root == "Execution":
            if head == "CurrentDateTime":
                return _iso(datetime.now(UTC))
            if head not in scope.execution:
                raise ResolveError(f"unknown execution variable {head!r}")
            return scope.execution[head]
        if root == "PipelineExperimentConfig":
            if head not in scope.experiment:
                raise ResolveError(f"PipelineExperimentConfig has no {head!r}")
            return resolve(scope.experiment[head], scope)
        if root == "Steps":
            if head not in scope.steps:
                raise ResolveError(
                    f"step {head!r} has no properties (it does not exist or has not succeeded)"
                )
            return walk(scope.steps[head], tokens[1:], f"Steps.{head}")
    except ResolveError as exc:
        raise ResolveError(f"Unable to resolve {label}: {exc}") from None
    raise ResolveError(f"Unable to resolve {label}: unknown root {root!r}")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stringify(value: Any) -> str:
    """How a value is written into a string (Std:Join, ContainerArguments): JSON literals for bools."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def join(spec: Any, scope: Scope) -> str:
    """`{"Std:Join": {"On": sep, "Values": [...]}}`: each value resolved and stringified, then joined."""
    if not isinstance(spec, dict) or not isinstance(spec.get("Values"), list):
        raise ResolveError(f"invalid Std:Join {spec!r}: needs On and a Values list")
    separator = stringify(resolve(spec.get("On", ""), scope))
    return separator.join(stringify(resolve(v, scope)) for v in spec["Values"])


def json_get(spec: Any, scope: Scope) -> Any:
    """`{"Std:JsonGet": {"PropertyFile" | "S3Uri": ..., "Path": p}}`: read a JSON object, follow `p`."""
    if not isinstance(spec, dict) or "Path" not in spec:
        raise ResolveError(f"invalid Std:JsonGet {spec!r}: needs Path and PropertyFile or S3Uri")
    path = resolve(spec["Path"], scope)
    if "PropertyFile" in spec:
        uri = property_file_uri(spec["PropertyFile"], scope)
    elif "S3Uri" in spec:
        uri = stringify(resolve(spec["S3Uri"], scope))
    else:
        raise ResolveError(f"invalid Std:JsonGet {spec!r}: needs PropertyFile or S3Uri")
    label = f"Std:JsonGet of {path!r} in {uri}"
    if scope.read_bytes is None:
        raise ResolveError(f"{label}: no object store to read from")
    try:
        document = json.loads(scope.read_bytes(uri))
    except json.JSONDecodeError as exc:
        raise ResolveError(f"{label}: the file is not valid JSON ({exc})") from None
    except Exception as exc:  # the store's NoSuchKey / StoreError: a missing file fails the step
        raise ResolveError(f"{label}: cannot read the file ({exc})") from None
    try:
        return walk(document, parse_path(str(path)), "")
    except ResolveError as exc:
        raise ResolveError(f"{label}: {exc}") from None


def property_file_uri(ref: Any, scope: Scope) -> str:
    """URI of a PropertyFile: `<Outputs[OutputName].S3Output.S3Uri>/<FilePath>` of the declaring step."""
    text = ref.get("Get") if isinstance(ref, dict) else None
    match = re.fullmatch(r"Steps\.([A-Za-z0-9_\-]+)\.PropertyFiles\.(.+)", text or "")
    if not match:
        raise ResolveError(f"invalid PropertyFile reference {ref!r}")
    step, name = match.groups()
    declared = [p for p in scope.property_files.get(step, []) if p.get("PropertyFileName") == name]
    if not declared:
        raise ResolveError(
            f"Unable to resolve {{'Get': '{text}'}}: step {step!r} declares no property file {name!r}"
        )
    output = declared[0]["OutputName"]
    base = get(f"Steps.{step}.ProcessingOutputConfig.Outputs['{output}'].S3Output.S3Uri", scope)
    return f"{str(base).rstrip('/')}/{str(declared[0]['FilePath']).lstrip('/')}"


def _kind(value: Any, expr: Any) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, (int, float)):
        return "Number"
    if isinstance(value, str):
        return "String"
    raise ResolveError(f"condition operand {expr!r} resolved to {type(value).__name__} {value!r}")


def evaluate_condition(condition: Mapping[str, Any], scope: Scope) -> bool:
    """One condition of a Condition step (Equals, ordering, In, Not, Or, nested at any depth)."""
    kind = condition.get("Type")
    if kind in COMPARISONS:
        left, right = resolve(condition.get("LeftValue"), scope), resolve(condition.get("RightValue"), scope)
        lk, rk = _kind(left, condition.get("LeftValue")), _kind(right, condition.get("RightValue"))
        if lk != rk:
            raise ResolveError(
                f"{kind} cannot compare {lk} {left!r} with {rk} {right!r}: operands must have the same type"
            )
        if kind == "Equals":
            return bool(left == right)
        if lk == "Boolean":
            raise ResolveError(f"{kind} cannot order Boolean values {left!r} and {right!r}")
        return {
            "GreaterThan": left > right,
            "GreaterThanOrEqualTo": left >= right,
            "LessThan": left < right,
            "LessThanOrEqualTo": left <= right,
        }[kind]
    if kind == "In":
        query = resolve(condition.get("QueryValue"), scope)
        qk = _kind(query, condition.get("QueryValue"))
        values = [resolve(v, scope) for v in condition.get("Values", [])]
        for raw, value in zip(condition.get("Values", []), values, strict=True):
            if _kind(value, raw) != qk:
                raise ResolveError(f"In cannot compare {qk} {query!r} with {_kind(value, raw)} {value!r}")
        return query in values
    if kind == "Not":
        return not evaluate_condition(condition["Condition"], scope)
    if kind == "Or":
        # Every branch is evaluated so an unresolvable reference always fails the step, not only sometimes.
        outcomes = [evaluate_condition(c, scope) for c in condition.get("Conditions", [])]
        return any(outcomes)
    raise ResolveError(f"unsupported condition type {kind!r}")


def step_references(value: Any) -> set[str]:
    """Names of steps whose properties `value` reads (Get Steps.X..., JsonGet PropertyFile of X)."""
    found: set[str] = set()
    if isinstance(value, dict):
        ref = value.get("Get") if len(value) == 1 else None
        if isinstance(ref, str) and ref.startswith("Steps."):
            match = re.match(r"Steps\.([A-Za-z0-9_\-]+)", ref)
            if match:
                found.add(match.group(1))
        for item in value.values():
            found |= step_references(item)
    elif isinstance(value, list):
        for item in value:
            found |= step_references(item)
    return found


def typed_parameter(declared: Mapping[str, Any], raw: Any) -> Any:
    """A parameter value (strings as StartPipelineExecution passes them) converted to its declared Type."""
    kind = declared.get("Type", "String")
    name = declared.get("Name")
    try:
        if kind == "Integer":
            return raw if isinstance(raw, int) and not isinstance(raw, bool) else int(str(raw))
        if kind == "Float":
            return float(raw) if not isinstance(raw, bool) else _bad(name, raw, kind)
        if kind == "Boolean":
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in {"true", "false"}:
                return str(raw).lower() == "true"
            return _bad(name, raw, kind)
    except (TypeError, ValueError):
        return _bad(name, raw, kind)
    return raw if isinstance(raw, str) else stringify(raw)


def _bad(name: Any, raw: Any, kind: str) -> Any:
    raise ResolveError(f"parameter {name!r}: {raw!r} is not a valid {kind}")
