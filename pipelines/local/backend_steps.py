"""One handler per step type: resolved Arguments in, a StepOutcome (status, properties, metadata) out."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.local.api_common import random_id, service, validation_report
from pipelines.local.api_errors import ResourceLimitExceeded, ServiceError
from pipelines.local.backend_jobs import PROCESSING, TRAINING, TRANSFORM, TUNING, JobKind
from pipelines.local.resolve import ResolveError, Scope, evaluate_condition, resolve

log = logging.getLogger(__name__)

# How a failure counts for retry policies. Runners put AWS's own FailureReason prefixes first
# ("CapacityError: ...", "InternalServerError: ..."); SageMakerJobStepRetryPolicy matches these types.
FAILURE_TYPES = (
    ("CapacityError", "SageMaker.CAPACITY_ERROR"),
    ("InsufficientCapacity", "SageMaker.CAPACITY_ERROR"),
    ("InternalServerError", "SageMaker.JOB_INTERNAL_ERROR"),
    ("InternalError", "SageMaker.JOB_INTERNAL_ERROR"),
    ("ResourceLimitExceeded", "SageMaker.RESOURCE_LIMIT"),
    ("ThrottlingException", "Step.THROTTLING"),
)
_JOB_STATUS = {"Completed": "Succeeded", "Failed": "Failed", "Stopped": "Stopped", "Stopping": "Stopped"}
_UPDATE_ENDPOINT_KEYS = set(service().operation_model("UpdateEndpoint").input_shape.members)


def classify(reason: str | None) -> str | None:
    """The retry ExceptionType a job's FailureReason stands for, or None (not retryable)."""
    text = (reason or "").lstrip()
    return next((kind for prefix, kind in FAILURE_TYPES if text.startswith(prefix)), None)


def classify_exception(exc: BaseException) -> str | None:
    """Errors of the engine itself that SageMaker would report as throttling or a service fault."""
    if isinstance(exc, sqlite3.OperationalError):
        return "Step.THROTTLING"  # database busy: another run holds the write lock
    if isinstance(exc, ResourceLimitExceeded):
        return "SageMaker.RESOURCE_LIMIT"
    if isinstance(exc, OSError):
        return "Step.SERVICE_FAULT"
    return None


@dataclass
class StepOutcome:
    status: str  # Succeeded | Failed | Stopped
    properties: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    failure_reason: str | None = None
    failure_type: str | None = None
    exit_code: int | None = None


@dataclass
class Runners:
    """The job runners (contracts sec. 10); tests swap in fakes."""

    processing: Callable[..., dict[str, Any]]
    training: Callable[..., dict[str, Any]]
    tuning: Callable[..., dict[str, Any]]
    transform: Callable[..., dict[str, Any]]

    @classmethod
    def default(cls) -> Runners:
        from pipelines.local import jobs

        return cls(
            jobs.run_processing_job, jobs.run_training_job, jobs.run_tuning_job, jobs.run_transform_job
        )


def safe_name(text: str) -> str:
    """SageMaker resource names allow letters, digits and single hyphens."""
    return re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9-]", "-", text)).strip("-") or "step"


class StepRunner:
    """Runs one step attempt of one execution; knows the backend, the runners and the engine options."""

    def __init__(
        self, backend: Any, execution_arn: str, execution_id: str, cancel: threading.Event, runners: Runners
    ) -> None:
        self.backend = backend
        self.arn = execution_arn
        self.execution_id = execution_id
        self.cancel = cancel
        self.runners = runners
        self.options = backend.options

    def run(
        self, step: dict[str, Any], args: Any, scope: Scope, on_job: Callable[[str, str], None]
    ) -> StepOutcome:
        handler = getattr(self, f"_{step['Type'].lower()}", None)
        if handler is None:
            return StepOutcome(
                "Failed", failure_reason=f"Step type {step['Type']} is not supported by the local engine."
            )
        try:
            return handler(step, args, scope, on_job)
        except ResolveError as exc:
            return StepOutcome("Failed", failure_reason=str(exc))
        except ServiceError as exc:
            return StepOutcome(
                "Failed", failure_reason=f"{exc.code}: {exc.message}", failure_type=classify_exception(exc)
            )
        except Exception as exc:
            log.exception("step %s failed with an engine error", step["Name"])
            return StepOutcome(
                "Failed", failure_reason=f"{type(exc).__name__}: {exc}", failure_type=classify_exception(exc)
            )

    # --- jobs ------------------------------------------------------------------------------------
    def _job_name(self, step: dict[str, Any], given: str | None, limit: int = 63) -> str:
        """Like SageMaker's `pipelines-<execution id>-<step>-<random>`; a given name is kept as the prefix."""
        suffix = random_id(10)
        prefix = safe_name(given) if given else f"pipelines-{self.execution_id}-{safe_name(step['Name'])}"
        return f"{prefix[: limit - len(suffix) - 1].rstrip('-')}-{suffix}"

    def _context(self, name: str, group: str) -> Any:
        from pipelines.local.jobs.context import JobContext

        root = self.backend.root
        return JobContext(
            store=self.backend.store,
            job_dir=root / "jobs" / name,
            log_path=root / "logs" / group / f"{name}.log",
            spot_interruptions=self.options.spot_interruptions,
            cancel=self.cancel,
            region=self.backend.region,
            account=self.backend.account_id,
        )

    def _run_job(
        self,
        job: JobKind,
        request: dict[str, Any],
        group: str,
        call: Callable[[Any], dict[str, Any]],
        on_job: Callable[[str, str], None],
        parent: str | None = None,
    ) -> tuple[str, dict[str, Any]]:
        name = request[job.name_key]
        job_arn = self.backend.job_started(job, request, owner=self.arn, parent=parent)
        ctx = self._context(name, group)
        on_job(job_arn, str(ctx.log_path))
        try:
            describe = call(ctx)
        except Exception as exc:  # a runner bug or an UnsupportedError: the job fails, naming it
            reason = f"{type(exc).__name__}: {exc}"
            describe = {
                **self.backend.get_job(job, name),
                job.status_key: "Failed",
                "FailureReason": reason[:1024],
            }
        self.backend.job_finished(job, describe, extra=self._extra(describe))
        return job_arn, describe

    @staticmethod
    def _extra(describe: dict[str, Any]) -> dict[str, Any] | None:
        if "TrainingJobSummaries" in describe:
            return {"TrainingJobSummaries": describe["TrainingJobSummaries"]}
        return None

    def _job_outcome(
        self, job: JobKind, job_arn: str, describe: dict[str, Any], meta_key: str
    ) -> StepOutcome:
        status = _JOB_STATUS.get(describe.get(job.status_key, "Failed"), "Failed")
        reason = describe.get("FailureReason")
        return StepOutcome(
            status,
            properties=describe if status == "Succeeded" else None,
            metadata={meta_key: {"Arn": job_arn}},
            failure_reason=reason if status != "Succeeded" else None,
            failure_type=classify(reason) if status == "Failed" else None,
            exit_code=0 if status == "Succeeded" else 1,
        )

    def _processing(
        self, step: dict[str, Any], args: dict[str, Any], scope: Scope, on_job: Any
    ) -> StepOutcome:
        request = {**args, "ProcessingJobName": self._job_name(step, args.get("ProcessingJobName"))}
        job_arn, describe = self._run_job(
            PROCESSING, request, "ProcessingJobs", lambda ctx: self.runners.processing(request, ctx), on_job
        )
        return self._job_outcome(PROCESSING, job_arn, describe, "ProcessingJob")

    def _training(self, step: dict[str, Any], args: dict[str, Any], scope: Scope, on_job: Any) -> StepOutcome:
        request = {**args, "TrainingJobName": self._job_name(step, args.get("TrainingJobName"))}
        job_arn, describe = self._run_job(
            TRAINING, request, "TrainingJobs", lambda ctx: self.runners.training(request, ctx), on_job
        )
        return self._job_outcome(TRAINING, job_arn, describe, "TrainingJob")

    def _tuning(self, step: dict[str, Any], args: dict[str, Any], scope: Scope, on_job: Any) -> StepOutcome:
        # Tuning job names are limited to 32 characters.
        name = f"{safe_name(step['Name'])[:19].rstrip('-')}-{random_id(12)}"
        request = {**args, "HyperParameterTuningJobName": name}
        tuning_arn = self.backend.arn(TUNING.kind, name)
        counter = iter(range(1, 10_000))
        lock = threading.Lock()

        def run_trial(trial: dict[str, Any]) -> dict[str, Any]:
            with lock:
                number = next(counter)
            trial = {**trial}
            trial.setdefault("TrainingJobName", f"{name}-{number:03d}-{random_id(8)}")
            _, described = self._run_job(
                TRAINING,
                trial,
                "TrainingJobs",
                lambda ctx: self.runners.training(trial, ctx),
                lambda *_: None,
                parent=name,
            )
            if "TuningJobArn" not in described:
                described = {**described, "TuningJobArn": tuning_arn}
                self.backend.job_finished(TRAINING, described)
            return described

        job_arn, describe = self._run_job(
            TUNING, request, "TuningJobs", lambda ctx: self.runners.tuning(request, ctx, run_trial), on_job
        )
        return self._job_outcome(TUNING, job_arn, describe, "TuningJob")

    def _transform(
        self, step: dict[str, Any], args: dict[str, Any], scope: Scope, on_job: Any
    ) -> StepOutcome:
        model = self.backend.describe_model({"ModelName": args.get("ModelName", "")})
        request = {**args, "TransformJobName": self._job_name(step, args.get("TransformJobName"))}
        job_arn, describe = self._run_job(
            TRANSFORM,
            request,
            "TransformJobs",
            lambda ctx: self.runners.transform(request, ctx, model),
            on_job,
        )
        return self._job_outcome(TRANSFORM, job_arn, describe, "TransformJob")

    # --- registry and hosting --------------------------------------------------------------------
    def _checked(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        """Validate like the service: unknown top-level members are dropped (the SDK adds a few), the rest
        must match the API's input shape."""
        members = service().operation_model(operation).input_shape.members
        dropped = sorted(set(request) - set(members))
        if dropped:
            log.info("%s: ignoring members the API does not take: %s", operation, dropped)
        request = {k: v for k, v in request.items() if k in members}
        if report := validation_report(operation, request):
            raise ResolveError(f"{operation} request is invalid: {report}")
        return request

    def _model(self, step: dict[str, Any], args: dict[str, Any], scope: Scope, on_job: Any) -> StepOutcome:
        request = {**args, "ModelName": args.get("ModelName") or self._job_name(step, None)}
        created = self.backend.create_model(self._checked("CreateModel", request))
        properties = self.backend.describe_model({"ModelName": request["ModelName"]})
        return StepOutcome("Succeeded", properties, {"Model": {"Arn": created["ModelArn"]}})

    def _registermodel(
        self, step: dict[str, Any], args: dict[str, Any], scope: Scope, on_job: Any
    ) -> StepOutcome:
        request = self._checked("CreateModelPackage", dict(args))
        group = str(request.get("ModelPackageGroupName", "")).rsplit("/", 1)[-1]
        if group and self.backend.records.get_resource("model-package-group", group) is None:
            # A RegisterModel step creates its package group on first use (the service does this too).
            with contextlib.suppress(ServiceError):  # another execution may have created it meanwhile
                self.backend.create_model_package_group({"ModelPackageGroupName": group})
        created = self.backend.create_model_package(request)
        properties = self.backend.describe_model_package({"ModelPackageName": created["ModelPackageArn"]})
        return StepOutcome("Succeeded", properties, {"RegisterModel": {"Arn": created["ModelPackageArn"]}})

    def _endpointconfig(
        self, step: dict[str, Any], args: dict[str, Any], scope: Scope, on_job: Any
    ) -> StepOutcome:
        created = self.backend.create_endpoint_config(self._checked("CreateEndpointConfig", dict(args)))
        properties = self.backend.describe_endpoint_config({"EndpointConfigName": args["EndpointConfigName"]})
        return StepOutcome("Succeeded", properties, {"EndpointConfig": {"Arn": created["EndpointConfigArn"]}})

    def _endpoint(self, step: dict[str, Any], args: dict[str, Any], scope: Scope, on_job: Any) -> StepOutcome:
        """Create, or update when the endpoint exists (what the service does for an Endpoint step)."""
        request = self._checked("CreateEndpoint", dict(args))
        name = request["EndpointName"]
        if self.backend.records.get_resource("endpoint", name) is None:
            created = self.backend.create_endpoint(request)
        else:
            created = self.backend.update_endpoint(
                {k: v for k, v in request.items() if k in _UPDATE_ENDPOINT_KEYS}
            )
        properties = self.backend.describe_endpoint({"EndpointName": name})
        metadata = {"Endpoint": {"Arn": created["EndpointArn"]}}
        failed = properties["EndpointStatus"] == "Failed" or properties.get("EndpointConfigName") != args.get(
            "EndpointConfigName"
        )
        if failed:
            return StepOutcome("Failed", metadata=metadata, failure_reason=properties.get("FailureReason"))
        return StepOutcome("Succeeded", properties, metadata)

    # --- control flow ----------------------------------------------------------------------------
    def _condition(self, step: dict[str, Any], args: Any, scope: Scope, on_job: Any) -> StepOutcome:
        # All conditions must hold (a conjunction); each is evaluated so a bad reference always surfaces.
        outcomes = [evaluate_condition(c, scope) for c in step.get("Arguments", {}).get("Conditions", [])]
        outcome = "True" if all(outcomes) else "False"
        return StepOutcome("Succeeded", {"Outcome": outcome}, {"Condition": {"Outcome": outcome}})

    def _fail(self, step: dict[str, Any], args: dict[str, Any], scope: Scope, on_job: Any) -> StepOutcome:
        from pipelines.local.resolve import stringify

        message = stringify(args.get("ErrorMessage", ""))
        return StepOutcome("Failed", metadata={"Fail": {"ErrorMessage": message}}, failure_reason=message)

    def _lambda(self, step: dict[str, Any], args: dict[str, Any], scope: Scope, on_job: Any) -> StepOutcome:
        function = str(resolve(step.get("FunctionArn", ""), scope))
        short = function.split(":function:", 1)[-1].split(":", 1)[0]
        target = self.options.lambda_handlers.get(function) or self.options.lambda_handlers.get(short)
        metadata: dict[str, Any] = {"Lambda": {"Arn": function}}
        if not target:
            reason = (
                f"No local handler for Lambda function {short!r}: pass lambda_handlers={{'{short}': "
                "'module:function'}} to LocalSageMaker (or --lambda NAME=module:function)."
            )
            return StepOutcome("Failed", metadata=metadata, failure_reason=reason)
        handler = load_handler(target)
        result: dict[str, Any] = {}

        def call() -> None:
            context = _LambdaContext(short, function)
            result["value"] = handler(args, context)

        thread = threading.Thread(target=_capture(call, result), name=f"lambda-{short}", daemon=True)
        thread.start()
        thread.join(float(step.get("Timeout", 120)))
        if thread.is_alive():
            return StepOutcome("Failed", metadata=metadata, failure_reason=f"Lambda {short} timed out")
        if "error" in result:
            exc = result["error"]
            return StepOutcome(
                "Failed",
                metadata=metadata,
                failure_reason=f"Lambda {short} raised {type(exc).__name__}: {exc}",
            )
        value = result.get("value") or {}
        outputs: dict[str, Any] = {}
        for output in step.get("OutputParameters", []):
            name = output["OutputName"]
            if not isinstance(value, dict) or name not in value:
                return StepOutcome(
                    "Failed", metadata=metadata, failure_reason=f"Lambda {short} returned no output {name!r}"
                )
            outputs[name] = _typed_output(value[name], output.get("OutputType", "String"))
        metadata["Lambda"]["OutputParameters"] = [{"Name": k, "Value": str(v)} for k, v in outputs.items()]
        return StepOutcome("Succeeded", {"OutputParameters": outputs}, metadata)


class _LambdaContext:
    """The few attributes handlers read from AWS Lambda's context object."""

    def __init__(self, name: str, arn: str) -> None:
        self.function_name = name
        self.invoked_function_arn = arn
        self.aws_request_id = str(uuid.uuid4())
        self.memory_limit_in_mb = 128


def _capture(call: Callable[[], None], result: dict[str, Any]) -> Callable[[], None]:
    def run() -> None:
        try:
            call()
        except Exception as exc:  # reported as the step's failure
            result["error"] = exc

    return run


def _typed_output(value: Any, kind: str) -> Any:
    return {"Integer": int, "Float": float, "Boolean": lambda v: str(v).lower() == "true"}.get(kind, str)(
        value
    )


def load_handler(target: str) -> Callable[..., Any]:
    """`package.module:function` or `path/to/file.py:function`."""
    location, _, function = target.rpartition(":")
    if not location or not function:
        raise ResolveError(f"Lambda handler {target!r} must look like module:function or file.py:function")
    if location.endswith(".py"):
        spec = importlib.util.spec_from_file_location(Path(location).stem, location)
        if spec is None or spec.loader is None:
            raise ResolveError(f"Lambda handler file {location} cannot be loaded")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(location)
    handler = getattr(module, function, None)
    if not callable(handler):
        raise ResolveError(f"Lambda handler {target!r}: {function} is not a function of {location}")
    return handler
