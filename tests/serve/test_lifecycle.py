"""The server process: ready file, clean SIGTERM/SIGINT stop, --model-data, workers, startup errors."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.serve.serve_helpers import RECORD, REPO, ServerProcess, csv_line

CSV = {"content-type": "text/csv", "accept": "text/csv"}


def test_ready_file_is_written_atomically(server: ServerProcess) -> None:
    ready = server.ready
    assert set(ready) == {"pid", "port", "url", "started"}
    assert ready["pid"] == server.proc.pid
    assert ready["url"] == f"http://127.0.0.1:{ready['port']}" and ready["port"] > 0
    started = dt.datetime.fromisoformat(ready["started"])
    assert started.tzinfo is not None
    assert abs((dt.datetime.now(dt.UTC) - started).total_seconds()) < 600
    assert [p.name for p in server.ready_file.parent.glob(".ready-*")] == [], "temp file left behind"


def test_sigterm_drains_capture_and_exits_zero(tmp_path: Path, tiny_model_dir: Path) -> None:
    capture = tmp_path / "capture"
    config = {
        "endpoint_name": "pdm-stop",
        "variants": [{"name": "AllTraffic", "weight": 1, "model_dir": str(tiny_model_dir)}],
        "data_capture": {"enabled": True, "sampling_percentage": 100, "destination_dir": str(capture)},
    }
    proc = ServerProcess.from_config(tmp_path, config)
    with httpx.Client(base_url=proc.url) as client:
        for _ in range(25):
            assert client.post("/invocations", content=csv_line(RECORD), headers=CSV).status_code == 200
    assert proc.stop(signal.SIGTERM) == 0, proc.log()
    lines = [line for p in capture.rglob("*.jsonl") for line in p.read_text().splitlines()]
    assert len(lines) == 25, "every answered request is in the capture after a clean stop"
    assert proc.ready_file.exists(), "stopping removes nothing"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{proc.url}/ping", timeout=2)


def test_model_data_form_serves_one_artefact(tmp_path: Path, model_tar: Path) -> None:
    ready = tmp_path / "ready.json"
    args = ["--model-data", str(model_tar), "--port", "0", "--ready-file", str(ready)]
    proc = ServerProcess(args, ready, tmp_path / "log.txt")
    response = httpx.post(f"{proc.url}/invocations", content=csv_line(RECORD), headers=CSV)
    assert response.status_code == 200
    assert 0.0 <= float(response.text) <= 1.0
    assert response.headers["x-amzn-invoked-production-variant"] == "AllTraffic"
    assert proc.stop(signal.SIGINT) == 0, proc.log()


def children(pid: int) -> set[int]:
    """Worker processes of a server (multiprocessing's resource tracker is a child too, but not a worker)."""
    pids = {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    return {p for p in pids if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()}


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def two_workers(tmp_path: Path, model_dir: Path) -> ServerProcess:
    config = {
        "endpoint_name": "pdm-workers",
        "workers": 2,
        "variants": [{"name": "AllTraffic", "weight": 1, "model_dir": str(model_dir)}],
    }
    return ServerProcess.from_config(tmp_path, config)


def serving_pids(url: str, connections: int = 30) -> set[int]:
    """Worker pids that answered over fresh connections (the kernel spreads them over the workers).

    The request id starts with the answering process's pid in hex.
    """
    pids: set[int] = set()
    for _ in range(connections):
        with httpx.Client(base_url=url) as client:
            response = client.post("/invocations", content=csv_line(RECORD), headers=CSV)
            assert response.status_code == 200
            pids.add(int(response.headers["x-amzn-requestid"].split("-")[0], 16))
    return pids


def test_two_workers_serve_restart_and_stop(tmp_path: Path, tiny_model_dir: Path) -> None:
    proc = two_workers(tmp_path, tiny_model_dir)
    first = children(proc.proc.pid)
    assert len(first) == 2
    assert serving_pids(proc.url) <= first, "requests are answered by the worker processes"
    victim = next(iter(first))
    os.kill(victim, signal.SIGKILL)
    assert wait_for(lambda: len({p for p in children(proc.proc.pid) if alive(p)} - first) == 1), "no restart"
    serving_pids(proc.url, connections=5)
    workers = children(proc.proc.pid)
    assert proc.stop(signal.SIGTERM) == 0, proc.log()
    assert not any(alive(p) for p in workers), "a worker outlived the server"


def test_workers_follow_a_killed_supervisor(tmp_path: Path, tiny_model_dir: Path) -> None:
    proc = two_workers(tmp_path, tiny_model_dir)
    workers = children(proc.proc.pid)
    assert len(workers) == 2
    proc.stop(signal.SIGKILL)
    assert wait_for(lambda: not any(alive(p) for p in workers)), "workers orphaned"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.serve", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "endpoint.json"
    path.write_text(
        json.dumps({"endpoint_name": "ok", "variants": [{"name": "A", "model_dir": "/nonexistent"}]})
    )
    result = run_cli("--config", str(path))
    assert result.returncode == 2
    assert "variants[0].model_dir" in result.stderr


def test_artefact_without_user_module_fails_before_listening(tmp_path: Path, model_dir: Path) -> None:
    broken = tmp_path / "model"
    (broken / "code").mkdir(parents=True)
    for name in ("xgboost-model.json", "feature_spec.json"):
        (broken / name).write_bytes((model_dir / name).read_bytes())
    ready = tmp_path / "ready.json"
    path = tmp_path / "endpoint.json"
    config = {
        "endpoint_name": "ok",
        "ready_file": str(ready),
        "variants": [{"name": "A", "model_dir": str(broken)}],
    }
    path.write_text(json.dumps(config))
    result = run_cli("--config", str(path))
    assert result.returncode == 1
    assert "inference.py" in result.stderr and "not found" in result.stderr
    assert not ready.exists()
