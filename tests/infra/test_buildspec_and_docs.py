"""buildspec.yml has the documented shape and commands; every command in docs/deploying-to-aws.md parses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.cost import build_parser as cost_parser
from deploy.infra.cli import build_parser as infra_parser
from deploy.monitor.cli import _parser as monitor_parser
from deploy.monitor.requests import job_definition_name
from tests.infra.cfn_helpers import as_list, policy_documents, props, statements, stringify

REPO = Path(__file__).resolve().parents[2]
BUILDSPEC = REPO / "buildspec.yml"
DOCS = REPO / "docs" / "deploying-to-aws.md"
PHASES = ("install", "pre_build", "build", "post_build")


@pytest.fixture(scope="module")
def buildspec() -> dict[str, Any]:
    if not BUILDSPEC.exists():
        pytest.skip("buildspec.yml is not written yet (the lead owns it)")
    return yaml.safe_load(BUILDSPEC.read_text())


@pytest.fixture(scope="module")
def commands(buildspec: dict[str, Any]) -> list[tuple[str, str]]:
    """(phase, command) in execution order."""
    return [(p, c) for p in PHASES for c in buildspec.get("phases", {}).get(p, {}).get("commands", [])]


def _docs_lines() -> list[str]:
    return [line.strip() for line in DOCS.read_text().splitlines()]


def test_buildspec_tests_then_runs_the_sagemaker_pipeline_and_waits(
    buildspec: dict[str, Any], commands: list[tuple[str, str]]
) -> None:
    assert str(buildspec["version"]) == "0.2"
    text = [c for _, c in commands]
    test_at = next(i for i, c in enumerate(text) if re.search(r"\bmake test\b|pytest", c))
    run_at = next(i for i, c in enumerate(text) if "-m pipelines.run" in c)
    assert test_at < run_at, "tests must run before the pipeline"
    # The pipeline run: target sagemaker, waiting for the execution (how the args reach it may vary).
    run = text[run_at]
    assert re.search(r"--target[ =]sagemaker", run) and "--wait" in run
    assert "$PDM_PARAMS" in run or "${PDM_PARAMS" in run


def test_buildspec_variables_come_from_the_codebuild_project(
    buildspec: dict[str, Any], commands: list[tuple[str, str]], templates: dict[str, Any]
) -> None:
    project = props(templates["cicd"], "TrainProject")
    provided = {v["Name"] for v in project["Environment"]["EnvironmentVariables"]}
    assert {"PDM_ROLE_ARN", "PDM_BUCKET", "PDM_PARAMS"} <= provided
    defaults = set(buildspec.get("env", {}).get("variables", {}))
    referenced = {m for _, c in commands for m in re.findall(r"\$\{?(PDM_[A-Z_]+)", c)}
    # Referenced variables are set by the project, defaulted in the buildspec, or optional (${VAR:-}).
    optional = {m for _, c in commands for m in re.findall(r"\$\{(PDM_[A-Z_]+):-", c)}
    assert referenced - provided - defaults - optional == set()


def test_a_successful_build_refreshes_the_monitoring_baseline(
    commands: list[tuple[str, str]], templates: dict[str, Any]
) -> None:
    """After the pipeline, the data it trained on is baselined: the job the build role may start, no other."""
    (script,) = [c for phase, c in commands if phase == "post_build"]
    assert 'if [ "$CODEBUILD_BUILD_SUCCEEDING" != "1" ]; then exit 0; fi' in script  # not after a failure
    line = next(x for x in script.splitlines() if "-m deploy.monitor" in x)
    expanded = line.replace('"${margs[@]}"', "--dataset s3://d/data/ --project pdm --env dev --wait")
    args = monitor_parser().parse_args(shlex.split(expanded)[3:])  # the real CLI
    assert (args.target, args.command, args.wait) == ("sagemaker", "baseline", True)
    assert '--dataset "$PDM_DATA__INPUT_URI"' in script  # the data the pipeline trained on
    project = props(templates["cicd"], "TrainProject")
    provided = {v["Name"] for v in project["Environment"]["EnvironmentVariables"]}
    assert {"INFRA_PROJECT", "INFRA_ENV", "PDM_REGION", "PDM_DATA__INPUT_URI"} <= provided
    creates = [
        s
        for logical_id, document in policy_documents(templates["cicd"])
        if logical_id == "TrainBuildRole"
        for s in statements(document)
        if "sagemaker:CreateProcessingJob" in as_list(s["Action"])
    ]
    assert [stringify(r) for s in creates for r in as_list(s["Resource"])] == [
        "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:processing-job/"
        "${ProjectName}-${Environment}-baseline-*"
    ]
    assert job_definition_name("pdm-dev-baseline", "2026-11-26-abc").startswith("pdm-dev-baseline-")


def test_the_docs_show_the_buildspec_commands_verbatim(commands: list[tuple[str, str]]) -> None:
    docs = _docs_lines()
    for phase, command in commands:
        lines = [line.strip() for line in command.strip().splitlines()]
        found = any(docs[i : i + len(lines)] == lines for i in range(len(docs)))
        assert found, f"{phase} command not in docs/deploying-to-aws.md:\n{command}"
    assert "python -m pipelines.run --target sagemaker --wait" in DOCS.read_text()


def _documented(prefix: str) -> list[list[str]]:
    return [shlex.split(line)[3:] for line in _docs_lines() if line.startswith(prefix)]


def test_every_documented_infra_command_parses() -> None:
    commands = _documented("python -m deploy.infra ")
    assert {c[0] for c in commands} == {"plan", "validate", "diff", "deploy", "package", "delete"}
    parser = infra_parser()
    for argv in commands:
        parser.parse_args(argv)


def test_every_documented_cost_command_parses() -> None:
    commands = _documented("python -m deploy.cost")
    assert len(commands) >= 3
    for argv in commands:
        cost_parser().parse_args(argv)


def test_the_documented_stacks_are_the_real_ones() -> None:
    from deploy.infra.stacks import known_units

    rows = re.findall(r"^\| `([a-z@]+)` \| `([a-z]+)\.yaml` \|", DOCS.read_text(), re.MULTILINE)
    assert {unit for unit, _ in rows} <= set(known_units())
    assert {template for _, template in rows} == {
        p.stem for p in (REPO / "deploy/infra/templates").glob("*.yaml")
    }
