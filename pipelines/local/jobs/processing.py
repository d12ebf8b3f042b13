"""Runs one CreateProcessingJob request locally and answers with its DescribeProcessingJob response."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from pipelines.local.errors import StoreError, UnsupportedError
from pipelines.local.jobs.context import JobContext, arn, clip_reason, failure_reason, now
from pipelines.local.jobs.images import resolve_image
from pipelines.local.jobs.launch import JobLog, JobWorker
from pipelines.local.jobs.sandbox import Sandbox
from pipelines.local.jobs.smenv import HOST, resource_config, write_json
from pipelines.local.jobs.transfer import download_input

_ECHO_FIELDS = (
    "ProcessingInputs",
    "ProcessingOutputConfig",
    "ProcessingJobName",
    "ProcessingResources",
    "StoppingCondition",
    "AppSpecification",
    "Environment",
    "NetworkConfig",
    "RoleArn",
    "ExperimentConfig",
)


def _check_request(request: Mapping[str, Any]) -> None:
    """Refuse what cannot be emulated, naming the field."""
    for item in request.get("ProcessingInputs", []):
        where = f"ProcessingInputs[{item.get('InputName')!r}]"
        if item.get("AppManaged"):
            continue
        if "S3Input" not in item:
            raise UnsupportedError(f"{where}: only S3Input is supported locally (not DatasetDefinition)")
        s3 = item["S3Input"]
        if s3.get("S3InputMode", "File") != "File":
            raise UnsupportedError(f"{where}.S3InputMode Pipe is not supported locally")
        if s3.get("S3CompressionType", "None") != "None":
            raise UnsupportedError(f"{where}.S3CompressionType Gzip needs Pipe mode")
    for out in request.get("ProcessingOutputConfig", {}).get("Outputs", []):
        if not out.get("AppManaged") and "S3Output" not in out:
            raise UnsupportedError(
                f"ProcessingOutputs[{out.get('OutputName')!r}]: only S3Output works locally"
            )
    if not request["AppSpecification"].get("ContainerEntrypoint"):
        raise UnsupportedError(
            "AppSpecification.ContainerEntrypoint is required locally (an image's built-in entry point "
            "cannot be known without Docker)"
        )


def run_processing_job(request: Mapping[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Run a processing job: inputs down, container command in the sandbox, outputs up.

    Args:
        request: a boto3 CreateProcessingJob request.
        ctx: the job context.

    Returns:
        DescribeProcessingJob response dict; a failed job is `ProcessingJobStatus: Failed` with a
        FailureReason, a cancelled one `Stopped`.

    Raises:
        UnsupportedError: an unknown image or a field the local engine cannot emulate.
    """
    created = now()
    desc: dict[str, Any] = {k: request[k] for k in _ECHO_FIELDS if k in request}
    desc.update(
        ProcessingJobArn=arn(ctx, "processing-job", request["ProcessingJobName"]),
        ProcessingJobStatus="InProgress",
        CreationTime=created,
    )
    image = resolve_image(request["AppSpecification"]["ImageUri"])
    _check_request(request)
    log = JobLog(ctx.log_path, ctx.max_log_bytes)
    sandbox = Sandbox(ctx.job_dir)
    try:
        log.engine(f"processing job {request['ProcessingJobName']}: image {image.repository} -> local Python")
        sandbox.prepare(["/opt/ml/processing", "/opt/ml/config", "/opt/ml/output"])
        status, reason = _run(request, ctx, sandbox, log, desc)
    finally:
        desc["ProcessingEndTime"] = desc["LastModifiedTime"] = now()
        log.close()
    desc["ProcessingJobStatus"] = status
    if reason:
        desc["FailureReason"] = clip_reason(reason)
    message = sandbox.base / "output" / "message"
    if message.is_file():
        desc["ExitMessage"] = clip_reason(message.read_text(encoding="utf-8", errors="replace"))
    return desc


def _run(
    request: Mapping[str, Any], ctx: JobContext, sandbox: Sandbox, log: JobLog, desc: dict[str, Any]
) -> tuple[str, str | None]:
    """The job proper; returns (status, failure reason)."""
    write_json(sandbox.local("/opt/ml/config/processingjobconfig.json"), dict(request))
    instance = request.get("ProcessingResources", {}).get("ClusterConfig", {}).get("InstanceType", "local")
    write_json(sandbox.local("/opt/ml/config/resourceconfig.json"), resource_config(instance))
    try:
        for item in request.get("ProcessingInputs", []):
            if item.get("AppManaged"):
                continue
            s3 = item["S3Input"]
            # S3DataDistributionType is moot with one instance: every shard is this instance's.
            files = download_input(ctx.store, s3["S3Uri"], s3["S3DataType"], sandbox.local(s3["LocalPath"]))
            log.engine(f"input {item['InputName']}: {len(files)} file(s) from {s3['S3Uri']}")
    except (StoreError, UnsupportedError) as exc:
        return "Failed", f"ClientError: input download failed: {exc}"
    outputs = [o for o in request.get("ProcessingOutputConfig", {}).get("Outputs", []) if "S3Output" in o]
    for out in outputs:
        sandbox.local(out["S3Output"]["LocalPath"]).mkdir(parents=True, exist_ok=True)
    if ctx.cancelled():
        return "Stopped", None

    app = request["AppSpecification"]
    argv = sandbox.command([*app["ContainerEntrypoint"], *app.get("ContainerArguments", [])])
    job_env = {"PROCESSING_JOB_NAME": request["ProcessingJobName"], "CURRENT_HOST": HOST}
    job_env.update(request.get("Environment", {}))
    env = sandbox.environment(job_env, region=ctx.region, base_env=ctx.base_env)
    max_runtime = request.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
    deadline = time.monotonic() + max_runtime if max_runtime else None
    desc["ProcessingStartTime"] = now()
    log.engine("command: " + json.dumps(argv))
    worker = JobWorker(argv, env, sandbox.base, log, grace_seconds=ctx.grace_seconds)
    result = worker.run(cancel=ctx.cancel, deadline=deadline)
    log.engine(f"exit code {result.exit_code} after {result.seconds:.1f} s")
    if result.stop_reason == "cancelled":
        return "Stopped", None
    if result.stop_reason == "MaxRuntimeExceeded":
        return "Failed", f"MaxRuntimeExceeded: the job ran longer than MaxRuntimeInSeconds={max_runtime}"
    if result.exit_code != 0:
        return "Failed", failure_reason(sandbox.base, result.exit_code, list(log.tail))
    try:
        for out in outputs:
            s3 = out["S3Output"]
            # Continuous upload is emulated as EndOfJob: the objects are the same once the job ends.
            uris = ctx.store.upload_dir(sandbox.local(s3["LocalPath"]), s3["S3Uri"])
            log.engine(f"output {out['OutputName']}: {len(uris)} file(s) to {s3['S3Uri']}")
    except StoreError as exc:
        return "Failed", f"ClientError: output upload failed: {exc}"
    return "Completed", None
