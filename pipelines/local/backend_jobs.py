"""Processing, training, tuning and transform job records: written by the executor, read by Describe*."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.local.api_common import filter_sort, now, paginate, shape_members, to_dt
from pipelines.local.api_errors import ValidationError, not_found
from pipelines.local.backend_base import BackendBase


@dataclass(frozen=True)
class JobKind:
    """How one job family names its members (`TrainingJobName`, `TrainingJobStatus`, `TrainingEndTime`)."""

    kind: str  # records kind and ARN resource type
    prefix: str  # TrainingJob, ProcessingJob, HyperParameterTuningJob, TransformJob
    label: str  # for "Could not find ..." messages
    end_key: str
    summary_keys: tuple[str, ...]
    default_order: str = "Ascending"  # List* defaults differ per family (botocore model docs)
    default_sort: str = "CreationTime"

    @property
    def name_key(self) -> str:
        return f"{self.prefix}Name"

    @property
    def status_key(self) -> str:
        return f"{self.prefix}Status"

    @property
    def describe_shape(self) -> str:
        return f"Describe{self.prefix}Response"


_COMMON = ("CreationTime", "LastModifiedTime", "FailureReason")
PROCESSING = JobKind(
    "processing-job",
    "ProcessingJob",
    "Processing job",
    "ProcessingEndTime",
    (
        "ProcessingJobName",
        "ProcessingJobArn",
        "ProcessingJobStatus",
        "ProcessingEndTime",
        "ExitMessage",
        *_COMMON,
    ),
)
TRAINING = JobKind(
    "training-job",
    "TrainingJob",
    "Training job",
    "TrainingEndTime",
    (
        "TrainingJobName",
        "TrainingJobArn",
        "TrainingJobStatus",
        "SecondaryStatus",
        "TrainingEndTime",
        *_COMMON[:2],
    ),
)
TUNING = JobKind(
    "hyper-parameter-tuning-job",
    "HyperParameterTuningJob",
    "Hyper parameter tuning job",
    "HyperParameterTuningEndTime",
    (
        "HyperParameterTuningJobName",
        "HyperParameterTuningJobArn",
        "HyperParameterTuningJobStatus",
        "HyperParameterTuningEndTime",
        "TrainingJobStatusCounters",
        "ObjectiveStatusCounters",
        *_COMMON[:2],
    ),
    default_sort="Name",
)
TRANSFORM = JobKind(
    "transform-job",
    "TransformJob",
    "Transform job",
    "TransformEndTime",
    ("TransformJobName", "TransformJobArn", "TransformJobStatus", "TransformEndTime", *_COMMON),
    default_order="Descending",
)
KINDS = {k.kind: k for k in (PROCESSING, TRAINING, TUNING, TRANSFORM)}


class JobsBackend(BackendBase):
    """Job records; jobs only run inside pipeline steps here (the executor calls the job runners)."""

    # --- written by the executor -----------------------------------------------------------------
    def job_started(
        self, job: JobKind, request: dict[str, Any], owner: str | None, parent: str | None = None
    ) -> str:
        """Record a job InProgress from its Create* request; returns its ARN."""
        name = request[job.name_key]
        members = shape_members(job.describe_shape)
        stamp = to_dt(now())
        body = {k: v for k, v in request.items() if k in members}
        job_arn = self.arn(job.kind, name)
        body.update({f"{job.prefix}Arn": job_arn, job.status_key: "InProgress"})
        body.update({"CreationTime": stamp, "LastModifiedTime": stamp})
        if job is TRAINING:
            body["SecondaryStatus"] = "Starting"
            output = request.get("OutputDataConfig", {}).get("S3OutputPath", "")
            body["ModelArtifacts"] = {"S3ModelArtifacts": f"{output.rstrip('/')}/{name}/output/model.tar.gz"}
            body.setdefault("StoppingCondition", {"MaxRuntimeInSeconds": 86400})
        if job is TUNING:
            body["TrainingJobStatusCounters"] = dict.fromkeys(
                ("Completed", "InProgress", "RetryableError", "NonRetryableError", "Stopped"), 0
            )
            body["ObjectiveStatusCounters"] = dict.fromkeys(("Succeeded", "Pending", "Failed"), 0)
        body = {k: v for k, v in body.items() if k in members}
        if not self.records.insert_resource(
            job.kind, name, job_arn, body, status="InProgress", parent=parent, owner=owner
        ):
            raise ValidationError(
                f"Job name must be unique within an AWS account and region, and a job with "
                f"this name already exists ({job_arn})"
            )
        return job_arn

    def job_finished(
        self, job: JobKind, describe: dict[str, Any], extra: dict[str, Any] | None = None
    ) -> None:
        """Store the runner's Describe* response (only members of the Describe shape; the rest in `extra`)."""
        members = shape_members(job.describe_shape)
        body = {k: v for k, v in describe.items() if k in members}
        if "LastModifiedTime" in members:
            body.setdefault("LastModifiedTime", to_dt(now()))
        self.records.update_resource(
            job.kind, describe[job.name_key], body=body, status=body.get(job.status_key), extra=extra
        )

    # --- Describe / List -------------------------------------------------------------------------
    def _describe(self, job: JobKind, name: str) -> dict[str, Any]:
        return dict(self.get_or_raise(job.kind, name, job.label).body)

    def _list(self, job: JobKind, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        summaries = []
        for record in self.records.list_resources(job.kind):
            summary = {k: record.body[k] for k in job.summary_keys if k in record.body}
            if job is TUNING:
                strategy = record.body.get("HyperParameterTuningJobConfig", {}).get("Strategy", "Bayesian")
                summary["Strategy"] = strategy
            summaries.append(summary)
        items = filter_sort(
            summaries,
            {"SortBy": job.default_sort, **request},
            name_key=job.name_key,
            default_order=job.default_order,
            status_key=job.status_key,
            sort_keys={"Status": job.status_key},
        )
        return paginate(operation, request, items)

    def describe_processing_job(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._describe(PROCESSING, request["ProcessingJobName"])

    def list_processing_jobs(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._list(PROCESSING, "ListProcessingJobs", request)

    def describe_training_job(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._describe(TRAINING, request["TrainingJobName"])

    def list_training_jobs(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._list(TRAINING, "ListTrainingJobs", request)

    def describe_hyper_parameter_tuning_job(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._describe(TUNING, request["HyperParameterTuningJobName"])

    def list_hyper_parameter_tuning_jobs(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._list(TUNING, "ListHyperParameterTuningJobs", request)

    def describe_transform_job(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._describe(TRANSFORM, request["TransformJobName"])

    def list_transform_jobs(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._list(TRANSFORM, "ListTransformJobs", request)

    def list_training_jobs_for_hyper_parameter_tuning_job(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request["HyperParameterTuningJobName"]
        tuning = self.get_or_raise(TUNING.kind, name, TUNING.label)
        summaries = tuning.extra.get("TrainingJobSummaries")
        if summaries is None:  # still running: build summaries from the trials recorded so far
            summaries = [
                self._trial_summary(t.body, name) for t in self.records.list_resources(TRAINING.kind, name)
            ]
        summaries = [{"TuningJobName": tuning.name, **s} for s in summaries]
        if status := request.get("StatusEquals"):
            summaries = [s for s in summaries if s.get("TrainingJobStatus") == status]
        sort_by = request.get("SortBy", "Name")
        descending = request.get("SortOrder", "Ascending") == "Descending"
        if sort_by == "FinalObjectiveMetricValue":
            objective = tuning.body.get("HyperParameterTuningJobConfig", {}).get(
                "HyperParameterTuningJobObjective", {}
            )
            sign = 1 if objective.get("Type", "Maximize") == "Maximize" else -1

            def score(s: dict[str, Any]) -> tuple[bool, float]:
                metric = s.get("FinalHyperParameterTuningJobObjectiveMetric")
                return (metric is not None, sign * metric["Value"] if metric else 0.0)

            # Trials without an objective value are not listed (API docs); "Descending" = best first.
            summaries = sorted(
                (s for s in summaries if s.get("FinalHyperParameterTuningJobObjectiveMetric")),
                key=score,
                reverse=descending,
            )
        else:
            field = {
                "Name": "TrainingJobName",
                "CreationTime": "CreationTime",
                "Status": "TrainingJobStatus",
            }.get(sort_by)
            if field is None:
                raise ValidationError(f"Invalid SortBy {sort_by!r}")
            summaries = sorted(summaries, key=lambda s: s.get(field) or 0, reverse=descending)
        return paginate("ListTrainingJobsForHyperParameterTuningJob", request, summaries)

    @staticmethod
    def _trial_summary(body: dict[str, Any], tuning_name: str) -> dict[str, Any]:
        summary = {
            "TrainingJobName": body["TrainingJobName"],
            "TrainingJobArn": body["TrainingJobArn"],
            "TuningJobName": tuning_name,
            "CreationTime": body["CreationTime"],
            "TrainingJobStatus": body["TrainingJobStatus"],
            "TunedHyperParameters": {
                k: v
                for k, v in body.get("HyperParameters", {}).items()
                if not k.startswith(("sagemaker_", "_"))
            },
        }
        for key in ("TrainingStartTime", "TrainingEndTime", "FailureReason"):
            if key in body:
                summary[key] = body[key]
        return summary

    def get_job(self, job: JobKind, name: str) -> dict[str, Any]:
        found = self.records.get_resource(job.kind, name)
        if found is None:
            raise not_found(job.label, name)
        return found.body
