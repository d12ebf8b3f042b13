"""SageMaker container contract over HTTP: /ping, /execution-parameters, /invocations, 4xx when bad."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import xgboost as xgb

from deploy.serve.metrics import BUCKETS, PHASES, parse_prometheus
from tests.serve.serve_helpers import ENDPOINT, RECORD, WEIGHTS, csv_line, synthetic_rows

CSV = {"content-type": "text/csv", "accept": "text/csv"}


def expected_scores(model_dir: Path, x: np.ndarray) -> np.ndarray:
    booster = xgb.Booster()
    booster.load_model(str(model_dir / "xgboost-model.json"))
    return booster.inplace_predict(x)


def test_ping_answers_200(client: httpx.Client) -> None:
    response = client.get("/ping")
    assert response.status_code == 200


def test_execution_parameters_like_the_xgboost_container(client: httpx.Client) -> None:
    body = client.get("/execution-parameters").json()
    assert body["BatchStrategy"] == "MULTI_RECORD"
    assert body["MaxPayloadInMB"] == 6
    assert body["MaxConcurrentTransforms"] >= 1


def test_csv_single_record_matches_the_booster(client: httpx.Client, model_dir: Path) -> None:
    raw, x, _ = synthetic_rows(1, seed=11)
    response = client.post("/invocations", content=csv_line(raw[0]), headers=CSV)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["x-amzn-invoked-production-variant"] in {"A", "B"}
    lines = response.text.strip().splitlines()
    assert len(lines) == 1
    assert float(lines[0]) == pytest.approx(float(expected_scores(model_dir, x)[0]), abs=1e-6)


def test_csv_many_records_one_line_each(client: httpx.Client, model_dir: Path) -> None:
    raw, x, _ = synthetic_rows(50, seed=12)
    body = "\n".join(csv_line(r) for r in raw)
    response = client.post("/invocations", content=body, headers=CSV)
    assert response.status_code == 200, response.text
    scores = [float(v) for v in response.text.strip().splitlines()]
    np.testing.assert_allclose(scores, expected_scores(model_dir, x), atol=1e-6)


@pytest.mark.parametrize(
    "document",
    [
        dict(
            zip(
                [
                    "air_temperature_k",
                    "process_temperature_k",
                    "rotational_speed_rpm",
                    "torque_nm",
                    "tool_wear_min",
                    "type",
                ],
                RECORD,
                strict=True,
            )
        ),
        {"instances": [RECORD, RECORD, RECORD]},
        [RECORD, RECORD],
    ],
    ids=["one-object", "instances", "list-of-lists"],
)
def test_json_records_give_json_predictions(client: httpx.Client, document: object) -> None:
    response = client.post(
        "/invocations", content=json.dumps(document), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    count = len(document["instances"]) if isinstance(document, dict) and "instances" in document else None
    assert len(predictions) == (count or (len(document) if isinstance(document, list) else 1))
    assert all(0.0 <= p["score"] <= 1.0 and p["label"] in {"0", "1"} for p in predictions)


def test_missing_accept_defaults_to_json(client: httpx.Client) -> None:
    response = client.post("/invocations", content=csv_line(RECORD), headers={"content-type": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "predictions" in response.json()


BAD_REQUESTS = {
    "unsupported-content-type": ("application/x-npy", b"\x93NUMPY"),
    "wrong-feature-count": ("text/csv", b"298.1,308.6,1551.0"),
    "non-numeric-value": ("text/csv", b"298.1,hot,1551.0,42.8,0.0,M"),
    "unknown-category": ("text/csv", b"298.1,308.6,1551.0,42.8,0.0,X"),
    "invalid-json": ("application/json", b"{not json"),
    "invalid-utf8": ("text/csv", b"298.1,308.6,\xff\xfe,42.8,0.0,M"),
    "empty-body": ("text/csv", b""),
    "blank-body": ("text/csv", b"\n\n"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_requests_get_4xx_with_a_message(client: httpx.Client, case: str) -> None:
    content_type, body = BAD_REQUESTS[case]
    for path in ("/invocations", f"/endpoints/{ENDPOINT}/invocations"):
        response = client.post(path, content=body, headers={"content-type": content_type})
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
        error = response.json()
        assert error["message"], error
        assert response.headers["x-amzn-errortype"] == error["__type"]
    assert client.get("/ping").status_code == 200


def test_oversize_payload_is_413(client: httpx.Client) -> None:
    body = b"1" * (6 * 1024 * 1024 + 1)
    response = client.post("/invocations", content=body, headers={"content-type": "text/csv"})
    assert response.status_code == 413
    assert response.headers["x-amzn-errortype"] == "ValidationError"
    # The connection stays usable: uvicorn discards the unread rest of the body.
    assert client.post("/invocations", content=csv_line(RECORD), headers=CSV).status_code == 200


def test_unknown_route_and_wrong_method(client: httpx.Client) -> None:
    assert client.get("/nope").status_code == 404
    assert client.post(f"/endpoints/{ENDPOINT}/async-invocations", content=b"x").status_code == 404
    assert client.get("/invocations").status_code == 405
    assert client.post("/ping").status_code == 405


def test_metrics_text_parses_with_counts_and_histograms(client: httpx.Client) -> None:
    for _ in range(5):
        assert client.post("/invocations", content=csv_line(RECORD), headers=CSV).status_code == 200
    client.post("/invocations", content=b"1,2", headers=CSV)  # one model 4xx
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_prometheus(response.text)

    def value(name: str, **labels: str) -> float:
        found = [v for (n, lab), v in samples.items() if n == name and labels.items() <= dict(lab).items()]
        assert len(found) == 1, (name, labels, found)
        return found[0]

    invocations = sum(value("serve_invocations_total", variant=v) for v in WEIGHTS)
    errors = sum(value("serve_invocation_errors_total", variant=v, **{"class": "4xx"}) for v in WEIGHTS)
    assert invocations >= 6 and errors >= 1
    for variant in ("A", "B"):
        for phase in PHASES:
            labels = {"variant": variant, "phase": phase}
            buckets = [value("serve_request_duration_seconds_bucket", le=repr(b), **labels) for b in BUCKETS]
            top = value("serve_request_duration_seconds_bucket", le="+Inf", **labels)
            assert buckets == sorted(buckets) and buckets[-1] <= top
            assert top == value("serve_request_duration_seconds_count", **labels)
    successes = sum(value("serve_request_duration_seconds_count", variant=v, phase="total") for v in WEIGHTS)
    assert successes == invocations - errors - sum(
        value("serve_invocation_errors_total", variant=v, **{"class": "5xx"}) for v in WEIGHTS
    )
