"""deploy.monitor on the local target: baseline files, checks of clean and drifted captures, bad input."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from botocore.exceptions import ClientError

from deploy.clients import Target
from deploy.monitor.cli import main
from deploy.monitor.stats import ks_distance, linf_distance
from model_code.data import generate
from pipelines.local.store import ObjectStore

ROOT = "s3://pdm-mlops-local/pdm-mlops"
DATASET = f"{ROOT}/data/train/data.csv"
BASELINE = f"{ROOT}/monitoring/data-quality/baseline"
REPORTS = f"{ROOT}/monitoring/data-quality/reports"
CAPTURE = f"{ROOT}/capture"
ENDPOINT = "pdm-mlops-dev"
RAW = [
    "air_temperature_k",
    "process_temperature_k",
    "rotational_speed_rpm",
    "torque_nm",
    "tool_wear_min",
    "type",
]


class FakeLocalSageMaker:
    """The two things the monitor asks the local engine: its object store and DescribeEndpoint."""

    def __init__(self, root: Path, endpoint: dict[str, Any] | None = None) -> None:
        self.store = ObjectStore(root)
        self.endpoint = endpoint

    def describe_endpoint(self, EndpointName: str) -> dict[str, Any]:
        if self.endpoint is None:
            error = {"Code": "ValidationException", "Message": f"Could not find endpoint {EndpointName}."}
            raise ClientError({"Error": error}, "DescribeEndpoint")
        return self.endpoint


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training rows and held-out rows of one generated data set (a random split: same distribution)."""
    frame = generate(6000, seed=11)
    order = np.random.default_rng(0).permutation(len(frame))
    return frame.iloc[order[:5000]], frame.iloc[order[5000:5600]]


def make_target(tmp_path: Path, endpoint: dict[str, Any] | None = None) -> Target:
    return Target("local", FakeLocalSageMaker(tmp_path, endpoint))


def store(target: Target) -> ObjectStore:
    return target.sagemaker.store  # type: ignore[no-any-return]


def run(target: Target, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return main(list(argv), target=target, out=out), out.getvalue()


def capture_events(rows: pd.DataFrame, per_request: int = 10, as_json: bool = False) -> bytes:
    """SageMaker capture JSONL (docs/contracts.md sec. 6): raw CSV records without a header, or JSON."""
    lines = []
    for start in range(0, len(rows), per_request):
        chunk = rows.iloc[start : start + per_request][RAW]
        if as_json:
            body = {"observedContentType": "application/json", "mode": "INPUT", "encoding": "JSON"}
            body["data"] = json.dumps(chunk.to_dict(orient="records"))
        else:
            text = chunk.to_csv(index=False, header=False)
            body = {"observedContentType": "text/csv", "mode": "INPUT", "data": text, "encoding": "CSV"}
        output = {"observedContentType": "text/csv", "mode": "OUTPUT", "data": "0.1\n" * len(chunk)}
        event = {
            "captureData": {"endpointInput": body, "endpointOutput": output | {"encoding": "CSV"}},
            "eventMetadata": {"eventId": str(uuid.uuid4()), "inferenceTime": "2026-01-31T12:00:00Z"},
            "eventVersion": "0",
        }
        lines.append(json.dumps(event))
    return ("\n".join(lines) + "\n").encode()


def put_capture(target: Target, payload: bytes, name: str = "00-00-000-a.jsonl") -> None:
    store(target).put_bytes(f"{CAPTURE}/{ENDPOINT}/AllTraffic/2026/01/31/12/{name}", payload)


@pytest.fixture
def baselined(tmp_path: Path, data: tuple[pd.DataFrame, pd.DataFrame]) -> Target:
    target = make_target(tmp_path)
    store(target).put_bytes(DATASET, data[0].to_csv(index=False).encode())
    code, _ = run(target, "baseline", "--dataset", DATASET)
    assert code == 0
    return target


def report_files(target: Target) -> dict[str, Any]:
    found = store(target).list(f"{REPORTS}/")
    return {uri.rsplit("/", 1)[-1]: json.loads(store(target).get_bytes(uri)) for uri in found}


def test_baseline_writes_model_monitor_statistics_and_constraints(baselined: Target) -> None:
    stats = json.loads(store(baselined).get_bytes(f"{BASELINE}/statistics.json"))
    constraints = json.loads(store(baselined).get_bytes(f"{BASELINE}/constraints.json"))
    assert stats["version"] == 0.0 and stats["dataset"] == {"item_count": 5000}
    assert [f["name"] for f in stats["features"]] == RAW  # the endpoint's raw input columns, in order
    by_name = {f["name"]: f for f in stats["features"]}
    torque = by_name["torque_nm"]
    assert torque["inferred_type"] == "Fractional"
    numbers = torque["numerical_statistics"]
    assert numbers["common"] == {"num_present": 5000, "num_missing": 0}
    assert set(numbers) >= {"mean", "sum", "std_dev", "min", "max", "distribution"}
    assert numbers["sum"] == pytest.approx(numbers["mean"] * 5000)
    buckets = numbers["distribution"]["kll"]["buckets"]
    assert len(buckets) == 10 and sum(b["count"] for b in buckets) == 5000
    assert buckets[0]["lower_bound"] == numbers["min"] and buckets[-1]["upper_bound"] == numbers["max"]
    kind = by_name["type"]
    assert kind["inferred_type"] == "String"
    assert kind["string_statistics"]["distinct_count"] == 3
    assert [b["value"] for b in kind["string_statistics"]["distribution"]["categorical"]["buckets"]] == [
        "H",
        "L",
        "M",
    ]
    rules = {f["name"]: f for f in constraints["features"]}
    assert rules["torque_nm"] == {
        "name": "torque_nm",
        "inferred_type": "Fractional",
        "completeness": 1.0,
        "num_constraints": {"is_non_negative": True},
    }
    assert rules["type"]["string_constraints"] == {"domains": ["H", "L", "M"]}
    config = constraints["monitoring_config"]
    assert config["distribution_constraints"]["comparison_threshold"] == 0.1
    assert config["evaluate_constraints"] == "Enabled" and config["emit_metrics"] == "Enabled"


def test_clean_capture_has_no_violations(baselined: Target, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    put_capture(baselined, capture_events(data[1]))
    code, out = run(baselined, "check", "--capture-uri", CAPTURE, "--fail-on-violation")
    assert code == 0, out
    files = report_files(baselined)
    assert files["constraint_violations.json"] == {"violations": []}
    assert files["statistics.json"]["dataset"] == {"item_count": 600}
    metrics = files["cloudwatch_metrics.json"]
    assert metrics["Namespace"] == "aws/sagemaker/Endpoints/data-metrics"
    assert metrics["Dimensions"] == {"Endpoint": ENDPOINT, "MonitoringSchedule": "pdm-dev-data-quality"}
    assert 0 <= metrics["Metrics"]["feature_baseline_drift_tool_wear_min"] < 0.1
    assert "0 violation(s)" in out


def test_drifted_capture_is_a_baseline_drift_violation(
    baselined: Target, data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    drifted = data[1].copy()
    drifted["tool_wear_min"] = drifted["tool_wear_min"] + 80  # worn tools only
    put_capture(baselined, capture_events(drifted, as_json=True))
    code, out = run(baselined, "check", "--capture-uri", CAPTURE, "--fail-on-violation")
    assert code == 1
    assert "1 violation(s)" in out
    violations = report_files(baselined)["constraint_violations.json"]["violations"]
    assert [(v["feature_name"], v["constraint_check_type"]) for v in violations] == [
        ("tool_wear_min", "baseline_drift_check")
    ]
    assert violations[0]["description"].startswith("Baseline drift distance: ")
    assert "exceeds threshold: 0.1" in violations[0]["description"]
    drift = report_files(baselined)["cloudwatch_metrics.json"]["Metrics"][
        "feature_baseline_drift_tool_wear_min"
    ]
    assert drift > 0.1
    # Without --fail-on-violation the violations are reported, not an error.
    assert run(baselined, "check", "--capture-uri", CAPTURE)[0] == 0


def test_bad_types_missing_values_and_missing_columns(
    baselined: Target, data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    rows = data[1].iloc[:50][RAW].astype(str).to_numpy().tolist()
    rows[0][3] = "high"  # torque is a number in the baseline
    rows[1][0] = ""  # a missing air temperature
    rows[2][5] = "X"  # an unknown product type
    text = "\n".join(",".join(r) for r in rows) + "\n" + "300.1,310.2\n"  # a short record
    event = {
        "captureData": {
            "endpointInput": {"observedContentType": "text/csv", "data": text, "encoding": "CSV"}
        },
        "eventMetadata": {"eventId": "e1", "inferenceTime": "2026-01-31T12:00:00Z"},
        "eventVersion": "0",
    }
    put_capture(baselined, (json.dumps(event) + "\n").encode())
    code, _ = run(baselined, "check", "--capture-uri", CAPTURE, "--fail-on-violation")
    assert code == 1
    checks = {
        (v["feature_name"], v["constraint_check_type"])
        for v in report_files(baselined)["constraint_violations.json"]["violations"]
    }
    assert ("torque_nm", "data_type_check") in checks
    assert ("air_temperature_k", "completeness_check") in checks
    assert ("type", "categorical_values_check") in checks
    assert ("process_temperature_k", "completeness_check") not in checks
    assert ("torque_nm", "completeness_check") in checks  # the short record has no torque


def test_csv_header_rows_are_not_records(baselined: Target, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    text = data[1][RAW].to_csv(index=False)  # the model server accepts a header row
    event = {
        "captureData": {
            "endpointInput": {"observedContentType": "text/csv", "data": text, "encoding": "CSV"}
        },
        "eventMetadata": {"eventId": "e1", "inferenceTime": "2026-01-31T12:00:00Z"},
    }
    put_capture(baselined, json.dumps(event).encode())
    code, out = run(baselined, "check", "--capture-uri", CAPTURE, "--fail-on-violation")
    assert code == 0, out
    assert "checked 600 captured records" in out


def test_capture_found_through_the_endpoint(tmp_path: Path, data: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    endpoint = {
        "EndpointName": ENDPOINT,
        "DataCaptureConfig": {"EnableCapture": True, "DestinationS3Uri": CAPTURE},
    }
    target = make_target(tmp_path, endpoint)
    store(target).put_bytes(DATASET, data[0].to_csv(index=False).encode())
    assert run(target, "baseline", "--dataset", DATASET)[0] == 0
    put_capture(target, capture_events(data[1]))
    code, out = run(target, "check", "--fail-on-violation")
    assert code == 0, out
    assert f"under {CAPTURE}/{ENDPOINT}/" in out


# --- bad input -----------------------------------------------------------------------------------------
def test_check_without_baseline_names_it_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    target = make_target(tmp_path)
    put_capture(target, capture_events(data[1]))
    code, _ = run(target, "check", "--capture-uri", CAPTURE)
    assert code == 2
    assert f"no baseline statistics.json at {BASELINE}/statistics.json" in capsys.readouterr().err
    assert report_files(target) == {}


def test_empty_capture_is_an_error(baselined: Target, capsys: pytest.CaptureFixture[str]) -> None:
    put_capture(baselined, b"\n")
    assert run(baselined, "check", "--capture-uri", CAPTURE)[0] == 2
    assert f"no captured requests under {CAPTURE}/{ENDPOINT}/" in capsys.readouterr().err
    assert report_files(baselined) == {}


def test_unreadable_capture_line_is_named(baselined: Target, capsys: pytest.CaptureFixture[str]) -> None:
    put_capture(baselined, b"{not json\n")
    assert run(baselined, "check", "--capture-uri", CAPTURE)[0] == 2
    assert "00-00-000-a.jsonl line 1 is not a readable capture record" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        (None, f"endpoint {ENDPOINT} does not exist"),
        ({"EndpointName": ENDPOINT}, f"endpoint {ENDPOINT} has no data capture"),
        (
            {
                "EndpointName": ENDPOINT,
                "DataCaptureConfig": {"EnableCapture": False, "DestinationS3Uri": CAPTURE},
            },
            f"endpoint {ENDPOINT} has no data capture",
        ),
    ],
)
def test_endpoint_without_capture(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    data: tuple[pd.DataFrame, pd.DataFrame],
    endpoint: dict[str, Any] | None,
    message: str,
) -> None:
    target = make_target(tmp_path, endpoint)
    store(target).put_bytes(DATASET, data[0].iloc[:200].to_csv(index=False).encode())
    assert run(target, "baseline", "--dataset", DATASET)[0] == 0
    assert run(target, "check")[0] == 2
    assert message in capsys.readouterr().err


def test_dataset_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = make_target(tmp_path)
    assert run(target, "baseline", "--dataset", DATASET)[0] == 2
    assert f"no CSV data set at or under {DATASET}" in capsys.readouterr().err
    store(target).put_bytes(DATASET, b"air_temperature_k,type\n300.1,L\n")
    assert run(target, "baseline", "--dataset", DATASET)[0] == 2
    assert "lacks the model's input column(s) ['process_temperature_k'" in capsys.readouterr().err
    store(target).put_bytes(DATASET, (",".join(RAW) + "\n").encode())
    assert run(target, "baseline", "--dataset", DATASET)[0] == 2
    assert "the data set has no rows" in capsys.readouterr().err
    assert store(target).list(f"{BASELINE}/") == []


def test_schedules_need_sagemaker_and_options_are_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = make_target(tmp_path)
    for command in ("schedule", "delete"):
        assert run(target, command)[0] == 2
        assert "exist only on SageMaker" in capsys.readouterr().err
    assert run(target, "check", "--project", "Bad_Name")[0] == 2
    assert "--project 'Bad_Name'" in capsys.readouterr().err
    assert run(target, "check", "--param", "no_such_key=1")[0] == 2
    assert "unknown setting" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--target", "azure", "check"])
    assert exc.value.code == 2


def test_distances() -> None:
    assert ks_distance([1, 2, 3, 4], [1, 2, 3, 4]) == 0.0
    assert ks_distance([1, 2], [3, 4]) == 1.0
    assert linf_distance({"L": 50, "M": 50}, {"L": 25, "M": 75}) == pytest.approx(0.25)
    assert linf_distance({"L": 1}, {"H": 1}) == 1.0


def test_model_quality_joins_ground_truth_by_event_id(
    baselined: Target, data: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    rows = data[1].iloc[:8]
    scores = [0.9, 0.8, 0.2, 0.1, 0.7, 0.3, 0.6, 0.4]
    labels = ["1", "1", "0", "0", "0", "1", "1", "0"]  # two of eight wrong at the 0.5 threshold
    events, truth = [], []
    for i, score in enumerate(scores):
        text = rows.iloc[[i]][RAW].to_csv(index=False, header=False)
        events.append(
            {
                "captureData": {
                    "endpointInput": {"observedContentType": "text/csv", "data": text, "encoding": "CSV"},
                    "endpointOutput": {
                        "observedContentType": "text/csv",
                        "data": f"{score}\n",
                        "encoding": "CSV",
                    },
                },
                "eventMetadata": {"eventId": f"event-{i}", "inferenceTime": "2026-01-31T12:00:00Z"},
                "eventVersion": "0",
            }
        )
        truth.append(
            {
                "groundTruthData": {"data": labels[i], "encoding": "CSV"},
                "eventMetadata": {"eventId": f"event-{i}"},
                "eventVersion": "0",
            }
        )
    put_capture(baselined, "\n".join(json.dumps(e) for e in events).encode())
    ground_truth = f"{ROOT}/monitoring/ground-truth"
    store(baselined).put_bytes(
        f"{ground_truth}/2026/01/31/12/labels.jsonl", "\n".join(json.dumps(t) for t in truth).encode()
    )
    code, out = run(baselined, "check", "--capture-uri", CAPTURE, "--ground-truth-uri", ground_truth)
    assert code == 0, out
    found = store(baselined).list(
        f"{ROOT}/monitoring/model-quality/reports/{ENDPOINT}/pdm-dev-model-quality/"
    )
    files = {uri.rsplit("/", 1)[-1]: json.loads(store(baselined).get_bytes(uri)) for uri in found}
    section = files["statistics.json"]["binary_classification_metrics"]
    assert files["statistics.json"]["dataset"] == {"item_count": 8}
    assert section["accuracy"] == {"value": 0.75}
    assert section["confusion_matrix"] == {"0": {"0": 3, "1": 1}, "1": {"0": 1, "1": 3}}
    metrics = files["cloudwatch_metrics.json"]
    assert metrics["Namespace"] == "aws/sagemaker/Endpoints/model-metrics"
    assert metrics["Dimensions"]["MonitoringSchedule"] == "pdm-dev-model-quality"
    assert metrics["Metrics"]["auc"] == pytest.approx(0.8125)
    assert "model quality of 8 labelled predictions" in out


def test_ground_truth_that_matches_nothing(
    baselined: Target, data: tuple[pd.DataFrame, pd.DataFrame], capsys: pytest.CaptureFixture[str]
) -> None:
    put_capture(baselined, capture_events(data[1].iloc[:20], per_request=1))
    ground_truth = f"{ROOT}/monitoring/ground-truth"
    line = {"groundTruthData": {"data": "1", "encoding": "CSV"}, "eventMetadata": {"eventId": "other"}}
    store(baselined).put_bytes(f"{ground_truth}/labels.jsonl", json.dumps(line).encode())
    assert run(baselined, "check", "--capture-uri", CAPTURE, "--ground-truth-uri", ground_truth)[0] == 2
    assert "no captured prediction matched a ground-truth eventId" in capsys.readouterr().err
    assert report_files(baselined) == {}  # nothing written when a part fails


def test_real_local_endpoint_captures_are_checked(
    tmp_path: Path,
    data: tuple[pd.DataFrame, pd.DataFrame],
    artefacts: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """End to end on the local engine: deploy with capture, invoke, stop (flushes capture), check."""
    from deploy.endpoint import main_with_target as endpoint_cli
    from pipelines.local.client import LocalSageMaker
    from tests.deploy.conftest import GROUP, kill_servers, register

    client = LocalSageMaker(root=tmp_path / ".mlops")
    target = Target("local", client)
    try:
        register(client, artefacts["v1"])
        deploy = [
            "--group",
            GROUP,
            "deploy",
            "mon",
            "--dev",
            "--instance-count",
            "1",
            "--capture-uri",
            CAPTURE,
        ]
        assert endpoint_cli(deploy, target, io.StringIO()) == 0, capsys.readouterr().err
        client.store.put_bytes(DATASET, data[0].to_csv(index=False).encode())
        assert run(target, "baseline", "--dataset", DATASET)[0] == 0
        rows = data[1][RAW].iloc[:200]
        for start in range(0, len(rows), 50):
            body = rows.iloc[start : start + 50].to_csv(index=False, header=False)
            assert endpoint_cli(["invoke", "mon", "--body", body], target, io.StringIO()) == 0
        assert endpoint_cli(["stop", "mon"], target, io.StringIO()) == 0
    finally:
        kill_servers(client)
    # The endpoint's record is gone after stop: the capture destination is given.
    code, out = run(target, "check", "--endpoint", "mon", "--capture-uri", CAPTURE, "--fail-on-violation")
    assert code == 0, out
    assert f"checked 200 captured records under {CAPTURE}/mon/" in out


def test_robust_comparison_needs_significance_and_chi_squared_is_a_p_value() -> None:
    from deploy.monitor.stats import compare, statistics, suggest_constraints

    base = pd.DataFrame({"x": [str(v) for v in range(1000)], "c": ["L", "M"] * 500}, dtype="string")
    stats = statistics(base)
    constraints = suggest_constraints(stats)
    few = pd.DataFrame({"_c0": ["900", "950", "990"], "_c1": ["L", "L", "M"]}, dtype="string")
    _, robust, metrics = compare(stats, constraints, few)
    assert metrics["feature_baseline_drift_x"] > 0.1  # far off, but three records prove nothing
    # `comparison_method` governs numbers; categories follow `categorical_drift_method` (LInfinity here).
    assert [v["feature_name"] for v in robust if v["constraint_check_type"] == "baseline_drift_check"] == [
        "c"
    ]
    constraints["monitoring_config"]["distribution_constraints"]["comparison_method"] = "Simple"
    _, simple, _ = compare(stats, constraints, few)
    assert [v["feature_name"] for v in simple if v["constraint_check_type"] == "baseline_drift_check"] == [
        "x",
        "c",
    ]
    constraints["monitoring_config"]["distribution_constraints"]["categorical_drift_method"] = "ChiSquared"
    skewed = pd.DataFrame({"_c0": ["500"] * 400, "_c1": ["L"] * 350 + ["M"] * 50}, dtype="string")
    _, chi, metrics = compare(stats, constraints, skewed)
    assert metrics["feature_baseline_drift_c"] < 0.1  # a p-value: tiny for a 350/50 split
    assert ("c", "baseline_drift_check") in {(v["feature_name"], v["constraint_check_type"]) for v in chi}
