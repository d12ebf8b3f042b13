"""Helpers shared by the job-runner tests, and tests of the machinery all runners use (launch, sandbox)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator

from pipelines.local.errors import UnsupportedError
from pipelines.local.jobs.checkpoints import CheckpointSync
from pipelines.local.jobs.context import JobContext
from pipelines.local.jobs.launch import JobLog, JobWorker
from pipelines.local.jobs.metrics import MetricParser
from pipelines.local.jobs.sandbox import Sandbox
from pipelines.local.jobs.smenv import decode_hyperparameters, to_cmd_args
from pipelines.local.store import ObjectStore

SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
XGBOOST_IMAGE = "246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-xgboost:1.7-1"
ROLE = "arn:aws:iam::000000000000:role/test"
_SAGEMAKER = botocore.session.get_session().get_service_model("sagemaker")


def make_ctx(tmp_path: Path, name: str = "job", **kwargs: Any) -> JobContext:
    """A JobContext over a store in tmp_path with short grace/sync times for fast tests."""
    kwargs.setdefault("grace_seconds", 2.0)
    kwargs.setdefault("sync_interval", 0.1)
    return JobContext(
        ObjectStore(tmp_path / "s3"), tmp_path / "jobs" / name, tmp_path / "logs" / f"{name}.log", **kwargs
    )


def assert_shape(operation: str, response: dict[str, Any], *, drop: tuple[str, ...] = ()) -> None:
    """The response validates against the botocore output shape of `operation` (names, types, required)."""
    shape = _SAGEMAKER.operation_model(operation).output_shape
    body = {k: v for k, v in response.items() if k not in drop}
    report = ParamValidator().validate(body, shape)
    assert not report.has_errors(), report.generate_report()


def script(path: Path, text: str) -> Path:
    """Write a dedented script file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


# --- launch ----------------------------------------------------------------------------------------


def test_worker_streams_merged_output_and_exit_code(tmp_path: Path) -> None:
    log = JobLog(tmp_path / "log.txt", max_bytes=10_000)
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    result = JobWorker([sys.executable, "-c", code], os.environ, tmp_path, log).run()
    log.close()
    text = (tmp_path / "log.txt").read_text()
    assert result.exit_code == 3 and not result.killed and result.stop_reason is None
    assert "out\n" in text and "err\n" in text


def test_log_is_capped_with_a_visible_truncation_line(tmp_path: Path) -> None:
    log = JobLog(tmp_path / "log.txt", max_bytes=200)
    seen: list[str] = []
    code = "for i in range(100): print(f'line {i:03d}')"
    JobWorker([sys.executable, "-c", code], os.environ, tmp_path, log, on_line=seen.append).run()
    log.engine("after the job")
    log.close()
    text = (tmp_path / "log.txt").read_text()
    assert "line 000" in text and "line 099" not in text
    assert "log truncated" in text and text.rstrip().endswith("after the job")
    assert len(seen) == 100 and list(log.tail)[-1] == "line 099"  # listeners still see everything


def test_cancel_sends_sigterm_then_sigkill_after_grace(tmp_path: Path) -> None:
    log = JobLog(tmp_path / "log.txt", max_bytes=10_000)
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    cancel = threading.Event()
    worker = JobWorker([sys.executable, "-c", code], os.environ, tmp_path, log, grace_seconds=0.5)
    worker.start()
    time.sleep(0.5)
    cancel.set()
    started = time.monotonic()
    result = worker.wait(cancel=cancel)
    assert result.killed and result.stop_reason == "cancelled"
    assert result.exit_code == -signal.SIGKILL and time.monotonic() - started < 5


def test_deadline_stops_the_job(tmp_path: Path) -> None:
    log = JobLog(tmp_path / "log.txt", max_bytes=10_000)
    worker = JobWorker([sys.executable, "-c", "import time; time.sleep(60)"], os.environ, tmp_path, log)
    result = worker.run(deadline=time.monotonic() + 0.3)
    assert result.stop_reason == "MaxRuntimeExceeded" and result.exit_code == -signal.SIGTERM


# --- sandbox and shim --------------------------------------------------------------------------------


def test_sandbox_maps_only_paths_under_opt_ml(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    assert sandbox.local("/opt/ml/processing/input") == sandbox.base / "processing" / "input"
    for bad in ("/etc/passwd", "/opt/ml/../../etc", "/opt/mlx/a", "relative/path"):
        with pytest.raises(UnsupportedError, match="not under /opt/ml"):
            sandbox.local(bad)
    text = "cd /opt/ml/code && ls /opt/ml; echo /x/opt/ml /opt/mlx '/opt/ml/a b'"
    assert sandbox.rewrite(text) == (
        f"cd {sandbox.base}/code && ls {sandbox.base}; echo /x/opt/ml /opt/mlx '{sandbox.base}/a b'"
    )


def test_command_uses_this_interpreter_and_rewrites_args(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    sandbox.prepare()
    argv = sandbox.command(
        ["python3", "/opt/ml/processing/input/code/p.py", "--out", "/opt/ml/processing/out"]
    )
    assert argv == [
        sys.executable,
        f"{sandbox.base}/processing/input/code/p.py",
        "--out",
        f"{sandbox.base}/processing/out",
    ]


def test_shim_remaps_hard_coded_opt_ml_paths(tmp_path: Path) -> None:
    """A script using literal /opt/ml paths through open, os, pathlib and shutil runs unchanged."""
    sandbox = Sandbox(tmp_path)
    sandbox.prepare(["/opt/ml/processing/output"])
    code = script(
        tmp_path / "p.py",
        """
        import os, pathlib, shutil
        os.makedirs("/opt/ml/processing/output/sub", exist_ok=True)
        with open("/opt/ml/processing/output/x.txt", "w") as f:
            f.write("hello")
        out = "/opt/ml/processing/output"
        print(open(out + "/x.txt").read(), os.path.exists(out + "/x.txt"))
        pathlib.Path("/opt/ml/processing/output/sub/y.txt").write_text("y")
        shutil.copy("/opt/ml/processing/output/x.txt", "/opt/ml/processing/output/z.txt")
        os.rename("/opt/ml/processing/output/z.txt", "/opt/ml/processing/output/w.txt")
        print(sorted(os.listdir(out)), sorted(e.name for e in os.scandir(out)))
        print(os.environ["FROM_BASH"])
        """,
    )
    env = sandbox.environment({}, region="us-east-1")
    env["FROM_BASH"] = "/opt/ml/model"  # as if a wrapper script had exported a container path
    out = subprocess.run(
        [sys.executable, str(code)], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == [
        "hello True",
        "['sub', 'w.txt', 'x.txt'] ['sub', 'w.txt', 'x.txt']",
        f"{sandbox.base}/model",
    ]
    assert (sandbox.base / "processing" / "output" / "sub" / "y.txt").read_text() == "y"
    assert not Path("/opt/ml/processing/output/x.txt").exists()


def test_shell_script_rewrite_skips_package_installs(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path)
    sandbox.prepare()
    runproc = script(
        sandbox.base / "processing" / "input" / "entrypoint" / "runproc.sh",
        """
        #!/bin/bash
        cd /opt/ml/processing/input/code/
        if [[ -f 'requirements.txt' ]]; then
            pip uninstall --yes typing
            python3 /opt/ml/processing/input/code/install_requirements.py requirements.txt
        fi
        python3 run.py "$@"
        """,
    )
    sandbox.command(["/bin/bash", "/opt/ml/processing/input/entrypoint/runproc.sh"])
    text = runproc.read_text()
    assert "/opt/ml" not in text and f"cd {sandbox.base}/processing/input/code/" in text
    assert "pip uninstall" not in text and "install_requirements.py" not in text
    assert text.count("skipped locally") == 2 and 'python3 run.py "$@"' in text


# --- hyperparameters, metrics, checkpoints ----------------------------------------------------------


def test_to_cmd_args_follows_the_training_toolkit() -> None:
    decoded = decode_hyperparameters(
        {"eta": "0.1", "flag": "true", "name": "abc", "k": "3", "d": '{"b": 2, "a": 1}'}
    )
    assert decoded == {"eta": 0.1, "flag": True, "name": "abc", "k": 3, "d": {"b": 2, "a": 1}}
    assert to_cmd_args(decoded) == [
        "-d",
        "a=1,b=2",
        "--eta",
        "0.1",
        "--flag",
        "True",
        "-k",
        "3",
        "--name",
        "abc",
    ]


def test_metric_parser_keeps_last_value_and_matches_tabs_as_011() -> None:
    parser = MetricParser(
        [
            {"Name": "validation:auc", "Regex": r".*\[[0-9]+\].*#011validation-auc:(\S+)"},
            {"Name": "train:auc", "Regex": r".*\[[0-9]+\].*#011train-auc:(\S+)"},
            {"Name": "never", "Regex": "nothing-here:(\\S+)"},
        ]
    )
    parser.feed("[0]#011train-auc:0.80#011validation-auc:0.70")
    parser.feed("[1]\ttrain-auc:0.90\tvalidation-auc:0.75")  # a real tab, as XGBoost prints it
    parser.feed("validation-auc:0.99 without an iteration tag")
    parser.feed("[2]#011validation-auc:not-a-number")
    parser.feed("[3]#011train-auc:0.95#011validation-auc:0.8")  # greedy \S+ over "0.95#011validation..."
    final = {m["MetricName"]: m["Value"] for m in parser.final()}
    assert final == {"validation:auc": 0.8, "train:auc": 0.95}


def test_checkpoint_sync_uploads_stable_files_and_mirrors_deletes(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "s3")
    store.put_bytes("s3://bkt/ck/old.bin", b"old")
    sync = CheckpointSync(store, tmp_path / "local", "s3://bkt/ck")
    assert sync.restore() == ["old.bin"] and (tmp_path / "local" / "old.bin").read_bytes() == b"old"
    uploaded: list[str] = []
    sync.on_upload = uploaded.append
    (tmp_path / "local" / "new.bin").write_bytes(b"new")
    assert sync.sync() == []  # first sight: maybe still being written
    assert sync.sync() == ["new.bin"] and uploaded == ["new.bin"]
    (tmp_path / "local" / "old.bin").unlink()
    sync.sync()
    assert store.list("s3://bkt/ck/") == ["s3://bkt/ck/new.bin"]


def test_assert_shape_rejects_wrong_types_and_missing_members() -> None:
    """Guard for the helper the runner tests rely on."""
    with pytest.raises(AssertionError, match="ProcessingJobName"):
        assert_shape("DescribeProcessingJob", {"ProcessingJobName": 5})
