"""Helpers for the model server tests: a tiny trained artefact and a server subprocess with its ready file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

REPO = Path(__file__).resolve().parents[2]
NUMERIC = ["air_temperature_k", "process_temperature_k", "rotational_speed_rpm", "torque_nm", "tool_wear_min"]
CATEGORIES = ["H", "L", "M"]
RAW_COLUMNS = [*NUMERIC, "type"]
FEATURE_NAMES = [*NUMERIC, *(f"type={v}" for v in CATEGORIES)]
# A record in raw order (CSV without header): numeric columns, then `type`.
RECORD = [298.1, 308.6, 1551.0, 42.8, 0.0, "M"]
START_TIMEOUT_S = 60.0
# The shared endpoint (conftest `server`): routing tests check the split; "Zero" answers only when targeted.
ENDPOINT = "pdm-mlops-dev"
WEIGHTS = {"A": 3.0, "B": 1.0, "Zero": 0.0}


def synthetic_rows(rows: int, seed: int) -> tuple[list[list[Any]], np.ndarray, np.ndarray]:
    """Raw records, their model matrix (numeric + one-hot type) and a 0/1 target that depends on them."""
    rng = np.random.default_rng(seed)
    air = rng.normal(300, 2, rows)
    process = air + 10 + rng.normal(0, 1, rows)
    speed = rng.normal(1540, 180, rows)
    torque = np.clip(rng.normal(40, 10, rows), 0, None)
    wear = rng.uniform(0, 250, rows)
    kind = rng.choice(CATEGORIES, rows)
    y = ((wear * torque > 7000) | (speed < 1350)).astype(np.float32)
    numeric = np.column_stack([air, process, speed, torque, wear]).astype(np.float32)
    onehot = (kind[:, None] == np.array(CATEGORIES)[None, :]).astype(np.float32)
    raw = [[*map(float, numeric[i]), str(kind[i])] for i in range(rows)]
    return raw, np.hstack([numeric, onehot]), y


def build_artefact(dest: Path, code_files: list[Path], seed: int = 0, rounds: int = 10) -> Path:
    """Train a small binary model and lay out the artefact as train.py does (docs/contracts.md sec. 6)."""
    _, x, y = synthetic_rows(500, seed)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": seed},
        xgb.DMatrix(x, label=y, feature_names=FEATURE_NAMES),
        num_boost_round=rounds,
    )
    (dest / "code").mkdir(parents=True, exist_ok=True)
    booster.save_model(str(dest / "xgboost-model.json"))
    spec = {
        "version": 1,
        "problem_type": "binary",
        "target": "machine_failure",
        "numeric": NUMERIC,
        "categorical": {"type": CATEGORIES},
        "classes": ["0", "1"],
        "feature_names": FEATURE_NAMES,
    }
    (dest / "feature_spec.json").write_text(json.dumps(spec), encoding="utf-8")
    for src in code_files:
        shutil.copy(src, dest / "code" / src.name)
    return dest


def make_tar(model_dir: Path, tar_path: Path) -> Path:
    """model.tar.gz with the artefact's files at the archive root, as SageMaker packs /opt/ml/model."""
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "w:gz") as tar:
        for item in sorted(model_dir.iterdir()):
            tar.add(item, arcname=item.name)
    return tar_path


def csv_line(record: list[Any]) -> str:
    return ",".join(str(v) for v in record)


class ServerProcess:
    """`python -m deploy.serve ...` in a subprocess, ready once its ready file appears."""

    def __init__(self, args: list[str], ready_file: Path, log_path: Path) -> None:
        self.ready_file = ready_file
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deploy.serve", *args],
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.ready = self._wait_ready()
        self.url: str = self.ready["url"]
        self.port: int = self.ready["port"]

    @classmethod
    def from_config(cls, tmp: Path, config: dict[str, Any], *extra: str) -> ServerProcess:
        """Write endpoint.json (ready file under tmp) and start a server on it."""
        ready = tmp / "ready.json"
        config = {"host": "127.0.0.1", "port": 0, "workers": 1, "ready_file": str(ready), **config}
        path = tmp / "endpoint.json"
        path.write_text(json.dumps(config), encoding="utf-8")
        return cls(["--config", str(path), *extra], ready, tmp / "server.log")

    def _wait_ready(self) -> dict[str, Any]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            if self.ready_file.exists():
                return json.loads(self.ready_file.read_text(encoding="utf-8"))
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"server not ready after {START_TIMEOUT_S}s:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the server and wait for it; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
