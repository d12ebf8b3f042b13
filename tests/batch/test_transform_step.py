"""steps/transform.py compiles, offline, into the TransformStep JSON a CreateTransformJob needs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipelines.config import load_config
from pipelines.local.api_common import validation_report
from pipelines.sdk import make_session, quiet_sdk
from steps import transform
from steps.context import BuildContext, pack_sources
from steps.parameters import build_parameters
from steps.register import model_builder

MODEL_URI = "s3://bucket/model/model.tar.gz"


def compile_steps(settings: transform.TransformSettings | None = None, *overrides: str) -> dict[str, Any]:
    """A two-step pipeline (CreateModel -> BatchTransform) compiled to its definition, steps by name."""
    config = load_config(overrides=list(overrides), environ={})
    with quiet_sdk():
        session = make_session(config.region, config.bucket)  # first: it prepares the SDK's environment
        from sagemaker.core.workflow.parameters import ParameterString
        from sagemaker.core.workflow.pipeline_definition_config import PipelineDefinitionConfig
        from sagemaker.mlops.workflow.model_step import ModelStep
        from sagemaker.mlops.workflow.pipeline import Pipeline

        ctx = BuildContext(
            config=config, session=session, params=build_parameters(config), sources=pack_sources()
        )
        model = ModelStep(name="CreateModel", step_args=model_builder(ctx, MODEL_URI).build())
        batch_input = ParameterString("BatchInputUri", default_value="s3://bucket/batch/in/")
        step = transform.build(ctx, model, batch_input, settings)
        pipeline = Pipeline(
            name="batch-test",
            parameters=[batch_input],
            steps=[model, step],
            sagemaker_session=session,
            pipeline_definition_config=PipelineDefinitionConfig(use_custom_job_prefix=False),
        )
        definition = json.loads(pipeline.definition())
    return {s["Name"]: s for s in definition["Steps"]}


@pytest.fixture(scope="module")
def default_step() -> dict[str, Any]:
    return compile_steps()[transform.STEP_NAME]


def test_default_transform_step_definition(default_step: dict[str, Any]) -> None:
    assert default_step["Type"] == "Transform"
    args = default_step["Arguments"]
    assert args["ModelName"] == {"Get": "Steps.CreateModel.ModelName"}
    assert args["TransformInput"] == {
        "DataSource": {
            "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": {"Get": "Parameters.BatchInputUri"}}
        },
        "ContentType": "text/csv",
        "SplitType": "Line",
    }
    assert args["BatchStrategy"] == "MultiRecord" and args["MaxPayloadInMB"] == 6
    assert "MaxConcurrentTransforms" not in args  # left to the container's /execution-parameters
    assert args["DataProcessing"] == {"JoinSource": "Input"}
    output = args["TransformOutput"]
    assert output["AssembleWith"] == "Line" and output["Accept"] == "text/csv"
    # Under the execution id, so executions never overwrite each other's outputs.
    join = output["S3OutputPath"]["Std:Join"]
    assert {"Get": "Execution.PipelineExecutionId"} in join["Values"] and join["Values"][-1] == "batch"
    assert args["TransformResources"] == {"InstanceCount": 1, "InstanceType": "ml.m5.large"}
    assert default_step["CacheConfig"]["Enabled"] is True
    retried = {kind for policy in default_step["RetryPolicies"] for kind in policy["ExceptionType"]}
    assert {"Step.THROTTLING", "SageMaker.CAPACITY_ERROR"} <= retried


def test_step_arguments_are_a_valid_create_transform_job_request(default_step: dict[str, Any]) -> None:
    """With its references resolved to strings, botocore's input shape accepts the request as it is."""
    args = json.loads(json.dumps(default_step["Arguments"]))
    args["ModelName"] = "model"
    args["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] = "s3://bucket/batch/in/"
    args["TransformOutput"]["S3OutputPath"] = "s3://bucket/out/"
    args["TransformJobName"] = "job"
    assert validation_report("CreateTransformJob", args) is None


def test_settings_and_security_reach_the_definition() -> None:
    settings = transform.TransformSettings(
        strategy="SingleRecord",
        max_payload_mb=2,
        max_concurrent_transforms=4,
        join_source=None,
        input_filter="$[1:]",
        output_filter="$[0,-1]",
        instance_type="ml.c5.xlarge",
    )
    steps = compile_steps(settings, "security.kms_key_id=alias/pdm", "security.volume_kms_key_id=alias/vol")
    args = steps[transform.STEP_NAME]["Arguments"]
    assert args["BatchStrategy"] == "SingleRecord" and args["MaxPayloadInMB"] == 2
    assert args["MaxConcurrentTransforms"] == 4
    assert args["DataProcessing"] == {"InputFilter": "$[1:]", "OutputFilter": "$[0,-1]"}
    assert args["TransformOutput"]["KmsKeyId"] == "alias/pdm"
    assert args["TransformResources"] == {
        "InstanceCount": 1,
        "InstanceType": "ml.c5.xlarge",
        "VolumeKmsKeyId": "alias/vol",
    }
