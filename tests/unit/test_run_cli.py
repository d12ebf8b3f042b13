"""`python -m pipelines.run` as a user runs it: definition output, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.run", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        env=full_env,
        timeout=120,
    )


def test_definition_is_written_and_valid(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    result = run_cli("--definition", str(out))
    assert result.returncode == 0, result.stderr
    definition = json.loads(out.read_text())
    assert definition["Version"] == "2020-12-01"
    assert {s["Name"] for s in definition["Steps"]} == {"Preprocess", "Train", "Tune", "Evaluate", "Gate"}
    assert "Traceback" not in result.stderr


def test_bad_param_exits_2_with_one_line(tmp_path: Path) -> None:
    result = run_cli("--definition", str(tmp_path / "x.json"), "--param", "training.max_run=soon")
    assert result.returncode == 2
    assert "training.max_run" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.json").exists()


def test_bad_config_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "pdm.yaml"
    bad.write_text("deploy: {endpoint_nam: x}\n")
    result = run_cli("--config", str(bad), "--definition", str(tmp_path / "x.json"))
    assert result.returncode == 2 and "deploy.endpoint_nam" in result.stderr
