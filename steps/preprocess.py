"""Preprocess step: schema validation first, then the stratified 70/15/15 split and the feature spec."""

from __future__ import annotations

from typing import Any

from steps.context import BuildContext
from steps.processor import framework_processor, s3_input, s3_output

STEP_NAME = "Preprocess"
SPLITS = ("train", "validation", "test")


def build(ctx: BuildContext) -> Any:
    from sagemaker.mlops.workflow.steps import ProcessingStep

    schema = ctx.config.schema_
    processor = framework_processor(ctx, "pdm-preprocess")
    arguments = [
        *ctx.schema_arguments(),
        "--max-nan-ratio",
        str(schema.max_nan_ratio),
        "--split",
        ",".join(str(x) for x in schema.split),
        "--seed",
        str(ctx.config.data.seed),
    ]
    outputs = [s3_output(ctx, name, "preprocess", f"/opt/ml/processing/output/{name}") for name in SPLITS]
    outputs.append(s3_output(ctx, "report", "preprocess", "/opt/ml/processing/output/report"))
    step_args = processor.run(
        code="preprocess.py",
        source_dir=ctx.code_uri("preprocess.py"),
        job_name="pdm-preprocess",
        inputs=[s3_input("data", ctx.params["InputDataUri"], "/opt/ml/processing/input/data")],
        outputs=outputs,
        arguments=arguments,
    )
    return ProcessingStep(
        name=STEP_NAME,
        step_args=step_args,
        description="Validate the input CSV against the schema, split 70/15/15, write the feature spec.",
        cache_config=ctx.cache_config(),
        retry_policies=ctx.job_retries(),
    )
