"""The FrameworkProcessor both processing steps use, so they differ only in script, inputs and outputs."""

from __future__ import annotations

from typing import Any

from steps.context import BuildContext


def framework_processor(ctx: BuildContext, base_job_name: str) -> Any:
    from sagemaker.core.processing import FrameworkProcessor

    sec = ctx.config.security
    return FrameworkProcessor(
        image_uri=ctx.image,
        role=ctx.config.role_arn,
        instance_count=ctx.params["ProcessingInstanceCount"],
        instance_type=ctx.params["ProcessingInstanceType"],
        command=["python3"],
        volume_kms_key=sec.volume_kms_key_id,
        output_kms_key=sec.kms_key_id,
        # Fixed code location + job name keep the SDK's helper uploads at stable keys; a timestamped
        # default would change the step arguments every build and defeat step caching.
        code_location=f"{ctx.config.s3_root}/code",
        base_job_name=base_job_name,
        sagemaker_session=ctx.session,
        network_config=ctx.network_config(),
        env={"PYTHONUNBUFFERED": "1"},
    )


def s3_input(name: str, source: Any, local_path: str) -> Any:
    from sagemaker.core.shapes import ProcessingInput, ProcessingS3Input

    return ProcessingInput(
        input_name=name,
        s3_input=ProcessingS3Input(
            s3_uri=source, local_path=local_path, s3_data_type="S3Prefix", s3_input_mode="File"
        ),
    )


def s3_output(ctx: BuildContext, name: str, step: str, local_path: str) -> Any:
    """Outputs live under the execution id, so executions never overwrite each other's artefacts."""
    from sagemaker.core.shapes import ProcessingOutput, ProcessingS3Output
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join

    uri = Join(
        on="/",
        values=[ctx.config.s3_root, "executions", ExecutionVariables.PIPELINE_EXECUTION_ID, step, name],
    )
    return ProcessingOutput(
        output_name=name,
        s3_output=ProcessingS3Output(s3_uri=uri, local_path=local_path, s3_upload_mode="EndOfJob"),
    )
