"""`python -m pipelines.local run DEFINITION.json`: run any compiled definition (SDK v2 or v3) locally.

Exit codes: 0 the execution Succeeded, 1 it did not, 2 bad arguments or definition.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError, ParamValidationError

LOCAL_ROLE = "arn:aws:iam::000000000000:role/pdm-mlops-local"
TERMINAL = {"Succeeded", "Failed", "Stopped", "CompletedWithFailures"}


class UsageError(Exception):
    """A bad argument or definition file; printed as one line, exit code 2."""


def _pairs(values: list[str], what: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"error: {what} {item!r} must look like NAME=VALUE")
        pairs[key] = value
    return pairs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.local", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="create/update the pipeline from a definition, start it and wait")
    run.add_argument("definition", type=Path, help="pipeline definition JSON compiled by the SageMaker SDK")
    retry = sub.add_parser("retry", help="retry a failed or interrupted execution from its unfinished steps")
    retry.add_argument("execution_arn")
    for command in (run, retry):
        command.add_argument(
            "--root", type=Path, default=Path(".mlops"), help="engine folder (default .mlops)"
        )
        command.add_argument("--parallelism", type=int, help="MaxParallelExecutionSteps")
        command.add_argument(
            "--lambda",
            dest="lambdas",
            action="append",
            default=[],
            metavar="NAME=module:function",
            help="local handler for a Lambda step's function (repeatable)",
        )
        command.add_argument("--no-wait", action="store_true", help="start and return the execution ARN")
    run.add_argument("--param", action="append", default=[], metavar="Name=value", help="pipeline parameter")
    run.add_argument("--pipeline-name", help="pipeline name (default: from the file name)")
    run.add_argument(
        "--put",
        action="append",
        default=[],
        metavar="s3://bucket/key=PATH",
        help="copy a local file (or folder) into the local object store first (code, data); repeatable",
    )
    return parser


def _load_definition(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"error: cannot read definition {path}: {exc.strerror or exc}") from None
    from pipelines.local.executor import DefinitionError, parse_definition

    try:
        parse_definition(text)
    except DefinitionError as exc:
        raise UsageError(f"error: {path} is not a usable pipeline definition: {exc}") from None
    return text


def _pipeline_name(path: Path, given: str | None) -> str:
    name = given or re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9-]", "-", path.stem)).strip("-") or "pipeline"
    if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}", name):
        raise UsageError(f"error: pipeline name {name!r} must be letters, digits and single hyphens")
    return name


def _upsert(client: Any, name: str, text: str) -> None:
    try:
        client.create_pipeline(PipelineName=name, PipelineDefinition=text, RoleArn=LOCAL_ROLE)
    except ClientError as exc:
        if "already exists" not in exc.response["Error"]["Message"]:
            raise
        client.update_pipeline(PipelineName=name, PipelineDefinition=text, RoleArn=LOCAL_ROLE)


def _put(client: Any, puts: dict[str, str]) -> None:
    for uri, local in puts.items():
        path = Path(local)
        if path.is_dir():
            client.store.upload_dir(path, uri)
        elif path.is_file():
            client.store.put_file(uri, path)
        else:
            raise UsageError(f"error: --put {uri}={local}: no such file or folder")


def follow(client: Any, arn: str, out: Any = sys.stdout, poll: float = 0.5) -> str:
    """Print each step's status change until the execution ends; returns its final status."""
    seen: dict[str, str] = {}
    while True:
        status = client.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"]
        steps = client.list_pipeline_execution_steps(PipelineExecutionArn=arn, SortOrder="Ascending")
        for step in steps["PipelineExecutionSteps"]:
            label = step["StepStatus"] + (" (cache hit)" if "CacheHitResult" in step else "")
            if seen.get(step["StepName"]) != label:
                seen[step["StepName"]] = label
                print(f"  {step['StepName']}: {label}", file=out, flush=True)
        if status in TERMINAL:
            return status
        time.sleep(poll)


def summary(client: Any, arn: str, out: Any = sys.stdout) -> None:
    execution = client.describe_pipeline_execution(PipelineExecutionArn=arn)
    steps = client.list_pipeline_execution_steps(PipelineExecutionArn=arn, SortOrder="Ascending")
    print(f"{execution['PipelineExecutionStatus']}: {arn}", file=out)
    for step in steps["PipelineExecutionSteps"]:
        took = ""
        if "EndTime" in step:
            took = f" {(step['EndTime'] - step['StartTime']).total_seconds():.1f}s"
        extra = " cache-hit" if "CacheHitResult" in step else f" attempts={step.get('AttemptCount', 0)}"
        print(f"  {step['StepName']:<28} {step['StepStatus']:<10}{took}{extra}", file=out)
        if step.get("FailureReason"):
            print(f"      {step['FailureReason'].splitlines()[0][:300]}", file=out)
    if execution.get("FailureReason"):
        print(f"  reason: {execution['FailureReason'][:500]}", file=out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from pipelines.local.client import LocalSageMaker

    parallelism = {"ParallelismConfiguration": {"MaxParallelExecutionSteps": args.parallelism}}
    try:
        client = LocalSageMaker(root=args.root, lambda_handlers=_pairs(args.lambdas, "--lambda"))
        if args.command == "run":
            text = _load_definition(args.definition)
            name = _pipeline_name(args.definition, args.pipeline_name)
            _put(client, _pairs(args.put, "--put"))
            _upsert(client, name, text)
            params = [{"Name": k, "Value": v} for k, v in _pairs(args.param, "--param").items()]
            arn = client.start_pipeline_execution(
                PipelineName=name, PipelineParameters=params, **(parallelism if args.parallelism else {})
            )["PipelineExecutionArn"]
        else:
            arn = args.execution_arn
            client.retry_pipeline_execution(
                PipelineExecutionArn=arn, **(parallelism if args.parallelism else {})
            )
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ClientError as exc:
        print(f"error: {exc.response['Error']['Message']}", file=sys.stderr)
        return 2
    except ParamValidationError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"Execution {arn}", flush=True)
    if args.no_wait:
        return 0
    try:
        status = follow(client, arn)
    except KeyboardInterrupt:
        print(f"not waiting any more; the execution continues: {arn}", file=sys.stderr)
        return 1
    summary(client, arn)
    return 0 if status == "Succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
