"""Tune step: hyperparameter search over the same trainer, objective parsed from the training logs."""

from __future__ import annotations

from typing import Any

from pipelines.config import TRAIN_METRICS
from steps.context import BuildContext
from steps.train import channels, metric_definitions, model_trainer

STEP_NAME = "Tune"


def parameter_ranges(ctx: BuildContext) -> dict[str, Any]:
    from sagemaker.core.parameter import ContinuousParameter, IntegerParameter

    tuning = ctx.config.tuning
    ranges: dict[str, Any] = {}
    for name, (low, high) in tuning.ranges.items():
        if name in tuning.integer_parameters:
            ranges[name] = IntegerParameter(int(low), int(high))
        else:
            ranges[name] = ContinuousParameter(low, high)
    return ranges


def build(ctx: BuildContext, preprocess: Any) -> Any:
    from sagemaker.mlops.workflow.steps import TuningStep
    from sagemaker.train.tuner import HyperparameterTuner

    cfg = ctx.config
    metric, objective_type = TRAIN_METRICS[cfg.schema_.problem_type]
    # Trials share one TrainingJobDefinition, so a shared checkpoint prefix would let trials resume each
    # other's models: tuning trials run without checkpoints (a Spot interruption restarts that trial).
    trainer = model_trainer(ctx, checkpoints=None, base_job_name="pdm-tune")
    for name in parameter_ranges(ctx):
        trainer.hyperparameters.pop(name, None)
    tuner = HyperparameterTuner(
        model_trainer=trainer,
        objective_metric_name=f"validation:{metric}",
        objective_type=objective_type,
        hyperparameter_ranges=parameter_ranges(ctx),
        metric_definitions=metric_definitions(ctx),
        strategy=cfg.tuning.strategy,
        max_jobs=cfg.tuning.max_jobs,
        max_parallel_jobs=cfg.tuning.max_parallel,
        base_tuning_job_name="pdm-tune",
        random_seed=cfg.data.seed,
    )
    step_args = tuner.tune(inputs=channels(preprocess), wait=False)
    trial_settings = _trial_security(ctx)

    class SecureTuningStep(TuningStep):
        """TuningStep whose trials keep the KMS/network settings the SDK v3 tuner drops from them."""

        @property
        def arguments(self) -> dict[str, Any]:
            args = super().arguments
            definition = args["TrainingJobDefinition"]
            settings = dict(trial_settings)
            if "VolumeKmsKeyId" in settings:
                definition["ResourceConfig"]["VolumeKmsKeyId"] = settings.pop("VolumeKmsKeyId")
            definition.update(settings)
            return args

    return SecureTuningStep(
        name=STEP_NAME,
        step_args=step_args,
        description="Search the XGBoost hyperparameters; the best trial becomes the candidate model.",
        cache_config=ctx.cache_config(),
        retry_policies=ctx.job_retries(),
    )


def _trial_security(ctx: BuildContext) -> dict[str, Any]:
    """What ModelTrainer puts on a training request but HyperparameterTuner (SDK 3.27) leaves out."""
    sec = ctx.config.security
    settings: dict[str, Any] = {}
    if sec.volume_kms_key_id:
        settings["VolumeKmsKeyId"] = sec.volume_kms_key_id
    if sec.enable_network_isolation:
        settings["EnableNetworkIsolation"] = True
    if sec.encrypt_inter_container_traffic:
        settings["EnableInterContainerTrafficEncryption"] = True
    return settings


def best_model_uri(ctx: BuildContext, tune_step: Any) -> Any:
    """S3 URI of the best trial's model.tar.gz (`<output path>/<job>/output/model.tar.gz`)."""
    return tune_step.get_top_model_s3_uri(
        top_k=0, s3_bucket=ctx.config.bucket, prefix=f"{ctx.config.prefix}/models"
    )
