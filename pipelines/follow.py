"""Follow a pipeline execution through the boto3 API: a live table in a terminal, else a line per change.

It only polls `describe_pipeline_execution` and `list_pipeline_execution_steps`, so it follows the local
engine and Amazon SageMaker alike.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

TERMINAL = {"Succeeded", "Failed", "Stopped", "CompletedWithFailures"}
STYLE = {"Succeeded": "green", "Failed": "red", "Executing": "yellow", "Starting": "yellow", "Stopped": "red"}


def list_steps(client: Any, execution_arn: str) -> list[dict[str, Any]]:
    """All steps of an execution, oldest first (the API pages newest first)."""
    steps: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"PipelineExecutionArn": execution_arn, "SortOrder": "Ascending"}
    while True:
        page = client.list_pipeline_execution_steps(**kwargs)
        steps.extend(page.get("PipelineExecutionSteps", []))
        token = page.get("NextToken")
        if not token:
            return steps
        kwargs["NextToken"] = token


def _duration(step: dict[str, Any]) -> str:
    start: datetime | None = step.get("StartTime")
    if not start:
        return ""
    end: datetime = step.get("EndTime") or datetime.now(start.tzinfo)
    return f"{(end - start).total_seconds():.1f}s"


def _detail(step: dict[str, Any]) -> str:
    if step.get("FailureReason"):
        return str(step["FailureReason"]).splitlines()[0][:100]
    meta = step.get("Metadata", {})
    if "Condition" in meta:
        return f"outcome {meta['Condition'].get('Outcome')}"
    if "RegisterModel" in meta:
        return meta["RegisterModel"].get("Arn", "").rsplit(":model-package/", 1)[-1]
    for key in ("TrainingJob", "ProcessingJob", "TuningJob", "Endpoint", "Model", "EndpointConfig"):
        if key in meta:
            return meta[key].get("Arn", "").rsplit("/", 1)[-1]
    return ""


def render(steps: list[dict[str, Any]], status: str) -> Table:
    table = Table(title=f"pipeline execution: {status}", expand=False)
    for column in ("Step", "Status", "Duration", "Cache", "Attempt", "Details"):
        table.add_column(column)
    for step in steps:
        state = step.get("StepStatus", "")
        cache = "hit" if step.get("CacheHitResult") else ""
        table.add_row(
            step.get("StepName", ""),
            f"[{STYLE.get(state, 'white')}]{state}[/]",
            _duration(step),
            cache,
            str(step.get("AttemptCount", "")),
            _detail(step),
        )
    return table


def follow(
    client: Any,
    execution_arn: str,
    console: Console,
    poll_seconds: float = 0.5,
    timeout_seconds: float | None = None,
) -> dict[str, Any]:
    """Poll until the execution ends; returns the final `describe_pipeline_execution` response."""
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds

    def snapshot() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        desc = client.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
        return desc, list_steps(client, execution_arn)

    desc, steps = snapshot()
    if console.is_terminal:
        with Live(
            render(steps, desc["PipelineExecutionStatus"]), console=console, refresh_per_second=4
        ) as live:
            while desc["PipelineExecutionStatus"] not in TERMINAL:
                if deadline and time.monotonic() > deadline:
                    break
                time.sleep(poll_seconds)
                desc, steps = snapshot()
                live.update(render(steps, desc["PipelineExecutionStatus"]))
        return desc
    seen: dict[str, str] = {}
    while True:
        for step in steps:
            name, state = step.get("StepName", ""), step.get("StepStatus", "")
            if seen.get(name) != state:
                seen[name] = state
                cache = " (cache hit)" if step.get("CacheHitResult") else ""
                extra = f" {_duration(step)}" if state in TERMINAL else ""
                console.print(f"  {name:<16} {state}{extra}{cache}", highlight=False)
        if desc["PipelineExecutionStatus"] in TERMINAL or (deadline and time.monotonic() > deadline):
            console.print(render(steps, desc["PipelineExecutionStatus"]))
            return desc
        time.sleep(poll_seconds)
        desc, steps = snapshot()
