"""SQLite records: WAL, atomic terminal writes, versions across processes, interrupted executions."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime
from pathlib import Path

from pipelines.local.api_common import dumps, loads
from pipelines.local.records import Records


def _execution(records: Records, arn: str = "arn:x/execution/e1", pid: int | None = 123) -> None:
    records.insert_execution(
        {
            "arn": arn,
            "pipeline_name": "p",
            "execution_id": "e1",
            "status": "Executing",
            "parameters": "{}",
            "given": "[]",
            "definition": '{"Steps": []}',
            "options": "{}",
            "created": 1.0,
            "modified": 1.0,
            "worker_pid": pid,
        }
    )


def test_database_is_wal_with_busy_timeout(tmp_path: Path) -> None:
    records = Records(tmp_path)
    assert records.query("PRAGMA journal_mode")[0][0] == "wal"
    assert (tmp_path / "records.db").exists()


def test_datetimes_round_trip_through_json() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert loads(dumps({"CreationTime": moment, "n": [moment]})) == {"CreationTime": moment, "n": [moment]}


def test_resources_insert_once_and_update(tmp_path: Path) -> None:
    records = Records(tmp_path)
    assert records.insert_resource("model", "m", "arn:m", {"ModelName": "m"})
    assert not records.insert_resource("model", "m", "arn:m", {"ModelName": "other"})
    records.update_resource("model", "m", body={"ModelName": "m", "x": 1}, extra={"pid": 5})
    found = records.get_resource("model", "m")
    assert found is not None and found.body == {"ModelName": "m", "x": 1} and found.extra == {"pid": 5}
    assert records.get_resource_by_arn("model", "arn:m") is not None
    assert records.delete_resource("model", "m") and records.get_resource("model", "m") is None


def _versions(root: str, count: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    records = Records(Path(root))
    for _ in range(count):
        made = records.insert_versioned(
            "model-package",
            "g",
            lambda v: (f"arn:g/{v}-{id(records)}", f"arn:g/{v}-{id(records)}", {"v": v}, None),
        )
        queue.put(made.version)


def test_versions_are_unique_across_processes(tmp_path: Path) -> None:
    Records(tmp_path)
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    workers = [multiprocessing.Process(target=_versions, args=(str(tmp_path), 5, queue)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    versions = sorted(queue.get(timeout=5) for _ in range(15))
    assert versions == list(range(1, 16))


def test_step_and_attempt_rows_and_atomic_terminal_write(tmp_path: Path) -> None:
    records = Records(tmp_path)
    _execution(records)
    records.step_started("arn:x/execution/e1", {"Name": "A", "Type": "Processing"})
    first = records.attempt_started("arn:x/execution/e1", "A", "/logs/a1")
    records.attempt_update("arn:x/execution/e1", "A", first, status="Failed", end=2.0, exit_code=1)
    second = records.attempt_started("arn:x/execution/e1", "A", "/logs/a2")
    records.step_finished(
        "arn:x/execution/e1",
        "A",
        status="Succeeded",
        failure_reason=None,
        metadata={"ProcessingJob": {"Arn": "arn:j"}},
        properties={"k": 1},
        attempt=second,
        exit_code=0,
    )
    step = records.get_steps("arn:x/execution/e1")[0]
    assert (step["status"], step["attempt_count"], json.loads(step["properties"])) == (
        "Succeeded",
        2,
        {"k": 1},
    )
    attempts = [
        (a["attempt"], a["status"], a["exit_code"]) for a in records.get_attempts("arn:x/execution/e1")
    ]
    assert attempts == [(1, "Failed", 1), (2, "Succeeded", 0)]


def test_mark_interrupted_fails_running_steps_attempts_and_jobs_once(tmp_path: Path) -> None:
    records = Records(tmp_path)
    _execution(records, pid=999)
    arn = "arn:x/execution/e1"
    records.step_started(arn, {"Name": "Done", "Type": "Fail"})
    records.step_finished(arn, "Done", status="Succeeded", failure_reason=None, metadata={}, properties={})
    records.step_started(arn, {"Name": "Running", "Type": "Training"})
    records.attempt_started(arn, "Running", None)
    records.insert_resource(
        "training-job", "j", "arn:j", {"TrainingJobStatus": "InProgress"}, status="InProgress", owner=arn
    )
    assert not records.mark_interrupted(arn, 1, "other pid")  # guarded on the worker pid
    assert records.mark_interrupted(arn, 999, "killed")
    assert not records.mark_interrupted(arn, 999, "killed")  # only once
    execution = records.get_execution(arn)
    assert execution is not None and (execution["status"], execution["failure_reason"]) == (
        "Failed",
        "killed",
    )
    statuses = {s["name"]: s["status"] for s in records.get_steps(arn)}
    assert statuses == {"Done": "Succeeded", "Running": "Failed"}
    assert records.get_attempts(arn, "Running")[0]["status"] == "Failed"
    job = records.get_resource("training-job", "j")
    assert (
        job is not None
        and job.body["TrainingJobStatus"] == "Failed"
        and "interrupted" in job.body["FailureReason"]
    )


def test_claim_execution_is_compare_and_set(tmp_path: Path) -> None:
    records = Records(tmp_path)
    _execution(records, pid=7)
    assert records.claim_execution("arn:x/execution/e1", 7, None, "Executing")
    assert not records.claim_execution("arn:x/execution/e1", 7, None, "Executing")
