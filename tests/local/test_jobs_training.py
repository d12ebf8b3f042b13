"""run_training_job: script mode, the SM_* contract, metrics, artefacts, Spot, built-in XGBoost."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.local.jobs import run_training_job
from tests.local.test_jobs_support import ROLE, SKLEARN_IMAGE, XGBOOST_IMAGE, assert_shape, make_ctx

ENV_DUMP = """
import json, os, sys
from pathlib import Path
base = Path(os.environ["SAGEMAKER_BASE_DIR"])
config = {n: json.loads((base / "input/config" / n).read_text())
          for n in ("hyperparameters.json", "inputdataconfig.json", "resourceconfig.json")}
env = {k: v for k, v in os.environ.items() if k.startswith("SM_") or k in ("TRAINING_JOB_NAME",)}
dump = {"argv": sys.argv[1:], "env": env, "config": config, "cwd": os.getcwd(),
        "train": sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"]))}
Path(os.environ["SM_MODEL_DIR"], "dump.json").write_text(json.dumps(dump))
Path(os.environ["SM_OUTPUT_DATA_DIR"], "report.txt").write_text("extra output")
print("[0]#011train-loss:0.9#011validation-loss:0.8")
print("[1]\\ttrain-loss:0.5\\tvalidation-loss:0.4")
"""

CHECKPOINTED = """
import argparse, os, time
from pathlib import Path
parser = argparse.ArgumentParser()
parser.add_argument("--rounds", type=int)
args = parser.parse_args()
ckpt = Path("/opt/ml/checkpoints")  # hard-coded, as AWS samples do: the shim maps it
done = max([int(p.split("-")[1]) for p in os.listdir(ckpt)] or [-1]) + 1
print(f"resuming at round {done}", flush=True)
for i in range(done, args.rounds):
    time.sleep(0.25)
    with open(ckpt / f"ckpt-{i}", "w") as f:
        f.write(str(i))
    print(f"[{i}]#011validation-loss:{1 / (i + 1):.4f}", flush=True)
Path(os.environ["SM_MODEL_DIR"], "rounds.txt").write_text(str(len(os.listdir(ckpt))))
"""


def sourcedir(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def channel(name: str, uri: str, content_type: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ChannelName": name,
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}},
    }
    if content_type:
        out["ContentType"] = content_type
    return out


def request(
    name: str, image: str, hps: dict[str, str], channels: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    req = {
        "TrainingJobName": name,
        "HyperParameters": hps,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": "s3://bkt/models"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 120},
    }
    req.update(extra)
    return req


def script_mode(
    name: str, code: str, hps: dict[str, str] | None = None, **extra: Any
) -> tuple[dict[str, Any], bytes]:
    all_hps = {
        "sagemaker_program": '"train.py"',
        "sagemaker_submit_directory": '"s3://bkt/code/sourcedir.tar.gz"',
        "sagemaker_region": '"us-east-1"',
        **(hps or {}),
    }
    return request(
        name, SKLEARN_IMAGE, all_hps, [channel("train", "s3://bkt/data/train")], **extra
    ), sourcedir({"train.py": code})


def model_files(store: Any, uri: str) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(store.get_bytes(uri)), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_script_mode_contract_env_args_metrics_and_artefacts(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    ctx.store.put_bytes("s3://bkt/data/train/a.csv", b"1,2\n")
    req, code = script_mode(
        "train-env",
        ENV_DUMP,
        {"eta": "0.1", "max-depth": "3", "flag": "true", "_tuning_objective_metric": "validation:loss"},
    )
    req["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "validation:loss", "Regex": r"validation-loss:([-+0-9.eE]+)"},
        {"Name": "train:loss", "Regex": r"train-loss:([-+0-9.eE]+)"},
    ]
    ctx.store.put_bytes("s3://bkt/code/sourcedir.tar.gz", code)
    desc = run_training_job(req, ctx)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert_shape("DescribeTrainingJob", desc)
    assert desc["ModelArtifacts"]["S3ModelArtifacts"] == "s3://bkt/models/train-env/output/model.tar.gz"
    files = model_files(ctx.store, desc["ModelArtifacts"]["S3ModelArtifacts"])
    assert list(files) == ["dump.json"]  # the model folder's contents at the archive root
    assert model_files(ctx.store, "s3://bkt/models/train-env/output/output.tar.gz") == {
        "report.txt": b"extra output"
    }
    assert {m["MetricName"]: m["Value"] for m in desc["FinalMetricDataList"]} == {
        "validation:loss": 0.4,
        "train:loss": 0.5,
    }

    dump = json.loads(files["dump.json"])
    base = str((ctx.job_dir / "opt_ml").resolve())
    env = dump["env"]
    assert dump["argv"] == ["--eta", "0.1", "--flag", "True", "--max-depth", "3"]  # reserved HPs removed
    assert dump["cwd"] == f"{base}/code" and dump["train"] == ["a.csv"]
    assert json.loads(env["SM_HPS"]) == {"eta": 0.1, "flag": True, "max-depth": 3}
    assert env["SM_HP_ETA"] == "0.1" and env["SM_HP_MAX-DEPTH"] == "3" and env["SM_HP_FLAG"] == "true"
    assert env["SM_CHANNELS"] == '["train"]' and env["SM_CHANNEL_TRAIN"] == f"{base}/input/data/train"
    assert env["SM_MODEL_DIR"] == f"{base}/model" and env["SM_OUTPUT_DATA_DIR"] == f"{base}/output/data"
    assert int(env["SM_NUM_CPUS"]) >= 1 and env["SM_NUM_GPUS"] == "0"
    assert env["SM_CURRENT_HOST"] == "algo-1" and env["SM_HOSTS"] == '["algo-1"]'
    assert json.loads(env["SM_USER_ARGS"]) == dump["argv"] and env["SM_USER_ENTRY_POINT"] == "train.py"
    assert json.loads(env["SM_FRAMEWORK_PARAMS"]) == {}
    assert (
        env["SM_MODULE_DIR"] == "s3://bkt/code/sourcedir.tar.gz" and env["TRAINING_JOB_NAME"] == "train-env"
    )
    training_env = json.loads(env["SM_TRAINING_ENV"])
    assert (
        training_env["hyperparameters"] == json.loads(env["SM_HPS"])
        and training_env["job_name"] == "train-env"
    )
    assert training_env["channel_input_dirs"] == {"train": f"{base}/input/data/train"}
    assert dump["config"]["hyperparameters.json"]["eta"] == "0.1"  # all values strings, as in the request
    assert all(isinstance(v, str) for v in dump["config"]["hyperparameters.json"].values())
    assert dump["config"]["inputdataconfig.json"] == {
        "train": {
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        }
    }
    assert dump["config"]["resourceconfig.json"]["current_host"] == "algo-1"
    assert dump["config"]["resourceconfig.json"]["hosts"] == ["algo-1"]
    assert [t["Status"] for t in desc["SecondaryStatusTransitions"]] == [
        "Starting",
        "Downloading",
        "Training",
        "Uploading",
        "Completed",
    ]


def test_failure_file_and_exit_code(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    ctx.store.put_bytes("s3://bkt/data/train/a.csv", b"1\n")
    code = (
        "import os, sys\n"
        "open(os.environ['SAGEMAKER_BASE_DIR'] + '/output/failure', 'w').write('num_round must be >= 1')\n"
        "sys.exit(2)\n"
    )
    req, tarball = script_mode("train-fail", code)
    ctx.store.put_bytes("s3://bkt/code/sourcedir.tar.gz", tarball)
    desc = run_training_job(req, ctx)
    assert desc["TrainingJobStatus"] == "Failed" and desc["SecondaryStatus"] == "Failed"
    assert "num_round must be >= 1" in desc["FailureReason"] and "ModelArtifacts" not in desc


def test_max_runtime_stops_the_job(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, grace_seconds=0.5)
    ctx.store.put_bytes("s3://bkt/data/train/a.csv", b"1\n")
    req, tarball = script_mode(
        "train-slow", "import time\ntime.sleep(30)\n", StoppingCondition={"MaxRuntimeInSeconds": 1}
    )
    ctx.store.put_bytes("s3://bkt/code/sourcedir.tar.gz", tarball)
    desc = run_training_job(req, ctx)
    assert (desc["TrainingJobStatus"], desc["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")


def test_spot_interruptions_resume_from_checkpoints(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, spot_interruptions=2)
    ctx.store.put_bytes("s3://bkt/data/train/a.csv", b"1\n")
    req, tarball = script_mode(
        "train-spot",
        CHECKPOINTED,
        {"rounds": "6"},
        EnableManagedSpotTraining=True,
        CheckpointConfig={"S3Uri": "s3://bkt/checkpoints/train-spot"},
        StoppingCondition={"MaxRuntimeInSeconds": 60, "MaxWaitTimeInSeconds": 120},
    )
    req["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "validation:loss", "Regex": r"validation-loss:(\S+)"}
    ]
    ctx.store.put_bytes("s3://bkt/code/sourcedir.tar.gz", tarball)
    desc = run_training_job(req, ctx)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert [t["Status"] for t in desc["SecondaryStatusTransitions"]] == [
        "Starting",
        "Downloading",
        "Training",
        "Interrupted",
        "Restarting",
        "Training",
        "Interrupted",
        "Restarting",
        "Training",
        "Uploading",
        "Completed",
    ]
    log = ctx.log_path.read_text()
    assert log.count("resuming at round 0") == 1 and "resuming at round 1" in log
    # Same final state as an uninterrupted job: every round done once, all checkpoints in S3.
    assert model_files(ctx.store, desc["ModelArtifacts"]["S3ModelArtifacts"]) == {"rounds.txt": b"6"}
    assert len(ctx.store.list("s3://bkt/checkpoints/train-spot/")) == 6
    assert desc["FinalMetricDataList"][0]["Value"] == pytest.approx(1 / 6, abs=1e-3)
    assert desc["BillableTimeInSeconds"] < desc["TrainingTimeInSeconds"]
    assert_shape("DescribeTrainingJob", desc)


def test_checkpoints_in_s3_are_copied_in_at_start(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    ctx.store.put_bytes("s3://bkt/data/train/a.csv", b"1\n")
    for i in range(4):
        ctx.store.put_bytes(f"s3://bkt/ck/ckpt-{i}", str(i).encode())
    req, tarball = script_mode(
        "train-resume", CHECKPOINTED, {"rounds": "5"}, CheckpointConfig={"S3Uri": "s3://bkt/ck"}
    )
    ctx.store.put_bytes("s3://bkt/code/sourcedir.tar.gz", tarball)
    desc = run_training_job(req, ctx)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert "resuming at round 4" in ctx.log_path.read_text()
    assert "s3://bkt/ck/ckpt-4" in ctx.store.list("s3://bkt/ck/")
    assert desc["BillableTimeInSeconds"] == desc["TrainingTimeInSeconds"]  # no Spot, no saving


def _binary_data(rows: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((rows, 3))
    return x, (x[:, 0] + 0.1 * rng.random(rows) > 0.55).astype(int)


def test_builtin_xgboost_csv(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    x, y = _binary_data()
    csv_text = "\n".join(
        ",".join([str(label), *(f"{v:.4f}" for v in row)]) for label, row in zip(y, x, strict=True)
    )
    ctx.store.put_bytes("s3://bkt/xgb/train/train.csv", csv_text.encode())
    ctx.store.put_bytes("s3://bkt/xgb/validation/val.csv", csv_text.encode())
    hps = {
        "num_round": "4",
        "objective": "binary:logistic",
        "eval_metric": "auc",
        "max_depth": "2",
        "eta": "0.3",
    }
    req = request(
        "xgb-csv",
        XGBOOST_IMAGE,
        hps,
        [
            channel("train", "s3://bkt/xgb/train", "text/csv"),
            channel("validation", "s3://bkt/xgb/validation", "text/csv"),
        ],
        CheckpointConfig={"S3Uri": "s3://bkt/xgb/ck"},
    )
    desc = run_training_job(req, ctx)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    log = ctx.log_path.read_text()
    assert "[3]#011train-auc:" in log and "#011validation-auc:" in log
    metrics = {m["MetricName"] for m in desc["FinalMetricDataList"]}
    assert {"validation:auc", "train:auc"} <= metrics  # the algorithm's own metric definitions
    assert list(model_files(ctx.store, desc["ModelArtifacts"]["S3ModelArtifacts"])) == ["xgboost-model"]
    assert ctx.store.list("s3://bkt/xgb/ck/")[-1] == "s3://bkt/xgb/ck/xgboost-checkpoint.3"


def test_builtin_xgboost_libsvm_default_and_unknown_hyperparameter(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, name="libsvm")
    x, y = _binary_data(80, seed=1)
    lines = [
        f"{label} " + " ".join(f"{j}:{v:.4f}" for j, v in enumerate(row))
        for label, row in zip(y, x, strict=True)
    ]
    ctx.store.put_bytes("s3://bkt/svm/train/data.libsvm", "\n".join(lines).encode())
    hps = {"num_round": "3", "objective": "binary:logistic", "eval_metric": "logloss"}
    desc = run_training_job(
        request("xgb-svm", XGBOOST_IMAGE, hps, [channel("train", "s3://bkt/svm/train")]), ctx
    )
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    assert "[2]#011train-logloss:" in ctx.log_path.read_text()

    bad_ctx = make_ctx(tmp_path, name="bad-hp")
    bad = {**hps, "learning_rate_typo": "0.1"}
    desc = run_training_job(
        request("xgb-bad", XGBOOST_IMAGE, bad, [channel("train", "s3://bkt/svm/train")]), bad_ctx
    )
    assert desc["TrainingJobStatus"] == "Failed" and "learning_rate_typo" in desc["FailureReason"]
    missing = {"objective": "binary:logistic"}
    desc = run_training_job(
        request("xgb-nonum", XGBOOST_IMAGE, missing, [channel("train", "s3://bkt/svm/train")]),
        make_ctx(tmp_path, name="no-num"),
    )
    assert desc["TrainingJobStatus"] == "Failed" and "num_round" in desc["FailureReason"]


SM_TRAIN_SH = """#!/bin/bash
set -e
cat /opt/ml/input/config/resourceconfig.json > /dev/null
export SM_MODEL_DIR=/opt/ml/model
cd /opt/ml/input/data/code
if [ -f requirements.txt ]; then
    $SM_PYTHON_CMD /opt/ml/input/data/sm_drivers/scripts/install_requirements.py requirements.txt
fi
python3 train.py --rounds 2
"""


def test_container_entrypoint_mode_like_model_trainer(tmp_path: Path) -> None:
    """SDK v3 ModelTrainer: `bash -c "chmod +x .../sm_train.sh && .../sm_train.sh"`, code/driver channels."""
    ctx = make_ctx(tmp_path)
    ctx.store.put_bytes("s3://bkt/drivers/sm_train.sh", SM_TRAIN_SH.encode())
    train = (
        "import os, sys\nopen(os.environ['SM_MODEL_DIR'] + '/args.txt', 'w').write(' '.join(sys.argv[1:]))\n"
    )
    ctx.store.put_bytes("s3://bkt/code/train.py", train.encode())
    ctx.store.put_bytes("s3://bkt/code/requirements.txt", b"never-installed==1\n")
    channels = [channel("code", "s3://bkt/code"), channel("sm_drivers", "s3://bkt/drivers")]
    req = request("train-command", SKLEARN_IMAGE, {"rounds": "2"}, channels)
    driver = "/opt/ml/input/data/sm_drivers/sm_train.sh"
    req["AlgorithmSpecification"]["ContainerEntrypoint"] = ["/bin/bash"]
    req["AlgorithmSpecification"]["ContainerArguments"] = ["-c", f"chmod +x {driver} && {driver}"]
    desc = run_training_job(req, ctx)
    assert desc["TrainingJobStatus"] == "Completed", desc.get("FailureReason")
    # The exported container path reached Python as the sandbox path (shim), so the model was written.
    assert model_files(ctx.store, desc["ModelArtifacts"]["S3ModelArtifacts"]) == {"args.txt": b"--rounds 2"}
    assert "skipped locally" in ctx.log_path.read_text()
