"""Data capture: SageMaker's JSONL under <dest>/<endpoint>/<variant>/yyyy/mm/dd/hh/, sampling, encodings."""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from deploy.serve.capture import CaptureWriter
from deploy.serve.config import CaptureConfig
from tests.serve.serve_helpers import ENDPOINT, RECORD, csv_line

FILE_NAME = re.compile(r"^\d{2}-\d{2}-\d{3}-[0-9a-f-]{36}\.jsonl$")
TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def captured(root: Path) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Every captured record by inference id (records without one are skipped)."""
    out = {}
    for path in root.rglob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            inference_id = record["eventMetadata"].get("inferenceId")
            if inference_id:
                out[inference_id] = (path, record)
    return out


def test_captured_records_have_sagemakers_shape(client: httpx.Client, capture_dir: Path) -> None:
    ids = [f"cap-{uuid.uuid4()}" for _ in range(3)]
    for inference_id in ids:
        response = client.post(
            f"/endpoints/{ENDPOINT}/invocations",
            content=csv_line(RECORD),
            headers={
                "content-type": "text/csv",
                "accept": "text/csv",
                "x-amzn-sagemaker-inference-id": inference_id,
            },
        )
        assert response.status_code == 200
    deadline = time.monotonic() + 10
    while not set(ids) <= captured(capture_dir).keys() and time.monotonic() < deadline:
        time.sleep(0.05)
    found = captured(capture_dir)
    assert set(ids) <= found.keys()
    for inference_id in ids:
        path, record = found[inference_id]
        endpoint, variant, year, month, day, hour, name = path.relative_to(capture_dir).parts
        assert endpoint == ENDPOINT and variant in {"A", "B"}
        assert (len(year), len(month), len(day), len(hour)) == (4, 2, 2, 2)
        assert FILE_NAME.match(name), name
        assert record["eventVersion"] == "0"
        assert TIME.match(record["eventMetadata"]["inferenceTime"])
        assert f"{year}-{month}-{day}T{hour}" == record["eventMetadata"]["inferenceTime"][:13]
        uuid.UUID(record["eventMetadata"]["eventId"])
        data = record["captureData"]
        assert data["endpointInput"] == {
            "observedContentType": "text/csv",
            "mode": "INPUT",
            "data": csv_line(RECORD),
            "encoding": "CSV",
        }
        output = data["endpointOutput"]
        assert (output["observedContentType"], output["mode"], output["encoding"]) == (
            "text/csv",
            "OUTPUT",
            "CSV",
        )
        assert 0.0 <= float(output["data"]) <= 1.0


def test_failed_requests_are_not_captured(client: httpx.Client, capture_dir: Path) -> None:
    inference_id = f"bad-{uuid.uuid4()}"
    response = client.post(
        "/invocations",
        content=b"1,2",
        headers={"content-type": "text/csv", "x-amzn-sagemaker-inference-id": inference_id},
    )
    assert response.status_code == 400
    time.sleep(0.2)  # longer than the writer's batch pause
    assert inference_id not in captured(capture_dir)


def _writer(tmp_path: Path, percent: float, **kwargs: Any) -> CaptureWriter:
    config = CaptureConfig(sampling_percentage=percent, destination_dir=tmp_path, **kwargs)
    return CaptureWriter(config, "ep", random.Random(0))


def test_sampling_keeps_about_the_configured_share(tmp_path: Path) -> None:
    none = _writer(tmp_path / "none", 0)
    some = _writer(tmp_path / "some", 20)
    for i in range(1000):
        none.submit("V", b"1,2", "text/csv", b"0.5", "text/csv", str(i))
        some.submit("V", b"1,2", "text/csv", b"0.5", "text/csv", str(i))
    none.close()
    some.close()
    assert not (tmp_path / "none").exists()
    kept = sum(len(p.read_text().splitlines()) for p in (tmp_path / "some").rglob("*.jsonl"))
    assert 150 <= kept <= 250


def test_other_content_types_are_base64_and_options_respected(tmp_path: Path) -> None:
    writer = _writer(tmp_path, 100, capture_input=False)
    writer.submit("V", b"\x00\x01", "application/x-npy", b"\xff", "application/octet-stream", None)
    writer.close()
    (path,) = tmp_path.rglob("*.jsonl")
    record = json.loads(path.read_text())
    assert "endpointInput" not in record["captureData"]
    assert record["captureData"]["endpointOutput"]["encoding"] == "BASE64"
    assert record["captureData"]["endpointOutput"]["data"] == "/w=="
    assert "inferenceId" not in record["eventMetadata"]
