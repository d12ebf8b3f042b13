"""A/B statistics and the capture/outcome join: known z and p, verdicts, and the report over capture files."""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import norm

from deploy import abtest
from deploy.abtest import (
    build_report,
    load_captures,
    parse_variant,
    read_outcomes,
    two_proportion_z_test,
    verdict,
)
from deploy.clients import LocalObjects, Target, UsageError
from deploy.endpoint import load_settings
from pipelines.local.client import LocalSageMaker
from pipelines.local.store import ObjectStore

DEST = "s3://bucket/capture"


def test_z_and_p_of_known_inputs() -> None:
    # 80/100 vs 90/100: pooled p = 0.85, se = sqrt(0.85 * 0.15 * (1/100 + 1/100)), z = 0.10 / se.
    z, p = two_proportion_z_test(80, 100, 90, 100)
    assert math.isclose(z, 0.10 / math.sqrt(0.85 * 0.15 * 0.02), rel_tol=1e-12)
    assert math.isclose(z, 1.98030, abs_tol=1e-5) and math.isclose(p, 0.04767, abs_tol=1e-5)
    assert math.isclose(p, 2 * norm.sf(abs(z)), rel_tol=1e-9)  # scipy agrees with the erfc form
    z2, p2 = two_proportion_z_test(90, 100, 80, 100)
    assert (z2, p2) == (-z, p)
    z3, p3 = two_proportion_z_test(120, 1000, 150, 1000)
    assert math.isclose(z3, 1.963050, abs_tol=1e-6) and math.isclose(p3, 0.049640, abs_tol=1e-6)
    assert two_proportion_z_test(100, 100, 50, 50) == (0.0, 1.0)  # no variance: no evidence
    with pytest.raises(ValueError):
        two_proportion_z_test(1, 0, 1, 1)
    with pytest.raises(ValueError):
        two_proportion_z_test(5, 4, 1, 1)


def test_verdicts_at_the_chosen_confidence() -> None:
    z, p = two_proportion_z_test(80, 100, 90, 100)
    assert verdict(z, p, 0.95) == "better"
    assert verdict(-z, p, 0.95) == "worse"
    assert verdict(z, p, 0.99) == "undecided"  # p = 0.048 is not below 0.01
    assert verdict(*two_proportion_z_test(50, 100, 52, 100), 0.95) == "undecided"


def capture_line(
    output: str, content_type: str, event: str, inference: str | None, when: str, b64: bool = False
) -> str:
    data = base64.b64encode(output.encode()).decode() if b64 else output
    meta: dict[str, Any] = {"eventId": event, "inferenceTime": when}
    if inference is not None:
        meta["inferenceId"] = inference
    record = {
        "captureData": {
            "endpointInput": {
                "observedContentType": "text/csv",
                "mode": "INPUT",
                "data": "1,2\n",
                "encoding": "CSV",
            },
            "endpointOutput": {
                "observedContentType": content_type,
                "mode": "OUTPUT",
                "data": data,
                "encoding": "BASE64" if b64 else ("JSON" if "json" in content_type else "CSV"),
            },
        },
        "eventMetadata": meta,
        "eventVersion": "0",
    }
    return json.dumps(record)


def write_captures(store: ObjectStore, endpoint: str = "ab") -> None:
    """A: 100 CSV scores (80 will be right), B: 50 JSON records of two rows each (90 of 100 right),
    plus a variant of an earlier deployment and a request from before the test."""
    when = "2026-01-31T12:00:00Z"
    lines_a = [
        capture_line(f"{0.9 if i < 80 else 0.1}\n", "text/csv", f"ea{i}", f"ia{i}", when) for i in range(100)
    ]
    lines_a.append(capture_line("0.9\n", "text/csv", "early", "early", "2026-01-30T00:00:00Z"))
    lines_b = []
    for i in range(50):
        rows = [{"score": 0.8, "label": "1"}, {"score": 0.2 if i < 40 else 0.7, "label": "0"}]
        body = json.dumps({"predictions": rows})
        lines_b.append(capture_line(body, "application/json", f"eb{i}", None, when, b64=True))
    prefix = f"{DEST}/{endpoint}"
    store.put_bytes(f"{prefix}/A/2026/01/31/12/00-00-000-a.jsonl", ("\n".join(lines_a) + "\n").encode())
    store.put_bytes(f"{prefix}/B/2026/01/31/12/00-00-000-b.jsonl", ("\n".join(lines_b) + "\n").encode())
    store.put_bytes(f"{prefix}/Old/2026/01/01/00/00-00-000-o.jsonl", (lines_a[0] + "\n").encode())


def write_outcomes(path: Path) -> Path:
    """A joined by inference id (all label 1); B by event id and row (row 0 label 1, row 1 label 0)."""
    lines = ["inference_id,event_id,row,label"]
    lines += [f"ia{i},,0,1" for i in range(100)]
    lines += ["early,,0,1", "ia-unknown,,0,1"]
    for i in range(50):
        lines += [f",eb{i},0,1", f",eb{i},1,0"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_report_joins_captures_and_outcomes_and_decides(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "s3")
    write_captures(store)
    outcomes = read_outcomes(write_outcomes(tmp_path / "outcomes.csv"))
    captures = list(load_captures(LocalObjects(store), DEST, "ab"))
    assert {c.variant for c in captures} == {"A", "B", "Old"}
    since = abtest._parse_time("2026-01-31T00:00:00Z")
    report = build_report(captures, outcomes, "ab", DEST, "A", 0.95, variants={"A", "B"}, since=since)
    rows = {v.name: (v.captured, v.joined, v.successes) for v in report.variants}
    assert rows == {"A": (100, 100, 80), "B": (100, 100, 90)}
    (comparison,) = report.comparisons
    assert (comparison.control, comparison.challenger, comparison.verdict) == ("A", "B", "better")
    assert math.isclose(comparison.z, 1.98030, abs_tol=1e-5)
    assert report.unmatched_outcomes == 2  # "early" was filtered out, "ia-unknown" matches nothing

    # A stricter confidence leaves it undecided; the other way round it is worse.
    def again(control: str, confidence: float) -> str:
        fresh = read_outcomes(tmp_path / "outcomes.csv")
        again = build_report(
            captures, fresh, "ab", DEST, control, confidence, variants={"A", "B"}, since=since
        )
        return again.comparisons[0].verdict

    assert again("A", 0.99) == "undecided"
    assert again("B", 0.95) == "worse"


def test_report_cli_with_a_capture_uri_and_its_input_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = LocalSageMaker(root=tmp_path / ".mlops")
    write_captures(client.store, endpoint="gone")
    outcomes = write_outcomes(tmp_path / "outcomes.csv")
    target = Target("local", client)
    out = io.StringIO()
    argv = ["report", "gone", "--outcomes", str(outcomes), "--capture-uri", DEST, "--control", "A"]
    assert abtest.main([*argv, "--since", "2026-01-31T00:00:00Z"], target, out) == 0
    text = out.getvalue()
    assert "B vs A: +10.00 points, z=1.980, p=0.0477 -> better" in text
    assert "Old vs A" in text  # without the endpoint, every captured variant is compared
    bad = tmp_path / "bad.csv"
    bad.write_text("id,actual\n1,0\n")
    assert abtest.main(["report", "gone", "--outcomes", str(bad), "--capture-uri", DEST], target, out) == 2
    assert abtest.main([*argv, "--confidence", "1.5"], target, out) == 2
    assert abtest.main(["report", "gone", "--outcomes", str(outcomes)], target, out) == 2  # no such endpoint
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert "need a header with `label` and `inference_id` or `event_id`" in errors[0]
    assert errors[2] == "error: endpoint gone does not exist; pass --capture-uri to name the captures"


def test_success_rules_for_labels_scores_and_regression() -> None:
    assert abtest.is_success(abtest.Prediction(label="tool_wear"), "tool_wear", 0.5, None)
    assert not abtest.is_success(abtest.Prediction(label="none"), "tool_wear", 0.5, None)
    assert abtest.is_success(abtest.Prediction(score=0.7), "1", 0.5, None)
    assert not abtest.is_success(abtest.Prediction(score=0.7), "1", 0.8, None)  # --threshold applies
    assert abtest.is_success(abtest.Prediction(score=101.0), "103.5", 0.5, 5.0)  # regression tolerance
    assert not abtest.is_success(abtest.Prediction(score=101.0), "110", 0.5, 5.0)
    with pytest.raises(UsageError):
        abtest.is_success(abtest.Prediction(score=0.7), "yes", 0.5, None)
    multiclass = {"label": "twf", "score": 0.7, "probabilities": {"twf": 0.7, "none": 0.3}}
    parsed = abtest.parse_output(
        {"observedContentType": "application/json", "data": json.dumps({"predictions": [multiclass]})}
    )
    assert parsed == [abtest.Prediction(label="twf")]


def test_variants_from_the_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text(
        "abtest:\n  - {name: champion, package: 3, weight: 0.9}\n  - {name: challenger, package: 4}\n"
    )
    variants = load_settings(path).abtest
    assert [(v.name, v.package, v.weight) for v in variants] == [
        ("champion", "3", 0.9),
        ("challenger", "4", 1.0),
    ]
    path.write_text("abtest:\n  - {name: champion, packge: 3}\n")
    with pytest.raises(UsageError, match=r"abtest\.0\.packge: Extra inputs are not permitted"):
        load_settings(path)


def test_variant_arguments() -> None:
    assert parse_variant("champion=3:0.9").model_dump() == {"name": "champion", "package": "3", "weight": 0.9}
    assert parse_variant("c=4").weight == 1.0
    arn = "arn:aws:sagemaker:us-east-1:123456789012:model-package/pdm-mlops/4"
    assert parse_variant(f"c={arn}:0.25").model_dump() == {"name": "c", "package": arn, "weight": 0.25}
    assert parse_variant(f"c={arn}").package == arn
    for bad in ("nameonly", "=3", "a_b=3", "a=3:-1"):
        with pytest.raises(UsageError):
            parse_variant(bad)
