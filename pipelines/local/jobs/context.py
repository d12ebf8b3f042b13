"""What a job runner gets from the orchestration (JobContext) and small helpers every runner shares."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipelines.local.store import ObjectStore

# botocore's FailureReason / ExitMessage shapes allow at most 1024 characters.
MAX_REASON_CHARS = 1024


@dataclass
class JobContext:
    """Everything a runner needs besides the request; runners read no config or environment themselves.

    Attributes:
        store: the local object store that `s3://` URIs resolve into.
        job_dir: a fresh folder the runner owns (sandbox, downloads, scratch).
        log_path: the job's log stream (like CloudWatch); appended to, never truncated.
        spot_interruptions: Spot interruptions to inject into a training job with managed Spot on
            (the orchestration reads `PDM_LOCAL_SPOT_INTERRUPTIONS` / config and passes it here).
        cancel: set by the orchestration to stop the job (StopTrainingJob and friends).
        seed: seed for a tuning job's sampler when the request sets no RandomSeed.
        region, account: used only to build ARNs in the returned Describe* dicts.
        max_log_bytes: cap of the job's own output in the log; a truncation line marks the cut.
        grace_seconds: time between SIGTERM and SIGKILL when a job is stopped (SageMaker gives 120 s).
        sync_interval: seconds between checkpoint-folder polls.
        base_env: environment job processes start from (None = this process's); SM_* and
            SAGEMAKER_* variables of it are dropped.
    """

    store: ObjectStore
    job_dir: Path
    log_path: Path
    spot_interruptions: int = 0
    cancel: threading.Event | None = None
    seed: int | None = None
    region: str = "us-east-1"
    account: str = "000000000000"
    max_log_bytes: int = 20 * 1024 * 1024
    grace_seconds: float = 10.0
    sync_interval: float = 0.5
    base_env: Mapping[str, str] | None = None

    def cancelled(self) -> bool:
        """True once the orchestration asked the job to stop."""
        return self.cancel is not None and self.cancel.is_set()


def now() -> dt.datetime:
    """Current time, timezone-aware UTC (botocore returns aware datetimes)."""
    return dt.datetime.now(dt.UTC)


def arn(ctx: JobContext, resource: str, name: str) -> str:
    """SageMaker ARN for a resource of this account/region, e.g. `training-job/<name>`."""
    return f"arn:aws:sagemaker:{ctx.region}:{ctx.account}:{resource}/{name.lower()}"


def clip_reason(text: str) -> str:
    """Fit a failure text into FailureReason's 1024 characters, keeping its start and its end."""
    text = text.strip()
    if len(text) <= MAX_REASON_CHARS:
        return text
    head = MAX_REASON_CHARS // 2 - 10
    tail = MAX_REASON_CHARS - head - 7
    return text[:head] + "\n[...]\n" + text[-tail:]


def read_failure_file(base: Path) -> str | None:
    """The container's failure text: `output/failure`, else `output/message`, else None."""
    for rel in ("output/failure", "output/message"):
        path = base / rel
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace").strip()
            if text:
                return text
    return None


def failure_reason(base: Path, exit_code: int | None, tail: list[str]) -> str:
    """FailureReason like SageMaker's: the failure file if the job wrote one, else the last log lines."""
    written = read_failure_file(base)
    code = f"exit code {exit_code}" if exit_code is not None else "no exit code"
    if written:
        return clip_reason(f"AlgorithmError: {written} ({code})")
    last = "\n".join(tail[-20:]) if tail else "(no output)"
    return clip_reason(f"AlgorithmError: {code}; last lines of the log:\n{last}")
