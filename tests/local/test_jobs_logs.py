"""`python -m pipelines.logs`: job logs of an execution found through the records DB."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from pipelines.local.records import Records
from pipelines.logs import NotFound, main, print_logs

ARN = "arn:aws:sagemaker:us-east-1:000000000000:pipeline/pdm/execution/abc123"


def _records(root: Path) -> Records:
    """An execution with a processing step (two attempts), a tuning step with two trials, a condition."""
    records = Records(root)
    stamp = time.time()
    records.insert_execution(
        {
            "arn": ARN,
            "pipeline_name": "pdm",
            "execution_id": "abc123",
            "status": "Failed",
            "parameters": "{}",
            "given": "[]",
            "definition": "{}",
            "options": "{}",
            "created": stamp,
            "modified": stamp,
        }
    )
    logs = root / "logs"
    for folder in ("ProcessingJobs", "TuningJobs", "TrainingJobs"):
        (logs / folder).mkdir(parents=True)
    records.step_started(ARN, {"Name": "Preprocess", "Type": "Processing"})
    for number, text in ((1, "first try\nboom\n"), (2, "second try\nok\n")):
        path = logs / "ProcessingJobs" / f"prep-{number}.log"
        path.write_text(text)
        attempt = records.attempt_started(ARN, "Preprocess", None)
        job_arn = f"arn:aws:sagemaker:us-east-1:000000000000:processing-job/prep-{number}"
        records.attempt_update(
            ARN, "Preprocess", attempt, log_path=str(path), status="Succeeded", job_arn=job_arn
        )
    records.step_started(ARN, {"Name": "Tune", "Type": "Tuning"})
    tuning_log = logs / "TuningJobs" / "Tune-x.log"
    tuning_log.write_text("[local-engine] tuning job tune-x\n")
    attempt = records.attempt_started(ARN, "Tune", None)
    tuning_arn = "arn:aws:sagemaker:us-east-1:000000000000:hyper-parameter-tuning-job/tune-x"
    records.attempt_update(ARN, "Tune", attempt, log_path=str(tuning_log), job_arn=tuning_arn)
    for trial in ("tune-x-001-aaaaaaaa", "tune-x-002-bbbbbbbb"):
        (logs / "TrainingJobs" / f"{trial}.log").write_text(f"training {trial}\n")
        records.insert_resource(
            "training-job", trial, f"arn:...:training-job/{trial}", {}, status="Completed", parent="Tune-x"
        )
    records.step_started(ARN, {"Name": "Gate", "Type": "Condition"})
    return records


def test_prints_every_attempt_and_tuning_trials(tmp_path: Path) -> None:
    _records(tmp_path)
    out = io.StringIO()
    print_logs(tmp_path, "abc123", None, out)
    text = out.getvalue()
    assert text.index("first try") < text.index("second try") < text.index("tuning job tune-x")
    assert "==> Preprocess attempt 2 (Succeeded) processing-job/prep-2:" in text
    assert (
        "==> Tune training job tune-x-002-bbbbbbbb (Completed)" in text
        and "training tune-x-001-aaaaaaaa" in text
    )
    assert "==> Gate (Condition, Executing) has no job log" in text


def test_one_step_by_arn_or_latest_with_tail(tmp_path: Path) -> None:
    _records(tmp_path)
    for ref in (ARN, "latest"):
        out = io.StringIO()
        print_logs(tmp_path, ref, "Preprocess", out, tail=1)
        lines = out.getvalue().splitlines()
        assert [line.split(":")[0] for line in lines] == [
            "==> Preprocess attempt 1 (Succeeded) processing-job/prep-1",
            "boom",
            "==> Preprocess attempt 2 (Succeeded) processing-job/prep-2",
            "ok",
        ]


def test_unknown_execution_step_or_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(NotFound, match="no local engine records"):
        print_logs(tmp_path / "nothing", "abc123", None, io.StringIO())
    _records(tmp_path)
    with pytest.raises(NotFound, match="most recent: abc123"):
        print_logs(tmp_path, "zzz", None, io.StringIO())
    assert main(["abc123", "Nope", "--root", str(tmp_path)]) == 2
    assert "steps: Preprocess, Tune, Gate" in capsys.readouterr().err
