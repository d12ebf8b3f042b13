"""run_processing_job: inputs, the container command in a sandbox, outputs, failures, limits."""

from __future__ import annotations

import io
import json
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

from pipelines.local.errors import UnsupportedError
from pipelines.local.jobs import run_processing_job
from tests.local.test_jobs_support import ROLE, SKLEARN_IMAGE, assert_shape, make_ctx

CODE = "/opt/ml/processing/input/code"


def request(name: str, entrypoint: list[str], **extra: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "ProcessingJobName": name,
        "ProcessingResources": {
            "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5}
        },
        "AppSpecification": {"ImageUri": SKLEARN_IMAGE, "ContainerEntrypoint": entrypoint},
        "RoleArn": ROLE,
        "ProcessingInputs": [
            {
                "InputName": "data",
                "S3Input": {
                    "S3Uri": "s3://bkt/in",
                    "LocalPath": "/opt/ml/processing/input/data",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                },
            },
            {
                "InputName": "code",
                "S3Input": {
                    "S3Uri": "s3://bkt/code/",
                    "LocalPath": CODE,
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                },
            },
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "result",
                    "S3Output": {
                        "S3Uri": "s3://bkt/out/result",
                        "LocalPath": "/opt/ml/processing/output",
                        "S3UploadMode": "EndOfJob",
                    },
                },
            ]
        },
    }
    req.update(extra)
    return req


def test_script_with_hard_coded_paths_runs_and_outputs_are_uploaded(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    ctx.store.put_bytes("s3://bkt/in/rows.csv", b"a,b\n1,2\n")
    ctx.store.put_bytes(
        "s3://bkt/code/prep.py",
        b"""
import json, os, sys
rows = open('/opt/ml/processing/input/data/rows.csv').read().splitlines()
os.makedirs('/opt/ml/processing/output/nested', exist_ok=True)
with open('/opt/ml/processing/output/x.txt', 'w') as f:
    f.write(str(len(rows)))
config = json.load(open('/opt/ml/config/processingjobconfig.json'))
with open('/opt/ml/processing/output/nested/info.json', 'w') as f:
    json.dump({"x": open('/opt/ml/processing/output/x.txt').read(), "argv": sys.argv[1:],
               "env": os.environ["MY_SETTING"], "job": config["ProcessingJobName"],
               "base": os.environ["SAGEMAKER_BASE_DIR"]}, f)
""",
    )
    req = request(
        "proc-ok",
        ["python3", f"{CODE}/prep.py"],
        Environment={"MY_SETTING": "on"},
    )
    req["AppSpecification"]["ContainerArguments"] = [
        "--input",
        "/opt/ml/processing/input/data",
        "--plain",
        "x",
    ]
    desc = run_processing_job(req, ctx)
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    assert_shape("DescribeProcessingJob", desc)
    assert ctx.store.list("s3://bkt/out/result/") == [
        "s3://bkt/out/result/nested/info.json",
        "s3://bkt/out/result/x.txt",
    ]
    info = json.loads(ctx.store.get_bytes("s3://bkt/out/result/nested/info.json"))
    base = str((ctx.job_dir / "opt_ml").resolve())
    assert info == {
        "x": "2",
        "argv": ["--input", f"{base}/processing/input/data", "--plain", "x"],
        "env": "on",
        "job": "proc-ok",
        "base": base,
    }
    assert desc["ProcessingStartTime"] <= desc["ProcessingEndTime"]


def _sourcedir(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


RUNPROC = """#!/bin/bash
set -e
cd /opt/ml/processing/input/code/
tar -xzf sourcedir.tar.gz
if [[ -f 'requirements.txt' ]]; then
    pip uninstall --yes typing
    python3 /opt/ml/processing/input/code/install_requirements.py requirements.txt
fi
python3 run.py "$@"
"""


def test_framework_processor_runproc_pattern(tmp_path: Path) -> None:
    """The SDK's FrameworkProcessor: bash runproc.sh untars sourcedir.tar.gz and runs the script with args."""
    ctx = make_ctx(tmp_path)
    ctx.store.put_bytes("s3://bkt/in/rows.csv", b"1\n")
    ctx.store.put_bytes(
        "s3://bkt/code/sourcedir.tar.gz",
        _sourcedir(
            {
                "run.py": "import sys, helper\n"
                "open('/opt/ml/processing/output/out.txt', 'w').write(helper.tag + ' '.join(sys.argv[1:]))\n",
                "helper.py": "tag = 'helper:'",
                "requirements.txt": "some-package-we-never-install==1.0\n",
            }
        ),
    )
    ctx.store.put_bytes("s3://bkt/entry/runproc.sh", RUNPROC.encode())
    req = request("proc-runproc", ["/bin/bash", "/opt/ml/processing/input/entrypoint/runproc.sh"])
    req["AppSpecification"]["ContainerArguments"] = ["--split", "0.7"]
    req["ProcessingInputs"].append(
        {
            "InputName": "entrypoint",
            "S3Input": {
                "S3Uri": "s3://bkt/entry/runproc.sh",
                "LocalPath": "/opt/ml/processing/input/entrypoint",
                "S3DataType": "S3Prefix",
                "S3InputMode": "File",
            },
        }
    )
    desc = run_processing_job(req, ctx)
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    assert ctx.store.get_bytes("s3://bkt/out/result/out.txt") == b"helper:--split 0.7"
    assert "skipped locally" in ctx.log_path.read_text()


def test_failure_file_becomes_failure_reason(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    ctx.store.put_bytes("s3://bkt/in/rows.csv", b"1\n")
    ctx.store.put_bytes(
        "s3://bkt/code/bad.py",
        b"""
import os, sys
print("about to fail")
base = os.environ["SAGEMAKER_BASE_DIR"]
os.makedirs(base + "/output", exist_ok=True)
open(base + "/output/failure", "w").write("missing column 'torque_nm' in rows 1, 2")
sys.exit(2)
""",
    )
    desc = run_processing_job(request("proc-fail", ["python3", f"{CODE}/bad.py"]), ctx)
    assert desc["ProcessingJobStatus"] == "Failed"
    assert (
        "missing column 'torque_nm' in rows 1, 2" in desc["FailureReason"]
        and "exit code 2" in desc["FailureReason"]
    )
    assert ctx.store.list("s3://bkt/out/") == []  # no upload after a failure
    assert_shape("DescribeProcessingJob", desc)


def test_without_failure_file_the_last_log_lines_explain(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    ctx.store.put_bytes("s3://bkt/in/rows.csv", b"1\n")
    ctx.store.put_bytes("s3://bkt/code/crash.py", b"print('step one')\nraise ValueError('bad value 42')\n")
    desc = run_processing_job(request("proc-crash", ["python3", f"{CODE}/crash.py"]), ctx)
    assert desc["ProcessingJobStatus"] == "Failed"
    assert "ValueError: bad value 42" in desc["FailureReason"] and "exit code 1" in desc["FailureReason"]


def test_missing_input_fails_the_job_before_running(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    ctx.store.put_bytes("s3://bkt/code/p.py", b"raise SystemExit('must not run')")
    desc = run_processing_job(request("proc-noinput", ["python3", f"{CODE}/p.py"]), ctx)
    assert desc["ProcessingJobStatus"] == "Failed" and "s3://bkt/in" in desc["FailureReason"]
    assert "must not run" not in ctx.log_path.read_text()


def test_manifest_input(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    ctx.store.put_bytes("s3://bkt/raw/2024/a.csv", b"a")
    ctx.store.put_bytes("s3://bkt/raw/2024/b.csv", b"b")
    ctx.store.put_bytes("s3://bkt/raw/2024/c.csv", b"not listed")
    ctx.store.put_bytes(
        "s3://bkt/in/m.json", json.dumps([{"prefix": "s3://bkt/raw/"}, "2024/a.csv", "2024/b.csv"]).encode()
    )
    ctx.store.put_bytes(
        "s3://bkt/code/ls.py",
        b"import os\nfor r, d, f in os.walk('/opt/ml/processing/input/m'):\n    print(sorted(f))\n",
    )
    req = request("proc-manifest", ["python3", f"{CODE}/ls.py"])
    req["ProcessingInputs"][0] = {
        "InputName": "m",
        "S3Input": {
            "S3Uri": "s3://bkt/in/m.json",
            "LocalPath": "/opt/ml/processing/input/m",
            "S3DataType": "ManifestFile",
            "S3InputMode": "File",
        },
    }
    desc = run_processing_job(req, ctx)
    assert desc["ProcessingJobStatus"] == "Completed", desc.get("FailureReason")
    assert "['a.csv', 'b.csv']" in ctx.log_path.read_text()


def test_max_runtime_is_enforced(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, grace_seconds=0.5)
    ctx.store.put_bytes("s3://bkt/in/rows.csv", b"1\n")
    ctx.store.put_bytes("s3://bkt/code/slow.py", b"import time\ntime.sleep(30)\n")
    req = request("proc-slow", ["python3", f"{CODE}/slow.py"], StoppingCondition={"MaxRuntimeInSeconds": 1})
    desc = run_processing_job(req, ctx)
    assert desc["ProcessingJobStatus"] == "Failed" and "MaxRuntimeExceeded" in desc["FailureReason"]


def test_cancel_stops_the_job(tmp_path: Path) -> None:
    cancel = threading.Event()
    ctx = make_ctx(tmp_path, cancel=cancel, grace_seconds=0.5)
    ctx.store.put_bytes("s3://bkt/in/rows.csv", b"1\n")
    ctx.store.put_bytes(
        "s3://bkt/code/slow.py", b"import time\nprint('started', flush=True)\ntime.sleep(30)\n"
    )
    threading.Timer(0.5, cancel.set).start()
    desc = run_processing_job(request("proc-cancel", ["python3", f"{CODE}/slow.py"]), ctx)
    assert desc["ProcessingJobStatus"] == "Stopped" and "FailureReason" not in desc


def test_unsupported_requests_raise_naming_the_field(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    bad_image = request("p", ["python3", "x.py"])
    bad_image["AppSpecification"]["ImageUri"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:1"
    with pytest.raises(UnsupportedError, match="mine:1"):
        run_processing_job(bad_image, ctx)
    pipe = request("p", ["python3", "x.py"])
    pipe["ProcessingInputs"][0]["S3Input"]["S3InputMode"] = "Pipe"
    with pytest.raises(UnsupportedError, match=r"ProcessingInputs\['data'\]\.S3InputMode"):
        run_processing_job(pipe, ctx)
    with pytest.raises(UnsupportedError, match="ContainerEntrypoint"):
        run_processing_job(request("p", []), ctx)
