"""Register step: a Model Registry version with its evaluation attached as ModelQuality statistics."""

from __future__ import annotations

from typing import Any

from steps.context import BuildContext

STEP_NAME = "Register"
CONTENT_TYPES = ["text/csv", "application/json"]
# The artefact carries its own inference code (model_code/train.py copies it into code/), so the XGBoost
# serving image only needs to be pointed at it.
SERVING_ENV = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}


def model_builder(ctx: BuildContext, model_uri: Any) -> Any:
    from sagemaker.serve.model_builder import ModelBuilder

    return ModelBuilder(
        s3_model_data_url=model_uri,
        image_uri=ctx.image,
        role_arn=ctx.config.role_arn,
        sagemaker_session=ctx.session,
        env_vars=dict(SERVING_ENV),
    )


def build(ctx: BuildContext, model_uri: Any, evaluation_uri: Any) -> Any:
    from sagemaker.core.model_metrics import MetricsSource, ModelMetrics
    from sagemaker.mlops.workflow.model_step import ModelStep

    cfg = ctx.config
    metrics = ModelMetrics(
        model_statistics=MetricsSource(s3_uri=evaluation_uri, content_type="application/json")
    )
    step_args = model_builder(ctx, model_uri).register(
        model_package_group_name=cfg.registry.model_package_group,
        content_types=CONTENT_TYPES,
        response_types=CONTENT_TYPES,
        inference_instances=[cfg.deploy.instance_type],
        transform_instances=[cfg.deploy.instance_type],
        approval_status=ctx.params["ModelApprovalStatus"],
        model_metrics=metrics,
        description=f"{cfg.pipeline_name}: {cfg.schema_.problem_type} model for {cfg.schema_.target_column}",
    )
    return ModelStep(name=STEP_NAME, step_args=step_args, retry_policies=[ctx.step_retry()])
