"""`python -m pipelines.logs EXECUTION [STEP]`: print the job logs of a local execution (CloudWatch-like).

EXECUTION is an execution ARN, its id (the ARN's last part) or `latest`. Each step's attempts are printed in
start order under a `==>` header; a tuning step is followed by the logs of its training jobs. Exit codes: 0,
or 2 when the records, the execution or the step cannot be found.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import deque
from pathlib import Path
from typing import TextIO

from pipelines.local.records import Records

TUNING_KIND = "hyper-parameter-tuning-job"
TRAINING_KIND = "training-job"


class NotFound(Exception):
    """Unknown records folder, execution or step; printed as one line (exit code 2)."""


def find_execution(records: Records, ref: str) -> str:
    """The ARN of the execution named by ARN, id or `latest`."""
    executions = records.list_executions()
    if not executions:
        raise NotFound("no executions recorded yet")
    if ref == "latest":
        return str(executions[-1]["arn"])
    for row in executions:
        if ref in (row["arn"], row["execution_id"]) or row["arn"].endswith("/" + ref):
            return str(row["arn"])
    recent = ", ".join(row["execution_id"] for row in executions[-5:])
    raise NotFound(f"no execution {ref!r}; most recent: {recent}")


def _print_file(path: Path, out: TextIO, tail: int | None) -> None:
    if not path.is_file():
        out.write(f"    (no log file at {path})\n")
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = deque(handle, maxlen=tail) if tail else handle
        for line in lines:
            out.write(line if line.endswith("\n") else line + "\n")


def _trial_logs(records: Records, job_arn: str, log_path: Path) -> list[tuple[str, str, Path]]:
    """(name, status, log) of a tuning job's training jobs; their logs sit in the TrainingJobs folder."""
    # ARNs carry names lower-cased (as SageMaker's do), the records keep the name as given.
    name = job_arn.rsplit("/", 1)[-1].lower()
    trials = [t for t in records.list_resources(TRAINING_KIND) if (t.parent or "").lower() == name]
    folder = log_path.parent.parent / "TrainingJobs"
    return [(t.name, t.status or "?", folder / f"{t.name}.log") for t in trials]


def print_logs(root: Path, execution: str, step: str | None, out: TextIO, tail: int | None = None) -> None:
    """Write the logs of one execution (or one of its steps) to `out`.

    Raises:
        NotFound: no records under `root`, no such execution, or no such step.
    """
    if not (root / "records.db").is_file():
        raise NotFound(f"no local engine records at {root / 'records.db'}")
    records = Records(root)
    arn = find_execution(records, execution)
    steps = records.get_steps(arn)
    if step is not None and step not in {s["name"] for s in steps}:
        known = ", ".join(s["name"] for s in steps) or "none started yet"
        raise NotFound(f"no step {step!r} in {arn}; steps: {known}")
    for row in steps:
        if step is not None and row["name"] != step:
            continue
        attempts = records.get_attempts(arn, row["name"])
        logged = [a for a in attempts if a["log_path"]]
        if not logged:
            reason = f": {row['failure_reason']}" if row["failure_reason"] else ""
            out.write(f"==> {row['name']} ({row['type']}, {row['status']}) has no job log{reason}\n")
            continue
        for attempt in logged:
            path = Path(attempt["log_path"])
            job = f" {attempt['job_arn'].rsplit(':', 1)[-1]}" if attempt["job_arn"] else ""
            out.write(f"==> {row['name']} attempt {attempt['attempt']} ({attempt['status']}){job}: {path}\n")
            _print_file(path, out, tail)
            if attempt["job_arn"] and f":{TUNING_KIND}/" in attempt["job_arn"]:
                for name, status, trial_log in _trial_logs(records, attempt["job_arn"], path):
                    out.write(f"==> {row['name']} training job {name} ({status}): {trial_log}\n")
                    _print_file(trial_log, out, tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.logs", description=__doc__)
    parser.add_argument("execution", help="execution ARN, execution id, or 'latest'")
    parser.add_argument("step", nargs="?", help="only this step")
    parser.add_argument("--root", type=Path, help="local engine folder (default $PDM_ROOT or .mlops)")
    parser.add_argument("--tail", type=int, metavar="N", help="only the last N lines of each log")
    args = parser.parse_args(argv)
    root = args.root or Path(os.environ.get("PDM_ROOT", ".mlops"))
    try:
        print_logs(root, args.execution, args.step, sys.stdout, args.tail)
    except NotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `| head` closed the pipe: not an error
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
