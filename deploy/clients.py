"""Each target's clients and one exit-code policy, so every deploy CLI behaves alike on local and AWS."""

# The deploy tools call boto3's client API on both targets: on `local` the SageMaker client is the embedded
# engine's `LocalSageMaker` and the runtime client is boto3's own, pointed at the local server's URL; on
# `sagemaker` they are plain boto3 clients. Services the local engine has no counterpart for (CloudWatch,
# Application Auto Scaling) are `None` there, and callers skip what needs them.

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TARGET, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEFAULT_REGION = "us-east-1"
# Error codes that mean "this target cannot be used right now" (credentials, permissions, throttling,
# outages) rather than "this request is wrong": exit 3 instead of 1.
_TARGET_CODES = {
    "AccessDenied",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ThrottlingException",
    "Throttling",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalServerError",
}
NO_CREDENTIALS = (
    "no AWS credentials found: configure a profile or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
    "(or use --target local)"
)


class UsageError(Exception):
    """Bad input caught before (or instead of) asking the target: exit 2."""


class TargetError(Exception):
    """The target cannot be used (no credentials, unreachable): exit 3."""


class OperationFailed(Exception):
    """The target took the request but the operation did not succeed (e.g. an update rolled back): exit 1."""


@dataclass
class Target:
    """The clients of one target. Tests build it directly with stubbed clients.

    Attributes:
        name: `local` or `sagemaker`.
        sagemaker: boto3's SageMaker client or the local engine's `LocalSageMaker`.
        region: region of every client.
        clients: other services already made (tests put Stubber-wrapped clients here).
        factory: makes a missing boto3 client by service name (None on local: no such service there).
    """

    name: str
    sagemaker: Any
    region: str = DEFAULT_REGION
    clients: dict[str, Any] = field(default_factory=dict)
    factory: Callable[[str], Any] | None = None

    @property
    def is_local(self) -> bool:
        return self.name == "local"

    def aws(self, service: str) -> Any | None:
        """boto3 client of an AWS-only service (cloudwatch, application-autoscaling, s3); None on local."""
        if service not in self.clients:
            if self.factory is None:
                return None
            self.clients[service] = self.factory(service)
        return self.clients[service]

    def runtime(self, endpoint_name: str) -> Any:
        """A `sagemaker-runtime` client for this endpoint: the real runtime, or boto3 at the local URL."""
        if "sagemaker-runtime" in self.clients:
            return self.clients["sagemaker-runtime"]
        if not self.is_local:
            return self.aws("sagemaker-runtime")
        import boto3
        from botocore.config import Config

        url = self.sagemaker.local_endpoint(EndpointName=endpoint_name).get("url")
        if not url:
            raise OperationFailed(f"endpoint {endpoint_name} has no running local server")
        # The local server does not check signatures, but botocore signs every request: any key will do.
        return boto3.client(
            "sagemaker-runtime",
            endpoint_url=url,
            region_name=self.region,
            aws_access_key_id="local",
            aws_secret_access_key="local",
            config=Config(retries={"total_max_attempts": 1}, read_timeout=70),
        )

    def objects(self) -> ObjectReader:
        """Read access to s3:// URIs: the engine's object store, or S3."""
        if self.is_local:
            return LocalObjects(self.sagemaker.store)
        return S3Objects(self.aws("s3"))


class ObjectReader:
    """List and read objects by s3:// URI, whatever stores them."""

    def list(self, prefix_uri: str) -> list[str]:
        raise NotImplementedError

    def read(self, uri: str) -> bytes:
        raise NotImplementedError


class LocalObjects(ObjectReader):
    def __init__(self, store: Any) -> None:
        self._store = store

    def list(self, prefix_uri: str) -> list[str]:
        return list(self._store.list(prefix_uri))

    def read(self, uri: str) -> bytes:
        return bytes(self._store.get_bytes(uri))


class S3Objects(ObjectReader):
    def __init__(self, s3: Any) -> None:
        self._s3 = s3

    def list(self, prefix_uri: str) -> list[str]:
        bucket, key = split_s3(prefix_uri)
        out: list[str] = []
        for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            out.extend(f"s3://{bucket}/{item['Key']}" for item in page.get("Contents", []))
        return sorted(out)

    def read(self, uri: str) -> bytes:
        bucket, key = split_s3(uri)
        return bytes(self._s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def split_s3(uri: str) -> tuple[str, str]:
    """(bucket, key) of an s3:// URI; a bad URI is the user's input, hence UsageError."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise UsageError(f"{uri!r} is not an s3:// URI")
    return bucket, key


def make_target(name: str, root: Path, region: str | None) -> Target:
    """The target's clients; on `sagemaker` fails at once, in one line, without credentials."""
    if name == "local":
        from pipelines.local.client import LocalSageMaker

        chosen = region or DEFAULT_REGION
        return Target("local", LocalSageMaker(root=root, region=chosen), chosen)
    import boto3

    session = boto3.Session(region_name=region) if region else boto3.Session()
    chosen = session.region_name or DEFAULT_REGION
    if session.region_name is None:
        session = boto3.Session(region_name=chosen)
    if session.get_credentials() is None:
        raise TargetError(NO_CREDENTIALS)
    return Target("sagemaker", session.client("sagemaker"), chosen, factory=session.client)


def cli_parser(
    prog: str, description: str | None, settings: bool = True
) -> tuple[argparse.ArgumentParser, Any, argparse.ArgumentParser]:
    """The deploy CLIs' main parser: (parser, its required subcommands, the parent every subcommand takes).

    The target options are on both the main parser and each subcommand (see `common_parser`).
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_target_arguments(parser, settings)
    sub = parser.add_subparsers(dest="command", required=True)
    return parser, sub, common_parser(settings)


def common_parser(settings: bool = True) -> argparse.ArgumentParser:
    """--target, --root, --region (and --settings, --group) as a parent parser for every subcommand.

    The options may come before or after the subcommand: the main parser holds the defaults and the
    subcommands' copies use SUPPRESS, so a value given on either side wins and nothing resets it.
    """
    parent = argparse.ArgumentParser(add_help=False)
    _target_arguments(parent, argparse.SUPPRESS, settings)
    return parent


def add_target_arguments(parser: argparse.ArgumentParser, settings: bool = True) -> None:
    """The same options with their real defaults, on the main parser."""
    _target_arguments(parser, None, settings)


def _target_arguments(parser: argparse.ArgumentParser, default: Any, settings: bool) -> None:
    parser.add_argument(
        "--target",
        choices=["local", "sagemaker"],
        default="local" if default is None else default,
        help="local engine (default) or Amazon SageMaker",
    )
    parser.add_argument(
        "--root", type=Path, default=default, help="local engine folder (default $PDM_ROOT or .mlops)"
    )
    parser.add_argument(
        "--region", default=default, help="AWS region (default: the AWS configuration's, else us-east-1)"
    )
    if settings:
        parser.add_argument(
            "--settings",
            type=Path,
            default=default,
            help="deployment settings YAML (docs/deploying-models.md)",
        )
        parser.add_argument(
            "--group", default=default, help="model package group (default model_package_group: pdm-mlops)"
        )


def target_from_args(args: argparse.Namespace) -> Target:
    root = args.root or Path(os.environ.get("PDM_ROOT", ".mlops"))
    return make_target(args.target, root, args.region)


def error_text(error: Exception) -> str:
    """One line: `Operation: Code: message` for AWS errors, the message otherwise."""
    if isinstance(error, ClientError):
        detail = error.response.get("Error", {})
        message = " ".join(str(detail.get("Message", error)).split())
        return f"{error.operation_name}: {detail.get('Code', 'Error')}: {message}"
    return " ".join(str(error).split())


def run_cli(work: Callable[[], int], err: TextIO | None = None) -> int:
    """Run a CLI command body; every failure becomes one `error: ...` line and its exit code."""
    err = err or sys.stderr
    try:
        return work()
    except UsageError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_USAGE
    except OperationFailed as exc:
        print(f"error: {exc}", file=err)
        return EXIT_FAILED
    except TargetError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_TARGET
    except NoCredentialsError:
        print(f"error: {NO_CREDENTIALS}", file=err)
        return EXIT_TARGET
    except ClientError as exc:
        print(f"error: {error_text(exc)}", file=err)
        return EXIT_TARGET if is_target_error(exc) else EXIT_FAILED
    except (NoRegionError, BotoCoreError) as exc:
        print(f"error: {error_text(exc)}", file=err)
        return EXIT_TARGET
    except KeyboardInterrupt:
        print("interrupted", file=err)
        return EXIT_INTERRUPTED


def is_target_error(error: Exception) -> bool:
    """An AWS error that says the target cannot be used now (_TARGET_CODES), not that the request is wrong."""
    return isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") in _TARGET_CODES


def is_not_found(exc: ClientError) -> bool:
    """SageMaker's answer for a missing endpoint/model/config (ValidationException "Could not find ...")."""
    error = exc.response.get("Error", {})
    code, message = str(error.get("Code", "")), str(error.get("Message", ""))
    return code in ("ResourceNotFound", "ResourceNotFoundException") or (
        code == "ValidationException" and ("Could not find" in message or "does not exist" in message)
    )


def paginate(call: Callable[..., dict[str, Any]], key: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """Every item of a NextToken-paginated List* call (works on boto3 and the local client alike)."""
    while True:
        page = call(**kwargs)
        yield from page.get(key, [])
        if not page.get("NextToken"):
            return
        kwargs["NextToken"] = page["NextToken"]
