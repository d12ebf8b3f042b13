"""`python -m deploy.cost` against a stubbed Cost Explorer: by service, by tag, pagination, tag activation."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from deploy.cost import COST_TAG_KEYS, run

REPO = Path(__file__).resolve().parents[2]
TODAY = dt.date(2024, 6, 30)
PERIOD = {"Start": "2024-05-31", "End": "2024-06-30"}
PDM_DEV = {
    "And": [
        {"Tags": {"Key": "project", "Values": ["pdm"], "MatchOptions": ["EQUALS"]}},
        {"Tags": {"Key": "environment", "Values": ["dev"], "MatchOptions": ["EQUALS"]}},
    ]
}


@pytest.fixture
def ce() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("ce", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _groups(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"Keys": [k], "Metrics": {"UnblendedCost": {"Amount": v, "Unit": "USD"}}} for k, v in pairs]


def _response(groups: list[dict[str, Any]], token: str | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "ResultsByTime": [{"TimePeriod": PERIOD, "Groups": groups, "Estimated": True}]
    }
    if token:
        response["NextPageToken"] = token
    return response


def _expect(group_by: dict[str, str], token: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "TimePeriod": PERIOD,
        "Granularity": "MONTHLY",
        "Metrics": ["UnblendedCost"],
        "GroupBy": [group_by],
        "Filter": PDM_DEV,
    }
    if token:
        params["NextPageToken"] = token
    return params


def _stub_report(stubber: Stubber) -> None:
    service = {"Type": "DIMENSION", "Key": "SERVICE"}
    stubber.add_response(
        "get_cost_and_usage",
        _response(
            _groups(("Amazon SageMaker", "120.50"), ("Amazon Simple Storage Service", "8.25")), "page-2"
        ),
        _expect(service),
    )
    stubber.add_response(
        "get_cost_and_usage",
        _response(_groups(("Amazon SageMaker", "30.00"), ("AWS Key Management Service", "4.00"))),
        _expect(service, "page-2"),
    )
    stubber.add_response(
        "get_cost_and_usage",
        _response(_groups(("project$pdm", "162.75"))),
        _expect({"Type": "TAG", "Key": "project"}),
    )
    stubber.add_response(
        "get_cost_and_usage",
        _response(_groups(("environment$dev", "160.00"), ("environment$", "2.75"))),
        _expect({"Type": "TAG", "Key": "environment"}),
    )
    stubber.add_response(
        "get_cost_and_usage",
        _response(_groups(("cost-center$ml-platform", "162.75"))),
        _expect({"Type": "TAG", "Key": "cost-center"}),
    )


def test_report_by_service_and_by_tag(ce: tuple[Any, Stubber]) -> None:
    client, stubber = ce
    _stub_report(stubber)
    out = io.StringIO()
    assert run(["--env", "dev"], client=client, out=out, today=TODAY) == 0
    text = out.getvalue()
    assert text.startswith("UnblendedCost 2024-05-31 to 2024-06-30 (end exclusive): 162.75 USD")
    # Pages are summed per service and sorted by cost.
    services = text.split("By service\n")[1].split("\n\n")[0].splitlines()
    assert services[0].split()[:2] == ["Amazon", "SageMaker"] and "150.50" in services[0]
    assert "By tag environment" in text and "(untagged)" in text


def test_report_as_json(ce: tuple[Any, Stubber]) -> None:
    client, stubber = ce
    _stub_report(stubber)
    out = io.StringIO()
    assert run(["--env", "dev", "--json"], client=client, out=out, today=TODAY) == 0
    report = json.loads(out.getvalue())
    assert report["total"] == 162.75
    assert report["by_service"][0] == {"key": "Amazon SageMaker", "amount": 150.5}
    assert set(report["by_tag"]) == set(COST_TAG_KEYS)
    assert report["by_tag"]["environment"] == [
        {"key": "dev", "amount": 160.0},
        {"key": "(untagged)", "amount": 2.75},
    ]


def test_activate_cost_allocation_tags(ce: tuple[Any, Stubber]) -> None:
    client, stubber = ce
    stubber.add_response(
        "update_cost_allocation_tags_status",
        {"Errors": []},
        {"CostAllocationTagsStatus": [{"TagKey": k, "Status": "Active"} for k in COST_TAG_KEYS]},
    )
    out = io.StringIO()
    assert run(["--activate-tags"], client=client, out=out) == 0
    assert "project, environment, cost-center" in out.getvalue()


def test_access_denied_is_one_line(ce: tuple[Any, Stubber]) -> None:
    client, stubber = ce
    stubber.add_client_error(
        "get_cost_and_usage", service_error_code="AccessDeniedException", service_message="no"
    )
    err = io.StringIO()
    assert run(["--days", "7"], client=client, err=err, today=TODAY) == 1
    assert err.getvalue() == "error: GetCostAndUsage: AccessDeniedException: no\n"


def test_empty_period_is_a_usage_error() -> None:
    err = io.StringIO()
    assert run(["--start", "2024-06-30", "--end", "2024-06-01"], err=err) == 2


def test_missing_credentials_exit_2_without_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(REPO),
    )
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cost", "--days", "7"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: no usable AWS credentials") and "Traceback" not in done.stderr
