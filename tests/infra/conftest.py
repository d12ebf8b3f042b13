"""Infrastructure test fixtures: fake AWS credentials, parsed templates, one cfn-lint and one checkov run."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deploy.infra import TEMPLATES_DIR
from deploy.infra.cfn import load_template
from tests.infra.cfn_helpers import TEMPLATE_PATHS

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "eu-west-1",
    # Never ask the instance metadata service for credentials (a network call) when none are set.
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials for every test, and no way to read the developer's real AWS config."""
    for key, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture(scope="session")
def templates() -> dict[str, dict[str, Any]]:
    """Every template, parsed: name (file stem) -> template dict."""
    return {path.stem: load_template(path) for path in TEMPLATE_PATHS}


@pytest.fixture(scope="session")
def template_texts() -> dict[str, str]:
    """Every template's raw text (for the checks on comments)."""
    return {path.stem: path.read_text() for path in TEMPLATE_PATHS}


@pytest.fixture(scope="session")
def cfn_lint_matches() -> list[Any]:
    """cfn-lint over all templates at once (every rule, all severities)."""
    from cfnlint.api import ManualArgs, lint_by_config

    return lint_by_config(ManualArgs(templates=[str(p) for p in TEMPLATE_PATHS]))


def _checkov_executable() -> str:
    # The Makefile passes CHECKOV (checkov lives in its own venv because it pins an old boto3).
    candidates = [
        os.environ.get("CHECKOV"),
        str(Path(sys.executable).parent / "checkov"),
        shutil.which("checkov"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail(
        "checkov not found: run `make setup` (it installs .venv-checkov) or set CHECKOV=/path/to/checkov"
    )


@pytest.fixture(scope="session")
def checkov_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """checkov's JSON report over the whole templates folder, computed once per test session.

    checkov takes several seconds per run, so it runs once; under pytest-xdist the workers share the
    result through a file next to their temp dirs, keyed by the templates' content, behind a file lock.
    """
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in TEMPLATE_PATHS)).hexdigest()[:16]
    # xdist workers have basetemps <session>/popen-gwN: share the session folder, never an older session's.
    basetemp = tmp_path_factory.getbasetemp()
    shared = basetemp.parent if os.environ.get("PYTEST_XDIST_WORKER") else basetemp
    result_file = shared / f"checkov-{digest}.json"
    with open(shared / "checkov.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result_file.exists():
            command = [
                _checkov_executable(),
                "--directory",
                str(TEMPLATES_DIR),
                "--framework",
                "cloudformation",
                "--output",
                "json",
                "--compact",
                # Offline: no guideline download from the Prisma Cloud API.
                "--skip-download",
            ]
            done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
            try:
                report = json.loads(done.stdout)
            except json.JSONDecodeError:
                pytest.fail(f"checkov did not print JSON (exit {done.returncode}): {done.stderr[-2000:]}")
            result_file.write_text(json.dumps(report))
    report = json.loads(result_file.read_text())
    # One framework -> one report object; several -> a list of them.
    return report[0] if isinstance(report, list) else report
