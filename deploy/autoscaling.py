"""`python -m deploy.autoscaling`: target-tracking scaling so variant capacity follows traffic (AWS)."""

# Application Auto Scaling keeps each variant's SageMakerVariantInvocationsPerInstance near a target between
# a minimum and a maximum instance count; a long scale-in cool-down stops it removing capacity between
# bursts. The local engine runs one server per endpoint, so this is an AWS-only feature.

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field, model_validator

from deploy.clients import Target, UsageError, cli_parser, run_cli, target_from_args

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"


class AutoscalingSettings(BaseModel):
    """Scaling bounds and the target: invocations per instance per minute (the metric's unit)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    min_capacity: int = Field(2, ge=1)
    max_capacity: int = Field(6, ge=1)
    target_invocations_per_instance: float = Field(100.0, gt=0)
    scale_in_cooldown_seconds: int = Field(300, ge=0)
    scale_out_cooldown_seconds: int = Field(60, ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSettings:
        if self.max_capacity < self.min_capacity:
            raise ValueError(f"max_capacity {self.max_capacity} is below min_capacity {self.min_capacity}")
        return self


def resource_id(endpoint: str, variant: str) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


def policy_name(endpoint: str, variant: str) -> str:
    return f"{endpoint}-{variant}-invocations-per-instance"


def scalable_target_request(endpoint: str, variant: str, settings: AutoscalingSettings) -> dict[str, Any]:
    return {
        "ServiceNamespace": NAMESPACE,
        "ResourceId": resource_id(endpoint, variant),
        "ScalableDimension": DIMENSION,
        "MinCapacity": settings.min_capacity,
        "MaxCapacity": settings.max_capacity,
    }


def scaling_policy_request(endpoint: str, variant: str, settings: AutoscalingSettings) -> dict[str, Any]:
    return {
        "PolicyName": policy_name(endpoint, variant),
        "ServiceNamespace": NAMESPACE,
        "ResourceId": resource_id(endpoint, variant),
        "ScalableDimension": DIMENSION,
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": float(settings.target_invocations_per_instance),
            "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
            "ScaleInCooldown": settings.scale_in_cooldown_seconds,
            "ScaleOutCooldown": settings.scale_out_cooldown_seconds,
        },
    }


def apply(scaling: Any, endpoint: str, variant: str, settings: AutoscalingSettings) -> None:
    """Register the variant as a scalable target and attach the policy (both calls are upserts)."""
    scaling.register_scalable_target(**scalable_target_request(endpoint, variant, settings))
    scaling.put_scaling_policy(**scaling_policy_request(endpoint, variant, settings))


def remove(scaling: Any, endpoint: str, variant: str) -> bool:
    """Delete the policy and deregister the target; False when the variant was not registered."""
    common = {
        "ServiceNamespace": NAMESPACE,
        "ResourceId": resource_id(endpoint, variant),
        "ScalableDimension": DIMENSION,
    }
    try:
        scaling.delete_scaling_policy(PolicyName=policy_name(endpoint, variant), **common)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ObjectNotFoundException":
            raise
    try:
        scaling.deregister_scalable_target(**common)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ObjectNotFoundException":
            return False
        raise
    return True


def registered(scaling: Any, endpoint: str, variants: Sequence[str]) -> set[str]:
    """Which of these variants are scalable targets now."""
    if not variants:
        return set()
    response = scaling.describe_scalable_targets(
        ServiceNamespace=NAMESPACE,
        ResourceIds=[resource_id(endpoint, v) for v in variants],
        ScalableDimension=DIMENSION,
    )
    return {t["ResourceId"].rsplit("/", 1)[-1] for t in response.get("ScalableTargets", [])}


def release_for_update(
    scaling: Any, endpoint: str, old_variants: Sequence[dict[str, Any]], new_config: dict[str, Any]
) -> list[str]:
    """Deregister the variants an update would give another instance type or remove.

    SageMaker refuses UpdateEndpoint when it changes the instance type of (or removes) a variant that is a
    scalable target; a model change alone is allowed. The caller registers the new variants afterwards.
    """
    new = {v["VariantName"]: v.get("InstanceType") for v in new_config["ProductionVariants"]}
    changing = [
        v["VariantName"]
        for v in old_variants
        if v["VariantName"] not in new or new[v["VariantName"]] != v.get("InstanceType")
    ]
    released = [v for v in sorted(registered(scaling, endpoint, changing)) if remove(scaling, endpoint, v)]
    return released


def summary(settings: AutoscalingSettings) -> str:
    return (
        f"{settings.min_capacity}..{settings.max_capacity} instances, target "
        f"{settings.target_invocations_per_instance:g} invocations/instance/min, "
        f"scale-in cool-down {settings.scale_in_cooldown_seconds} s"
    )


# --- CLI ---------------------------------------------------------------------------------------------
def _variants(target: Target, endpoint: str, chosen: list[str] | None) -> list[str]:
    described = target.sagemaker.describe_endpoint(EndpointName=endpoint)
    names = [v["VariantName"] for v in described.get("ProductionVariants", [])]
    for name in chosen or []:
        if name not in names:
            raise UsageError(f"endpoint {endpoint} has no variant {name} (variants: {', '.join(names)})")
    return chosen or names


def _parser() -> argparse.ArgumentParser:
    parser, sub, common = cli_parser("python -m deploy.autoscaling", __doc__)
    apply_cmd = sub.add_parser("apply", parents=[common], help="register the variants and attach the policy")
    remove_cmd = sub.add_parser("remove", parents=[common], help="delete the policy and deregister")
    show_cmd = sub.add_parser("show", parents=[common], help="scalable targets and policies of an endpoint")
    for command in (apply_cmd, remove_cmd, show_cmd):
        command.add_argument("endpoint")
        command.add_argument("--variant", action="append", help="a variant (default: all); repeatable")
    apply_cmd.add_argument("--min", type=int, dest="min_capacity")
    apply_cmd.add_argument("--max", type=int, dest="max_capacity")
    apply_cmd.add_argument("--target-invocations", type=float, help="invocations per instance per minute")
    apply_cmd.add_argument("--scale-in-cooldown", type=int)
    apply_cmd.add_argument("--scale-out-cooldown", type=int)
    return parser


def main(argv: list[str] | None = None, target: Target | None = None, out: TextIO = sys.stdout) -> int:
    args = _parser().parse_args(argv)
    return run_cli(lambda: _run(args, target or target_from_args(args), out))


def _run(args: argparse.Namespace, target: Target, out: TextIO) -> int:
    from deploy.endpoint import load_settings

    scaling = target.aws("application-autoscaling")
    if scaling is None:
        raise UsageError(
            "auto scaling needs --target sagemaker: the local engine runs one server per endpoint"
        )
    settings = None
    if args.command == "apply":
        # Bad bounds are the user's input: refuse them before any AWS call.
        settings = load_settings(
            args.settings,
            {
                "autoscaling.min_capacity": args.min_capacity,
                "autoscaling.max_capacity": args.max_capacity,
                "autoscaling.target_invocations_per_instance": args.target_invocations,
                "autoscaling.scale_in_cooldown_seconds": args.scale_in_cooldown,
                "autoscaling.scale_out_cooldown_seconds": args.scale_out_cooldown,
            },
        ).autoscaling
    variants = _variants(target, args.endpoint, args.variant)
    if settings is not None:
        for variant in variants:
            apply(scaling, args.endpoint, variant, settings)
            print(f"{resource_id(args.endpoint, variant)}: {summary(settings)}", file=out)
        return 0
    if args.command == "remove":
        for variant in variants:
            done = remove(scaling, args.endpoint, variant)
            print(
                f"{resource_id(args.endpoint, variant)}: {'removed' if done else 'was not registered'}",
                file=out,
            )
        return 0
    ids = [resource_id(args.endpoint, v) for v in variants]
    targets = scaling.describe_scalable_targets(
        ServiceNamespace=NAMESPACE, ResourceIds=ids, ScalableDimension=DIMENSION
    ).get("ScalableTargets", [])
    policies = [
        p
        for p in scaling.describe_scaling_policies(
            ServiceNamespace=NAMESPACE, ScalableDimension=DIMENSION
        ).get("ScalingPolicies", [])
        if p["ResourceId"] in ids
    ]
    shown = {"ScalableTargets": targets, "ScalingPolicies": policies}
    print(json.dumps(shown, indent=2, default=str), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
