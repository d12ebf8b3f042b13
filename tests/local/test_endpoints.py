"""Local endpoints: real server processes, blue/green update with health check, dead servers, the CLI."""

from __future__ import annotations

import io
import json
import os
import signal
import tarfile
import time
import urllib.request
from typing import Any

import pytest

from deploy.endpoint import main as endpoint_cli
from pipelines.local.worker import pid_alive


def _model(client: Any, name: str, broken: bool = False) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        # Content differs per model: an update to byte-identical model data is a no-op by design.
        for member in ["xgboost-model", *(["BROKEN"] if broken else [])]:
            info = tarfile.TarInfo(member)
            info.size = len(name)
            archive.addfile(info, io.BytesIO(name.encode()))
    client.store.put_bytes(f"s3://bucket/models/{name}/model.tar.gz", buffer.getvalue())
    client.create_model(
        ModelName=name,
        ExecutionRoleArn="arn:aws:iam::000000000000:role/r",
        PrimaryContainer={
            "Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
            "ModelDataUrl": f"s3://bucket/models/{name}/model.tar.gz",
        },
    )
    client.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
        DataCaptureConfig={
            "InitialSamplingPercentage": 50,
            "DestinationS3Uri": "s3://bucket/capture",
            "CaptureOptions": [{"CaptureMode": "Input"}],
        },
    )


def _invoke(url: str, name: str) -> bytes:
    request = urllib.request.Request(
        f"{url}/endpoints/{name}/invocations",
        data=b"1,2,3",
        method="POST",
        headers={"Content-Type": "text/csv"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read()


def test_create_serves_and_writes_the_server_config(client: Any) -> None:
    _model(client, "blue")
    client.create_endpoint(EndpointName="ep", EndpointConfigName="blue-config")
    described = client.describe_endpoint(EndpointName="ep")
    assert described["EndpointStatus"] == "InService"
    assert described["ProductionVariants"][0]["CurrentWeight"] == 1.0
    local = client.local_endpoint(EndpointName="ep")
    assert _invoke(local["url"], "ep") == b"1,2,3"
    config = json.loads((client.root / "endpoints/ep/1/endpoint.json").read_text())
    assert config["endpoint_name"] == "ep" and config["port"] == 0
    assert config["ready_file"] == str((client.root / "endpoints/ep/1/ready.json").resolve())
    assert (client.root.resolve() / "endpoints/ep/1/models/AllTraffic/xgboost-model").exists()
    assert config["variants"][0]["model_dir"].endswith("models/AllTraffic")
    assert config["data_capture"] == {
        "enabled": True,
        "sampling_percentage": 50,
        "capture_options": ["Input"],
        "destination_dir": str(client.store.path_for("s3://bucket/capture", prefix=True)),
    }


def test_update_moves_traffic_only_after_the_new_server_is_healthy(client: Any) -> None:
    _model(client, "blue")
    _model(client, "green")
    client.create_endpoint(EndpointName="ep", EndpointConfigName="blue-config")
    blue = client.local_endpoint(EndpointName="ep")
    client.update_endpoint(EndpointName="ep", EndpointConfigName="green-config")
    green = client.local_endpoint(EndpointName="ep")
    described = client.describe_endpoint(EndpointName="ep")
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("InService", "green-config")
    assert green["generation"] == 2 and green["pid"] != blue["pid"]
    assert not pid_alive(blue["pid"])  # the old generation was stopped after the switch
    assert _invoke(green["url"], "ep") == b"1,2,3"


def test_update_to_identical_models_keeps_the_running_server(client: Any) -> None:
    _model(client, "blue")
    client.store.put_bytes(
        "s3://bucket/models/same/model.tar.gz", client.store.get_bytes("s3://bucket/models/blue/model.tar.gz")
    )
    client.create_model(
        ModelName="same",
        ExecutionRoleArn="arn:aws:iam::000000000000:role/r",
        PrimaryContainer={
            "Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
            "ModelDataUrl": "s3://bucket/models/same/model.tar.gz",
        },
    )
    client.create_endpoint_config(
        EndpointConfigName="same-config",
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "same", "InitialInstanceCount": 1,
                             "InstanceType": "ml.m5.large"}],
        DataCaptureConfig=client.describe_endpoint_config(EndpointConfigName="blue-config")["DataCaptureConfig"],
    )  # fmt: skip
    client.create_endpoint(EndpointName="ep", EndpointConfigName="blue-config")
    before = client.local_endpoint(EndpointName="ep")
    client.update_endpoint(EndpointName="ep", EndpointConfigName="same-config")
    after = client.local_endpoint(EndpointName="ep")
    described = client.describe_endpoint(EndpointName="ep")
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("InService", "same-config")
    assert after["pid"] == before["pid"] and after["generation"] == before["generation"] == 1
    assert _invoke(after["url"], "ep") == b"1,2,3"


def test_failed_update_keeps_the_old_server_and_reports_why(client: Any) -> None:
    _model(client, "blue")
    _model(client, "bad", broken=True)
    client.create_endpoint(EndpointName="ep", EndpointConfigName="blue-config")
    blue = client.local_endpoint(EndpointName="ep")
    client.update_endpoint(EndpointName="ep", EndpointConfigName="bad-config")
    described = client.describe_endpoint(EndpointName="ep")
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("InService", "blue-config")
    assert (
        "Update failed" in described["FailureReason"] and "exited with code 3" in described["FailureReason"]
    )
    assert client.local_endpoint(EndpointName="ep")["pid"] == blue["pid"]
    assert _invoke(blue["url"], "ep") == b"1,2,3"


def test_a_server_that_never_starts_leaves_a_failed_endpoint(client: Any) -> None:
    _model(client, "bad", broken=True)
    client.create_endpoint(EndpointName="ep", EndpointConfigName="bad-config")
    described = client.describe_endpoint(EndpointName="ep")
    assert described["EndpointStatus"] == "Failed" and "broken model" in described["FailureReason"]


def test_dead_server_is_noticed_by_describe_and_list(client: Any) -> None:
    _model(client, "blue")
    client.create_endpoint(EndpointName="ep", EndpointConfigName="blue-config")
    pid = client.local_endpoint(EndpointName="ep")["pid"]
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    listed = client.list_endpoints()["Endpoints"]
    assert [(e["EndpointName"], e["EndpointStatus"]) for e in listed] == [("ep", "Failed")]
    assert str(pid) in client.describe_endpoint(EndpointName="ep")["FailureReason"]


def test_delete_stops_the_server(client: Any) -> None:
    _model(client, "blue")
    client.create_endpoint(EndpointName="ep", EndpointConfigName="blue-config")
    pid = client.local_endpoint(EndpointName="ep")["pid"]
    client.delete_endpoint(EndpointName="ep")
    assert not pid_alive(pid)
    assert client.list_endpoints()["Endpoints"] == []


def test_endpoint_cli_lists_describes_and_stops(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    _model(client, "blue")
    client.create_endpoint(EndpointName="ep", EndpointConfigName="blue-config")
    out = io.StringIO()
    assert endpoint_cli(["list"], client=client, out=out) == 0
    url = client.local_endpoint(EndpointName="ep")["url"]
    assert "ep" in out.getvalue() and "InService" in out.getvalue() and url in out.getvalue()
    out = io.StringIO()
    assert endpoint_cli(["describe", "ep"], client=client, out=out) == 0
    described = json.loads(out.getvalue())
    assert described["EndpointConfigName"] == "blue-config" and described["Local"]["url"] == url
    out = io.StringIO()
    assert endpoint_cli(["stop", "ep"], client=client, out=out) == 0
    assert "deleted endpoint ep" in out.getvalue()
    assert endpoint_cli(["describe", "ep"], client=client, out=io.StringIO()) == 1
    assert "ValidationException" in capsys.readouterr().err
