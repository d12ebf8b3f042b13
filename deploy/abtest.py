"""`python -m deploy.abtest`: A/B variants judged by a two-proportion z-test on outcomes, then promoted."""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TextIO

from botocore.exceptions import ClientError

from deploy import registry
from deploy.clients import (
    ObjectReader,
    OperationFailed,
    Target,
    UsageError,
    cli_parser,
    run_cli,
    target_from_args,
)
from deploy.endpoint import (
    AbVariantSettings,
    DeploySettings,
    VariantSpec,
    add_endpoint_options,
    deploy,
    find_endpoint,
    settings_from_args,
    wait_in_service,
)

Verdict = Literal["better", "worse", "undecided"]
ID_COLUMNS = ("inference_id", "event_id")
CLOUDWATCH_METRICS = (
    ("Invocations", "invocations"),
    ("Invocation4XXErrors", "errors_4xx"),
    ("Invocation5XXErrors", "errors_5xx"),
)


# --- statistics ----------------------------------------------------------------------------------------
def two_proportion_z_test(successes_a: int, n_a: int, successes_b: int, n_b: int) -> tuple[float, float]:
    """Pooled two-proportion z-test of B's success rate against A's; returns (z, two-sided p-value).

    z = (p_b - p_a) / sqrt(p (1 - p) (1/n_a + 1/n_b)) with p the pooled rate; under H0 (equal rates) z is
    approximately standard normal, so the two-sided p-value is 2 (1 - Phi(|z|)) = erfc(|z| / sqrt(2)).
    erfc is exact to double precision, which is why no statistics package is needed (scipy happens to be
    installed as a dependency of a dependency, not of this project). With no variance (all successes or
    all failures in both groups) there is no evidence of a difference: z = 0, p = 1.
    """
    if n_a <= 0 or n_b <= 0:
        raise ValueError("both groups need at least one observation")
    if not (0 <= successes_a <= n_a and 0 <= successes_b <= n_b):
        raise ValueError("successes must be between 0 and the group size")
    rate_a, rate_b = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    variance = pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)
    if variance <= 0.0:
        return 0.0, 1.0
    z = (rate_b - rate_a) / math.sqrt(variance)
    return z, math.erfc(abs(z) / math.sqrt(2.0))


def verdict(z: float, p_value: float, confidence: float) -> Verdict:
    """Better/worse when the two-sided test rejects equal rates at `confidence`, else undecided."""
    if p_value < 1.0 - confidence:
        return "better" if z > 0 else "worse"
    return "undecided"


@dataclass
class VariantResult:
    name: str
    captured: int = 0  # predictions captured for this variant
    joined: int = 0  # of which an outcome was found
    successes: int = 0

    @property
    def rate(self) -> float | None:
        return self.successes / self.joined if self.joined else None


@dataclass
class Comparison:
    control: str
    challenger: str
    difference: float | None
    z: float | None
    p_value: float | None
    verdict: Verdict
    note: str = ""


def compare(control: VariantResult, challenger: VariantResult, confidence: float) -> Comparison:
    if not control.joined or not challenger.joined:
        return Comparison(control.name, challenger.name, None, None, None, "undecided", "no joined outcomes")
    z, p = two_proportion_z_test(control.successes, control.joined, challenger.successes, challenger.joined)
    pooled = (control.successes + challenger.successes) / (control.joined + challenger.joined)
    smallest = min(control.joined, challenger.joined) * min(pooled, 1 - pooled)
    # The normal approximation needs ~5+ expected successes and failures per group.
    note = "few outcomes: the normal approximation is rough" if smallest < 5 else ""
    difference = (challenger.rate or 0.0) - (control.rate or 0.0)
    return Comparison(control.name, challenger.name, difference, z, p, verdict(z, p, confidence), note)


# --- captured predictions and outcomes -----------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """One record's prediction: a number (binary score or regression value) or a class label."""

    score: float | None = None
    label: str | None = None


@dataclass(frozen=True)
class Captured:
    variant: str
    event_id: str | None
    inference_id: str | None
    row: int
    prediction: Prediction
    time: datetime | None = None


def parse_output(output: dict[str, Any]) -> list[Prediction]:
    """The predictions in a captured endpointOutput (CSV lines or JSON {"predictions": [...]})."""
    data = output.get("data", "")
    raw = base64.b64decode(data) if output.get("encoding") == "BASE64" else data.encode("utf-8")
    text = raw.decode("utf-8", errors="replace")
    media = str(output.get("observedContentType", "")).split(";", 1)[0].strip().lower()
    if media == "application/json" or (not media and text.lstrip().startswith(("{", "["))):
        body = json.loads(text)
        records = body.get("predictions", []) if isinstance(body, dict) else body
        return [_json_prediction(record) for record in records]
    predictions = []
    for line in text.splitlines():
        if not line.strip():
            continue
        first = line.split(",", 1)[0].strip()
        try:
            predictions.append(Prediction(score=float(first)))
        except ValueError:
            predictions.append(Prediction(label=first))  # multiclass CSV: label, then probabilities
    return predictions


def _json_prediction(record: Any) -> Prediction:
    if isinstance(record, dict):
        if "probabilities" in record:  # multiclass: the label decides
            return Prediction(label=str(record.get("label")))
        if "score" in record:
            return Prediction(score=float(record["score"]))
        return Prediction(label=str(record.get("label")))
    if isinstance(record, list):
        return _json_prediction(record[0]) if record else Prediction()
    return Prediction(score=float(record))


def load_captures(objects: ObjectReader, destination: str, endpoint: str) -> Iterator[Captured]:
    """Every captured prediction of the endpoint.

    Keys are `<destination>/<endpoint>/<variant>/yyyy/mm/dd/hh/<file>.jsonl`: the variant is in the key.
    """
    prefix = f"{destination.rstrip('/')}/{endpoint}/"
    for uri in objects.list(prefix):
        if not uri.endswith(".jsonl"):
            continue
        variant = uri[len(prefix) :].split("/", 1)[0]
        for number, line in enumerate(objects.read(uri).decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                meta = record.get("eventMetadata", {})
                output = record.get("captureData", {}).get("endpointOutput")
                if output is None:
                    continue  # captured without Output: nothing to score
                predictions = parse_output(output)
            except (ValueError, AttributeError, TypeError) as exc:
                raise UsageError(f"{uri} line {number} is not a readable capture record: {exc}") from None
            when = _parse_time(meta.get("inferenceTime"))
            for row, prediction in enumerate(predictions):
                yield Captured(variant, meta.get("eventId"), meta.get("inferenceId"), row, prediction, when)


def _parse_time(value: Any) -> datetime | None:
    """inferenceTime (`2022-02-14T17:25:49Z`) as an aware datetime; None when absent or unreadable."""
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


@dataclass
class Outcomes:
    """True labels keyed by (id column, id, row) from the outcomes CSV."""

    labels: dict[tuple[str, str, int], str] = field(default_factory=dict)
    used: set[tuple[str, str, int]] = field(default_factory=set)

    def find(self, captured: Captured) -> str | None:
        for column, value in (("inference_id", captured.inference_id), ("event_id", captured.event_id)):
            if value is not None and (key := (column, value, captured.row)) in self.labels:
                self.used.add(key)
                return self.labels[key]
        return None


def read_outcomes(path: Path) -> Outcomes:
    """CSV with a header: `inference_id` and/or `event_id`, `label`, optional `row` (0-based, default 0)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read outcomes {path}: {getattr(exc, 'strerror', None) or exc}") from None
    outcomes = Outcomes()
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = set(reader.fieldnames or [])
    if "label" not in columns or not columns & set(ID_COLUMNS):
        raise UsageError(
            f"outcomes {path} need a header with `label` and `inference_id` or `event_id`, "
            f"got {sorted(columns)}"
        )
    for number, line in enumerate(reader, 2):
        row_text = (line.get("row") or "0").strip()
        if not row_text.isdigit():
            raise UsageError(f"outcomes {path} line {number}: row must be a whole number, got {row_text!r}")
        ids = [(c, (line.get(c) or "").strip()) for c in ID_COLUMNS]
        ids = [(c, v) for c, v in ids if v]
        if not ids:
            raise UsageError(f"outcomes {path} line {number}: no inference_id or event_id")
        for column, value in ids:
            outcomes.labels[(column, value, int(row_text))] = (line.get("label") or "").strip()
    return outcomes


def is_success(prediction: Prediction, actual: str, threshold: float, tolerance: float | None) -> bool:
    """Success = correct prediction: the label matches; a binary score >= threshold predicts 1; with a
    `tolerance`, a numeric prediction within it of the actual value (regression)."""
    if prediction.score is None:
        return _same_label(prediction.label or "", actual)
    try:
        value = float(actual)
    except ValueError:
        raise UsageError(f"outcome {actual!r} is not a number, but the model predicts scores") from None
    if tolerance is not None:
        return abs(prediction.score - value) <= tolerance
    return (1.0 if prediction.score >= threshold else 0.0) == value


def _same_label(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return a.strip() == b.strip()


@dataclass
class Report:
    endpoint: str
    capture_prefix: str
    confidence: float
    variants: list[VariantResult]
    comparisons: list[Comparison]
    unmatched_outcomes: int

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for variant, result in zip(out["variants"], self.variants, strict=True):
            variant["rate"] = result.rate
        return out


def build_report(
    captures: Iterator[Captured] | Sequence[Captured],
    outcomes: Outcomes,
    endpoint: str,
    capture_prefix: str,
    control: str | None,
    confidence: float,
    threshold: float = 0.5,
    tolerance: float | None = None,
    variants: set[str] | None = None,
    since: datetime | None = None,
) -> Report:
    """Success counts per variant and each challenger against the control.

    `variants` keeps only these (the endpoint's current ones: older captures under reused prefixes belong
    to other deployments); `since` drops captures with an earlier inferenceTime.
    """
    results: dict[str, VariantResult] = {}
    for captured in captures:
        if variants is not None and captured.variant not in variants:
            continue
        if since is not None and (captured.time is None or captured.time < since):
            continue
        result = results.setdefault(captured.variant, VariantResult(captured.variant))
        result.captured += 1
        actual = outcomes.find(captured)
        if actual is None:
            continue
        result.joined += 1
        result.successes += is_success(captured.prediction, actual, threshold, tolerance)
    if not results:
        scope = f" of variants {sorted(variants)}" if variants is not None else ""
        scope += f" since {since:%Y-%m-%dT%H:%M:%SZ}" if since is not None else ""
        raise UsageError(f"no captured predictions{scope} under {capture_prefix} (is data capture on?)")
    if control is None:
        control = sorted(results)[0]
    if control not in results:
        raise UsageError(
            f"control variant {control} has no captured predictions (variants: {sorted(results)})"
        )
    comparisons = [
        compare(results[control], results[name], confidence) for name in sorted(results) if name != control
    ]
    ordered = [results[control], *(results[n] for n in sorted(results) if n != control)]
    unmatched = len(set(outcomes.labels) - outcomes.used)
    return Report(endpoint, capture_prefix, confidence, ordered, comparisons, unmatched)


def format_report(report: Report) -> str:
    lines = [
        f"A/B report for {report.endpoint} (captures under {report.capture_prefix}, "
        f"{report.confidence:.0%} confidence, two-sided two-proportion z-test; success = correct prediction)",
        f"{'variant':<24} {'captured':>9} {'joined':>7} {'correct':>8} {'rate':>8}",
    ]
    for v in report.variants:
        rate = f"{v.rate:.4f}" if v.rate is not None else "-"
        lines.append(f"{v.name:<24} {v.captured:>9} {v.joined:>7} {v.successes:>8} {rate:>8}")
    for c in report.comparisons:
        if c.z is None or c.p_value is None or c.difference is None:
            lines.append(f"{c.challenger} vs {c.control}: {c.verdict} ({c.note})")
            continue
        text = (
            f"{c.challenger} vs {c.control}: {c.difference * 100:+.2f} points, z={c.z:.3f}, "
            f"p={c.p_value:.4f} -> {c.verdict}"
        )
        lines.append(text + (f" ({c.note})" if c.note else ""))
    if report.unmatched_outcomes:
        lines.append(f"{report.unmatched_outcomes} outcome rows matched no captured prediction")
    return "\n".join(lines)


# --- endpoint operations -------------------------------------------------------------------------------
def create(
    target: Target,
    endpoint: str,
    variants: Sequence[AbVariantSettings],
    settings: DeploySettings,
    wait: bool = True,
    out: TextIO = sys.stdout,
) -> dict[str, Any]:
    """An endpoint with one production variant per model package version, weighted as configured."""
    if len(variants) < 2:
        raise UsageError("an A/B test needs two or more variants (--variant NAME=VERSION[:WEIGHT])")
    if sum(v.weight for v in variants) <= 0:
        raise UsageError("at least one variant needs a weight > 0")
    group = settings.model_package_group
    specs = [
        VariantSpec(v.name, registry.resolve(target.sagemaker, group, v.package)["ModelPackageArn"], v.weight)
        for v in variants
    ]
    return deploy(target, endpoint, specs, settings, wait, out)


def counts(
    target: Target, endpoint: str, hours: float = 24.0, now: datetime | None = None
) -> dict[str, dict[str, float]]:
    """Invocations and 4XX/5XX errors per current variant: the local server's counters (all its workers,
    since the endpoint was created, across server generations) or CloudWatch sums over the last `hours`
    (AWS)."""
    if target.is_local:
        import httpx

        from deploy.serve.metrics import variant_counts

        url = target.sagemaker.local_endpoint(EndpointName=endpoint).get("url")
        if not url:
            raise OperationFailed(f"endpoint {endpoint} has no running local server")
        try:
            text = httpx.get(f"{url}/metrics", timeout=10).raise_for_status().text
        except httpx.HTTPError as exc:
            raise OperationFailed(f"cannot read {url}/metrics: {exc}") from None
        found = variant_counts(text)
        # /metrics also keeps variants only earlier generations served; report the endpoint's own, as on AWS.
        described = target.sagemaker.describe_endpoint(EndpointName=endpoint)
        current = [v["VariantName"] for v in described.get("ProductionVariants", [])]
        empty = {"invocations": 0.0, "errors_4xx": 0.0, "errors_5xx": 0.0}
        return {name: found.get(name, dict(empty)) for name in current} if current else found
    cloudwatch = target.aws("cloudwatch")
    described = target.sagemaker.describe_endpoint(EndpointName=endpoint)
    end = (now or datetime.now(UTC)).replace(microsecond=0)
    period = max(60, int(hours * 3600) // 60 * 60)  # CloudWatch periods are multiples of 60 s
    out: dict[str, dict[str, float]] = {}
    for variant in [v["VariantName"] for v in described.get("ProductionVariants", [])]:
        row = out.setdefault(variant, {})
        for metric, key in CLOUDWATCH_METRICS:
            response = cloudwatch.get_metric_statistics(
                Namespace="AWS/SageMaker",
                MetricName=metric,
                Dimensions=[
                    {"Name": "EndpointName", "Value": endpoint},
                    {"Name": "VariantName", "Value": variant},
                ],
                StartTime=end - timedelta(seconds=period),
                EndTime=end,
                Period=period,
                Statistics=["Sum"],
            )
            row[key] = float(sum(point.get("Sum", 0.0) for point in response.get("Datapoints", [])))
    return out


def promote(
    target: Target, endpoint: str, winner: str, wait: bool = True, out: TextIO = sys.stdout
) -> dict[str, Any]:
    """Weight 1 for the winner, 0 for the rest; the endpoint keeps serving throughout."""
    client = target.sagemaker
    described = client.describe_endpoint(EndpointName=endpoint)
    names = [v["VariantName"] for v in described.get("ProductionVariants", [])]
    if winner not in names:
        raise UsageError(f"endpoint {endpoint} has no variant {winner} (variants: {', '.join(names)})")
    client.update_endpoint_weights_and_capacities(
        EndpointName=endpoint,
        DesiredWeightsAndCapacities=[
            {"VariantName": name, "DesiredWeight": 1.0 if name == winner else 0.0} for name in names
        ],
    )
    if not wait:
        return client.describe_endpoint(EndpointName=endpoint)
    described = wait_in_service(client, endpoint)
    weights = {v["VariantName"]: v.get("CurrentWeight") for v in described.get("ProductionVariants", [])}
    if not weights.get(winner) or any(w for n, w in weights.items() if n != winner):
        raise OperationFailed(
            f"weights of {endpoint} did not change ({weights}): "
            f"{described.get('FailureReason', 'no reason given')}"
        )
    print(f"endpoint {endpoint}: all traffic to {winner} (weights {weights})", file=out)
    if len(names) > 1:
        print(
            "the other variants keep their instances; deploy the winner alone to remove them "
            "(python -m deploy.endpoint deploy)",
            file=out,
        )
    return described


def parse_variant(text: str) -> AbVariantSettings:
    """`NAME=VERSION_OR_ARN[:WEIGHT]`; an ARN contains ':' so only a trailing numeric part is a weight."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise UsageError(f"--variant must be NAME=VERSION[:WEIGHT], got {text!r}")
    package, weight = rest, "1"
    head, colon, tail = rest.rpartition(":")
    if colon and head and _is_number(tail):
        package, weight = head, tail
    try:
        return AbVariantSettings(name=name, package=package, weight=float(weight))
    except ValueError as exc:
        raise UsageError(f"--variant {text!r}: {' '.join(str(exc).split())}") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- CLI ---------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser, sub, common = cli_parser("python -m deploy.abtest", __doc__)
    create_cmd = sub.add_parser("create", parents=[common], help="an endpoint with weighted variants")
    create_cmd.add_argument("endpoint")
    create_cmd.add_argument(
        "--variant",
        action="append",
        help="NAME=VERSION[:WEIGHT] (or an ARN); repeatable (default: settings abtest)",
    )
    add_endpoint_options(create_cmd)
    counts_cmd = sub.add_parser("counts", parents=[common], help="invocations and errors per variant")
    counts_cmd.add_argument("endpoint")
    counts_cmd.add_argument("--hours", type=float, default=24.0, help="AWS: CloudWatch window (default 24)")
    report_cmd = sub.add_parser("report", parents=[common], help="compare variants on captured outcomes")
    report_cmd.add_argument("endpoint")
    report_cmd.add_argument(
        "--outcomes", type=Path, required=True, help="CSV: inference_id|event_id, label[, row]"
    )
    report_cmd.add_argument("--control", help="the variant others are compared to (default: highest weight)")
    report_cmd.add_argument("--confidence", type=float, default=0.95)
    report_cmd.add_argument(
        "--threshold", type=float, default=0.5, help="binary: score >= threshold predicts 1"
    )
    report_cmd.add_argument(
        "--tolerance", type=float, help="regression: success = |prediction - actual| <= this"
    )
    report_cmd.add_argument("--capture-uri", help="capture destination (default: the endpoint's)")
    report_cmd.add_argument("--since", help="only requests at or after this UTC time (ISO 8601)")
    report_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    promote_cmd = sub.add_parser("promote", parents=[common], help="all traffic to one variant")
    promote_cmd.add_argument("endpoint")
    promote_cmd.add_argument("variant")
    promote_cmd.add_argument("--no-wait", action="store_true")
    return parser


def main(argv: list[str] | None = None, target: Target | None = None, out: TextIO = sys.stdout) -> int:
    args = _parser().parse_args(argv)
    return run_cli(lambda: _run(args, target or target_from_args(args), out))


def _run(args: argparse.Namespace, target: Target, out: TextIO) -> int:
    if args.command == "create":
        settings = settings_from_args(args)
        variants = [parse_variant(v) for v in args.variant] if args.variant else settings.abtest
        create(target, args.endpoint, variants, settings, not args.no_wait, out)
        return 0
    if args.command == "counts":
        for variant, row in sorted(counts(target, args.endpoint, args.hours).items()):
            print(
                f"{variant:<24} invocations={row.get('invocations', 0):g} "
                f"4xx={row.get('errors_4xx', 0):g} 5xx={row.get('errors_5xx', 0):g}",
                file=out,
            )
        return 0
    if args.command == "promote":
        promote(target, args.endpoint, args.variant, not args.no_wait, out)
        return 0
    return _report(args, target, out)


def _report(args: argparse.Namespace, target: Target, out: TextIO) -> int:
    if not 0.5 <= args.confidence < 1.0:
        raise UsageError(f"--confidence must be in [0.5, 1), got {args.confidence}")
    if args.tolerance is not None and args.tolerance < 0:
        raise UsageError("--tolerance must be >= 0")
    outcomes = read_outcomes(args.outcomes)
    described = None
    try:
        described = find_endpoint(target.sagemaker, args.endpoint)
    except ClientError:
        if not args.capture_uri:
            raise
    destination = args.capture_uri or ((described or {}).get("DataCaptureConfig") or {}).get(
        "DestinationS3Uri"
    )
    if not destination:
        why = "has no data capture" if described is not None else "does not exist"
        raise UsageError(f"endpoint {args.endpoint} {why}; pass --capture-uri to name the captures")
    since = None
    if args.since:
        since = _parse_time(args.since)
        if since is None:
            raise UsageError(
                f"--since must be an ISO 8601 time such as 2026-01-31T12:00:00Z, got {args.since!r}"
            )
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
    current = {v["VariantName"] for v in (described or {}).get("ProductionVariants", [])} or None
    control = args.control
    if control is None and described is not None:
        weights = [
            (v.get("CurrentWeight", 0.0), v["VariantName"]) for v in described.get("ProductionVariants", [])
        ]
        # Highest weight = the incumbent; ties go to the first name.
        control = sorted(weights, key=lambda item: (-item[0], item[1]))[0][1] if weights else None
    prefix = f"{destination.rstrip('/')}/{args.endpoint}/"
    report = build_report(
        load_captures(target.objects(), destination, args.endpoint),
        outcomes,
        args.endpoint,
        prefix,
        control,
        args.confidence,
        args.threshold,
        args.tolerance,
        current,
        since,
    )
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
