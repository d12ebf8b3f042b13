"""Offline checks of the compiled definition JSON: the contract both engines execute."""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pipelines.config import ConfigError
from tests.definition.conftest import all_steps, compile_with

JOB_STEPS = ("Preprocess", "Train", "Tune", "Evaluate")


def gets(node: Any) -> list[str]:
    """Every `{"Get": ...}` reference anywhere in a JSON value."""
    found: list[str] = []
    if isinstance(node, dict):
        if set(node) == {"Get"}:
            found.append(node["Get"])
        for value in node.values():
            found += gets(value)
    elif isinstance(node, list):
        for value in node:
            found += gets(value)
    return found


def test_steps_names_types_and_nesting(definition: dict[str, Any], steps: dict[str, dict[str, Any]]) -> None:
    assert [s["Name"] for s in definition["Steps"]] == ["Preprocess", "Train", "Tune", "Evaluate", "Gate"]
    assert {name: s["Type"] for name, s in steps.items()} == {
        "Preprocess": "Processing",
        "Train": "Training",
        "Tune": "Tuning",
        "Evaluate": "Processing",
        "Gate": "Condition",
        "Register": "RegisterModel",
        "DeployGate": "Condition",
        "CreateModel": "Model",
        "EndpointConfig": "EndpointConfig",
        "Endpoint": "Endpoint",
        "GateFailed": "Fail",
    }
    gate = steps["Gate"]["Arguments"]
    assert [s["Name"] for s in gate["IfSteps"]] == ["Register", "DeployGate"]
    assert [s["Name"] for s in gate["ElseSteps"]] == ["GateFailed"]
    deploy = steps["DeployGate"]["Arguments"]
    assert [s["Name"] for s in deploy["IfSteps"]] == ["CreateModel", "EndpointConfig", "Endpoint"]
    assert steps["DeployGate"]["DependsOn"] == ["Register"]


def test_data_dependencies_follow_the_pipeline_order(steps: dict[str, dict[str, Any]]) -> None:
    def referenced_steps(name: str) -> set[str]:
        return {ref.split(".")[1] for ref in gets(steps[name]["Arguments"]) if ref.startswith("Steps.")}

    assert referenced_steps("Preprocess") == set()
    assert referenced_steps("Train") == {"Preprocess"}
    assert referenced_steps("Tune") == {"Preprocess"}
    assert referenced_steps("Evaluate") == {"Preprocess", "Tune"}
    assert referenced_steps("Register") == {"Tune", "Evaluate"}
    assert referenced_steps("EndpointConfig") == {"CreateModel"}
    assert referenced_steps("Endpoint") == {"EndpointConfig"}


def test_every_reference_resolves_to_a_parameter_step_or_property_file(
    definition: dict[str, Any], steps: dict[str, dict[str, Any]]
) -> None:
    params = {p["Name"] for p in definition["Parameters"]}
    property_files = {
        (name, pf["PropertyFileName"]) for name, s in steps.items() for pf in s.get("PropertyFiles", [])
    }
    execution_vars = {
        "PipelineName",
        "PipelineArn",
        "PipelineExecutionId",
        "PipelineExecutionArn",
        "StartDateTime",
        "CurrentDateTime",
    }
    refs = gets(definition["Steps"]) + gets(definition.get("PipelineExperimentConfig", {}))
    assert refs, "the definition should reference parameters and steps"
    for ref in refs:
        root, _, rest = ref.partition(".")
        if root == "Parameters":
            assert rest in params, ref
        elif root == "Execution":
            assert rest in execution_vars, ref
        elif root == "Steps":
            step, _, path = rest.partition(".")
            assert step in steps, ref
            if path.startswith("PropertyFiles."):
                assert (step, path.split(".", 1)[1]) in property_files, ref
        else:
            pytest.fail(f"unexpected reference root in {ref}")


def test_every_parameter_is_declared_with_a_default(definition: dict[str, Any]) -> None:
    params = {p["Name"]: p for p in definition["Parameters"]}
    assert set(params) == {
        "InputDataUri",
        "ProcessingInstanceType",
        "ProcessingInstanceCount",
        "TrainingInstanceType",
        "TrainingInstanceCount",
        "GateThreshold",
        "ChampionTolerance",
        "ChampionModelUri",
        "ModelApprovalStatus",
        "DeployModel",
        "EndpointInstanceType",
    }
    assert all("DefaultValue" in p for p in params.values())
    assert params["GateThreshold"]["Type"] == "Float"
    assert params["DeployModel"]["Type"] == "Boolean"
    used = {ref.split(".", 1)[1] for ref in gets(definition["Steps"]) if ref.startswith("Parameters.")}
    assert used == set(params), f"declared but unused: {set(params) - used}"


def test_spot_on_by_default_with_max_wait(steps: dict[str, dict[str, Any]]) -> None:
    train = steps["Train"]["Arguments"]
    trial = steps["Tune"]["Arguments"]["TrainingJobDefinition"]
    for args in (train, trial):
        assert args["EnableManagedSpotTraining"] is True
        assert args["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}


def test_spot_switched_off_per_run_compiles_it_out() -> None:
    steps = all_steps(json.loads(compile_with("use_spot=false", "max_run=1800").definition))
    for args in (steps["Train"]["Arguments"], steps["Tune"]["Arguments"]["TrainingJobDefinition"]):
        assert not args.get("EnableManagedSpotTraining")
        assert args["StoppingCondition"] == {"MaxRuntimeInSeconds": 1800}


def test_checkpoints_per_code_hyperparameters_and_data(steps: dict[str, dict[str, Any]]) -> None:
    config = steps["Train"]["Arguments"]["CheckpointConfig"]
    assert config["LocalPath"] == "/opt/ml/checkpoints"
    values = config["S3Uri"]["Std:Join"]["Values"]
    assert values[:2] == ["s3://pdm-mlops-local/pdm-mlops", "checkpoints"]
    assert re.fullmatch(r"[0-9a-f]{16}", values[2])
    assert values[3] == {"Get": "Steps.Preprocess.ProcessingJobName"}
    # Trials share one definition; shared checkpoints would let one trial resume another's model.
    assert "CheckpointConfig" not in steps["Tune"]["Arguments"]["TrainingJobDefinition"]
    other = all_steps(json.loads(compile_with("training.hyperparameters={num_round: 50}").definition))
    assert other["Train"]["Arguments"]["CheckpointConfig"]["S3Uri"]["Std:Join"]["Values"][2] != values[2]


def test_cache_config_on_every_job_step(steps: dict[str, dict[str, Any]]) -> None:
    for name in JOB_STEPS:
        assert steps[name]["CacheConfig"] == {"Enabled": True, "ExpireAfter": "P30D"}, name
    off = all_steps(json.loads(compile_with("cache.enabled=false", "expire_after=PT12H").definition))
    for name in JOB_STEPS:
        assert off[name]["CacheConfig"] == {"Enabled": False, "ExpireAfter": "PT12H"}, name


def test_retry_policies(steps: dict[str, dict[str, Any]]) -> None:
    for name in JOB_STEPS:
        policies = steps[name]["RetryPolicies"]
        types = [set(p["ExceptionType"]) for p in policies]
        assert {"Step.SERVICE_FAULT", "Step.THROTTLING"} in types, name
        assert {
            "SageMaker.CAPACITY_ERROR",
            "SageMaker.RESOURCE_LIMIT",
            "SageMaker.JOB_INTERNAL_ERROR",
        } in types
        for policy in policies:
            assert (
                policy["MaxAttempts"] == 3 and policy["IntervalSeconds"] == 5 and policy["BackoffRate"] == 2.0
            )
    for name in ("Register", "CreateModel", "EndpointConfig"):
        assert [set(p["ExceptionType"]) for p in steps[name]["RetryPolicies"]] == [
            {"Step.SERVICE_FAULT", "Step.THROTTLING"}
        ]


def test_no_kms_or_network_settings_unless_configured(steps: dict[str, dict[str, Any]]) -> None:
    text = json.dumps({n: steps[n] for n in (*JOB_STEPS, "EndpointConfig")})
    for key in ("KmsKey", "VpcConfig", "NetworkConfig", "EnableNetworkIsolation"):
        assert key not in text, key


def test_kms_and_network_settings_reach_every_job_and_the_endpoint() -> None:
    kms = "arn:aws:kms:us-east-1:123456789012:key/data"
    volume = "arn:aws:kms:us-east-1:123456789012:key/volume"
    steps = all_steps(
        json.loads(
            compile_with(
                f"security.kms_key_id={kms}",
                f"security.volume_kms_key_id={volume}",
                "security.subnets=[subnet-a, subnet-b]",
                "security.security_group_ids=[sg-1]",
                "security.enable_network_isolation=true",
                "security.encrypt_inter_container_traffic=true",
            ).definition
        )
    )
    for name in ("Preprocess", "Evaluate"):
        args = steps[name]["Arguments"]
        assert args["ProcessingOutputConfig"]["KmsKeyId"] == kms
        assert args["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == volume
        assert args["NetworkConfig"] == {
            "EnableNetworkIsolation": True,
            "EnableInterContainerTrafficEncryption": True,
            "VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-a", "subnet-b"]},
        }
    for args in (steps["Train"]["Arguments"], steps["Tune"]["Arguments"]["TrainingJobDefinition"]):
        assert args["OutputDataConfig"]["KmsKeyId"] == kms
        assert args["ResourceConfig"]["VolumeKmsKeyId"] == volume
        assert args["VpcConfig"] == {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-a", "subnet-b"]}
        assert args["EnableNetworkIsolation"] is True
        assert args["EnableInterContainerTrafficEncryption"] is True
    endpoint_config = steps["EndpointConfig"]["Arguments"]
    assert endpoint_config["KmsKeyId"] == volume
    assert endpoint_config["DataCaptureConfig"]["KmsKeyId"] == kms


def test_tuning_job_config(steps: dict[str, dict[str, Any]]) -> None:
    args = steps["Tune"]["Arguments"]
    config = args["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian"
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2}
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "validation:auc"}
    ranges = config["ParameterRanges"]
    assert {r["Name"] for r in ranges["ContinuousParameterRanges"]} == {"eta"}
    assert {r["Name"] for r in ranges["IntegerParameterRanges"]} == {"max_depth", "min_child_weight"}
    definition = args["TrainingJobDefinition"]
    names = {m["Name"] for m in definition["AlgorithmSpecification"]["MetricDefinitions"]}
    assert "validation:auc" in names
    regex = next(
        m["Regex"]
        for m in definition["AlgorithmSpecification"]["MetricDefinitions"]
        if m["Name"] == "validation:auc"
    )
    assert re.search(regex, "[12]#011train-auc:0.99#011validation-auc:0.9731").group(1) == "0.9731"
    # Tuned hyperparameters must not also be static ones.
    assert not set(definition["StaticHyperParameters"]) & {"eta", "max_depth", "min_child_weight"}


def code_uris(steps: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The code bundle URI each job step runs."""
    uris = {
        "Train": steps["Train"]["Arguments"]["HyperParameters"]["sagemaker_submit_directory"],
        "Tune": steps["Tune"]["Arguments"]["TrainingJobDefinition"]["StaticHyperParameters"][
            "sagemaker_submit_directory"
        ],
    }
    for name in ("Preprocess", "Evaluate"):
        inputs = {i["InputName"]: i["S3Input"]["S3Uri"] for i in steps[name]["Arguments"]["ProcessingInputs"]}
        uris[name] = inputs["code"] + "sourcedir.tar.gz"
    return uris


def test_script_mode_code_is_content_addressed_and_published(
    default_compiled: Any, steps: dict[str, dict[str, Any]]
) -> None:
    assert steps["Train"]["Arguments"]["HyperParameters"]["sagemaker_program"] == "train.py"
    uris = code_uris(steps)
    for name, uri in uris.items():
        assert re.fullmatch(r"s3://pdm-mlops-local/pdm-mlops/code/[0-9a-f]{20}/sourcedir\.tar\.gz", uri), name
        assert uri in default_compiled.uploads, name
    assert uris["Train"] == uris["Tune"]
    assert len({uris["Preprocess"], uris["Train"], uris["Evaluate"]}) == 3
    with tarfile.open(fileobj=io.BytesIO(default_compiled.uploads[uris["Preprocess"]])) as tar:
        assert tar.getnames() == ["common.py", "features.py", "preprocess.py"]
    with tarfile.open(fileobj=io.BytesIO(default_compiled.uploads[uris["Train"]])) as tar:
        assert tar.getnames() == ["common.py", "features.py", "formatting.py", "inference.py", "train.py"]
    for name in ("Preprocess", "Evaluate"):
        inputs = {i["InputName"]: i["S3Input"]["S3Uri"] for i in steps[name]["Arguments"]["ProcessingInputs"]}
        for uri in (inputs["entrypoint"], inputs["aux"]):
            assert uri in default_compiled.uploads, uri


def test_editing_train_py_changes_only_the_training_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steps: dict[str, dict[str, Any]]
) -> None:
    """Step caching keys on the code: an edit to train.py must not invalidate preprocessing."""
    import pipelines.sdk

    code = tmp_path / "model_code"
    shutil.copytree(pipelines.sdk.MODEL_CODE_DIR, code, ignore=shutil.ignore_patterns("__pycache__"))
    with (code / "train.py").open("a") as handle:
        handle.write("\n# tuned by a data scientist\n")
    monkeypatch.setattr(pipelines.sdk, "MODEL_CODE_DIR", code)
    monkeypatch.setattr(
        "steps.context.pack_entry",
        lambda entry, extra=(), root=code: pipelines.sdk.pack_entry(entry, extra, root),
    )
    before, after = code_uris(steps), code_uris(all_steps(json.loads(compile_with().definition)))
    assert after["Preprocess"] == before["Preprocess"]
    assert after["Evaluate"] == before["Evaluate"]
    assert after["Train"] != before["Train"] and after["Tune"] != before["Tune"]


def test_compiling_twice_gives_the_same_definition(default_compiled: Any) -> None:
    """Step caching (local and on SageMaker) compares arguments: nothing may vary between builds."""
    again = compile_with()
    assert again.definition == default_compiled.definition
    assert again.uploads == default_compiled.uploads


def test_gate_compares_threshold_and_champion(steps: dict[str, dict[str, Any]]) -> None:
    conditions = steps["Gate"]["Arguments"]["Conditions"]
    assert conditions[0]["Type"] == "GreaterThanOrEqualTo"
    assert conditions[0]["LeftValue"]["Std:JsonGet"]["Path"] == "binary_classification_metrics.auc.value"
    assert conditions[0]["RightValue"] == {"Get": "Parameters.GateThreshold"}
    assert conditions[1] == {
        "Type": "LessThanOrEqualTo",
        "LeftValue": {
            "Std:JsonGet": {
                "PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.Evaluation"},
                "Path": "gate.shortfall",
            }
        },
        "RightValue": {"Get": "Parameters.ChampionTolerance"},
    }
    evaluate_inputs = {
        i["InputName"]: i["S3Input"]["S3Uri"] for i in steps["Evaluate"]["Arguments"]["ProcessingInputs"]
    }
    assert evaluate_inputs["champion"] == {"Get": "Parameters.ChampionModelUri"}
    deploy = steps["DeployGate"]["Arguments"]["Conditions"]
    assert {c["RightValue"] if not isinstance(c["RightValue"], dict) else "" for c in deploy} == {
        True,
        "Approved",
    }


def test_regression_gate_is_a_minimum_and_multiclass_uses_its_section() -> None:
    regression = all_steps(
        json.loads(
            compile_with(
                "schema.problem_type=regression",
                "schema.target_column=remaining_tool_life_min",
                "drop_columns=[udi, product_id, failure_type, twf, hdf, pwf, osf, rnf, machine_failure]",
                "evaluation.metric=rmse",
                "evaluation.threshold=50",
            ).definition
        )
    )
    cond = regression["Gate"]["Arguments"]["Conditions"][0]
    assert cond["Type"] == "LessThanOrEqualTo"
    assert cond["LeftValue"]["Std:JsonGet"]["Path"] == "regression_metrics.rmse.value"
    objective = regression["Tune"]["Arguments"]["HyperParameterTuningJobConfig"][
        "HyperParameterTuningJobObjective"
    ]
    assert objective == {"Type": "Minimize", "MetricName": "validation:rmse"}
    multiclass = all_steps(
        json.loads(
            compile_with(
                "schema.problem_type=multiclass",
                "schema.target_column=failure_type",
                "drop_columns=[udi, product_id, machine_failure, twf, hdf, pwf, osf, rnf,"
                " remaining_tool_life_min]",
                "evaluation.metric=macro_f1",
            ).definition
        )
    )
    path = multiclass["Gate"]["Arguments"]["Conditions"][0]["LeftValue"]["Std:JsonGet"]["Path"]
    assert path == "multiclass_classification_metrics.macro_f1.value"


def test_register_attaches_evaluation_as_model_quality(steps: dict[str, dict[str, Any]]) -> None:
    args = steps["Register"]["Arguments"]
    assert args["ModelPackageGroupName"] == "pdm-mlops"
    assert args["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    stats = args["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert stats["ContentType"] == "application/json"
    assert stats["S3Uri"]["Std:Join"]["Values"][-1] == "evaluation.json"
    container = args["InferenceSpecification"]["Containers"][0]
    assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    assert container["ModelDataUrl"]["Std:Join"]["Values"][-1] == "output/model.tar.gz"


def test_endpoint_config_has_data_capture_and_unique_name(steps: dict[str, dict[str, Any]]) -> None:
    args = steps["EndpointConfig"]["Arguments"]
    assert args["DataCaptureConfig"]["EnableCapture"] is True
    assert args["DataCaptureConfig"]["DestinationS3Uri"] == "s3://pdm-mlops-local/pdm-mlops/capture"
    assert {"Get": "Execution.PipelineExecutionId"} in args["EndpointConfigName"]["Std:Join"]["Values"]
    variant = args["ProductionVariants"][0]
    assert variant["InstanceType"] == {"Get": "Parameters.EndpointInstanceType"}
    assert steps["Endpoint"]["Arguments"]["EndpointName"] == "pdm-mlops-dev"


def test_debugger_rules_are_attached_with_real_images(steps: dict[str, dict[str, Any]]) -> None:
    args = steps["Train"]["Arguments"]
    rules = {r["RuleConfigurationName"]: r for r in args["DebugRuleConfigurations"]}
    assert set(rules) == {"LossNotDecreasing", "Overfit"}
    for rule in rules.values():
        assert re.fullmatch(
            r"\d{12}\.dkr\.ecr\.us-east-1\.amazonaws\.com/sagemaker-debugger-rules:latest",
            rule["RuleEvaluatorImage"],
        )
    assert args["DebugHookConfig"]["CollectionConfigurations"][0]["CollectionName"] == "metrics"
    off = all_steps(json.loads(compile_with("training.debugger_rules=false").definition))
    assert "DebugRuleConfigurations" not in off["Train"]["Arguments"]


def test_building_opens_no_network_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(args)
        raise OSError("network access attempted while building a definition")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    compiled = compile_with("deploy.endpoint_name=guarded")
    assert json.loads(compiled.definition)["Steps"]
    assert attempts == []


def test_optional_batch_transform_scores_with_the_deployed_model() -> None:
    with pytest.raises(ConfigError, match=r"batch\.input_uri"):
        compile_with("batch.enabled=true")
    compiled = compile_with(
        "batch.enabled=true", "batch.input_uri=s3://pdm-mlops-local/scoring/", "batch.strategy=SingleRecord"
    )
    definition = json.loads(compiled.definition)
    steps = all_steps(definition)
    deploy = [s["Name"] for s in steps["DeployGate"]["Arguments"]["IfSteps"]]
    assert deploy == ["CreateModel", "EndpointConfig", "Endpoint", "BatchTransform"]
    args = steps["BatchTransform"]["Arguments"]
    assert args["ModelName"] == {"Get": "Steps.CreateModel.ModelName"}
    assert args["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == {
        "Get": "Parameters.BatchInputUri"
    }
    assert args["BatchStrategy"] == "SingleRecord"
    params = {p["Name"]: p["DefaultValue"] for p in definition["Parameters"]}
    assert params["BatchInputUri"] == "s3://pdm-mlops-local/scoring/"
