"""Train step: XGBoost script mode on managed Spot with per-data checkpoints and Debugger rules.

Script mode is requested the way SageMaker's XGBoost framework container reads it (`sagemaker_program`,
`sagemaker_submit_directory` hyperparameters) rather than through ModelTrainer's `SourceCode`: the latter
uploads its driver scripts to a fresh temporary key on every build, which changes the step arguments and so
defeats step caching on SageMaker and locally.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pipelines.config import TRAIN_METRICS
from steps.context import BuildContext

STEP_NAME = "Train"
CHANNELS = ("train", "validation")


def metric_definitions(ctx: BuildContext) -> list[dict[str, str]]:
    """Regexes matching model_code/train.py's log lines (docs/contracts.md sec. 6)."""
    metric, _ = TRAIN_METRICS[ctx.config.schema_.problem_type]
    return [
        {"Name": f"validation:{metric}", "Regex": f"validation-{metric}:([-+0-9.eE]+)"},
        {"Name": f"train:{metric}", "Regex": f"train-{metric}:([-+0-9.eE]+)"},
    ]


def hyperparameters(ctx: BuildContext) -> dict[str, Any]:
    cfg = ctx.config
    metric, _ = TRAIN_METRICS[cfg.schema_.problem_type]
    return {
        **cfg.training.hyperparameters,
        "eval_metric": metric,
        "checkpoint_every": cfg.training.checkpoint_every,
        "sagemaker_program": "train.py",
        "sagemaker_submit_directory": ctx.code_uri("train.py"),
    }


def model_trainer(ctx: BuildContext, *, checkpoints: Any | None, base_job_name: str) -> Any:
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        Networking,
        OutputDataConfig,
        StoppingCondition,
    )
    from sagemaker.train.model_trainer import ModelTrainer

    cfg = ctx.config
    sec = cfg.security
    spot = cfg.training.use_spot
    networking = None
    if sec.subnets or sec.enable_network_isolation or sec.encrypt_inter_container_traffic:
        networking = Networking(
            subnets=sec.subnets or None,
            security_group_ids=sec.security_group_ids or None,
            enable_network_isolation=sec.enable_network_isolation or None,
            enable_inter_container_traffic_encryption=sec.encrypt_inter_container_traffic or None,
        )
    return ModelTrainer(
        training_image=ctx.image,
        role=cfg.role_arn,
        sagemaker_session=ctx.session,
        base_job_name=base_job_name,
        compute=Compute(
            instance_type=ctx.params["TrainingInstanceType"],
            instance_count=ctx.params["TrainingInstanceCount"],
            enable_managed_spot_training=spot,
            volume_kms_key_id=sec.volume_kms_key_id,
        ),
        stopping_condition=StoppingCondition(
            max_runtime_in_seconds=cfg.training.max_run,
            max_wait_time_in_seconds=cfg.training.max_wait if spot else None,
        ),
        checkpoint_config=(
            CheckpointConfig(s3_uri=checkpoints, local_path="/opt/ml/checkpoints") if checkpoints else None
        ),
        output_data_config=OutputDataConfig(
            s3_output_path=f"{cfg.s3_root}/models", kms_key_id=sec.kms_key_id, compression_type="GZIP"
        ),
        networking=networking,
        hyperparameters=hyperparameters(ctx),
        environment={"PYTHONUNBUFFERED": "1"},
    )


def channels(preprocess: Any) -> list[Any]:
    from sagemaker.core.training.configs import InputData

    outputs = preprocess.properties.ProcessingOutputConfig.Outputs
    return [
        InputData(channel_name=name, data_source=outputs[name].S3Output.S3Uri, content_type="text/csv")
        for name in CHANNELS
    ]


def checkpoint_uri(ctx: BuildContext, preprocess: Any) -> Any:
    """Checkpoints keyed by (code, hyperparameters, data): a resumed job never picks up another model's state.

    The data part is the preprocessing job's name, which only changes when preprocessing really reran, so a
    cached preprocessing step keeps the training arguments (and with them the training cache key) stable.
    """
    from sagemaker.core.workflow.functions import Join

    fingerprint = hashlib.sha256(
        json.dumps(
            [ctx.sources["train.py"].sha256, hyperparameters(ctx)], sort_keys=True, default=str
        ).encode()
    ).hexdigest()[:16]
    return Join(
        on="/",
        values=[ctx.config.s3_root, "checkpoints", fingerprint, preprocess.properties.ProcessingJobName],
    )


def debugger_request(ctx: BuildContext) -> dict[str, Any]:
    """DebugHookConfig + built-in rules (loss not decreasing, overfit) for the training request.

    ModelTrainer (SDK v3) has no `rules` argument, but the SDK still ships the rule configs and image URIs;
    they are attached to the request here. The rules read the `metrics` collection the XGBoost hook saves.
    """
    import smdebug_rulesconfig as rule_configs
    from sagemaker.core.debugger.debugger import Rule, get_rule_container_image_uri

    cfg = ctx.config
    rules = [
        Rule.sagemaker(rule_configs.loss_not_decreasing(), rule_parameters={"collection_names": "metrics"}),
        Rule.sagemaker(rule_configs.overfit()),
    ]
    return {
        "DebugHookConfig": {
            "S3OutputPath": f"{cfg.s3_root}/debug",
            "CollectionConfigurations": [
                {"CollectionName": "metrics", "CollectionParameters": {"save_interval": "1"}}
            ],
        },
        "DebugRuleConfigurations": [
            # Rule.sagemaker leaves a placeholder image that estimators used to fill in; fill it here.
            {
                **rule.to_debugger_rule_config_dict(),
                "RuleEvaluatorImage": get_rule_container_image_uri(rule.name, cfg.region),
            }
            for rule in rules
        ],
    }


def build(ctx: BuildContext, preprocess: Any) -> Any:
    from sagemaker.mlops.workflow.steps import TrainingStep

    trainer = model_trainer(ctx, checkpoints=checkpoint_uri(ctx, preprocess), base_job_name="pdm-train")
    step_args = trainer.train(input_data_config=channels(preprocess), wait=False)
    extra = debugger_request(ctx) if ctx.config.training.debugger_rules else {}

    class TrainingStepWithRules(TrainingStep):
        """TrainingStep whose request also carries the Debugger settings ModelTrainer cannot express."""

        @property
        def arguments(self) -> dict[str, Any]:
            return {**super().arguments, **extra}

    return TrainingStepWithRules(
        name=STEP_NAME,
        step_args=step_args,
        description="Managed-Spot XGBoost training that checkpoints and resumes after interruptions.",
        cache_config=ctx.cache_config(),
        retry_policies=ctx.job_retries(),
    )
