"""`python -m deploy.batch`: score S3 objects with a model as a batch transform job, locally or on SageMaker.

One command builds one CreateTransformJob request for either target, so a job tried locally runs unchanged on
AWS. Locally the engine's transform runner executes it in this process (the local client has no
CreateTransformJob: transform jobs are otherwise only run by the pipeline executor), so nothing is recorded;
outputs land in the local object store and the job log under `<root>/logs/TransformJobs/`.

Exit codes: 0 completed (or created, `--no-wait` on sagemaker); 1 the job failed, stopped or was refused;
2 bad arguments or configuration; 3 the target cannot be used (no AWS credentials, or a model image the
local engine cannot run); 130 interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_TARGET, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# CreateTransformJob limits (botocore's model and its documentation).
MAX_PAYLOAD_MB = 100
MAX_FILTER_CHARS = 63
# The artefact carries its own inference code (contracts sec. 6): the XGBoost image only runs it.
SERVING_ENV = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}
# Locally only the repository name of an image matters (pipelines/local/jobs/images.py); the SDK's image
# table, needed for the real URI on AWS, costs seconds to import, so it is read for the sagemaker target only.
_LOCAL_XGBOOST_IMAGE = "683313688378.dkr.ecr.{region}.amazonaws.com/sagemaker-xgboost:{version}"
_TERMINAL = {"Completed", "Failed", "Stopped"}
# The config's placeholder role: the local engine accepts it, SageMaker would not.
_LOCAL_ROLE = "arn:aws:iam::000000000000:role/pdm-mlops-local"


class UsageError(ValueError):
    """Arguments or settings that cannot make a valid job; the message names the option."""


@dataclass(frozen=True)
class BatchSettings:
    """How records are split, batched, filtered and assembled (TransformInput/Output, DataProcessing)."""

    split_type: str = "Line"
    strategy: str = "MultiRecord"
    max_payload_mb: int = 6
    concurrency: int | None = None  # None: the container's choice on SageMaker
    join_source: str = "None"
    input_filter: str = "$"
    output_filter: str = "$"
    content_type: str = "text/csv"
    accept: str = "text/csv"
    assemble_with: str = "Line"
    compression: str = "None"
    data_type: str = "S3Prefix"
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1

    def check(self) -> None:
        """Refuse what CreateTransformJob would refuse, before anything is created.

        Raises:
            UsageError: naming the option and the limit.
        """
        if not 0 <= self.max_payload_mb <= MAX_PAYLOAD_MB:
            raise UsageError(
                f"--max-payload-mb must be between 0 and {MAX_PAYLOAD_MB}, got {self.max_payload_mb}"
            )
        if self.concurrency is not None:
            if self.concurrency < 1:
                raise UsageError(f"--concurrency must be at least 1, got {self.concurrency}")
            if self.concurrency * self.max_payload_mb > MAX_PAYLOAD_MB:
                raise UsageError(
                    f"--concurrency x --max-payload-mb must not exceed {MAX_PAYLOAD_MB} MB "
                    f"(SageMaker's limit), got {self.concurrency} x {self.max_payload_mb}"
                )
        if self.strategy == "MultiRecord" and self.split_type == "None":
            raise UsageError("--strategy MultiRecord needs --split-type Line (records to pack)")
        if self.instance_count < 1:
            raise UsageError(f"--instance-count must be at least 1, got {self.instance_count}")
        from pipelines.local.errors import UnsupportedError
        from pipelines.local.jobs.jsonpath import parse

        for option, expr in (("--input-filter", self.input_filter), ("--output-filter", self.output_filter)):
            if len(expr) > MAX_FILTER_CHARS:
                raise UsageError(f"{option} is longer than {MAX_FILTER_CHARS} characters: {expr!r}")
            try:
                parse(expr)
            except UnsupportedError as exc:
                raise UsageError(f"{option}: {exc}") from None


def default_job_name() -> str:
    """`pdm-batch-<UTC time>-<random>`: unique, and within the 63-character name limit."""
    return f"pdm-batch-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def transform_request(
    job_name: str,
    model_name: str,
    input_uri: str,
    output_uri: str,
    settings: BatchSettings,
    output_kms_key: str | None = None,
    volume_kms_key: str | None = None,
) -> dict[str, Any]:
    """The boto3 CreateTransformJob request for these settings (the same for both targets)."""
    transform_output: dict[str, Any] = {
        "S3OutputPath": output_uri,
        "Accept": settings.accept,
        "AssembleWith": settings.assemble_with,
    }
    if output_kms_key:
        transform_output["KmsKeyId"] = output_kms_key
    resources: dict[str, Any] = {
        "InstanceType": settings.instance_type,
        "InstanceCount": settings.instance_count,
    }
    if volume_kms_key:
        resources["VolumeKmsKeyId"] = volume_kms_key
    request: dict[str, Any] = {
        "TransformJobName": job_name,
        "ModelName": model_name,
        "BatchStrategy": settings.strategy,
        "MaxPayloadInMB": settings.max_payload_mb,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": settings.data_type, "S3Uri": input_uri}},
            "ContentType": settings.content_type,
            "CompressionType": settings.compression,
            "SplitType": settings.split_type,
        },
        "TransformOutput": transform_output,
        "TransformResources": resources,
        "DataProcessing": {
            "InputFilter": settings.input_filter,
            "OutputFilter": settings.output_filter,
            "JoinSource": settings.join_source,
        },
    }
    if settings.concurrency is not None:
        request["MaxConcurrentTransforms"] = settings.concurrency
    return request


def model_request(
    model_name: str,
    role_arn: str,
    *,
    model_package: str | None = None,
    model_data: str | None = None,
    image: str | None = None,
    subnets: Sequence[str] = (),
    security_group_ids: Sequence[str] = (),
    network_isolation: bool = False,
) -> dict[str, Any]:
    """The boto3 CreateModel request a transform job needs on SageMaker (it names a model, not a package)."""
    if model_package:
        container: dict[str, Any] = {"ModelPackageName": model_package}
    else:
        container = {"Image": image, "ModelDataUrl": model_data, "Environment": dict(SERVING_ENV)}
    request: dict[str, Any] = {
        "ModelName": model_name,
        "ExecutionRoleArn": role_arn,
        "PrimaryContainer": container,
    }
    if subnets:
        request["VpcConfig"] = {"Subnets": list(subnets), "SecurityGroupIds": list(security_group_ids)}
    if network_isolation:
        request["EnableNetworkIsolation"] = True
    return request


# --- sagemaker target ------------------------------------------------------------------------------------
def submit_to_sagemaker(
    client: Any,
    model: dict[str, Any],
    request: dict[str, Any],
    *,
    wait: bool,
    out: TextIO,
    poll_seconds: float = 30.0,
) -> int:
    """Create the model, then the transform job; with `wait`, follow it to its end.

    Args:
        client: a boto3 SageMaker client.
        model: the CreateModel request (its ModelName is the job's ModelName).
        request: the CreateTransformJob request.
        wait: poll DescribeTransformJob until the job ends.
        out: where the one-line results go.
        poll_seconds: time between polls.

    Returns:
        The exit code.
    """
    client.create_model(**model)
    arn = client.create_transform_job(**request)["TransformJobArn"]
    print(f"transform job {request['TransformJobName']} created: {arn}", file=out)
    if not wait:
        return EXIT_OK
    while True:
        described = client.describe_transform_job(TransformJobName=request["TransformJobName"])
        status = described["TransformJobStatus"]
        if status in _TERMINAL:
            break
        time.sleep(poll_seconds)
    return _report(request["TransformJobName"], described, out)


def _report(name: str, described: dict[str, Any], out: TextIO, extra: str = "") -> int:
    status = described["TransformJobStatus"]
    if status == "Completed":
        print(f"transform job {name}: Completed{extra}", file=out)
        return EXIT_OK
    reason = described.get("FailureReason", "")
    print(f"transform job {name}: {status}{': ' + reason if reason else ''}", file=out)
    return EXIT_FAILED


# --- local target ----------------------------------------------------------------------------------------
def local_model(
    root: Path, region: str, framework_version: str, *, model_package: str | None, model_data: str | None
) -> dict[str, Any]:
    """The DescribeModel-shaped dict the local runner loads: from the local registry, or the given artefact.

    Raises:
        UsageError: the model package is not in the local registry.
    """
    if model_package:
        from botocore.exceptions import ClientError

        from pipelines.local.client import LocalSageMaker

        try:
            package = LocalSageMaker(root=root, region=region).describe_model_package(
                ModelPackageName=model_package
            )
        except ClientError as exc:
            raise UsageError(f"--model-package {model_package}: {exc.response['Error']['Message']}") from None
        containers = package.get("InferenceSpecification", {}).get("Containers", [])
        if len(containers) != 1:
            raise UsageError(
                f"--model-package {model_package}: expected one container, found {len(containers)}"
            )
        container = {k: v for k, v in containers[0].items() if k in ("Image", "ModelDataUrl", "Environment")}
    else:
        image = _LOCAL_XGBOOST_IMAGE.format(region=region, version=framework_version)
        container = {"Image": image, "ModelDataUrl": model_data, "Environment": dict(SERVING_ENV)}
    return {"ModelName": "local-batch-model", "PrimaryContainer": container}


def run_local(
    root: Path,
    model: dict[str, Any],
    request: dict[str, Any],
    out: TextIO,
    region: str = "us-east-1",
) -> int:
    """Run the request with the local engine's transform runner in this process; returns the exit code."""
    from pipelines.local.errors import LocalEngineError
    from pipelines.local.jobs import JobContext, run_transform_job
    from pipelines.local.store import ObjectStore

    name = request["TransformJobName"]
    job_dir = root / "batch" / name
    log_path = root / "logs" / "TransformJobs" / f"{name}.log"
    ctx = JobContext(store=ObjectStore(root / "s3"), job_dir=job_dir, log_path=log_path, region=region)
    start = time.perf_counter()
    try:
        described = run_transform_job(request, ctx, model)
    except LocalEngineError as exc:  # e.g. an image or layout the local engine cannot run
        print(f"deploy.batch: the local target cannot run this job: {exc}", file=sys.stderr)
        return EXIT_TARGET
    finally:
        # The extracted model copy is scratch; the outputs are in the store and the log stays.
        shutil.rmtree(job_dir, ignore_errors=True)
    took = time.perf_counter() - start
    code = _report(
        name, described, out, f" in {took:.2f} s, output under {request['TransformOutput']['S3OutputPath']}"
    )
    print(f"log: {log_path}", file=out)
    return code


# --- command line ----------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.batch",
        description="Run a batch transform job over S3 objects, locally (default) or on Amazon SageMaker.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-package", metavar="ARN", help="a Model Registry version to score with")
    source.add_argument("--model-data", metavar="URI", help="a model.tar.gz artefact (s3://...)")
    parser.add_argument("--input", required=True, metavar="URI", help="s3:// prefix (or object) to score")
    parser.add_argument("--output", required=True, metavar="URI", help="s3:// prefix for the .out objects")
    parser.add_argument("--split-type", choices=["Line", "None"], default="Line")
    parser.add_argument(
        "--strategy",
        choices=["MultiRecord", "SingleRecord"],
        help="default MultiRecord (SingleRecord without split)",
    )
    parser.add_argument("--max-payload-mb", type=int, default=6, help="MaxPayloadInMB (default 6)")
    parser.add_argument(
        "--concurrency",
        type=int,
        help="MaxConcurrentTransforms (default: the CPU count locally, the container's choice on SageMaker)",
    )
    parser.add_argument("--join-source", choices=["Input", "None"], default="None")
    parser.add_argument("--input-filter", default="$", metavar="JSONPATH", help="e.g. '$[1:]'")
    parser.add_argument("--output-filter", default="$", metavar="JSONPATH", help="e.g. '$[0,-1]'")
    parser.add_argument("--content-type", default="text/csv")
    parser.add_argument("--accept", default="text/csv")
    parser.add_argument("--assemble-with", choices=["Line", "None"], default="Line")
    parser.add_argument("--compression", choices=["None", "Gzip"], default="None")
    parser.add_argument("--data-type", choices=["S3Prefix", "ManifestFile"], default="S3Prefix")
    parser.add_argument("--instance-type", help="default: the config's deploy.instance_type")
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--job-name", help="default pdm-batch-<time>-<random>")
    parser.add_argument("--target", choices=["local", "sagemaker"], default="local")
    parser.add_argument("--root", type=Path, help="local engine folder (default .mlops or $PDM_ROOT)")
    parser.add_argument("--config", type=Path, help="YAML settings (region, role, image version, KMS, VPC)")
    parser.add_argument(
        "--role-arn", help="execution role for the model on SageMaker (default: the config's)"
    )
    wait = parser.add_mutually_exclusive_group()
    wait.add_argument(
        "--wait", dest="wait", action="store_true", default=False, help="sagemaker: follow the job"
    )
    wait.add_argument("--no-wait", dest="wait", action="store_false")
    return parser


def _settings(args: argparse.Namespace, instance_type: str, target: str) -> BatchSettings:
    concurrency = args.concurrency
    if concurrency is None and target == "local":
        # What SageMaker's XGBoost container answers on /execution-parameters: one request per CPU.
        concurrency = max(1, min(os.cpu_count() or 1, MAX_PAYLOAD_MB // max(1, args.max_payload_mb)))
    strategy = args.strategy or ("MultiRecord" if args.split_type == "Line" else "SingleRecord")
    return BatchSettings(
        split_type=args.split_type,
        strategy=strategy,
        max_payload_mb=args.max_payload_mb,
        concurrency=concurrency,
        join_source=args.join_source,
        input_filter=args.input_filter,
        output_filter=args.output_filter,
        content_type=args.content_type,
        accept=args.accept,
        assemble_with=args.assemble_with,
        compression=args.compression,
        data_type=args.data_type,
        instance_type=args.instance_type or instance_type,
        instance_count=args.instance_count,
    )


def _s3(option: str, uri: str) -> str:
    from pipelines.targets import split_s3

    try:
        split_s3(uri)
    except ValueError:
        raise UsageError(f"{option} must be an s3:// URI, got {uri!r}") from None
    return uri


def main(argv: Sequence[str] | None = None, client_factory: Callable[[str], Any] | None = None) -> int:
    """Parse, validate and run; `client_factory(region)` replaces boto3's client in tests."""
    args = _parser().parse_args(argv)
    out = sys.stdout
    try:
        from pipelines.config import ConfigError, load_config

        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            raise UsageError(f"configuration: {exc}") from None
        settings = _settings(args, cfg.deploy.instance_type, args.target)
        settings.check()
        input_uri, output_uri = _s3("--input", args.input), _s3("--output", args.output)
        if args.model_data:
            _s3("--model-data", args.model_data)
        name = args.job_name or default_job_name()
        if args.target == "local":
            root = args.root or Path(os.environ.get("PDM_ROOT", ".mlops"))
            model = local_model(
                root,
                cfg.region,
                cfg.training.framework_version,
                model_package=args.model_package,
                model_data=args.model_data,
            )
            request = transform_request(name, model["ModelName"], input_uri, output_uri, settings)
            return run_local(root, model, request, out, cfg.region)
        return _run_sagemaker(args, cfg, settings, name, input_uri, output_uri, client_factory, out)
    except UsageError as exc:
        print(f"deploy.batch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("deploy.batch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _run_sagemaker(
    args: argparse.Namespace,
    cfg: Any,
    settings: BatchSettings,
    name: str,
    input_uri: str,
    output_uri: str,
    client_factory: Callable[[str], Any] | None,
    out: TextIO,
) -> int:
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    from pipelines.targets import SageMakerTarget, TargetError

    try:
        client = client_factory(cfg.region) if client_factory else SageMakerTarget(cfg.region).client
    except TargetError as exc:
        print(f"deploy.batch: {exc}", file=sys.stderr)
        return EXIT_TARGET
    role = args.role_arn or cfg.role_arn
    if role == _LOCAL_ROLE:
        print(
            "deploy.batch: set a real execution role (PDM_ROLE_ARN or --role-arn) for SageMaker",
            file=sys.stderr,
        )
        return EXIT_USAGE
    image = None
    if args.model_data:
        from pipelines.sdk import image_uri

        image = image_uri("xgboost", cfg.training.framework_version, cfg.region)
    security = cfg.security
    model = model_request(
        name,
        role,
        model_package=args.model_package,
        model_data=args.model_data,
        image=image,
        subnets=security.subnets,
        security_group_ids=security.security_group_ids,
        network_isolation=security.enable_network_isolation,
    )
    request = transform_request(
        name,
        name,
        input_uri,
        output_uri,
        settings,
        output_kms_key=security.kms_key_id,
        volume_kms_key=security.volume_kms_key_id,
    )
    try:
        return submit_to_sagemaker(client, model, request, wait=args.wait, out=out)
    except NoCredentialsError as exc:
        print(f"deploy.batch: {exc}", file=sys.stderr)
        return EXIT_TARGET
    except ClientError as exc:
        error = exc.response.get("Error", {})
        print(f"deploy.batch: {error.get('Code', 'Error')}: {error.get('Message', exc)}", file=sys.stderr)
        return EXIT_FAILED
    except BotoCoreError as exc:  # unreachable endpoint and the like: the target cannot be used
        print(f"deploy.batch: {exc}", file=sys.stderr)
        return EXIT_TARGET


if __name__ == "__main__":
    raise SystemExit(main())
