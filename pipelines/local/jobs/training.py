"""Runs one CreateTrainingJob request locally (script mode, entrypoint or built-in XGBoost, with Spot)."""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.local.errors import StoreError, UnsupportedError
from pipelines.local.jobs.checkpoints import CheckpointSync
from pipelines.local.jobs.context import JobContext, arn, clip_reason, failure_reason, now
from pipelines.local.jobs.images import resolve_image, training_mode
from pipelines.local.jobs.launch import JobLog, JobWorker, LaunchResult
from pipelines.local.jobs.metrics import MetricParser
from pipelines.local.jobs.sandbox import PROJECT_ROOT, Sandbox
from pipelines.local.jobs.smenv import (
    decode_hyperparameters,
    input_data_config,
    resource_config,
    split_hyperparameters,
    to_cmd_args,
    training_environment,
    write_json,
)
from pipelines.local.jobs.transfer import download_input, fetch_and_extract, make_tarball
from pipelines.local.jobs.xgboost_spec import metric_definitions
from pipelines.local.store import join_uri

# Emulated Spot price: billable seconds are this fraction of training seconds (a flat 30% saving; real
# savings vary by instance type and region). Documented in docs/contracts.md sec. 10.
SPOT_BILLABLE_FRACTION = 0.7
_ECHO_FIELDS = (
    "TrainingJobName", "HyperParameters", "AlgorithmSpecification", "RoleArn", "InputDataConfig",
    "OutputDataConfig", "ResourceConfig", "VpcConfig", "StoppingCondition", "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption", "EnableManagedSpotTraining", "CheckpointConfig",
    "DebugHookConfig", "ExperimentConfig", "DebugRuleConfigurations", "TensorBoardOutputConfig",
    "ProfilerConfig", "Environment", "RetryStrategy", "RemoteDebugConfig", "InfraCheckConfig",
)  # fmt: skip
_FOLDERS = ("/opt/ml/input/config", "/opt/ml/input/data", "/opt/ml/model", "/opt/ml/output/data",
            "/opt/ml/output/intermediate", "/opt/ml/code", "/opt/ml/checkpoints")  # fmt: skip


def run_training_job(request: Mapping[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Run a training job to its end.

    Args:
        request: a boto3 CreateTrainingJob request.
        ctx: the job context (`ctx.spot_interruptions` injects Spot interruptions).

    Returns:
        DescribeTrainingJob response dict (TrainingJobStatus Completed|Failed|Stopped).

    Raises:
        UnsupportedError: an unknown image or an unsupported request field.
    """
    return _Training(request, ctx).run()


class _Training:
    """One training job: the request checked up front, then prepare, attempts (Spot restarts), upload."""

    def __init__(self, request: Mapping[str, Any], ctx: JobContext) -> None:
        self.req, self.ctx = request, ctx
        self.name: str = request["TrainingJobName"]
        spec = request["AlgorithmSpecification"]
        if spec.get("AlgorithmName") or not spec.get("TrainingImage"):
            raise UnsupportedError(f"AlgorithmName {spec.get('AlgorithmName')!r}: only TrainingImage runs")
        if spec.get("TrainingInputMode", "File") != "File":
            raise UnsupportedError(f"TrainingInputMode {spec['TrainingInputMode']!r}: only File is supported")
        self.image = resolve_image(spec["TrainingImage"])
        self.hps = decode_hyperparameters(request.get("HyperParameters", {}))
        env = request.get("Environment", {})
        self.program = self.hps.get("sagemaker_program") or env.get("SAGEMAKER_PROGRAM")
        self.mode = training_mode(
            self.image, entrypoint=spec.get("ContainerEntrypoint"), program=self.program
        )
        definitions = spec.get("MetricDefinitions") or (
            metric_definitions() if self.mode == "algorithm" else []
        )
        self.metrics = MetricParser(definitions)
        self.sandbox = Sandbox(ctx.job_dir)
        self.desc: dict[str, Any] = {k: request[k] for k in _ECHO_FIELDS if k in request}
        self.desc.update(
            TrainingJobArn=arn(ctx, "training-job", self.name), TrainingJobStatus="InProgress",
            CreationTime=now(), SecondaryStatusTransitions=[],
        )  # fmt: skip
        self.log = JobLog(ctx.log_path, ctx.max_log_bytes)

    # --- status bookkeeping ------------------------------------------------------------------------
    def _enter(self, status: str, message: str) -> None:
        """Record a SecondaryStatusTransition (closing the previous one)."""
        stamp = now()
        transitions = self.desc["SecondaryStatusTransitions"]
        if transitions and "EndTime" not in transitions[-1]:
            transitions[-1]["EndTime"] = stamp
        transitions.append({"Status": status, "StartTime": stamp, "StatusMessage": message})
        self.desc["SecondaryStatus"] = status
        self.log.engine(f"{status}: {message}")

    def _finish(self, status: str, secondary: str, message: str, reason: str | None = None) -> dict[str, Any]:
        self._enter(secondary, message)
        last = self.desc["SecondaryStatusTransitions"][-1]
        last["EndTime"] = last["StartTime"]  # a terminal status lasts no time, as SageMaker reports it
        self.desc["TrainingJobStatus"] = status
        if reason:
            self.desc["FailureReason"] = clip_reason(reason)
        self.desc["LastModifiedTime"] = now()
        if "TrainingStartTime" in self.desc:
            self.desc["TrainingEndTime"] = self.desc["LastModifiedTime"]
        final = self.metrics.final()
        if final:
            self.desc["FinalMetricDataList"] = final
        return self.desc

    # --- the job ---------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        try:
            self._enter("Starting", "Preparing the instances for training (local sandbox)")
            self.log.engine(f"training job {self.name}: image {self.image.repository}, mode {self.mode}")
            try:
                self._prepare()
            except StoreError as exc:
                return self._finish("Failed", "Failed", "Input download failed", f"ClientError: {exc}")
            if self.ctx.cancelled():
                return self._finish("Stopped", "Stopped", "Stopped before training started")
            return self._train_and_upload()
        finally:
            self.log.close()

    def _prepare(self) -> None:
        sb, req = self.sandbox, self.req
        sb.prepare(_FOLDERS)
        channels = req.get("InputDataConfig", [])
        data_config = input_data_config(channels)
        instance = req.get("ResourceConfig", {}).get("InstanceType", "local")
        self.resources = resource_config(instance)
        config = sb.local("/opt/ml/input/config")
        write_json(config / "hyperparameters.json", dict(req.get("HyperParameters", {})))
        write_json(config / "inputdataconfig.json", data_config)
        write_json(config / "resourceconfig.json", self.resources)
        if req.get("CheckpointConfig"):
            write_json(config / "checkpointconfig.json", dict(req["CheckpointConfig"]))
        self._enter("Downloading", "Downloading input data")
        for channel in channels:
            s3 = channel.get("DataSource", {}).get("S3DataSource")
            if s3 is None:
                raise UnsupportedError(f"channel {channel['ChannelName']!r}: only S3DataSource is supported")
            dest = sb.local(f"/opt/ml/input/data/{channel['ChannelName']}")
            files = download_input(self.ctx.store, s3["S3Uri"], s3["S3DataType"], dest)
            self.log.engine(f"channel {channel['ChannelName']}: {len(files)} file(s) from {s3['S3Uri']}")
        module_dir = str(sb.local("/opt/ml/code"))
        submit = self.hps.get("sagemaker_submit_directory")
        if self.mode == "script" and submit:
            if not str(submit).startswith("s3://"):
                raise UnsupportedError(
                    f"sagemaker_submit_directory {submit!r}: only s3:// URIs are supported"
                )
            fetch_and_extract(self.ctx.store, submit, self.ctx.job_dir / "_scratch", sb.local("/opt/ml/code"))
            module_dir = submit
        if (sb.local("/opt/ml/code") / "requirements.txt").is_file():
            self.log.engine("requirements.txt found: skipped locally (the local engine never pip-installs)")
        job_env = training_environment(
            sb, job_name=self.name, hyperparameters=self.hps, data_config=data_config,
            resources=self.resources, entry_point=self.program, module_dir=module_dir,
        )  # fmt: skip
        job_env.update(req.get("Environment", {}))
        extra_path = [PROJECT_ROOT] if self.mode == "algorithm" else []
        self.env = sb.environment(
            job_env, region=self.ctx.region, base_env=self.ctx.base_env, pythonpath=extra_path
        )
        self.argv, self.cwd = self._command()
        self.log.engine("command: " + json.dumps(self.argv))

    def _command(self) -> tuple[list[str], Path]:
        sb, spec = self.sandbox, self.req["AlgorithmSpecification"]
        code = sb.local("/opt/ml/code")
        if self.mode == "algorithm":
            return [sys.executable, "-m", "pipelines.local.jobs.xgboost_algorithm"], code
        if self.mode == "command":
            return sb.command([*spec["ContainerEntrypoint"], *spec.get("ContainerArguments", [])]), sb.base
        program = str(self.program)
        if not (code / program).is_file():
            raise UnsupportedError(
                f"entry point {program!r} not found in /opt/ml/code (sagemaker_submit_directory?)"
            )
        args = to_cmd_args(split_hyperparameters(self.hps)[0])
        if program.endswith(".py"):
            return [sys.executable, program, *args], code
        if program.endswith(".sh"):
            sb.rewrite_script(code / program)
        (code / program).chmod(0o755)
        return ["/bin/sh", "-c", " ".join([f"./{program}", *(json.dumps(a) for a in args)])], code

    def _train_and_upload(self) -> dict[str, Any]:
        req, ctx = self.req, self.ctx
        stopping = req.get("StoppingCondition", {})
        max_runtime, max_wait = stopping.get("MaxRuntimeInSeconds"), stopping.get("MaxWaitTimeInSeconds")
        spot = bool(req.get("EnableManagedSpotTraining"))
        left = ctx.spot_interruptions if spot else 0
        if ctx.spot_interruptions and not spot:
            self.log.engine(
                "Spot interruptions requested but EnableManagedSpotTraining is off: none injected"
            )
        ckpt = None
        if req.get("CheckpointConfig"):
            local = self.sandbox.local(req["CheckpointConfig"].get("LocalPath") or "/opt/ml/checkpoints")
            ckpt = CheckpointSync(ctx.store, local, req["CheckpointConfig"]["S3Uri"], ctx.sync_interval)
        elif left:
            self.log.engine("Spot interruptions requested but the job has no CheckpointConfig: none injected")
            left = 0
        started = time.monotonic()
        wait_deadline = started + max_wait if (spot and max_wait) else None
        trained = 0.0
        self.desc["TrainingStartTime"] = now()
        while True:
            self._enter("Training", "Training in progress (local process)")
            result = self._attempt(ckpt, left, max_runtime, trained, wait_deadline)
            trained += result.seconds
            self._seconds(trained, spot)
            if result.stop_reason != "Interrupted":
                break
            left -= 1
            self._enter("Interrupted", "Spot interruption (emulated): the instance was reclaimed")
            self._enter("Restarting", "Restarting on a new Spot instance; checkpoints are copied back")
            for folder in ("/opt/ml/model", "/opt/ml/output/data"):
                shutil.rmtree(self.sandbox.local(folder), ignore_errors=True)
                self.sandbox.local(folder).mkdir(parents=True)
        self.log.engine(f"exit code {result.exit_code}; trained {trained:.1f} s over all attempts")
        if result.stop_reason == "cancelled":
            return self._finish("Stopped", "Stopped", "The training job was stopped")
        if result.stop_reason == "MaxRuntimeExceeded":
            if wait_deadline is not None and time.monotonic() >= wait_deadline:
                msg = f"MaxWaitTimeExceeded: the job did not finish within MaxWaitTimeInSeconds={max_wait}"
                return self._finish("Stopped", "MaxWaitTimeExceeded", msg, msg)
            msg = f"MaxRuntimeExceeded: training ran longer than MaxRuntimeInSeconds={max_runtime}"
            return self._finish("Stopped", "MaxRuntimeExceeded", msg, msg)
        if result.exit_code != 0:
            reason = failure_reason(self.sandbox.base, result.exit_code, list(self.log.tail))
            return self._finish("Failed", "Failed", "Training job failed", reason)
        self._enter("Uploading", "Uploading generated training model")
        try:
            self._upload()
        except StoreError as exc:
            return self._finish("Failed", "Failed", "Upload failed", f"ClientError: {exc}")
        return self._finish("Completed", "Completed", "Training job completed")

    def _attempt(
        self,
        ckpt: CheckpointSync | None,
        left: int,
        max_runtime: int | None,
        trained: float,
        wait: float | None,
    ) -> LaunchResult:
        """One run of the job process (a Spot restart is another attempt)."""
        worker = JobWorker(
            self.argv,
            self.env,
            self.cwd,
            self.log,
            on_line=self.metrics.feed,
            grace_seconds=self.ctx.grace_seconds,
        )
        if ckpt is not None:
            restored = ckpt.restore()
            if restored:
                self.log.engine(f"checkpoints: {len(restored)} file(s) copied in from {ckpt.s3_uri}")
            if left > 0:
                # Emulated Spot: the instance is reclaimed right after the job saves a new checkpoint.
                ckpt.on_upload = lambda rel: worker.stop("Interrupted")
            else:
                ckpt.on_upload = None
            ckpt.start()
        deadlines = [
            d for d in (wait, time.monotonic() + max_runtime - trained if max_runtime else None) if d
        ]
        try:
            result = worker.run(cancel=self.ctx.cancel, deadline=min(deadlines) if deadlines else None)
        finally:
            if ckpt is not None:
                # An interrupted instance is gone: only what was synced before survives.
                ckpt.stop(final_sync=worker.stop_reason != "Interrupted")
        return result

    def _seconds(self, trained: float, spot: bool) -> None:
        seconds = max(1, math.ceil(trained))
        self.desc["TrainingTimeInSeconds"] = seconds
        self.desc["BillableTimeInSeconds"] = (
            max(1, math.floor(seconds * SPOT_BILLABLE_FRACTION)) if spot else seconds
        )

    def _upload(self) -> None:
        out = self.req["OutputDataConfig"]
        prefix = join_uri(out["S3OutputPath"], f"{self.name}/output")
        model_dir, data_dir = self.sandbox.local("/opt/ml/model"), self.sandbox.local("/opt/ml/output/data")
        scratch = self.ctx.job_dir / "_upload"
        if out.get("CompressionType", "GZIP") == "NONE":
            self.ctx.store.upload_dir(model_dir, join_uri(prefix, "model/"))
            self.desc["ModelArtifacts"] = {"S3ModelArtifacts": join_uri(prefix, "model/")}
        else:
            self.ctx.store.put_file(
                join_uri(prefix, "model.tar.gz"), make_tarball(model_dir, scratch / "model.tar.gz")
            )
            self.desc["ModelArtifacts"] = {"S3ModelArtifacts": join_uri(prefix, "model.tar.gz")}
        self.log.engine(f"model artefacts: {self.desc['ModelArtifacts']['S3ModelArtifacts']}")
        if any(p.is_file() for p in data_dir.rglob("*")):
            self.ctx.store.put_file(
                join_uri(prefix, "output.tar.gz"), make_tarball(data_dir, scratch / "output.tar.gz")
            )
