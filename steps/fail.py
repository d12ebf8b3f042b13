"""Fail step: stops the execution with the metric, the threshold and the champion's value in the message."""

from __future__ import annotations

from typing import Any

from steps.context import BuildContext

STEP_NAME = "GateFailed"


def build(ctx: BuildContext, evaluate_step: Any, evaluation: Any) -> Any:
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.mlops.workflow.fail_step import FailStep

    cfg = ctx.config

    def value(path: str) -> Any:
        return JsonGet(step_name=evaluate_step.name, property_file=evaluation, json_path=path)

    comparison = "at least" if cfg.metric_direction == "maximize" else "at most"
    message = Join(
        on=" ",
        values=[
            f"Model gate failed: {cfg.evaluation.metric} =",
            value(cfg.metric_json_path),
            f"(needs {comparison}",
            ctx.params["GateThreshold"],
            "); champion",
            cfg.evaluation.metric,
            "=",
            value("gate.champion_display"),
            "; improvement over champion =",
            value("gate.improvement"),
            "(needs at least minus",
            ctx.params["ChampionTolerance"],
            ").",
        ],
    )
    return FailStep(name=STEP_NAME, error_message=message)
