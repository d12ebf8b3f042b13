"""Deploy steps: model, endpoint config (data capture, KMS) and endpoint, created or updated in place."""

from __future__ import annotations

from typing import Any

from steps.context import BuildContext
from steps.register import model_builder

MODEL_STEP = "CreateModel"
CONFIG_STEP = "EndpointConfig"
ENDPOINT_STEP = "Endpoint"
VARIANT = "AllTraffic"


def build(ctx: BuildContext, model_uri: Any) -> list[Any]:
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow.endpoint_step import EndpointConfigStep, EndpointStep
    from sagemaker.mlops.workflow.model_step import ModelStep

    cfg = ctx.config
    create_model = ModelStep(
        name=MODEL_STEP, step_args=model_builder(ctx, model_uri).build(), retry_policies=[ctx.step_retry()]
    )
    capture = None
    if cfg.deploy.data_capture.enabled:
        capture = {
            "EnableCapture": True,
            "InitialSamplingPercentage": cfg.deploy.data_capture.sampling_percentage,
            "DestinationS3Uri": f"{cfg.s3_root}/capture",
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            "CaptureContentTypeHeader": {
                "CsvContentTypes": ["text/csv"],
                "JsonContentTypes": ["application/json"],
            },
        }
        if cfg.security.kms_key_id:
            capture["KmsKeyId"] = cfg.security.kms_key_id
    # Endpoint configs are immutable and named once: the execution id makes each deployment's config new,
    # which is what lets the Endpoint step update an existing endpoint (blue/green) instead of failing.
    config_name = Join(on="-", values=[cfg.deploy.endpoint_name, ExecutionVariables.PIPELINE_EXECUTION_ID])
    config_args = ctx.session.create_endpoint_config(
        name=config_name,
        production_variants=[
            {
                "VariantName": VARIANT,
                "ModelName": create_model.properties.ModelName,
                "InitialInstanceCount": cfg.deploy.instance_count,
                "InstanceType": ctx.params["EndpointInstanceType"],
                "InitialVariantWeight": 1.0,
            }
        ],
        kms_key=cfg.security.volume_kms_key_id,
        data_capture_config_dict=capture,
    )
    endpoint_config = EndpointConfigStep(
        name=CONFIG_STEP, step_args=config_args, retry_policies=[ctx.step_retry()]
    )
    endpoint = EndpointStep(
        name=ENDPOINT_STEP,
        step_args=ctx.session.create_endpoint(
            endpoint_name=cfg.deploy.endpoint_name,
            config_name=endpoint_config.properties.EndpointConfigName,
        ),
    )
    return [create_model, endpoint_config, endpoint]
