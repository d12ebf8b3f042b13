"""Fixtures for the engine's orchestration tests: clients on tmp roots, a stub endpoint server, shapes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from pipelines.local.backend_steps import Runners
from pipelines.local.client import LocalSageMaker
from pipelines.local.executor import run_execution
from pipelines.local.worker import pid_alive

ROLE = "arn:aws:iam::000000000000:role/test"
ARN = "arn:aws:sagemaker:us-east-1:000000000000"
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
TERMINAL = {"Succeeded", "Failed", "Stopped"}

# A minimal endpoint server honouring contracts sec. 11: reads endpoint.json, listens, writes the ready
# file, answers /ping and the runtime route. It refuses to start when a model dir holds a BROKEN file.
STUB_SERVER = textwrap.dedent(
    """
    import json, os, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    config = json.load(open(sys.argv[sys.argv.index("--config") + 1]))
    for variant in config["variants"]:
        if os.path.exists(os.path.join(variant.get("model_dir", ""), "BROKEN")):
            print("broken model", flush=True)
            sys.exit(3)
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/ping" else 404)
            self.end_headers()
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("X-Amzn-Invoked-Production-Variant", config["variants"][0]["name"])
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer((config.get("host", "127.0.0.1"), 0), Handler)
    port = server.server_address[1]
    ready = {"pid": os.getpid(), "port": port, "url": f"http://127.0.0.1:{port}", "started": time.time()}
    tmp = config["ready_file"] + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(ready, handle)
    os.replace(tmp, config["ready_file"])
    server.serve_forever()
    """
)


@pytest.fixture
def stub_server(tmp_path: Path) -> list[str]:
    path = tmp_path / "stub_server.py"
    path.write_text(STUB_SERVER)
    return [sys.executable, str(path)]


@pytest.fixture
def client(tmp_path: Path, stub_server: list[str]) -> Iterator[LocalSageMaker]:
    """A client on a fresh root whose every response is checked against botocore's output shape.

    At teardown the servers and workers the test started are killed.
    """
    sm = LocalSageMaker(root=tmp_path / ".mlops", serve_command=stub_server, spot_interruptions=0)
    original = sm._call

    def checked(operation: str, params: dict[str, Any]) -> dict[str, Any]:
        response = original(operation, params)
        errors = shape_errors(operation, response)
        assert not errors, "\n".join(errors)
        return response

    sm._call = checked  # type: ignore[method-assign]
    yield sm
    cleanup(sm)


def cleanup(sm: LocalSageMaker) -> None:
    """Kill the detached processes a test started (servers, workers: each leads its own process group)."""
    pids = [e.extra.get("pid") for e in sm._backend.records.list_resources("endpoint")]
    pids += [row["worker_pid"] for row in sm._backend.records.list_executions()]
    for pid in pids:
        if pid and pid != os.getpid() and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def put_text(sm: LocalSageMaker, uri: str, text: str) -> str:
    sm.store.put_bytes(uri, textwrap.dedent(text).encode())
    return uri


def processing_step(
    name: str,
    script_uri: str,
    *,
    inputs: dict[str, Any] | None = None,
    outputs: list[str] = (),
    args: list[Any] | None = None,
    bucket: str = "bucket",
    **extra: Any,
) -> dict[str, Any]:
    """A Processing step as SDK definitions carry it: code as an input, per-execution outputs."""
    processing_inputs = [
        {
            "InputName": "code",
            "S3Input": {
                "S3Uri": script_uri,
                "LocalPath": "/opt/ml/processing/input/code",
                "S3DataType": "S3Prefix",
                "S3InputMode": "File",
                "S3DataDistributionType": "FullyReplicated",
            },
        }
    ]
    for input_name, uri in (inputs or {}).items():
        processing_inputs.append(
            {
                "InputName": input_name,
                "S3Input": {
                    "S3Uri": uri,
                    "LocalPath": f"/opt/ml/processing/input/{input_name}",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": "FullyReplicated",
                },
            }
        )
    script = script_uri.rsplit("/", 1)[-1]
    arguments: dict[str, Any] = {
        "ProcessingResources": {
            "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}
        },
        "AppSpecification": {
            "ImageUri": SKLEARN_IMAGE,
            "ContainerEntrypoint": ["python3", f"/opt/ml/processing/input/code/{script}"],
        },
        "RoleArn": ROLE,
        "ProcessingInputs": processing_inputs,
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": out,
                    "S3Output": {
                        "S3Uri": {
                            "Std:Join": {
                                "On": "/",
                                "Values": [
                                    f"s3://{bucket}/out",
                                    {"Get": "Execution.PipelineExecutionId"},
                                    name,
                                    out,
                                ],
                            }
                        },
                        "LocalPath": f"/opt/ml/processing/output/{out}",
                        "S3UploadMode": "EndOfJob",
                    },
                }
                for out in outputs
            ]
        },
    }
    if args:
        arguments["AppSpecification"]["ContainerArguments"] = args
    return {"Name": name, "Type": "Processing", "Arguments": arguments, **extra}


def definition(steps: list[dict[str, Any]], parameters: list[dict[str, Any]] | None = None) -> str:
    return json.dumps(
        {"Version": "2020-12-01", "Metadata": {}, "Parameters": parameters or [], "Steps": steps}
    )


def create(sm: LocalSageMaker, name: str, steps: list[dict[str, Any]], parameters: Any = None) -> None:
    sm.create_pipeline(PipelineName=name, PipelineDefinition=definition(steps, parameters), RoleArn=ROLE)


def start_inline(
    sm: LocalSageMaker,
    pipeline: str,
    runners: Runners | None = None,
    cancel: threading.Event | None = None,
    **kwargs: Any,
) -> str:
    """Start an execution and run it in this process (no worker), optionally with fake job runners."""
    backend = sm._backend
    original = backend._launch
    backend._launch = lambda arn: None  # type: ignore[method-assign]
    try:
        arn = sm.start_pipeline_execution(PipelineName=pipeline, **kwargs)["PipelineExecutionArn"]
    finally:
        backend._launch = original  # type: ignore[method-assign]
    backend.records.set_execution(arn, worker_pid=os.getpid())
    run_execution(sm.root, arn, cancel or threading.Event(), runners)
    return arn


def wait_for(sm: LocalSageMaker, arn: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll until the execution ends (a detached worker runs it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
        if described["PipelineExecutionStatus"] in TERMINAL:
            return described
        time.sleep(0.1)
    raise AssertionError(f"execution {arn} still running after {timeout} s")


def steps_of(sm: LocalSageMaker, arn: str) -> dict[str, dict[str, Any]]:
    listed = sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)["PipelineExecutionSteps"]
    return {s["StepName"]: s for s in listed}


# --- botocore output shape validation --------------------------------------------------------------
_MODEL = botocore.session.get_session().get_service_model("sagemaker")


def shape_errors(operation: str, response: dict[str, Any]) -> list[str]:
    """Every difference between `response` and the output shape botocore declares for `operation`."""
    shape = _MODEL.operation_model(operation).output_shape
    body = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    errors: list[str] = []
    if shape is None:
        return [f"{operation}: no output expected, got {sorted(body)}"] if body else []
    _check(shape, body, operation, errors)
    return errors


def _check(shape: Any, value: Any, path: str, errors: list[str]) -> None:
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            errors.append(f"{path}: expected structure {shape.name}, got {type(value).__name__}")
            return
        extra = sorted(set(value) - set(shape.members))
        if extra:
            errors.append(f"{path}: keys not in {shape.name}: {extra}")
        missing = sorted(set(shape.required_members) - set(value))
        if missing:
            errors.append(f"{path}: required members of {shape.name} missing: {missing}")
        for key, item in value.items():
            if key in shape.members:
                _check(shape.members[key], item, f"{path}.{key}", errors)
    elif kind == "list":
        if not isinstance(value, list):
            errors.append(f"{path}: expected list, got {type(value).__name__}")
            return
        for index, item in enumerate(value):
            _check(shape.member, item, f"{path}[{index}]", errors)
    elif kind == "map":
        if not isinstance(value, dict):
            errors.append(f"{path}: expected map, got {type(value).__name__}")
            return
        for key, item in value.items():
            _check(shape.key, key, f"{path}<key>", errors)
            _check(shape.value, item, f"{path}[{key!r}]", errors)
    elif kind == "string":
        if not isinstance(value, str):
            errors.append(f"{path}: expected string, got {type(value).__name__} {value!r}")
        elif shape.enum and value not in shape.enum:
            errors.append(f"{path}: {value!r} not in enum {shape.name}")
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: expected integer, got {type(value).__name__} {value!r}")
    elif kind in ("float", "double"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            errors.append(f"{path}: expected number, got {type(value).__name__} {value!r}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            errors.append(f"{path}: expected boolean, got {type(value).__name__}")
    elif kind == "timestamp":
        if not isinstance(value, datetime) or value.tzinfo is None:
            errors.append(f"{path}: expected aware datetime, got {value!r}")
    elif kind == "blob" and not isinstance(value, (bytes, bytearray)):
        errors.append(f"{path}: expected bytes, got {type(value).__name__}")


@pytest.fixture
def assert_shape() -> Callable[[str, dict[str, Any]], None]:
    def check(operation: str, response: dict[str, Any]) -> None:
        errors = shape_errors(operation, response)
        assert not errors, "\n".join(errors)

    return check


# --- fake job runners (contracts sec. 10 interface) for fast orchestration tests -------------------
class FakeRunners:
    """Job runners that write small outputs instead of running containers; failures and delays scripted.

    Args:
        store: the object store outputs go to.
        failures: step name -> FailureReasons returned by that step's next jobs, in order.
        delays: step name -> seconds a job of that step takes.
        metric: objective value of training jobs (tuning trials add their `eta`).
    """

    def __init__(
        self,
        store: Any,
        failures: dict[str, list[str]] | None = None,
        delays: dict[str, float] | None = None,
        metric: float = 0.9,
    ) -> None:
        self.store = store
        self.failures = {k: list(v) for k, v in (failures or {}).items()}
        self.delays = delays or {}
        self.metric = metric
        self.calls: list[tuple[str, float, float]] = []
        self.contexts: list[Any] = []
        self.lock = threading.Lock()

    def runners(self) -> Runners:
        return Runners(self.processing, self.training, self.tuning, self.transform)

    def _step(self, job_name: str) -> str:
        for step in list(self.failures) + list(self.delays):
            if f"-{step}-" in job_name:
                return step
        return ""

    def _run(self, job_name: str) -> str | None:
        start = time.monotonic()
        step = self._step(job_name)
        time.sleep(self.delays.get(step, 0.0))
        with self.lock:
            self.calls.append((job_name, start, time.monotonic()))
            queue = self.failures.get(step) or []
            return queue.pop(0) if queue else None

    def processing(self, request: dict[str, Any], ctx: Any) -> dict[str, Any]:
        failure = self._run(request["ProcessingJobName"])
        for output in request.get("ProcessingOutputConfig", {}).get("Outputs", []):
            uri = output["S3Output"]["S3Uri"].rstrip("/")
            self.store.put_bytes(f"{uri}/{output['OutputName']}.json", json.dumps({"value": 0.75}).encode())
        now = datetime.now().astimezone()
        return {
            **request,
            "ProcessingJobArn": f"{ARN}:processing-job/{request['ProcessingJobName'].lower()}",
            "ProcessingJobStatus": "Failed" if failure else "Completed",
            **({"FailureReason": failure} if failure else {}),
            "CreationTime": now,
            "ProcessingEndTime": now,
        }

    def training(self, request: dict[str, Any], ctx: Any) -> dict[str, Any]:
        import io
        import tarfile

        self.contexts.append(ctx)
        failure = self._run(request["TrainingJobName"])
        output = request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        model_uri = f"{output}/{request['TrainingJobName']}/output/model.tar.gz"
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            data = b"model"
            info = tarfile.TarInfo("xgboost-model")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        self.store.put_bytes(model_uri, buffer.getvalue())
        eta = float(request.get("HyperParameters", {}).get("eta", 0))
        now = datetime.now().astimezone()
        return {
            **request,
            "TrainingJobArn": f"{ARN}:training-job/{request['TrainingJobName'].lower()}",
            "TrainingJobStatus": "Failed" if failure else "Completed",
            **({"FailureReason": failure} if failure else {}),
            "SecondaryStatus": "Failed" if failure else "Completed",
            "ModelArtifacts": {"S3ModelArtifacts": model_uri},
            "FinalMetricDataList": [
                {"MetricName": "validation:auc", "Value": self.metric + eta, "Timestamp": now}
            ],
            "CreationTime": now,
            "TrainingEndTime": now,
            "TrainingTimeInSeconds": 1,
            "BillableTimeInSeconds": 1,
        }

    def tuning(
        self, request: dict[str, Any], ctx: Any, run_training: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        definition = request["TrainingJobDefinition"]
        name = request["HyperParameterTuningJobName"]
        summaries = []
        for eta in (0.01, 0.05):
            trial = {
                "AlgorithmSpecification": definition["AlgorithmSpecification"],
                "RoleArn": definition.get("RoleArn", ROLE),
                "InputDataConfig": definition.get("InputDataConfig", []),
                "OutputDataConfig": definition["OutputDataConfig"],
                "ResourceConfig": definition.get("ResourceConfig", {}),
                "StoppingCondition": definition.get("StoppingCondition", {"MaxRuntimeInSeconds": 60}),
                "HyperParameters": {**definition.get("StaticHyperParameters", {}), "eta": str(eta)},
            }
            described = run_training(trial)
            summaries.append(
                {
                    "TrainingJobName": described["TrainingJobName"],
                    "TrainingJobArn": described["TrainingJobArn"],
                    "CreationTime": described["CreationTime"],
                    "TrainingJobStatus": described["TrainingJobStatus"],
                    "TunedHyperParameters": {"eta": str(eta)},
                    "FinalHyperParameterTuningJobObjectiveMetric": {
                        "MetricName": "validation:auc",
                        "Value": described["FinalMetricDataList"][0]["Value"],
                    },
                }
            )
        summaries.sort(key=lambda s: -s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
        now = datetime.now().astimezone()
        return {
            **request,
            "HyperParameterTuningJobArn": f"{ARN}:hyper-parameter-tuning-job/{name.lower()}",
            "HyperParameterTuningJobStatus": "Completed",
            "CreationTime": now,
            "HyperParameterTuningEndTime": now,
            "TrainingJobStatusCounters": {
                "Completed": 2,
                "InProgress": 0,
                "RetryableError": 0,
                "NonRetryableError": 0,
                "Stopped": 0,
            },
            "ObjectiveStatusCounters": {"Succeeded": 2, "Pending": 0, "Failed": 0},
            "BestTrainingJob": summaries[0],
            "TrainingJobSummaries": summaries,
        }

    def transform(self, request: dict[str, Any], ctx: Any, model: dict[str, Any]) -> dict[str, Any]:
        failure = self._run(request["TransformJobName"])
        output = request["TransformOutput"]["S3OutputPath"].rstrip("/")
        self.store.put_bytes(f"{output}/data.csv.out", model["ModelName"].encode())
        now = datetime.now().astimezone()
        return {
            **request,
            "TransformJobArn": f"{ARN}:transform-job/{request['TransformJobName'].lower()}",
            "TransformJobStatus": "Failed" if failure else "Completed",
            **({"FailureReason": failure} if failure else {}),
            "CreationTime": now,
            "TransformEndTime": now,
        }


@pytest.fixture
def fake(client: LocalSageMaker) -> FakeRunners:
    return FakeRunners(client.store)
