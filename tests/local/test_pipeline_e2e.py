"""The project's own pipeline end to end on the local engine, exactly as `make run` runs it (small data)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest

from pipelines import run
from pipelines.follow import list_steps
from pipelines.local.client import LocalSageMaker

SMALL = [
    "--param", "data.builtin_rows=2000",
    "--param", "tuning.max_jobs=2",
    "--param", "tuning.max_parallel=2",
    "--param", "training.hyperparameters={num_round: 30, max_depth: 4, eta: 0.3, early_stopping_rounds: 10}",
    "--param", "evaluation.threshold=0.6",
    "--param", "deploy.endpoint_name=e2e-test",
]  # fmt: skip


def invoke(url: str, body: str) -> float:
    """Score of one CSV record through the SageMaker runtime API, as boto3 sends it."""
    runtime = boto3.client(
        "sagemaker-runtime", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id="x", aws_secret_access_key="x",
    )  # fmt: skip
    response = runtime.invoke_endpoint(EndpointName="e2e-test", Body=body, ContentType="text/csv")
    return json.loads(response["Body"].read())["predictions"][0]["score"]


def steps_by_name(client: Any, arn: str) -> dict[str, dict[str, Any]]:
    return {s["StepName"]: s for s in list_steps(client, arn)}


@pytest.fixture
def root(tmp_path: Path) -> Any:
    root = tmp_path / ".mlops"
    yield root
    client = LocalSageMaker(root=root)
    for endpoint in client.list_endpoints()["Endpoints"]:
        client.delete_endpoint(EndpointName=endpoint["EndpointName"])


def test_run_registers_deploys_then_reruns_from_cache_and_gates(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1. Cold run: every step, a registered version 1, a serving endpoint and a copy-paste invoke command.
    assert run.main(["--root", str(root), *SMALL]) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "model-package/pdm-mlops/1 (version 1, Approved)" in out
    assert "Endpoint: e2e-test (InService)" in out
    url = re.search(r"Endpoint URL: (http://127\.0\.0\.1:\d+)", out).group(1)
    record = re.search(r"--data '([^']+)'", out).group(1)
    score = invoke(url, record)
    assert 0.0 <= score <= 1.0
    report = Path(re.search(r"Evaluation report: (\S+)", out).group(1))
    assert report.is_file() and "auc" in report.read_text()
    client = LocalSageMaker(root=root)
    first = client.list_pipeline_executions(PipelineName="pdm-mlops")["PipelineExecutionSummaries"][0]
    cold = steps_by_name(client, first["PipelineExecutionArn"])
    assert all(s["StepStatus"] == "Succeeded" for s in cold.values())
    assert set(cold) == {"Preprocess", "Train", "Tune", "Evaluate", "Gate", "Register", "DeployGate",
                         "CreateModel", "EndpointConfig", "Endpoint"}  # fmt: skip
    assert not any(s.get("CacheHitResult") for s in cold.values())

    # 2. Re-run with batch scoring added: jobs come from the cache; evaluation re-runs (the champion is now
    #    version 1), version 2 is registered, the endpoint is updated in place (same model: no restart) and
    #    the optional BatchTransform step scores a prefix of raw records with the new model.
    records = "\n".join([record] * 25) + "\n"
    LocalSageMaker(root=root).store.put_bytes("s3://pdm-mlops-local/scoring/batch.csv", records.encode())
    batch = ["--param", "batch.enabled=true", "--param", "batch.input_uri=s3://pdm-mlops-local/scoring/"]
    assert run.main(["--root", str(root), *SMALL, *batch]) == 0
    out = capsys.readouterr().out
    assert "Champion: s3://" in out and "(version 2, Approved)" in out
    executions = client.list_pipeline_executions(PipelineName="pdm-mlops")["PipelineExecutionSummaries"]
    warm = steps_by_name(client, executions[0]["PipelineExecutionArn"])
    for name in ("Preprocess", "Train", "Tune"):
        assert warm[name]["CacheHitResult"]["SourcePipelineExecutionArn"] == first["PipelineExecutionArn"]
    assert not warm["Evaluate"].get("CacheHitResult")
    evaluation = json.loads(
        Path(re.search(r"Evaluation report: (\S+)", out).group(1)).with_name("evaluation.json").read_text()
    )
    assert evaluation["champion"]["present"] is True
    assert evaluation["gate"]["shortfall"] == pytest.approx(0.0, abs=1e-9)  # same model as the champion
    # The cached model is byte-identical: the update moves the record but keeps the running server.
    assert re.search(r"Endpoint URL: (http://127\.0\.0\.1:\d+)", out).group(1) == url
    assert invoke(url, record) == pytest.approx(score)
    endpoint = client.describe_endpoint(EndpointName="e2e-test")
    execution_id = executions[0]["PipelineExecutionArn"].rsplit("/", 1)[-1]
    assert endpoint["EndpointConfigName"].endswith(execution_id)
    assert warm["BatchTransform"]["StepStatus"] == "Succeeded"
    scored = (
        client.store.get_bytes(
            f"s3://pdm-mlops-local/pdm-mlops/executions/{execution_id}/batch/batch.csv.out"
        )
        .decode()
        .splitlines()
    )
    assert len(scored) == 25 and all(line.startswith(record + ",") for line in scored)
    assert float(scored[0].rsplit(",", 1)[1]) == pytest.approx(score)

    # 3. A threshold the model cannot meet: the gate fails the execution with the numbers in the message.
    assert run.main(["--root", str(root), *SMALL, "--param", "GateThreshold=0.9999"]) == 1
    out = capsys.readouterr().out
    assert "Model gate failed: auc =" in out and "0.9999" in out and "champion auc" in out
    gated = client.list_pipeline_executions(PipelineName="pdm-mlops")["PipelineExecutionSummaries"][0]
    assert gated["PipelineExecutionStatus"] == "Failed"
    packages = client.list_model_packages(ModelPackageGroupName="pdm-mlops")["ModelPackageSummaryList"]
    assert len(packages) == 2  # nothing registered by the gated run


def test_spot_interruption_resumes_training_from_checkpoints(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Enough rounds (no early stopping) that a checkpoint is synced while the job still trains.
    args = ["--root", str(root), "--spot-interruptions", "1", *SMALL, "--param", "tuning.enabled=false",
            "--param", "deploy.enabled=false", "--param", "training.checkpoint_every=10",
            "--param", "training.hyperparameters={num_round: 600, max_depth: 6, eta: 0.05}"]  # fmt: skip
    assert run.main(args) == 0, capsys.readouterr()
    client = LocalSageMaker(root=root)
    arn = client.list_pipeline_executions(PipelineName="pdm-mlops")["PipelineExecutionSummaries"][0][
        "PipelineExecutionArn"
    ]
    train = steps_by_name(client, arn)["Train"]
    job = client.describe_training_job(
        TrainingJobName=train["Metadata"]["TrainingJob"]["Arn"].rsplit("/", 1)[-1]
    )
    statuses = [t["Status"] for t in job["SecondaryStatusTransitions"]]
    assert "Interrupted" in statuses and "Restarting" in statuses
    assert statuses.index("Restarting") > statuses.index("Interrupted")
    assert job["TrainingJobStatus"] == "Completed"
    assert job["BillableTimeInSeconds"] < job["TrainingTimeInSeconds"]
    log = (root / "logs" / "TrainingJobs" / f"{job['TrainingJobName']}.log").read_text()
    assert re.search(r"rounds from round [1-9]\d*", log), "the restarted job must resume, not start over"
