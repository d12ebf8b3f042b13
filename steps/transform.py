"""Optional batch-transform step: score an S3 prefix of raw records with the model a ModelStep created.

Why these defaults: the artefact's inference.py reads raw CSV records without a header (contracts sec. 8),
so records are split by line and packed MultiRecord up to MaxPayloadInMB (fewest requests); each output row
is the input row followed by its prediction (JoinSource Input), so scores stay next to their machine ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steps.context import BuildContext

STEP_NAME = "BatchTransform"
CONTENT_TYPE = "text/csv"


@dataclass(frozen=True)
class TransformSettings:
    """TransformInput / TransformOutput / DataProcessing choices of the step (CreateTransformJob names)."""

    strategy: str = "MultiRecord"
    max_payload_mb: int = 6
    max_concurrent_transforms: int | None = None  # None: the container's /execution-parameters decide
    join_source: str | None = "Input"
    input_filter: str | None = None  # e.g. "$[1:]" to drop an id column before the model
    output_filter: str | None = None  # e.g. "$[0,-1]" to keep the id and the score
    accept: str = CONTENT_TYPE
    instance_count: int = 1
    instance_type: str | None = None  # None: the config's deploy.instance_type


def output_uri(ctx: BuildContext) -> Any:
    """Outputs live under the execution id, like the processing steps', so executions never overwrite."""
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join

    return Join(
        on="/", values=[ctx.config.s3_root, "executions", ExecutionVariables.PIPELINE_EXECUTION_ID, "batch"]
    )


def build(
    ctx: BuildContext, model_step: Any, input_uri_param: Any, settings: TransformSettings | None = None
) -> Any:
    """A TransformStep scoring `input_uri_param` (S3 prefix of raw CSV records) with `model_step`'s model.

    Args:
        ctx: the shared build context (session, config, retries, cache).
        model_step: a ModelStep whose properties.ModelName names the model (steps/deploy.py's CreateModel).
        input_uri_param: the input prefix, e.g. a ParameterString.
        settings: split/batch/filter choices; defaults as in the module docstring.
    """
    from sagemaker.core.transformer import Transformer
    from sagemaker.mlops.workflow.steps import TransformStep

    cfg = ctx.config
    chosen = settings or TransformSettings()
    transformer = Transformer(
        model_name=model_step.properties.ModelName,
        instance_count=chosen.instance_count,
        instance_type=chosen.instance_type or cfg.deploy.instance_type,
        strategy=chosen.strategy,
        assemble_with="Line",
        output_path=output_uri(ctx),
        output_kms_key=cfg.security.kms_key_id,
        accept=chosen.accept,
        max_concurrent_transforms=chosen.max_concurrent_transforms,
        max_payload=chosen.max_payload_mb,
        volume_kms_key=cfg.security.volume_kms_key_id,
        sagemaker_session=ctx.session,
    )
    step_args = transformer.transform(
        data=input_uri_param,
        data_type="S3Prefix",
        content_type=CONTENT_TYPE,
        split_type="Line",
        input_filter=chosen.input_filter,
        output_filter=chosen.output_filter,
        join_source=chosen.join_source,
    )
    return TransformStep(
        name=STEP_NAME,
        step_args=step_args,
        description="Score raw records in bulk with the newly created model.",
        cache_config=ctx.cache_config(),
        retry_policies=ctx.job_retries(),
    )
