"""`python -m deploy.cost`: the project's AWS costs from Cost Explorer, by service and by cost tag."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
)

# The cost allocation tags every pdm-mlops resource carries (deploy/infra/templates).
COST_TAG_KEYS = ("project", "environment", "cost-center")
METRICS = ("UnblendedCost", "AmortizedCost", "NetUnblendedCost", "NetAmortizedCost", "BlendedCost")
# Cost Explorer has a single endpoint, in us-east-1, whatever region the resources are in.
CE_REGION = "us-east-1"
UNTAGGED = "(untagged)"
CREDENTIAL_ERROR_CODES = frozenset(
    {"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId", "UnrecognizedClientException"}
)


@dataclass(frozen=True)
class CostLine:
    """One group (a service, or a tag value) and what it cost over the period."""

    key: str
    amount: float


@dataclass
class CostReport:
    """Costs of one period, total and broken down."""

    start: str
    end: str
    metric: str
    unit: str = "USD"
    total: float = 0.0
    by_service: list[CostLine] = field(default_factory=list)
    by_tag: dict[str, list[CostLine]] = field(default_factory=dict)


def _filter(project: str | None, environment: str | None) -> dict[str, Any] | None:
    tags = [
        {"Tags": {"Key": key, "Values": [value], "MatchOptions": ["EQUALS"]}}
        for key, value in (("project", project), ("environment", environment))
        if value
    ]
    if not tags:
        return None
    return tags[0] if len(tags) == 1 else {"And": tags}


def grouped_costs(
    ce: Any,
    start: str,
    end: str,
    metric: str,
    group_by: dict[str, str],
    cost_filter: dict[str, Any] | None = None,
) -> tuple[list[CostLine], str]:
    """Sum GetCostAndUsage over all pages and periods per group key, largest first; returns (lines, unit)."""
    kwargs: dict[str, Any] = {
        "TimePeriod": {"Start": start, "End": end},
        "Granularity": "MONTHLY",
        "Metrics": [metric],
        "GroupBy": [group_by],
    }
    if cost_filter:
        kwargs["Filter"] = cost_filter
    totals: dict[str, float] = {}
    unit = "USD"
    while True:
        response = ce.get_cost_and_usage(**kwargs)
        for period in response.get("ResultsByTime", []):
            for group in period.get("Groups", []):
                key = group["Keys"][0]
                if group_by["Type"] == "TAG":
                    # Tag groups come back as "key$value"; an empty value means "not tagged".
                    key = key.split("$", 1)[1] if "$" in key else key
                    key = key or UNTAGGED
                amount = group["Metrics"][metric]
                unit = amount.get("Unit", unit)
                totals[key] = totals.get(key, 0.0) + float(amount["Amount"])
        token = response.get("NextPageToken")
        if not token:
            break
        kwargs["NextPageToken"] = token
    lines = sorted((CostLine(k, round(v, 2)) for k, v in totals.items()), key=lambda c: (-c.amount, c.key))
    return lines, unit


def build_report(
    ce: Any,
    start: str,
    end: str,
    metric: str = "UnblendedCost",
    project: str | None = None,
    environment: str | None = None,
    tag_keys: Sequence[str] = COST_TAG_KEYS,
) -> CostReport:
    """The report: one call grouped by service, one per tag key, all with the same filter."""
    cost_filter = _filter(project, environment)
    by_service, unit = grouped_costs(
        ce, start, end, metric, {"Type": "DIMENSION", "Key": "SERVICE"}, cost_filter
    )
    report = CostReport(start=start, end=end, metric=metric, unit=unit, by_service=by_service)
    report.total = round(sum(line.amount for line in by_service), 2)
    for key in tag_keys:
        report.by_tag[key], _ = grouped_costs(
            ce, start, end, metric, {"Type": "TAG", "Key": key}, cost_filter
        )
    return report


def format_report(report: CostReport, top: int = 15) -> str:
    """Plain-text tables: by service (top N and the rest), then by each tag."""
    width = 44
    period = f"{report.start} to {report.end} (end exclusive)"
    lines = [f"{report.metric} {period}: {report.total:,.2f} {report.unit}"]

    def table(title: str, rows: list[CostLine]) -> None:
        lines.append("")
        lines.append(title)
        shown, rest = rows[:top], rows[top:]
        for row in shown:
            share = 100 * row.amount / report.total if report.total else 0.0
            lines.append(f"  {row.key[:width]:<{width}} {row.amount:>12,.2f}  {share:5.1f}%")
        if rest:
            lines.append(f"  {f'({len(rest)} more)':<{width}} {sum(r.amount for r in rest):>12,.2f}")
        if not rows:
            lines.append("  (no costs)")

    table("By service", report.by_service)
    for key, rows in report.by_tag.items():
        table(f"By tag {key}", rows)
    return "\n".join(lines)


def activate_tags(ce: Any, tag_keys: Sequence[str]) -> list[str]:
    """Activate the tag keys as cost allocation tags (needed once, before Cost Explorer groups by them)."""
    response = ce.update_cost_allocation_tags_status(
        CostAllocationTagsStatus=[{"TagKey": key, "Status": "Active"} for key in tag_keys]
    )
    return [f"{e.get('TagKey')}: {e.get('Code')}: {e.get('Message')}" for e in response.get("Errors", [])]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (the docs test checks every documented command against it)."""
    parser = argparse.ArgumentParser(prog="python -m deploy.cost", description=__doc__)
    parser.add_argument("--days", type=int, default=30, help="period ending today (default 30 days)")
    parser.add_argument(
        "--start", type=dt.date.fromisoformat, help="first day, YYYY-MM-DD (overrides --days)"
    )
    parser.add_argument(
        "--end", type=dt.date.fromisoformat, help="day after the last, YYYY-MM-DD (default today)"
    )
    parser.add_argument("--metric", choices=METRICS, default="UnblendedCost")
    parser.add_argument("--project", default="pdm", help="only resources tagged project=<value> ('' = all)")
    parser.add_argument(
        "--env", choices=("dev", "staging", "prod"), help="only resources tagged environment=<env>"
    )
    parser.add_argument(
        "--tag", action="append", metavar="KEY", help="tag keys to group by (default: the cost tags)"
    )
    parser.add_argument("--top", type=int, default=15, help="rows per table")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--activate-tags", action="store_true", help="activate the cost allocation tags and exit"
    )
    parser.add_argument("--profile", help="AWS profile")
    return parser


def _client(profile: str | None) -> Any:
    import boto3

    session = boto3.Session(profile_name=profile)
    if session.get_credentials() is None:
        raise NoCredentialsError()
    return session.client("ce", region_name=CE_REGION)


def run(
    argv: Sequence[str] | None = None,
    *,
    client: Any = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    today: dt.date | None = None,
) -> int:
    """Entry point with an injectable Cost Explorer client; returns the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    args = build_parser().parse_args(argv)
    end = args.end or today or dt.datetime.now(dt.UTC).date()
    start = args.start or end - dt.timedelta(days=args.days)
    if start >= end:
        print(f"error: the period is empty ({start} to {end})", file=err)
        return 2
    tag_keys = tuple(args.tag or COST_TAG_KEYS)
    try:
        ce = client or _client(args.profile)
        if args.activate_tags:
            errors = activate_tags(ce, tag_keys)
            for line in errors:
                print(f"error: {line}", file=err)
            print(f"activated cost allocation tags: {', '.join(tag_keys)}", file=out)
            return 1 if errors else 0
        report = build_report(
            ce, start.isoformat(), end.isoformat(), args.metric, args.project or None, args.env, tag_keys
        )
    except (NoCredentialsError, PartialCredentialsError, ProfileNotFound):
        print(
            "error: no usable AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY",
            file=err,
        )
        return 2
    except ClientError as exc:
        error = exc.response.get("Error", {})
        print(f"error: {exc.operation_name}: {error.get('Code')}: {error.get('Message')}", file=err)
        return 2 if error.get("Code") in CREDENTIAL_ERROR_CODES else 1
    except BotoCoreError as exc:
        print(f"error: {exc}", file=err)
        return 1
    print(json.dumps(asdict(report), indent=2) if args.json else format_report(report, args.top), file=out)
    return 0


def main() -> None:
    """Console entry: exit with run()'s code."""
    raise SystemExit(run())


if __name__ == "__main__":
    main()
