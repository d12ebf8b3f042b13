"""Evaluate step: candidate and champion on the same test split; evaluation.json feeds gate and registry."""

from __future__ import annotations

from typing import Any

from steps.context import BuildContext
from steps.processor import framework_processor, s3_input, s3_output

STEP_NAME = "Evaluate"
PROPERTY_FILE = "Evaluation"


def property_file() -> Any:
    from sagemaker.core.workflow.properties import PropertyFile

    return PropertyFile(name=PROPERTY_FILE, output_name="evaluation", path="evaluation.json")


def build(ctx: BuildContext, preprocess: Any, model_uri: Any, evaluation: Any) -> Any:
    from sagemaker.mlops.workflow.steps import ProcessingStep

    cfg = ctx.config
    processor = framework_processor(ctx, "pdm-evaluate")
    test_uri = preprocess.properties.ProcessingOutputConfig.Outputs["test"].S3Output.S3Uri
    step_args = processor.run(
        code="evaluate.py",
        source_dir=ctx.code_uri("evaluate.py"),
        job_name="pdm-evaluate",
        inputs=[
            s3_input("model", model_uri, "/opt/ml/processing/model"),
            s3_input("test", test_uri, "/opt/ml/processing/test"),
            s3_input("champion", ctx.params["ChampionModelUri"], "/opt/ml/processing/champion"),
        ],
        outputs=[s3_output(ctx, "evaluation", "evaluate", "/opt/ml/processing/evaluation")],
        arguments=[
            *ctx.schema_arguments(),
            "--gate-metric",
            cfg.evaluation.metric,
            "--decision-threshold",
            str(cfg.evaluation.decision_threshold),
            "--precision-target",
            str(cfg.evaluation.precision_target),
        ],
    )
    return ProcessingStep(
        name=STEP_NAME,
        step_args=step_args,
        description="Score the candidate and the approved champion on the test split.",
        property_files=[evaluation],
        cache_config=ctx.cache_config(),
        retry_policies=ctx.job_retries(),
    )


def evaluation_json_uri(step: Any) -> Any:
    from sagemaker.core.workflow.functions import Join

    base = step.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri
    return Join(on="/", values=[base, "evaluation.json"])
