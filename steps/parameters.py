"""The pipeline's Parameters: what a started execution may override without recompiling.

Spot on/off, max wait, max run and the tuning budget are not here: SDK v3 types those fields as plain
bool/int and rejects pipeline variables (SDK issue #4140), so `python -m pipelines.run` compiles them.
"""

from __future__ import annotations

from typing import Any

from pipelines.config import PipelineConfig

NO_CHAMPION_KEY = "champion/none/NO_CHAMPION"


def no_champion_uri(config: PipelineConfig) -> str:
    """Prefix holding only a marker file: the evaluation input when no approved champion exists."""
    return f"{config.s3_root}/{NO_CHAMPION_KEY.rsplit('/', 1)[0]}/"


def build_parameters(config: PipelineConfig) -> dict[str, Any]:
    from sagemaker.core.workflow.parameters import (
        ParameterBoolean,
        ParameterFloat,
        ParameterInteger,
        ParameterString,
    )

    optional: dict[str, Any] = {}
    if config.batch.enabled:
        optional["BatchInputUri"] = ParameterString("BatchInputUri", default_value=config.batch.input_uri)
    return optional | {
        "InputDataUri": ParameterString("InputDataUri", default_value=config.input_uri),
        "ProcessingInstanceType": ParameterString(
            "ProcessingInstanceType", default_value=config.processing.instance_type
        ),
        "ProcessingInstanceCount": ParameterInteger(
            "ProcessingInstanceCount", default_value=config.processing.instance_count
        ),
        "TrainingInstanceType": ParameterString(
            "TrainingInstanceType", default_value=config.training.instance_type
        ),
        "TrainingInstanceCount": ParameterInteger(
            "TrainingInstanceCount", default_value=config.training.instance_count
        ),
        "GateThreshold": ParameterFloat("GateThreshold", default_value=config.evaluation.threshold),
        "ChampionTolerance": ParameterFloat(
            "ChampionTolerance", default_value=config.evaluation.champion_tolerance
        ),
        "ChampionModelUri": ParameterString("ChampionModelUri", default_value=no_champion_uri(config)),
        "ModelApprovalStatus": ParameterString(
            "ModelApprovalStatus", default_value=config.registry.approval_status
        ),
        "DeployModel": ParameterBoolean("DeployModel", default_value=config.deploy.enabled),
        "EndpointInstanceType": ParameterString(
            "EndpointInstanceType", default_value=config.deploy.instance_type
        ),
    }
