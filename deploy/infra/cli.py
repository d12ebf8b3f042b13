"""`python -m deploy.infra`: plan, validate, package, diff, deploy and delete the CloudFormation stacks."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)

from deploy.infra import ENVIRONMENTS
from deploy.infra.cfn import TemplateTooLarge, template_body
from deploy.infra.changeset import (
    StackOperationError,
    create_change_set,
    delete_stack,
    discard_change_set,
    execute_change_set,
)
from deploy.infra.package import PackageResult, package
from deploy.infra.stacks import (
    EnvironmentConfig,
    PlanError,
    StackSpec,
    check_placeholders,
    load_environment,
    parse_overrides,
    plan,
)

# (service, region) -> boto3 client; tests pass one that returns stubbed or moto-backed clients.
ClientFactory = Callable[[str, str], Any]
# Error codes that mean "your credentials are wrong", not "the request is wrong".
CREDENTIAL_ERROR_CODES = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AuthFailure",
    }
)
CREDENTIALS_HINT = (
    "no usable AWS credentials: set AWS_PROFILE (aws configure / aws sso login) or AWS_ACCESS_KEY_ID and"
    " AWS_SECRET_ACCESS_KEY, then retry"
)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A request the CLI refuses before talking to AWS (exit code 2)."""


class Clients:
    """Lazily created, cached clients; checks once that credentials exist before the first call."""

    def __init__(self, profile: str | None = None, factory: ClientFactory | None = None) -> None:
        self._profile = profile
        self._factory = factory
        self._session: Any = None
        self._cache: dict[tuple[str, str], Any] = {}

    def __call__(self, service: str, region: str) -> Any:
        key = (service, region)
        if key not in self._cache:
            self._cache[key] = (
                self._factory(service, region) if self._factory else self._boto3(service, region)
            )
        return self._cache[key]

    def _boto3(self, service: str, region: str) -> Any:
        import boto3

        if self._session is None:
            session = boto3.Session(profile_name=self._profile)
            # Fail before the first request, with one clear line, instead of deep inside a waiter.
            if session.get_credentials() is None:
                raise NoCredentialsError()
            self._session = session
        return self._session.client(service, region_name=region)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by the docs test to check every documented command)."""
    parser = argparse.ArgumentParser(
        prog="python -m deploy.infra",
        description="Deploy the pdm-mlops CloudFormation stacks of one environment (deploy/infra/params).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--env", required=True, choices=ENVIRONMENTS, help="environment (params/<env>.json)")
    common.add_argument(
        "--stack",
        action="append",
        metavar="UNIT",
        help="stack unit (e.g. network, serving@dr); repeatable or comma-separated; default: all",
    )
    common.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="template parameter override for the selected stacks; repeatable",
    )
    aws = argparse.ArgumentParser(add_help=False)
    aws.add_argument("--profile", help="AWS profile (default: the usual credential chain)")
    aws.add_argument("--poll-seconds", type=float, default=5, help="seconds between status polls")

    p = sub.add_parser("plan", parents=[common], help="list stacks, regions and parameters (offline)")
    p.add_argument("--show-parameters", action="store_true", help="print each stack's parameters")

    p = sub.add_parser("validate", parents=[common, aws], help="validate the templates")
    p.add_argument("--offline", action="store_true", help="run cfn-lint locally instead of ValidateTemplate")

    p = sub.add_parser("package", parents=[common, aws], help="upload templates and the API Lambda bundle")
    p.add_argument("--bucket", help="target bucket (default: the environment's artefacts bucket)")

    for name, text in (("diff", "show what a deploy would change"), ("deploy", "create or update stacks")):
        p = sub.add_parser(name, parents=[common, aws], help=text)
        p.add_argument("--package", action="store_true", help="package first and deploy from S3")
        p.add_argument("--bucket", help="bucket for --package (default: the artefacts bucket)")
        if name == "deploy":
            p.add_argument("--yes", action="store_true", help="execute without asking")
            p.add_argument("--no-execute", action="store_true", help="leave the change sets for review")

    p = sub.add_parser("delete", parents=[common, aws], help="delete stacks (reverse order)")
    p.add_argument("--yes", action="store_true", help="delete without asking")
    return parser


def _confirm(question: str, assume_yes: bool, stdin: TextIO, out: TextIO) -> bool:
    if assume_yes:
        return True
    if not stdin.isatty():
        raise UsageError(f"{question} needs confirmation: pass --yes in non-interactive runs")
    print(f"{question} [y/N] ", end="", file=out, flush=True)
    return stdin.readline().strip().lower() in ("y", "yes")


def _artifacts_bucket(clients: Clients, env: EnvironmentConfig) -> str:
    account = clients("sts", env.primary_region).get_caller_identity()["Account"]
    return f"{env.project}-{env.name}-artifacts-{account}-{env.primary_region}"


def _run_package(
    args: argparse.Namespace, clients: Clients, env: EnvironmentConfig, specs: Sequence[StackSpec]
) -> PackageResult:
    bucket = args.bucket or _artifacts_bucket(clients, env)
    primary = [s for s in specs if s.region_role == "primary"]
    return package(clients("s3", env.primary_region), bucket, env.primary_region, primary, env.name)


def _cmd_plan(args: argparse.Namespace, specs: Sequence[StackSpec], out: TextIO) -> int:
    for spec in specs:
        print(
            f"{spec.unit:<14} {spec.region:<16} {spec.stack_name:<28} templates/{spec.template}.yaml",
            file=out,
        )
        if args.show_parameters:
            for key, value in sorted(spec.parameters.items()):
                print(f"    {key}={value}", file=out)
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace, specs: Sequence[StackSpec], clients: Clients, out: TextIO) -> int:
    unique = {s.template_path: s for s in specs}
    if args.offline:
        try:
            from cfnlint.api import lint_file
        except ImportError:
            raise UsageError("validate --offline needs cfn-lint: pip install -e '.[dev]'") from None
        errors = 0
        for path in unique:
            for match in lint_file(path):
                errors += match.rule.id.startswith("E")
                print(f"{path.name}:{match.linenumber}: {match.rule.id} {match.message}", file=out)
            print(f"checked {path.name}", file=out)
        return EXIT_FAILED if errors else EXIT_OK
    for path, spec in unique.items():
        cfn = clients("cloudformation", spec.region)
        response = cfn.validate_template(TemplateBody=template_body(path))
        caps = ", ".join(response.get("Capabilities", [])) or "none"
        print(
            f"{path.name}: valid ({len(response.get('Parameters', []))} parameters; capabilities {caps})",
            file=out,
        )
    return EXIT_OK


def _cmd_package(
    args: argparse.Namespace,
    env: EnvironmentConfig,
    specs: Sequence[StackSpec],
    clients: Clients,
    out: TextIO,
) -> int:
    result = _run_package(args, clients, env, specs)
    for unit, url in result.template_urls.items():
        print(f"{unit:<14} {url}", file=out)
    if result.api_code_key:
        print(f"api bundle     s3://{result.bucket}/{result.api_code_key}", file=out)
        print(
            f"deploy it with: python -m deploy.infra deploy --env {env.name} --stack api --package", file=out
        )
    else:
        print("api bundle     none (no deploy/api package): the api stack keeps its inline handler", file=out)
    return EXIT_OK


def _cmd_diff_or_deploy(
    args: argparse.Namespace,
    env: EnvironmentConfig,
    specs: Sequence[StackSpec],
    clients: Clients,
    out: TextIO,
    stdin: TextIO,
) -> int:
    deploying = args.command == "deploy"
    check_placeholders(specs)
    packaged = _run_package(args, clients, env, specs) if args.package else None
    overrides = parse_overrides(args.param)
    failures = 0
    for spec in specs:
        if packaged and spec.template == "api":
            # Explicit --param values still win over what package computed.
            extra = {**packaged.parameters(), **{k: v for k, v in overrides.items() if k in spec.parameters}}
            spec = dataclasses.replace(spec, parameters={**spec.parameters, **extra})
        cfn = clients("cloudformation", spec.region)
        url = packaged.template_urls.get(spec.unit) if packaged else None
        try:
            body = None if url else template_body(spec.template_path)
            result = create_change_set(
                cfn, spec, template_body=body, template_url=url, poll_seconds=args.poll_seconds
            )
        except StackOperationError as exc:
            if deploying:
                raise
            # A diff of a fresh environment fails for stacks whose imports do not exist yet: keep going,
            # and leave nothing behind (the failed change set, the empty stack a CREATE one made).
            if exc.result is not None:
                discard_change_set(cfn, exc.result)
            print(f"{spec.stack_name} ({spec.region}): {exc}", file=out)
            failures += 1
            continue
        print(result.summary(), file=out)
        if not deploying or result.no_changes:
            discard_change_set(cfn, result)
            continue
        if args.no_execute:
            print(f"  change set {result.change_set_name} left for review", file=out)
            continue
        if not _confirm(f"Execute the change set on {spec.stack_name}?", args.yes, stdin, out):
            discard_change_set(cfn, result)
            print("  skipped", file=out)
            continue
        status = execute_change_set(cfn, result, poll_seconds=args.poll_seconds)
        print(f"  {spec.stack_name}: {status}", file=out)
    return EXIT_FAILED if failures else EXIT_OK


def _cmd_delete(
    args: argparse.Namespace, specs: Sequence[StackSpec], clients: Clients, out: TextIO, stdin: TextIO
) -> int:
    if not args.stack:
        raise UsageError("delete needs --stack (name the stacks to delete; they go in reverse order)")
    names = ", ".join(s.stack_name for s in reversed(specs))
    if not _confirm(f"Delete {names}?", args.yes, stdin, out):
        print("nothing deleted", file=out)
        return EXIT_OK
    for spec in reversed(specs):
        deleted = delete_stack(clients("cloudformation", spec.region), spec, poll_seconds=args.poll_seconds)
        print(f"{spec.stack_name} ({spec.region}): {'deleted' if deleted else 'did not exist'}", file=out)
    print("resources with DeletionPolicy Retain (KMS keys, buckets, EFS, user pool) are kept", file=out)
    return EXIT_OK


def run(
    argv: Sequence[str] | None = None,
    *,
    client_factory: ClientFactory | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Entry point with injectable clients and streams; returns the exit code."""
    out, err, stdin = out or sys.stdout, err or sys.stderr, stdin or sys.stdin
    args = build_parser().parse_args(argv)
    try:
        env = load_environment(args.env)
        specs = plan(env, args.stack, parse_overrides(args.param))
        if args.command == "plan":
            return _cmd_plan(args, specs, out)
        clients = Clients(args.profile, client_factory)
        if args.command == "validate":
            return _cmd_validate(args, specs, clients, out)
        if args.command == "package":
            return _cmd_package(args, env, specs, clients, out)
        if args.command in ("diff", "deploy"):
            return _cmd_diff_or_deploy(args, env, specs, clients, out, stdin)
        return _cmd_delete(args, specs, clients, out, stdin)
    except (PlanError, UsageError, TemplateTooLarge) as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except (NoCredentialsError, PartialCredentialsError, ProfileNotFound) as exc:
        detail = f" ({exc})" if isinstance(exc, ProfileNotFound) else ""
        print(f"error: {CREDENTIALS_HINT}{detail}", file=err)
        return EXIT_USAGE
    except NoRegionError:
        print("error: no AWS region: set it in params/<env>.json (primaryRegion)", file=err)
        return EXIT_USAGE
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") in CREDENTIAL_ERROR_CODES:
            print(f"error: {CREDENTIALS_HINT} [{error.get('Code')}: {error.get('Message')}]", file=err)
            return EXIT_USAGE
        print(f"error: {exc.operation_name}: {error.get('Code')}: {error.get('Message')}", file=err)
        return EXIT_FAILED
    except StackOperationError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_FAILED
    except EndpointConnectionError as exc:
        print(f"error: cannot reach AWS ({exc})", file=err)
        return EXIT_FAILED
    except BotoCoreError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return EXIT_INTERRUPTED


def main() -> None:
    """Console entry: exit with run()'s code."""
    raise SystemExit(run())
