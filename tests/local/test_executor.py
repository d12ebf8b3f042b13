"""Executor: every step type, branches, parallelism, reference errors and the cache."""

from __future__ import annotations

import io
import json
import tarfile
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from pipelines.local.backend_steps import Runners
from tests.local.conftest import (
    ROLE,
    SKLEARN_IMAGE,
    FakeRunners,
    create,
    processing_step,
    put_text,
    start_inline,
    steps_of,
)

PARAMETERS = [
    {"Name": "Threshold", "Type": "Float", "DefaultValue": 0.5},
    {"Name": "Group", "Type": "String", "DefaultValue": "pdm-group"},
    {"Name": "Mode", "Type": "String", "DefaultValue": "full"},
    {"Name": "Rounds", "Type": "Integer", "DefaultValue": 3},
]
TRAIN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
PREP_TRAIN = {"Get": "Steps.Prep.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"}
PREP_REPORT = {"Get": "Steps.Prep.ProcessingOutputConfig.Outputs['report'].S3Output.S3Uri"}


def _channel(uri: Any) -> list[dict[str, Any]]:
    return [
        {
            "ChannelName": "train",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}},
            "ContentType": "text/csv",
        }
    ]


def all_steps(lambda_file: Path) -> list[dict[str, Any]]:
    """A definition using every step type the engine supports, wired the way the SDK compiles them."""
    prep = processing_step(
        "Prep",
        "s3://bucket/code/prep.py",
        outputs=["train", "report"],
        PropertyFiles=[{"PropertyFileName": "Report", "OutputName": "report", "FilePath": "report.json"}],
    )
    train = {
        "Name": "Train",
        "Type": "Training",
        "Arguments": {
            "AlgorithmSpecification": {"TrainingImage": TRAIN_IMAGE, "TrainingInputMode": "File"},
            "RoleArn": ROLE,
            "OutputDataConfig": {"S3OutputPath": "s3://bucket/models"},
            "ResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
            "HyperParameters": {
                "num_round": {"Std:Join": {"On": "", "Values": [{"Get": "Parameters.Rounds"}]}}
            },
            "InputDataConfig": _channel(PREP_TRAIN),
        },
    }
    tune = {
        "Name": "Tune",
        "Type": "Tuning",
        "Arguments": {
            "HyperParameterTuningJobConfig": {
                "Strategy": "Bayesian",
                "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:auc"},
                "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1},
                "ParameterRanges": {
                    "ContinuousParameterRanges": [{"Name": "eta", "MinValue": "0.01", "MaxValue": "0.1"}]
                },
            },
            "TrainingJobDefinition": {
                "AlgorithmSpecification": {"TrainingImage": TRAIN_IMAGE, "TrainingInputMode": "File"},
                "RoleArn": ROLE,
                "OutputDataConfig": {"S3OutputPath": "s3://bucket/tuning"},
                "ResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5},
                "StoppingCondition": {"MaxRuntimeInSeconds": 600},
                "StaticHyperParameters": {"num_round": "3"},
                "InputDataConfig": _channel(PREP_TRAIN),
            },
        },
    }
    best_model = {
        "Std:Join": {
            "On": "/",
            "Values": [
                "s3://bucket/tuning",
                {"Get": "Steps.Tune.TrainingJobSummaries[0].TrainingJobName"},
                "output/model.tar.gz",
            ],
        }
    }
    register = {
        "Name": "Register",
        "Type": "RegisterModel",
        "Arguments": {
            "ModelPackageGroupName": {"Get": "Parameters.Group"},
            "ModelApprovalStatus": "Approved",
            "InferenceSpecification": {
                "Containers": [{"Image": TRAIN_IMAGE, "ModelDataUrl": best_model}],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["text/csv"],
            },
            "ModelMetrics": {
                "ModelQuality": {
                    "Statistics": {
                        "ContentType": "application/json",
                        "S3Uri": {
                            "Std:Join": {
                                "On": "/",
                                "Values": [
                                    PREP_REPORT,
                                    "report.json",
                                ],
                            }
                        },
                    }
                }
            },
        },
    }
    model = {
        "Name": "CreateModel",
        "Type": "Model",
        "Arguments": {
            "ExecutionRoleArn": ROLE,
            "PrimaryContainer": {
                "Image": TRAIN_IMAGE,
                "ModelDataUrl": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"},
            },
        },
    }
    batch = {
        "Name": "Batch",
        "Type": "Transform",
        "Arguments": {
            "ModelName": {"Get": "Steps.CreateModel.ModelName"},
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": PREP_TRAIN}},
                "ContentType": "text/csv",
            },
            "TransformOutput": {"S3OutputPath": "s3://bucket/batch"},
            "TransformResources": {"InstanceCount": 1, "InstanceType": "ml.m5.large"},
        },
    }
    config_name = {"Std:Join": {"On": "-", "Values": ["cfg", {"Get": "Execution.PipelineExecutionId"}]}}
    ep_config = {
        "Name": "EPConfig",
        "Type": "EndpointConfig",
        "Arguments": {
            "EndpointConfigName": config_name,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": {"Get": "Steps.CreateModel.ModelName"},
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.m5.large",
                }
            ],
            "DataCaptureConfig": {
                "EnableCapture": True,
                "InitialSamplingPercentage": 100,
                "DestinationS3Uri": "s3://bucket/capture",
                "CaptureOptions": [{"CaptureMode": "InputAndOutput"}],
            },
        },
    }
    endpoint = {
        "Name": "EP",
        "Type": "Endpoint",
        "Arguments": {
            "EndpointName": "pdm-test",
            "EndpointConfigName": {"Get": "Steps.EPConfig.EndpointConfigName"},
        },
    }
    notify = {
        "Name": "Notify",
        "Type": "Lambda",
        "FunctionArn": "arn:aws:lambda:us-east-1:000000000000:function:notify",
        "OutputParameters": [
            {"OutputName": "message", "OutputType": "String"},
            {"OutputName": "count", "OutputType": "Integer"},
        ],
        "Arguments": {"package": {"Get": "Steps.Register.ModelPackageArn"}},
    }
    after = {
        "Name": "AfterLambda",
        "Type": "Fail",
        "DependsOn": ["Notify"],
        "Arguments": {"ErrorMessage": "never"},
    }
    gate_after = {
        "Name": "LambdaGate",
        "Type": "Condition",
        "Arguments": {
            "Conditions": [
                {
                    "Type": "Equals",
                    "LeftValue": {"Get": "Steps.Notify.OutputParameters['count']"},
                    "RightValue": 2,
                }
            ],
            "IfSteps": [],
            "ElseSteps": [after],
        },
    }
    reject = {
        "Name": "Reject",
        "Type": "Fail",
        "Arguments": {
            "ErrorMessage": {
                "Std:Join": {
                    "On": " ",
                    "Values": [
                        "report value",
                        {
                            "Std:JsonGet": {
                                "PropertyFile": {"Get": "Steps.Prep.PropertyFiles.Report"},
                                "Path": "value",
                            }
                        },
                        "below",
                        {"Get": "Parameters.Threshold"},
                    ],
                }
            }
        },
    }
    gate = {
        "Name": "Gate",
        "Type": "Condition",
        "Arguments": {
            "Conditions": [
                {
                    "Type": "GreaterThanOrEqualTo",
                    "LeftValue": {
                        "Std:JsonGet": {
                            "PropertyFile": {"Get": "Steps.Prep.PropertyFiles.Report"},
                            "Path": "value",
                        }
                    },
                    "RightValue": {"Get": "Parameters.Threshold"},
                },
                {
                    "Type": "Or",
                    "Conditions": [
                        {
                            "Type": "Not",
                            "Condition": {
                                "Type": "Equals",
                                "LeftValue": {"Get": "Parameters.Mode"},
                                "RightValue": "skip",
                            },
                        },
                        {"Type": "In", "QueryValue": {"Get": "Parameters.Mode"}, "Values": ["a", "b"]},
                    ],
                },
                {
                    "Type": "GreaterThan",
                    "LeftValue": {"Get": "Steps.Train.FinalMetricDataList['validation:auc'].Value"},
                    "RightValue": 0.5,
                },
            ],
            "IfSteps": [register, model, batch, ep_config, endpoint, notify, gate_after],
            "ElseSteps": [reject],
        },
    }
    lambda_file.write_text(
        textwrap.dedent(
            """
        def handler(event, context):
            return {"message": "registered " + event["package"], "count": 2}
        """
        )
    )
    return [prep, train, tune, gate]


@pytest.fixture
def every(client: Any, tmp_path: Path) -> Path:
    handler = tmp_path / "notify_handler.py"
    create(client, "every", all_steps(handler), PARAMETERS)
    client._backend.options.lambda_handlers = {"notify": f"{handler}:handler"}
    return handler


def test_every_step_type_runs_with_sagemaker_semantics(client: Any, fake: FakeRunners, every: Path) -> None:
    arn = start_inline(client, "every", fake.runners())
    described = client.describe_pipeline_execution(PipelineExecutionArn=arn)
    steps = steps_of(client, arn)
    assert described["PipelineExecutionStatus"] == "Succeeded", {
        n: (s["StepStatus"], s.get("FailureReason")) for n, s in steps.items()
    }
    expected = {
        "Prep": "ProcessingJob",
        "Train": "TrainingJob",
        "Tune": "TuningJob",
        "Gate": "Condition",
        "Register": "RegisterModel",
        "CreateModel": "Model",
        "Batch": "TransformJob",
        "EPConfig": "EndpointConfig",
        "EP": "Endpoint",
        "Notify": "Lambda",
        "LambdaGate": "Condition",
    }
    assert set(steps) == set(expected)  # Reject and AfterLambda sit in branches not taken: not listed
    for name, key in expected.items():
        assert steps[name]["StepStatus"] == "Succeeded"
        assert list(steps[name]["Metadata"]) == [key]
    assert steps["Gate"]["Metadata"]["Condition"]["Outcome"] == "True"
    package_arn = steps["Register"]["Metadata"]["RegisterModel"]["Arn"]
    assert package_arn.endswith("model-package/pdm-group/1")
    assert steps["Notify"]["Metadata"]["Lambda"]["OutputParameters"] == [
        {"Name": "message", "Value": f"registered {package_arn}"},
        {"Name": "count", "Value": "2"},
    ]
    package = client.describe_model_package(ModelPackageName=package_arn)
    tune_best = client.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=steps["Tune"]["Metadata"]["TuningJob"]["Arn"].rsplit("/", 1)[-1],
        SortBy="FinalObjectiveMetricValue",
        SortOrder="Descending",
    )["TrainingJobSummaries"][0]["TrainingJobName"]
    assert package["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == (
        f"s3://bucket/tuning/{tune_best}/output/model.tar.gz"
    )
    assert package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"].endswith("/Prep/report/report.json")
    trials = client.list_training_jobs(NameContains="tune")["TrainingJobSummaries"]
    assert len(trials) == 2
    trial = client.describe_training_job(TrainingJobName=trials[0]["TrainingJobName"])
    assert trial["TuningJobArn"] == steps["Tune"]["Metadata"]["TuningJob"]["Arn"]
    train = client.describe_training_job(
        TrainingJobName=steps["Train"]["Metadata"]["TrainingJob"]["Arn"].rsplit("/", 1)[-1]
    )
    assert train["HyperParameters"] == {"num_round": "3"}
    batch_out = client.store.get_bytes("s3://bucket/batch/data.csv.out").decode()
    assert batch_out.lower() == steps["CreateModel"]["Metadata"]["Model"]["Arn"].rsplit("/", 1)[-1]
    endpoint = client.describe_endpoint(EndpointName="pdm-test")
    assert endpoint["EndpointStatus"] == "InService"
    assert endpoint["DataCaptureConfig"]["CaptureStatus"] == "Started"
    url = client.local_endpoint(EndpointName="pdm-test")["url"]
    request = urllib.request.Request(f"{url}/endpoints/pdm-test/invocations", data=b"1,2", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.read() == b"1,2"


def test_else_branch_runs_fail_step_and_execution_fails_with_its_message(
    client: Any, fake: FakeRunners, every: Path
) -> None:
    arn = start_inline(
        client, "every", fake.runners(), PipelineParameters=[{"Name": "Threshold", "Value": "0.9"}]
    )
    described = client.describe_pipeline_execution(PipelineExecutionArn=arn)
    steps = steps_of(client, arn)
    assert described["PipelineExecutionStatus"] == "Failed"
    assert described["FailureReason"] == "report value 0.75 below 0.9"
    assert steps["Gate"]["Metadata"]["Condition"]["Outcome"] == "False"
    assert steps["Reject"]["Metadata"] == {"Fail": {"ErrorMessage": "report value 0.75 below 0.9"}}
    assert "Register" not in steps and "EP" not in steps


def test_unresolvable_reference_fails_the_step_naming_the_reference(client: Any, fake: FakeRunners) -> None:
    bad = processing_step(
        "Use",
        "s3://bucket/code/use.py",
        inputs={"data": {"Get": "Steps.Prep.ProcessingOutputConfig.Outputs['nope'].S3Output.S3Uri"}},
    )
    ghost = processing_step(
        "Ghost",
        "s3://bucket/code/use.py",
        DependsOn=["Prep"],
        inputs={"data": {"Get": "Steps.Missing.ModelArtifacts.S3ModelArtifacts"}},
    )
    create(
        client, "refs", [processing_step("Prep", "s3://bucket/code/prep.py", outputs=["train"]), bad, ghost]
    )
    arn = start_inline(client, "refs", fake.runners())
    steps = steps_of(client, arn)
    assert steps["Prep"]["StepStatus"] == "Succeeded"
    assert steps["Use"]["StepStatus"] == "Failed"
    reason = steps["Use"]["FailureReason"]
    assert "Steps.Prep.ProcessingOutputConfig.Outputs['nope'].S3Output.S3Uri" in reason
    assert "no item named 'nope'" in reason and "train" in reason
    assert "Steps.Missing.ModelArtifacts.S3ModelArtifacts" in steps["Ghost"]["FailureReason"]
    assert client.describe_pipeline_execution(PipelineExecutionArn=arn)["PipelineExecutionStatus"] == "Failed"


def test_condition_with_incomparable_types_fails_the_step(client: Any, fake: FakeRunners) -> None:
    gate = {
        "Name": "Gate",
        "Type": "Condition",
        "Arguments": {
            "Conditions": [{"Type": "LessThan", "LeftValue": {"Get": "Parameters.Name"}, "RightValue": 3}],
            "IfSteps": [],
            "ElseSteps": [],
        },
    }
    create(client, "types", [gate], [{"Name": "Name", "Type": "String", "DefaultValue": "x"}])
    steps = steps_of(client, start_inline(client, "types", fake.runners()))
    assert steps["Gate"]["StepStatus"] == "Failed"
    assert "cannot compare String 'x' with Number 3" in steps["Gate"]["FailureReason"]


@pytest.mark.parametrize("parallel, overlap", [(1, False), (2, True)])
def test_independent_steps_run_in_parallel_up_to_the_limit(client: Any, parallel: int, overlap: bool) -> None:
    fake = FakeRunners(client.store, delays={"A": 0.4, "B": 0.4})
    create(
        client,
        "par",
        [processing_step("A", "s3://bucket/code/a.py"), processing_step("B", "s3://bucket/code/b.py")],
    )
    start_inline(
        client, "par", fake.runners(), ParallelismConfiguration={"MaxParallelExecutionSteps": parallel}
    )
    (_, _, a_end), (_, b_start, _) = sorted(fake.calls, key=lambda c: c[1])
    assert (b_start < a_end) is overlap


def test_depends_on_orders_steps_and_skips_dependents_of_failures(client: Any) -> None:
    fake = FakeRunners(client.store, failures={"A": ["AlgorithmError: boom"]})
    create(
        client,
        "deps",
        [
            processing_step("A", "s3://bucket/code/a.py"),
            processing_step("B", "s3://bucket/code/b.py", DependsOn=["A"]),
        ],
    )
    steps = steps_of(client, start_inline(client, "deps", fake.runners()))
    assert steps["A"]["FailureReason"] == "AlgorithmError: boom"
    assert "B" not in steps


@pytest.mark.parametrize(
    "steps, message",
    [
        ([{"Name": "A", "Type": "Fail"}, {"Name": "A", "Type": "Fail"}], "used twice"),
        ([{"Name": "A", "Type": "Fail", "DependsOn": ["Z"]}], "unknown step 'Z'"),
        (
            [{"Name": "A", "Type": "Processing", "CacheConfig": {"Enabled": True, "ExpireAfter": "soon"}}],
            "ISO-8601",
        ),
        ([{"Type": "Fail"}], "needs a Name and a Type"),
    ],
)
def test_bad_definitions_are_refused_with_the_reason(client: Any, steps: list[Any], message: str) -> None:
    with pytest.raises(ClientError) as err:
        create(client, "bad", steps)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert message in err.value.response["Error"]["Message"]


def test_parameters_are_typed_and_checked_at_start(client: Any) -> None:
    create(client, "params", [{"Name": "F", "Type": "Fail", "Arguments": {"ErrorMessage": "x"}}], PARAMETERS)
    for given, message in [
        ([{"Name": "Rounds", "Value": "three"}], "not a valid Integer"),
        ([{"Name": "Nope", "Value": "1"}], "not defined"),
    ]:
        with pytest.raises(ClientError) as err:
            client.start_pipeline_execution(PipelineName="params", PipelineParameters=given)
        assert err.value.response["Error"]["Code"] == "ValidationException"
        assert message in err.value.response["Error"]["Message"]


def test_execution_variables_and_experiment_config_resolve(client: Any, fake: FakeRunners) -> None:
    fail = {
        "Name": "Show",
        "Type": "Fail",
        "Arguments": {
            "ErrorMessage": {
                "Std:Join": {
                    "On": "|",
                    "Values": [
                        {"Get": "Execution.PipelineName"},
                        {"Get": "Execution.PipelineExecutionId"},
                        {"Get": "PipelineExperimentConfig.TrialName"},
                    ],
                }
            }
        },
    }
    client.create_pipeline(
        PipelineName="vars",
        RoleArn=ROLE,
        PipelineDefinition=json.dumps(
            {
                "Version": "2020-12-01",
                "Steps": [fail],
                "PipelineExperimentConfig": {
                    "ExperimentName": {"Get": "Execution.PipelineName"},
                    "TrialName": {"Get": "Execution.PipelineExecutionId"},
                },
            }
        ),
    )
    arn = start_inline(client, "vars", fake.runners())
    execution_id = arn.rsplit("/", 1)[-1]
    assert steps_of(client, arn)["Show"]["FailureReason"] == f"vars|{execution_id}|{execution_id}"


def test_lambda_without_a_local_handler_fails_naming_the_function(client: Any, fake: FakeRunners) -> None:
    step = {
        "Name": "L",
        "Type": "Lambda",
        "FunctionArn": "arn:aws:lambda:us-east-1:0:function:ghost",
        "Arguments": {},
        "OutputParameters": [],
    }
    create(client, "lam", [step])
    reason = steps_of(client, start_inline(client, "lam", fake.runners()))["L"]["FailureReason"]
    assert "No local handler for Lambda function 'ghost'" in reason


def test_cache_hits_expiry_and_missing_outputs(client: Any, fake: FakeRunners) -> None:
    step = processing_step(
        "A", "s3://bucket/code/a.py", outputs=["out"], CacheConfig={"Enabled": True, "ExpireAfter": "PT1H"}
    )
    create(client, "cache", [step])
    first = start_inline(client, "cache", fake.runners())
    second = start_inline(client, "cache", fake.runners())
    assert steps_of(client, second)["A"]["CacheHitResult"] == {"SourcePipelineExecutionArn": first}
    assert len(fake.calls) == 1
    # Older than ExpireAfter: a miss.
    with client._backend.records.tx() as conn:
        conn.execute("UPDATE steps SET end = end - 7200")
    third = start_inline(client, "cache", fake.runners())
    assert "CacheHitResult" not in steps_of(client, third)["A"]
    # The outputs of the newest entry vanish: a miss again, never a crash.
    produced = client.describe_processing_job(
        ProcessingJobName=steps_of(client, third)["A"]["Metadata"]["ProcessingJob"]["Arn"].rsplit("/", 1)[-1]
    )["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    client.store.delete(f"{produced}/out.json")
    fourth = start_inline(client, "cache", fake.runners())
    assert "CacheHitResult" not in steps_of(client, fourth)["A"]
    assert len(fake.calls) == 3


def _sourcedir(train_code: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = textwrap.dedent(train_code).encode()
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


TRAIN_PY = """
import os, pathlib
model = pathlib.Path(os.environ["SM_MODEL_DIR"])
rows = sum(1 for p in pathlib.Path(os.environ["SM_CHANNEL_TRAIN"]).glob("*.csv") for _ in open(p))
(model / "model.txt").write_text(f"rows={rows} version={VERSION}")
"""


def test_editing_training_code_reruns_training_and_dependents_not_preprocessing(client: Any) -> None:
    put_text(
        client,
        "s3://bucket/code/prep.py",
        """
        import os, pathlib
        base = pathlib.Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
        out = base / "processing/output/train"
        out.mkdir(parents=True, exist_ok=True)
        (out / "train.csv").write_text("1,2\\n3,4\\n")
    """,
    )
    put_text(
        client,
        "s3://bucket/code/eval.py",
        """
        import os, pathlib, tarfile
        base = pathlib.Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
        with tarfile.open(base / "processing/input/model/model.tar.gz") as archive:
            archive.extractall(base / "m", filter="data")
        out = base / "processing/output/eval"
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.txt").write_text((base / "m/model.txt").read_text())
    """,
    )
    client.store.put_bytes("s3://bucket/code/sourcedir.tar.gz", _sourcedir(TRAIN_PY.replace("VERSION", "1")))
    cache = {"Enabled": True, "ExpireAfter": "P30D"}
    prep = processing_step("Prep", "s3://bucket/code/prep.py", outputs=["train"], CacheConfig=cache)
    train = {
        "Name": "Train",
        "Type": "Training",
        "CacheConfig": cache,
        "Arguments": {
            "AlgorithmSpecification": {"TrainingImage": SKLEARN_IMAGE, "TrainingInputMode": "File"},
            "RoleArn": ROLE,
            "OutputDataConfig": {"S3OutputPath": "s3://bucket/models"},
            "ResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
            "HyperParameters": {
                "sagemaker_program": '"train.py"',
                "sagemaker_submit_directory": '"s3://bucket/code/sourcedir.tar.gz"',
            },
            "InputDataConfig": _channel(
                {"Get": "Steps.Prep.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"}
            ),
        },
    }
    evaluate = processing_step(
        "Eval",
        "s3://bucket/code/eval.py",
        outputs=["eval"],
        CacheConfig=cache,
        inputs={"model": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}},
    )
    evaluate["Arguments"]["ProcessingInputs"][1]["S3Input"]["LocalPath"] = "/opt/ml/processing/input/model"
    create(client, "code-edit", [prep, train, evaluate])
    runners = Runners.default()
    first = start_inline(client, "code-edit", runners)
    assert {s["StepStatus"] for s in steps_of(client, first).values()} == {"Succeeded"}, steps_of(
        client, first
    )
    second = steps_of(client, start_inline(client, "code-edit", runners))
    assert all("CacheHitResult" in s for s in second.values()), second
    client.store.put_bytes("s3://bucket/code/sourcedir.tar.gz", _sourcedir(TRAIN_PY.replace("VERSION", "2")))
    third_arn = start_inline(client, "code-edit", runners)
    third = steps_of(client, third_arn)
    assert third["Prep"]["CacheHitResult"]["SourcePipelineExecutionArn"] == first
    assert "CacheHitResult" not in third["Train"] and "CacheHitResult" not in third["Eval"]
    out = client.describe_processing_job(
        ProcessingJobName=third["Eval"]["Metadata"]["ProcessingJob"]["Arn"].rsplit("/", 1)[-1]
    )["ProcessingOutputConfig"]["Outputs"][0]
    assert client.store.get_bytes(out["S3Output"]["S3Uri"] + "/eval.txt") == b"rows=2 version=2"


TRAIN_ONLY = {
    "Name": "Train",
    "Type": "Training",
    "Arguments": {
        "AlgorithmSpecification": {"TrainingImage": TRAIN_IMAGE, "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/models"},
        "ResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200},
        "EnableManagedSpotTraining": True,
        "InputDataConfig": _channel("s3://bucket/data"),
    },
}


@pytest.mark.parametrize("env, argument, expected", [("2", None, 2), ("2", 1, 1), ("", None, 0)])
def test_spot_interruptions_reach_the_job_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str, argument: int | None, expected: int
) -> None:
    from pipelines.local.client import LocalSageMaker

    monkeypatch.setenv("PDM_LOCAL_SPOT_INTERRUPTIONS", env)
    sm = LocalSageMaker(root=tmp_path / "root", spot_interruptions=argument)
    fake = FakeRunners(sm.store)
    create(sm, "spot", [TRAIN_ONLY])
    start_inline(sm, "spot", fake.runners())
    assert [ctx.spot_interruptions for ctx in fake.contexts] == [expected]
    assert fake.contexts[0].log_path.parent.name == "TrainingJobs"


def test_bad_spot_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pipelines.local.client import LocalSageMaker

    monkeypatch.setenv("PDM_LOCAL_SPOT_INTERRUPTIONS", "many")
    with pytest.raises(ValueError, match="PDM_LOCAL_SPOT_INTERRUPTIONS must be a whole number"):
        LocalSageMaker(root=tmp_path)


def test_step_types_the_engine_cannot_run_fail_by_name(client: Any, fake: FakeRunners) -> None:
    create(client, "emr", [{"Name": "Cluster", "Type": "EMR", "Arguments": {"ClusterId": "j-1"}}])
    step = steps_of(client, start_inline(client, "emr", fake.runners()))["Cluster"]
    assert step["FailureReason"] == "Step type EMR is not supported by the local engine."
