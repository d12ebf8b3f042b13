"""Retry policies, RetryPipelineExecution, a SIGKILLed worker and StopPipelineExecution."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from pipelines.local.executor import retry_delay
from tests.local.conftest import (
    FakeRunners,
    create,
    processing_step,
    put_text,
    start_inline,
    steps_of,
    wait_for,
)

CAPACITY = {"ExceptionType": ["SageMaker.CAPACITY_ERROR"], "IntervalSeconds": 1, "BackoffRate": 2.0}


def test_retry_policy_retries_matching_failures(client: Any) -> None:
    fake = FakeRunners(
        client.store, failures={"A": ["CapacityError: Unable to provision requested ML compute"]}
    )
    create(
        client,
        "retry",
        [processing_step("A", "s3://bucket/code/a.py", RetryPolicies=[{**CAPACITY, "MaxAttempts": 2}])],
    )
    arn = start_inline(client, "retry", fake.runners())
    step = steps_of(client, arn)["A"]
    assert (step["StepStatus"], step["AttemptCount"]) == ("Succeeded", 2)
    attempts = client._backend.records.get_attempts(arn, "A")
    assert [a["status"] for a in attempts] == ["Failed", "Succeeded"]
    assert attempts[0]["failure_reason"].startswith("CapacityError")
    assert attempts[0]["job_arn"] != attempts[1]["job_arn"]  # a new job per attempt, as SageMaker does
    assert attempts[1]["start"] - attempts[0]["end"] >= 0.9  # IntervalSeconds


def test_failures_no_policy_covers_are_not_retried(client: Any) -> None:
    fake = FakeRunners(client.store, failures={"A": ["AlgorithmError: bad data (exit code 2)"]})
    create(
        client,
        "noretry",
        [processing_step("A", "s3://bucket/code/a.py", RetryPolicies=[{**CAPACITY, "MaxAttempts": 3}])],
    )
    step = steps_of(client, start_inline(client, "noretry", fake.runners()))["A"]
    assert (step["StepStatus"], step["AttemptCount"]) == ("Failed", 1)


def test_max_attempts_bounds_the_retries(client: Any) -> None:
    fake = FakeRunners(client.store, failures={"A": ["InternalServerError: try again"] * 3})
    policy = {"ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR"], "IntervalSeconds": 0.01, "MaxAttempts": 1}
    create(client, "bounded", [processing_step("A", "s3://bucket/code/a.py", RetryPolicies=[policy])])
    step = steps_of(client, start_inline(client, "bounded", fake.runners()))["A"]
    assert (step["StepStatus"], step["AttemptCount"]) == ("Failed", 2)


def test_retry_delay_backs_off_and_expires() -> None:
    policies = [
        {"ExceptionType": ["Step.THROTTLING"], "IntervalSeconds": 2, "BackoffRate": 3.0, "MaxAttempts": 3}
    ]
    used: dict[int, int] = {}
    assert [retry_delay(policies, "Step.THROTTLING", used, 0) for _ in range(4)] == [2.0, 6.0, 18.0, None]
    assert retry_delay(policies, "Step.SERVICE_FAULT", {}, 0) is None
    expiring = [{"ExceptionType": ["Step.THROTTLING"], "ExpireAfterMin": 1}]
    assert retry_delay(expiring, "Step.THROTTLING", {}, 59) == 1.0
    assert retry_delay(expiring, "Step.THROTTLING", {}, 61) is None


def test_retry_pipeline_execution_reruns_only_unfinished_steps(client: Any) -> None:
    fake = FakeRunners(client.store, failures={"B": ["AlgorithmError: flaky"]})
    create(
        client,
        "resume",
        [
            processing_step("A", "s3://bucket/code/a.py", outputs=["out"]),
            processing_step(
                "B",
                "s3://bucket/code/b.py",
                inputs={"data": {"Get": "Steps.A.ProcessingOutputConfig.Outputs['out'].S3Output.S3Uri"}},
            ),
            processing_step("C", "s3://bucket/code/c.py", DependsOn=["B"]),
        ],
    )
    arn = start_inline(client, "resume", fake.runners())
    before = steps_of(client, arn)
    assert before["B"]["StepStatus"] == "Failed" and "C" not in before
    with pytest.raises(ClientError) as err:  # a running or succeeded execution cannot be retried
        client.retry_pipeline_execution(PipelineExecutionArn=arn.replace(arn[-12:], "x" * 12))
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"
    backend = client._backend
    backend._launch = lambda _arn: None
    assert client.retry_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionArn"] == arn
    backend.records.set_execution(arn, worker_pid=os.getpid())
    from pipelines.local.executor import run_execution

    assert run_execution(client.root, arn, threading.Event(), fake.runners()) == "Succeeded"
    after = steps_of(client, arn)
    assert after["A"]["StartTime"] == before["A"]["StartTime"] and after["A"]["AttemptCount"] == 1
    assert (after["B"]["StepStatus"], after["B"]["AttemptCount"]) == ("Succeeded", 2)
    assert after["C"]["StepStatus"] == "Succeeded"
    assert [c[0].split("-")[2] for c in fake.calls] == ["A", "B", "B", "C"]
    with pytest.raises(ClientError) as err:
        client.retry_pipeline_execution(PipelineExecutionArn=arn)
    assert err.value.response["Error"]["Code"] == "ValidationException"


SLOW = """
import os, pathlib, time
base = pathlib.Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
flag = (base / "processing/input/flag/flag.txt").read_text().strip()
print("flag", flag, flush=True)
if flag == "slow":
    time.sleep(60)
out = base / "processing/output/out"
out.mkdir(parents=True, exist_ok=True)
(out / "done.txt").write_text(flag)
"""
QUICK = """
import os, pathlib
base = pathlib.Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
out = base / "processing/output/out"
out.mkdir(parents=True, exist_ok=True)
(out / "a.txt").write_text("a")
"""


def _slow_pipeline(client: Any) -> None:
    put_text(client, "s3://bucket/code/quick.py", QUICK)
    put_text(client, "s3://bucket/code/slow.py", SLOW)
    put_text(client, "s3://bucket/flag/flag.txt", "slow")
    create(
        client,
        "slow",
        [
            processing_step("Quick", "s3://bucket/code/quick.py", outputs=["out"]),
            processing_step(
                "Slow",
                "s3://bucket/code/slow.py",
                outputs=["out"],
                DependsOn=["Quick"],
                inputs={"flag": "s3://bucket/flag"},
            ),
        ],
    )


def _wait_for_step(client: Any, arn: str, name: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = steps_of(client, arn).get(name)
        if step and step["StepStatus"] == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} never reached {status}: {steps_of(client, arn)}")


def test_sigkilled_run_leaves_consistent_records_and_retry_resumes(client: Any) -> None:
    _slow_pipeline(client)
    arn = client.start_pipeline_execution(PipelineName="slow")["PipelineExecutionArn"]
    _wait_for_step(client, arn, "Slow", "Executing")
    time.sleep(0.5)  # let the job process start
    pid = client._backend.records.get_execution(arn)["worker_pid"]
    os.killpg(pid, signal.SIGKILL)  # the worker and the job it runs, like a machine losing power
    deadline = time.monotonic() + 10
    while (
        client.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"] == "Executing"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    described = client.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert described["PipelineExecutionStatus"] == "Failed"
    assert "interrupted" in described["FailureReason"]
    before = steps_of(client, arn)
    assert before["Quick"]["StepStatus"] == "Succeeded"
    assert before["Slow"]["StepStatus"] == "Failed" and "interrupted" in before["Slow"]["FailureReason"]
    assert client.list_processing_jobs(StatusEquals="InProgress")["ProcessingJobSummaries"] == []
    killed_job = client._backend.records.get_attempts(arn, "Slow")[0]["job_arn"].rsplit("/", 1)[-1]
    assert client.describe_processing_job(ProcessingJobName=killed_job)["ProcessingJobStatus"] == "Failed"

    put_text(client, "s3://bucket/flag/flag.txt", "go")
    client.retry_pipeline_execution(PipelineExecutionArn=arn)
    assert wait_for(client, arn)["PipelineExecutionStatus"] == "Succeeded"
    after = steps_of(client, arn)
    assert after["Quick"]["StartTime"] == before["Quick"]["StartTime"] and after["Quick"]["AttemptCount"] == 1
    assert (after["Slow"]["StepStatus"], after["Slow"]["AttemptCount"]) == ("Succeeded", 2)
    attempts = client._backend.records.get_attempts(arn, "Slow")
    assert [a["status"] for a in attempts] == ["Failed", "Succeeded"]


def test_stop_pipeline_execution_stops_the_running_job(client: Any) -> None:
    _slow_pipeline(client)
    arn = client.start_pipeline_execution(PipelineName="slow")["PipelineExecutionArn"]
    _wait_for_step(client, arn, "Slow", "Executing")
    client.stop_pipeline_execution(PipelineExecutionArn=arn)
    started = time.monotonic()
    described = wait_for(client, arn, timeout=30)
    assert described["PipelineExecutionStatus"] == "Stopped"
    assert time.monotonic() - started < 25
    assert steps_of(client, arn)["Slow"]["StepStatus"] == "Stopped"
    with pytest.raises(ClientError) as err:
        client.stop_pipeline_execution(PipelineExecutionArn=arn)
    assert err.value.response["Error"]["Code"] == "ValidationException"
