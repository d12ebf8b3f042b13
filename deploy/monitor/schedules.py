"""Model Monitor schedules on SageMaker: create or update both, delete both (with their job definitions)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TextIO

from botocore.exceptions import ClientError

from deploy.clients import EXIT_OK, Target, UsageError, is_not_found
from deploy.monitor import context as common
from deploy.monitor import requests as rq
from deploy.monitor.context import Context, capture_destination, read_baseline

# Polls while a deleted schedule disappears: its job definition cannot be deleted before.
DELETE_POLLS = 60


_CREATE = {
    rq.DATA_QUALITY: "create_data_quality_job_definition",
    rq.MODEL_QUALITY: "create_model_quality_job_definition",
}
_DELETE = {
    rq.DATA_QUALITY: "delete_data_quality_job_definition",
    rq.MODEL_QUALITY: "delete_model_quality_job_definition",
}


def _need_aws(target: Target, command: str) -> None:
    if target.is_local:
        raise UsageError(
            f"`{command}` manages Model Monitor schedules, which exist only on SageMaker "
            "(--target sagemaker); locally, run `python -m deploy.monitor check`"
        )


def describe_schedule(client: Any, name: str) -> dict[str, Any] | None:
    try:
        return dict(client.describe_monitoring_schedule(MonitoringScheduleName=name))
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def upsert_schedule(
    client: Any, name: str, kind: str, build: Callable[[str], dict[str, Any]], expression: str, out: TextIO
) -> str:
    """Create the schedule, or point it at a new job definition (definitions are immutable).

    A failed schedule call deletes the definition just made, so a refused request leaves nothing behind.
    """
    existing = describe_schedule(client, name)
    definition = rq.job_definition_name(name, common.suffix())
    getattr(client, _CREATE[kind])(**build(definition))
    config = rq.schedule_config(kind, definition, expression)
    try:
        if existing is None:
            client.create_monitoring_schedule(MonitoringScheduleName=name, MonitoringScheduleConfig=config)
        else:
            client.update_monitoring_schedule(MonitoringScheduleName=name, MonitoringScheduleConfig=config)
    except ClientError:
        getattr(client, _DELETE[kind])(JobDefinitionName=definition)
        raise
    print(f"{'updated' if existing else 'created'} schedule {name} ({expression}) -> {definition}", file=out)
    old = (existing or {}).get("MonitoringScheduleConfig", {}).get("MonitoringJobDefinitionName")
    if old and old != definition:
        try:
            getattr(client, _DELETE[kind])(JobDefinitionName=old)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "Error")
            print(f"warning: old job definition {old} not deleted ({code}): delete it later", file=out)
    return definition


def schedule(ctx: Context, args: argparse.Namespace) -> int:
    """Both schedules of the endpoint; the baseline and the endpoint's data capture must exist first."""
    target, cfg = ctx.target, ctx.cfg
    _need_aws(target, "schedule")
    role, security = ctx.role(args.role_arn), cfg.security
    try:
        read_baseline(target, ctx.baseline_uri)
    except UsageError as exc:
        if not args.skip_without_baseline:
            raise
        # A release before the first baseline: deploying must not fail, and the log says what is missing.
        print(f"schedules not created: {exc}", file=ctx.out)
        return EXIT_OK
    capture_destination(target, ctx.endpoint)
    image = args.image or rq.analyzer_image(target.region)
    resources = rq.Resources(instance_type=args.instance_type)
    monitoring = f"{cfg.s3_root}/monitoring"
    data_schedule = ctx.schedule(rq.DATA_QUALITY)
    upsert_schedule(
        target.sagemaker,
        data_schedule,
        rq.DATA_QUALITY,
        lambda name: rq.data_quality_job_definition(
            name, image, ctx.endpoint, ctx.baseline_uri, ctx.reports_uri, role, security, resources
        ),
        args.schedule_expression,
        ctx.out,
    )
    if args.no_model_quality:
        return EXIT_OK
    ground_truth = args.ground_truth_uri or f"{monitoring}/ground-truth"
    upsert_schedule(
        target.sagemaker,
        ctx.schedule(rq.MODEL_QUALITY),
        rq.MODEL_QUALITY,
        lambda name: rq.model_quality_job_definition(
            name,
            image,
            ctx.endpoint,
            cfg.schema_.problem_type,
            ground_truth,
            f"{monitoring}/model-quality/reports",
            role,
            security,
            resources,
            probability_threshold=cfg.evaluation.decision_threshold,
            constraints_uri=args.model_quality_constraints,
        ),
        args.schedule_expression,
        ctx.out,
    )
    return EXIT_OK


def delete(ctx: Context) -> int:
    """Delete both schedules, wait until each is gone, then delete its job definition."""
    _need_aws(ctx.target, "delete")
    client = ctx.target.sagemaker
    for kind in (rq.DATA_QUALITY, rq.MODEL_QUALITY):
        name = ctx.schedule(kind)
        existing = describe_schedule(client, name)
        if existing is None:
            print(f"no schedule {name}", file=ctx.out)
            continue
        client.delete_monitoring_schedule(MonitoringScheduleName=name)
        for _ in range(DELETE_POLLS):
            if describe_schedule(client, name) is None:
                break
            common.sleep(5)
        definition = existing.get("MonitoringScheduleConfig", {}).get("MonitoringJobDefinitionName")
        if definition:
            try:
                getattr(client, _DELETE[kind])(JobDefinitionName=definition)
            except ClientError as exc:
                if not is_not_found(exc):
                    raise
        print(
            f"deleted schedule {name}" + (f" and job definition {definition}" if definition else ""),
            file=ctx.out,
        )
    return EXIT_OK
