"""The AWS project-template pipeline (SDK 2.x shape) runs end to end via `python -m pipelines.local run`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from pipelines.local.client import LocalSageMaker

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PROJECT = FIXTURES.parents[1]
CODE = "s3://sagemaker-us-east-1-000000000000/AbalonePipeline/code"
PUTS = [
    f"{CODE}/2f4d6c0b3b1e8a9f7c5d4e3a2b1c0d9e/preprocess.py={FIXTURES / 'aws_seed/preprocess.py'}",
    f"{CODE}/8c1e0f6a9d2b4c7e5a3f1b0d9c8e7a6b/evaluate.py={FIXTURES / 'aws_seed/evaluate.py'}",
    "s3://sagemaker-servicecatalog-seedcode-us-east-1/dataset/abalone-dataset.csv="
    f"{FIXTURES / 'aws_seed/abalone-dataset.csv'}",
]


def _run(root: Path, *params: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "pipelines.local",
        "run",
        str(FIXTURES / "aws_seed_definition.json"),
        "--root",
        str(root),
    ]
    for put in PUTS:
        command += ["--put", put]
    for param in params:
        command += ["--param", param]
    return subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, timeout=240)


def test_aws_seed_pipeline_registers_the_model_or_fails_on_the_gate(tmp_path: Path) -> None:
    root = tmp_path / ".mlops"
    passed = _run(root, "ModelApprovalStatus=Approved")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    for step in (
        "PreprocessAbaloneData",
        "TrainAbaloneModel",
        "EvaluateAbaloneModel",
        "CheckMSEAbaloneEvaluation",
        "RegisterAbaloneModel-RegisterModel",
    ):
        assert f"{step}: Succeeded" in passed.stdout
    client = LocalSageMaker(root=root)
    packages = client.list_model_packages(ModelPackageGroupName="AbalonePackageGroup")[
        "ModelPackageSummaryList"
    ]
    assert [(p["ModelPackageVersion"], p["ModelApprovalStatus"]) for p in packages] == [(1, "Approved")]
    package = client.describe_model_package(ModelPackageName=packages[0]["ModelPackageArn"])
    report = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    assert report.startswith("s3://sagemaker-us-east-1-000000000000/AbalonePipeline/")
    assert '"mse"' in client.store.get_bytes(report).decode()
    model = package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    assert model.startswith("s3://sagemaker-us-east-1-000000000000/AbaloneTrain/") and client.store.exists(
        model
    )

    gated = _run(root, "MseThreshold=0.01")
    assert gated.returncode == 1, gated.stdout + gated.stderr
    assert "AbaloneMSEFail: Failed" in gated.stdout
    assert "reason: Execution failed due to MSE > 0.01" in gated.stdout
    assert "RegisterAbaloneModel" not in gated.stdout.split("Execution failed")[0].split("Failed:")[-1]


def test_cli_reports_bad_input_in_one_line(tmp_path: Path, capsys: Any) -> None:
    from pipelines.local.__main__ import main

    broken = tmp_path / "broken.json"
    broken.write_text('{"Steps": [{"Name": "A"}]}')
    root = ["--root", str(tmp_path / ".mlops")]
    assert main(["run", str(broken), *root]) == 2
    assert main(["run", str(tmp_path / "missing.json"), *root]) == 2
    assert main(["run", str(FIXTURES / "aws_seed_definition.json"), "--param", "Nope=1", *root]) == 2
    assert main(["run", str(FIXTURES / "aws_seed_definition.json"), "--param", "novalue", *root]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [
        f"error: {broken} is not a usable pipeline definition: every step in Steps needs a Name and a Type, "
        "got {'Name': 'A'}",
        f"error: cannot read definition {tmp_path / 'missing.json'}: No such file or directory",
        "error: Parameter 'Nope' is not defined in the pipeline; defined: ['InputDataUrl', "
        "'ModelApprovalStatus', 'MseThreshold', 'ProcessingInstanceCount', 'ProcessingInstanceType', "
        "'TrainingInstanceType']",
        "error: --param 'novalue' must look like NAME=VALUE",
    ]
