"""What a finished execution produced, read back through the API and the object store (never re-derived)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from pipelines.config import PipelineConfig
from pipelines.follow import list_steps


@dataclass
class RunSummary:
    status: str
    failure: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    gate_outcome: str | None = None
    model_package_arn: str | None = None
    model_package_version: int | None = None
    approval_status: str | None = None
    endpoint_name: str | None = None
    endpoint_status: str | None = None
    endpoint_url: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    evaluation_uri: str | None = None
    report_uri: str | None = None


def _name(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def collect(client: Any, target: Any, execution: dict[str, Any], config: PipelineConfig) -> RunSummary:
    """Read step metadata, the evaluation file, the registry and the endpoint for one execution."""
    arn = execution["PipelineExecutionArn"]
    summary = RunSummary(status=execution["PipelineExecutionStatus"], failure=execution.get("FailureReason"))
    for step in list_steps(client, arn):
        meta, name = step.get("Metadata", {}), step.get("StepName")
        if step.get("StepStatus") == "Failed" and not summary.failure:
            summary.failure = (
                f"{name}: {step.get('FailureReason') or meta.get('Fail', {}).get('ErrorMessage')}"
            )
        if "Fail" in meta and meta["Fail"].get("ErrorMessage"):
            summary.failure = meta["Fail"]["ErrorMessage"]
        if "ProcessingJob" in meta and name == "Evaluate":
            job = client.describe_processing_job(ProcessingJobName=_name(meta["ProcessingJob"]["Arn"]))
            for out in job.get("ProcessingOutputConfig", {}).get("Outputs", []):
                if out["OutputName"] == "evaluation":
                    base = out["S3Output"]["S3Uri"].rstrip("/")
                    summary.evaluation_uri = f"{base}/evaluation.json"
                    summary.report_uri = f"{base}/report.md"
        if "TrainingJob" in meta and name == "Train":
            job = client.describe_training_job(TrainingJobName=_name(meta["TrainingJob"]["Arn"]))
            summary.training = {
                "job": job["TrainingJobName"],
                "training_seconds": job.get("TrainingTimeInSeconds"),
                "billable_seconds": job.get("BillableTimeInSeconds"),
                "spot": job.get("EnableManagedSpotTraining", False),
                "metrics": {m["MetricName"]: m["Value"] for m in job.get("FinalMetricDataList", [])},
            }
        if "Condition" in meta and name == "Gate":
            summary.gate_outcome = meta["Condition"].get("Outcome")
        if "RegisterModel" in meta:
            package = client.describe_model_package(ModelPackageName=meta["RegisterModel"]["Arn"])
            summary.model_package_arn = package["ModelPackageArn"]
            summary.model_package_version = package.get("ModelPackageVersion")
            summary.approval_status = package.get("ModelApprovalStatus")
        if "Endpoint" in meta:
            endpoint = client.describe_endpoint(EndpointName=_name(meta["Endpoint"]["Arn"]))
            summary.endpoint_name = endpoint["EndpointName"]
            summary.endpoint_status = endpoint["EndpointStatus"]
            # The local engine's one extension to the API: where its endpoint's server listens.
            local = getattr(client, "local_endpoint", None)
            if callable(local):
                summary.endpoint_url = local(EndpointName=summary.endpoint_name).get("url")
    if summary.evaluation_uri:
        try:
            evaluation = json.loads(target.get(summary.evaluation_uri))
        except Exception:
            evaluation = {}
        summary.gate = evaluation.get("gate", {})
        section = config.metric_json_path.split(".", 1)[0]
        summary.metrics = {
            k: v.get("value") for k, v in evaluation.get(section, {}).items() if isinstance(v, dict)
        }
    return summary


def sample_record(config: PipelineConfig) -> str:
    """One raw CSV record in the model's raw column order (numeric, then categorical) for the invoke hint."""
    from model_code.data import generate

    row = generate(1, config.data.seed).iloc[0]
    cols = list(config.schema_.numeric_columns) + list(config.schema_.categorical_columns)
    values = []
    for col in cols:
        value = row.get(col, 0)
        values.append(f"{value:.6g}" if isinstance(value, float) else str(value))
    return ",".join(values)


def _python_command() -> str:
    """The interpreter to paste: `.venv/bin/python` after `make run`, plain `python` in an activated env."""
    exe = Path(sys.executable)
    try:
        relative = exe.relative_to(Path.cwd())
    except ValueError:
        return "python"
    return str(relative) if os.environ.get("VIRTUAL_ENV") != str(exe.parent.parent) else "python"


def print_summary(console: Console, summary: RunSummary, config: PipelineConfig, target: Any) -> None:
    target_name = target.name
    python = _python_command()
    root = getattr(target, "root", None)
    root_flag = f" --root {root}" if root is not None and str(root) != ".mlops" else ""
    ok = summary.status == "Succeeded"
    console.rule(f"[{'green' if ok else 'red'}]{summary.status}")
    metric = config.evaluation.metric
    if summary.metrics:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in summary.metrics.items() if isinstance(v, (int, float)))
        console.print(f"Test metrics: {shown}", highlight=False)
    if summary.gate:
        champion = summary.gate.get("champion")
        champion_text = (
            "no approved champion yet" if champion is None else f"champion {metric}={champion:.4f}"
        )
        direction = ">=" if config.metric_direction == "maximize" else "<="
        console.print(
            f"Gate: {metric}={summary.gate.get('candidate', float('nan')):.4f} {direction} threshold "
            f"{config.evaluation.threshold} and not worse than the champion ({champion_text}) -> "
            f"{summary.gate_outcome or 'not evaluated'}",
            highlight=False,
        )
    if summary.training:
        t = summary.training
        console.print(
            f"Training: {t['job']} spot={t['spot']} training {t['training_seconds']}s, "
            f"billable {t['billable_seconds']}s",
            highlight=False,
        )
    if summary.model_package_arn:
        console.print(
            f"Model package: {summary.model_package_arn} (version {summary.model_package_version}, "
            f"{summary.approval_status})",
            highlight=False,
        )
    if summary.endpoint_name:
        console.print(f"Endpoint: {summary.endpoint_name} ({summary.endpoint_status})", highlight=False)
        record = sample_record(config)
        if summary.endpoint_url:
            console.print(f"Endpoint URL: {summary.endpoint_url}", highlight=False)
            console.print("Invoke it:", highlight=False)
            console.print(
                f"  curl -s -X POST {summary.endpoint_url}/invocations -H 'Content-Type: text/csv' "
                f"--data '{record}'",
                highlight=False,
                soft_wrap=True,
            )
            console.print(
                f"  {python} -m deploy.endpoint{root_flag} invoke {summary.endpoint_name} --body '{record}'",
                highlight=False,
                soft_wrap=True,
            )
            console.print(
                f"Stop it: {python} -m deploy.endpoint{root_flag} stop {summary.endpoint_name}",
                highlight=False,
            )
        elif target_name == "sagemaker":
            console.print(
                f"Invoke it: aws sagemaker-runtime invoke-endpoint --endpoint-name {summary.endpoint_name} "
                f"--content-type text/csv --body '{record}' --cli-binary-format raw-in-base64-out out.json",
                highlight=False,
                soft_wrap=True,
            )
    if summary.report_uri:
        store = getattr(target, "store", None)
        where = store.path_for(summary.report_uri) if store is not None else summary.report_uri
        console.print(f"Evaluation report: {where}", highlight=False)
    if summary.failure and not ok:
        console.print(f"[red]Failure:[/] {summary.failure}", highlight=False)
