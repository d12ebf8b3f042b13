"""`python -m deploy.monitor`: Model Monitor baselines and schedules on SageMaker, the same checks locally.

Commands:
  baseline  data-quality baseline (statistics.json + constraints.json) of the training data: computed here on
            the local target, by Model Monitor's analyzer (a processing job) on SageMaker.
  schedule  create or update the hourly `<project>-<env>-data-quality` and `<project>-<env>-model-quality`
            monitoring schedules of the endpoint (SageMaker only): the infra's retraining alarms read their
            CloudWatch metrics.
  check     compare the endpoint's captured requests with the baseline now, as a monitoring execution does,
            and write statistics.json, constraint_violations.json and the drift metric values.
  delete    delete both schedules and their job definitions (SageMaker only).

Exit codes: 0 done (no violations, or violations without --fail-on-violation); 1 violations with
--fail-on-violation, or a refused/failed AWS request; 2 bad input (no baseline, no capture, bad options);
3 the target cannot be used (no credentials); 130 interrupted.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from deploy.clients import (
    EXIT_FAILED,
    EXIT_OK,
    Target,
    UsageError,
    cli_parser,
    run_cli,
    split_s3,
    target_from_args,
)
from deploy.monitor import context as common
from deploy.monitor import requests as rq
from deploy.monitor.capture import capture_prefix, read_captures, read_dataset, records_frame
from deploy.monitor.context import (
    Context,
    capture_destination,
    json_bytes,
    put_object,
    raw_columns,
    read_baseline,
)
from deploy.monitor.quality import join, model_quality, read_ground_truth
from deploy.monitor.schedules import delete, schedule
from deploy.monitor.stats import StatisticsError, compare, statistics, suggest_constraints

# serving.yaml's ProjectName rule and default; environments are the infra's parameter files.
PROJECT_PATTERN = re.compile(r"^[a-z][a-z0-9-]{1,11}$")
DEFAULT_PROJECT = "pdm"
ENVIRONMENTS = ("dev", "staging", "prod")
DATA_METRICS_NAMESPACE = "aws/sagemaker/Endpoints/data-metrics"
MODEL_METRICS_NAMESPACE = "aws/sagemaker/Endpoints/model-metrics"


# --- baseline ------------------------------------------------------------------------------------------
def baseline(ctx: Context, dataset_uri: str, role: str | None, image: str | None, wait: bool) -> int:
    """Profile the training data's input columns and write (or have the analyzer write) the baseline."""
    target, security = ctx.target, ctx.cfg.security
    # Options are checked before anything is read or written.
    role_arn = None if target.is_local else ctx.role(role)
    frame = read_dataset(target.objects(), dataset_uri, raw_columns(ctx.cfg))
    base = ctx.baseline_uri.rstrip("/")
    if target.is_local:
        try:
            stats = statistics(frame)
        except StatisticsError as exc:
            raise UsageError(f"{dataset_uri}: {exc}") from None
        constraints = suggest_constraints(stats)
        put_object(target, f"{base}/statistics.json", json_bytes(stats))
        put_object(target, f"{base}/constraints.json", json_bytes(constraints))
        print(f"baseline of {len(frame)} records, {len(stats['features'])} features -> {base}/", file=ctx.out)
        for feature in constraints["features"]:
            print(f"  {feature['name']:<28} {feature['inferred_type']}", file=ctx.out)
        return EXIT_OK
    if frame.empty:
        raise UsageError(f"{dataset_uri}: the data set has no rows")
    # The analyzer profiles every column of its input: hand it the input columns only.
    dataset = f"{base}/dataset/baseline.csv"
    put_object(target, dataset, frame.to_csv(index=False).encode("utf-8"), security.kms_key_id)
    name = rq.job_definition_name(f"{ctx.project}-{ctx.env}-baseline", common.suffix())
    request = rq.baseline_job_request(
        name, image or rq.analyzer_image(target.region), dataset, base, str(role_arn), security
    )
    target.sagemaker.create_processing_job(**request)
    print(f"baselining job {name} started: statistics.json and constraints.json -> {base}/", file=ctx.out)
    if not wait:
        return EXIT_OK
    while True:
        job = target.sagemaker.describe_processing_job(ProcessingJobName=name)
        status = job["ProcessingJobStatus"]
        if status in ("Completed", "Failed", "Stopped"):
            break
        common.sleep(30)
    print(f"baselining job {name}: {status}", file=ctx.out)
    if status != "Completed":
        print(f"error: {job.get('FailureReason', status)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


# --- check ---------------------------------------------------------------------------------------------
def check(
    ctx: Context,
    capture_uri: str | None,
    fail_on_violation: bool,
    ground_truth_uri: str | None = None,
    now: datetime | None = None,
) -> int:
    """One data-quality monitoring execution over everything captured, run here (and, with ground truth,
    one model-quality execution)."""
    target = ctx.target
    if ground_truth_uri:
        split_s3(ground_truth_uri)
    stats, constraints = read_baseline(target, ctx.baseline_uri)
    destination = capture_uri or capture_destination(target, ctx.endpoint)
    prefix = capture_prefix(destination, ctx.endpoint)
    names = [f["name"] for f in constraints.get("features", [])]
    records = read_captures(target.objects(), prefix, names)
    if not records:
        raise UsageError(f"no captured requests under {prefix}: invoke the endpoint first (data capture on?)")
    current, violations, metrics = compare(stats, constraints, records_frame(records))
    when = (now or datetime.now(UTC)).strftime("%Y/%m/%d/%H")
    files: dict[str, Any] = {}
    schedule_name = ctx.schedule(rq.DATA_QUALITY)
    report = f"{ctx.reports_uri}/{ctx.endpoint}/{schedule_name}/{when}"
    files[f"{report}/statistics.json"] = current
    files[f"{report}/constraint_violations.json"] = {"violations": violations}
    files[f"{report}/cloudwatch_metrics.json"] = _cloudwatch(
        DATA_METRICS_NAMESPACE, ctx, schedule_name, metrics
    )
    quality: dict[str, float] | None = None
    if ground_truth_uri:
        pairs = join(records, read_ground_truth(target.objects(), ground_truth_uri))
        quality_stats, quality = model_quality(
            pairs, ctx.cfg.schema_.problem_type, ctx.cfg.evaluation.decision_threshold
        )
        quality_schedule = ctx.schedule(rq.MODEL_QUALITY)
        quality_report = (
            f"{ctx.cfg.s3_root}/monitoring/model-quality/reports/{ctx.endpoint}/{quality_schedule}/{when}"
        )
        files[f"{quality_report}/statistics.json"] = quality_stats
        files[f"{quality_report}/cloudwatch_metrics.json"] = _cloudwatch(
            MODEL_METRICS_NAMESPACE, ctx, quality_schedule, quality
        )
    # Everything is computed before the first write; each write is atomic.
    for uri, value in files.items():
        put_object(target, uri, json_bytes(value), ctx.cfg.security.kms_key_id)
    _summary(ctx.out, len(records), prefix, report, violations, metrics)
    if quality is not None:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in quality.items())
        print(
            f"model quality of {quality_stats['dataset']['item_count']} labelled predictions: {shown}",
            file=ctx.out,
        )
    return EXIT_FAILED if violations and fail_on_violation else EXIT_OK


def _cloudwatch(namespace: str, ctx: Context, schedule: str, metrics: dict[str, float]) -> dict[str, Any]:
    """The metrics a monitoring execution publishes, with the dimensions the infra's alarms select."""
    return {
        "Namespace": namespace,
        "Dimensions": {"Endpoint": ctx.endpoint, "MonitoringSchedule": schedule},
        "Metrics": metrics,
    }


def _summary(
    out: TextIO,
    count: int,
    prefix: str,
    report: str,
    violations: list[dict[str, str]],
    metrics: dict[str, float],
) -> None:
    print(f"checked {count} captured records under {prefix}", file=out)
    drift = {
        k.removeprefix("feature_baseline_drift_"): v for k, v in metrics.items() if "baseline_drift" in k
    }
    for feature, value in drift.items():
        print(f"  drift {feature:<28} {value:.4f}", file=out)
    print(f"{len(violations)} violation(s); report: {report}/", file=out)
    for item in violations:
        print(
            f"  {item['constraint_check_type']:<22} {item['feature_name']}: {item['description']}", file=out
        )


# --- command line --------------------------------------------------------------------------------------
def _options() -> argparse.ArgumentParser:
    """Options every subcommand takes (after the subcommand)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", help="pipeline config YAML (default $PDM_CONFIG or ./pdm.yaml)")
    parent.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parent.add_argument("--project", default=DEFAULT_PROJECT, help="infra ProjectName (default pdm)")
    parent.add_argument("--env", default="dev", choices=ENVIRONMENTS, help="infra Environment (default dev)")
    parent.add_argument("--endpoint", help="endpoint name (default: the config's deploy.endpoint_name)")
    parent.add_argument(
        "--baseline-uri",
        help="baseline prefix (default s3://<bucket>/<prefix>/monitoring/data-quality/baseline)",
    )
    parent.add_argument(
        "--reports-uri",
        help="reports prefix (default s3://<bucket>/<prefix>/monitoring/data-quality/reports)",
    )
    return parent


def _parser() -> argparse.ArgumentParser:
    parser, sub, common = cli_parser("python -m deploy.monitor", __doc__, settings=False)
    parents = [common, _options()]
    base = sub.add_parser("baseline", parents=parents, help="data-quality baseline of the training data")
    base.add_argument("--dataset", help="CSV with a header, or a prefix of them (default: data.input_uri)")
    base.add_argument("--role-arn", help="SageMaker: execution role (default PDM_ROLE_ARN / role_arn)")
    base.add_argument("--image", help="SageMaker: analyzer image (default: Model Monitor's for the region)")
    base.add_argument("--wait", action="store_true", help="SageMaker: follow the baselining job")
    sched = sub.add_parser("schedule", parents=parents, help="create or update both monitoring schedules")
    sched.add_argument("--role-arn", help="execution role (default PDM_ROLE_ARN / role_arn)")
    sched.add_argument("--image", help="analyzer image (default: Model Monitor's for the region)")
    sched.add_argument("--instance-type", default="ml.m5.xlarge")
    sched.add_argument("--schedule-expression", default=rq.HOURLY)
    sched.add_argument("--ground-truth-uri", help="default s3://<bucket>/<prefix>/monitoring/ground-truth")
    sched.add_argument(
        "--model-quality-constraints", help="s3:// constraints.json of a model-quality baseline"
    )
    sched.add_argument("--no-model-quality", action="store_true", help="data quality schedule only")
    sched.add_argument(
        "--skip-without-baseline",
        action="store_true",
        help="exit 0, creating nothing, when there is no baseline yet (release builds before the first one)",
    )
    chk = sub.add_parser("check", parents=parents, help="check captured requests against the baseline now")
    chk.add_argument("--capture-uri", help="capture destination (default: the endpoint's DataCaptureConfig)")
    chk.add_argument("--fail-on-violation", action="store_true", help="exit 1 when there are violations")
    chk.add_argument(
        "--ground-truth-uri", help="also model quality: ground-truth JSONL prefix (Model Monitor's format)"
    )
    sub.add_parser("delete", parents=parents, help="delete both schedules and their job definitions")
    return parser


def _context(args: argparse.Namespace, target: Target, out: TextIO) -> Context:
    from pipelines.config import ConfigError, load_config

    if not PROJECT_PATTERN.match(args.project):
        raise UsageError(f"--project {args.project!r} must match {PROJECT_PATTERN.pattern} (as in the infra)")
    try:
        cfg = load_config(args.config, args.param)
    except ConfigError as exc:
        raise UsageError(f"configuration: {exc}") from None
    monitoring = f"{cfg.s3_root}/monitoring/data-quality"
    for option in ("baseline_uri", "reports_uri"):
        if value := getattr(args, option):
            split_s3(value)
    return Context(
        target=target,
        cfg=cfg,
        project=args.project,
        env=args.env,
        endpoint=args.endpoint or cfg.deploy.endpoint_name,
        baseline_uri=(args.baseline_uri or f"{monitoring}/baseline").rstrip("/"),
        reports_uri=(args.reports_uri or f"{monitoring}/reports").rstrip("/"),
        out=out,
    )


def _run(args: argparse.Namespace, target: Target, out: TextIO) -> int:
    ctx = _context(args, target, out)
    if args.command == "baseline":
        return baseline(ctx, args.dataset or ctx.cfg.input_uri, args.role_arn, args.image, args.wait)
    if args.command == "schedule":
        return schedule(ctx, args)
    if args.command == "check":
        return check(ctx, args.capture_uri, args.fail_on_violation, args.ground_truth_uri)
    return delete(ctx)


def main(argv: Sequence[str] | None = None, target: Target | None = None, out: TextIO = sys.stdout) -> int:
    """Entry point; tests pass a Target (a local engine, or Stubber-wrapped boto3 clients)."""
    args = _parser().parse_args(argv)
    return run_cli(lambda: _run(args, target or target_from_args(args), out))
