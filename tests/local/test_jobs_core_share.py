"""Concurrent local jobs split the machine's cores instead of each spinning one OpenMP thread per core."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pipelines.local.jobs import launch
from pipelines.local.jobs.launch import JobLog, JobWorker

PRINT_THREADS = (
    "import os, sys, time; print(os.environ.get('OMP_NUM_THREADS')); sys.stdout.flush(); time.sleep({})"
)


def worker(tmp_path: Path, name: str, sleep: float, env: dict[str, str] | None = None) -> JobWorker:
    log = JobLog(tmp_path / f"{name}.log", max_bytes=10_000)
    return JobWorker([sys.executable, "-c", PRINT_THREADS.format(sleep)], env or {}, tmp_path, log)


def test_threads_shared_between_running_jobs_and_returned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(launch.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(launch, "CORES", launch._CoreShare())
    first, second = worker(tmp_path, "first", 1.0), worker(tmp_path, "second", 0.0)
    first.start()
    second.start()
    assert second.wait().exit_code == 0
    assert first.wait().exit_code == 0
    assert (tmp_path / "first.log").read_text().split() == ["4"]
    assert (tmp_path / "second.log").read_text().split() == ["2"]
    assert launch.CORES.running == 0
    third = worker(tmp_path, "third", 0.0)
    assert third.run().exit_code == 0
    assert (tmp_path / "third.log").read_text().split() == ["4"]


def test_an_explicit_setting_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "CORES", launch._CoreShare())
    job = worker(tmp_path, "pinned", 0.0, {"OMP_NUM_THREADS": "3"})
    assert job.run().exit_code == 0
    assert (tmp_path / "pinned.log").read_text().split() == ["3"]
    assert launch.CORES.running == 0
