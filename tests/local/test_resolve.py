"""Resolution of Get, Std:Join, Std:JsonGet, parameters and conditions, as pure functions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.local.resolve import (
    ResolveError,
    Scope,
    evaluate_condition,
    get,
    parse_path,
    resolve,
    step_references,
    stringify,
    typed_parameter,
)

PROCESSING = {
    "ProcessingJobName": "prep",
    "ProcessingInputs": [{"InputName": "code", "S3Input": {"S3Uri": "s3://b/code/prep.py"}}],
    "ProcessingOutputConfig": {
        "Outputs": [
            {"OutputName": "train", "S3Output": {"S3Uri": "s3://b/out/train"}},
            {"OutputName": "evaluation", "S3Output": {"S3Uri": "s3://b/out/evaluation/"}},
        ]
    },
}
TRAINING = {
    "ModelArtifacts": {"S3ModelArtifacts": "s3://b/m/model.tar.gz"},
    "FinalMetricDataList": [{"MetricName": "validation:auc", "Value": 0.93}],
    "HyperParameters": {"eta": "0.1"},
}
TUNING = {
    "BestTrainingJob": {"TrainingJobName": "t-001"},
    "TrainingJobSummaries": [{"TrainingJobName": "t-001"}],
}
FILES = {
    "s3://b/out/evaluation/evaluation.json": json.dumps(
        {"regression_metrics": {"mse": {"value": 4.5}}, "list": [{"v": 1}, {"v": 2}]}
    ).encode(),
    "s3://b/other.json": b'{"a": {"b": "c"}}',
    "s3://b/bad.json": b"{not json",
}


def read(uri: str) -> bytes:
    if uri not in FILES:
        raise FileNotFoundError(f"no object at {uri}")
    return FILES[uri]


@pytest.fixture
def scope() -> Scope:
    return Scope(
        parameters={"Threshold": 6.0, "Name": "abc", "Count": 3, "Flag": True},
        execution={"PipelineExecutionId": "exec1", "PipelineName": "p"},
        steps={"Prep": PROCESSING, "Train": TRAINING, "Tune": TUNING, "Gate": {"Outcome": "True"}},
        property_files={
            "Prep": [{"PropertyFileName": "Eval", "OutputName": "evaluation", "FilePath": "evaluation.json"}]
        },
        experiment={"TrialName": {"Get": "Execution.PipelineExecutionId"}},
        read_bytes=read,
    )


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("Parameters.Threshold", 6.0),
        ("Execution.PipelineExecutionId", "exec1"),
        ("PipelineExperimentConfig.TrialName", "exec1"),
        ("Steps.Train.ModelArtifacts.S3ModelArtifacts", "s3://b/m/model.tar.gz"),
        ("Steps.Prep.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri", "s3://b/out/train"),
        ("Steps.Prep.ProcessingOutputConfig.Outputs[1].OutputName", "evaluation"),
        ("Steps.Prep.ProcessingInputs['code'].S3Input.S3Uri", "s3://b/code/prep.py"),
        ("Steps.Train.FinalMetricDataList['validation:auc'].Value", 0.93),
        ("Steps.Train.HyperParameters['eta']", "0.1"),
        ("Steps.Tune.TrainingJobSummaries[0].TrainingJobName", "t-001"),
        ("Steps.Tune.BestTrainingJob.TrainingJobName", "t-001"),
        ("Steps.Gate.Outcome", "True"),
    ],
)
def test_get_resolves_sagemaker_property_paths(scope: Scope, ref: str, expected: Any) -> None:
    assert get(ref, scope) == expected


@pytest.mark.parametrize(
    "ref, fragment",
    [
        ("Parameters.Nope", "no parameter 'Nope'"),
        ("Steps.Ghost.ModelArtifacts.S3ModelArtifacts", "step 'Ghost' has no properties"),
        (
            "Steps.Train.ModelArtifacts.S3ModelArtifactz",
            "Steps.Train.ModelArtifacts.S3ModelArtifactz: no such property",
        ),
        (
            "Steps.Prep.ProcessingOutputConfig.Outputs['x'].S3Output.S3Uri",
            "no item named 'x' (names: evaluation, train)",
        ),
        ("Steps.Tune.TrainingJobSummaries[5].TrainingJobName", "index 5 out of range"),
        ("Execution.Nope", "unknown execution variable"),
        ("Other.X", "unknown root 'Other'"),
        ("Steps.Train.ModelArtifacts[", "malformed path"),
    ],
)
def test_unresolvable_references_name_the_reference(scope: Scope, ref: str, fragment: str) -> None:
    with pytest.raises(ResolveError) as err:
        get(ref, scope)
    assert f"{{'Get': '{ref}'}}" in str(err.value)
    assert fragment in str(err.value)


def test_join_stringifies_values_like_sagemaker(scope: Scope) -> None:
    expr = {
        "Std:Join": {
            "On": "/",
            "Values": [
                "s3://b",
                {"Get": "Parameters.Count"},
                {"Get": "Parameters.Flag"},
                {"Get": "Parameters.Threshold"},
                {"Std:Join": {"On": "-", "Values": ["a", 1]}},
            ],
        }
    }
    assert resolve(expr, scope) == "s3://b/3/true/6.0/a-1"


def test_resolve_walks_nested_requests(scope: Scope) -> None:
    request = {"A": [{"B": {"Get": "Parameters.Name"}}, 2], "C": {"Get": "Execution.PipelineName"}}
    assert resolve(request, scope) == {"A": [{"B": "abc"}, 2], "C": "p"}


def test_json_get_property_file_and_s3_uri_forms(scope: Scope) -> None:
    by_file = {
        "Std:JsonGet": {
            "PropertyFile": {"Get": "Steps.Prep.PropertyFiles.Eval"},
            "Path": "regression_metrics.mse.value",
        }
    }
    assert resolve(by_file, scope) == 4.5
    listed = {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Prep.PropertyFiles.Eval"}, "Path": "list[1].v"}}
    assert resolve(listed, scope) == 2
    by_uri = {
        "Std:JsonGet": {"S3Uri": {"Std:Join": {"On": "/", "Values": ["s3://b", "other.json"]}}, "Path": "a.b"}
    }
    assert resolve(by_uri, scope) == "c"


@pytest.mark.parametrize(
    "spec, fragment",
    [
        (
            {"PropertyFile": {"Get": "Steps.Prep.PropertyFiles.Nope"}, "Path": "a"},
            "declares no property file 'Nope'",
        ),
        ({"S3Uri": "s3://b/missing.json", "Path": "a"}, "cannot read the file"),
        ({"S3Uri": "s3://b/bad.json", "Path": "a"}, "not valid JSON"),
        ({"S3Uri": "s3://b/other.json", "Path": "a.x"}, "no such property"),
        ({"S3Uri": "s3://b/other.json"}, "needs Path"),
    ],
)
def test_json_get_failures_are_step_failures(scope: Scope, spec: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ResolveError, match=fragment.replace("(", r"\(")):
        resolve({"Std:JsonGet": spec}, scope)


MSE = {
    "Std:JsonGet": {
        "PropertyFile": {"Get": "Steps.Prep.PropertyFiles.Eval"},
        "Path": "regression_metrics.mse.value",
    }
}


@pytest.mark.parametrize(
    "condition, outcome",
    [
        (
            {"Type": "LessThanOrEqualTo", "LeftValue": MSE, "RightValue": {"Get": "Parameters.Threshold"}},
            True,
        ),
        ({"Type": "LessThan", "LeftValue": MSE, "RightValue": 4.5}, False),
        ({"Type": "GreaterThan", "LeftValue": MSE, "RightValue": 4}, True),
        ({"Type": "GreaterThanOrEqualTo", "LeftValue": 4, "RightValue": MSE}, False),
        ({"Type": "Equals", "LeftValue": {"Get": "Parameters.Name"}, "RightValue": "abc"}, True),
        ({"Type": "Equals", "LeftValue": {"Get": "Parameters.Count"}, "RightValue": 3.0}, True),
        ({"Type": "Equals", "LeftValue": {"Get": "Parameters.Flag"}, "RightValue": True}, True),
        (
            {
                "Type": "In",
                "QueryValue": {"Get": "Parameters.Name"},
                "Values": ["x", {"Get": "Parameters.Name"}],
            },
            True,
        ),
        ({"Type": "In", "QueryValue": 2, "Values": [1, 3]}, False),
        ({"Type": "Not", "Condition": {"Type": "Equals", "LeftValue": 1, "RightValue": 1}}, False),
        (
            {
                "Type": "Or",
                "Conditions": [
                    {"Type": "Equals", "LeftValue": 1, "RightValue": 2},
                    {
                        "Type": "Not",
                        "Condition": {
                            "Type": "Or",
                            "Conditions": [{"Type": "LessThan", "LeftValue": MSE, "RightValue": 1}],
                        },
                    },
                ],
            },
            True,
        ),
        ({"Type": "Or", "Conditions": []}, False),
    ],
)
def test_every_condition_type_including_nested(
    scope: Scope, condition: dict[str, Any], outcome: bool
) -> None:
    assert evaluate_condition(condition, scope) is outcome


@pytest.mark.parametrize(
    "condition, fragment",
    [
        (
            {"Type": "Equals", "LeftValue": "6.0", "RightValue": 6.0},
            "cannot compare String '6.0' with Number 6.0",
        ),
        ({"Type": "GreaterThan", "LeftValue": True, "RightValue": False}, "cannot order Boolean"),
        ({"Type": "In", "QueryValue": "a", "Values": [1]}, "In cannot compare String"),
        (
            {"Type": "LessThan", "LeftValue": {"Get": "Steps.Prep.ProcessingOutputConfig"}, "RightValue": 1},
            "resolved to dict",
        ),
        ({"Type": "Between"}, "unsupported condition type 'Between'"),
        (
            {
                "Type": "Or",
                "Conditions": [
                    {"Type": "Equals", "LeftValue": 1, "RightValue": 1},
                    {"Type": "Equals", "LeftValue": {"Get": "Parameters.X"}, "RightValue": 1},
                ],
            },
            "no parameter 'X'",
        ),
    ],
)
def test_incomparable_or_unknown_conditions_fail(
    scope: Scope, condition: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ResolveError, match=fragment):
        evaluate_condition(condition, scope)


def test_step_references_find_data_dependencies() -> None:
    args = {
        "In": {"Get": "Steps.Prep.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"},
        "J": {"Std:Join": {"On": "/", "Values": [{"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}]}},
        "F": {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Eval.PropertyFiles.Report"}, "Path": "x"}},
        "P": {"Get": "Parameters.Steps"},
    }
    assert step_references(args) == {"Prep", "Train", "Eval"}


@pytest.mark.parametrize(
    "declared, raw, value",
    [
        ({"Type": "Integer"}, "5", 5),
        ({"Type": "Float"}, "0.5", 0.5),
        ({"Type": "Float"}, 1, 1.0),
        ({"Type": "Boolean"}, "True", True),
        ({"Type": "Boolean"}, "false", False),
        ({"Type": "String"}, "x", "x"),
        ({}, 3, "3"),
    ],
)
def test_parameters_are_typed_as_declared(declared: dict[str, Any], raw: Any, value: Any) -> None:
    assert typed_parameter(declared, raw) == value


@pytest.mark.parametrize(
    "declared, raw", [({"Type": "Integer"}, "1.5"), ({"Type": "Boolean"}, "yes"), ({"Type": "Float"}, "x")]
)
def test_bad_parameter_values_are_refused(declared: dict[str, Any], raw: Any) -> None:
    with pytest.raises(ResolveError, match="not a valid"):
        typed_parameter({**declared, "Name": "P"}, raw)


@given(
    st.lists(st.one_of(st.integers(0, 50), st.text(alphabet="abc_-:. ", min_size=1, max_size=8)), min_size=1)
)
def test_parse_path_round_trips_rendered_paths(tokens: list[Any]) -> None:
    text = "".join(f"[{t}]" if isinstance(t, int) else f"['{t}']" for t in tokens)
    assert parse_path("head" + text) == ["head", *tokens]


def test_stringify_matches_definition_literals() -> None:
    assert [stringify(v) for v in (True, None, 1, 0.5, "s", [1], {"a": 1})] == [
        "true",
        "",
        "1",
        "0.5",
        "s",
        "[1]",
        '{"a":1}',
    ]
