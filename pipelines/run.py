"""`python -m pipelines.run`: compile the pipeline, publish its code, upsert, start, follow and summarise.

Exit codes: 0 the execution succeeded (or the definition was written); 1 the execution failed or stopped
(including a failed model gate); 2 bad configuration or usage; 3 the target cannot be used (e.g. no AWS
credentials); 130 interrupted.
"""

from __future__ import annotations

import argparse
import io
import sys
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TARGET = 0, 1, 2, 3


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.run",
        description="Run the pdm-mlops pipeline locally (default) or on Amazon SageMaker.",
    )
    parser.add_argument("--target", choices=["local", "sagemaker"], default="local")
    parser.add_argument("--config", type=Path, help="YAML settings file (default: ./pdm.yaml if present)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting (training.use_spot=false, use_spot=false) or a pipeline parameter "
        "(GateThreshold=0.9); repeatable",
    )
    wait = parser.add_mutually_exclusive_group()
    wait.add_argument(
        "--wait",
        dest="wait",
        action="store_true",
        default=None,
        help="follow the execution until it ends (default on the local target)",
    )
    wait.add_argument("--no-wait", dest="wait", action="store_false", help="start and return at once")
    parser.add_argument(
        "--definition",
        type=Path,
        metavar="OUT.json",
        help="write the compiled definition JSON and exit (offline, no target needed)",
    )
    parser.add_argument(
        "--retry",
        metavar="EXECUTION_ARN",
        help="retry a failed or interrupted execution from its unfinished steps",
    )
    parser.add_argument("--root", type=Path, help="local engine folder (default .mlops or $PDM_ROOT)")
    parser.add_argument("--parallelism", type=int, default=4, help="MaxParallelExecutionSteps (default 4)")
    parser.add_argument(
        "--spot-interruptions",
        type=int,
        metavar="N",
        help="local target: interrupt each managed-Spot training job N times after a checkpoint, as a "
        "Spot reclaim would (default $PDM_LOCAL_SPOT_INTERRUPTIONS or 0)",
    )
    return parser.parse_args(argv)


def split_params(pairs: list[str]) -> tuple[list[str], dict[str, str]]:
    """Setting overrides (snake_case keys) vs. execution parameters (the definition's CamelCase names)."""
    settings, parameters = [], {}
    for pair in pairs:
        key = pair.split("=", 1)[0].strip()
        if key[:1].isupper() and "." not in key and "=" in pair:
            parameters[key] = pair.split("=", 1)[1]
        else:
            settings.append(pair)
    return settings, parameters


def ensure_input_data(config: Any, target: Any, console: Console) -> None:
    """Generate the built-in data set into the target's store when no input URI was configured."""
    if config.data.input_uri is not None or target.exists(config.input_uri):
        return
    from model_code.data import generate

    frame = generate(config.data.builtin_rows, config.data.seed)
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    target.put(config.input_uri + "data.csv", buffer.getvalue().encode())
    console.print(
        f"Generated the built-in data set: {len(frame):,} rows -> {config.input_uri}data.csv", highlight=False
    )


def champion_model_uri(client: Any, group: str) -> str | None:
    """ModelDataUrl of the registry's champion (`deploy.registry.champion`: the latest Approved version)."""
    from deploy.registry import champion

    package = champion(client, group)
    return None if package is None else package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]


def upsert_pipeline(client: Any, name: str, definition: str, role_arn: str, parallelism: int) -> None:
    from botocore.exceptions import ClientError

    common = {
        "PipelineName": name,
        "PipelineDefinition": definition,
        "RoleArn": role_arn,
        "ParallelismConfiguration": {"MaxParallelExecutionSteps": parallelism},
    }
    try:
        client.describe_pipeline(PipelineName=name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in {"ResourceNotFound", "ValidationException"}:
            raise
        client.create_pipeline(**common, ClientRequestToken=uuid.uuid4().hex)
        return
    client.update_pipeline(**common)


def start(client: Any, name: str, parameters: dict[str, Any], parallelism: int) -> str:
    response = client.start_pipeline_execution(
        PipelineName=name,
        PipelineParameters=[{"Name": k, "Value": str(v)} for k, v in sorted(parameters.items())],
        ParallelismConfiguration={"MaxParallelExecutionSteps": parallelism},
        ClientRequestToken=uuid.uuid4().hex,
    )
    return response["PipelineExecutionArn"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True)
    from pipelines.config import ConfigError, load_config

    settings, exec_params = split_params(args.param)
    try:
        config = load_config(args.config, settings)
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/] {exc}", highlight=False)
        return EXIT_USAGE
    if args.parallelism < 1:
        err.print("[red]usage error:[/] --parallelism must be at least 1", highlight=False)
        return EXIT_USAGE
    if args.spot_interruptions is not None and args.spot_interruptions < 0:
        err.print("[red]usage error:[/] --spot-interruptions must be 0 or more", highlight=False)
        return EXIT_USAGE

    if args.definition and not args.retry:
        from pipelines.pipeline import compile_pipeline

        compiled = compile_pipeline(config)
        unknown = sorted(set(exec_params) - set(compiled.parameters))
        if unknown:
            err.print(f"[red]usage error:[/] unknown pipeline parameter(s): {', '.join(unknown)}")
            return EXIT_USAGE
        args.definition.write_text(compiled.definition)
        console.print(
            f"Wrote the {len(compiled.definition):,}-byte definition of {config.pipeline_name!r} "
            f"to {args.definition}",
            highlight=False,
        )
        return EXIT_OK

    from pipelines.targets import TargetError, make_target

    try:
        target = make_target(args.target, config.region, args.root, args.spot_interruptions)
    except TargetError as exc:
        err.print(f"[red]{args.target} target unavailable:[/] {exc}", highlight=False)
        return EXIT_TARGET
    wait = args.wait if args.wait is not None else args.target == "local"
    try:
        return _run(args, config, target, exec_params, wait, console, err)
    except KeyboardInterrupt:
        err.print("interrupted; the execution keeps its records - resume it with --retry EXECUTION_ARN")
        return 130
    except Exception as exc:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, (ClientError, BotoCoreError)):
            err.print(f"[red]{args.target} error:[/] {exc}", highlight=False)
            return EXIT_TARGET
        raise


def _run(
    args: argparse.Namespace,
    config: Any,
    target: Any,
    exec_params: dict[str, str],
    wait: bool,
    console: Console,
    err: Console,
) -> int:
    from pipelines.follow import TERMINAL, follow
    from pipelines.summary import collect, print_summary

    client = target.client
    if args.retry:
        client.retry_pipeline_execution(
            PipelineExecutionArn=args.retry,
            ClientRequestToken=uuid.uuid4().hex,
            ParallelismConfiguration={"MaxParallelExecutionSteps": args.parallelism},
        )
        arn = args.retry
        console.print(f"Retrying {arn}", highlight=False)
    else:
        from pipelines.pipeline import compile_pipeline
        from pipelines.sdk import publish_uploads

        compiled = compile_pipeline(config, cache_dir=target.compile_cache)
        unknown = sorted(set(exec_params) - set(compiled.parameters))
        if unknown:
            err.print(f"[red]usage error:[/] unknown pipeline parameter(s): {', '.join(unknown)}")
            return EXIT_USAGE
        ensure_input_data(config, target, console)
        publish_uploads(compiled.uploads, target.put)
        champion = champion_model_uri(client, config.registry.model_package_group)
        parameters = dict(exec_params)
        if champion and "ChampionModelUri" not in parameters:
            parameters["ChampionModelUri"] = champion
        upsert_pipeline(client, config.pipeline_name, compiled.definition, config.role_arn, args.parallelism)
        arn = start(client, config.pipeline_name, parameters, args.parallelism)
        console.print(f"Started {arn}", highlight=False)
        console.print(f"Champion: {champion or 'none (first model for this group)'}", highlight=False)
    if not wait:
        hint = (
            f"aws sagemaker list-pipeline-execution-steps --pipeline-execution-arn {arn}"
            if args.target == "sagemaker"
            else f"python -m pipelines.logs {arn.rsplit('/', 1)[-1]}"
        )
        console.print(f"Not waiting. Follow it with: {hint}", highlight=False)
        return EXIT_OK
    final = follow(client, arn, console)
    if final["PipelineExecutionStatus"] not in TERMINAL:
        return EXIT_FAILED
    summary = collect(client, target, final, config)
    print_summary(console, summary, config, target)
    return EXIT_OK if final["PipelineExecutionStatus"] == "Succeeded" else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
